//! The supervisor's state as it crosses a re-exec of sockvisor: plain data
//! that serde writes and reads. Every moment becomes a duration relative to
//! the moment of the hand-over (how long ago something started, how long
//! until a deadline), because an `Instant` means nothing in another
//! program; the new program adds them to its own clock.
//!
//! A re-exec is refused while an upgrade, a rollout, a scale or a stop is
//! in progress, so those are not part of it; draining generations, pending
//! replacements and restart backoff are.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::generation::{
    Generation, Phase, Probe, ReadyMode, Slot, Slots, Worker, WorkerStage, WorkerState, Workers,
};
use super::upgrade::Outcome;
use super::{Config, RestartPolicy, Spawner, Supervisor};
use crate::deadline;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorState {
    pub config: ConfigRecord,
    pub generations: Vec<GenerationRecord>,
    pub current: Option<u32>,
    pub last_generation: u32,
    pub restart_in: Option<Duration>,
    pub consecutive_failures: u32,
    pub exit_status: Option<i32>,
    pub last_upgrade_id: u64,
    pub last_outcome: Option<OutcomeRecord>,
    #[serde(default)]
    pub watchdog_restarts: u32,
    #[serde(default)]
    pub ready_hint_logged: bool,
    #[serde(default)]
    pub counters: super::status::Counters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub restart: String,
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub drain_timeout: Duration,
    /// As `--ready` takes it: `notify`, `now`, `delay=…`, `exec=…`.
    pub ready: String,
    pub ready_timeout: Duration,
    pub workers: u32,
    pub max_surge: Option<u32>,
    pub terminal: bool,
    #[serde(default)]
    pub watchdog: Option<Duration>,
    #[serde(default)]
    pub worker_max_rss: Option<u64>,
    #[serde(default)]
    pub worker_max_age: Option<Duration>,
    #[serde(default)]
    pub worker_sample_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub number: u32,
    pub age: Duration,
    /// `starting`, `ready`, `draining` or `failed`.
    pub phase: String,
    pub deadline_in: Option<Duration>,
    pub foreground: bool,
    pub workers: Vec<WorkerRecord>,
    pub slots: Vec<SlotRecord>,
    pub failure: Option<i32>,
    #[serde(default)]
    pub hung: bool,
    /// The operator was told it does not handle its stop signal.
    #[serde(default)]
    pub stop_signal_warned: bool,
    /// How its workers asked to drain ended: (status as a shell reports
    /// it, count).
    #[serde(default)]
    pub drained: Vec<(i32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub index: u32,
    pub pid: i32,
    pub age: Duration,
    /// `starting`, `ready`, `stopping` or `draining`.
    pub state: String,
    pub deadline_in: Option<Duration>,
    pub probe_in: Option<Duration>,
    pub probe_pid: Option<i32>,
    pub status_text: Option<String>,
    #[serde(default)]
    pub watchdog: Option<Duration>,
    #[serde(default)]
    pub watchdog_in: Option<Duration>,
    /// The slot's second process during a recycle.
    #[serde(default)]
    pub second: bool,
    #[serde(default)]
    pub recycle_in: Option<Duration>,
    #[serde(default)]
    pub samples_over: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub pending: bool,
    pub vacant: bool,
    pub restarts: u32,
    pub consecutive_failures: u32,
    pub restart_in: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub generation: u32,
    pub ok: bool,
    pub message: String,
    pub ago: Duration,
    #[serde(default)]
    pub duration: Option<Duration>,
}

/// Why a state cannot be restored.
pub type HandoverError = String;

fn until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Draining => "draining",
        Phase::Failed => "failed",
    }
}

fn parse_phase(text: &str) -> Result<Phase, HandoverError> {
    Ok(match text {
        "starting" => Phase::Starting,
        "ready" => Phase::Ready,
        "draining" => Phase::Draining,
        "failed" => Phase::Failed,
        other => return Err(format!("unknown generation phase '{other}'")),
    })
}

fn worker_stage_name(stage: WorkerStage) -> &'static str {
    match stage {
        WorkerStage::Starting => "starting",
        WorkerStage::Ready => "ready",
        WorkerStage::Stopping => "stopping",
        WorkerStage::Draining => "draining",
    }
}

/// A worker's state from its record: the stage's name and the timers
/// that stage has (others in the record are not its own, and ignored).
fn worker_state_from(
    record: &WorkerRecord,
    at: impl Fn(Option<Duration>) -> Option<Instant>,
) -> Result<WorkerState, HandoverError> {
    Ok(match record.state.as_str() {
        "starting" => WorkerState::Starting {
            ready_by: at(record.deadline_in),
            probe: match (record.probe_pid, at(record.probe_in)) {
                (Some(pid), _) => Probe::Running(Pid::from_raw(pid)),
                (None, Some(at)) => Probe::At(at),
                (None, None) => Probe::Idle,
            },
        },
        "ready" => WorkerState::Ready {
            watchdog_by: at(record.watchdog_in),
            recycle_at: at(record.recycle_in),
        },
        "stopping" => WorkerState::Stopping {
            kill_at: at(record.deadline_in),
        },
        "draining" => WorkerState::Draining {
            kill_at: at(record.deadline_in),
        },
        other => return Err(format!("unknown worker state '{other}'")),
    })
}

fn policy_from(text: &str) -> Result<RestartPolicy, HandoverError> {
    Ok(match text {
        "never" => RestartPolicy::Never,
        "on-failure" => RestartPolicy::OnFailure,
        "always" => RestartPolicy::Always,
        other => return Err(format!("unknown restart policy '{other}'")),
    })
}

fn ready_name(ready: &ReadyMode) -> String {
    match ready {
        ReadyMode::Notify => "notify".into(),
        ReadyMode::Now => "now".into(),
        ReadyMode::Delay(delay) => format!("delay={}ms", delay.as_millis()),
        ReadyMode::Exec(command) => format!("exec={command}"),
    }
}

fn exit_code(status: crate::reaper::ExitStatus) -> i32 {
    status.as_code()
}

fn exit_status_from(code: i32) -> crate::reaper::ExitStatus {
    // Checked before subtracting: the state file may hold any i32.
    if code > 128
        && let Ok(signal) = Signal::try_from(code - 128)
    {
        return crate::reaper::ExitStatus::Signal(signal);
    }
    crate::reaper::ExitStatus::Code(code)
}

impl ConfigRecord {
    pub fn capture(config: &Config) -> ConfigRecord {
        ConfigRecord {
            restart: super::policy_name(config.restart).into(),
            restart_delay: config.restart_delay,
            restart_delay_max: config.restart_delay_max,
            stop_signal: config.stop_signal as i32,
            stop_timeout: config.stop_timeout,
            drain_timeout: config.drain_timeout,
            ready: ready_name(&config.ready),
            ready_timeout: config.ready_timeout,
            workers: config.workers,
            max_surge: config.max_surge,
            terminal: config.terminal,
            watchdog: config.watchdog,
            worker_max_rss: config.recycle.max_rss,
            worker_max_age: config.recycle.max_age,
            worker_sample_interval: Some(config.recycle.sample_interval),
        }
    }

    pub fn restore(&self) -> Result<Config, HandoverError> {
        Ok(Config {
            restart: policy_from(&self.restart)?,
            restart_delay: self.restart_delay,
            restart_delay_max: self.restart_delay_max,
            stop_signal: Signal::try_from(self.stop_signal)
                .map_err(|_| format!("unknown stop signal {}", self.stop_signal))?,
            stop_timeout: self.stop_timeout,
            drain_timeout: self.drain_timeout,
            ready: ReadyMode::parse(&self.ready)?,
            ready_timeout: self.ready_timeout,
            workers: self.workers,
            max_surge: self.max_surge,
            terminal: self.terminal,
            watchdog: self.watchdog,
            recycle: super::Recycle {
                max_rss: self.worker_max_rss,
                max_age: self.worker_max_age,
                sample_interval: self
                    .worker_sample_interval
                    .unwrap_or(super::DEFAULT_SAMPLE_INTERVAL),
            },
        })
    }
}

impl<P: Spawner> Supervisor<P> {
    /// Why a re-exec cannot happen now, if anything stands in its way.
    pub fn handover_blocker(&self) -> Option<String> {
        self.in_flight().map(|busy| busy.to_string())
    }

    /// Before a re-exec: an upgrade whose new generation serves and whose
    /// old one is still draining has done what it was asked, so its client
    /// is told so now. (The drain goes on under the next program; the
    /// client's connection does not survive the exec.)
    pub fn finish_for_handover(&mut self, now: Instant) {
        let done: Vec<(super::UpgradeId, u32, Vec<u32>)> = self
            .upgrades
            .iter()
            .filter(|u| !u.draining.is_empty())
            .map(|u| (u.id, u.new, u.draining.clone()))
            .collect();
        for (id, new, draining) in done {
            let draining: Vec<String> = draining.iter().map(u32::to_string).collect();
            self.finish_upgrade(
                Some(id),
                Ok(format!(
                    "generation {new} is serving; generation {} is still draining",
                    draining.join(", ")
                )),
                now,
            );
        }
    }

    /// Everything the supervisor knows, as of `now`.
    pub fn capture(&self, now: Instant) -> SupervisorState {
        SupervisorState {
            config: ConfigRecord::capture(&self.config),
            generations: self
                .generations
                .iter()
                .map(|g| GenerationRecord {
                    number: g.number,
                    age: now.saturating_duration_since(g.started),
                    phase: phase_name(g.phase).into(),
                    deadline_in: until(g.kill_at, now),
                    foreground: g.foreground,
                    workers: g
                        .workers
                        .iter()
                        .map(|w| WorkerRecord {
                            index: w.index,
                            pid: w.pid.as_raw(),
                            age: now.saturating_duration_since(w.started),
                            state: worker_stage_name(w.state.stage()).into(),
                            deadline_in: until(w.state.deadline(), now),
                            probe_in: until(w.state.probe_at(), now),
                            probe_pid: w.state.probe_pid().map(Pid::as_raw),
                            status_text: w.status_text.clone(),
                            watchdog: w.watchdog,
                            watchdog_in: until(w.state.watchdog_by(), now),
                            second: w.second,
                            recycle_in: until(w.state.recycle_at(), now),
                            samples_over: w.samples_over,
                        })
                        .collect(),
                    slots: g
                        .slots
                        .iter()
                        .map(|s| SlotRecord {
                            pending: s.pending,
                            vacant: s.vacant,
                            restarts: s.restarts,
                            consecutive_failures: s.consecutive_failures,
                            restart_in: until(s.restart_at, now),
                        })
                        .collect(),
                    failure: g.failure.map(exit_code),
                    hung: g.hung,
                    stop_signal_warned: g.stop_signal_warned,
                    drained: g
                        .drained
                        .counts()
                        .iter()
                        .map(|(status, count)| (exit_code(*status), *count))
                        .collect(),
                })
                .collect(),
            current: self.current,
            last_generation: self.last_generation,
            restart_in: until(self.restart_at, now),
            consecutive_failures: self.consecutive_failures,
            exit_status: self.exit_status,
            last_upgrade_id: self.last_upgrade_id,
            watchdog_restarts: self.watchdog_restarts,
            counters: self.counters,
            ready_hint_logged: self.ready_hint_logged,
            last_outcome: self.last_outcome.as_ref().map(|o| OutcomeRecord {
                generation: o.generation,
                ok: o.ok,
                message: o.message.clone(),
                ago: now.saturating_duration_since(o.finished),
                duration: o.duration,
            }),
        }
    }

    /// The supervisor a captured state describes, on this program's clock.
    pub fn restore(
        state: &SupervisorState,
        processes: P,
        now: Instant,
    ) -> Result<Supervisor<P>, HandoverError> {
        let at = |d: Option<Duration>| d.map(|d| deadline::after(now, d));
        let ago = |d: Duration| now.checked_sub(d).unwrap_or(now);
        let mut supervisor = Supervisor::new(state.config.restore()?, processes);
        for g in &state.generations {
            let mut workers = Workers::default();
            for w in &g.workers {
                let displaced = workers.insert(Worker {
                    index: w.index,
                    pid: Pid::from_raw(w.pid),
                    started: ago(w.age),
                    state: worker_state_from(w, at)?,
                    second: w.second,
                    samples_over: w.samples_over,
                    rss: None,
                    status_text: w.status_text.clone(),
                    watchdog: w.watchdog,
                    watchdog_missed: false,
                });
                if displaced.is_some() {
                    return Err(format!(
                        "generation {} has two workers in slot {}",
                        g.number, w.index
                    ));
                }
            }
            supervisor.generations.push(Generation {
                number: g.number,
                started: ago(g.age),
                phase: parse_phase(&g.phase)?,
                kill_at: at(g.deadline_in),
                upgrade: None,
                foreground: g.foreground,
                workers,
                slots: Slots::from_vec(
                    g.slots
                        .iter()
                        .map(|s| Slot {
                            pending: s.pending,
                            vacant: s.vacant,
                            restarts: s.restarts,
                            consecutive_failures: s.consecutive_failures,
                            restart_at: at(s.restart_in),
                        })
                        .collect(),
                ),
                failure: g.failure.map(exit_status_from),
                hung: g.hung,
                stop_signal_warned: g.stop_signal_warned,
                drained: super::generation::DrainExits::from_counts(
                    g.drained
                        .iter()
                        .map(|(code, count)| (exit_status_from(*code), *count)),
                ),
            });
        }
        supervisor.current = state.current;
        supervisor.last_generation = state.last_generation;
        supervisor.restart_at = at(state.restart_in);
        supervisor.consecutive_failures = state.consecutive_failures;
        supervisor.exit_status = state.exit_status;
        supervisor.last_upgrade_id = state.last_upgrade_id;
        supervisor.watchdog_restarts = state.watchdog_restarts;
        supervisor.counters = state.counters;
        supervisor.ready_hint_logged = state.ready_hint_logged;
        supervisor.last_outcome = state.last_outcome.as_ref().map(|o| Outcome {
            generation: o.generation,
            ok: o.ok,
            message: o.message.clone(),
            finished: ago(o.ago),
            duration: o.duration,
        });
        Ok(supervisor)
    }
}
