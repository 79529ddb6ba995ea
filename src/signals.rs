//! Signals reaching sockvisor: what each one means to it (one table, the
//! one the code acts on and the one the documentation is generated from:
//! [`reference`] feeds the man pages' SIGNALS and `docs/reference.md`), how
//! they reach the event loop, and how operators name them.
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
    /// Not handled, for the reason given (a sentence of the reference).
    Untouched(&'static str),
}

impl Meaning {
    /// What sockvisor does on a signal with this meaning, as the reference
    /// states it. Names are in backquotes; the man page drops them.
    pub fn describe(self) -> &'static str {
        match self {
            Meaning::Stop => {
                "Graceful stop: the stop signal (`--stop-signal`, default `SIGQUIT`) goes to \
                 every generation, followed by `SIGCONT` to its process group (as systemd \
                 does, so that a stopped one acts on it at once); after `--stop-timeout` the \
                 remaining process groups get `SIGKILL`. A second one of these during the \
                 stop kills at once. This is what `kill -INT`, `docker stop` and \
                 `docker stop --signal INT` do, with or without a terminal."
            }
            Meaning::Upgrade => {
                "With sockets: start an upgrade, like `sockvisor upgrade` (the result is \
                 logged). Without sockets (an init): forwarded like the signals below, so \
                 `docker kill -s HUP` asks the server to reload its own configuration."
            }
            Meaning::Reap => {
                "Reaps every exited process: workers, readiness probes, and orphans \
                 re-parented to sockvisor (as PID 1, or as a child subreaper)."
            }
            Meaning::Forward => {
                "Forwarded to each worker of the serving generation (with `--signal-group`, \
                 to each worker's whole process group, like tini's `-g`). None of them kills \
                 sockvisor, PID 1 or not: LXC's `SIGPWR` and systemd's `SIGRTMIN+3` reach \
                 the server. On a terminal, sockvisor blocks `SIGTTIN` and `SIGTTOU` \
                 instead: there they are job control aimed at sockvisor itself, not \
                 requests."
            }
            Meaning::Untouched(why) => why,
        }
    }
}

const FAULT: Meaning = Meaning::Untouched(
    "Not handled: a synchronous fault of sockvisor's own, never a request; the default \
     action (a core dump) applies.",
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
        Meaning::Untouched(
            "Cannot be caught: sockvisor dies, and every generation's main process with it \
             (its parent-death signal), so the ports are free for the next sockvisor.",
        ),
    ),
    (Signal::SIGUSR1, Meaning::Forward),
    (Signal::SIGSEGV, FAULT),
    (Signal::SIGUSR2, Meaning::Upgrade),
    (
        Signal::SIGPIPE,
        Meaning::Untouched(
            "Ignored, so that a closed pipe of sockvisor's own never reaches the server \
             (tini forwards it).",
        ),
    ),
    (Signal::SIGALRM, Meaning::Forward),
    (Signal::SIGTERM, Meaning::Stop),
    (Signal::SIGSTKFLT, Meaning::Forward),
    (Signal::SIGCHLD, Meaning::Reap),
    (Signal::SIGCONT, Meaning::Forward),
    (
        Signal::SIGSTOP,
        Meaning::Untouched("Cannot be caught: sockvisor stops until `SIGCONT`."),
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

/// Where the keyboard's signals go when sockvisor runs on a terminal: not to
/// sockvisor, so no row of [`TABLE`] covers them (see `terminal`).
pub const KEYBOARD_ON_A_TERMINAL: (&str, &str) = (
    "Ctrl-C, Ctrl-\\, Ctrl-Z on a terminal",
    "When sockvisor runs in the foreground of its controlling terminal (standard input), \
     the serving generation is the terminal's foreground process group: it reads the \
     terminal, and the keyboard's `SIGINT`, `SIGQUIT` and `SIGTSTP` go to it, not to \
     sockvisor. In an upgrade the terminal passes to the new generation once it is \
     ready; at exit it goes back to the group that had it.",
);

/// The signal reference, derived from [`TABLE`]: one row per meaning (the
/// untouched signals grouped by their reason), each with the signals that
/// have it and what sockvisor does, in the order stop, upgrade, reap,
/// forward, untouched; then where the keyboard's signals go on a terminal.
pub fn reference() -> Vec<(String, String)> {
    let mut meanings: Vec<Meaning> = vec![
        Meaning::Stop,
        Meaning::Upgrade,
        Meaning::Reap,
        Meaning::Forward,
    ];
    for (_, meaning) in TABLE {
        if !meanings.contains(&meaning) {
            meanings.push(meaning);
        }
    }
    let mut rows: Vec<(String, String)> = meanings
        .into_iter()
        .map(|meaning| {
            let mut signals: Vec<String> = TABLE
                .iter()
                .filter(|(_, m)| *m == meaning)
                .map(|(s, _)| format!("`{}`", s.as_str()))
                .collect();
            // Every real-time signal is forwarded (see `meaning`).
            if meaning == Meaning::Forward {
                signals.push("every real-time signal (`SIGRTMIN` to `SIGRTMAX`)".to_string());
            }
            (signals.join(", "), meaning.describe().to_string())
        })
        .collect();
    let (keys, effect) = KEYBOARD_ON_A_TERMINAL;
    rows.push((keys.to_string(), effect.to_string()));
    rows
}

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

    /// Whether a signal came since the last [`take`](Self::take), as its
    /// handler's flag says: true also when the handler ran just as `poll`
    /// returned, after `poll` had looked at the pipe. Reading the flags
    /// costs no system call, and acting on them at once saves the wake-up
    /// the pipe's byte would cause next.
    pub fn any_pending(&self) -> bool {
        self.flags
            .iter()
            .any(|(_, flag)| flag.load(Ordering::SeqCst))
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

/// A signal to pass on to workers (`sockvisor signal`): what
/// [`parse_signal`] takes, and the real-time signals as `SIGRTMIN+3`,
/// `RTMAX-1` or their numbers.
pub fn parse_forwarded(text: &str) -> Result<i32, String> {
    let (min, max) = (realtime_min(), realtime_max());
    let invalid = || {
        format!(
            "unknown signal '{text}' (use a name like USR1, TERM or RTMIN+3, or a number from 1 to {max})"
        )
    };
    if let Ok(number) = text.parse::<i32>() {
        return if (min..=max).contains(&number) || Signal::try_from(number).is_ok() {
            Ok(number)
        } else {
            Err(invalid())
        };
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: i32, rest: &str| -> Option<i32> {
        let number = match rest {
            "" => base,
            _ => {
                let (sign, offset) = rest.split_at(1);
                let offset: i32 = offset.parse().ok()?;
                match sign {
                    "+" => base.checked_add(offset)?,
                    "-" => base.checked_sub(offset)?,
                    _ => return None,
                }
            }
        };
        (min..=max).contains(&number).then_some(number)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return realtime(min, rest).ok_or_else(invalid);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return realtime(max, rest).ok_or_else(invalid);
    }
    parse_signal(text)
        .map(|signal| signal as i32)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_signals_include_the_real_time_ones() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse_forwarded("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_forwarded("SIGRTMIN+3"), Ok(min + 3));
        assert_eq!(parse_forwarded("rtmin"), Ok(min));
        assert_eq!(parse_forwarded("RTMAX-1"), Ok(max - 1));
        assert_eq!(parse_forwarded(&max.to_string()), Ok(max));
        for bad in [
            "RTMIN+99", "RTMAX+1", "RTMIN-1", "RTMINX", "0", "65", "NOPE",
        ] {
            assert!(parse_forwarded(bad).is_err(), "{bad}");
        }
        // Named back the way it is written.
        assert_eq!(name(min + 3), "SIGRTMIN+3");
    }

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
    fn the_reference_names_every_signal_of_the_table_in_exactly_one_row() {
        let rows = reference();
        for (signal, meaning) in TABLE {
            let name = format!("`{}`", signal.as_str());
            let rows_naming: Vec<_> = rows
                .iter()
                .filter(|(signals, _)| signals.split(", ").any(|s| s == name))
                .collect();
            assert_eq!(rows_naming.len(), 1, "{name}");
            assert_eq!(rows_naming[0].1, meaning.describe(), "{name}");
        }
        let (forwarded, _) = &rows[3];
        assert!(forwarded.contains("SIGRTMIN"), "{forwarded}");
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
