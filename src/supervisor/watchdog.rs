//! The watchdog, as systemd's `WatchdogSec=` for each worker: once ready, a
//! worker must send `WATCHDOG=1` at least every `--watchdog` (or the
//! timeout it set itself with `WATCHDOG_USEC=`; 0 turns it off).
//! `WATCHDOG=trigger` counts as a miss at once.
//!
//! A miss means the process is hung. Its generation is replaced without
//! refusing a connection: a new generation starts (the same way as an
//! upgrade, all at once or rolling), and once it is ready the hung
//! generation gets the stop signal with a short grace (`HUNG_GRACE`, or the
//! drain timeout if shorter) before its process groups are killed: a hung
//! process will not drain. One replacement at a time: while a generation is
//! starting, further misses only wait for it. With several workers the
//! whole generation is replaced, not only the hung worker's slot.

use std::time::{Duration, Instant};

use super::generation::{Phase, Worker, WorkerTimer};
use super::{Spawner, Supervisor};
use crate::deadline;
use crate::duration::format_duration;

/// How long a hung generation may take to exit after the stop signal.
pub const HUNG_GRACE: Duration = Duration::from_secs(3);

impl<P: Spawner> Supervisor<P> {
    /// A worker just became ready: its watchdog starts.
    pub(super) fn arm_watchdog(&mut self, number: u32, index: u32, now: Instant) {
        if let Some(mut worker) = self
            .generation_mut(number)
            .and_then(|g| g.worker_mut(index))
        {
            let by = worker.watchdog.map(|t| deadline::after(now, t));
            worker.state.set_watchdog(by);
        }
    }

    /// `WATCHDOG=1`, `WATCHDOG=trigger` or `WATCHDOG_USEC=` from a worker.
    pub(super) fn on_watchdog_message(
        &mut self,
        number: u32,
        index: u32,
        ping: bool,
        trigger: bool,
        timeout: Option<Duration>,
        now: Instant,
    ) {
        let Some(mut worker) = self
            .generation_mut(number)
            .and_then(|g| g.worker_mut(index))
        else {
            return;
        };
        if let Some(timeout) = timeout {
            worker.watchdog = (!timeout.is_zero()).then_some(timeout);
        }
        if !worker.state.is_ready() {
            return;
        }
        if ping || timeout.is_some() {
            let by = worker.watchdog.map(|t| deadline::after(now, t));
            worker.state.set_watchdog(by);
        }
        if trigger {
            worker.state.set_watchdog(Some(now));
            drop(worker);
            self.check_watchdogs(now);
        }
    }

    /// Acts on every watchdog that has run out by `now`.
    pub(super) fn check_watchdogs(&mut self, now: Instant) {
        let missed: Vec<(u32, Phase, u32)> = self
            .generations
            .iter()
            .flat_map(|g| {
                g.workers
                    .due(now, &[WorkerTimer::Watchdog])
                    .into_iter()
                    .map(move |index| (g.number, g.phase, index))
            })
            .collect();
        for (number, phase, index) in missed {
            match phase {
                Phase::Starting => self.on_watchdog_miss_while_starting(number, index, now),
                Phase::Ready => self.on_watchdog_miss(number, index, now),
                // Being stopped already: the watchdog has nothing to add,
                // and left armed it would keep the loop awake.
                Phase::Failed | Phase::Draining => {
                    if let Some(mut worker) = self
                        .generation_mut(number)
                        .and_then(|g| g.worker_mut(index))
                    {
                        worker.state.set_watchdog(None);
                    }
                }
            }
        }
    }

    /// A worker that was ready hangs before its generation serves (its
    /// siblings are still starting, or it rolls in). Left armed, its
    /// deadline would stay in the past and wake the loop at once, again and
    /// again. A rolling worker already serves: it is killed (a hung process
    /// will not drain) and its slot is filled again, as after a crash. Any
    /// other starting generation cannot become healthy: its start fails.
    fn on_watchdog_miss_while_starting(&mut self, number: u32, index: u32, now: Instant) {
        let rolling = self.rollout() == Some(number);
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let Some(mut worker) = generation.worker_mut(index) else {
            return;
        };
        worker.state.set_watchdog(None);
        let (pid, timeout) = (worker.pid, worker.watchdog.unwrap_or_default());
        drop(worker);
        let reason = format!(
            "generation {number} worker {index} (pid {pid}) is hung (no WATCHDOG=1 within {})",
            format_duration(timeout)
        );
        if rolling {
            tracing::warn!("{reason}; killing it, its slot is filled again");
            self.signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        } else {
            self.fail_start(
                number,
                format!("{reason} before its generation was ready"),
                now,
            );
        }
    }

    fn on_watchdog_miss(&mut self, number: u32, index: u32, now: Instant) {
        let stopping = self.stop.is_some();
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.hung = true;
        let (worker, timeout) = {
            let Some(mut worker) = generation.worker_mut(index) else {
                return;
            };
            // Armed again, so that a miss after a failed replacement is noticed.
            let by = worker.watchdog.map(|t| deadline::after(now, t));
            worker.state.set_watchdog(by);
            let timeout = worker.watchdog.unwrap_or_default();
            (Worker::clone(&worker), timeout)
        };
        let describe = generation.describe_worker(&worker);
        if stopping {
            return;
        }
        if self.is_starting() {
            tracing::warn!(
                "{describe} is hung (no WATCHDOG=1 within {}); the generation that is starting will replace it",
                format_duration(timeout)
            );
            return;
        }
        tracing::warn!(
            "{describe} is hung (no WATCHDOG=1 within {}); replacing generation {number}",
            format_duration(timeout)
        );
        match self.request_upgrade(now) {
            Ok(_) => self.watchdog_restarts += 1,
            Err(why) => tracing::error!("cannot replace hung generation {number}: {why}"),
        }
    }

    /// Replacements started because of a missed watchdog.
    pub fn watchdog_restarts(&self) -> u32 {
        self.watchdog_restarts
    }
}
