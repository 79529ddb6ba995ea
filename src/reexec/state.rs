//! The re-exec state: everything one sockvisor program hands to the next,
//! as one versioned serde type written to a memfd. Descriptors are passed
//! by number (they survive `execve`); the rest is data.
//!
//! Format version 1 is JSON with these fields; a program refuses a state
//! whose `version` it does not know (and the check run before every re-exec
//! asks the new program exactly that, so a refusal happens before the exec).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::supervisor::SupervisorState;

/// The state format this program writes and reads.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The sockvisor version that wrote it.
    pub program_version: String,
    /// The path sockvisor was first started from: where a plain `reexec`
    /// looks for the binary again.
    pub started_from: PathBuf,
    /// Re-execs before this one.
    pub reexecs: u32,
    pub supervisor: SupervisorState,
    pub command: CommandRecord,
    pub listeners: Vec<ListenerRecord>,
    pub control: ControlRecord,
    pub notify_dir: NotifyDirRecord,
    pub notify_sockets: Vec<NotifySocketRecord>,
    /// `--fd-env` styles by name.
    pub fd_env: Vec<String>,
    /// The process group that had the terminal when sockvisor started, when
    /// it runs on one.
    pub terminal_group: Option<i32>,
    pub pidfile: Option<PidFileRecord>,
    /// `--fdstore-max`, and the descriptors stored with `FDSTORE=1`.
    #[serde(default)]
    pub fdstore_max: usize,
    #[serde(default)]
    pub fdstore: Vec<StoredRecord>,
    #[serde(default)]
    pub no_listen_pid: bool,
    /// `--user`/`--group`, as resolved at start.
    #[serde(default)]
    pub run_as: Option<crate::credentials::RunAs>,
    /// `--signal-group`.
    #[serde(default)]
    pub signal_group: bool,
    /// `--env-file`s, read again for every worker.
    #[serde(default)]
    pub env_files: Vec<crate::env_file::EnvFile>,
    /// `--metrics`: the endpoint's listening descriptor.
    #[serde(default)]
    pub metrics_fd: Option<i32>,
    /// What each generation read from the `--env-file`s.
    #[serde(default)]
    pub environments: Vec<EnvironmentReadRecord>,
    /// `--watch`: the paths, ignore globs and settle delay.
    #[serde(default)]
    pub watch: Vec<PathBuf>,
    #[serde(default)]
    pub watch_ignore: Vec<String>,
    #[serde(default)]
    pub watch_delay: std::time::Duration,
    /// The soft limit on open files the first program was started with,
    /// when sockvisor raised its own (see `init::raise_open_file_limit`):
    /// still the children's.
    #[serde(default)]
    pub children_open_files: Option<u64>,
}

/// The digest of the env files a generation read, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentReadRecord {
    pub generation: u32,
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub read_at_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub fd: i32,
    pub name: String,
    pub poll: bool,
}

/// The server command, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub program: Vec<u8>,
    pub args: Vec<Vec<u8>>,
}

/// A socket file sockvisor bound, and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRecord {
    pub fd: i32,
    /// The `--listen` spec, or `None` for a socket from the service manager.
    pub spec: Option<String>,
    /// For a socket from the service manager: the number it had.
    pub inherited: Option<i32>,
    pub name: String,
    pub bound: String,
    pub socket_file: Option<FileRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub fd: i32,
    pub file: FileRecord,
    /// The connection of the client that asked for the re-exec: it gets
    /// its answer from the new program.
    pub requester: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyDirRecord {
    pub path: PathBuf,
    pub lock_fd: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySocketRecord {
    pub generation: u32,
    pub fd: i32,
    pub file: FileRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidFileRecord {
    pub path: PathBuf,
    pub contents: String,
}

impl State {
    /// Every descriptor the state names: these must survive the exec.
    pub fn descriptors(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self.listeners.iter().map(|l| l.fd).collect();
        fds.push(self.control.fd);
        fds.extend(self.control.requester);
        fds.push(self.notify_dir.lock_fd);
        fds.extend(self.notify_sockets.iter().map(|n| n.fd));
        fds.extend(self.fdstore.iter().map(|s| s.fd));
        fds.extend(self.metrics_fd);
        fds
    }

    /// Reads a state, refusing a version this program does not know.
    pub fn decode(bytes: &[u8]) -> Result<State, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| format!("the re-exec state is not readable: {e}"))?;
        if version.version != STATE_VERSION {
            return Err(format!(
                "re-exec state version {} is not supported (this sockvisor reads version {STATE_VERSION})",
                version.version
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("the re-exec state is not readable: {e}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
