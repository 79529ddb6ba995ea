//! The one and only place that waits for children.
//!
//! Every child exit, whether of a generation's process, a probe, a failed
//! `exec`, or an orphan re-parented to sockvisor (as PID 1 or as a child
//! subreaper), is collected here and handed to the caller as an [`Exit`] to
//! dispatch by pid. Nothing else in sockvisor waits for a process: a second
//! waiter would steal statuses from this one.
//!
//! Cost: `waitpid(-1)` walks the list of every child of sockvisor on each
//! call, so reaping each exit that way costs O(N) in the number of workers,
//! and a rolling upgrade, which retires one worker at a time, pays that walk
//! per worker. So the children sockvisor starts are watched through a pidfd
//! each, all in one epoll instance (the poll set gains one descriptor,
//! whatever the number of children): an exit makes its pidfd readable, and
//! reaping it is one `waitid(P_PIDFD)`. The walk remains for what no pidfd
//! reports (orphans, a child started without a pidfd when descriptors ran
//! out): it runs when `SIGCHLD` comes, at most once per [`SWEEP_INTERVAL`];
//! a `SIGCHLD` sooner than that schedules it for then.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

/// The least time between two walks of every child (see the module docs).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

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

/// The children watched by pidfd, and when the next walk of every child
/// is due.
pub struct Reaper {
    /// `None` if no epoll instance could be made: every exit is then found
    /// by the walk.
    epoll: Option<Epoll>,
    watched: BTreeMap<Pid, OwnedFd>,
    last_sweep: Option<Instant>,
    sweep_at: Option<Instant>,
}

impl Default for Reaper {
    fn default() -> Reaper {
        Reaper::new()
    }
}

impl Reaper {
    pub fn new() -> Reaper {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .inspect_err(|errno| {
                tracing::warn!("cannot create an epoll instance ({errno}): exits are found by SIGCHLD alone")
            })
            .ok();
        Reaper {
            epoll,
            watched: BTreeMap::new(),
            last_sweep: None,
            sweep_at: None,
        }
    }

    /// The descriptor to poll for readability: an exit of a watched child.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.epoll.as_ref().map(|e| e.0.as_fd())
    }

    /// How many children are watched by pidfd.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Watches child `pid` through `pidfd`. If it cannot be watched, its
    /// exit is still found, by the walk.
    pub fn watch(&mut self, pid: Pid, pidfd: OwnedFd) {
        let Some(epoll) = &self.epoll else {
            return;
        };
        let Ok(data) = u64::try_from(pid.as_raw()) else {
            return;
        };
        match epoll.add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, data)) {
            Ok(()) => {
                self.watched.insert(pid, pidfd);
            }
            Err(errno) => tracing::debug!("cannot watch pid {pid} by pidfd: {errno}"),
        }
    }

    /// The exits of watched children: one `waitid` per readable pidfd, no
    /// walk. Call it when [`Reaper::fd`] is readable.
    pub fn reap_watched(&mut self) -> Vec<Exit> {
        let mut exits = Vec::new();
        let Some(epoll) = &self.epoll else {
            return exits;
        };
        let mut events = [EpollEvent::empty(); 64];
        let mut ready = Vec::new();
        loop {
            let count = match epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(count) => count,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!("epoll_wait failed: {errno}");
                    0
                }
            };
            ready.extend(
                events[..count]
                    .iter()
                    .filter_map(|e| i32::try_from(e.data()).ok())
                    .map(Pid::from_raw),
            );
            if count < events.len() {
                break;
            }
        }
        for pid in ready {
            let Some(pidfd) = self.watched.get(&pid) else {
                continue;
            };
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
            match waitid(Id::PIDFd(pidfd.as_fd()), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => continue,
                Ok(status) => exits.extend(exit_of(status)),
                // Reaped already (by a walk), or not ours any more.
                Err(_) => {}
            }
            // Closing the pidfd takes it out of the epoll instance.
            self.watched.remove(&pid);
        }
        exits
    }

    /// `SIGCHLD` came: an exit may have come that no pidfd reports. Walks
    /// every child now, or, within [`SWEEP_INTERVAL`] of the last walk,
    /// schedules one for then.
    pub fn on_sigchld(&mut self, now: Instant) -> Vec<Exit> {
        match self.last_sweep.map(|at| at + SWEEP_INTERVAL) {
            Some(next) if next > now => {
                self.sweep_at.get_or_insert(next);
                Vec::new()
            }
            _ => self.sweep(now),
        }
    }

    /// When the scheduled walk is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sweep_at
    }

    /// Runs the scheduled walk if it is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Exit> {
        match self.sweep_at {
            Some(at) if at <= now => self.sweep(now),
            _ => Vec::new(),
        }
    }

    fn sweep(&mut self, now: Instant) -> Vec<Exit> {
        self.last_sweep = Some(now);
        self.sweep_at = None;
        let exits = reap_all();
        for exit in &exits {
            self.watched.remove(&exit.pid);
        }
        exits
    }
}

fn exit_of(status: WaitStatus) -> Option<Exit> {
    match status {
        WaitStatus::Exited(pid, code) => Some(Exit {
            pid,
            status: ExitStatus::Code(code),
        }),
        WaitStatus::Signaled(pid, signal, _) => Some(Exit {
            pid,
            status: ExitStatus::Signal(signal),
        }),
        // Stops and continues are not requested (no WUNTRACED).
        _ => None,
    }
}

/// Collects every child that has exited, without blocking: the walk.
fn reap_all() -> Vec<Exit> {
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
        // Anything but an exit is not expected; keep reaping.
        exits.extend(exit_of(status));
    }
    exits
}
