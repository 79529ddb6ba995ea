//! What sockvisor does to its own process at start-up so that it can act as
//! an init: sane stdio, no inherited signal mask, and the right to reap
//! orphans.
//!
//! It must not start children or touch sockets; see `spawn` and `listen`.

use std::os::fd::IntoRawFd;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::prctl;
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
