//! The one event loop: sleep in `poll(2)` until a signal arrives or the
//! supervisor's next deadline passes, then hand what happened to the
//! supervisor. With nothing to do it sleeps with no timeout at all.
//!
//! This module owns the waiting and the dispatching, not the decisions.

use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use crate::reaper;
use crate::signals::{STOP_REQUESTS, SignalSource};
use crate::supervisor::{ProcessControl, Supervisor};

/// Runs until the supervisor has an exit status, and returns it.
pub fn run<P: ProcessControl>(supervisor: &mut Supervisor<P>, signals: &mut SignalSource) -> i32 {
    loop {
        if let Some(code) = supervisor.exit_code() {
            return code;
        }
        let timeout = poll_timeout(supervisor.next_deadline(), Instant::now());
        let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => tracing::error!("poll failed: {errno}"),
        }
        let now = Instant::now();
        for signal in signals.take() {
            dispatch(supervisor, signal, now);
        }
        supervisor.on_tick(Instant::now());
    }
}

fn dispatch<P: ProcessControl>(supervisor: &mut Supervisor<P>, signal: Signal, now: Instant) {
    if signal == Signal::SIGCHLD {
        for exit in reaper::reap_all() {
            supervisor.on_exit(exit, now);
        }
    } else if STOP_REQUESTS.contains(&signal) {
        supervisor.on_stop_request(signal, now);
    } else {
        supervisor.on_forward(signal);
    }
}

/// Milliseconds until `deadline`, rounded up so the loop never wakes just
/// before it and spins; no deadline means wait forever.
fn poll_timeout(deadline: Option<Instant>, now: Instant) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let remaining = deadline.saturating_duration_since(now);
    let millis = remaining.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn no_deadline_means_no_timer() {
        assert_eq!(poll_timeout(None, Instant::now()), PollTimeout::NONE);
    }

    #[test]
    fn timeout_is_rounded_up_and_never_negative() {
        let now = Instant::now();
        let t = poll_timeout(Some(now + Duration::from_micros(1500)), now);
        assert_eq!(t.as_millis(), Some(2));
        assert_eq!(
            poll_timeout(Some(now), now + Duration::from_secs(1)).as_millis(),
            Some(0)
        );
    }
}
