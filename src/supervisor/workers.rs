//! Worker processes: starting a generation's workers, what one worker's
//! exit means for its generation, and refilling a serving generation's
//! slots.
//!
//! A worker that exits while its generation is starting fails the whole
//! generation (the others are stopped). One that exits while its generation
//! serves is replaced in the same slot under the restart policy, with the
//! slot's own backoff, while the others keep serving. When a generation has
//! no worker left it is gone, and the generation-level rules apply (drained,
//! failed start, restart as a new generation, or the end).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::generation::{
    Generation, Phase, Probe, ReadyMode, Slot, Slots, Worker, WorkerStage, WorkerState, Workers,
};
use super::ids::UpgradeId;
use super::restart::{backoff, is_keyboard_interrupt};
use super::{Spawner, Supervisor, policy_name};
use crate::deadline;
use crate::duration::format_duration;
use crate::reaper::{Exit, ExitStatus};
use crate::spawn::SpawnError;

/// Most worker processes a generation may have: far more than any server
/// needs, few enough that a typo does not fork until the process limit.
pub const MAX_WORKERS: u32 = 1024;

/// A worker count as a person or a program wrote it (`--workers`,
/// `--max-surge`, `sockvisor scale N`, a control request's `workers`):
/// 1 to [`MAX_WORKERS`]. The one rule for all of them, so that the control
/// socket refuses what the command line refuses.
pub fn parse_worker_count(text: &str) -> Result<u32, String> {
    match text.parse::<i128>() {
        Ok(count) => u32::try_from(count)
            .ok()
            .filter(|count| (1..=MAX_WORKERS).contains(count))
            .ok_or_else(|| format!("{text} is out of range (1 to {MAX_WORKERS})")),
        Err(_) => Err(format!(
            "'{text}' is not a whole number from 1 to {MAX_WORKERS}"
        )),
    }
}

impl<P: Spawner> Supervisor<P> {
    /// Starts a new generation of `--workers` processes. If one cannot be
    /// spawned, those already started are killed and the error returned.
    pub(super) fn spawn_generation(
        &mut self,
        upgrade: Option<UpgradeId>,
        now: Instant,
    ) -> Result<u32, SpawnError> {
        let number = self.last_generation + 1;
        if upgrade.is_some() && self.rolls() {
            return self.spawn_rolling_generation(number, upgrade, now);
        }
        // With nothing serving, nobody else needs the terminal.
        let foreground = self.config.terminal && self.current.is_none();
        let mut generation = Generation {
            number,
            started: now,
            phase: Phase::Starting,
            kill_at: None,
            upgrade,
            foreground,
            workers: Workers::default(),
            slots: Slots::new(self.config.workers.max(1) as usize, &Slot::default()),
            failure: None,
            hung: false,
            stop_signal_warned: false,
            drained: Default::default(),
        };
        for index in 0..generation.size() {
            match self
                .processes
                .spawn(number, index, foreground && index == 0)
            {
                Ok(pid) => {
                    generation.workers.insert(self.new_worker(index, pid, now));
                }
                Err(err) if generation.workers.is_empty() => return Err(err),
                Err(err) => {
                    // Half a generation never serves: kill what started and
                    // let its exits be reaped as a failed generation's.
                    self.last_generation = number;
                    generation.phase = Phase::Failed;
                    generation.workers.for_each_mut(|worker| {
                        worker.state.disarm();
                    });
                    for pid in generation.pids() {
                        self.signal_group(pid, Signal::SIGKILL);
                    }
                    self.generations.push(generation);
                    return Err(err);
                }
            }
        }
        self.last_generation = number;
        let workers = &generation.workers;
        let message = match workers.first() {
            Some(only) if workers.len() == 1 => {
                format!("generation {number} started: pid {}", only.pid)
            }
            _ => format!(
                "generation {number} started: {} workers, pids {}",
                workers.len(),
                pid_list(workers.iter().map(|w| w.pid))
            ),
        };
        tracing::info!("{message}");
        self.progress(upgrade, message);
        self.generations.push(generation);
        if self.config.ready == ReadyMode::Now {
            for index in 0..self.config.workers.max(1) {
                self.mark_worker_ready(number, index, now);
            }
        }
        Ok(number)
    }

    /// A rolling upgrade's generation: every slot pending, filled by
    /// `advance_rollout` as room allows.
    fn spawn_rolling_generation(
        &mut self,
        number: u32,
        upgrade: Option<UpgradeId>,
        now: Instant,
    ) -> Result<u32, SpawnError> {
        let size = self.config.workers.max(1);
        let surge = self.config.max_surge.unwrap_or(1);
        self.generations.push(Generation {
            number,
            started: now,
            phase: Phase::Starting,
            kill_at: None,
            upgrade,
            foreground: false,
            workers: Workers::default(),
            slots: Slots::new(
                size as usize,
                &Slot {
                    pending: true,
                    ..Slot::default()
                },
            ),
            failure: None,
            hung: false,
            stop_signal_warned: false,
            drained: Default::default(),
        });
        self.last_generation = number;
        self.operation = Some(super::Operation::Rollout(number));
        let message = format!(
            "generation {number} rolling in: {}, at most {surge} beyond {size} at a time",
            super::workers_count(size)
        );
        tracing::info!("{message}");
        self.progress(upgrade, message);
        if let Err(err) = self.advance_rollout(now) {
            let nothing_started = self
                .generation(number)
                .is_some_and(|g| g.workers.is_empty());
            if nothing_started {
                self.generations.retain(|g| g.number != number);
                self.end_rollout();
                self.last_generation = number - 1;
                return Err(err);
            }
            self.fail_start(
                number,
                format!("cannot start a worker of generation {number}: {err}"),
                now,
            );
        }
        Ok(number)
    }

    pub(super) fn new_worker(&self, index: u32, pid: nix::unistd::Pid, now: Instant) -> Worker {
        let mut worker = Worker::new(index, pid, now, self.config.ready_timeout);
        worker.watchdog = self.config.watchdog;
        let probe = match &self.config.ready {
            ReadyMode::Delay(delay) => Probe::At(deadline::after(now, *delay)),
            ReadyMode::Exec(_) => Probe::At(now),
            ReadyMode::Notify | ReadyMode::Now => Probe::Idle,
        };
        worker.state =
            WorkerState::starting(deadline::after(now, self.config.ready_timeout), probe);
        worker
    }

    /// Worker `index` of generation `number` exited: update its generation.
    pub(super) fn on_worker_exit(&mut self, number: u32, index: u32, exit: Exit, now: Instant) {
        let Some(at) = self.generations.iter().position(|g| g.number == number) else {
            return;
        };
        let Some(worker) = self.generations[at].workers.remove(index) else {
            return;
        };
        if worker.state.stage() == WorkerStage::Draining
            || self.generations[at].phase == Phase::Draining
        {
            self.generations[at].drained.record(exit.status);
        }
        // Whatever the worker left behind in its group has lost its parent;
        // nothing may keep running behind sockvisor's back.
        self.signal_group(worker.pid, Signal::SIGKILL);
        if let Some(probe) = worker.state.probe_pid() {
            self.signal_group(probe, Signal::SIGKILL);
        }
        let phase = self.generations[at].phase;
        if self.stop.is_some() && phase != Phase::Ready && self.current.is_none() {
            // No generation serves: the status of the ones stopped (e.g. a
            // first generation killed before it was ready) is the answer,
            // unless a current generation's exit sets it later.
            let code = self.stopped_exit_code(exit.status);
            self.exit_status = Some(self.exit_status.map_or(code, |c| c.max(code)));
        }
        // A rolling generation whose only process so far was ready and
        // retired an old one is not gone: its slot is refilled, and its
        // pending slots are still to start.
        let rolls_on = self.rollout() == Some(number)
            && phase == Phase::Starting
            && worker.state.is_ready()
            && self.stop.is_none();
        if self.generations[at].workers.is_empty() && !rolls_on {
            let mut last_seen = self.generations.remove(at);
            self.command(super::Effect::Retire { generation: number });
            // Described as it was: with the worker that just exited.
            last_seen.workers.insert(worker.clone());
            self.on_generation_gone(&last_seen, &worker, exit.status, now);
        } else {
            let describe = self.generations[at].describe_worker(&worker);
            self.on_worker_gone(number, phase, &describe, &worker, exit.status, now);
        }
    }

    /// One worker of a generation that still has others exited.
    fn on_worker_gone(
        &mut self,
        number: u32,
        phase: Phase,
        describe: &str,
        worker: &Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        match phase {
            Phase::Starting if self.rollout() == Some(number) && worker.state.is_ready() => {
                self.replace_in_rollout(number, worker, status, now);
            }
            Phase::Starting => {
                self.record_failure(number, status);
                let reason = if worker.state.is_ready() {
                    format!(
                        "{describe} {status} after it was ready, before generation {number} was"
                    )
                } else {
                    format!("{describe} {status} before it was ready")
                };
                self.fail_start(number, reason, now);
            }
            Phase::Ready if self.stop.is_some() => {
                tracing::info!("{describe} {status}; stopped");
                if self.current == Some(number) {
                    let code = self.stopped_exit_code(status);
                    self.exit_status = Some(self.exit_status.map_or(code, |c| c.max(code)));
                }
            }
            Phase::Ready => self.after_worker_exit(number, worker, status, now),
            Phase::Draining => tracing::info!("{describe} {status}"),
            // A stop says what became of every worker, as it does for the
            // serving generation's.
            Phase::Failed if self.stop.is_some() => tracing::info!("{describe} {status}; stopped"),
            // Said once for the whole generation when its last one is gone.
            Phase::Failed => tracing::debug!("{describe} {status}"),
        }
    }

    /// A worker of a serving generation ended without being asked to:
    /// replace it in its slot, by the restart policy.
    fn after_worker_exit(
        &mut self,
        number: u32,
        worker: &Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        if worker.second {
            self.on_second_exit(number, worker, status, now);
            return;
        }
        let Some(generation) = self.generation(number) else {
            return;
        };
        let describe = generation.describe_worker(worker);
        let vacant = generation.slots.get(worker.index).is_none_or(|s| s.vacant);
        if !worker.state.is_ready() {
            let reason = format!("{describe} {status} before it was ready");
            if self.on_scale_worker_exit(number, worker.index, worker.pid, reason, now) {
                return;
            }
        } else {
            self.on_scale_worker_exit(number, worker.index, worker.pid, String::new(), now);
        }
        if worker.state.stage() == WorkerStage::Draining || vacant {
            // Retired, or a slot given up: its exit was expected.
            tracing::info!("{describe} {status}");
            return;
        }
        // A replacement stopped for not being ready failed, whatever it
        // exited with.
        let status = match (worker.state.stage(), status) {
            (WorkerStage::Stopping, ExitStatus::Code(0)) => ExitStatus::Code(1),
            (WorkerStage::Stopping, ExitStatus::Signal(s)) if s == self.config.stop_signal => {
                ExitStatus::Code(1)
            }
            (_, status) => status,
        };
        if !status.success() {
            self.record_failure(number, status);
        }
        if self.config.terminal && is_keyboard_interrupt(status) {
            tracing::info!("{describe} {status}: interrupted from the terminal; stopping");
            self.finish_with(status.as_code(), now);
            return;
        }
        if self.successor_takes_over(number, worker.index) {
            tracing::warn!("{describe} {status} while its replacement was starting");
            return;
        }
        let replace = self.config.restart.restarts_after(status);
        if !replace {
            tracing::info!(
                "{describe} {status}; not replacing it (--restart {})",
                policy_name(self.config.restart)
            );
            return;
        }
        let ran_for = now.saturating_duration_since(worker.started);
        let (first, max) = (self.config.restart_delay, self.config.restart_delay_max);
        // A rolling upgrade retires an empty slot before a live worker.
        let rollout = match self.rollout() {
            Some(new) if new != number => format!(
                ", unless a new worker of generation {new} is ready first and takes its place"
            ),
            _ => String::new(),
        };
        let Some(mut slot) = self
            .generation_mut(number)
            .and_then(|g| g.slots.get_mut(worker.index))
        else {
            return;
        };
        // Only a worker that served long enough counts as healthy; a
        // replacement that never became ready does not reset the backoff.
        if worker.state.is_ready() && ran_for >= max {
            slot.consecutive_failures = 0;
        }
        let delay = backoff(first, max, slot.consecutive_failures);
        slot.consecutive_failures += 1;
        slot.restart_at = Some(deadline::after(now, delay));
        tracing::warn!(
            "{describe} {status} after {}; replacing it in {}{rollout}",
            format_duration(ran_for),
            format_duration(delay)
        );
    }

    /// A worker of a rolling generation that was ready (and so retired an
    /// old one) exited: like any serving worker it is replaced in its slot
    /// under the restart policy, and the rollout goes on.
    fn replace_in_rollout(
        &mut self,
        number: u32,
        worker: &Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        let replace = self.config.restart.restarts_after(status);
        let policy = policy_name(self.config.restart);
        let (first, max) = (self.config.restart_delay, self.config.restart_delay_max);
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let describe = generation.describe_worker(worker);
        let Some(mut slot) = generation.slots.get_mut(worker.index) else {
            return;
        };
        if !replace {
            slot.vacant = true;
            tracing::info!("{describe} {status}; not replacing it (--restart {policy})");
            return;
        }
        let delay = backoff(first, max, slot.consecutive_failures);
        slot.consecutive_failures += 1;
        slot.pending = true;
        slot.restart_at = Some(deadline::after(now, delay));
        tracing::warn!(
            "{describe} {status} after it was ready; replacing it in {}",
            format_duration(delay)
        );
    }

    /// Starts the replacements whose backoff has passed, in the slots of
    /// serving generations.
    pub(super) fn replace_due_workers(&mut self, now: Instant) {
        if self.stop.is_some() {
            return;
        }
        let due: Vec<(u32, u32)> = self
            .generations
            .iter()
            .filter(|g| g.phase == Phase::Ready)
            .flat_map(|g| {
                g.slots
                    .due_restarts(now)
                    .into_iter()
                    .map(move |index| (g.number, index))
            })
            .collect();
        for (number, index) in due {
            self.replace_worker(number, index, now);
        }
    }

    fn replace_worker(&mut self, number: u32, index: u32, now: Instant) {
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let foreground = generation.foreground && index == 0;
        let Some(mut slot) = generation.slots.get_mut(index) else {
            return;
        };
        slot.restart_at = None;
        slot.restarts += 1;
        drop(slot);
        self.counters.restarts += 1;
        let foreground = self.config.terminal && foreground;
        match self.processes.spawn(number, index, foreground) {
            Ok(pid) => {
                let worker = self.new_worker(index, pid, now);
                tracing::info!("generation {number} worker {index} replaced: pid {pid}");
                if let Some(generation) = self.generation_mut(number) {
                    generation.workers.insert(worker);
                }
                if self.config.ready == ReadyMode::Now {
                    self.mark_worker_ready(number, index, now);
                }
            }
            Err(err) => {
                tracing::error!("cannot replace generation {number} worker {index}: {err}");
                let (first, max) = (self.config.restart_delay, self.config.restart_delay_max);
                if let Some(mut slot) = self
                    .generation_mut(number)
                    .and_then(|g| g.slots.get_mut(index))
                {
                    let delay = backoff(first, max, slot.consecutive_failures);
                    slot.consecutive_failures += 1;
                    slot.restart_at =
                        Some(deadline::after(now, delay.max(Duration::from_millis(1))));
                }
            }
        }
    }

    fn record_failure(&mut self, number: u32, status: ExitStatus) {
        if let Some(generation) = self.generation_mut(number) {
            generation.failure.get_or_insert(status);
        }
    }

    /// A generation's last worker exited: the generation is gone.
    fn on_generation_gone(
        &mut self,
        generation: &Generation,
        worker: &Worker,
        status: ExitStatus,
        now: Instant,
    ) {
        // With several workers, the first failure speaks for the
        // generation; with one, its own exit. After a requested stop only
        // how the stop went counts.
        let exited = status;
        let status = match generation.failure {
            Some(failure) if generation.size() > 1 => failure,
            _ => status,
        };
        match generation.phase {
            Phase::Starting => self.on_exit_before_ready(generation, worker, status, now),
            Phase::Failed => {
                // Why it failed was said when it did; what remains to say is
                // what happens next, in one line. A stop is what happened.
                if self.stop.is_some() {
                    tracing::info!("{} {exited}; stopped", generation.describe_worker(worker));
                } else {
                    tracing::debug!("{} {status}", generation.describe());
                }
                // A failed first start or restart, or a failed upgrade that
                // leaves nothing serving: the restart policy decides.
                if self.stop.is_none() && (generation.upgrade.is_none() || self.current.is_none()) {
                    let stopped = match (generation.failure, status) {
                        (Some(_), _) => false,
                        (None, ExitStatus::Code(0)) => true,
                        (None, ExitStatus::Signal(s)) => s == self.config.stop_signal,
                        (None, _) => false,
                    };
                    // It was stopped for not being ready: a failure,
                    // whatever it exited with.
                    let (status, what) = match generation.failure {
                        Some(failure) => (failure, failure.to_string()),
                        None if stopped => {
                            (ExitStatus::Code(1), format!("failed to start ({exited})"))
                        }
                        None => (status, status.to_string()),
                    };
                    self.after_unplanned_exit_as(generation, status, &what, now);
                }
            }
            Phase::Ready => {
                if self.current == Some(generation.number) {
                    self.current = None;
                }
                // Its upgrade was waiting for the old generation to drain:
                // reporting success now would be untrue.
                if let Some(id) = self
                    .upgrades
                    .iter()
                    .find(|u| u.new == generation.number)
                    .map(|u| u.id)
                {
                    let message = format!(
                        "{} became ready but then {status}",
                        generation.describe_worker(worker)
                    );
                    tracing::warn!("{message}");
                    self.finish_upgrade(Some(id), Err(message), now);
                }
                let others_serve = self.generations.iter().any(|g| g.phase == Phase::Ready);
                if self.current.is_none() && others_serve {
                    self.current = self
                        .generations
                        .iter()
                        .filter(|g| g.phase == Phase::Ready)
                        .map(|g| g.number)
                        .max();
                }
                let retired = generation.slots.iter().all(|s| s.vacant);
                if self.stop.is_some() {
                    tracing::info!("{} {exited}; stopped", generation.describe_worker(worker));
                    let code = self.stopped_exit_code(exited);
                    self.exit_status = Some(match self.exit_status {
                        Some(c) if generation.size() > 1 => c.max(code),
                        _ => code,
                    });
                } else if retired {
                    // A rollout retired every worker of it.
                    self.on_drained(generation, exited, now);
                } else if others_serve {
                    tracing::warn!(
                        "{} {status}; {}",
                        generation.describe_worker(worker),
                        self.describe_serving()
                    );
                } else {
                    self.after_unplanned_exit(generation, status, now);
                }
            }
            Phase::Draining => self.on_drained(generation, status, now),
        }
    }
}

/// Pids listed in a log line: the first few, then how many more, so that
/// the line stays short whatever the number of workers (`status` lists
/// them all).
const LISTED_PIDS: usize = 8;

fn pid_list(pids: impl ExactSizeIterator<Item = nix::unistd::Pid>) -> String {
    let count = pids.len();
    let shown: Vec<String> = pids.take(LISTED_PIDS).map(|p| p.to_string()).collect();
    match count.checked_sub(LISTED_PIDS) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_lists_the_first_pids_and_counts_the_rest() {
        let pids = |n: i32| (1..=n).map(nix::unistd::Pid::from_raw).collect::<Vec<_>>();
        assert_eq!(pid_list(pids(3).into_iter()), "1, 2, 3");
        assert_eq!(pid_list(pids(8).into_iter()), "1, 2, 3, 4, 5, 6, 7, 8");
        assert_eq!(
            pid_list(pids(1024).into_iter()),
            "1, 2, 3, 4, 5, 6, 7, 8 and 1016 more"
        );
    }

    #[test]
    fn worker_counts_from_one_to_the_maximum_are_accepted() {
        assert_eq!(parse_worker_count("1"), Ok(1));
        assert_eq!(parse_worker_count("1024"), Ok(MAX_WORKERS));
    }

    #[test]
    fn a_worker_count_out_of_range_names_the_value_and_the_range() {
        for text in [
            "0",
            "1025",
            "100000",
            "-1",
            "4294967297",
            "18446744073709551615",
            "9300000000000000000",
        ] {
            assert_eq!(
                parse_worker_count(text),
                Err(format!("{text} is out of range (1 to 1024)"))
            );
        }
        for text in ["", "abc", "1.5", "1e3", " 8", "\"8\"", "null"] {
            let err = parse_worker_count(text).unwrap_err();
            assert!(err.contains(&format!("'{text}'")), "{err}");
            assert!(err.contains("1 to 1024"), "{err}");
        }
    }
}
