//! The `sockvisor` binary: parse the command line, set up logging, run the
//! chosen subcommand, exit with its status.

use clap::Parser;
use sockvisor::cli::{Cli, Command, InstanceArgs};
use sockvisor::control::client::{self, Call};
use sockvisor::control::protocol::Command as Request;
use sockvisor::{init, logging, paths, run};

fn main() {
    init::ensure_stdio_open();
    init::clear_signal_mask();
    let cli = Cli::parse();
    logging::init(&cli.logging);
    let code = match cli.command {
        Command::Run(args) => run::run(args).unwrap_or_else(|err| {
            eprintln!("sockvisor: {err}");
            err.exit_code()
        }),
        Command::Upgrade(args) => call(&args.instance, Request::Upgrade, args.json, args.timeout),
        Command::Status(args) => call(&args.instance, Request::Status, args.json, None),
        Command::Stop(args) => call(&args.instance, Request::Stop, args.json, args.timeout),
        Command::Scale(args) => call(
            &args.call.instance,
            Request::Scale {
                workers: args.workers,
            },
            args.call.json,
            args.call.timeout,
        ),
        Command::Signal(args) => {
            let signal = args.signal.as_str().to_string();
            call(&args.instance, Request::Signal { signal }, args.json, None)
        }
    };
    std::process::exit(code);
}

/// Sends one request to the sockvisor selected by `--name`/`--control`.
fn call(
    instance: &InstanceArgs,
    command: Request,
    json: bool,
    timeout: Option<std::time::Duration>,
) -> i32 {
    if let Err(why) = paths::validate_name(&instance.name) {
        eprintln!("sockvisor: {why}");
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
