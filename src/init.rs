//! What sockvisor does to its own process at start-up so that it can act as
//! an init: sane stdio, no inherited signal mask, the right to reap
//! orphans, and room for a descriptor per child.
//!
//! It must not start children or touch sockets; see `spawn` and `listen`.

use std::os::fd::IntoRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{OFlag, open};
use nix::sys::prctl;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;
use nix::unistd::getpid;

/// Opens `/dev/null` on any of fds 0, 1, 2 that is closed. Otherwise a
/// listening socket could land on fd 0..2 and leak into every child.
pub fn ensure_stdio_open() {
    for fd in 0..3 {
        if Path::new(&format!("/proc/self/fd/{fd}"))
            .symlink_metadata()
            .is_ok()
        {
            continue;
        }
        // Without O_CLOEXEC on purpose: children inherit it as their stdio.
        // The lowest free descriptor is the missing one.
        if let Ok(null) = open("/dev/null", OFlag::O_RDWR, Mode::empty()) {
            let _ = null.into_raw_fd();
        }
    }
}

/// Clears a signal mask inherited from whoever started sockvisor, which
/// would otherwise silence the signals it handles.
pub fn clear_signal_mask() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// How sockvisor came to reap orphans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaperRole {
    /// sockvisor is PID 1 (a container's init): orphans come to it anyway.
    Pid1,
    /// Registered as a child subreaper: orphans of its children come to it.
    Subreaper,
    /// Neither (the prctl failed): orphans go to the real init.
    None,
}

/// Makes sure orphaned grandchildren are re-parented to sockvisor so that it
/// reaps them.
pub fn become_reaper() -> ReaperRole {
    if getpid().as_raw() == 1 {
        return ReaperRole::Pid1;
    }
    match prctl::set_child_subreaper(true) {
        Ok(()) => ReaperRole::Subreaper,
        Err(errno) => {
            tracing::warn!("cannot become a child subreaper ({errno}); orphans go to init");
            ReaperRole::None
        }
    }
}

/// The soft `RLIMIT_NOFILE` sockvisor was started with, when it raised its
/// own (0: not raised). Its children get this one back before `exec`.
static CHILDREN_OPEN_FILES: AtomicU64 = AtomicU64::new(0);
/// The hard limit beside it, which sockvisor keeps.
static OPEN_FILES_HARD: AtomicU64 = AtomicU64::new(0);

/// Raises sockvisor's own soft limit on open files to the hard limit, as
/// systemd advises for a program that needs many descriptors: sockvisor
/// holds a pidfd per child. `started_with` is the soft limit to give the
/// children (after a re-exec, the one the first program was started
/// with); by default the current one. The children get it back, so a
/// server that uses `select(2)` still sees the limit it was started under.
pub fn raise_open_file_limit(started_with: Option<u64>) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let original = started_with.unwrap_or(soft).min(hard);
    if original < hard && (soft >= hard || setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok()) {
        OPEN_FILES_HARD.store(hard, Ordering::Relaxed);
        CHILDREN_OPEN_FILES.store(original, Ordering::Relaxed);
    }
}

/// The soft limit on open files to give a child, if it differs from
/// sockvisor's own (see [`raise_open_file_limit`]).
pub fn children_open_file_limit() -> Option<u64> {
    let limit = CHILDREN_OPEN_FILES.load(Ordering::Relaxed);
    (limit != 0).then_some(limit)
}

/// The limits to set in a child, soft then hard (the kernel's `struct
/// rlimit64`), if they differ from sockvisor's own. Read per spawn: no
/// system call.
pub fn children_open_file_limits() -> Option<[u64; 2]> {
    children_open_file_limit().map(|soft| [soft, OPEN_FILES_HARD.load(Ordering::Relaxed)])
}
