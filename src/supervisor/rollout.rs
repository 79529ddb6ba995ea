//! Rolling upgrades (`--max-surge K`): the new generation's workers are
//! started a few at a time, so that at most K processes beyond `--workers`
//! run at any moment (draining ones count), and each new worker that becomes
//! ready retires one old worker. Ready workers never fall below N.
//!
//! A rollout that fails part-way (a new worker exits or is not ready in
//! time) stops: the new workers that are ready keep serving next to the old
//! workers not yet retired, the rest of the new generation's slots are given
//! up, and the result says exactly which workers of which generation serve.
//! A later upgrade rolls over all of them.

use std::time::Instant;

use super::generation::{Phase, ReadyMode, Worker};
use super::{Spawner, Supervisor};
use crate::deadline;
use crate::duration::format_duration;
use crate::spawn::SpawnError;

impl<P: Spawner> Supervisor<P> {
    /// True when an upgrade should roll: `--max-surge` is set and workers
    /// serve that the new ones replace.
    pub(super) fn rolls(&self) -> bool {
        self.config.max_surge.is_some() && self.current.is_some()
    }

    /// True when one more process fits under N + K for the rollout.
    pub(super) fn rollout_has_room(&self) -> bool {
        let surge = self.config.max_surge.unwrap_or(1) as usize;
        let Some(generation) = self.rollout().and_then(|n| self.generation(n)) else {
            return false;
        };
        let alive: usize = self.generations.iter().map(|g| g.workers.len()).sum();
        alive < generation.size() as usize + surge
    }

    /// Starts the rolling generation's pending workers while there is room
    /// under N + K processes.
    pub(super) fn advance_rollout(&mut self, now: Instant) -> Result<(), SpawnError> {
        let surge = self.config.max_surge.unwrap_or(1) as usize;
        while let Some(number) = self.rollout() {
            let Some(generation) = self.generation(number) else {
                self.end_rollout();
                return Ok(());
            };
            let limit = generation.size() as usize + surge;
            let alive: usize = self.generations.iter().map(|g| g.workers.len()).sum();
            let Some(index) = generation.slots.next_pending(now) else {
                return Ok(());
            };
            if alive >= limit {
                return Ok(());
            }
            let pid = self.processes.spawn(number, index, false)?;
            let worker = self.new_worker(index, pid, now);
            let Some(generation) = self.generation_mut(number) else {
                return Ok(());
            };
            if let Some(mut slot) = generation.slots.get_mut(index) {
                slot.pending = false;
                if slot.restart_at.take().is_some() {
                    slot.restarts += 1;
                }
            }
            generation.workers.insert(worker.clone());
            let message = format!("{} started", generation.describe_worker(&worker));
            let upgrade = generation.upgrade;
            tracing::info!("{message}");
            self.progress(upgrade, message);
            if self.config.ready == ReadyMode::Now {
                self.mark_worker_ready(number, index, now);
            }
        }
        Ok(())
    }

    /// After a spawn failure in the middle of a rollout: stop it there.
    pub(super) fn advance_rollout_or_stop(&mut self, now: Instant) {
        if let Err(err) = self.advance_rollout(now)
            && let Some(number) = self.rollout()
        {
            self.fail_start(
                number,
                format!("cannot start a worker of generation {number}: {err}"),
                now,
            );
        }
    }

    /// A worker of the rolling generation `new` is ready: retire one worker
    /// of an older serving generation (the oldest generation first; an empty
    /// slot waiting for its replacement before a starting replacement, and
    /// that before a ready worker, the highest index first).
    pub(super) fn retire_one_old_worker(&mut self, new: u32, now: Instant) {
        let (drain_timeout, stop_signal) = (self.config.drain_timeout, self.config.stop_signal);
        let mut serving: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.number != new && g.phase == Phase::Ready)
            .map(|g| g.number)
            .collect();
        serving.sort_unstable();
        let upgrade = self.generation(new).and_then(|g| g.upgrade);
        for number in serving {
            let Some(generation) = self.generation_mut(number) else {
                continue;
            };
            // An empty slot waiting for its backoff: give it up instead.
            if let Some(index) = generation.slots.first_waiting() {
                if let Some(mut slot) = generation.slots.get_mut(index) {
                    slot.restart_at = None;
                    slot.vacant = true;
                }
                let message = format!(
                    "generation {number} worker {index} has no process (it exited): generation {new} takes its place, and its replacement is called off"
                );
                tracing::info!("{message}");
                self.progress(upgrade, message);
                return;
            }
            let Some(index) = generation.workers.retire_candidate() else {
                continue;
            };
            if let Some(mut slot) = generation.slots.get_mut(index) {
                slot.vacant = true;
            }
            let (worker, probe) = {
                let Some(mut worker) = generation.worker_mut(index) else {
                    continue;
                };
                let probe = worker.state.drain(deadline::after(now, drain_timeout));
                (Worker::clone(&worker), probe)
            };
            let describe = generation.describe_worker(&worker);
            if let Some(probe) = probe {
                self.signal_group(probe, nix::sys::signal::Signal::SIGKILL);
            }
            self.ask_to_stop(worker.pid, stop_signal);
            let message = format!(
                "{describe} sent {}; draining for up to {}",
                stop_signal.as_str(),
                format_duration(drain_timeout)
            );
            tracing::info!("{message}");
            self.progress(upgrade, message);
            return;
        }
    }

    /// The rolling generation `number` cannot go on, but some of its workers
    /// are ready: they keep serving with the old workers not yet retired.
    pub(super) fn stop_rollout(&mut self, number: u32, reason: String, now: Instant) {
        let (stop_timeout, stop_signal) = (self.config.stop_timeout, self.config.stop_signal);
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.phase = Phase::Ready;
        generation.slots.for_each_mut(|slot| {
            if slot.pending {
                slot.pending = false;
                slot.vacant = true;
            }
        });
        let mut to_stop = Vec::new();
        generation.workers.for_each_mut(|worker| {
            if worker.state.is_starting() {
                let probe = worker.state.stop(deadline::after(now, stop_timeout));
                to_stop.push((worker.index, worker.pid, probe));
            }
        });
        for (index, _, _) in &to_stop {
            if let Some(mut slot) = generation.slots.get_mut(*index) {
                slot.vacant = true;
            }
        }
        let upgrade = generation.upgrade;
        for (_, pid, probe) in to_stop {
            if let Some(probe) = probe {
                self.signal_group(probe, nix::sys::signal::Signal::SIGKILL);
            }
            self.ask_to_stop(pid, stop_signal);
        }
        self.current = Some(number);
        let message = format!(
            "{reason}; rolling upgrade stopped with {}; run `sockvisor upgrade` again to complete it",
            self.describe_serving()
        );
        tracing::warn!("{message}");
        self.finish_upgrade(upgrade, Err(message), now);
    }

    /// `4 workers serving: generation 1 workers 2, 3 and generation 2
    /// workers 0, 1`.
    pub(super) fn describe_serving(&self) -> String {
        let mut total = 0;
        let mut parts = Vec::new();
        for generation in self.generations.iter().filter(|g| g.phase == Phase::Ready) {
            let mut indexes: Vec<u32> = generation.serving().iter().map(|w| w.index).collect();
            if indexes.is_empty() {
                continue;
            }
            indexes.sort_unstable();
            total += indexes.len();
            let list: Vec<String> = indexes.iter().map(u32::to_string).collect();
            let noun = if indexes.len() == 1 {
                "worker"
            } else {
                "workers"
            };
            parts.push(format!(
                "generation {} {noun} {}",
                generation.number,
                list.join(", ")
            ));
        }
        format!(
            "{} serving: {}",
            super::workers_count(total as u64),
            parts.join(" and ")
        )
    }
}
