//! Renders sockvisor's man pages and shell completions from the one clap
//! definition in `src/cli.rs`, plus the sections that are not about flags
//! (signals, exit statuses, environment, files). Used by the generator
//! (`cargo run --example gen-docs`) and by the test that fails when the
//! checked-in files are stale.

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{Roff, bold, roman};
use sockvisor::cli::Cli;

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

fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

fn extra_sections_main(roff: &mut Roff) {
    extra_sections_run(roff);
}

fn extra_sections_run(roff: &mut Roff) {
    section(
        roff,
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT, SIGQUIT",
                "Graceful stop: the stop signal (--stop-signal, default SIGQUIT) goes to every generation, followed by SIGCONT to its process group so that a stopped one acts on it; after --stop-timeout the remaining process groups get SIGKILL. A second one of these during the stop kills at once. Sent with kill or docker stop, SIGINT means this with or without a terminal.",
            ),
            (
                "SIGHUP, SIGUSR2",
                "With sockets, start an upgrade, like sockvisor upgrade; the result is logged. Without sockets (an init), forwarded like the signals below.",
            ),
            (
                "Every other signal",
                "SIGUSR1, SIGWINCH, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGURG, SIGPWR, SIGXCPU, SIGXFSZ, SIGSTKFLT, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU and every real-time signal (SIGRTMIN to SIGRTMAX) are forwarded to each worker of the serving generation, or with --signal-group to each worker's process group. None of them kills sockvisor, PID 1 or not. On a terminal, SIGTTIN and SIGTTOU are blocked instead: there they are job control aimed at sockvisor. SIGPIPE stays ignored; the synchronous fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS) are not handled.",
            ),
            (
                "Keyboard on a terminal",
                "When sockvisor runs in the foreground of its controlling terminal (standard input), the serving generation is the terminal's foreground process group: it reads the terminal, and Ctrl-C, Ctrl-\\ and Ctrl-Z go to it, not to sockvisor. A generation killed by Ctrl-C or Ctrl-\\ is not restarted; sockvisor exits 130 or 131. In an upgrade the terminal passes to the new generation once it is ready; at exit it goes back to the group that had it.",
            ),
            (
                "SIGCHLD",
                "Reap every exited process: generations, readiness probes, and orphans re-parented to sockvisor (as PID 1 or as child subreaper).",
            ),
            (
                "SIGKILL",
                "Cannot be handled: every generation's main process gets SIGKILL as its parent-death signal, so the ports are released for the next sockvisor.",
            ),
        ],
    );
    section(
        roff,
        "EXIT STATUS",
        &[
            (
                "the child's code",
                "The current generation exited on its own and was not restarted.",
            ),
            (
                "128 + N",
                "It was killed by signal N (137 after SIGKILL at a timeout).",
            ),
            (
                "130, 131",
                "On a terminal, the serving generation was killed by Ctrl-C (SIGINT) or Ctrl-\\ (SIGQUIT) from the keyboard.",
            ),
            (
                "0",
                "A requested stop in which the current generation (or, with none serving yet, the one starting) exited 0 or died of the stop signal, or a stop while nothing was running.",
            ),
            (
                "1",
                "Another start-up failure, e.g. another sockvisor runs with the same name.",
            ),
            ("2", "Invalid command line or listen spec."),
            (
                "3",
                "A listener cannot be opened (address in use, permission denied, missing directory).",
            ),
            ("126", "The command exists but cannot be executed."),
            ("127", "The command was not found."),
        ],
    );
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
    section(
        roff,
        "EXIT STATUS",
        &[
            ("0", "Done."),
            (
                "1",
                "The operation was carried out and failed; the reason is printed (for upgrade: the old generation keeps serving).",
            ),
            (
                "2",
                "Invalid command line, or a request sockvisor did not understand.",
            ),
            (
                "3",
                "No sockvisor reachable at the control socket, or this user may not control it.",
            ),
            (
                "4",
                "Refused for now: an upgrade is starting, or sockvisor is stopping.",
            ),
            (
                "5",
                "No result within --timeout; the operation goes on inside sockvisor.",
            ),
        ],
    );
    section(
        roff,
        "ENVIRONMENT",
        &[(
            "SOCKVISOR_CONTROL",
            "The control socket path, instead of the one derived from --name.",
        )],
    );
}
