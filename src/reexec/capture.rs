//! Gathering the re-exec state from the running objects (the old program's
//! side) and building the objects again from it (the new program's side).

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use clap::ValueEnum;
use nix::unistd::Pid;

use super::exec::adopt_fd;
use super::state::{
    CommandRecord, ControlRecord, EnvironmentReadRecord, FileRecord, ListenerRecord,
    NotifyDirRecord, NotifySocketRecord, PidFileRecord, STATE_VERSION, State, StoredRecord,
};
use crate::children::Children;
use crate::cli::FdEnv;
use crate::control::ControlServer;
use crate::fdstore::{FdStore, StoredFd};
use crate::listen::{ListenAddress, ListenSpec, Listener};
use crate::notify::NotifySocket;
use crate::paths::NotifyDir;
use crate::pidfile::PidFile;
use crate::socket_file::BoundFile;
use crate::spawn::Command;
use crate::supervisor::Supervisor;
use crate::terminal::Terminal;

fn file_record(file: &BoundFile) -> FileRecord {
    let (dev, ino) = file.identity();
    FileRecord {
        path: file.path().to_path_buf(),
        dev,
        ino,
    }
}

fn adopt_file(record: &FileRecord) -> BoundFile {
    BoundFile::adopt(record.path.clone(), record.dev, record.ino)
}

/// Everything the running program knows, for the next one.
pub fn capture(
    supervisor: &Supervisor<Children>,
    control: &ControlServer,
    requester: Option<i32>,
    pidfile: Option<&PidFile>,
    watcher: Option<&crate::watch::Watcher>,
    reexecs: u32,
    now: Instant,
) -> State {
    let children = supervisor.processes();
    State {
        watch: watcher.map(|w| w.paths.clone()).unwrap_or_default(),
        watch_ignore: watcher.map(|w| w.ignore.clone()).unwrap_or_default(),
        watch_delay: watcher.map(|w| w.delay).unwrap_or_default(),
        children_open_files: crate::init::children_open_file_limit(),
        version: STATE_VERSION,
        program_version: env!("CARGO_PKG_VERSION").into(),
        started_from: super::started_from(),
        reexecs,
        supervisor: supervisor.capture(now),
        command: CommandRecord {
            program: children.command.program.as_bytes().to_vec(),
            args: children
                .command
                .args
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect(),
        },
        listeners: children
            .listeners
            .iter()
            .map(|l| {
                let inherited = match l.spec.address {
                    ListenAddress::Inherited(number) => Some(number),
                    _ => None,
                };
                ListenerRecord {
                    fd: l.fd().as_raw_fd(),
                    spec: inherited.is_none().then(|| l.spec.text.clone()),
                    inherited,
                    name: l.spec.name.clone(),
                    bound: l.bound.clone(),
                    socket_file: l.socket_file().map(file_record),
                }
            })
            .collect(),
        control: ControlRecord {
            fd: control.listener_fd(),
            file: file_record(control.file()),
            requester,
        },
        notify_dir: NotifyDirRecord {
            path: children.notify_dir.path().to_path_buf(),
            lock_fd: children.notify_dir.lock_fd(),
        },
        notify_sockets: children
            .notify_sockets()
            .iter()
            .map(|(generation, socket)| NotifySocketRecord {
                generation: *generation,
                fd: socket.fd().as_raw_fd(),
                file: file_record(socket.file()),
            })
            .collect(),
        fd_env: children
            .fd_env
            .iter()
            .filter_map(|style| style.to_possible_value())
            .map(|value| value.get_name().to_string())
            .collect(),
        terminal_group: children
            .terminal
            .as_ref()
            .map(|t| t.original_group().as_raw()),
        pidfile: pidfile.map(|p| PidFileRecord {
            path: p.path().to_path_buf(),
            contents: p.contents().to_string(),
        }),
        fdstore_max: children.fdstore.max(),
        no_listen_pid: children.no_listen_pid,
        run_as: children.run_as.clone(),
        signal_group: children.signal_group,
        env_files: children.env_files.clone(),
        metrics_fd: None,
        environments: children
            .environments()
            .map(|(generation, record)| EnvironmentReadRecord {
                generation,
                digest: record.digest.clone(),
                read_at_unix_ms: record
                    .read_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, crate::duration::as_millis),
            })
            .collect(),
        fdstore: children
            .fdstore
            .entries()
            .iter()
            .map(|e| StoredRecord {
                fd: e.fd.as_raw_fd(),
                name: e.name.clone(),
                poll: e.poll,
            })
            .collect(),
    }
}

/// The objects a state describes, rebuilt in the new program.
pub struct Restored {
    pub supervisor: Supervisor<Children>,
    pub control: ControlServer,
    pub requester: Option<UnixStream>,
    pub pidfile: Option<PidFile>,
}

/// Checks everything that can fail before any descriptor is taken over,
/// so that a refusal leaves them open for the previous program.
pub fn validate(state: &State) -> Result<(), String> {
    validate_data(state)?;
    for fd in state.descriptors() {
        if !super::exec::is_open(fd) {
            return Err(format!("descriptor {fd} of the re-exec state is not open"));
        }
    }
    Ok(())
}

/// The part of `validate` that needs neither the descriptors nor the
/// processes: what the re-exec check proves on a copy of the state.
pub fn validate_data(state: &State) -> Result<(), String> {
    state.supervisor.config.restore()?;
    for listener in &state.listeners {
        if let Some(spec) = &listener.spec {
            ListenSpec::parse(spec).map_err(|e| e.to_string())?;
        }
    }
    for style in &state.fd_env {
        FdEnv::from_str(style, true).map_err(|_| format!("unknown --fd-env style '{style}'"))?;
    }
    let dummy = Supervisor::restore(&state.supervisor, NoProcesses, Instant::now());
    dummy.map(|_| ())
}

/// Rebuilds the objects; call after `validate`.
pub fn restore(state: &State, now: Instant) -> Result<Restored, String> {
    let mut listeners = Vec::new();
    for record in &state.listeners {
        let fd = adopt_fd(record.fd)?;
        let spec = match (&record.spec, record.inherited) {
            (Some(text), _) => {
                let mut spec = ListenSpec::parse(text).map_err(|e| e.to_string())?;
                spec.name = record.name.clone();
                spec
            }
            (None, number) => inherited_spec(number.unwrap_or(3), &record.name),
        };
        listeners.push(Listener::adopt(
            fd,
            spec,
            record.bound.clone(),
            record.socket_file.as_ref().map(adopt_file),
        ));
    }
    let control_fd = adopt_fd(state.control.fd)?;
    let control = ControlServer::adopt(control_fd, adopt_file(&state.control.file))?;
    let requester = match state.control.requester {
        Some(fd) => Some(UnixStream::from(adopt_fd(fd)?)),
        None => None,
    };
    let lock = std::fs::File::from(adopt_fd(state.notify_dir.lock_fd)?);
    let notify_dir = NotifyDir::adopt(state.notify_dir.path.clone(), lock)
        .map_err(|e| format!("cannot take the notify directory's lock again: {e}"))?;
    let mut notify_sockets = Vec::new();
    for record in &state.notify_sockets {
        let fd = adopt_fd(record.fd)?;
        notify_sockets.push((
            record.generation,
            NotifySocket::adopt(fd, adopt_file(&record.file)),
        ));
    }
    let command = Command {
        program: OsString::from_vec(state.command.program.clone()),
        args: state
            .command
            .args
            .iter()
            .map(|a| OsString::from_vec(a.clone()))
            .collect(),
    };
    let fd_env = state
        .fd_env
        .iter()
        .filter_map(|s| FdEnv::from_str(s, true).ok())
        .collect();
    let mut children = Children::new(
        command,
        listeners,
        nix::unistd::getpid(),
        state.control.file.path.clone(),
        notify_dir,
        fd_env,
    );
    children.adopt_notify_sockets(notify_sockets);
    children.fdstore = FdStore::new(state.fdstore_max);
    children.watchdog = state.supervisor.config.watchdog;
    children.no_listen_pid = state.no_listen_pid;
    children.run_as = state.run_as.clone();
    children.signal_group = state.signal_group;
    children.env_files = state.env_files.clone();
    for record in &state.environments {
        children.restore_environment(
            record.generation,
            crate::children::EnvironmentRecord {
                digest: record.digest.clone(),
                read_at: std::time::UNIX_EPOCH
                    .checked_add(std::time::Duration::from_millis(record.read_at_unix_ms))
                    .unwrap_or(std::time::UNIX_EPOCH),
            },
        );
    }
    let mut stored = Vec::new();
    for record in &state.fdstore {
        stored.push(StoredFd {
            name: record.name.clone(),
            fd: adopt_fd(record.fd)?,
            poll: record.poll,
        });
    }
    children.fdstore.adopt(stored);
    children.terminal = state
        .terminal_group
        .map(|group| Terminal::adopt(Pid::from_raw(group)));
    let mut supervisor = Supervisor::restore(&state.supervisor, children, now)?;
    // The old program's pidfds closed at the exec: wait on every process
    // by a pidfd of this one's, and sweep once for anything else that
    // exited across the exec.
    let pids = supervisor.process_pids();
    let reaper = &mut supervisor.processes_mut().reaper;
    for pid in pids {
        reaper.adopt_running(pid);
    }
    reaper.sweep_at(now);
    Ok(Restored {
        supervisor,
        control,
        requester,
        pidfile: state
            .pidfile
            .as_ref()
            .map(|p| PidFile::adopt(p.path.clone(), p.contents.clone())),
    })
}

fn inherited_spec(number: i32, name: &str) -> ListenSpec {
    let address = ListenAddress::Inherited(number);
    ListenSpec {
        text: address.to_string(),
        address,
        name: name.to_string(),
        backlog: None,
        reuseport: false,
        mode: None,
        v6only: false,
    }
}

/// Stands in for the real processes while a state is only checked: it
/// starts and signals nothing.
struct NoProcesses;

impl crate::supervisor::Spawner for NoProcesses {
    fn spawn(&mut self, _: u32, _: u32, _: bool) -> Result<Pid, crate::spawn::SpawnError> {
        Err(crate::spawn::SpawnError::Fork(nix::errno::Errno::EPERM))
    }
    fn spawn_probe(&mut self, _: &str, _: u32, _: Pid) -> Result<Pid, crate::spawn::SpawnError> {
        Err(crate::spawn::SpawnError::Fork(nix::errno::Errno::EPERM))
    }
}
