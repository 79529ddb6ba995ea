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

/// The soonest a missed watchdog is looked at again: a worker that set a
/// tiny `WATCHDOG_USEC=` would otherwise keep the loop busy, and the log
/// full, while its replacement starts.
const AGAIN_AFTER_MISS: Duration = Duration::from_secs(1);

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
        if ping {
            worker.watchdog_missed = false;
        }
        if trigger {
            drop(worker);
            let phase = self.generation(number).map(|g| g.phase);
            let cause = "it sent WATCHDOG=trigger".to_string();
            self.on_watchdog_missed(number, phase, index, cause, now);
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
            let timeout = self
                .generation(number)
                .and_then(|g| g.worker(index))
                .and_then(|w| w.watchdog)
                .unwrap_or_default();
            let cause = format!("no WATCHDOG=1 within {}", format_duration(timeout));
            self.on_watchdog_missed(number, Some(phase), index, cause, now);
        }
    }

    /// Worker `index` of generation `number` (in `phase`) missed its
    /// watchdog, for `cause`.
    fn on_watchdog_missed(
        &mut self,
        number: u32,
        phase: Option<Phase>,
        index: u32,
        cause: String,
        now: Instant,
    ) {
        match phase {
            Some(Phase::Starting) => {
                self.on_watchdog_miss_while_starting(number, index, cause, now)
            }
            Some(Phase::Ready) => self.on_watchdog_miss(number, index, cause, now),
            // Being stopped already: the watchdog has nothing to add,
            // and left armed it would keep the loop awake.
            Some(Phase::Failed | Phase::Draining) => {
                if let Some(mut worker) = self
                    .generation_mut(number)
                    .and_then(|g| g.worker_mut(index))
                {
                    worker.state.set_watchdog(None);
                }
            }
            None => {}
        }
    }

    /// A worker that was ready hangs before its generation serves (its
    /// siblings are still starting, or it rolls in). Left armed, its
    /// deadline would stay in the past and wake the loop at once, again and
    /// again. A rolling worker already serves: it is killed (a hung process
    /// will not drain) and its slot is filled again, as after a crash. Any
    /// other starting generation cannot become healthy: its start fails.
    fn on_watchdog_miss_while_starting(
        &mut self,
        number: u32,
        index: u32,
        cause: String,
        now: Instant,
    ) {
        let rolling = self.rollout() == Some(number);
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let Some(mut worker) = generation.worker_mut(index) else {
            return;
        };
        worker.state.set_watchdog(None);
        let pid = worker.pid;
        drop(worker);
        let reason = format!("generation {number} worker {index} (pid {pid}) is hung ({cause})");
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

    fn on_watchdog_miss(&mut self, number: u32, index: u32, cause: String, now: Instant) {
        let stopping = self.stop.is_some();
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        generation.hung = true;
        let (worker, said_before) = {
            let Some(mut worker) = generation.worker_mut(index) else {
                return;
            };
            let said_before = std::mem::replace(&mut worker.watchdog_missed, true);
            // Armed again, so that a miss after a failed replacement is
            // noticed; not sooner than a second from now, whatever the
            // worker's own timeout.
            let by = worker
                .watchdog
                .map(|t| deadline::after(now, t.max(AGAIN_AFTER_MISS)));
            worker.state.set_watchdog(by);
            (Worker::clone(&worker), said_before)
        };
        let describe = generation.describe_worker(&worker);
        if stopping {
            return;
        }
        if self.is_starting() {
            // Said once: while the replacement starts, the next misses
            // only wait for it.
            if said_before {
                tracing::debug!("{describe} is still hung ({cause}); its replacement is starting");
            } else {
                tracing::warn!(
                    "{describe} is hung ({cause}); the generation that is starting will replace it"
                );
            }
            return;
        }
        tracing::warn!("{describe} is hung ({cause}); replacing generation {number}");
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
