//! The real processes behind the supervisor's [`Spawner`] and [`Effect`]s:
//! spawning generations with the listeners and a notify socket each,
//! spawning readiness probes, and carrying out the supervisor's commands.
//!
//! This module owns the per-generation resources (the notify sockets) and
//! releases them when the supervisor retires a generation. It makes no
//! decisions.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::cli::FdEnv;
use crate::credentials::RunAs;
use crate::env_file::{self, EnvFile};
use crate::fd_env;
use crate::fdstore::FdStore;
use crate::listen::Listener;
use crate::notify::NotifySocket;
use crate::paths::NotifyDir;
use crate::reaper::Reaper;
use crate::spawn::{self, Command, SpawnError, SpawnRequest};
use crate::supervisor::{Effect, Spawner};
use crate::terminal::Terminal;

pub struct Children {
    pub command: Command,
    pub listeners: Vec<Listener>,
    pub sockvisor_pid: Pid,
    pub control_path: PathBuf,
    /// Holds the notify sockets; removed with them when sockvisor exits.
    pub notify_dir: NotifyDir,
    /// Other socket managers' variables to set as well.
    pub fd_env: Vec<FdEnv>,
    /// The controlling terminal sockvisor runs in the foreground of.
    pub terminal: Option<Terminal>,
    /// Descriptors the generations stored (`FDSTORE=1`).
    pub fdstore: FdStore,
    /// `--watchdog`: given to every worker as `WATCHDOG_USEC`.
    pub watchdog: Option<std::time::Duration>,
    /// `--no-listen-pid`: `LISTEN_PID` is left out.
    pub no_listen_pid: bool,
    /// `--signal-group`: forwarded signals go to each worker's process
    /// group, not the worker alone.
    pub signal_group: bool,
    /// `--user`/`--group`: every worker and readiness probe runs as it.
    pub run_as: Option<RunAs>,
    /// `--env-file`: read again for every worker started.
    pub env_files: Vec<EnvFile>,
    /// Waits for every process started here (and every other child).
    pub reaper: Reaper,
    /// What each generation's workers last read from the env files.
    environments: BTreeMap<u32, EnvironmentRecord>,
    notify: Vec<(u32, NotifySocket)>,
}

impl Children {
    pub fn new(
        command: Command,
        listeners: Vec<Listener>,
        sockvisor_pid: Pid,
        control_path: PathBuf,
        notify_dir: NotifyDir,
        fd_env: Vec<FdEnv>,
    ) -> Children {
        Children {
            command,
            listeners,
            sockvisor_pid,
            control_path,
            notify_dir,
            fd_env,
            terminal: None,
            watchdog: None,
            no_listen_pid: false,
            run_as: None,
            env_files: Vec::new(),
            environments: BTreeMap::new(),
            signal_group: false,
            fdstore: FdStore::default(),
            reaper: Reaper::new(),
            notify: Vec::new(),
        }
    }

    /// The notify sockets to poll, with the generation each belongs to.
    pub fn notify_fds(&self) -> Vec<(u32, BorrowedFd<'_>)> {
        self.notify.iter().map(|(g, s)| (*g, s.fd())).collect()
    }

    /// Every generation's notify socket, for the re-exec hand-over.
    pub fn notify_sockets(&self) -> &[(u32, NotifySocket)] {
        &self.notify
    }

    /// Takes back the notify sockets handed over by re-exec.
    pub fn adopt_notify_sockets(&mut self, sockets: Vec<(u32, NotifySocket)>) {
        self.notify = sockets;
    }

    pub fn notify_socket(&self, generation: u32) -> Option<&NotifySocket> {
        self.notify
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, s)| s)
    }
}

/// Which environment-file contents a generation's workers started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub digest: String,
    pub read_at: std::time::SystemTime,
}

impl Children {
    /// What each generation read from the `--env-file`s, for a re-exec.
    pub fn environments(&self) -> impl Iterator<Item = (u32, &EnvironmentRecord)> {
        self.environments.iter().map(|(n, r)| (*n, r))
    }

    /// What a generation read, carried over a re-exec.
    pub fn restore_environment(&mut self, number: u32, record: EnvironmentRecord) {
        self.environments.insert(number, record);
    }

    /// What generation `number` read from the `--env-file`s, if any.
    pub fn environment_of(&self, number: u32) -> Option<&EnvironmentRecord> {
        self.environments.get(&number)
    }

    /// Reads the env files for a worker of `generation`; no files, no
    /// variables.
    fn read_environment(&mut self, generation: u32) -> Result<Vec<(String, String)>, SpawnError> {
        if self.env_files.is_empty() {
            return Ok(Vec::new());
        }
        let environment = env_file::read_all(&self.env_files).map_err(SpawnError::Environment)?;
        self.environments.insert(
            generation,
            EnvironmentRecord {
                digest: environment.digest,
                read_at: environment.read_at,
            },
        );
        Ok(environment.variables)
    }

    /// Forwards signal `number` (real-time ones included, which `Signal`
    /// cannot name) to a worker, or to its process group with
    /// `--signal-group`. A worker already gone is not an error.
    pub fn forward(&self, worker: Pid, number: i32) {
        // SAFETY: kill(2) and killpg(2) take no pointers; `worker` is a
        // child of ours (and its group's id) that the reaper has not yet
        // reported gone, so the pid cannot have been reused.
        let sent = unsafe {
            if self.signal_group {
                libc::killpg(worker.as_raw(), number)
            } else {
                libc::kill(worker.as_raw(), number)
            }
        };
        if sent != 0 && Errno::last() != Errno::ESRCH {
            tracing::warn!(
                "cannot forward {} to pid {worker}: {}",
                crate::signals::name(number),
                Errno::last().desc().to_lowercase()
            );
        }
    }
}

impl Spawner for Children {
    fn spawn(&mut self, generation: u32, index: u32, foreground: bool) -> Result<Pid, SpawnError> {
        // Read first: a bad file starts nothing, not even a notify socket.
        let env_overrides = self.read_environment(generation)?;
        // One notify socket per generation, shared by its workers.
        let path = self.notify_dir.socket_path(generation);
        let notify = match self.notify_socket(generation) {
            Some(_) => None,
            None => Some(NotifySocket::bind(&path).map_err(|e| {
                SpawnError::Fork(e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))
            })?),
        };
        let control_path = self.control_path.display().to_string();
        let mut extra_env = vec![
            ("NOTIFY_SOCKET".to_string(), path.display().to_string()),
            ("SOCKVISOR_GENERATION".to_string(), generation.to_string()),
            ("SOCKVISOR_WORKER".to_string(), index.to_string()),
            ("SOCKVISOR_PID".to_string(), self.sockvisor_pid.to_string()),
            ("SOCKVISOR_CONTROL".to_string(), control_path.clone()),
        ];
        let passed: Vec<fd_env::Passed<'_>> = self
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| fd_env::Passed {
                fd: 3 + index as i32,
                bound: &l.bound,
            })
            .collect();
        extra_env.extend(fd_env::variables(
            &self.fd_env,
            &passed,
            &fd_env::Context {
                generation,
                worker: index,
                sockvisor_pid: self.sockvisor_pid.as_raw(),
                control_path: &control_path,
            },
        ));
        let stored = self.fdstore.passed();
        let spawned = spawn::spawn(&SpawnRequest {
            command: &self.command,
            listeners: &self.listeners,
            stored: &stored,
            extra_env: &extra_env,
            terminal: self
                .terminal
                .as_ref()
                .filter(|_| foreground)
                .map(Terminal::fd),
            watchdog: self.watchdog,
            no_listen_pid: self.no_listen_pid,
            run_as: self.run_as.as_ref(),
            env_overrides: &env_overrides,
            pidfd: self.reaper.wants_pidfd(),
        })?;
        self.reaper.adopt(spawned.pid, spawned.pidfd);
        if let Some(notify) = notify {
            self.notify.push((generation, notify));
        }
        Ok(spawned.pid)
    }

    fn spawn_probe(
        &mut self,
        command: &str,
        generation: u32,
        target: Pid,
    ) -> Result<Pid, SpawnError> {
        let probe = Command {
            program: OsString::from("/bin/sh"),
            args: vec![OsString::from("-c"), OsString::from(command)],
        };
        let extra_env = [
            ("SOCKVISOR_READY_PID".to_string(), target.to_string()),
            ("SOCKVISOR_GENERATION".to_string(), generation.to_string()),
        ];
        let spawned = spawn::spawn(&SpawnRequest {
            command: &probe,
            listeners: &[],
            stored: &[],
            extra_env: &extra_env,
            terminal: None,
            watchdog: None,
            no_listen_pid: false,
            run_as: self.run_as.as_ref(),
            env_overrides: &[],
            pidfd: self.reaper.wants_pidfd(),
        })?;
        self.reaper.adopt(spawned.pid, spawned.pidfd);
        Ok(spawned.pid)
    }
}

impl Children {
    /// Carries out one command the supervisor decided.
    pub fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Signal { pid, signal } => report_signal_error(kill(pid, signal), pid, signal),
            Effect::SignalGroup { group, signal } => {
                report_signal_error(killpg(group, signal), group, signal)
            }
            Effect::Forward { worker, signal } => self.forward(worker, signal),
            Effect::HandTerminal { group } => {
                if let Some(terminal) = &self.terminal {
                    terminal.hand_to(group);
                }
            }
            Effect::Retire { generation } => {
                self.notify.retain(|(g, _)| *g != generation);
                self.environments.remove(&generation);
            }
        }
    }
}

fn report_signal_error(result: nix::Result<()>, target: Pid, signal: Signal) {
    match result {
        // Already gone: nothing left to signal.
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => tracing::warn!("cannot send {} to {target}: {errno}", signal.as_str()),
    }
}
