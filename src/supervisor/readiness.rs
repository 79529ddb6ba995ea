//! Readiness, per worker: notify messages, einhorn's ack, `delay=` and
//! `exec=` probes, and readiness deadlines. A generation becomes ready (and
//! current) when every one of its workers is; a replacement worker counts
//! once it is ready itself.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::generation::{Phase, Probe, ReadyMode, Worker, WorkerStage, WorkerState};
use super::{PROBE_INTERVAL, Spawner, Supervisor};
use crate::deadline;
use crate::duration::format_duration;
use crate::notify::NotifyMessage;

/// The most characters of a worker's `STATUS=` that are kept and shown.
/// `sockvisor status` lists every worker, up to 1024 of them: with the
/// text bounded, so is the reply (under the control socket's 1 MiB of
/// queued output even if every character needs a JSON escape).
pub const MAX_STATUS_CHARS: usize = 128;

/// `STATUS=` as it is kept: at most [`MAX_STATUS_CHARS`] characters, a
/// longer text cut with an ellipsis.
fn kept_status(text: &str) -> String {
    if text.chars().count() <= MAX_STATUS_CHARS {
        return text.to_string();
    }
    let kept: String = text.chars().take(MAX_STATUS_CHARS - 1).collect();
    format!("{kept}…")
}

impl<P: Spawner> Supervisor<P> {
    /// Handles one sd_notify message from worker `index` of generation
    /// `number` (the sender was attributed to it).
    pub fn on_notify(&mut self, number: u32, index: u32, message: &NotifyMessage, now: Instant) {
        self.apply_notify(number, index, message, now);
        #[cfg(test)]
        self.check_indexes();
    }

    fn apply_notify(&mut self, number: u32, index: u32, message: &NotifyMessage, now: Instant) {
        if self
            .generation(number)
            .and_then(|g| g.worker(index))
            .is_none()
        {
            return;
        }
        if let Some(text) = &message.status
            && let Some(mut worker) = self
                .generation_mut(number)
                .and_then(|g| g.worker_mut(index))
        {
            worker.status_text = Some(kept_status(text));
        }
        if message.watchdog_ping || message.watchdog_trigger || message.watchdog_timeout.is_some() {
            self.on_watchdog_message(
                number,
                index,
                message.watchdog_ping,
                message.watchdog_trigger,
                message.watchdog_timeout,
                now,
            );
        }
        // Named only when there is something to log: a watchdog ping, the
        // most frequent message, needs no text.
        let describe = || self.describe_worker(number, index).unwrap_or_default();
        if let Some(errno) = message.errno {
            tracing::warn!("{} reports ERRNO={errno}", describe());
        }
        if message.stopping || message.reloading {
            tracing::debug!(
                "{} reports{}{}",
                describe(),
                if message.stopping { " STOPPING=1" } else { "" },
                if message.reloading {
                    " RELOADING=1"
                } else {
                    ""
                }
            );
        }
        let Some(mut worker) = self
            .generation_mut(number)
            .and_then(|g| g.worker_mut(index))
        else {
            return;
        };
        if let (
            Some(extend),
            WorkerState::Starting {
                ready_by: Some(current),
                probe,
            },
        ) = (message.extend_timeout, worker.state)
        {
            worker.state = WorkerState::Starting {
                ready_by: Some(current.max(deadline::after(now, extend))),
                probe,
            };
        }
        if !worker.state.is_starting() {
            return;
        }
        drop(worker);
        if message.ready && self.config.ready == ReadyMode::Notify {
            self.mark_worker_ready(number, index, now);
        }
    }

    /// einhorn's `worker:ack` from a process of worker `index` of generation
    /// `number`: counts like READY=1 in `--ready notify` mode.
    pub fn on_worker_ack(&mut self, number: u32, index: u32, now: Instant) -> Result<(), String> {
        let Some(worker) = self.generation(number).and_then(|g| g.worker(index)) else {
            return Err(format!("generation {number} worker {index} is gone"));
        };
        if !worker.state.is_starting() {
            return Ok(());
        }
        if self.config.ready != ReadyMode::Notify {
            return Err("worker:ack counts only with --ready notify".into());
        }
        self.mark_worker_ready(number, index, now);
        Ok(())
    }

    /// The readiness probe of worker `index` of generation `number` exited
    /// with `status`: 0 makes the worker ready, anything else runs it again
    /// after [`PROBE_INTERVAL`].
    pub(super) fn on_probe_exit(
        &mut self,
        number: u32,
        index: u32,
        status: crate::reaper::ExitStatus,
        now: Instant,
    ) {
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let phase = generation.phase;
        let describe = generation.describe();
        let Some(mut worker) = generation.worker_mut(index) else {
            return;
        };
        if !worker.state.is_starting() {
            return;
        }
        worker.state.set_probe(Probe::Idle);
        if matches!(phase, Phase::Draining | Phase::Failed) {
            return;
        }
        if status.success() {
            drop(worker);
            self.mark_worker_ready(number, index, now);
        } else {
            tracing::debug!("{describe} readiness probe {}", status);
            worker
                .state
                .set_probe(Probe::At(deadline::after(now, PROBE_INTERVAL)));
        }
    }

    /// A worker's readiness deadline or probe time has come, or (stopping)
    /// its time to exit is up.
    pub(super) fn on_worker_deadline(&mut self, number: u32, index: u32, now: Instant) {
        let ready_timeout = self.config.ready_timeout;
        let stop_timeout = self.config.stop_timeout;
        let ready_mode = self.config.ready.clone();
        let Some((phase, worker, describe)) = self.worker_view(number, index) else {
            return;
        };
        let deadline_passed = worker.state.deadline().is_some_and(|d| d <= now);
        match (worker.state.stage(), phase) {
            (WorkerStage::Starting, Phase::Starting) if deadline_passed => {
                let reason = format!(
                    "{describe} was not ready within {}",
                    format_duration(ready_timeout)
                );
                self.fail_start(number, reason, now);
                self.hint_at_ready_mode(&describe);
            }
            (WorkerStage::Starting, _) if deadline_passed => {
                // A replacement in a serving generation: stop it; its exit
                // counts as the slot's failure.
                tracing::warn!(
                    "{describe} was not ready within {}; stopping it",
                    format_duration(ready_timeout)
                );
                self.stop_worker(number, index, now);
                self.hint_at_ready_mode(&describe);
            }
            (WorkerStage::Starting, _) => {
                let Some(mut worker) = self
                    .generation_mut(number)
                    .and_then(|g| g.worker_mut(index))
                else {
                    return;
                };
                worker.state.set_probe(Probe::Idle);
                let pid = worker.pid;
                drop(worker);
                match ready_mode {
                    ReadyMode::Delay(_) => self.mark_worker_ready(number, index, now),
                    ReadyMode::Exec(command) => {
                        match self.processes.spawn_probe(&command, number, pid) {
                            Ok(probe) => {
                                if let Some(mut worker) = self
                                    .generation_mut(number)
                                    .and_then(|g| g.worker_mut(index))
                                {
                                    worker.state.set_probe(Probe::Running(probe));
                                }
                            }
                            Err(err) => self.fail_worker_start(
                                number,
                                index,
                                format!("readiness probe cannot run: {err}"),
                                now,
                            ),
                        }
                    }
                    ReadyMode::Notify | ReadyMode::Now => {}
                }
            }
            (stage @ (WorkerStage::Stopping | WorkerStage::Draining), _) if deadline_passed => {
                // A retired worker had the drain timeout, a stopped one the
                // stop timeout.
                let limit = if stage == WorkerStage::Draining {
                    self.config.drain_timeout
                } else {
                    stop_timeout
                };
                tracing::warn!(
                    "{describe} did not exit within {}; killing its process group",
                    format_duration(limit)
                );
                if let Some(mut worker) = self
                    .generation_mut(number)
                    .and_then(|g| g.worker_mut(index))
                {
                    worker.state.disarm();
                }
                self.signal_group(worker.pid, Signal::SIGKILL);
            }
            _ => {}
        }
    }

    /// The first time a worker misses its ready timeout in `--ready notify`
    /// mode (the default with sockets), says once how to run a command
    /// that never sends READY=1. Without it, a shell run in place of the
    /// server (`docker run -it IMAGE sh` with `--listen` in the
    /// ENTRYPOINT) is stopped at every ready timeout and started again,
    /// and only the failure says so.
    fn hint_at_ready_mode(&mut self, describe: &str) {
        if self.ready_hint_logged || self.config.ready != ReadyMode::Notify {
            return;
        }
        self.ready_hint_logged = true;
        tracing::warn!(
            "{describe} did not send READY=1 within {}; if this command does not speak \
             sd_notify, pass --ready now or --ready delay=DURATION (for a shell in a \
             container: docker run -it --entrypoint sockvisor IMAGE run -- sh)",
            format_duration(self.config.ready_timeout)
        );
    }

    /// A worker cannot become ready: in a starting generation that fails
    /// the generation; a replacement is stopped.
    fn fail_worker_start(&mut self, number: u32, index: u32, reason: String, now: Instant) {
        let phase = self.generation(number).map(|g| g.phase);
        if phase == Some(Phase::Starting) {
            self.fail_start(number, reason, now);
            return;
        }
        tracing::warn!("generation {number} worker {index}: {reason}");
        self.stop_worker(number, index, now);
    }

    /// Asks worker `key` of generation `number` to stop on its own (it is
    /// not ready in time, or no longer wanted), its process group to be
    /// killed at `--stop-timeout`; a readiness probe of it is killed.
    pub(super) fn stop_worker(&mut self, number: u32, key: u32, now: Instant) {
        let (stop_timeout, stop_signal) = (self.config.stop_timeout, self.config.stop_signal);
        let Some(mut worker) = self.generation_mut(number).and_then(|g| g.worker_mut(key)) else {
            return;
        };
        let probe = worker.state.stop(deadline::after(now, stop_timeout));
        let pid = worker.pid;
        drop(worker);
        if let Some(probe) = probe {
            self.signal_group(probe, Signal::SIGKILL);
        }
        self.ask_to_stop(pid, stop_signal);
    }

    /// Worker `index` is ready. Its generation becomes ready once all are.
    pub(super) fn mark_worker_ready(&mut self, number: u32, index: u32, now: Instant) {
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let phase = generation.phase;
        if matches!(phase, Phase::Failed | Phase::Draining) {
            // Too late: the generation is being stopped. A READY=1 now
            // must not make its worker look like it serves.
            tracing::debug!(
                "READY=1 from generation {number} worker {index} ignored: it is being stopped"
            );
            return;
        }
        let (worker, probe) = {
            let Some(mut worker) = generation.worker_mut(index) else {
                return;
            };
            let probe = worker.state.probe_pid();
            worker.state = WorkerState::ready(None, None);
            (Worker::clone(&worker), probe)
        };
        if worker.second && phase == Phase::Ready {
            let waited = format_duration(now.saturating_duration_since(worker.started));
            tracing::info!(
                "{} is ready after {waited}",
                generation.describe_worker(&worker)
            );
            if let Some(probe) = probe {
                self.signal_group(probe, Signal::SIGKILL);
            }
            self.promote_successor(number, worker.index, now);
            return;
        }
        let all_ready = generation.all_ready();
        let describe = generation.describe_worker(&worker);
        let ready_count = generation.serving_count();
        let size = generation.size();
        if let Some(probe) = probe {
            self.signal_group(probe, Signal::SIGKILL);
        }
        self.arm_watchdog(number, index, now);
        self.arm_recycle(number, index);
        let waited = format_duration(now.saturating_duration_since(worker.started));
        if phase == Phase::Starting && self.rollout() == Some(number) {
            let message = format!("{describe} is ready after {waited} ({ready_count} of {size})");
            tracing::info!("{message}");
            let upgrade = self.generation(number).and_then(|g| g.upgrade);
            self.progress(upgrade, message);
            self.retire_one_old_worker(number, now);
        }
        match phase {
            Phase::Starting if all_ready => self.mark_ready(number, now),
            Phase::Starting => {
                tracing::debug!("{describe} is ready after {waited} ({ready_count} of {size})")
            }
            Phase::Ready => {
                tracing::info!("{describe} is ready after {waited}");
                let upgrade = self.scale().map(|s| s.id);
                self.progress(upgrade, format!("{describe} is ready after {waited}"));
                self.on_scale_worker_ready(number, index, now);
            }
            Phase::Draining | Phase::Failed => {}
        }
    }

    /// The generation is ready: it becomes current, and every other
    /// serving generation (the one it replaces; after a rollout that
    /// stopped part-way, all of them) starts draining.
    fn mark_ready(&mut self, number: u32, now: Instant) {
        let terminal = self.config.terminal;
        if self.rollout() == Some(number) {
            self.end_rollout();
        }
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.phase = Phase::Ready;
        generation.kill_at = None;
        if terminal && !generation.foreground {
            generation.foreground = true;
            if let Some(first) = generation.worker(0).map(|w| w.pid) {
                self.command(super::Effect::HandTerminal { group: first });
            }
        }
        let Some(generation) = self.generation(number).cloned() else {
            return;
        };
        let waited = format_duration(now.saturating_duration_since(generation.started));
        let message = format!("{} is ready after {waited}", generation.describe());
        tracing::info!("{message}");
        self.progress(generation.upgrade, message);
        self.current = Some(number);
        let replaced: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.number != number && g.phase == Phase::Ready)
            .map(|g| g.number)
            .collect();
        let mut draining = Vec::new();
        for old in replaced {
            let Some((old, asked)) = self.start_drain(old, now) else {
                continue;
            };
            // Workers a rollout retired were announced one by one.
            if asked > 0 {
                let message = format!(
                    "{} sent {}; draining for up to {}",
                    old.describe(),
                    self.config.stop_signal.as_str(),
                    format_duration(self.config.drain_timeout)
                );
                tracing::info!("{message}");
                self.progress(generation.upgrade, message);
            }
            draining.push(old.number);
        }
        if draining.is_empty() {
            self.finish_upgrade(
                generation.upgrade,
                Ok(format!("generation {number} is serving")),
                now,
            );
        } else if let Some(upgrade) = self.upgrade_mut(generation.upgrade) {
            upgrade.draining = draining;
        }
    }
}
