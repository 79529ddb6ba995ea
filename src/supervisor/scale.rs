//! `sockvisor scale N`: changing the worker count of the serving generation
//! while it serves. New workers go through readiness like any worker;
//! removed workers (the highest indexes) get the stop signal and drain. The
//! result comes once the new workers are ready and the removed ones have
//! exited, through the same progress notices as an upgrade. Later upgrades
//! start the new count.
//!
//! A scale is refused while an upgrade is starting a generation, while a
//! rollout that stopped part-way leaves several generations serving (run
//! `upgrade` first), and while another scale is in progress.

use std::collections::BTreeSet;
use std::time::Instant;

use nix::unistd::Pid;

use super::generation::{Phase, ReadyMode, Worker};
use super::ids::UpgradeId;
use super::upgrade::UpgradeRejection;
use super::{Spawner, Supervisor};
use crate::deadline;
use crate::duration::format_duration;

/// A scale in progress.
#[derive(Debug, Clone)]
pub(super) struct Scale {
    pub id: UpgradeId,
    pub generation: u32,
    pub workers: u32,
    /// Indexes of new workers not yet ready.
    pub starting: BTreeSet<u32>,
    /// Removed workers not yet exited.
    pub draining: BTreeSet<Pid>,
}

impl<P: Spawner> Supervisor<P> {
    /// Changes the serving generation's worker count to `workers`.
    pub fn request_scale(
        &mut self,
        workers: u32,
        now: Instant,
    ) -> Result<UpgradeId, UpgradeRejection> {
        if let Some(busy) = self.in_flight() {
            return Err(busy);
        }
        let serving: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.phase == Phase::Ready)
            .map(|g| g.number)
            .collect();
        let number = match serving.as_slice() {
            [] => return Err(UpgradeRejection::Busy("no generation is serving".into())),
            [one] => *one,
            _ => {
                return Err(UpgradeRejection::Busy(format!(
                    "a rollout stopped part-way ({}); run `sockvisor upgrade` to complete it first",
                    self.describe_serving()
                )));
            }
        };
        let Some(generation) = self.generation(number) else {
            return Err(UpgradeRejection::Busy("no generation is serving".into()));
        };
        let from = generation.size();
        if workers != from {
            self.abandon_recycles(now);
        }
        self.config.workers = workers;
        self.last_upgrade_id += 1;
        let id = self.last_upgrade_id;
        self.operation = Some(super::Operation::Scale(Scale {
            id,
            generation: number,
            workers,
            starting: BTreeSet::new(),
            draining: BTreeSet::new(),
        }));
        if workers != from {
            self.progress(
                Some(id),
                format!(
                    "scaling generation {number} from {from} to {}",
                    super::workers_count(workers)
                ),
            );
        }
        if workers > from {
            self.add_workers(number, from, workers, now);
        } else if workers < from {
            self.remove_workers(number, workers, now);
        }
        self.finish_scale_if_done(now);
        #[cfg(test)]
        self.check_indexes();
        Ok(id)
    }

    fn add_workers(&mut self, number: u32, from: u32, to: u32, now: Instant) {
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.slots.resize(to as usize);
        // Every new worker counts as starting before the first is spawned:
        // with `--ready now` the first one is ready at once, and the scale
        // must not finish before the others have even been tried.
        if let Some(scale) = self.scale_mut() {
            scale.starting.extend(from..to);
        }
        for index in from..to {
            match self.processes.spawn(number, index, false) {
                Ok(pid) => {
                    let worker = self.new_worker(index, pid, now);
                    let Some(generation) = self.generation_mut(number) else {
                        return;
                    };
                    let message = format!("{} started", generation.describe_worker(&worker));
                    generation.workers.insert(worker);
                    tracing::info!("{message}");
                    self.progress(self.scale().map(|s| s.id), message);
                    if self.config.ready == ReadyMode::Now {
                        self.mark_worker_ready(number, index, now);
                    }
                }
                Err(err) => {
                    // The rest would fail the same way (a process limit):
                    // their slots are given up with this one.
                    if let Some(generation) = self.generation_mut(number) {
                        for rest in index + 1..to {
                            if let Some(mut slot) = generation.slots.get_mut(rest) {
                                slot.vacant = true;
                            }
                        }
                    }
                    let reason = format!("cannot start generation {number} worker {index}: {err}");
                    self.fail_scale_worker(number, index, reason, now);
                    return;
                }
            }
        }
    }

    fn remove_workers(&mut self, number: u32, to: u32, now: Instant) {
        let (drain_timeout, stop_signal) = (self.config.drain_timeout, self.config.stop_signal);
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.slots.resize(to as usize);
        let mut removed = Vec::new();
        generation.workers.for_each_mut(|worker| {
            // A slot's second process (a recycle) is stopped or drains
            // already, on its own deadline.
            if worker.index >= to
                && !worker.second
                && worker.state.stage() != super::WorkerStage::Draining
            {
                let probe = worker.state.drain(deadline::after(now, drain_timeout));
                removed.push((worker.clone(), probe));
            }
        });
        let removed: Vec<(Worker, Option<Pid>, String)> = removed
            .into_iter()
            .map(|(worker, probe)| {
                let describe = generation.describe_worker(&worker);
                (worker, probe, describe)
            })
            .collect();
        for (worker, probe, describe) in removed {
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
            if let Some(scale) = self.scale_mut() {
                scale.draining.insert(worker.pid);
            }
            self.progress(self.scale().map(|s| s.id), message);
        }
    }

    /// A worker of the scaled generation is ready.
    pub(super) fn on_scale_worker_ready(&mut self, number: u32, index: u32, now: Instant) {
        if let Some(scale) = self.scale_mut()
            && scale.generation == number
        {
            scale.starting.remove(&index);
        }
        self.finish_scale_if_done(now);
    }

    /// A worker of the scaled generation exited. Returns true when it was
    /// one the scale added and it never became ready: its slot is given up.
    pub(super) fn on_scale_worker_exit(
        &mut self,
        number: u32,
        index: u32,
        pid: Pid,
        reason: String,
        now: Instant,
    ) -> bool {
        let Some(scale) = self.scale_mut() else {
            return false;
        };
        if scale.generation != number {
            return false;
        }
        if scale.draining.remove(&pid) {
            self.finish_scale_if_done(now);
            return false;
        }
        if !scale.starting.contains(&index) {
            return false;
        }
        self.fail_scale_worker(number, index, reason, now);
        true
    }

    /// A worker the scale added cannot become ready: its slot is given up
    /// and the scale reports the failure with what serves.
    fn fail_scale_worker(&mut self, number: u32, index: u32, reason: String, now: Instant) {
        if let Some(mut slot) = self
            .generation_mut(number)
            .and_then(|g| g.slots.get_mut(index))
        {
            slot.vacant = true;
            slot.restart_at = None;
        }
        let Some(scale) = self.take_scale() else {
            return;
        };
        let message = format!(
            "{reason}; {}; the next upgrade starts {}",
            self.describe_serving(),
            super::workers_count(scale.workers)
        );
        tracing::warn!("{message}");
        self.finish_upgrade_notice(scale.id, Err(message), now);
    }

    fn finish_scale_if_done(&mut self, now: Instant) {
        let done = self
            .scale()
            .is_some_and(|s| s.starting.is_empty() && s.draining.is_empty());
        if !done {
            return;
        }
        let Some(scale) = self.take_scale() else {
            return;
        };
        let message = format!(
            "generation {} serves with {}",
            scale.generation,
            super::workers_count(scale.workers)
        );
        tracing::info!("{message}");
        self.finish_upgrade_notice(scale.id, Ok(message), now);
    }
}
