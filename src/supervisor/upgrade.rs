//! Upgrades: starting a new generation, draining the old one once the new
//! one is ready, rolling back a new one that fails, and what the operator
//! sees of it: an identifier, progress notices, one final result, and the
//! outcome remembered for `status`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::generation::{Generation, Phase};
use super::{Spawner, Supervisor};
use crate::deadline;
use crate::reaper::ExitStatus;

pub use super::ids::UpgradeId;

/// Something to tell whoever asked for an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Progress {
        upgrade: UpgradeId,
        message: String,
    },
    Finished {
        upgrade: UpgradeId,
        result: Result<String, String>,
    },
}

/// Why an upgrade request was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeRejection {
    /// Another generation is still starting.
    Busy(String),
    /// sockvisor is stopping.
    Stopping,
    /// The new generation could not be spawned.
    SpawnFailed(String),
}

impl std::fmt::Display for UpgradeRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeRejection::Busy(message) | UpgradeRejection::SpawnFailed(message) => {
                f.write_str(message)
            }
            UpgradeRejection::Stopping => f.write_str("sockvisor is stopping; refused"),
        }
    }
}

/// An upgrade in flight.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub id: UpgradeId,
    /// The generation it started.
    pub new: u32,
    /// Once the new one is ready: the generations it replaced, until they
    /// have exited.
    pub draining: Vec<u32>,
}

/// How the last finished upgrade ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub generation: u32,
    pub ok: bool,
    pub message: String,
    pub finished: Instant,
    /// From its new generation's start to its result.
    pub duration: Option<Duration>,
}

impl<P: Spawner> Supervisor<P> {
    /// Starts an upgrade: a new generation on the same sockets, which
    /// replaces the current one once every worker of it is ready.
    pub fn request_upgrade(&mut self, now: Instant) -> Result<UpgradeId, UpgradeRejection> {
        if let Some(busy) = self.in_flight() {
            return Err(busy);
        }
        self.abandon_recycles(now);
        // What this upgrade's drain reports starts here: not the workers a
        // recycle or a scale retired before.
        for generation in &mut self.generations {
            if generation.phase == Phase::Ready {
                generation.drained = Default::default();
            }
        }
        self.last_upgrade_id += 1;
        let id = self.last_upgrade_id;
        // An upgrade replaces a restart that was waiting for its backoff.
        self.restart_at = None;
        let new = self.last_generation + 1;
        self.upgrades.push(Upgrade {
            id,
            new,
            draining: Vec::new(),
        });
        let spawned = self.spawn_generation(Some(id), now);
        #[cfg(test)]
        self.check_indexes();
        match spawned {
            Ok(_) => Ok(id),
            Err(err) => {
                let message = self.with_survivor(format!("cannot start generation {new}: {err}"));
                self.upgrades.retain(|u| u.id != id);
                self.remember_outcome(new, false, &message, now);
                tracing::warn!("upgrade failed: {message}");
                Err(UpgradeRejection::SpawnFailed(message))
            }
        }
    }

    /// What stands in the way of an upgrade, a scale or a re-exec: a stop,
    /// a generation that is starting, or a scale in progress. One at a time.
    pub(super) fn in_flight(&self) -> Option<UpgradeRejection> {
        if self.stop.is_some() {
            return Some(UpgradeRejection::Stopping);
        }
        if let Some(starting) = self.generations.iter().find(|g| g.phase == Phase::Starting) {
            return Some(UpgradeRejection::Busy(format!(
                "an upgrade is in progress: {} is still starting; try again once it is ready or has failed",
                starting.describe()
            )));
        }
        self.scale().map(|_| {
            UpgradeRejection::Busy("a scale is in progress; try again once it is done".into())
        })
    }

    /// Asks every worker of a replaced generation to stop. Returns the
    /// generation if it was alive, and how many of its workers were sent
    /// the stop signal now (those a rollout retired were asked already).
    pub(super) fn start_drain(&mut self, number: u32, now: Instant) -> Option<(Generation, usize)> {
        let (drain_timeout, stop_signal) = (self.config.drain_timeout, self.config.stop_signal);
        let generation = self.generation_mut(number)?;
        generation.phase = Phase::Draining;
        // A hung generation will not drain: only a short grace.
        let grace = if generation.hung {
            drain_timeout.min(super::watchdog::HUNG_GRACE)
        } else {
            drain_timeout
        };
        generation.kill_at = Some(deadline::after(now, grace));
        // Workers a rollout retired were asked already.
        let to_ask: Vec<_> = generation
            .workers
            .iter()
            .filter(|w| w.state.stage() != super::WorkerStage::Draining)
            .map(|w| w.pid)
            .collect();
        let generation = self.stop_workers(number)?;
        let asked = to_ask.len();
        for pid in to_ask {
            self.ask_to_stop(pid, stop_signal);
        }
        Some((generation, asked))
    }

    /// A starting generation cannot become ready (a worker exited, was not
    /// ready in time, or its probe could not run): stop what is left of it,
    /// keep the current one.
    pub(super) fn fail_start(&mut self, number: u32, reason: String, now: Instant) {
        let (stop_timeout, stop_signal) = (self.config.stop_timeout, self.config.stop_signal);
        if self.rollout() == Some(number) {
            self.end_rollout();
            if self
                .generation(number)
                .is_some_and(|g| g.serving_count() > 0)
            {
                self.stop_rollout(number, reason, now);
                return;
            }
        }
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.phase = Phase::Failed;
        generation.kill_at = Some(deadline::after(now, stop_timeout));
        let Some(generation) = self.stop_workers(number) else {
            return;
        };
        for pid in generation.pids() {
            self.ask_to_stop(pid, stop_signal);
        }
        let message = self.with_survivor(reason);
        tracing::warn!("{message}");
        self.finish_upgrade(generation.upgrade, Err(message), now);
    }

    /// Clears the per-worker timers and probes of a generation that is
    /// being stopped as a whole (its own deadline takes over), and any
    /// pending replacement.
    pub(super) fn stop_workers(&mut self, number: u32) -> Option<Generation> {
        let generation = self.generation_mut(number)?;
        let mut probes = Vec::new();
        generation.workers.for_each_mut(|worker| {
            probes.extend(worker.state.disarm());
        });
        generation.slots.for_each_mut(|slot| slot.restart_at = None);
        let generation = generation.clone();
        for probe in probes {
            self.signal_group(probe, Signal::SIGKILL);
        }
        Some(generation)
    }

    pub(super) fn on_exit_before_ready(
        &mut self,
        generation: &Generation,
        worker: &super::generation::Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        let reason = generation.exit_before_ready(worker, status);
        if generation.upgrade.is_some() {
            let message = self.with_survivor(reason);
            tracing::warn!("{message}");
            self.finish_upgrade(generation.upgrade, Err(message), now);
        }
        if self.stop.is_none() && (generation.upgrade.is_none() || self.current.is_none()) {
            self.after_unplanned_exit(generation, status, now);
        }
    }

    /// A replaced generation has exited: the upgrades waiting for it are
    /// done once nothing else they replaced is left.
    pub(super) fn on_drained(&mut self, generation: &Generation, status: ExitStatus, now: Instant) {
        // How the drain went, worker by worker: not an older failure of
        // one of them, nor only the last one's exit.
        let message = format!(
            "{} {}",
            generation.describe(),
            generation.drained.describe(status)
        );
        tracing::info!("{message}");
        let waiting: Vec<(UpgradeId, u32, bool)> = self
            .upgrades
            .iter_mut()
            .filter(|u| u.draining.contains(&generation.number))
            .map(|u| {
                u.draining.retain(|n| *n != generation.number);
                (u.id, u.new, u.draining.is_empty())
            })
            .collect();
        for (id, new, done) in waiting {
            self.progress(Some(id), message.clone());
            if done {
                self.finish_upgrade(Some(id), Ok(format!("generation {new} is serving")), now);
            }
        }
    }

    // ----- bookkeeping -----

    pub(super) fn upgrade_mut(&mut self, id: Option<UpgradeId>) -> Option<&mut Upgrade> {
        let id = id?;
        self.upgrades.iter_mut().find(|u| u.id == id)
    }

    pub(super) fn progress(&mut self, upgrade: Option<UpgradeId>, message: String) {
        if let Some(upgrade) = upgrade {
            self.notices.push(Notice::Progress { upgrade, message });
        }
    }

    pub(super) fn finish_upgrade(
        &mut self,
        id: Option<UpgradeId>,
        result: Result<String, String>,
        now: Instant,
    ) {
        let Some(id) = id else { return };
        let Some(index) = self.upgrades.iter().position(|u| u.id == id) else {
            return;
        };
        let upgrade = self.upgrades.remove(index);
        let (ok, message) = match &result {
            Ok(message) => (true, message.clone()),
            Err(message) => (false, message.clone()),
        };
        if ok {
            tracing::info!("upgrade to generation {} done: {message}", upgrade.new);
        }
        self.remember_outcome(upgrade.new, ok, &message, now);
        self.notices.push(Notice::Finished {
            upgrade: id,
            result,
        });
    }

    /// The final result of an operation that is not an upgrade (a scale).
    pub(super) fn finish_upgrade_notice(
        &mut self,
        id: UpgradeId,
        result: Result<String, String>,
        _now: Instant,
    ) {
        self.notices.push(Notice::Finished {
            upgrade: id,
            result,
        });
    }

    fn remember_outcome(&mut self, generation: u32, ok: bool, message: &str, now: Instant) {
        let duration = self
            .generation(generation)
            .map(|g| now.saturating_duration_since(g.started));
        if ok {
            self.counters.upgrades += 1;
        } else {
            self.counters.rollbacks += 1;
        }
        self.last_outcome = Some(Outcome {
            generation,
            ok,
            message: message.to_string(),
            finished: now,
            duration,
        });
    }

    /// Adds which generation keeps serving to a failure reason.
    fn with_survivor(&self, reason: String) -> String {
        match self.current() {
            Some(current) => format!("{reason}; generation {} keeps serving", current.number),
            None => reason,
        }
    }
}
