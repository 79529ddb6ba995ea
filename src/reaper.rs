//! The one and only place that waits for a process.
//!
//! Every child exit, whether of a generation's process, a failed `exec`, or
//! an orphan re-parented to sockvisor (as PID 1 or as a child subreaper), is
//! collected here and handed to the caller as an [`Exit`] to dispatch by pid.
//! Nothing else in sockvisor waits for a process: a second waiter would steal
//! statuses from this one.
//!
//! Two ways in, so that an exit costs O(1) in the number of children:
//!
//! - A child started with a pidfd is *watched*: its pidfd sits in one epoll
//!   instance, whose descriptor the event loop polls. When that is
//!   readable, [`Reaper::reap_ready`] waits on each exited child's pidfd
//!   alone (`waitid(P_PIDFD)`), which the kernel answers without looking at
//!   any other child.
//! - `waitpid(-1)`, the *sweep*, finds every other exit: orphans, children
//!   started without a pidfd (old kernels, no descriptor to spare), and any
//!   child whose pidfd could not be waited on. It walks the kernel's list
//!   of all of sockvisor's children each time it is called, so on
//!   `SIGCHLD` it runs at once only when no watched exit since the last
//!   `SIGCHLD` explains the signal; otherwise it is put off (see
//!   [`sweep_delay`]). Signals coalesce, so a `SIGCHLD` explained by a
//!   watched exit may also stand for an orphan's: the put-off sweep
//!   collects that orphan. While a child of sockvisor's own is alive
//!   unwatched, no sweep is put off, so its exit is seen at once.
//!
//! Every child still has `SIGCHLD` as its exit signal, so a sockvisor that
//! resumes after a re-exec, of this version or another, reaps it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
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

/// How long a sweep may be put off after a `SIGCHLD` that a watched exit
/// explains, with `children` children known: the longest an orphan's
/// zombie can wait to be collected then. A sweep walks every child, so the
/// delay grows with them (100 ms, plus 1 ms per child, at most 1 s) and
/// put-off sweeps cost about the same share of a core at any N while
/// children keep exiting.
pub fn sweep_delay(children: usize) -> Duration {
    let per_child = Duration::from_millis(u64::try_from(children).unwrap_or(u64::MAX).min(900));
    Duration::from_millis(100) + per_child
}

/// Pidfds handled per [`Reaper::reap_ready`], so that a mass exit cannot
/// hold the loop: the rest stay readable for the next wake-up.
const READY_BUDGET: usize = 256;

/// The children sockvisor waits for, and how (see the module docs).
pub struct Reaper {
    /// Holds every watched pidfd; `None` if epoll is unavailable, and then
    /// nothing is watched.
    epoll: Option<Epoll>,
    watched: BTreeMap<i32, OwnedFd>,
    /// sockvisor's own children that have no pidfd.
    unwatched: BTreeSet<i32>,
    sweeps: SweepPolicy,
    /// Pidfds to keep at most: descriptors are left for everything else.
    budget: usize,
}

/// Descriptors never taken for pidfds under `RLIMIT_NOFILE`: room for the
/// listeners, the control socket's clients, the fd store and the rest.
const RESERVED_FDS: u64 = 256;

impl Reaper {
    pub fn new() -> Reaper {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let budget = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        // Under a limit too tight for any pidfd, not even the epoll
        // descriptor is taken.
        let epoll = match (budget > 0).then(|| Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)) {
            Some(Ok(epoll)) => Some(epoll),
            Some(Err(errno)) => {
                tracing::debug!("epoll unavailable ({errno}): children are reaped by sweeps");
                None
            }
            None => None,
        };
        Reaper {
            epoll,
            watched: BTreeMap::new(),
            unwatched: BTreeSet::new(),
            sweeps: SweepPolicy::default(),
            budget,
        }
    }

    /// Whether the next child should be started with a pidfd.
    pub fn wants_pidfd(&self) -> bool {
        self.epoll.is_some() && self.watched.len() < self.budget
    }

    /// Takes over waiting for `pid`, a child just started, by its pidfd if
    /// it has one.
    pub fn adopt(&mut self, pid: Pid, pidfd: Option<OwnedFd>) {
        let watching = match (&self.epoll, pidfd) {
            (Some(epoll), Some(pidfd)) => {
                let event = EpollEvent::new(EpollFlags::EPOLLIN, pid.as_raw() as u64);
                match epoll.add(&pidfd, event) {
                    Ok(()) => {
                        self.watched.insert(pid.as_raw(), pidfd);
                        true
                    }
                    Err(errno) => {
                        tracing::debug!("cannot watch pid {pid}'s pidfd: {errno}");
                        false
                    }
                }
            }
            _ => false,
        };
        if !watching {
            self.unwatched.insert(pid.as_raw());
        }
    }

    /// Takes over waiting for `pid`, a child this sockvisor did not start
    /// (it was handed over by a re-exec): opens a pidfd for it.
    pub fn adopt_running(&mut self, pid: Pid) {
        if !self.wants_pidfd() {
            self.unwatched.insert(pid.as_raw());
            return;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; nothing else is touched.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        // SAFETY: a new descriptor that nothing else owns.
        let pidfd = i32::try_from(fd)
            .ok()
            .filter(|fd| *fd >= 0)
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        self.adopt(pid, pidfd);
    }

    /// What the event loop polls for watched exits.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.epoll.as_ref().map(|epoll| epoll.0.as_fd())
    }

    /// When the put-off sweep is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sweeps.due_at
    }

    /// Collects the watched children that have exited, by their pidfds.
    pub fn reap_ready(&mut self) -> Vec<Exit> {
        let Some(epoll) = &self.epoll else {
            return Vec::new();
        };
        let mut events = [EpollEvent::empty(); READY_BUDGET];
        let count = match epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(count) => count,
            Err(Errno::EINTR) => return Vec::new(),
            Err(errno) => {
                tracing::error!("epoll_wait failed: {errno}");
                return Vec::new();
            }
        };
        let mut exits = Vec::new();
        let mut sweep = false;
        for event in &events[..count] {
            let Ok(pid) = i32::try_from(event.data()) else {
                continue;
            };
            let Some(pidfd) = self.watched.remove(&pid) else {
                continue;
            };
            let status = loop {
                match waitid(
                    Id::PIDFd(pidfd.as_fd()),
                    WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
                ) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            // Closing the pidfd takes it out of the epoll instance: no
            // other descriptor refers to it (children get none, and a
            // child's copy during its exec is gone before it matters: an
            // event for a pid no longer watched is skipped above).
            drop(pidfd);
            match status.ok().and_then(exit_of) {
                Some(exit) => {
                    self.sweeps.watched_exit();
                    exits.push(exit);
                }
                // Readable yet not waitable: left to a sweep, at once.
                None => {
                    self.unwatched.insert(pid);
                    sweep = true;
                }
            }
        }
        if sweep {
            exits.extend(self.sweep());
        }
        exits
    }

    /// Collects what a `SIGCHLD` stands for: the watched exits, then a
    /// sweep now or put off (see the module docs).
    pub fn on_sigchld(&mut self, now: Instant) -> Vec<Exit> {
        let mut exits = self.reap_ready();
        let children = self.watched.len() + self.unwatched.len();
        if self
            .sweeps
            .on_sigchld(now, !self.unwatched.is_empty(), sweep_delay(children))
        {
            exits.extend(self.sweep());
        }
        exits
    }

    /// Has a sweep run at `at` at the latest.
    pub fn sweep_at(&mut self, at: Instant) {
        self.sweeps.due_by(at);
    }

    /// Runs the put-off sweep once it is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Exit> {
        if self.sweeps.is_due(now) {
            self.sweep()
        } else {
            Vec::new()
        }
    }

    /// Every child that has exited, watched or not, by `waitpid(-1)`.
    fn sweep(&mut self) -> Vec<Exit> {
        self.sweeps.swept();
        let exits = reap_all();
        for exit in &exits {
            let pid = exit.pid.as_raw();
            self.unwatched.remove(&pid);
            if let Some(pidfd) = self.watched.remove(&pid)
                && let Some(epoll) = &self.epoll
            {
                let _ = epoll.delete(&pidfd);
            }
        }
        exits
    }
}

impl Default for Reaper {
    fn default() -> Reaper {
        Reaper::new()
    }
}

/// When to sweep: the reaper's decisions, apart from its system calls.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SweepPolicy {
    /// Watched exits since the last `SIGCHLD`: the signals they sent are
    /// what the next `SIGCHLD` may stand for.
    awaiting_sigchld: usize,
    /// When the put-off sweep runs.
    due_at: Option<Instant>,
}

impl SweepPolicy {
    fn watched_exit(&mut self) {
        self.awaiting_sigchld += 1;
    }

    /// A `SIGCHLD` came, after the watched exits were collected: whether
    /// to sweep now. If not, a sweep is due within `delay` (not later than
    /// one already due: at most one sweep per delay).
    fn on_sigchld(&mut self, now: Instant, unwatched_alive: bool, delay: Duration) -> bool {
        let explained = self.awaiting_sigchld > 0;
        self.awaiting_sigchld = 0;
        if !explained || unwatched_alive {
            return true;
        }
        self.due_by(crate::deadline::after(now, delay));
        false
    }

    fn due_by(&mut self, at: Instant) {
        self.due_at = Some(self.due_at.map_or(at, |due| due.min(at)));
    }

    fn is_due(&self, now: Instant) -> bool {
        self.due_at.is_some_and(|at| at <= now)
    }

    fn swept(&mut self) {
        self.due_at = None;
    }
}

/// The exit a wait reported, if it was one.
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

/// Collects every child that has exited, without blocking.
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
        // Stops and continues are not requested, so nothing else is
        // expected; keep reaping.
        exits.extend(exit_of(status));
    }
    exits
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWEEP_DELAY: Duration = Duration::from_millis(100);

    #[test]
    fn a_sweep_is_put_off_longer_the_more_children_it_walks() {
        assert_eq!(sweep_delay(0), Duration::from_millis(100));
        assert_eq!(sweep_delay(4), Duration::from_millis(104));
        assert_eq!(sweep_delay(1056), Duration::from_secs(1));
        assert_eq!(sweep_delay(usize::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_sigchld_no_watched_exit_explains_sweeps_at_once() {
        let mut policy = SweepPolicy::default();
        let now = Instant::now();
        assert!(policy.on_sigchld(now, false, SWEEP_DELAY));
        assert_eq!(policy.due_at, None);
    }

    #[test]
    fn a_sigchld_a_watched_exit_explains_puts_the_sweep_off_once() {
        let mut policy = SweepPolicy::default();
        let now = Instant::now();
        policy.watched_exit();
        policy.watched_exit();
        assert!(!policy.on_sigchld(now, false, SWEEP_DELAY));
        assert_eq!(policy.due_at, Some(now + SWEEP_DELAY));
        assert!(!policy.is_due(now));
        assert!(policy.is_due(now + SWEEP_DELAY));
        // Two exits, one signal (they coalesce): the next SIGCHLD with no
        // watched exit since stands for something else.
        assert!(policy.on_sigchld(now, false, SWEEP_DELAY));
    }

    #[test]
    fn a_put_off_sweep_is_not_put_off_further_by_later_signals() {
        let mut policy = SweepPolicy::default();
        let now = Instant::now();
        policy.watched_exit();
        assert!(!policy.on_sigchld(now, false, SWEEP_DELAY));
        let later = now + SWEEP_DELAY / 2;
        policy.watched_exit();
        assert!(!policy.on_sigchld(later, false, SWEEP_DELAY));
        assert_eq!(policy.due_at, Some(now + SWEEP_DELAY));
        policy.swept();
        assert_eq!(policy.due_at, None);
        assert!(!policy.is_due(later + SWEEP_DELAY));
    }

    #[test]
    fn while_a_child_is_unwatched_every_sigchld_sweeps_at_once() {
        let mut policy = SweepPolicy::default();
        let now = Instant::now();
        policy.watched_exit();
        assert!(policy.on_sigchld(now, true, SWEEP_DELAY));
    }

    #[test]
    fn a_sweep_asked_for_sooner_comes_sooner() {
        let mut policy = SweepPolicy::default();
        let now = Instant::now();
        policy.watched_exit();
        policy.on_sigchld(now, false, SWEEP_DELAY);
        policy.due_by(now);
        assert!(policy.is_due(now));
    }
}
