//! The supervisor's state as `sockvisor status` reports it.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::generation::WorkerStage;
use super::{Phase, Spawner, Supervisor};
use crate::duration::as_millis;

#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// The number of the generation that serves.
    pub current: Option<u32>,
    pub stopping: bool,
    /// Worker processes per generation (`--workers`).
    pub workers: u32,
    /// Replacements started because a worker missed its watchdog.
    pub watchdog_restarts: u32,
    /// Left out when empty: the event loop's fuller report carries them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<GenerationStatus>,
    pub last_upgrade: Option<UpgradeStatus>,
    pub counters: Counters,
    /// Milliseconds until a new generation is started, when the last one
    /// ended on its own and is to be restarted (left out otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
}

/// What happened since sockvisor started (carried over re-execs), for
/// `status --json` and the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Upgrades (and rollouts) whose new generation took over.
    pub upgrades: u64,
    /// Upgrades that failed, the old generation serving on.
    pub rollbacks: u64,
    /// Generations restarted and workers started again in their slot.
    pub restarts: u64,
    /// Workers replaced for their memory or age (`--worker-max-rss`,
    /// `--worker-max-age`) by a new one that became ready.
    #[serde(default)]
    pub recycles: u64,
    /// Replacements for memory or age that did not become ready (the old
    /// worker served on).
    #[serde(default)]
    pub recycle_failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationStatus {
    pub generation: u32,
    /// Worker 0's pid (the only one with `--workers 1`); `null` while
    /// worker 0's slot holds no process.
    pub pid: Option<i32>,
    pub state: Phase,
    /// Milliseconds since it was started.
    pub age_ms: u64,
    /// The last `STATUS=` text one of its workers sent (the lowest index
    /// that sent one).
    pub status: Option<String>,
    /// A worker of it missed its watchdog.
    pub hung: bool,
    pub workers: Vec<WorkerStatus>,
    /// Slots whose worker has ended and that hold no process (left out
    /// when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub empty_slots: Vec<EmptySlot>,
}

/// A slot whose worker has ended, not (yet) replaced.
#[derive(Debug, Clone, Serialize)]
pub struct EmptySlot {
    pub index: u32,
    pub state: EmptySlotState,
    /// Replacements started in it so far.
    pub restarts: u32,
    /// Milliseconds until its replacement is started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptySlotState {
    /// Its replacement waits for the restart backoff.
    Restarting,
    /// Not replaced (`--restart`).
    Exited,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub index: u32,
    pub pid: i32,
    pub state: WorkerStage,
    /// Replacements started in its slot.
    pub restarts: u32,
    /// Milliseconds since this process was started.
    pub age_ms: u64,
    pub status: Option<String>,
    /// The slot's second process during a recycle: the new worker while it
    /// starts, the old one while it drains.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recycling: bool,
    /// With `--worker-max-rss`: its process tree's resident memory at the
    /// last sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpgradeStatus {
    pub generation: u32,
    pub ok: bool,
    pub message: String,
    /// Milliseconds since it finished.
    pub ago_ms: u64,
    /// Milliseconds from its new generation's start to its result.
    pub duration_ms: Option<u64>,
}

impl<P: Spawner> Supervisor<P> {
    pub fn snapshot(&self, now: Instant) -> StatusSnapshot {
        let age = |since: Instant| as_millis(now.saturating_duration_since(since));
        StatusSnapshot {
            current: self.current,
            stopping: self.stop.is_some(),
            workers: self.config.workers,
            watchdog_restarts: self.watchdog_restarts,
            generations: self
                .generations
                .iter()
                .map(|g| {
                    // In slot order, then the slots' second processes.
                    let workers: Vec<WorkerStatus> = g
                        .workers
                        .iter()
                        .map(|w| WorkerStatus {
                            index: w.index,
                            pid: w.pid.as_raw(),
                            state: w.state.stage(),
                            restarts: g.slots.get(w.index).map_or(0, |s| s.restarts),
                            age_ms: age(w.started),
                            status: w.status_text.clone(),
                            recycling: w.second,
                            rss_bytes: w.rss,
                        })
                        .collect();
                    let empty_slots = g
                        .slots
                        .iter()
                        .zip(0u32..)
                        .filter(|(slot, index)| {
                            !slot.pending && !slot.vacant && g.worker(*index).is_none()
                        })
                        .map(|(slot, index)| EmptySlot {
                            index,
                            state: if slot.restart_at.is_some() {
                                EmptySlotState::Restarting
                            } else {
                                EmptySlotState::Exited
                            },
                            restarts: slot.restarts,
                            restart_in_ms: slot
                                .restart_at
                                .map(|at| as_millis(at.saturating_duration_since(now))),
                        })
                        .collect();
                    GenerationStatus {
                        generation: g.number,
                        pid: g.worker(0).map(|w| w.pid.as_raw()),
                        state: g.phase,
                        age_ms: age(g.started),
                        status: workers.iter().find_map(|w| w.status.clone()),
                        hung: g.hung,
                        workers,
                        empty_slots,
                    }
                })
                .collect(),
            last_upgrade: self.last_outcome.as_ref().map(|o| UpgradeStatus {
                generation: o.generation,
                ok: o.ok,
                message: o.message.clone(),
                ago_ms: age(o.finished),
                duration_ms: o.duration.map(as_millis),
            }),
            counters: self.counters,
            restart_in_ms: self
                .restart_at
                .map(|at| as_millis(at.saturating_duration_since(now))),
        }
    }

    /// True while a generation is starting (an upgrade is in flight).
    pub fn is_starting(&self) -> bool {
        self.generations.iter().any(|g| g.phase == Phase::Starting)
    }
}
