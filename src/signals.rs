//! Signals reaching sockvisor: what each one means to it (one table, the
//! one the code acts on and the documentation describes), how they reach
//! the event loop, and how operators name them.
//!
//! As tini and dumb-init do, every asynchronous signal is handled: the few
//! with a meaning for sockvisor (stop, upgrade, reap) are acted on, and
//! every other one is forwarded to the serving generation, real-time
//! signals included (LXC stops a container's init with `SIGPWR`, systemd
//! with `SIGRTMIN+3`). None kills sockvisor, PID 1 or not. Left alone are
//! the signals that cannot be caught (`SIGKILL`, `SIGSTOP`), the
//! synchronous faults (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`,
//! `SIGABRT`, `SIGSYS`: a fault of sockvisor's own, never a request), and
//! `SIGPIPE`, which stays ignored so that a closed pipe never reaches the
//! server.
//!
//! Handlers only set a per-signal flag and write a byte to a self-pipe
//! (async-signal-safe). The loop polls the pipe, drains it and collects the
//! flags. Repeats of one signal coalesce, as they do in the kernel; no
//! signal is lost when the pipe is full, because the flag is what counts.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;

/// What a signal sent to sockvisor means to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Stop every generation gracefully (a second one: at once).
    Stop,
    /// With sockets, start an upgrade; without (an init), forwarded.
    Upgrade,
    /// A child exited: reap every exited process.
    Reap,
    /// Passed on to every worker of the serving generation.
    Forward,
    /// Not handled, for the reason given.
    Untouched(&'static str),
}

const FAULT: Meaning = Meaning::Untouched(
    "a synchronous fault of sockvisor's own: the default action (a core dump) applies",
);

/// sockvisor's signal table, for signals 1 to 31; every real-time signal
/// (`SIGRTMIN` to `SIGRTMAX`) is forwarded.
const TABLE: [(Signal, Meaning); 31] = [
    (Signal::SIGHUP, Meaning::Upgrade),
    (Signal::SIGINT, Meaning::Stop),
    (Signal::SIGQUIT, Meaning::Stop),
    (Signal::SIGILL, FAULT),
    (Signal::SIGTRAP, FAULT),
    (Signal::SIGABRT, FAULT),
    (Signal::SIGBUS, FAULT),
    (Signal::SIGFPE, FAULT),
    (
        Signal::SIGKILL,
        Meaning::Untouched("cannot be caught: sockvisor dies, and its children with it"),
    ),
    (Signal::SIGUSR1, Meaning::Forward),
    (Signal::SIGSEGV, FAULT),
    (Signal::SIGUSR2, Meaning::Upgrade),
    (
        Signal::SIGPIPE,
        Meaning::Untouched(
            "ignored, so that a closed pipe of sockvisor's never reaches the server",
        ),
    ),
    (Signal::SIGALRM, Meaning::Forward),
    (Signal::SIGTERM, Meaning::Stop),
    (Signal::SIGSTKFLT, Meaning::Forward),
    (Signal::SIGCHLD, Meaning::Reap),
    (Signal::SIGCONT, Meaning::Forward),
    (
        Signal::SIGSTOP,
        Meaning::Untouched("cannot be caught: sockvisor stops until SIGCONT"),
    ),
    (Signal::SIGTSTP, Meaning::Forward),
    (Signal::SIGTTIN, Meaning::Forward),
    (Signal::SIGTTOU, Meaning::Forward),
    (Signal::SIGURG, Meaning::Forward),
    (Signal::SIGXCPU, Meaning::Forward),
    (Signal::SIGXFSZ, Meaning::Forward),
    (Signal::SIGVTALRM, Meaning::Forward),
    (Signal::SIGPROF, Meaning::Forward),
    (Signal::SIGWINCH, Meaning::Forward),
    (Signal::SIGIO, Meaning::Forward),
    (Signal::SIGPWR, Meaning::Forward),
    (Signal::SIGSYS, FAULT),
];

/// What `signal` (a number, real-time ones included) means to sockvisor.
pub fn meaning(signal: i32) -> Meaning {
    if (realtime_min()..=realtime_max()).contains(&signal) {
        return Meaning::Forward;
    }
    TABLE
        .iter()
        .find(|(s, _)| *s as i32 == signal)
        .map_or(Meaning::Untouched("not a signal"), |(_, m)| *m)
}

/// The lowest real-time signal the C library leaves to programs.
fn realtime_min() -> i32 {
    libc::SIGRTMIN()
}

fn realtime_max() -> i32 {
    libc::SIGRTMAX()
}

/// Every signal number sockvisor installs a handler for: all but the
/// untouched ones.
pub fn handled() -> impl Iterator<Item = i32> {
    (1..=realtime_max()).filter(|n| {
        let known = TABLE.iter().any(|(s, _)| *s as i32 == *n) || *n >= realtime_min();
        known && !matches!(meaning(*n), Meaning::Untouched(_))
    })
}

/// A signal's name as operators write it: `SIGTERM`, `SIGRTMIN+3`.
pub fn name(signal: i32) -> String {
    if let Ok(known) = Signal::try_from(signal) {
        return known.as_str().to_string();
    }
    let (min, max) = (realtime_min(), realtime_max());
    if signal == max {
        "SIGRTMAX".to_string()
    } else if (min..max).contains(&signal) {
        format!("SIGRTMIN+{}", signal - min)
    } else {
        format!("signal {signal}")
    }
}

/// The receiving end of sockvisor's signal handlers.
pub struct SignalSource {
    wake_read: UnixStream,
    /// The one write end every handler shares; kept open as long as the
    /// handlers may run (they are never unregistered).
    _wake_write: UnixStream,
    flags: Vec<(i32, Arc<AtomicBool>)>,
}

impl SignalSource {
    /// Installs the handlers. Call once, before any child is started.
    pub fn install() -> io::Result<SignalSource> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let mut flags = Vec::new();
        for signal in handled() {
            let flag = Arc::new(AtomicBool::new(false));
            // The flag first, then the wake-up: a loop woken by the byte
            // always finds the flag set.
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
            // One shared write end for every signal: a descriptor each
            // would cost dozens of a tight `ulimit -n`.
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
            unsafe { signal_hook::low_level::register(signal, wake) }?;
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
    pub fn take(&mut self) -> Vec<i32> {
        let mut buf = [0u8; 256];
        while matches!(io::Read::read(&mut self.wake_read, &mut buf), Ok(n) if n > 0) {}
        let mut seen: Vec<i32> = self
            .flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(signal, _)| *signal)
            .collect();
        seen.sort_by_key(|s| *s == Signal::SIGCHLD as i32);
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
    fn stop_upgrade_and_reap_signals_have_their_meaning_and_the_rest_are_forwarded() {
        assert_eq!(meaning(libc::SIGTERM), Meaning::Stop);
        assert_eq!(meaning(libc::SIGINT), Meaning::Stop);
        assert_eq!(meaning(libc::SIGQUIT), Meaning::Stop);
        assert_eq!(meaning(libc::SIGHUP), Meaning::Upgrade);
        assert_eq!(meaning(libc::SIGUSR2), Meaning::Upgrade);
        assert_eq!(meaning(libc::SIGCHLD), Meaning::Reap);
        for forwarded in [
            libc::SIGUSR1,
            libc::SIGALRM,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGIO,
            libc::SIGPWR,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGSTKFLT,
            libc::SIGURG,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGRTMIN(),
            libc::SIGRTMIN() + 3,
            libc::SIGRTMAX(),
        ] {
            assert_eq!(meaning(forwarded), Meaning::Forward, "{}", name(forwarded));
        }
    }

    #[test]
    fn faults_pipe_and_uncatchable_signals_are_left_alone() {
        for untouched in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGSYS,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGPIPE,
        ] {
            assert!(
                matches!(meaning(untouched), Meaning::Untouched(_)),
                "{}",
                name(untouched)
            );
            assert!(!handled().any(|n| n == untouched), "{}", name(untouched));
        }
        // The C library's own real-time signals below SIGRTMIN are not ours.
        assert!(!handled().any(|n| (32..libc::SIGRTMIN()).contains(&n)));
    }

    #[test]
    fn real_time_signals_are_named_from_sigrtmin() {
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(name(libc::SIGRTMAX()), "SIGRTMAX");
        assert_eq!(name(libc::SIGPWR), "SIGPWR");
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
