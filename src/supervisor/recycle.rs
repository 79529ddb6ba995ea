//! Worker recycling: a serving worker that has grown too large
//! (`--worker-max-rss`) or too old (`--worker-max-age`) is replaced in its
//! slot without a moment of reduced service. The new worker starts first,
//! as the slot's second process; once it is ready it takes the slot, and
//! only then does the old one get the stop signal and drain. A new worker
//! that exits or is not ready in time leaves the old one serving, and the
//! replacement is tried again later.
//!
//! At most `--max-surge` replacements (1 without it) run at a time, only
//! in a generation that serves, never while an upgrade, a rollout, a scale
//! or a stop is in progress; an upgrade or a scale stops the replacements
//! still starting (the old workers serve on until the operation replaces
//! or keeps them).
//!
//! Memory is sampled by the event loop (`/proc` is not the supervisor's to
//! read) and handed in with [`Supervisor::on_memory_samples`]. Age limits
//! are worker timers with an index of their own: a passed one waits for
//! room (a replacement running, an operation in progress) without being a
//! deadline, so that it neither wakes the loop nor is walked over, and the
//! earliest starts once there is room.

use std::time::{Duration, Instant};

use super::generation::{Phase, SECOND_KEY, Worker, WorkerState};
use super::{Spawner, Supervisor};
use crate::byte_size::format_byte_size;
use crate::deadline;
use crate::duration::format_duration;
use crate::reaper::ExitStatus;

/// Samples in a row over `--worker-max-rss` before a worker is replaced: a
/// single spike (a large request being served) is not a leak.
pub const SAMPLES_OVER: u32 = 2;

/// How long a replacement that could not be started (a failed spawn, a
/// new worker that failed) waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Why a worker is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its process tree's resident memory, over the limit.
    Memory { bytes: u64, limit: u64 },
    /// How long it has served, at its (jittered) age limit.
    Age { age: Duration, limit: Duration },
}

impl Reason {
    fn describe(self) -> String {
        match self {
            Reason::Memory { bytes, limit } => format!(
                "uses {} > {}",
                format_byte_size(bytes),
                format_byte_size(limit)
            ),
            Reason::Age { age, limit } => format!(
                "is {} old (--worker-max-age {})",
                format_duration(age),
                format_duration(limit)
            ),
        }
    }
}

/// A worker's age limit, `max_age` less up to a tenth: fixed for a slot
/// and a process (so a restored state computes the same), different across
/// slots, so that workers started together are not all replaced together.
pub fn age_limit(max_age: Duration, generation: u32, index: u32, pid: i32) -> Duration {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&generation.to_le_bytes());
    key[4..8].copy_from_slice(&index.to_le_bytes());
    let spread = crate::digest::siphash24(&key, &pid.to_le_bytes()) % 1000;
    let tenth = max_age / 10;
    max_age.saturating_sub(tenth.mul_f64(spread as f64 / 1000.0))
}

impl<P: Spawner> Supervisor<P> {
    /// Worker `key` of generation `number` just became ready: its age
    /// limit starts.
    pub(super) fn arm_recycle(&mut self, number: u32, key: u32) {
        let Some(max_age) = self.config.recycle.max_age else {
            return;
        };
        if let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key)) {
            let limit = age_limit(max_age, number, worker.index, worker.pid.as_raw());
            let at = deadline::after(worker.started, limit);
            worker.state.set_recycle_at(Some(at));
        }
    }

    /// The event loop's memory samples: each worker's process tree's
    /// resident bytes, by generation and key. A worker over the limit at
    /// [`SAMPLES_OVER`] samples in a row is replaced.
    pub fn on_memory_samples(&mut self, samples: &[(u32, u32, u64)], now: Instant) {
        let Some(limit) = self.config.recycle.max_rss else {
            return;
        };
        let mut over = Vec::new();
        for &(number, key, bytes) in samples {
            let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key))
            else {
                continue;
            };
            worker.rss = Some(bytes);
            if bytes > limit && worker.state.is_ready() && !worker.second {
                worker.samples_over = worker.samples_over.saturating_add(1);
                if worker.samples_over >= SAMPLES_OVER {
                    over.push((number, key, bytes));
                }
            } else {
                worker.samples_over = 0;
            }
        }
        for (number, key, bytes) in over {
            // Without room now, the next sample tries again.
            self.recycle(number, key, Reason::Memory { bytes, limit }, now);
        }
    }

    /// The workers whose memory the event loop samples: every worker of a
    /// serving generation, by generation, key and pid. Empty without
    /// `--worker-max-rss`.
    pub fn sampled_workers(&self) -> Vec<(u32, u32, nix::unistd::Pid)> {
        if self.config.recycle.max_rss.is_none() {
            return Vec::new();
        }
        self.generations
            .iter()
            .filter(|g| g.phase == Phase::Ready)
            .flat_map(|g| g.workers.iter().map(move |w| (g.number, w.key(), w.pid)))
            .collect()
    }

    /// Whether generation `number` may start a replacement now: it
    /// serves, nothing else is in progress, and fewer than `--max-surge`
    /// (1) replacements run in it.
    pub(super) fn recycle_has_room(&self, number: u32) -> bool {
        let most = self.config.max_surge.unwrap_or(1).max(1) as usize;
        self.generation(number).is_some_and(|g| {
            g.phase == Phase::Ready
                && self.stop.is_none()
                && self.in_flight().is_none()
                && g.workers.seconds().count() < most
        })
    }

    /// The next age limit that `on_tick` acts on: none while there is no
    /// room, since the workers past theirs wait for room, not for a time.
    pub(super) fn next_recycle_deadline(&self) -> Option<Instant> {
        self.generations
            .iter()
            .filter(|g| self.recycle_has_room(g.number))
            .filter_map(|g| g.workers.next_recycle())
            .min()
    }

    /// Starts the replacements whose age limit has passed, the earliest
    /// first, as far as there is room: O(replacements started), however
    /// many workers wait.
    pub(super) fn check_recycles(&mut self, now: Instant) {
        let Some(limit) = self.config.recycle.max_age else {
            return;
        };
        let numbers: Vec<u32> = self.generations.iter().map(|g| g.number).collect();
        for number in numbers {
            while self.recycle_has_room(number) {
                let Some(generation) = self.generation(number) else {
                    break;
                };
                let Some(key) = generation.workers.first_recycle_due(now) else {
                    break;
                };
                let Some(worker) = generation.worker(key) else {
                    break;
                };
                let age = now.saturating_duration_since(worker.started);
                if !self.recycle(number, key, Reason::Age { age, limit }, now) {
                    break;
                }
            }
        }
    }

    /// Replaces worker `key` of generation `number` for `reason`, if it
    /// can be now. Returns false, changing nothing, when there is no room
    /// (the worker waits for it); true when the replacement started, or
    /// the worker's age limit moved (tried again later, or dropped for a
    /// worker that is being stopped).
    fn recycle(&mut self, number: u32, key: u32, reason: Reason, now: Instant) -> bool {
        let Some(generation) = self.generation(number) else {
            return false;
        };
        let Some(worker) = generation.worker(key).filter(|w| !w.second) else {
            return false;
        };
        let (index, pid) = (worker.index, worker.pid);
        let describe = generation.describe_worker(worker);
        let serves = worker.state.is_ready() && generation.phase == Phase::Ready;
        let has_second = generation.worker(SECOND_KEY + index).is_some();
        if !serves || self.stop.is_some() {
            // Being stopped or replaced already: nothing to recycle.
            if let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key)) {
                worker.state.set_recycle_at(None);
            }
            return true;
        }
        if !self.recycle_has_room(number) {
            return false;
        }
        if has_second {
            // Its predecessor still drains (an age limit shorter than the
            // drain): once it is gone.
            self.postpone_recycle(number, key, now);
            return true;
        }
        tracing::warn!("{describe} {}: replacing it", reason.describe());
        if let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key)) {
            worker.state.set_recycle_at(None);
            worker.samples_over = 0;
        }
        match self.processes.spawn(number, index, false) {
            Ok(new) => {
                let mut successor = self.new_worker(index, new, now);
                successor.second = true;
                tracing::info!(
                    "generation {number} worker {index}: pid {new} started to replace pid {pid}"
                );
                if let Some(generation) = self.generation_mut(number) {
                    generation.workers.insert(successor);
                }
                if self.config.ready == super::ReadyMode::Now {
                    self.mark_worker_ready(number, SECOND_KEY + index, now);
                }
            }
            Err(err) => {
                tracing::error!(
                    "cannot start a replacement for {describe}: {err}; it keeps serving"
                );
                self.counters.recycle_failures += 1;
                self.postpone_recycle(number, key, now);
            }
        }
        true
    }

    /// A replacement that could not start is tried again after [`RETRY`]
    /// (an age limit is a timer; an over-limit memory sample comes again
    /// by itself).
    fn postpone_recycle(&mut self, number: u32, key: u32, now: Instant) {
        if self.config.recycle.max_age.is_none() {
            return;
        }
        if let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key)) {
            worker
                .state
                .set_recycle_at(Some(deadline::after(now, RETRY)));
        }
    }

    /// The new worker of slot `index` is ready: it takes the slot, and the
    /// old one gets the stop signal and drains.
    pub(super) fn promote_successor(&mut self, number: u32, index: u32, now: Instant) {
        let (drain_timeout, stop_signal) = (self.config.drain_timeout, self.config.stop_signal);
        let terminal = self.config.terminal;
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let Some(mut successor) = generation.workers.remove(SECOND_KEY + index) else {
            return;
        };
        successor.second = false;
        let new = successor.pid;
        // On a terminal, the slot's worker 0 has the keyboard: it passes
        // to the new worker with the slot.
        let hand_terminal = terminal && generation.foreground && index == 0;
        let old = generation.workers.remove(index).map(|mut old| {
            old.second = true;
            old.samples_over = 0;
            let probe = old.state.drain(deadline::after(now, drain_timeout));
            (old, probe)
        });
        generation.workers.insert(successor);
        let old = old.map(|(old, probe)| {
            let (pid, describe) = (old.pid, generation.describe_worker(&old));
            generation.workers.insert(old);
            (pid, describe, probe)
        });
        if hand_terminal {
            self.command(super::Effect::HandTerminal { group: new });
        }
        let Some((pid, describe, probe)) = old else {
            // The old worker exited meanwhile: the new one simply serves.
            self.arm_watchdog(number, index, now);
            self.arm_recycle(number, index);
            return;
        };
        self.arm_watchdog(number, index, now);
        self.arm_recycle(number, index);
        self.counters.recycles += 1;
        if let Some(probe) = probe {
            self.signal_group(probe, nix::sys::signal::Signal::SIGKILL);
        }
        self.ask_to_stop(pid, stop_signal);
        tracing::info!(
            "{describe} replaced by pid {new}; sent {} to drain for up to {}",
            stop_signal.as_str(),
            format_duration(drain_timeout)
        );
    }

    /// The slot's own worker `index` exited while its replacement starts:
    /// the replacement takes the slot as it is (still starting), instead
    /// of a restart. Returns whether there was one.
    pub(super) fn successor_takes_over(&mut self, number: u32, index: u32) -> bool {
        let terminal = self.config.terminal;
        let Some(generation) = self.generation_mut(number) else {
            return false;
        };
        let starting = generation
            .worker(SECOND_KEY + index)
            .is_some_and(|w| w.state.is_starting());
        if !starting || generation.worker(index).is_some() {
            return false;
        }
        let Some(mut successor) = generation.workers.remove(SECOND_KEY + index) else {
            return false;
        };
        successor.second = false;
        tracing::info!(
            "{} takes the slot of the worker it was to replace",
            generation.describe_worker(&successor)
        );
        let group = successor.pid;
        let hand_terminal = terminal && generation.foreground && index == 0;
        generation.workers.insert(successor);
        if hand_terminal {
            self.command(super::Effect::HandTerminal { group });
        }
        true
    }

    /// A slot's second process exited: the old worker after its drain (the
    /// replacement is done), or a replacement that failed (the old worker
    /// serves on, and is replaced again later).
    pub(super) fn on_second_exit(
        &mut self,
        number: u32,
        worker: &Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        let Some(generation) = self.generation(number) else {
            return;
        };
        let describe = generation.describe_worker(worker);
        if matches!(worker.state, WorkerState::Draining { .. }) {
            tracing::info!("{describe} {status}; replaced");
            return;
        }
        let serving = generation.worker(worker.index).map(|w| w.pid);
        if self.in_flight().is_some() || self.stop.is_some() {
            // Stopped because an operation or a stop came first.
            tracing::info!("{describe} {status}; its replacement was abandoned");
            return;
        }
        self.counters.recycle_failures += 1;
        match serving {
            Some(pid) => tracing::warn!(
                "{describe} {status} before it was ready; pid {pid} keeps serving and is replaced again later"
            ),
            None => tracing::warn!("{describe} {status} before it was ready"),
        }
        self.postpone_recycle(number, worker.index, now);
    }

    /// An upgrade, a rollout or a scale begins: replacements still
    /// starting are stopped (the old workers serve on until the operation
    /// replaces or keeps them).
    pub(super) fn abandon_recycles(&mut self, now: Instant) {
        let starting: Vec<(u32, u32)> = self
            .generations
            .iter()
            .flat_map(|g| {
                g.workers
                    .seconds()
                    .filter(|w| w.state.is_starting())
                    .map(move |w| (g.number, w.key()))
            })
            .collect();
        for (number, key) in starting {
            self.stop_worker(number, key, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_limit_is_within_a_tenth_below_the_maximum_and_spread_across_slots() {
        let max = Duration::from_secs(3600);
        let limits: Vec<Duration> = (0..64)
            .map(|i| age_limit(max, 1, i, 1000 + i as i32))
            .collect();
        for limit in &limits {
            assert!(*limit <= max && *limit >= max - max / 10, "{limit:?}");
        }
        let distinct: std::collections::BTreeSet<_> = limits.iter().collect();
        assert!(
            distinct.len() > 32,
            "only {} distinct limits",
            distinct.len()
        );
        assert_eq!(
            age_limit(max, 1, 3, 1003),
            limits[3],
            "fixed for a slot and process"
        );
    }
}
