//! The checked-in man pages, completions and generated blocks of
//! `docs/reference.md` match the clap definition and the signal and
//! exit-status tables the code acts on: run `cargo run --example gen-docs`
//! after changing any of them.

#[path = "../man/render.rs"]
mod render;

use std::path::Path;

fn assert_current(dir: &str, files: Vec<(String, Vec<u8>)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    for (name, expected) in files {
        let actual = std::fs::read(root.join(&name)).unwrap_or_default();
        assert!(
            actual == expected,
            "{dir}/{name} is stale: run `cargo run --example gen-docs` and commit the result"
        );
    }
}

#[test]
fn man_pages_are_current() {
    assert_current("man", render::man_pages());
}

#[test]
fn completions_are_current() {
    assert_current("completions", render::completions());
}

#[test]
fn reference_blocks_are_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(render::REFERENCE);
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    let expected = render::fill_reference(&actual).unwrap_or_else(|why| panic!("{why}"));
    let stale: Vec<&str> = render::reference_blocks()
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| block(&actual, name) != block(&expected, name))
        .collect();
    assert!(
        actual == expected,
        "{} is stale (blocks: {}): run `cargo run --example gen-docs` and commit the result",
        render::REFERENCE,
        stale.join(", ")
    );
}

/// The text of generated block `name` in `text`.
fn block<'a>(text: &'a str, name: &str) -> &'a str {
    let start = format!("<!-- generated: {name} -->");
    text.split_once(&start)
        .and_then(|(_, rest)| rest.split_once("<!-- end -->"))
        .map_or("", |(body, _)| body)
}

#[test]
fn the_man_pages_and_the_reference_state_every_signal_and_exit_status() {
    let pages = render::man_pages();
    let (_, run) = pages
        .iter()
        .find(|(name, _)| name == "sockvisor-run.1")
        .unwrap();
    // As a reader sees it: roff's escapes for quotes and hyphens undone.
    let run = String::from_utf8_lossy(run)
        .replace("\\*(Aq", "'")
        .replace("\\-", "-");
    let reference =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(render::REFERENCE))
            .unwrap();
    for (status, _) in sockvisor::run::EXIT_STATUS {
        let label = status.label();
        assert!(
            run.contains(&label),
            "sockvisor-run.1 lacks exit status {label}"
        );
        assert!(
            reference.contains(&format!("| {label} |")),
            "{} lacks exit status {label}",
            render::REFERENCE
        );
    }
    for signal in [
        "SIGTERM", "SIGHUP", "SIGCHLD", "SIGUSR1", "SIGPIPE", "SIGKILL",
    ] {
        assert!(run.contains(signal), "sockvisor-run.1 lacks {signal}");
        assert!(
            reference.contains(&format!("`{signal}`")),
            "{} lacks {signal}",
            render::REFERENCE
        );
    }
}

#[test]
fn the_run_page_documents_signals_exit_statuses_environment_and_files() {
    let pages = render::man_pages();
    let (_, run) = pages
        .iter()
        .find(|(name, _)| name == "sockvisor-run.1")
        .unwrap();
    let run = String::from_utf8_lossy(run);
    for heading in [
        "SIGNALS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "\\-\\-stop\\-signal",
    ] {
        assert!(run.contains(heading), "sockvisor-run.1 lacks {heading}");
    }
}
