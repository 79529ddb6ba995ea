//! The `sockvisor` binary: parse the command line, set up logging, run the
//! chosen subcommand, exit with its status.

use clap::Parser;
use sockvisor::cli::{Cli, Command};
use sockvisor::{init, logging, run};

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
    };
    std::process::exit(code);
}
