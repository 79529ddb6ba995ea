//! Stopping: a stop request stops every worker of every generation
//! (starting, current and draining), escalates to `SIGKILL` at the stop
//! timeout or on a second request, and decides sockvisor's exit status.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::generation::Phase;
use super::{Spawner, Stop, Supervisor};
use crate::deadline;
use crate::duration::format_duration;
use crate::reaper::ExitStatus;

impl<P: Spawner> Supervisor<P> {
    /// A stop request. The first asks every generation to stop gracefully;
    /// a second one kills at once.
    pub fn on_stop_request(&mut self, reason: &str, now: Instant) {
        if self.finished.is_some() {
            return;
        }
        if self.stop.is_some() {
            tracing::warn!("{reason} again: killing every generation now");
            self.kill_all();
            return;
        }
        tracing::info!(
            "{reason}: sending {} to every generation, waiting up to {}",
            self.config.stop_signal.as_str(),
            format_duration(self.config.stop_timeout)
        );
        self.begin_stop(now);
        #[cfg(test)]
        self.check_indexes();
    }

    /// A stop asked for on the control socket. Unlike a second signal, a
    /// second call does not cut the stop short: it is a client that gave up
    /// waiting (`stop --timeout`) and asks again, and killing every worker
    /// would cut the requests they are draining.
    pub fn on_stop_call(&mut self, reason: &str, now: Instant) {
        if self.finished.is_some() {
            return;
        }
        if self.stop.is_some() {
            tracing::info!(
                "{reason} again: the stop under way goes on (a second SIGTERM or SIGINT to sockvisor kills every generation at once)"
            );
            return;
        }
        self.on_stop_request(reason, now);
    }

    /// True once a stop has been requested.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_some()
    }

    pub(super) fn on_stop_deadline(&mut self, now: Instant) {
        if let Some(Stop {
            deadline: Some(deadline),
        }) = self.stop
            && deadline <= now
        {
            tracing::warn!(
                "not every generation stopped within {}; killing what is left",
                format_duration(self.config.stop_timeout)
            );
            self.kill_all();
        }
    }

    /// Ends supervision with `code`, after stopping whatever still runs.
    pub(super) fn finish_with(&mut self, code: i32, now: Instant) {
        self.exit_status = Some(code);
        if self.generations.is_empty() {
            self.finished = Some(code);
        } else {
            self.begin_stop(now);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        self.restart_at = None;
        self.end_rollout();
        self.stop = Some(Stop {
            deadline: Some(deadline::after(now, self.config.stop_timeout)),
        });
        let mut abandoned = Vec::new();
        let numbers: Vec<u32> = self.generations.iter().map(|g| g.number).collect();
        for number in numbers {
            let Some(generation) = self.generation_mut(number) else {
                continue;
            };
            match generation.phase {
                // Draining ones were already asked.
                Phase::Draining => continue,
                Phase::Starting => {
                    generation.phase = Phase::Failed;
                    abandoned.push(generation.upgrade);
                }
                Phase::Ready | Phase::Failed => {}
            }
            generation.kill_at = None;
            // A replacement already asked to stop is not asked again.
            let to_ask: Vec<_> = generation
                .workers
                .iter()
                .filter(|w| !w.state.is_leaving())
                .map(|w| w.pid)
                .collect();
            self.stop_workers(number);
            for pid in to_ask {
                self.ask_to_stop(pid, self.config.stop_signal);
            }
        }
        if let Some(scale) = self.take_scale() {
            self.finish_upgrade_notice(
                scale.id,
                Err("sockvisor is stopping; the scale was abandoned".into()),
                now,
            );
        }
        for upgrade in abandoned {
            self.finish_upgrade(
                upgrade,
                Err("sockvisor is stopping; the upgrade was abandoned".into()),
                now,
            );
        }
        self.finish_if_stopped();
    }

    fn kill_all(&mut self) {
        if let Some(stop) = &mut self.stop {
            stop.deadline = None;
        }
        let mut groups = Vec::new();
        for generation in &mut self.generations {
            generation.kill_at = None;
            generation.workers.for_each_mut(|worker| {
                groups.extend(worker.state.disarm());
                groups.push(worker.pid);
            });
        }
        for group in groups {
            self.signal_group(group, Signal::SIGKILL);
        }
    }

    pub(super) fn finish_if_stopped(&mut self) {
        if self.stop.is_none() {
            return;
        }
        // Once stopping, a generation without a process is gone: no slot
        // of it will be filled (a rolling worker still waiting for room, a
        // replacement waiting for its backoff), and no exit will come to
        // end it.
        let empty: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.workers.is_empty())
            .map(|g| g.number)
            .collect();
        for number in empty {
            self.generations.retain(|g| g.number != number);
            self.command(super::Effect::Retire { generation: number });
        }
        if self.generations.is_empty() {
            self.finished = Some(self.exit_status.unwrap_or(0));
        }
    }

    /// Exit status after a requested stop: a worker that exited cleanly or
    /// died of the stop signal itself did what was asked, so 0; otherwise
    /// its status (137 when it had to be killed).
    pub(super) fn stopped_exit_code(&self, status: ExitStatus) -> i32 {
        match status {
            ExitStatus::Signal(signal) if signal == self.config.stop_signal => 0,
            status => status.as_code(),
        }
    }
}
