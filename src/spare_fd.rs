//! The last-resort descriptor of a listening socket's owner: when the
//! process is out of descriptors, a connection stays queued and the
//! listener readable, and a poll loop would spin on it. Giving up the spare
//! for a moment takes the connection off the queue; the owner writes it one
//! refusal that says why, and it is closed at once.
//! Used by every listener sockvisor accepts on itself: the control socket
//! and the metrics endpoint.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// How long a listener rests when no descriptor is left to accept with.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A descriptor held in reserve for the moment the process runs out: it is
/// closed to accept one queued connection, which is refused (told why, if
/// its buffer has room) and closed at once, and opened again. Without it a
/// full descriptor table leaves the connection queued and the listener
/// readable, and the loop spins.
pub struct SpareDescriptor {
    fd: Option<OwnedFd>,
    /// Said once per episode, not once per refused client.
    warned: bool,
    /// The listener is not polled until then: out of descriptors with no
    /// spare to trade.
    paused_until: Option<Instant>,
}

impl SpareDescriptor {
    pub fn reserve() -> SpareDescriptor {
        SpareDescriptor {
            fd: open_spare(),
            warned: false,
            paused_until: None,
        }
    }

    /// Takes one connection off `listener`'s queue (`accept` refuses and
    /// closes it). False when
    /// even that was impossible (nothing queued, or no spare to give up).
    /// With none left to give up, the listener rests for a moment (see
    /// [`SpareDescriptor::listening`]) instead of waking the loop at once.
    pub fn refuse_one(&mut self, accept: impl FnOnce() -> bool, what: &str, now: Instant) -> bool {
        if !self.warned {
            tracing::warn!(
                "out of file descriptors: {what} are disconnected until some are free (raise `ulimit -n`)"
            );
            self.warned = true;
        }
        if self.fd.take().is_none() {
            // No spare could be opened again: nothing to trade for the
            // connection. The poll loop backs off the listener instead.
            self.paused_until = Some(crate::deadline::after(now, ACCEPT_BACKOFF));
            return false;
        }
        let refused = accept();
        self.fd = open_spare();
        refused && self.fd.is_some()
    }

    /// A connection was accepted: descriptors are available again.
    pub fn recovered(&mut self, what: &str) {
        if self.warned {
            tracing::info!("file descriptors are available again: {what} are served");
            self.warned = false;
        }
        if self.fd.is_none() {
            self.fd = open_spare();
        }
    }
}

fn open_spare() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl SpareDescriptor {
    /// The next connection `accept` takes off a listener's queue, or `None`
    /// when there is none to take now. Out of descriptors, connections are
    /// taken off the queue, handed to `refuse` and closed (or the listener
    /// rests) so that the loop does not spin; `what` names the clients in
    /// the one warning.
    pub fn accept<S>(
        &mut self,
        mut accept: impl FnMut() -> std::io::Result<S>,
        mut refuse: impl FnMut(S),
        what: &str,
        now: Instant,
    ) -> Option<S> {
        loop {
            match accept() {
                Ok(stream) => {
                    self.recovered(what);
                    return Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // The connection stays queued and the listener
                    // readable: without taking it off the queue the loop
                    // would spin.
                    let taken = || accept().map(&mut refuse).is_ok();
                    if !self.refuse_one(taken, what, now) {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Whether the listener is to be polled now.
    pub fn listening(&self) -> bool {
        self.paused_until.is_none()
    }

    /// When a resting listener is polled again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends the rest once its time has come.
    pub fn on_tick(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }
}
