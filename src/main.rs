//! The `sockvisor` binary: parse the command line, set up logging, run the
//! chosen subcommand, exit with its status.

use clap::Parser;
use sockvisor::cli::{Cli, Command, InstanceArgs, LogLevel};
use sockvisor::control::client::{self, Call};
use sockvisor::control::protocol::Command as Request;
use sockvisor::{init, logging, paths, reexec, run};

/// The variable that names the control socket (`--control`).
const CONTROL_VAR: &str = "SOCKVISOR_CONTROL";

fn main() {
    init::ensure_stdio_open();
    // A re-exec arrives with every signal blocked; they stay blocked until
    // the handlers are in place again.
    if !reexec::is_restoring() {
        init::clear_signal_mask();
        reexec::exec::remember_started_from(None);
    }
    // `SOCKVISOR_CONTROL= sockvisor status` means "not set", as an empty
    // variable does for most programs; clap would call it a missing value.
    if std::env::var_os(CONTROL_VAR).is_some_and(|value| value.is_empty()) {
        // SAFETY: no other thread exists yet to read the environment.
        unsafe { std::env::remove_var(CONTROL_VAR) };
    }
    let cli = Cli::parse();
    if let Ok(nonce) = std::env::var(reexec::exec::CHECK_VAR) {
        std::process::exit(reexec_check(&nonce, &cli.command));
    }
    logging::init(&cli.logging, default_log_level(&cli.command));
    let code = match cli.command {
        Command::Run(args) => match reexec::take_inherited() {
            Some(inherited) => run::resume(inherited),
            None => run::run(*args),
        }
        .unwrap_or_else(|err| {
            sockvisor::complain!("sockvisor: {err}");
            err.exit_code()
        }),
        Command::Upgrade(args) => call(&args.instance, Request::Upgrade, args.json, args.timeout),
        Command::Status(args) if args.check => {
            let path = paths::control_path(&args.instance.name, args.instance.control.as_deref());
            client::check(&path, args.verbose)
        }
        Command::Status(args) => call(
            &args.instance,
            Request::Status,
            args.json,
            Some(args.timeout),
        ),
        Command::Stop(args) => call(&args.instance, Request::Stop, args.json, args.timeout),
        Command::Reexec(args) => call(
            &args.call.instance,
            Request::Reexec {
                binary: args.binary.map(|b| absolute(&b)),
            },
            args.call.json,
            args.call.timeout,
        ),
        Command::Scale(args) => call(
            &args.call.instance,
            Request::Scale {
                workers: args.workers,
            },
            args.call.json,
            args.call.timeout,
        ),
        Command::Signal(args) => {
            let signal = sockvisor::signals::name(args.signal);
            call(
                &args.instance,
                Request::Signal { signal },
                args.json,
                Some(args.timeout),
            )
        }
    };
    std::process::exit(code);
}

/// Info, but warn for an interactive init (no sockets, on a terminal):
/// sockvisor's lines would interleave with the child's on the screen.
fn default_log_level(command: &Command) -> LogLevel {
    use std::io::IsTerminal;
    let interactive_init = matches!(command, Command::Run(args) if args.listen.is_empty())
        && std::env::var_os("LISTEN_FDS").is_none()
        && std::io::stdin().is_terminal();
    if interactive_init {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Sends one request to the sockvisor selected by `--name`/`--control`.
fn call(
    instance: &InstanceArgs,
    command: Request,
    json: bool,
    timeout: Option<std::time::Duration>,
) -> i32 {
    if let Err(why) = paths::validate_name(&instance.name) {
        sockvisor::complain!("sockvisor: {why}");
        return client::exit::USAGE;
    }
    let path = paths::control_path(&instance.name, instance.control.as_deref());
    client::call(&Call {
        path: &path,
        command,
        json,
        timeout,
    })
}

/// Check mode, run by a sockvisor about to re-execute into this binary:
/// prove on fd 4 that this program takes the same command line and can
/// resume the state on fd 3 (see `reexec::check`).
fn reexec_check(nonce: &str, command: &Command) -> i32 {
    reexec::check::answer(nonce, matches!(command, Command::Run(_)))
}

/// A path as the running sockvisor will see it (it has another working
/// directory).
fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
