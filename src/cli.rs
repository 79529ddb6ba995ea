//! The command-line interface, defined once. This definition is the source
//! of `--help` and of the documentation generated from it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use crate::byte_size::parse_byte_size;
use crate::duration::parse_duration;
use crate::env_file::EnvFile;
use crate::paths::DEFAULT_NAME;
use crate::signals::{parse_forwarded, parse_signal};
use crate::supervisor::{ReadyMode, RestartPolicy, parse_worker_count};

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
    Run(Box<RunArgs>),
    /// Start a new generation on the same sockets; retire the current one
    /// once the new one is ready. Prints progress; exits 0 on success.
    Upgrade(WaitingCallArgs),
    /// Show generations, listeners and the last upgrade.
    Status(StatusArgs),
    /// Stop every generation gracefully, then sockvisor; returns when all
    /// have exited.
    Stop(WaitingCallArgs),
    /// Send a signal to the current generation.
    Signal(SignalArgs),
    /// Change the number of worker processes of the serving generation:
    /// new workers go through readiness, removed ones drain. Later upgrades
    /// start the new count. Prints progress; exits 0 once done.
    Scale(ScaleArgs),
    /// Replace sockvisor's own program in place (same pid, same children,
    /// same sockets), once the new binary has proved in a check run that it
    /// can resume the state; any other answer changes nothing. Prints the
    /// result; exits 0 once the new program serves.
    Reexec(ReexecArgs),
}

/// Which running sockvisor a command talks to.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// Instance name; selects the control socket
    /// (/run/sockvisor/NAME.sock for root).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NAME)]
    pub name: String,
    /// Control socket path, overriding the one derived from --name.
    #[arg(long, value_name = "PATH", env = "SOCKVISOR_CONTROL")]
    pub control: Option<PathBuf>,
}

/// Arguments of the commands that wait for a result (upgrade, stop).
#[derive(Debug, Args)]
pub struct WaitingCallArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Give up waiting for the result after this long (the operation itself
    /// goes on inside sockvisor); at most 8760h (one year).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the protocol's JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    /// Health check: exit 0 when a generation is ready and serving, 1 when
    /// none is (also when sockvisor cannot be reached), 4 when sockvisor
    /// answered that every control slot holds a client waiting for a
    /// result; prints nothing unless --verbose. For exec readiness and
    /// liveness probes.
    #[arg(long, conflicts_with = "json")]
    pub check: bool,
    /// With --check, print one line saying why.
    #[arg(long, requires = "check")]
    pub verbose: bool,
    /// Give up waiting for the answer after this long (exit 5); --check
    /// waits 5s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s", conflicts_with = "check")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Signal to send (name or number), e.g. USR1 or RTMIN+3.
    #[arg(value_name = "SIGNAL", value_parser = parse_forwarded)]
    pub signal: i32,
    /// Print the protocol's JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting for the answer after this long (exit 5).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The new number of workers (1 to 1024).
    #[arg(value_name = "N", value_parser = parse_worker_count)]
    pub workers: u32,
    #[command(flatten)]
    pub call: WaitingCallArgs,
}

#[derive(Debug, Args)]
pub struct ReexecArgs {
    /// The new sockvisor binary; default: the path sockvisor was started
    /// from, looked up again (so a package upgrade that replaced it is
    /// picked up).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub call: WaitingCallArgs,
}

#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Most detailed level logged to stderr. Default: info; warn for
    /// `run` without sockets on a terminal (an interactive init, whose
    /// output sockvisor's lines would interleave with, as tini prints
    /// nothing).
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevel>,
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

/// Socket-passing conventions of other socket managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FdEnv {
    /// einhorn: EINHORN_FD_COUNT, EINHORN_FD_n, EINHORN_FD_FAMILY_n,
    /// EINHORN_MASTER_PID, EINHORN_SOCK_PATH.
    Einhorn,
    /// Server::Starter: SERVER_STARTER_PORT, SERVER_STARTER_GENERATION.
    ServerStarter,
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
mode=0660 (unix paths), v6only (IPv6). Example: --listen 0.0.0.0:8080,name=http\n\n\
Durations (every DURATION, and --ready delay=): 500ms, 30s, 1.5s, 2m, 1h; a bare number is \
seconds; at most 8760h (one year)."
)]
pub struct RunArgs {
    /// Socket to bind and pass to the child (repeatable; the order gives
    /// fds 3, 4, …). Without any, no LISTEN_* variables are set.
    #[arg(short, long = "listen", value_name = "SPEC")]
    pub listen: Vec<String>,

    /// Variables for the server from this file (repeatable; a later file
    /// overrides an earlier one, and both override sockvisor's own
    /// environment), read again for every worker started, so that an
    /// upgrade picks up a changed file. KEY=VALUE lines as systemd's
    /// EnvironmentFile= reads them (see docs/guide.md); a leading '-'
    /// (-/etc/app.env) makes the file optional.
    #[arg(long = "env-file", value_name = "PATH", value_parser = EnvFile::parse, allow_hyphen_values = true)]
    pub env_file: Vec<EnvFile>,

    /// Serve Prometheus metrics (GET /metrics, OpenMetrics text) on this
    /// TCP address, e.g. 127.0.0.1:9100: generations, workers by state,
    /// upgrades, rollbacks, restarts and re-execs, each worker's memory and
    /// age, each TCP listener's accept queue, sockvisor's own memory and
    /// descriptors. Read at each scrape; no thread, no timer.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Run the server as this user (name or uid): sockvisor binds the
    /// sockets as its own user (root, for ports below 1024), then every
    /// worker of every generation takes this identity before exec:
    /// supplementary groups from the user database, the group, the user,
    /// and HOME, USER and LOGNAME as login sets them. Needs root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// The server's group (name or gid); default the user's own.
    #[arg(long, value_name = "GROUP", requires = "user")]
    pub group: Option<String>,

    /// Forward signals to each worker's whole process group (the worker
    /// and what it started) instead of the worker alone, like tini's -g and
    /// dumb-init's default; `sockvisor signal` too. Stop and upgrade
    /// signals are not forwarded signals: the stop signal always goes to
    /// the worker.
    #[arg(long)]
    pub signal_group: bool,

    /// Worker processes per generation (1 to 1024), each a child of
    /// sockvisor on the same sockets with SOCKVISOR_WORKER=0..N-1. A
    /// generation is ready when all its workers are; a worker that exits
    /// while its generation serves is replaced in its slot.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = parse_worker_count)]
    pub workers: u32,

    /// Upgrade workers one by one instead of all at once: at most K
    /// processes beyond --workers run at any moment, and each new worker
    /// that is ready retires one old worker (like einhorn's
    /// --max-upgrade-additional). Without it, all N new workers start and
    /// the old ones are stopped once all are ready.
    #[arg(long, value_name = "K", value_parser = parse_worker_count)]
    pub max_surge: Option<u32>,

    /// Replace a worker whose memory stays above SIZE (512M, 2G; K, M, G
    /// and T are powers of 1024): the resident memory (RSS) of the worker
    /// and every process under it, summed, over the limit at two samples in
    /// a row. A new worker starts in the same slot, and the old one gets the
    /// stop signal only once the new one is ready; if the new one fails,
    /// the old one keeps serving. At most --max-surge (default 1) at a time.
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    pub worker_max_rss: Option<u64>,

    /// Replace a worker, the same way, once it has served this long, less
    /// up to a tenth (fixed for each slot and process) so that workers
    /// started together are not replaced together.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub worker_max_age: Option<Duration>,

    /// How often workers' memory is sampled for --worker-max-rss (nothing
    /// is sampled without it).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration,
          default_value = "10s", requires = "worker_max_rss")]
    pub worker_sample_interval: Duration,

    /// When the child exits on its own: restart it or exit with its status.
    /// Default: always when there are sockets to serve (a server's exit,
    /// even a clean one, is not a request to stop the service: that is
    /// `sockvisor stop`), never without any (an init exits with its
    /// child's status).
    #[arg(long, value_enum)]
    pub restart: Option<RestartPolicy>,

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

    /// How long a stop of sockvisor may take before every remaining
    /// process group is killed with SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub stop_timeout: Duration,

    /// How a new generation shows it is ready: notify (READY=1 on
    /// NOTIFY_SOCKET), now, delay=DURATION (alive that long), or
    /// exec=COMMAND (a shell command that exits 0; SOCKVISOR_READY_PID holds
    /// the generation's pid). Default: notify when there are sockets to
    /// serve, now without any.
    #[arg(long, value_name = "MODE", value_parser = ReadyMode::parse)]
    pub ready: Option<ReadyMode>,

    /// How long a new generation may take to become ready before it is
    /// stopped (and, in an upgrade, the old one keeps serving).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "60s")]
    pub ready_timeout: Duration,

    /// How long a replaced generation may drain after the stop signal
    /// before its process group is killed with SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Development loop: upgrade when a file under PATH changes (a file,
    /// or a directory watched recursively; repeatable). Writes are settled
    /// for --watch-delay first; .git/, target/, node_modules/, __pycache__/
    /// and editor swap files are ignored. A failed upgrade leaves the old
    /// generation serving: fix the file and save again.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,

    /// How long writes must settle before a change starts an upgrade.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "300ms")]
    pub watch_delay: Duration,

    /// Also ignore changed files whose name matches GLOB (* and ?;
    /// repeatable), e.g. '*.log'.
    #[arg(long, value_name = "GLOB")]
    pub watch_ignore: Vec<String>,

    /// Leave LISTEN_PID out, for a command that forks before the server
    /// reads it (cargo run, npm start, poetry run, sh -c without exec), as
    /// systemfd --no-pid. The listenfd crate accepts a missing LISTEN_PID;
    /// libsystemd (sd_listen_fds) and go-systemd do not and see no sockets.
    /// Any process that inherits the environment may take the sockets.
    #[arg(long)]
    pub no_listen_pid: bool,

    /// Watchdog for every worker, as systemd's WatchdogSec=: each gets
    /// WATCHDOG_USEC and WATCHDOG_PID and must send WATCHDOG=1 at least this
    /// often once ready; a worker that misses it is hung, and its generation
    /// is replaced without refusing connections. 0 turns it off; otherwise
    /// at least 100ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_watchdog)]
    pub watchdog: Option<Duration>,

    /// Keep up to N descriptors that generations hand over with FDSTORE=1
    /// (systemd's FileDescriptorStoreMax=) and pass them to every later
    /// generation after the listeners, named in LISTEN_FDNAMES. 0 disables
    /// the store: passed descriptors are closed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fdstore_max: usize,

    /// Also describe the sockets the way another socket manager does, so
    /// apps written for it run unchanged: einhorn (EINHORN_FD_COUNT,
    /// EINHORN_FD_n, its worker:ack counts as READY=1) or server-starter
    /// (SERVER_STARTER_PORT). Repeatable; systemd's variables are always set.
    #[arg(long, value_name = "STYLE", value_enum)]
    pub fd_env: Vec<FdEnv>,

    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Write sockvisor's pid to this file (removed at exit). The pid stays
    /// the same across upgrades.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,

    /// The server to run, with its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// A duration that is more than zero: an age limit or a sampling interval
/// of 0 would replace or sample without end.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => {
            Err(format!("'{text}' is zero; give a duration of at least 1ms"))
        }
        duration => Ok(duration),
    }
}

/// The shortest `--watchdog`: shorter, no worker keeps up, and each miss
/// replaces a generation (a millisecond started a thousand in 3 s).
const SHORTEST_WATCHDOG: Duration = Duration::from_millis(100);

/// `--watchdog`: 0 (off) or at least [`SHORTEST_WATCHDOG`].
fn parse_watchdog(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if !duration.is_zero() && duration < SHORTEST_WATCHDOG => Err(format!(
            "'{text}' is shorter than {}: a worker cannot be asked to ping that often (0 turns the watchdog off)",
            crate::duration::format_duration(SHORTEST_WATCHDOG)
        )),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watchdog_is_off_or_at_least_100ms() {
        assert_eq!(parse_watchdog("0"), Ok(Duration::ZERO));
        assert_eq!(parse_watchdog("100ms"), Ok(Duration::from_millis(100)));
        assert!(
            parse_watchdog("99ms")
                .unwrap_err()
                .contains("shorter than 100ms")
        );
    }

    #[test]
    fn a_positive_duration_is_at_least_a_millisecond() {
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(
            parse_positive_duration("24h"),
            Ok(Duration::from_secs(86_400))
        );
        assert!(
            parse_positive_duration("0")
                .unwrap_err()
                .contains("'0' is zero")
        );
        assert!(
            parse_positive_duration("0ms")
                .unwrap_err()
                .contains("is zero")
        );
        assert!(
            parse_positive_duration("soon")
                .unwrap_err()
                .contains("invalid duration")
        );
    }
}
