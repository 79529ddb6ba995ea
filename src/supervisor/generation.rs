//! One generation: a launch of the command, its readiness, and its place in
//! the lifecycle `starting → ready → draining → gone` (or
//! `starting → failed → gone`).

use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde::Serialize;

use super::upgrade::UpgradeId;
use crate::duration::parse_duration;

/// How sockvisor learns that a new generation is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// `READY=1` on the generation's `NOTIFY_SOCKET`.
    Notify,
    /// Ready as soon as it is spawned.
    Now,
    /// Ready if still alive after this long.
    Delay(Duration),
    /// Ready when this shell command exits 0; it is run repeatedly.
    Exec(String),
}

impl ReadyMode {
    /// Parses `notify`, `now`, `delay=DURATION` or `exec=COMMAND`.
    pub fn parse(text: &str) -> Result<ReadyMode, String> {
        match text.split_once('=') {
            None if text == "notify" => Ok(ReadyMode::Notify),
            None if text == "now" => Ok(ReadyMode::Now),
            Some(("delay", value)) => parse_duration(value).map(ReadyMode::Delay),
            Some(("exec", command)) if !command.trim().is_empty() => {
                Ok(ReadyMode::Exec(command.to_string()))
            }
            _ => Err(format!(
                "invalid ready mode '{text}' (use notify, now, delay=DURATION or exec=COMMAND)"
            )),
        }
    }
}

/// Where a generation is in its life, as `sockvisor status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Spawned, not yet ready.
    Starting,
    /// Serving (the current generation).
    Ready,
    /// Replaced by a newer generation; asked to stop, finishing its work.
    Draining,
    /// Did not become ready in time; being stopped.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub pid: Pid,
    pub started: Instant,
    pub phase: Phase,
    /// Starting: the readiness deadline. Draining and failed: when the
    /// process group gets `SIGKILL` (`None` once it has).
    pub deadline: Option<Instant>,
    /// Starting with `delay=` or `exec=`: when to declare ready or run the
    /// probe next.
    pub probe_at: Option<Instant>,
    /// The running readiness probe, for `exec=`.
    pub probe_pid: Option<Pid>,
    /// The last `STATUS=` it sent.
    pub status_text: Option<String>,
    /// The upgrade that started it; `None` for the first start or a restart.
    pub upgrade: Option<UpgradeId>,
    /// Its process group is (or was made) the terminal's foreground group.
    pub foreground: bool,
}

impl Generation {
    pub fn describe(&self) -> String {
        format!("generation {} (pid {})", self.number, self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_modes_parse() {
        assert_eq!(ReadyMode::parse("notify"), Ok(ReadyMode::Notify));
        assert_eq!(ReadyMode::parse("now"), Ok(ReadyMode::Now));
        assert_eq!(
            ReadyMode::parse("delay=1.5s"),
            Ok(ReadyMode::Delay(Duration::from_millis(1500)))
        );
        assert_eq!(
            ReadyMode::parse("exec=curl -f http://127.0.0.1:9000/health"),
            Ok(ReadyMode::Exec(
                "curl -f http://127.0.0.1:9000/health".into()
            ))
        );
    }

    #[test]
    fn bad_ready_modes_are_explained() {
        for bad in ["", "soon", "delay=", "exec=", "exec= ", "delay=x"] {
            assert!(ReadyMode::parse(bad).is_err(), "{bad}");
        }
        assert!(
            ReadyMode::parse("soon")
                .unwrap_err()
                .contains("notify, now")
        );
    }
}
