//! The supervisor's state as `sockvisor status` reports it.

use std::time::Instant;

use serde::Serialize;

use super::{Phase, ProcessControl, Supervisor};
use crate::duration::as_millis;

#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// The number of the generation that serves.
    pub current: Option<u32>,
    pub stopping: bool,
    pub generations: Vec<GenerationStatus>,
    pub last_upgrade: Option<UpgradeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationStatus {
    pub generation: u32,
    pub pid: i32,
    pub state: Phase,
    /// Milliseconds since it was started.
    pub age_ms: u64,
    /// The last `STATUS=` text it sent.
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpgradeStatus {
    pub generation: u32,
    pub ok: bool,
    pub message: String,
    /// Milliseconds since it finished.
    pub ago_ms: u64,
}

impl<P: ProcessControl> Supervisor<P> {
    pub fn snapshot(&self, now: Instant) -> StatusSnapshot {
        StatusSnapshot {
            current: self.current,
            stopping: self.stop.is_some(),
            generations: self
                .generations
                .iter()
                .map(|g| GenerationStatus {
                    generation: g.number,
                    pid: g.pid.as_raw(),
                    state: g.phase,
                    age_ms: as_millis(now.saturating_duration_since(g.started)),
                    status: g.status_text.clone(),
                })
                .collect(),
            last_upgrade: self.last_outcome.as_ref().map(|o| UpgradeStatus {
                generation: o.generation,
                ok: o.ok,
                message: o.message.clone(),
                ago_ms: as_millis(now.saturating_duration_since(o.finished)),
            }),
        }
    }

    /// True once a stop has been requested.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// True while a generation is starting (an upgrade is in flight).
    pub fn is_starting(&self) -> bool {
        self.generations.iter().any(|g| g.phase == Phase::Starting)
    }
}
