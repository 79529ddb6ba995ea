//! The `sockvisor run` command: turn the parsed arguments into bound
//! listeners, a signal source and a supervisor, then hand over to the event
//! loop. Also the real [`ProcessControl`] that the supervisor drives.

use std::fmt;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpid};

use crate::cli::RunArgs;
use crate::event_loop;
use crate::init::{self, ReaperRole};
use crate::listen::{BindError, ListenSpec, Listener, SpecError, bind_all};
use crate::signals::SignalSource;
use crate::spawn::{self, Command, SpawnError, SpawnRequest};
use crate::supervisor::{Config, ProcessControl, Supervisor};

/// Why `sockvisor run` could not start. Each maps to a documented exit
/// status.
#[derive(Debug)]
pub enum RunError {
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

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Spec(_) => EXIT_USAGE,
            RunError::Bind(_) => EXIT_LISTEN,
            RunError::Spawn(err) => err.exit_code(),
            RunError::Setup(_) => EXIT_SETUP,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spec(err) => err.fmt(f),
            RunError::Bind(err) => err.fmt(f),
            RunError::Spawn(err) => err.fmt(f),
            RunError::Setup(message) => f.write_str(message),
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
    let mut command_line = args.command.into_iter();
    let command = Command {
        program: command_line.next().unwrap_or_default(),
        args: command_line.collect(),
    };
    // Fail on a missing command before binding anything.
    spawn::resolve(&command.program).map_err(RunError::Spawn)?;
    let listeners = bind_all(&specs).map_err(RunError::Bind)?;
    for (index, listener) in listeners.iter().enumerate() {
        tracing::info!(
            "listening on {} (fd {}, name {})",
            listener.bound,
            3 + index,
            listener.spec.name
        );
    }
    let role = init::become_reaper();
    if role == ReaperRole::Pid1 {
        tracing::debug!("running as PID 1: reaping every orphan in this namespace");
    }
    let mut signals = SignalSource::install()
        .map_err(|err| RunError::Setup(format!("cannot install signal handlers: {err}")))?;
    let config = Config {
        restart: args.restart,
        restart_delay: args.restart_delay,
        restart_delay_max: args.restart_delay_max,
        stop_signal: args.stop_signal,
        stop_timeout: args.stop_timeout,
    };
    let processes = ChildProcesses {
        command,
        listeners,
        sockvisor_pid: getpid(),
    };
    let mut supervisor = Supervisor::new(config, processes);
    supervisor.start(Instant::now()).map_err(RunError::Spawn)?;
    Ok(event_loop::run(&mut supervisor, &mut signals))
}

/// Real processes: spawned with the listeners, signalled with kill(2).
struct ChildProcesses {
    command: Command,
    listeners: Vec<Listener>,
    sockvisor_pid: Pid,
}

impl ProcessControl for ChildProcesses {
    fn spawn(&mut self, generation: u32) -> Result<Pid, SpawnError> {
        let extra_env = [
            ("SOCKVISOR_GENERATION".to_string(), generation.to_string()),
            ("SOCKVISOR_PID".to_string(), self.sockvisor_pid.to_string()),
        ];
        spawn::spawn(&SpawnRequest {
            command: &self.command,
            listeners: &self.listeners,
            extra_env: &extra_env,
        })
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        report_signal_error(kill(pid, signal), pid, signal);
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        report_signal_error(killpg(pgid, signal), pgid, signal);
    }
}

fn report_signal_error(result: nix::Result<()>, target: Pid, signal: Signal) {
    match result {
        // Already gone: nothing left to signal.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!("cannot send {} to {target}: {errno}", signal.as_str()),
    }
}
