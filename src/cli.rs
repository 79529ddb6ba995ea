//! The command-line interface, defined once. This definition is the source
//! of `--help` and of the documentation generated from it.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use crate::duration::parse_duration;
use crate::signals::parse_signal;
use crate::supervisor::RestartPolicy;

/// Socket-holding process supervisor: binds ports once, runs any server with
/// the sockets inherited systemd-style (LISTEN_FDS), and behaves as a correct
/// init (reaps zombies, forwards signals, stops gracefully).
#[derive(Debug, Parser)]
#[command(name = "sockvisor", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bind the listeners and run COMMAND as a supervised child.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Most detailed level logged to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Listen specs: HOST:PORT, tcp://HOST:PORT, [::]:PORT, udp://HOST:PORT, \
unix:/path.sock, unix:@abstract; options after commas: name=NAME, backlog=N, reuseport, \
mode=0660 (unix paths), v6only (IPv6). Example: --listen 0.0.0.0:8080,name=http"
)]
pub struct RunArgs {
    /// Socket to bind and pass to the child (repeatable; the order gives
    /// fds 3, 4, …). Without any, no LISTEN_* variables are set.
    #[arg(short, long = "listen", value_name = "SPEC")]
    pub listen: Vec<String>,

    /// When the child exits on its own: restart it or exit with its status.
    #[arg(long, value_enum, default_value_t = RestartPolicy::OnFailure)]
    pub restart: RestartPolicy,

    /// Delay before the first restart; doubles after each consecutive
    /// failure.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "100ms")]
    pub restart_delay: Duration,

    /// Longest restart delay; a child that ran this long resets the backoff.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub restart_delay_max: Duration,

    /// Signal that asks the child to stop gracefully (name or number).
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal, default_value = "SIGQUIT")]
    pub stop_signal: Signal,

    /// How long a stopping child may take before its process group is
    /// killed with SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub stop_timeout: Duration,

    /// The server to run, with its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}
