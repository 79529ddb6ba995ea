//! The one and only place that calls `waitpid`.
//!
//! Every child exit, whether of a generation's process, a failed `exec`, or
//! an orphan re-parented to sockvisor (as PID 1 or as a child subreaper), is
//! collected here and handed to the caller as an [`Exit`] to dispatch by pid.
//! Nothing else in sockvisor waits for a process: a second waiter would steal
//! statuses from this one.

use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A death by signal N is reported as this plus N, as shells and tini do.
pub const SIGNAL_BASE: i32 = 128;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(Signal),
}

impl ExitStatus {
    /// The status a shell (and tini) would report: the code, or 128 plus
    /// the signal number.
    pub fn as_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => SIGNAL_BASE + signal as i32,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signal(signal) => write!(f, "was killed by {}", signal.as_str()),
        }
    }
}

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: Pid,
    pub status: ExitStatus,
}

/// Collects every child that has exited, without blocking. Call it whenever
/// `SIGCHLD` was seen; signals coalesce, so one call may return many exits.
pub fn reap_all() -> Vec<Exit> {
    let mut exits = Vec::new();
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                tracing::error!("waitpid failed: {errno}");
                break;
            }
            Ok(status) => status,
        };
        match status {
            WaitStatus::Exited(pid, code) => exits.push(Exit {
                pid,
                status: ExitStatus::Code(code),
            }),
            WaitStatus::Signaled(pid, signal, _) => exits.push(Exit {
                pid,
                status: ExitStatus::Signal(signal),
            }),
            // Stops and continues are not requested (no WUNTRACED), so
            // nothing else is expected; keep reaping.
            _ => {}
        }
    }
    exits
}
