//! The `sockvisor run` command: turn the parsed arguments into a control
//! socket, bound listeners, a signal source and a supervisor, then hand over
//! to the event loop.
//!
//! It also owns the list of `sockvisor run`'s exit statuses,
//! [`EXIT_STATUS`]: the numbers are the ones the code returns, and the man
//! pages and `docs/reference.md` are generated from it.

use std::fmt;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::{Uid, getpid};

use crate::children::Children;
use crate::cli::RunArgs;
use crate::control::ControlServer;
use crate::control::{ErrorKind, Reply};
use crate::credentials::RunAs;
use crate::event_loop::EventLoop;
use crate::init::{self, ReaperRole};
use crate::listen::{BindError, ListenAddress, ListenSpec, SpecError, bind_all, take_inherited};
use crate::metrics::MetricsServer;
use crate::paths::{self, NotifyDir};
use crate::pidfile::PidFile;
use crate::reexec;
use crate::service_notify::ServiceNotifier;
use crate::signals::SignalSource;
use crate::spawn::{self, Command, SpawnError};
use crate::supervisor::{Config, ReadyMode, RestartPolicy, Supervisor};
use crate::terminal::Terminal;
use crate::watch::Watcher;

/// Why `sockvisor run` could not start. Each maps to a documented exit
/// status.
#[derive(Debug)]
pub enum RunError {
    Usage(String),
    Spec(SpecError),
    Bind(BindError),
    Spawn(SpawnError),
    Setup(String),
}

/// Exit status for an invalid command line, as clap uses.
pub const EXIT_USAGE: i32 = 2;
/// Exit status when a listener cannot be opened.
pub const EXIT_LISTEN: i32 = 3;
/// Exit status for any other start-up failure.
pub const EXIT_SETUP: i32 = 1;

/// An exit status as the reference writes it: a number, or the rule that
/// gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// This number.
    Code(i32),
    /// The child's own exit code.
    ChildCode,
    /// [`SIGNAL_BASE`](crate::reaper::SIGNAL_BASE) plus the number of the
    /// signal that killed the child.
    KilledBy,
    /// The same, for each of these signals.
    KilledByOneOf(&'static [Signal]),
}

impl Status {
    /// `2`, `the child's exit code`, `128 + N`, `130, 131`.
    pub fn label(self) -> String {
        let killed_by = |signal: Signal| crate::reaper::ExitStatus::Signal(signal).as_code();
        match self {
            Status::Code(code) => code.to_string(),
            Status::ChildCode => "the child's exit code".to_string(),
            Status::KilledBy => format!("{} + N", crate::reaper::SIGNAL_BASE),
            Status::KilledByOneOf(signals) => signals
                .iter()
                .map(|signal| killed_by(*signal).to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Every exit status of `sockvisor run` and when it is used, in the order
/// the reference lists them. Names are in backquotes; the man page drops
/// them.
pub const EXIT_STATUS: &[(Status, &str)] = &[
    (
        Status::ChildCode,
        "The child exited on its own and was not restarted.",
    ),
    (
        Status::KilledBy,
        "The child was killed by signal N (e.g. 137 after `SIGKILL` at the stop timeout).",
    ),
    (
        Status::KilledByOneOf(&crate::supervisor::KEYBOARD_INTERRUPTS),
        "On a terminal, the serving generation was killed by Ctrl-C (`SIGINT`) or Ctrl-\\ \
         (`SIGQUIT`) from the keyboard; it is not restarted, whatever `--restart` says.",
    ),
    (
        Status::Code(0),
        "A requested stop in which the current generation (or, with none serving yet, the one \
         starting) exited 0 or died of the stop signal; or a stop while no generation was \
         running.",
    ),
    (
        Status::Code(EXIT_SETUP),
        "Another start-up failure (e.g. another sockvisor runs with the same name, it cannot \
         install signal handlers, a path it would create is in the way, the child cannot be \
         given its sockets or take the `--user` identity).",
    ),
    (
        Status::Code(EXIT_USAGE),
        "Invalid command line: an unknown flag or a bad value, a bad listen spec, a missing \
         or malformed `--env-file`, an unusable `--user`.",
    ),
    (
        Status::Code(EXIT_LISTEN),
        "A listener cannot be opened (address in use, permission denied, missing directory, \
         a unix socket path that is taken, …).",
    ),
    (
        Status::Code(crate::spawn::EXIT_NOT_EXECUTABLE),
        "The command exists but cannot be executed.",
    ),
    (
        Status::Code(crate::spawn::EXIT_NOT_FOUND),
        "The command was not found.",
    ),
];

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) | RunError::Spec(_) => EXIT_USAGE,
            RunError::Bind(_) => EXIT_LISTEN,
            RunError::Spawn(err) => err.exit_code(),
            RunError::Setup(_) => EXIT_SETUP,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Usage(message) | RunError::Setup(message) => f.write_str(message),
            RunError::Spec(err) => err.fmt(f),
            RunError::Bind(err) => err.fmt(f),
            RunError::Spawn(err) => err.fmt(f),
        }
    }
}

/// Runs the supervisor until it is done and returns sockvisor's exit status.
pub fn run(args: RunArgs) -> Result<i32, RunError> {
    let specs = args
        .listen
        .iter()
        .map(|text| ListenSpec::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(RunError::Spec)?;
    // The same address twice would fail to bind as if another process
    // held it.
    for (at, spec) in specs.iter().enumerate() {
        let any_port =
            matches!(&spec.address, ListenAddress::Tcp(a) | ListenAddress::Udp(a) if a.port() == 0);
        if !any_port
            && specs[..at]
                .iter()
                .any(|earlier| earlier.address == spec.address)
        {
            return Err(RunError::Usage(format!(
                "--listen {} is given twice: each address can be listened on once",
                spec.address
            )));
        }
    }
    let name = args.instance.name.as_str();
    paths::validate_name(name).map_err(RunError::Usage)?;
    let mut command_line = args.command.into_iter();
    let command = Command {
        program: command_line.next().unwrap_or_default(),
        args: command_line.collect(),
    };
    if command.program.is_empty() {
        return Err(RunError::Usage(
            "the command is empty: give the program to run after -- (e.g. -- ./server)".into(),
        ));
    }
    // Fail on a missing command before binding anything.
    spawn::resolve(&command.program).map_err(RunError::Spawn)?;
    // A missing or malformed env file is a usage error before anything
    // is bound; after that, a bad file fails only the generation it was
    // read for.
    crate::env_file::read_all(&args.env_file).map_err(RunError::Usage)?;
    let run_as = match &args.user {
        Some(user) => {
            // Before anything about the user: only root can use --user.
            if !Uid::effective().is_root() {
                return Err(RunError::Usage(format!(
                    "--user {}: only root can use --user (sockvisor runs as uid {}); leave it out, or start sockvisor as root",
                    crate::output::printable(user),
                    Uid::effective()
                )));
            }
            Some(RunAs::resolve(user, args.group.as_deref()).map_err(RunError::Usage)?)
        }
        None => None,
    };

    let control_path = paths::control_path(name, args.instance.control.as_deref());
    let runtime_base = paths::runtime_base();
    let private_base = paths::ensure_private_dir(&runtime_base);
    if let Err(e) = &private_base
        && args.instance.control.is_none()
    {
        let fix = if Uid::effective().is_root() {
            "mount a writable one there (in a container: --tmpfs /run), or give --control PATH in a writable directory"
        } else {
            "set XDG_RUNTIME_DIR to a directory of your own, or give --control PATH in one"
        };
        return Err(RunError::Setup(format!(
            "cannot use runtime directory {}: {e} (it holds the control and notify sockets: {fix})",
            runtime_base.display()
        )));
    }
    // Never serve where every client would refuse to believe the socket.
    if args.instance.control.is_some()
        && let Ok(Some(why)) = crate::control::client::untrusted_directory(&control_path)
    {
        return Err(RunError::Setup(format!(
            "control socket {}: {why}; sockvisor's clients would refuse it there, so pick a --control path in a directory of your own",
            control_path.display()
        )));
    }
    let control = ControlServer::bind(&control_path).map_err(RunError::Setup)?;
    let metrics = match args.metrics {
        Some(address) => Some(MetricsServer::bind(address).map_err(RunError::Setup)?),
        None => None,
    };
    // Sockets from a service manager (systemd socket activation) come
    // first, at fds 3.., then the ones bound here.
    let mut listeners = take_inherited().map_err(RunError::Setup)?;
    listeners.extend(bind_all(&specs).map_err(RunError::Bind)?);
    for (index, listener) in listeners.iter().enumerate() {
        tracing::info!(
            "listening on {} (fd {}, name {})",
            listener.bound,
            3 + index,
            listener.spec.name
        );
    }
    // With an explicit --control, a runtime base that another user made
    // (to plant a fake control socket there) does not stop sockvisor: the
    // notify sockets go to a new directory of its own in the temporary
    // directory instead.
    let notify_dir = match private_base {
        Ok(()) => NotifyDir::create(&runtime_base),
        Err(e) => {
            let shared = std::env::temp_dir();
            tracing::warn!(
                "cannot use runtime directory {}: {e}; notify sockets go to a new directory in {}",
                runtime_base.display(),
                shared.display()
            );
            NotifyDir::create_in_shared(&shared)
        }
    }
    .map_err(|e| {
        RunError::Setup(format!(
            "cannot create a notify socket directory in {}: {e}",
            runtime_base.display()
        ))
    })?;
    let pidfile = match &args.pidfile {
        Some(path) => Some(
            PidFile::write(path, std::process::id()).map_err(|e| RunError::Setup(e.to_string()))?,
        ),
        None => None,
    };
    init::raise_open_file_limit(None);
    if init::become_reaper() == ReaperRole::Pid1 {
        tracing::debug!("running as PID 1: reaping every orphan in this namespace");
    }
    let signals = SignalSource::install()
        .map_err(|err| RunError::Setup(format!("cannot install signal handlers: {err}")))?;
    tracing::info!("control socket: {}", control_path.display());
    let terminal = Terminal::detect();
    if terminal.is_some() {
        tracing::debug!("on a terminal: each serving generation is its foreground process group");
    }
    // Readiness is about sockets: with none to serve, there is nothing to
    // wait for (a shell, a REPL, a worker), as under tini.
    let ready = args.ready.unwrap_or(if listeners.is_empty() {
        ReadyMode::Now
    } else {
        ReadyMode::Notify
    });

    // As systemd's WatchdogSec=0 (and a worker's WATCHDOG_USEC=0): off. A
    // zero interval would declare every ready worker hung at once.
    let watchdog = args.watchdog.filter(|interval| !interval.is_zero());
    let config = Config {
        restart: args.restart.unwrap_or(if listeners.is_empty() {
            RestartPolicy::Never
        } else {
            RestartPolicy::Always
        }),
        restart_delay: args.restart_delay,
        restart_delay_max: args.restart_delay_max,
        stop_signal: args.stop_signal,
        stop_timeout: args.stop_timeout,
        drain_timeout: args.drain_timeout,
        ready,
        ready_timeout: args.ready_timeout,
        workers: args.workers,
        max_surge: args.max_surge,
        watchdog,
        recycle: crate::supervisor::Recycle {
            max_rss: args.worker_max_rss,
            max_age: args.worker_max_age,
            sample_interval: args.worker_sample_interval,
        },
        terminal: terminal.is_some(),
    };
    let mut children = Children::new(
        command,
        listeners,
        getpid(),
        control_path,
        notify_dir,
        args.fd_env,
    );
    children.terminal = terminal;
    children.fdstore = crate::fdstore::FdStore::new(args.fdstore_max);
    children.watchdog = watchdog;
    children.no_listen_pid = args.no_listen_pid;
    if let Some(run_as) = &run_as {
        children.notify_dir.open_to_group(run_as.gid).map_err(|e| {
            RunError::Setup(format!(
                "cannot let group {} reach the notify sockets: {e}",
                run_as.gid
            ))
        })?;
        tracing::info!(
            "the server runs as {} (uid {}, gid {})",
            run_as.name,
            run_as.uid,
            run_as.gid
        );
    }
    children.run_as = run_as;
    children.signal_group = args.signal_group;
    children.env_files = args.env_file.clone();
    let watcher = if args.watch.is_empty() {
        None
    } else {
        Some(
            Watcher::new(&args.watch, args.watch_ignore.clone(), args.watch_delay)
                .map_err(RunError::Usage)?,
        )
    };
    let mut supervisor = Supervisor::new(config, children);
    if let Err(err) = supervisor.start(Instant::now()) {
        // Workers of a generation that started only in part are killed.
        for effect in supervisor.take_effects() {
            supervisor.processes_mut().carry_out(effect);
        }
        return Err(RunError::Spawn(err));
    }
    let service = ServiceNotifier::from_env();
    Ok(EventLoop::new(supervisor, signals, control, service)
        .with_pidfile(pidfile)
        .with_watcher(watcher)
        .with_metrics(metrics)
        .run())
}

/// Goes on where the previous program of this process stopped: it
/// re-executed into this one and handed its state over. A state this
/// program cannot restore sends it back to the previous program, and the
/// service goes on there.
pub fn resume(inherited: reexec::Inherited) -> Result<i32, RunError> {
    let refused = inherited.refused_for_test();
    let reexec::Inherited { state, handover } = inherited;
    reexec::exec::remember_started_from(Some(state.started_from.clone()));
    if refused {
        reexec::fall_back(
            handover,
            "refused by the test switch SOCKVISOR_TEST_RESTORE_FAILS_IN",
        );
    }
    if let Err(why) = reexec::capture::validate(&state) {
        reexec::fall_back(handover, &why);
    }
    init::raise_open_file_limit(state.children_open_files);
    let now = Instant::now();
    let restored = reexec::capture::restore(&state, now).map_err(RunError::Setup)?;
    reexec::exec::own_descriptors(&state);
    let failed = handover.failed.clone();
    handover.done();
    init::become_reaper();
    let signals = SignalSource::install()
        .map_err(|err| RunError::Setup(format!("cannot install signal handlers: {err}")))?;
    // Everything was blocked across the exec; what arrived meanwhile is
    // delivered to the handlers now.
    init::clear_signal_mask();
    if restored.supervisor.processes().terminal.is_some() {
        let _ = crate::terminal::block_job_control();
    }
    let serving = restored
        .supervisor
        .current()
        .map_or_else(|| "none".to_string(), |g| g.number.to_string());
    let (reexecs, result) = match failed {
        None => {
            let message = format!(
                "sockvisor {} re-executed in place: pid {}, state version {}, generation {serving} serving",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                reexec::STATE_VERSION
            );
            tracing::info!("{message}");
            (state.reexecs + 1, Reply::success(message))
        }
        Some(why) => {
            let message = format!(
                "the new binary could not restore the state ({why}); sockvisor {} runs again, generation {serving} serving",
                env!("CARGO_PKG_VERSION")
            );
            tracing::warn!("{message}");
            (state.reexecs, Reply::failure(ErrorKind::Failed, message))
        }
    };
    let service = ServiceNotifier::from_env();
    let watcher = if state.watch.is_empty() {
        None
    } else {
        Watcher::new(&state.watch, state.watch_ignore.clone(), state.watch_delay)
            .map_err(|why| tracing::warn!("after the re-exec: {why}"))
            .ok()
    };
    let metrics = match state.metrics_fd {
        Some(fd) => Some(
            crate::reexec::exec::adopt_fd(fd)
                .and_then(MetricsServer::adopt)
                .map_err(RunError::Setup)?,
        ),
        None => None,
    };
    let event_loop = EventLoop::new(restored.supervisor, signals, restored.control, service)
        .with_pidfile(restored.pidfile)
        .with_watcher(watcher)
        .with_metrics(metrics);
    let last_reexec = (reexecs > state.reexecs).then_some(now);
    Ok(event_loop
        .resumed(reexecs, last_reexec, restored.requester, result, now)
        .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(code: i32) -> bool {
        EXIT_STATUS
            .iter()
            .any(|(status, _)| *status == Status::Code(code))
    }

    #[test]
    fn every_start_up_error_exits_with_a_listed_status() {
        let spec = ListenSpec::parse("127.0.0.1:80,nmae=http").unwrap_err();
        let errors = [
            RunError::Usage("bad".into()),
            RunError::Spec(spec),
            RunError::Bind(BindError {
                spec: "127.0.0.1:80".into(),
                reason: "permission denied".into(),
                hint: None,
            }),
            RunError::Spawn(SpawnError::NotFound {
                program: "x".into(),
                path_var: String::new(),
            }),
            RunError::Spawn(SpawnError::NotExecutable {
                path: "/x".into(),
                reason: "not a file".into(),
            }),
            RunError::Spawn(SpawnError::Fork(nix::errno::Errno::EAGAIN)),
            RunError::Setup("bad".into()),
        ];
        for error in errors {
            assert!(listed(error.exit_code()), "{error}: {}", error.exit_code());
        }
    }

    #[test]
    fn statuses_are_labelled_as_the_reference_writes_them() {
        let labels: Vec<String> = EXIT_STATUS.iter().map(|(s, _)| s.label()).collect();
        assert_eq!(
            labels,
            [
                "the child's exit code",
                "128 + N",
                "130, 131",
                "0",
                "1",
                "2",
                "3",
                "126",
                "127"
            ]
        );
    }
}
