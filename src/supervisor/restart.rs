//! The restart policy for a generation that ended on its own (every worker
//! gone), the exponential backoff shared with per-slot replacements, and
//! the keyboard-interrupt rule on a terminal.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::generation::{Generation, Phase};
use super::{Spawner, Supervisor, policy_name};
use crate::deadline;
use crate::duration::format_duration;
use crate::reaper::ExitStatus;

/// The delay before a restart after `failures` failures in a row: the first
/// delay, doubled each time, capped at the maximum.
pub(super) fn backoff(first: Duration, max: Duration, failures: u32) -> Duration {
    first.saturating_mul(1u32 << failures.min(31)).min(max)
}

/// The signals the keyboard sends to end a job (Ctrl-C, Ctrl-\).
pub const KEYBOARD_INTERRUPTS: [Signal; 2] = [Signal::SIGINT, Signal::SIGQUIT];

/// A death by one of [`KEYBOARD_INTERRUPTS`]: with a terminal, the person
/// at it asked for the end, as a shell takes it.
pub(super) fn is_keyboard_interrupt(status: ExitStatus) -> bool {
    matches!(status, ExitStatus::Signal(signal) if KEYBOARD_INTERRUPTS.contains(&signal))
}

impl<P: Spawner> Supervisor<P> {
    /// The current generation (or a first start) ended without being asked
    /// to: restart or finish, by the restart policy.
    pub(super) fn after_unplanned_exit(
        &mut self,
        generation: &Generation,
        status: ExitStatus,
        now: Instant,
    ) {
        self.after_unplanned_exit_as(generation, status, &status.to_string(), now);
    }

    /// The same, with `what` saying what happened to the generation (its
    /// status, or why sockvisor stopped it).
    pub(super) fn after_unplanned_exit_as(
        &mut self,
        generation: &Generation,
        status: ExitStatus,
        what: &str,
        now: Instant,
    ) {
        if self.generations.iter().any(|g| g.phase == Phase::Starting) {
            tracing::warn!(
                "{} {what}; the generation that is starting will take over",
                generation.describe()
            );
            return;
        }
        if self.config.terminal && is_keyboard_interrupt(status) {
            tracing::info!(
                "{} {what}: interrupted from the terminal; stopping",
                generation.describe()
            );
            self.finish_with(status.as_code(), now);
            return;
        }
        let restart = self.config.restart.restarts_after(status);
        if !restart {
            tracing::info!(
                "{} {what}; not restarting (--restart {})",
                generation.describe(),
                policy_name(self.config.restart)
            );
            self.finish_with(status.as_code(), now);
            return;
        }
        let ran_for = now.saturating_duration_since(generation.started);
        self.schedule_restart(ran_for, now);
        let delay = self
            .restart_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        tracing::warn!(
            "{} {what} after {}; restarting in {}",
            generation.describe(),
            format_duration(ran_for),
            format_duration(delay)
        );
    }

    /// Exponential backoff: the delay doubles with each consecutive failure
    /// up to the maximum; a generation that ran at least the maximum delay
    /// counts as healthy and resets it.
    pub(super) fn schedule_restart(&mut self, ran_for: Duration, now: Instant) {
        if ran_for >= self.config.restart_delay_max {
            self.consecutive_failures = 0;
        }
        let delay = backoff(
            self.config.restart_delay,
            self.config.restart_delay_max,
            self.consecutive_failures,
        );
        self.consecutive_failures += 1;
        self.restart_at = Some(deadline::after(now, delay));
    }
}
