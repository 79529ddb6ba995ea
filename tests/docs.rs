//! The checked-in man pages and completions match the clap definition:
//! run `cargo run --example gen-docs` after changing the command line.

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
