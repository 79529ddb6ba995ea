//! The supervision state machine: generations, readiness, upgrade, rollback,
//! drain, restart policy, shutdown, and sockvisor's exit status.
//!
//! It owns decisions only. It performs no system calls itself: processes are
//! started and signalled through [`ProcessControl`], time comes in as an
//! argument, exits come from the reaper and notify messages from the notify
//! sockets. Every rule here is tested with a fake clock and fake processes.
//!
//! Rules that users rely on:
//! - at most one generation is `starting` at a time; a second upgrade request
//!   meanwhile is refused with the reason;
//! - the old generation is asked to stop only after the new one is ready;
//!   a new generation that exits or is not ready in time is stopped and the
//!   old one keeps serving;
//! - an upgrade may start while older generations still drain;
//! - a stop stops every generation: starting, current and draining.

mod generation;
mod status;
mod upgrade;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use generation::{Generation, Phase, ReadyMode};
pub use status::{GenerationStatus, StatusSnapshot, UpgradeStatus};
pub use upgrade::{Notice, Outcome, Upgrade, UpgradeId, UpgradeRejection};

use crate::duration::format_duration;
use crate::notify::NotifyMessage;
use crate::reaper::{Exit, ExitStatus};
use crate::spawn::SpawnError;

/// Pause between two runs of an `exec=` readiness probe that failed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What sockvisor does when the current generation exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Exit with the child's status.
    Never,
    /// Restart after a non-zero exit or a death by signal; exit 0 after a
    /// clean exit.
    OnFailure,
    /// Restart whatever the status.
    Always,
}

/// The knobs of supervision, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub restart: RestartPolicy,
    /// First restart delay; doubled after each consecutive failure.
    pub restart_delay: Duration,
    /// Longest restart delay. A child that ran at least this long resets
    /// the backoff.
    pub restart_delay_max: Duration,
    pub stop_signal: Signal,
    /// How long a stop of sockvisor may take before `SIGKILL`.
    pub stop_timeout: Duration,
    /// How long a replaced generation may drain before `SIGKILL`.
    pub drain_timeout: Duration,
    pub ready: ReadyMode,
    pub ready_timeout: Duration,
    /// sockvisor runs in the foreground of a terminal: the serving
    /// generation is its foreground process group, and a generation killed
    /// by the keyboard's SIGINT or SIGQUIT ends sockvisor instead of being
    /// restarted.
    pub terminal: bool,
}

/// The side effects the supervisor asks for.
pub trait ProcessControl {
    /// Starts generation `generation` and returns its pid (also its process
    /// group). With `foreground`, the group takes the terminal before the
    /// command runs.
    fn spawn(&mut self, generation: u32, foreground: bool) -> Result<Pid, SpawnError>;
    /// Starts one run of the `exec=` readiness probe for a generation.
    fn spawn_probe(
        &mut self,
        command: &str,
        generation: u32,
        target: Pid,
    ) -> Result<Pid, SpawnError>;
    /// Sends `signal` to one process; one already gone is not an error.
    fn signal(&mut self, pid: Pid, signal: Signal);
    /// Sends `signal` to every process of a process group.
    fn signal_group(&mut self, pgid: Pid, signal: Signal);
    /// Makes `group` the terminal's foreground process group.
    fn hand_terminal(&mut self, group: Pid);
    /// The generation is gone: release what was set up for it.
    fn retire(&mut self, generation: u32);
}

/// Sends the stop signal, then `SIGCONT` to the process group, as systemd
/// does: a stopped process (SIGSTOP, Ctrl-Z) only acts on the stop signal
/// once continued, and would otherwise wait out the whole timeout.
fn ask_to_stop<P: ProcessControl>(processes: &mut P, pid: Pid, signal: Signal) {
    processes.signal(pid, signal);
    if signal != Signal::SIGKILL {
        processes.signal_group(pid, Signal::SIGCONT);
    }
}

/// A requested stop in progress.
#[derive(Debug, Clone, Copy)]
struct Stop {
    /// When every remaining process group gets `SIGKILL`; `None` once done.
    deadline: Option<Instant>,
}

pub struct Supervisor<P: ProcessControl> {
    config: Config,
    processes: P,
    /// Every generation whose process is alive.
    generations: Vec<Generation>,
    /// The number of the ready generation that serves.
    current: Option<u32>,
    last_generation: u32,
    restart_at: Option<Instant>,
    consecutive_failures: u32,
    stop: Option<Stop>,
    /// Exit status to use once every generation is gone.
    exit_status: Option<i32>,
    finished: Option<i32>,
    upgrades: Vec<Upgrade>,
    last_upgrade_id: UpgradeId,
    last_outcome: Option<Outcome>,
    notices: Vec<Notice>,
}

impl<P: ProcessControl> Supervisor<P> {
    pub fn new(config: Config, processes: P) -> Supervisor<P> {
        Supervisor {
            config,
            processes,
            generations: Vec::new(),
            current: None,
            last_generation: 0,
            restart_at: None,
            consecutive_failures: 0,
            stop: None,
            exit_status: None,
            finished: None,
            upgrades: Vec::new(),
            last_upgrade_id: 0,
            last_outcome: None,
            notices: Vec::new(),
        }
    }

    /// Starts the first generation. Failure here is fatal for sockvisor.
    pub fn start(&mut self, now: Instant) -> Result<(), SpawnError> {
        self.spawn_generation(None, now).map(|_| ())
    }

    /// sockvisor's exit status, once supervision is over.
    pub fn exit_code(&self) -> Option<i32> {
        self.finished
    }

    pub fn processes(&self) -> &P {
        &self.processes
    }

    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// The generation that serves.
    pub fn current(&self) -> Option<&Generation> {
        let number = self.current?;
        self.generations.iter().find(|g| g.number == number)
    }

    /// Progress and results of upgrades since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The next moment `on_tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let generations = self
            .generations
            .iter()
            .flat_map(|g| [g.deadline, g.probe_at]);
        [self.restart_at, self.stop.and_then(|s| s.deadline)]
            .into_iter()
            .chain(generations)
            .flatten()
            .min()
    }

    // ----- requests -----

    /// Starts an upgrade: a new generation on the same sockets, which
    /// replaces the current one once it is ready.
    pub fn request_upgrade(&mut self, now: Instant) -> Result<UpgradeId, UpgradeRejection> {
        if self.stop.is_some() {
            return Err(UpgradeRejection::Stopping);
        }
        if let Some(starting) = self.generations.iter().find(|g| g.phase == Phase::Starting) {
            return Err(UpgradeRejection::Busy(format!(
                "{} is still starting; try again once it is ready or has failed",
                starting.describe()
            )));
        }
        self.last_upgrade_id += 1;
        let id = self.last_upgrade_id;
        // An upgrade replaces a restart that was waiting for its backoff.
        self.restart_at = None;
        self.upgrades.push(Upgrade {
            id,
            new: self.last_generation + 1,
            draining: None,
        });
        match self.spawn_generation(Some(id), now) {
            Ok(_) => Ok(id),
            Err(err) => {
                let message = self.with_survivor(format!(
                    "cannot start generation {}: {err}",
                    self.last_generation + 1
                ));
                self.upgrades.retain(|u| u.id != id);
                self.remember_outcome(self.last_generation + 1, false, &message, now);
                tracing::warn!("upgrade failed: {message}");
                Err(UpgradeRejection::SpawnFailed(message))
            }
        }
    }

    /// Sends `signal` to the current generation.
    pub fn signal_current(&mut self, signal: Signal) -> Result<String, String> {
        let Some(current) = self.current().cloned() else {
            return Err("no generation is serving".into());
        };
        self.processes.signal(current.pid, signal);
        Ok(format!(
            "sent {} to {}",
            signal.as_str(),
            current.describe()
        ))
    }

    /// A signal with no meaning for sockvisor: pass it to the current
    /// generation.
    pub fn on_forward(&mut self, signal: Signal) {
        match self.signal_current(signal) {
            Ok(done) => tracing::debug!("forwarded: {done}"),
            Err(why) => tracing::debug!("{} dropped: {why}", signal.as_str()),
        }
    }

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
    }

    // ----- events -----

    /// Handles one exit reported by the reaper.
    pub fn on_exit(&mut self, exit: Exit, now: Instant) {
        if let Some(index) = self
            .generations
            .iter()
            .position(|g| g.probe_pid == Some(exit.pid))
        {
            self.on_probe_exit(index, exit.status, now);
            return;
        }
        let Some(index) = self.generations.iter().position(|g| g.pid == exit.pid) else {
            tracing::debug!("reaped orphan pid {}: {}", exit.pid, exit.status);
            return;
        };
        let generation = self.generations.remove(index);
        // Whatever the leader left behind in its group has lost its parent;
        // nothing may keep running behind sockvisor's back.
        self.processes.signal_group(generation.pid, Signal::SIGKILL);
        if let Some(probe) = generation.probe_pid {
            self.processes.signal_group(probe, Signal::SIGKILL);
        }
        self.processes.retire(generation.number);
        if self.stop.is_some() && generation.phase != Phase::Ready && self.current.is_none() {
            // No generation serves: the status of the ones stopped (e.g. a
            // first generation killed before it was ready) is the answer,
            // unless a current generation's exit sets it later.
            let code = self.stopped_exit_code(exit.status);
            self.exit_status = Some(self.exit_status.map_or(code, |c| c.max(code)));
        }
        match generation.phase {
            Phase::Starting => self.on_exit_before_ready(&generation, exit.status, now),
            Phase::Failed => {
                tracing::info!("{} {}", generation.describe(), exit.status);
                // A failed first start or restart, or a failed upgrade that
                // leaves nothing serving: the restart policy decides.
                if self.stop.is_none() && (generation.upgrade.is_none() || self.current.is_none()) {
                    let status = match exit.status {
                        // It was stopped for not being ready: a failure,
                        // whatever it exited with.
                        ExitStatus::Code(0) => ExitStatus::Code(1),
                        ExitStatus::Signal(s) if s == self.config.stop_signal => {
                            ExitStatus::Code(1)
                        }
                        other => other,
                    };
                    self.after_unplanned_exit(&generation, status, now);
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
                        "{} became ready but then {}",
                        generation.describe(),
                        exit.status
                    );
                    tracing::warn!("{message}");
                    self.finish_upgrade(Some(id), Err(message), now);
                }
                if self.stop.is_some() {
                    tracing::info!("{} {}; stopped", generation.describe(), exit.status);
                    self.exit_status = Some(self.stopped_exit_code(exit.status));
                } else {
                    self.after_unplanned_exit(&generation, exit.status, now);
                }
            }
            Phase::Draining => self.on_drained(&generation, exit.status, now),
        }
        self.finish_if_stopped();
    }

    /// Handles one sd_notify message from a generation's notify socket.
    pub fn on_notify(&mut self, number: u32, message: &NotifyMessage, now: Instant) {
        let Some(generation) = self.generations.iter_mut().find(|g| g.number == number) else {
            return;
        };
        if let Some(text) = &message.status {
            generation.status_text = Some(text.clone());
        }
        if let Some(errno) = message.errno {
            tracing::warn!("{} reports ERRNO={errno}", generation.describe());
        }
        if message.stopping || message.reloading {
            tracing::debug!(
                "{} reports{}{}",
                generation.describe(),
                if message.stopping { " STOPPING=1" } else { "" },
                if message.reloading {
                    " RELOADING=1"
                } else {
                    ""
                }
            );
        }
        if generation.phase != Phase::Starting {
            return;
        }
        if let (Some(extend), Some(deadline)) = (message.extend_timeout, generation.deadline) {
            generation.deadline = Some(deadline.max(now + extend));
        }
        if message.ready && self.config.ready == ReadyMode::Notify {
            self.mark_ready(number, now);
        }
    }

    /// einhorn's `worker:ack` from a process of generation `number`: counts
    /// like READY=1 in `--ready notify` mode.
    pub fn on_worker_ack(&mut self, number: u32, now: Instant) -> Result<(), String> {
        let Some(generation) = self.generations.iter().find(|g| g.number == number) else {
            return Err(format!("generation {number} is gone"));
        };
        if generation.phase != Phase::Starting {
            return Ok(());
        }
        if self.config.ready != ReadyMode::Notify {
            return Err("worker:ack counts only with --ready notify".into());
        }
        self.mark_ready(number, now);
        Ok(())
    }

    /// The generation a process belongs to: its leader's pid is also its
    /// process group.
    pub fn generation_of(&self, pid: Pid, pgid: Option<Pid>) -> Option<u32> {
        self.generations
            .iter()
            .find(|g| g.pid == pid || Some(g.pid) == pgid)
            .map(|g| g.number)
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn on_tick(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            if let Err(err) = self.spawn_generation(None, now) {
                tracing::error!("restart failed: {err}");
                self.schedule_restart(Duration::ZERO, now);
            }
        }
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
        let due: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| {
                g.deadline.is_some_and(|d| d <= now) || g.probe_at.is_some_and(|p| p <= now)
            })
            .map(|g| g.number)
            .collect();
        for number in due {
            self.on_generation_deadline(number, now);
        }
    }

    // ----- transitions -----

    fn spawn_generation(
        &mut self,
        upgrade: Option<UpgradeId>,
        now: Instant,
    ) -> Result<u32, SpawnError> {
        let number = self.last_generation + 1;
        // With nothing serving, nobody else needs the terminal.
        let foreground = self.config.terminal && self.current.is_none();
        let pid = self.processes.spawn(number, foreground)?;
        self.last_generation = number;
        let probe_at = match &self.config.ready {
            ReadyMode::Delay(delay) => Some(now + *delay),
            ReadyMode::Exec(_) => Some(now),
            ReadyMode::Notify | ReadyMode::Now => None,
        };
        self.generations.push(Generation {
            number,
            pid,
            started: now,
            phase: Phase::Starting,
            deadline: Some(now + self.config.ready_timeout),
            probe_at,
            probe_pid: None,
            status_text: None,
            upgrade,
            foreground,
        });
        tracing::info!("generation {number} started: pid {pid}");
        self.progress(upgrade, format!("generation {number} started: pid {pid}"));
        if self.config.ready == ReadyMode::Now {
            self.mark_ready(number, now);
        }
        Ok(number)
    }

    /// The generation is ready: it becomes current, and the one it
    /// replaces starts draining.
    fn mark_ready(&mut self, number: u32, now: Instant) {
        let Some(generation) = self.generations.iter_mut().find(|g| g.number == number) else {
            return;
        };
        generation.phase = Phase::Ready;
        generation.deadline = None;
        generation.probe_at = None;
        if let Some(probe) = generation.probe_pid.take() {
            self.processes.signal_group(probe, Signal::SIGKILL);
        }
        if self.config.terminal && !generation.foreground {
            generation.foreground = true;
            self.processes.hand_terminal(generation.pid);
        }
        let generation = generation.clone();
        let waited = format_duration(now.saturating_duration_since(generation.started));
        let message = format!("{} is ready after {waited}", generation.describe());
        tracing::info!("{message}");
        self.progress(generation.upgrade, message);
        let replaced = self.current.replace(number);
        match replaced.and_then(|old| self.start_drain(old, now)) {
            Some(old) => {
                if let Some(upgrade) = self.upgrade_mut(generation.upgrade) {
                    upgrade.draining = Some(old.number);
                }
                let message = format!(
                    "{} sent {}; draining for up to {}",
                    old.describe(),
                    self.config.stop_signal.as_str(),
                    format_duration(self.config.drain_timeout)
                );
                tracing::info!("{message}");
                self.progress(generation.upgrade, message);
            }
            None => self.finish_upgrade(
                generation.upgrade,
                Ok(format!("generation {number} is serving")),
                now,
            ),
        }
    }

    /// Asks a replaced generation to stop; returns it if it was alive.
    fn start_drain(&mut self, number: u32, now: Instant) -> Option<Generation> {
        let generation = self.generations.iter_mut().find(|g| g.number == number)?;
        generation.phase = Phase::Draining;
        generation.deadline = Some(now + self.config.drain_timeout);
        let generation = generation.clone();
        ask_to_stop(&mut self.processes, generation.pid, self.config.stop_signal);
        Some(generation)
    }

    /// A starting generation failed to become ready in time (or its probe
    /// could not run): stop it, keep the current one.
    fn fail_start(&mut self, number: u32, reason: String, now: Instant) {
        let Some(generation) = self.generations.iter_mut().find(|g| g.number == number) else {
            return;
        };
        generation.phase = Phase::Failed;
        generation.deadline = Some(now + self.config.stop_timeout);
        generation.probe_at = None;
        let probe = generation.probe_pid.take();
        let generation = generation.clone();
        if let Some(probe) = probe {
            self.processes.signal_group(probe, Signal::SIGKILL);
        }
        ask_to_stop(&mut self.processes, generation.pid, self.config.stop_signal);
        let message = self.with_survivor(reason);
        tracing::warn!("{message}");
        self.finish_upgrade(generation.upgrade, Err(message), now);
    }

    fn on_exit_before_ready(&mut self, generation: &Generation, status: ExitStatus, now: Instant) {
        let reason = format!("{} {status} before it was ready", generation.describe());
        if generation.upgrade.is_some() {
            let message = self.with_survivor(reason);
            tracing::warn!("{message}");
            self.finish_upgrade(generation.upgrade, Err(message), now);
        }
        if self.stop.is_none() && (generation.upgrade.is_none() || self.current.is_none()) {
            self.after_unplanned_exit(generation, status, now);
        }
    }

    fn on_drained(&mut self, generation: &Generation, status: ExitStatus, now: Instant) {
        let message = format!("{} {status}", generation.describe());
        tracing::info!("{message}");
        let upgrade = self
            .upgrades
            .iter()
            .find(|u| u.draining == Some(generation.number))
            .map(|u| (u.id, u.new));
        if let Some((id, new)) = upgrade {
            self.progress(Some(id), message);
            self.finish_upgrade(Some(id), Ok(format!("generation {new} is serving")), now);
        }
    }

    fn on_probe_exit(&mut self, index: usize, status: ExitStatus, now: Instant) {
        let generation = &mut self.generations[index];
        generation.probe_pid = None;
        if generation.phase != Phase::Starting {
            return;
        }
        if status.success() {
            let number = generation.number;
            self.mark_ready(number, now);
        } else {
            tracing::debug!("{} readiness probe {status}", generation.describe());
            generation.probe_at = Some(now + PROBE_INTERVAL);
        }
    }

    fn on_generation_deadline(&mut self, number: u32, now: Instant) {
        let Some(generation) = self.generations.iter_mut().find(|g| g.number == number) else {
            return;
        };
        let deadline_passed = generation.deadline.is_some_and(|d| d <= now);
        match generation.phase {
            Phase::Starting if deadline_passed => {
                let reason = format!(
                    "{} was not ready within {}",
                    generation.describe(),
                    format_duration(self.config.ready_timeout)
                );
                self.fail_start(number, reason, now);
            }
            Phase::Starting => {
                generation.probe_at = None;
                let pid = generation.pid;
                match self.config.ready.clone() {
                    ReadyMode::Delay(_) => self.mark_ready(number, now),
                    ReadyMode::Exec(command) => {
                        match self.processes.spawn_probe(&command, number, pid) {
                            Ok(probe) => {
                                if let Some(g) =
                                    self.generations.iter_mut().find(|g| g.number == number)
                                {
                                    g.probe_pid = Some(probe);
                                }
                            }
                            Err(err) => self.fail_start(
                                number,
                                format!("readiness probe cannot run: {err}"),
                                now,
                            ),
                        }
                    }
                    ReadyMode::Notify | ReadyMode::Now => {}
                }
            }
            Phase::Draining | Phase::Failed if deadline_passed => {
                generation.deadline = None;
                let (describe, pid) = (generation.describe(), generation.pid);
                let limit = if generation.phase == Phase::Draining {
                    self.config.drain_timeout
                } else {
                    self.config.stop_timeout
                };
                tracing::warn!(
                    "{describe} did not exit within {}; killing its process group",
                    format_duration(limit)
                );
                self.processes.signal_group(pid, Signal::SIGKILL);
            }
            _ => {}
        }
    }

    /// The current generation (or a first start) ended without being asked
    /// to: restart or finish, by the restart policy.
    fn after_unplanned_exit(&mut self, generation: &Generation, status: ExitStatus, now: Instant) {
        if self.generations.iter().any(|g| g.phase == Phase::Starting) {
            tracing::warn!(
                "{} {status}; the generation that is starting will take over",
                generation.describe()
            );
            return;
        }
        if self.config.terminal && is_keyboard_interrupt(status) {
            tracing::info!(
                "{} {status}: interrupted from the terminal; stopping",
                generation.describe()
            );
            self.finish_with(status.as_code(), now);
            return;
        }
        let restart = match self.config.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        };
        if !restart {
            tracing::info!(
                "{} {status}; not restarting (--restart {})",
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
            "{} {status} after {}; restarting in {}",
            generation.describe(),
            format_duration(ran_for),
            format_duration(delay)
        );
    }

    /// Exponential backoff: the delay doubles with each consecutive failure
    /// up to the maximum; a child that ran at least the maximum delay counts
    /// as healthy and resets it.
    fn schedule_restart(&mut self, ran_for: Duration, now: Instant) {
        if ran_for >= self.config.restart_delay_max {
            self.consecutive_failures = 0;
        }
        let doublings = self.consecutive_failures.min(31);
        self.consecutive_failures += 1;
        let delay = self
            .config
            .restart_delay
            .saturating_mul(1u32 << doublings)
            .min(self.config.restart_delay_max);
        self.restart_at = Some(now + delay);
    }

    /// Ends supervision with `code`, after stopping whatever still runs.
    fn finish_with(&mut self, code: i32, now: Instant) {
        self.exit_status = Some(code);
        if self.generations.is_empty() {
            self.finished = Some(code);
        } else {
            self.begin_stop(now);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        self.restart_at = None;
        self.stop = Some(Stop {
            deadline: Some(now + self.config.stop_timeout),
        });
        let mut abandoned = Vec::new();
        for generation in &mut self.generations {
            match generation.phase {
                // Draining ones were already asked.
                Phase::Draining => continue,
                Phase::Starting => {
                    generation.phase = Phase::Failed;
                    generation.probe_at = None;
                    abandoned.push(generation.upgrade);
                }
                Phase::Ready | Phase::Failed => {}
            }
            generation.deadline = None;
            ask_to_stop(&mut self.processes, generation.pid, self.config.stop_signal);
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
        for generation in &mut self.generations {
            generation.deadline = None;
            self.processes.signal_group(generation.pid, Signal::SIGKILL);
        }
    }

    fn finish_if_stopped(&mut self) {
        if self.stop.is_some() && self.generations.is_empty() {
            self.finished = Some(self.exit_status.unwrap_or(0));
        }
    }

    /// Exit status after a requested stop: a generation that exited cleanly
    /// or died of the stop signal itself did what was asked, so 0;
    /// otherwise its status (137 when it had to be killed).
    fn stopped_exit_code(&self, status: ExitStatus) -> i32 {
        match status {
            ExitStatus::Signal(signal) if signal == self.config.stop_signal => 0,
            status => status.as_code(),
        }
    }

    // ----- upgrade bookkeeping -----

    fn upgrade_mut(&mut self, id: Option<UpgradeId>) -> Option<&mut Upgrade> {
        let id = id?;
        self.upgrades.iter_mut().find(|u| u.id == id)
    }

    fn progress(&mut self, upgrade: Option<UpgradeId>, message: String) {
        if let Some(upgrade) = upgrade {
            self.notices.push(Notice::Progress { upgrade, message });
        }
    }

    fn finish_upgrade(
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

    fn remember_outcome(&mut self, generation: u32, ok: bool, message: &str, now: Instant) {
        self.last_outcome = Some(Outcome {
            generation,
            ok,
            message: message.to_string(),
            finished: now,
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

/// A death by the signals the keyboard sends (Ctrl-C, Ctrl-\): with a
/// terminal, the person at it asked for the end, as a shell takes it.
fn is_keyboard_interrupt(status: ExitStatus) -> bool {
    matches!(status, ExitStatus::Signal(Signal::SIGINT | Signal::SIGQUIT))
}

fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Never => "never",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}
