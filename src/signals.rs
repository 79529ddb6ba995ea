//! Signals reaching sockvisor: which ones it watches, how they reach the
//! event loop, and how operators name them.
//!
//! Handlers only set a per-signal flag and write a byte to a self-pipe
//! (both done by `signal-hook`, async-signal-safe). The loop polls the pipe,
//! drains it and collects the flags. Repeats of one signal coalesce, as they
//! do in the kernel; no signal is lost when the pipe is full, because the
//! flag is what counts.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;

/// Signals that ask sockvisor to stop gracefully.
pub const STOP_REQUESTS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

/// Signals that start an upgrade (as nginx and Server::Starter users
/// expect).
pub const UPGRADE_REQUESTS: [Signal; 2] = [Signal::SIGHUP, Signal::SIGUSR2];

/// Signals with no meaning for sockvisor itself, passed on to the current
/// generation.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGUSR1,
    Signal::SIGWINCH,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Every signal sockvisor installs a handler for. Handling them explicitly
/// also makes them work when sockvisor is PID 1, where the kernel ignores
/// default actions.
fn watched() -> impl Iterator<Item = Signal> {
    STOP_REQUESTS
        .into_iter()
        .chain(UPGRADE_REQUESTS)
        .chain(FORWARDED)
        .chain([Signal::SIGCHLD])
}

/// The receiving end of sockvisor's signal handlers.
pub struct SignalSource {
    wake_read: UnixStream,
    /// The one write end every handler shares; kept open as long as the
    /// handlers may run (they are never unregistered).
    _wake_write: UnixStream,
    flags: Vec<(Signal, Arc<AtomicBool>)>,
}

impl SignalSource {
    /// Installs the handlers. Call once, before any child is started.
    pub fn install() -> io::Result<SignalSource> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let mut flags = Vec::new();
        for signal in watched() {
            let flag = Arc::new(AtomicBool::new(false));
            // The flag first, then the wake-up: a loop woken by the byte
            // always finds the flag set.
            signal_hook::flag::register(signal as i32, Arc::clone(&flag))?;
            // One shared write end for every signal: a descriptor each
            // would cost a dozen of a tight `ulimit -n`.
            let writer = wake_write.as_raw_fd();
            let wake = move || {
                // SAFETY: send(2) is async-signal-safe; `writer` stays open
                // for the life of the process (held by the SignalSource,
                // which lives as long as the event loop). A full buffer
                // drops the byte, which is fine: the flag is what counts.
                unsafe {
                    libc::send(
                        writer,
                        [1u8].as_ptr().cast(),
                        1,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
            };
            // SAFETY: the action only calls send(2), which is
            // async-signal-safe, and allocates nothing.
            unsafe { signal_hook::low_level::register(signal as i32, wake) }?;
            flags.push((signal, flag));
        }
        Ok(SignalSource {
            wake_read,
            _wake_write: wake_write,
            flags,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    /// Drains the wake-up pipe and returns the signals seen since the last
    /// call, `SIGCHLD` last so exits are reaped after stop requests.
    pub fn take(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 256];
        while matches!(io::Read::read(&mut self.wake_read, &mut buf), Ok(n) if n > 0) {}
        let mut seen: Vec<Signal> = self
            .flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(signal, _)| *signal)
            .collect();
        seen.sort_by_key(|s| *s == Signal::SIGCHLD);
        seen
    }
}

/// Parses a signal as operators write it: `SIGQUIT`, `QUIT`, `quit` or `3`.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let invalid =
        || format!("unknown signal '{text}' (use a name like SIGQUIT or TERM, or a number)");
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_numbers_and_short_forms_parse() {
        assert_eq!(parse_signal("SIGQUIT"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("usr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
    }

    #[test]
    fn unknown_signal_is_explained() {
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .contains("unknown signal 'SIGNOPE'")
        );
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("99").is_err());
    }
}
