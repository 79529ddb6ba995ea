//! The sd_notify datagram format: what a child may tell sockvisor.
//!
//! A datagram is at most 4096 bytes of newline-separated `KEY=VALUE`
//! assignments, with or without a trailing newline. Keys sockvisor does not
//! act on are ignored, as systemd does. A datagram that is too large, not
//! UTF-8, contains a NUL, or has a line that is not an assignment is
//! rejected whole: acting on half of a garbled message is worse than
//! ignoring it.
//!
//! This module parses only; it never reads a socket.

use std::time::Duration;

/// Largest datagram accepted, as systemd's notify socket.
pub const MAX_DATAGRAM: usize = 4096;

/// What one datagram said, limited to the keys sockvisor acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    /// `READY=1`: startup finished.
    pub ready: bool,
    /// `STATUS=…`: free-form status text, shown by `sockvisor status`.
    pub status: Option<String>,
    /// `STOPPING=1`: the service is shutting down.
    pub stopping: bool,
    /// `RELOADING=1`: the service is reloading its configuration.
    pub reloading: bool,
    /// `ERRNO=n`: the service reports a failure as an errno value.
    pub errno: Option<i32>,
    /// `EXTEND_TIMEOUT_USEC=n`: the startup deadline becomes at least n µs
    /// from now.
    pub extend_timeout: Option<Duration>,
    /// `BARRIER=1`: the sender waits for the fd it passed to be closed.
    pub barrier: bool,
    /// `FDSTORE=1`: keep the descriptors passed with this message.
    pub fdstore: bool,
    /// `FDSTOREREMOVE=1`: drop the stored descriptors named `FDNAME=`.
    pub fdstore_remove: bool,
    /// `FDNAME=…`: the name of the descriptors stored or removed.
    pub fdname: Option<String>,
    /// `FDPOLL=0`: do not drop the stored descriptors when they hang up.
    pub no_fdpoll: bool,
    /// `WATCHDOG=1`: the process is alive.
    pub watchdog_ping: bool,
    /// `WATCHDOG=trigger`: the process asks to be treated as hung.
    pub watchdog_trigger: bool,
    /// `WATCHDOG_USEC=n`: the process's own watchdog timeout from now on.
    pub watchdog_timeout: Option<Duration>,
}

/// Why a datagram was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    TooLarge(usize),
    /// Descriptors passed, and the most taken with one message.
    TooManyDescriptors(usize, usize),
    NotUtf8,
    ContainsNul,
    NotAnAssignment(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooLarge(n) => write!(f, "{n} bytes is over the {MAX_DATAGRAM}-byte limit"),
            Rejection::TooManyDescriptors(n, most) => {
                write!(
                    f,
                    "{n} descriptors passed with it, over the {most} one message may pass"
                )
            }
            Rejection::NotUtf8 => f.write_str("not UTF-8"),
            Rejection::ContainsNul => f.write_str("contains a NUL byte"),
            Rejection::NotAnAssignment(line) => write!(f, "line {line:?} is not KEY=VALUE"),
        }
    }
}

impl NotifyMessage {
    /// Parses one datagram.
    pub fn parse(datagram: &[u8]) -> Result<NotifyMessage, Rejection> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(Rejection::TooLarge(datagram.len()));
        }
        if datagram.contains(&0) {
            return Err(Rejection::ContainsNul);
        }
        let text = std::str::from_utf8(datagram).map_err(|_| Rejection::NotUtf8)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut message = NotifyMessage::default();
        for line in text.split('\n') {
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(Rejection::NotAnAssignment(line.chars().take(64).collect()));
            };
            message.apply(key, value);
        }
        Ok(message)
    }

    /// Applies one assignment. A known key with a value sockvisor cannot use
    /// is ignored like an unknown key.
    fn apply(&mut self, key: &str, value: &str) {
        match key {
            "READY" => self.ready |= value == "1",
            "STATUS" => self.status = Some(value.to_string()),
            "STOPPING" => self.stopping |= value == "1",
            "RELOADING" => self.reloading |= value == "1",
            "BARRIER" => self.barrier |= value == "1",
            "ERRNO" => self.errno = value.parse().ok().or(self.errno),
            "FDSTORE" => self.fdstore |= value == "1",
            "FDSTOREREMOVE" => self.fdstore_remove |= value == "1",
            "FDNAME" => self.fdname = Some(value.to_string()),
            "FDPOLL" => self.no_fdpoll = value == "0",
            "WATCHDOG" => match value {
                "1" => self.watchdog_ping = true,
                "trigger" => self.watchdog_trigger = true,
                _ => {}
            },
            "WATCHDOG_USEC" => {
                if let Ok(usec) = value.parse::<u64>() {
                    self.watchdog_timeout = Some(Duration::from_micros(usec));
                }
            }
            "EXTEND_TIMEOUT_USEC" => {
                if let Ok(usec) = value.parse::<u64>() {
                    self.extend_timeout = Some(Duration::from_micros(usec));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> NotifyMessage {
        NotifyMessage::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn ready_1_means_ready() {
        assert!(parse("READY=1").ready);
        assert!(!parse("READY=0").ready);
    }

    #[test]
    fn trailing_newline_is_optional() {
        assert_eq!(parse("READY=1\n"), parse("READY=1"));
    }

    #[test]
    fn several_assignments_in_one_datagram() {
        let m = parse("READY=1\nSTATUS=serving 4 workers\nMAINPID=42\n");
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("serving 4 workers"));
    }

    #[test]
    fn status_keeps_equals_signs_in_its_value() {
        assert_eq!(parse("STATUS=a=b").status.as_deref(), Some("a=b"));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        assert_eq!(parse("X_CUSTOM=yes\nMAINPID=4"), NotifyMessage::default());
    }

    #[test]
    fn stopping_reloading_and_errno_are_read() {
        let m = parse("STOPPING=1\nRELOADING=1\nERRNO=98");
        assert!(m.stopping && m.reloading);
        assert_eq!(m.errno, Some(98));
    }

    #[test]
    fn extend_timeout_is_in_microseconds() {
        let m = parse("EXTEND_TIMEOUT_USEC=2500000");
        assert_eq!(m.extend_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(parse("EXTEND_TIMEOUT_USEC=soon").extend_timeout, None);
    }

    #[test]
    fn barrier_is_recognised() {
        assert!(parse("BARRIER=1").barrier);
    }

    #[test]
    fn empty_datagram_says_nothing() {
        assert_eq!(parse(""), NotifyMessage::default());
    }

    #[test]
    fn oversized_datagram_is_rejected() {
        let big = format!("STATUS={}", "x".repeat(MAX_DATAGRAM));
        assert_eq!(
            NotifyMessage::parse(big.as_bytes()),
            Err(Rejection::TooLarge(big.len()))
        );
        let exact = format!("STATUS={}", "x".repeat(MAX_DATAGRAM - 7));
        assert!(NotifyMessage::parse(exact.as_bytes()).is_ok());
    }

    #[test]
    fn a_line_without_equals_rejects_the_datagram() {
        assert!(matches!(
            NotifyMessage::parse(b"READY=1\ngarbage"),
            Err(Rejection::NotAnAssignment(_))
        ));
    }

    // Inputs the fuzzer (fuzz/fuzz_targets/notify_message.rs) found worth
    // keeping, each pinned to the rule it exercises.

    #[test]
    fn an_empty_key_is_ignored_like_any_unknown_key() {
        assert_eq!(parse("=\n=\n="), NotifyMessage::default());
    }

    #[test]
    fn empty_values_do_not_count() {
        let m = parse("READY=\nERRNO=\nBARRIER=\nSTOPPING=");
        assert!(!m.ready && !m.barrier && !m.stopping);
        assert_eq!(m.errno, None);
    }

    #[test]
    fn a_non_numeric_errno_is_ignored() {
        for text in ["ERRNO=N", "ERRNO=-", "ERRNO=+", "ERRNO=0R"] {
            assert_eq!(parse(text).errno, None, "{text}");
        }
        assert_eq!(parse("ERRNO=2").errno, Some(2));
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert!(parse("\n\nREADY=1\n\n").ready);
    }

    #[test]
    fn binary_garbage_is_rejected() {
        assert_eq!(
            NotifyMessage::parse(b"READY=1\0"),
            Err(Rejection::ContainsNul)
        );
        assert_eq!(
            NotifyMessage::parse(b"STATUS=\xff"),
            Err(Rejection::NotUtf8)
        );
    }

    #[test]
    fn fdstore_keys_are_understood() {
        let m = parse("FDSTORE=1\nFDNAME=state\nFDPOLL=0");
        assert!(m.fdstore && m.no_fdpoll);
        assert_eq!(m.fdname.as_deref(), Some("state"));
        assert!(!parse("FDSTORE=1").no_fdpoll, "polled unless FDPOLL=0");
        assert!(parse("FDSTOREREMOVE=1\nFDNAME=x").fdstore_remove);
    }

    #[test]
    fn watchdog_keys_are_understood() {
        assert!(parse("WATCHDOG=1").watchdog_ping);
        assert!(parse("WATCHDOG=trigger").watchdog_trigger);
        assert!(!parse("WATCHDOG=0").watchdog_ping);
        assert_eq!(
            parse("WATCHDOG_USEC=2500000").watchdog_timeout,
            Some(Duration::from_secs_f64(2.5))
        );
    }
}
