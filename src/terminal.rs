//! The controlling terminal, when sockvisor runs in the foreground of one
//! (an interactive shell, `docker run -it`).
//!
//! Each generation runs in its own process group. A process that is not in
//! the terminal's foreground group is stopped (`SIGTTIN`) when it reads
//! the terminal, and the keyboard's Ctrl-C, Ctrl-\ and Ctrl-Z go to the
//! foreground group only. So the generation that serves must be the
//! foreground group: the first one takes the terminal itself between `fork`
//! and `exec` (see `spawn`), and a later one is handed it here when it
//! becomes current. At exit the terminal goes back to the group that had it
//! when sockvisor started.
//!
//! sockvisor itself is then a background process of the terminal: it keeps
//! `SIGTTOU` and `SIGTTIN` blocked, which lets it hand the terminal over and
//! write its log lines without being stopped (the kernel treats a blocked
//! job-control signal as ignored). This module makes no decision about which
//! group gets the terminal.

use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::unistd::{Pid, getpgrp, isatty, tcgetpgrp, tcsetpgrp};

/// sockvisor's controlling terminal, on its standard input.
#[derive(Debug)]
pub struct Terminal {
    /// The group that was in the foreground when sockvisor started (its
    /// own).
    original_group: Pid,
}

impl Terminal {
    /// The terminal on standard input, if it is sockvisor's controlling
    /// terminal and sockvisor is in its foreground. A sockvisor started in
    /// the background of a shell (`&`) does not take the terminal from it.
    pub fn detect() -> Option<Terminal> {
        if !isatty(stdin()).unwrap_or(false) {
            return None;
        }
        let foreground = tcgetpgrp(stdin()).ok()?;
        if foreground != getpgrp() {
            return None;
        }
        block_job_control().ok()?;
        Some(Terminal {
            original_group: foreground,
        })
    }

    /// The terminal a previous sockvisor program detected, handed over by
    /// re-exec (the blocked job-control signals carry over in the mask).
    pub fn adopt(original_group: Pid) -> Terminal {
        let _ = block_job_control();
        Terminal { original_group }
    }

    /// The group that had the terminal when sockvisor started.
    pub fn original_group(&self) -> Pid {
        self.original_group
    }

    /// The descriptor a child uses to take the terminal.
    pub fn fd(&self) -> RawFd {
        stdin().as_raw_fd()
    }

    /// Makes `group` the foreground process group and continues it, in
    /// case it read the terminal while in the background and was stopped.
    pub fn hand_to(&self, group: Pid) {
        match tcsetpgrp(stdin(), group) {
            Ok(()) => tracing::debug!("terminal handed to process group {group}"),
            Err(errno) => {
                tracing::warn!("cannot hand the terminal to process group {group}: {errno}");
                return;
            }
        }
        let _ = killpg(group, Signal::SIGCONT);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if tcgetpgrp(stdin()).is_ok_and(|group| group != self.original_group) {
            let _ = tcsetpgrp(stdin(), self.original_group);
        }
    }
}

/// Blocks SIGTTOU and SIGTTIN in sockvisor itself.
pub fn block_job_control() -> nix::Result<()> {
    let mut job_control = SigSet::empty();
    job_control.add(Signal::SIGTTOU);
    job_control.add(Signal::SIGTTIN);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&job_control), None)
}

fn stdin() -> std::io::Stdin {
    std::io::stdin()
}
