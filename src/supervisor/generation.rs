//! One generation: a launch of the command, its readiness, and its place in
//! the lifecycle `starting → ready → draining → gone` (or
//! `starting → failed → gone`).

use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde::Serialize;

use super::ids::UpgradeId;
use crate::deadline;
use crate::duration::parse_duration;
use crate::reaper::ExitStatus;

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

/// Where one worker process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Spawned, not yet ready.
    Starting,
    /// Ready: it serves while its generation does.
    Ready,
    /// Asked to stop on its own (a replacement that was not ready in time).
    Stopping,
    /// Retired by a rolling upgrade or a scale-down: asked to stop and
    /// finishing its work; its exit is expected and never replaced.
    Draining,
}

/// One process of a generation, in its slot.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Its slot, 0..N-1 (`SOCKVISOR_WORKER`); a replacement keeps it.
    pub index: u32,
    /// Also its process group.
    pub pid: Pid,
    pub started: Instant,
    pub state: WorkerState,
    /// Starting: its readiness deadline. Stopping: when its process group
    /// gets `SIGKILL` (`None` once it has).
    pub deadline: Option<Instant>,
    /// Starting with `delay=` or `exec=`: when to declare it ready or run
    /// the probe next.
    pub probe_at: Option<Instant>,
    /// The running readiness probe, for `exec=`.
    pub probe_pid: Option<Pid>,
    /// The last `STATUS=` it sent.
    pub status_text: Option<String>,
    /// Its watchdog timeout (`--watchdog`, or what it set with
    /// `WATCHDOG_USEC=`); `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// Ready with a watchdog: when it is hung unless it sends `WATCHDOG=1`.
    pub watchdog_at: Option<Instant>,
}

impl Worker {
    pub fn new(index: u32, pid: Pid, now: Instant, ready_timeout: Duration) -> Worker {
        Worker {
            index,
            pid,
            started: now,
            state: WorkerState::Starting,
            deadline: Some(deadline::after(now, ready_timeout)),
            probe_at: None,
            probe_pid: None,
            status_text: None,
            watchdog: None,
            watchdog_at: None,
        }
    }
}

/// One worker index of a generation, and its restart bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Not started yet: a rolling upgrade fills it when there is room.
    pub pending: bool,
    /// Nobody belongs here any more: retired (rolling upgrade, scale-down)
    /// or given up (a rollout that stopped). Never refilled.
    pub vacant: bool,
    /// Replacements started in this slot so far.
    pub restarts: u32,
    /// Failures in a row, for the backoff.
    pub consecutive_failures: u32,
    /// When the replacement is due, if one waits for its backoff.
    pub restart_at: Option<Instant>,
}

/// One launch of the command: `size` worker processes on the same sockets.
#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub started: Instant,
    pub phase: Phase,
    /// Draining and failed: when every worker's process group gets
    /// `SIGKILL` (`None` once it has).
    pub deadline: Option<Instant>,
    /// The upgrade that started it; `None` for the first start or a restart.
    pub upgrade: Option<UpgradeId>,
    /// Its worker 0's process group is (or was made) the terminal's
    /// foreground group.
    pub foreground: bool,
    /// The processes alive, in no particular order.
    pub workers: Vec<Worker>,
    /// One per worker index; their number is the generation's size.
    pub slots: Vec<Slot>,
    /// The first unplanned exit of one of its workers that counts as a
    /// failure, for sockvisor's exit status.
    pub failure: Option<ExitStatus>,
    /// A worker missed its watchdog: replaced, then stopped with only a
    /// short grace (a hung process will not drain).
    pub hung: bool,
    /// The operator was told that it does not handle the stop signal
    /// (once per generation).
    pub stop_signal_warned: bool,
}

impl Generation {
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slots that should have a worker: neither pending nor vacant.
    pub fn active_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.pending && !s.vacant)
            .count()
    }

    /// Its workers that count as serving: ready and not retired.
    pub fn serving(&self) -> Vec<&Worker> {
        self.workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .collect()
    }

    /// `generation 2 (pid 1234)`, or `generation 2 (4 workers)`.
    pub fn describe(&self) -> String {
        match (self.size(), self.workers.first()) {
            (1, Some(worker)) => format!("generation {} (pid {})", self.number, worker.pid),
            (1, None) => format!("generation {}", self.number),
            (size, _) => format!("generation {} ({size} workers)", self.number),
        }
    }

    /// `generation 2 (pid 1234)`, or `generation 2 worker 3 (pid 1237)`.
    /// Why a worker's exit fails this starting generation, as the
    /// operator reads it: a worker that was ready is not said to have died
    /// before.
    pub fn exit_before_ready(&self, worker: &Worker, status: crate::reaper::ExitStatus) -> String {
        let describe = self.describe_worker(worker);
        if worker.state == WorkerState::Ready {
            format!(
                "{describe} {status} after it was ready, before generation {} was",
                self.number
            )
        } else {
            format!("{describe} {status} before it was ready")
        }
    }

    pub fn describe_worker(&self, worker: &Worker) -> String {
        if self.size() == 1 {
            format!("generation {} (pid {})", self.number, worker.pid)
        } else {
            format!(
                "generation {} worker {} (pid {})",
                self.number, worker.index, worker.pid
            )
        }
    }

    pub fn worker(&self, index: u32) -> Option<&Worker> {
        self.workers.iter().find(|w| w.index == index)
    }

    pub fn worker_mut(&mut self, index: u32) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.index == index)
    }

    /// Every slot that is neither pending nor vacant has a ready worker,
    /// and no slot waits to be started.
    pub fn all_ready(&self) -> bool {
        !self.slots.iter().any(|s| s.pending) && self.serving().len() == self.active_slots()
    }

    /// The pids of its workers.
    pub fn pids(&self) -> Vec<Pid> {
        self.workers.iter().map(|w| w.pid).collect()
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
