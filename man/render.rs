//! Renders sockvisor's man pages and shell completions from the one clap
//! definition in `src/cli.rs`, plus the sections that are not about flags
//! (signals, exit statuses, environment, files), and the generated blocks
//! of `docs/reference.md`. The signal and exit-status tables come from the
//! definitions the code acts on (`signals::reference`, `run::EXIT_STATUS`,
//! `control::client::exit::TABLE`). Used by the generator
//! (`cargo run --example gen-docs`) and by the test that fails when the
//! checked-in files are stale.

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{Roff, bold, roman};
use sockvisor::cli::Cli;
use sockvisor::control::client::exit;
use sockvisor::{run, signals};

/// `(file name, contents)` of every man page: `sockvisor.1` and one per
/// subcommand.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = vec![render(command.clone(), "sockvisor", extra_sections_main)];
    for sub in command.get_subcommands() {
        let name = format!("sockvisor-{}", sub.get_name());
        let extra = if sub.get_name() == "run" {
            extra_sections_run
        } else {
            extra_sections_client
        };
        // clap names are &'static str; this runs once per page.
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        pages.push(render(sub.clone().name(static_name), &name, extra));
    }
    pages
}

fn render(command: clap::Command, name: &str, extra: fn(&mut Roff)) -> (String, Vec<u8>) {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .expect("rendering to memory cannot fail");
    let mut roff = Roff::default();
    extra(&mut roff);
    page.extend(roff.render().into_bytes());
    (format!("{name}.1"), page)
}

/// `(file name, contents)` of the bash, zsh and fish completions.
pub fn completions() -> Vec<(String, Vec<u8>)> {
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sockvisor", &mut out);
            let file = match shell {
                Shell::Bash => "sockvisor.bash",
                Shell::Zsh => "_sockvisor",
                _ => "sockvisor.fish",
            };
            (file.to_string(), out)
        })
        .collect()
}

fn section(roff: &mut Roff, title: &str, items: &[(impl AsRef<str>, impl AsRef<str>)]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(plain(term.as_ref()))]);
        roff.text([roman(plain(text.as_ref()))]);
    }
}

/// The reference's text as a man page shows it: names without backquotes.
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// `sockvisor run`'s exit statuses, labelled.
fn run_exit_statuses() -> Vec<(String, String)> {
    run::EXIT_STATUS
        .iter()
        .map(|(status, meaning)| (status.label(), meaning.to_string()))
        .collect()
}

/// The control commands' exit statuses.
fn client_exit_statuses() -> Vec<(String, String)> {
    exit::TABLE
        .iter()
        .map(|(code, meaning)| (code.to_string(), meaning.to_string()))
        .collect()
}

fn extra_sections_main(roff: &mut Roff) {
    extra_sections_run(roff);
}

fn extra_sections_run(roff: &mut Roff) {
    section(roff, "SIGNALS", &signals::reference());
    section(roff, "EXIT STATUS", &run_exit_statuses());
    section(
        roff,
        "ENVIRONMENT",
        &[
            (
                "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
                "Given to each generation: the number of sockets at fds 3 onwards, the generation's own pid, and the socket names. Values sockvisor itself inherited are not passed on.",
            ),
            (
                "NOTIFY_SOCKET",
                "Given to each generation: its own sd_notify socket. READY=1 there marks it ready (--ready notify).",
            ),
            (
                "SOCKVISOR_GENERATION, SOCKVISOR_PID, SOCKVISOR_CONTROL",
                "Given to each generation: its number, sockvisor's pid, and the control socket path.",
            ),
            (
                "SOCKVISOR_WORKER",
                "Given to each worker (--workers N): its index, 0 to N-1; a replacement keeps its slot's index. With --fd-env einhorn also as EINHORN_CHILD_INDEX.",
            ),
            (
                "SOCKVISOR_READY_PID",
                "Given to an --ready exec= probe: the pid of the generation it checks.",
            ),
            (
                "SOCKVISOR_CONTROL",
                "Read by sockvisor and its client commands: the control socket path, instead of the one derived from --name.",
            ),
        ],
    );
    section(
        roff,
        "FILES",
        &[
            (
                "/run/sockvisor/NAME.sock",
                "The control socket (root). Other users: $XDG_RUNTIME_DIR/sockvisor/NAME.sock, or /tmp/sockvisor-UID/NAME.sock.",
            ),
            (
                "RUNTIME/notify.PID.RANDOM/notify-N.sock",
                "Generation N's notify socket, in a new owner-only directory in the runtime directory (RUNTIME: /run/sockvisor for root, $XDG_RUNTIME_DIR/sockvisor or /tmp/sockvisor-UID for others). sockvisor holds an flock on it while it runs; at start it removes the notify sockets of directories nobody holds locked, then those directories with rmdir, never recursively.",
            ),
            (
                "Paths given by the user",
                "--control, --pidfile and unix --listen paths are never removed or replaced unless sockvisor created them: a stale socket (nobody listening) or a stale pidfile (its process gone) is replaced; a live socket, a pidfile of a running process, or anything else (a regular file, directory, symbolic link) is a one-line error and is left as it was. At exit a file is removed only if it is still the one sockvisor wrote.",
            ),
        ],
    );
}

fn extra_sections_client(roff: &mut Roff) {
    section(roff, "EXIT STATUS", &client_exit_statuses());
    section(
        roff,
        "ENVIRONMENT",
        &[(
            "SOCKVISOR_CONTROL",
            "The control socket path, instead of the one derived from --name.",
        )],
    );
}

/// The file with generated blocks, relative to the repository root.
pub const REFERENCE: &str = "docs/reference.md";

/// `(name, Markdown)` of every block generated into [`REFERENCE`], each
/// between `<!-- generated: NAME -->` and the next `<!-- end -->`.
pub fn reference_blocks() -> Vec<(&'static str, String)> {
    vec![
        (
            "signals",
            table(["signal to sockvisor", "effect"], &signals::reference()),
        ),
        (
            "exit-status-run",
            table(["status", "when"], &run_exit_statuses()),
        ),
        (
            "exit-status-commands",
            table(["status", "when"], &client_exit_statuses()),
        ),
        ("run-options", run_options()),
    ]
}

/// `text` (the contents of [`REFERENCE`]) with every generated block
/// written anew. Markers count at the start of a line only. Fails on a
/// block without its markers, or markers naming no block.
pub fn fill_reference(text: &str) -> Result<String, String> {
    let blocks = reference_blocks();
    let mut out = String::new();
    let mut seen = Vec::new();
    let mut lines = text.split_inclusive('\n');
    while let Some(line) = lines.next() {
        out.push_str(line);
        let Some(name) = line
            .strip_prefix(GENERATED)
            .and_then(|rest| rest.strip_suffix(" -->\n"))
        else {
            continue;
        };
        let Some((_, block)) = blocks.iter().find(|(n, _)| *n == name) else {
            return Err(format!("{REFERENCE}: no generated block is named '{name}'"));
        };
        if !lines.any(|line| line.trim_end() == END) {
            return Err(format!("{REFERENCE}: block '{name}' has no '{END}' line"));
        }
        out.push_str(block);
        out.push_str(END);
        out.push('\n');
        seen.push(name.to_string());
    }
    for (name, _) in &blocks {
        if !seen.iter().any(|s| s == name) {
            return Err(format!(
                "{REFERENCE}: block '{name}' is missing: add the lines '{GENERATED}{name} -->' and '{END}'"
            ));
        }
    }
    Ok(out)
}

const GENERATED: &str = "<!-- generated: ";
const END: &str = "<!-- end -->";

/// A two-column Markdown table.
fn table(header: [&str; 2], rows: &[(String, String)]) -> String {
    let mut out = format!("| {} | {} |\n| --- | --- |\n", header[0], header[1]);
    for (first, second) in rows {
        out.push_str(&format!("| {} | {} |\n", cell(first), cell(second)));
    }
    out
}

/// Text as one Markdown table cell: `|` escaped everywhere; outside code
/// spans, `\\` and `*` escaped, and `_` where it could start or end an
/// emphasis (`__pycache__`), not inside a word (`LISTEN_PID`).
fn cell(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut in_code = false;
    for (at, &c) in chars.iter().enumerate() {
        let word = |i: Option<usize>| {
            i.and_then(|i| chars.get(i))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let inside_word = word(at.checked_sub(1)) && word(Some(at + 1));
        match c {
            '`' => in_code = !in_code,
            '|' => out.push('\\'),
            '\\' | '*' if !in_code => out.push('\\'),
            '_' if !in_code && !inside_word => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Every option of `sockvisor run`, from the clap definition: the flag,
/// its default and its help text, then the options every command takes.
fn run_options() -> String {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let run = command
        .find_subcommand("run")
        .expect("the run subcommand exists");
    let mut options: Vec<&clap::Arg> = run
        .get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    options.sort_by_key(|a| a.is_global_set());
    let mut out = String::from("| option | default | meaning |\n| --- | --- | --- |\n");
    for arg in options {
        let mut flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("-{short}, --{long}"),
            (None, Some(long)) => format!("--{long}"),
            (Some(short), None) => format!("-{short}"),
            (None, None) => continue,
        };
        let takes_value = arg.get_action().takes_values();
        if takes_value {
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            let value = if possible.is_empty() {
                arg.get_value_names()
                    .unwrap_or_default()
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                possible.join("|")
            };
            flag = format!("{flag} {value}");
        }
        let default = if takes_value {
            arg.get_default_values()
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut meaning = help.split_whitespace().collect::<Vec<_>>().join(" ");
        if !meaning.ends_with('.') {
            meaning.push('.');
        }
        if let Some(env) = arg.get_env() {
            meaning.push_str(&format!(" Also read from `{}`.", env.to_string_lossy()));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            cell(&flag),
            default,
            cell(&meaning)
        ));
    }
    out
}
