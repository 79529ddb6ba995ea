//! The supervision state machine: generations, readiness, upgrade, rollback,
//! drain, restart policy, shutdown, and sockvisor's exit status.
//!
//! It owns decisions only. It performs no system calls itself: what it
//! decides to do to processes (signal them, hand them the terminal, retire
//! a generation's resources) is returned as [`Effect`]s for the event loop
//! to carry out; starting a process is the one question it asks, through
//! [`Spawner`], because the pid or the failure is part of the decision.
//! Time comes in as an argument, exits come from the reaper and notify
//! messages from the notify sockets. Every rule here is tested with a fake
//! clock and fake processes.
//!
//! A generation is `--workers N` processes started from one launch of the
//! command, each in its slot (index 0..N-1). It is ready when all of them
//! are. While it serves, a worker that exits is replaced in its slot under
//! the restart policy, and the others keep serving; a generation that has
//! lost every worker is restarted as a new generation.
//!
//! The concerns live in submodules: `workers` (spawning and exits),
//! `readiness`, `upgrade`, `restart` and `stop`.
//!
//! Cost: handling one event (a notify message, an exit, a tick, finding
//! the next deadline) is O(log N) in the number of workers, never a scan of
//! them; `generation` keeps the indexes that make it so. What is about
//! every worker by nature (starting a generation, stopping one, `status`)
//! costs O(N) once, not per worker.
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
mod handover;
mod ids;
mod readiness;
mod recycle;
mod restart;
mod rollout;
mod scale;
mod status;
mod stop;
mod upgrade;
mod watchdog;
mod workers;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use generation::{
    Generation, Phase, Probe, ReadyMode, Slot, SlotMut, Slots, Worker, WorkerMut, WorkerStage,
    WorkerState, WorkerTimer, Workers,
};
pub use handover::{
    ConfigRecord, GenerationRecord, OutcomeRecord, SlotRecord, SupervisorState, WorkerRecord,
};
pub use restart::KEYBOARD_INTERRUPTS;
pub use status::{GenerationStatus, StatusSnapshot, UpgradeStatus, WorkerStatus};
pub use upgrade::{Notice, Outcome, Upgrade, UpgradeId, UpgradeRejection};
pub use workers::{MAX_WORKERS, parse_worker_count};

use crate::reaper::Exit;
use crate::spawn::SpawnError;

/// `--worker-sample-interval`'s default.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

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

impl RestartPolicy {
    /// Whether a process (a generation, or a worker in its slot) that ended
    /// on its own with `status` is started again.
    pub fn restarts_after(self, status: crate::reaper::ExitStatus) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        }
    }
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
    /// Worker processes per generation.
    pub workers: u32,
    /// Rolling upgrades: at most this many processes beyond `workers` at
    /// any moment; `None` upgrades all at once.
    pub max_surge: Option<u32>,
    /// `--watchdog`: a ready worker must send `WATCHDOG=1` this often.
    pub watchdog: Option<Duration>,
    /// `--worker-max-rss`, `--worker-max-age`: when a serving worker is
    /// replaced by a new one in its slot.
    pub recycle: Recycle,
    /// sockvisor runs in the foreground of a terminal: the serving
    /// generation is its foreground process group, and a generation killed
    /// by the keyboard's SIGINT or SIGQUIT ends sockvisor instead of being
    /// restarted.
    pub terminal: bool,
}

/// When a serving worker is replaced, surge-first, by a new one in its
/// slot (`--worker-max-rss`, `--worker-max-age`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recycle {
    /// Bytes of resident memory of its process tree, over which (at two
    /// samples in a row) a worker is replaced.
    pub max_rss: Option<u64>,
    /// The age at which a worker is replaced, less up to a tenth so that
    /// workers started together are not all replaced together.
    pub max_age: Option<Duration>,
    /// How often the event loop samples memory (with `max_rss` only).
    pub sample_interval: Duration,
}

/// A command the supervisor decided on. It is returned as data
/// ([`Supervisor::take_effects`]) and carried out by the event loop once
/// the event that produced it has been handled, in the order decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Send `signal` to one process; one already gone is not an error.
    Signal { pid: Pid, signal: Signal },
    /// Send `signal` to every process of a process group.
    SignalGroup { group: Pid, signal: Signal },
    /// Pass `signal` (a number: real-time signals have no [`Signal`]) on
    /// to a worker, as a forwarded signal is: to the worker, or with
    /// `--signal-group` to its process group.
    Forward { worker: Pid, signal: i32 },
    /// Make `group` the terminal's foreground process group.
    HandTerminal { group: Pid },
    /// The generation is gone: release what was set up for it (its
    /// notify socket).
    Retire { generation: u32 },
}

/// The two questions the supervisor asks of the world while it decides:
/// start a process, and what its pid is or why it could not start.
///
/// Starting is not an [`Effect`] because the answer is part of the
/// decision: a worker is indexed by its pid the moment it exists, and a
/// fork that fails (a process limit) must be seen before the same decision
/// goes on (a scale under `--ready now` once declared a size it never
/// reached, because its failures were seen only later).
pub trait Spawner {
    /// Starts worker `index` of generation `generation` and returns its pid
    /// (also its process group). With `foreground`, the group takes the
    /// terminal before the command runs.
    fn spawn(&mut self, generation: u32, index: u32, foreground: bool) -> Result<Pid, SpawnError>;
    /// Starts one run of the `exec=` readiness probe for a worker.
    fn spawn_probe(
        &mut self,
        command: &str,
        generation: u32,
        target: Pid,
    ) -> Result<Pid, SpawnError>;
    /// Tests only: sees each effect as it is decided, so that a fake can
    /// keep one ordered record of spawns and commands.
    #[cfg(test)]
    fn observe(&mut self, _effect: &Effect) {}
}

impl<P: Spawner> Supervisor<P> {
    /// Decides a command: it is carried out after this event.
    fn command(&mut self, effect: Effect) {
        #[cfg(test)]
        self.processes.observe(&effect);
        self.effects.push(effect);
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        self.command(Effect::Signal { pid, signal });
    }

    fn signal_group(&mut self, group: Pid, signal: Signal) {
        self.command(Effect::SignalGroup { group, signal });
    }

    /// Sends the stop signal, then `SIGCONT` to the process group, as
    /// systemd does: a stopped process (SIGSTOP, Ctrl-Z) only acts on the
    /// stop signal once continued, and would otherwise wait out the whole
    /// timeout.
    fn ask_to_stop(&mut self, pid: Pid, signal: Signal) {
        self.signal(pid, signal);
        if signal != Signal::SIGKILL {
            self.signal_group(pid, Signal::SIGCONT);
        }
    }

    /// The commands decided since the last call, in order, for the event
    /// loop to carry out.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}

/// What changes the serving generation's processes over several events,
/// at most one at a time: the type says so, rather than checks spread over
/// the code. (A non-rolling upgrade is its starting generation; upgrades
/// whose new generation serves and whose old one drains are not in flight.)
#[derive(Debug)]
enum Operation {
    /// A rolling upgrade filling in this generation, K workers at a time.
    Rollout(u32),
    /// A `scale` of the serving generation.
    Scale(scale::Scale),
}

impl<P: Spawner> Supervisor<P> {
    /// The generation a rolling upgrade is filling in.
    fn rollout(&self) -> Option<u32> {
        match &self.operation {
            Some(Operation::Rollout(number)) => Some(*number),
            _ => None,
        }
    }

    /// The rollout is over (done, stopped or failed).
    fn end_rollout(&mut self) {
        if matches!(self.operation, Some(Operation::Rollout(_))) {
            self.operation = None;
        }
    }

    /// The scale in progress.
    fn scale(&self) -> Option<&scale::Scale> {
        match &self.operation {
            Some(Operation::Scale(scale)) => Some(scale),
            _ => None,
        }
    }

    fn scale_mut(&mut self) -> Option<&mut scale::Scale> {
        match &mut self.operation {
            Some(Operation::Scale(scale)) => Some(scale),
            _ => None,
        }
    }

    /// Ends the scale in progress and returns it.
    fn take_scale(&mut self) -> Option<scale::Scale> {
        match self.operation.take() {
            Some(Operation::Scale(scale)) => Some(scale),
            other => {
                self.operation = other;
                None
            }
        }
    }
}

/// What a process of the supervisor's is, found by its pid: the one table
/// exits and notify messages are dispatched through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Worker `index` of generation `generation`.
    Worker { generation: u32, index: u32 },
    /// The `exec=` readiness probe run for that worker.
    Probe { generation: u32, index: u32 },
}

/// A requested stop in progress.
#[derive(Debug, Clone, Copy)]
struct Stop {
    /// When every remaining process group gets `SIGKILL`; `None` once done.
    deadline: Option<Instant>,
}

pub struct Supervisor<P: Spawner> {
    config: Config,
    processes: P,
    /// Every generation with a process alive.
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
    /// Commands decided and not yet taken by the event loop.
    effects: Vec<Effect>,
    /// The rollout or scale in progress: at most one, by its type.
    operation: Option<Operation>,
    /// Replacements started because a worker missed its watchdog.
    watchdog_restarts: u32,
    counters: status::Counters,
    /// The hint about `--ready` for a command that never sends READY=1
    /// has been logged (it is logged once in sockvisor's life).
    ready_hint_logged: bool,
}

impl<P: Spawner> Supervisor<P> {
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
            effects: Vec::new(),
            operation: None,
            watchdog_restarts: 0,
            counters: status::Counters::default(),
            ready_hint_logged: false,
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

    /// The spawner's own resources, which the event loop manages: it
    /// carries out [`Effect`]s on them and keeps the fd store. Nothing
    /// here is a decision.
    pub fn processes_mut(&mut self) -> &mut P {
        &mut self.processes
    }

    /// The knobs it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// The generation that serves.
    pub fn current(&self) -> Option<&Generation> {
        let number = self.current?;
        self.generation(number)
    }

    fn generation(&self, number: u32) -> Option<&Generation> {
        self.generations.iter().find(|g| g.number == number)
    }

    fn generation_mut(&mut self, number: u32) -> Option<&mut Generation> {
        self.generations.iter_mut().find(|g| g.number == number)
    }

    /// Worker `index` of generation `number` as it is now, with its
    /// generation's phase and how log lines name it.
    fn worker_view(&self, number: u32, index: u32) -> Option<(Phase, Worker, String)> {
        let generation = self.generation(number)?;
        let worker = generation.worker(index)?.clone();
        let describe = generation.describe_worker(&worker);
        Some((generation.phase, worker, describe))
    }

    /// Progress and results of upgrades since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The next moment `on_tick` has something to do: O(log N) per
    /// generation, from each generation's timer indexes.
    pub fn next_deadline(&self) -> Option<Instant> {
        // A rolling worker whose backoff has passed waits for room (an
        // exit), not for a time: its slot's deadline would wake the loop
        // at once, again and again.
        let waits_for_room = self.rollout().filter(|_| !self.rollout_has_room());
        [
            self.restart_at,
            self.stop.and_then(|s| s.deadline),
            self.next_recycle_deadline(),
        ]
        .into_iter()
        .chain(self.generations.iter().map(|g| {
            if waits_for_room == Some(g.number) {
                g.next_deadline_but_restarts()
            } else {
                g.next_deadline()
            }
        }))
        .flatten()
        .min()
    }

    /// Sends `signal` to every worker of the serving generation (of each,
    /// after a rollout that stopped part-way).
    pub fn signal_current(&mut self, signal: i32) -> Result<String, String> {
        let serving: Vec<(String, Vec<Pid>)> = self
            .generations
            .iter()
            .filter(|g| g.phase == Phase::Ready)
            .map(|g| (g.describe(), g.pids()))
            .collect();
        if serving.is_empty() {
            return Err("no generation is serving".into());
        }
        for (_, pids) in &serving {
            for pid in pids {
                self.command(Effect::Forward {
                    worker: *pid,
                    signal,
                });
            }
        }
        let names: Vec<&str> = serving.iter().map(|(name, _)| name.as_str()).collect();
        Ok(format!(
            "sent {} to {}",
            crate::signals::name(signal),
            names.join(" and ")
        ))
    }

    /// The workers of every serving generation, which forwarded signals go
    /// to.
    pub fn serving_pids(&self) -> Vec<Pid> {
        self.generations
            .iter()
            .filter(|g| g.phase == Phase::Ready)
            .flat_map(Generation::pids)
            .collect()
    }

    /// The workers of generation `number` (index and pid), in index order.
    #[cfg(test)]
    pub fn workers_of(&self, number: u32) -> Vec<(u32, Pid)> {
        self.generation(number)
            .map(|g| g.workers.iter().map(|w| (w.index, w.pid)).collect())
            .unwrap_or_default()
    }

    /// The pid of every process of the supervisor's: each generation's
    /// workers and running readiness probes.
    pub fn process_pids(&self) -> Vec<Pid> {
        self.generations
            .iter()
            .flat_map(|g| {
                g.workers
                    .iter()
                    .map(|w| w.pid)
                    .chain(g.workers.probe_pids())
            })
            .collect()
    }

    /// Which of the supervisor's processes `pid` is: a worker or a
    /// worker's readiness probe; `None` for any other process (an orphan).
    /// One lookup per generation in its pid indexes, O(log N) each.
    pub fn owner_of(&self, pid: Pid) -> Option<Owner> {
        self.generations.iter().find_map(|g| {
            let generation = g.number;
            g.workers
                .index_of_pid(pid)
                .map(|index| Owner::Worker { generation, index })
                .or_else(|| {
                    g.workers
                        .index_of_probe(pid)
                        .map(|index| Owner::Probe { generation, index })
                })
        })
    }

    /// The generation and slot of the worker whose pid is `pid`; `None`
    /// for any other process (whose parent chain the caller may follow, see
    /// `notify::sender`).
    pub fn worker_of(&self, pid: Pid) -> Option<(u32, u32)> {
        match self.owner_of(pid)? {
            Owner::Worker { generation, index } => Some((generation, index)),
            Owner::Probe { .. } => None,
        }
    }

    /// How log lines name worker `index` of generation `number`.
    pub fn describe_worker(&self, number: u32, index: u32) -> Option<String> {
        let generation = self.generation(number)?;
        Some(generation.describe_worker(generation.worker(index)?))
    }

    /// Tests only: every generation's indexes agree with what they index
    /// (see `Generation::assert_indexes_agree`). Called after each event.
    #[cfg(test)]
    fn check_indexes(&self) {
        for generation in &self.generations {
            generation.assert_indexes_agree();
        }
    }

    // ----- events -----

    /// Handles one exit reported by the reaper, by whose process it was.
    pub fn on_exit(&mut self, exit: Exit, now: Instant) {
        match self.owner_of(exit.pid) {
            Some(Owner::Probe { generation, index }) => {
                self.on_probe_exit(generation, index, exit.status, now)
            }
            owner => {
                if let Some(Owner::Worker { generation, index }) = owner {
                    self.warn_if_stop_signal_unhandled(generation, index, exit);
                    self.on_worker_exit(generation, index, exit, now);
                } else {
                    tracing::debug!("reaped orphan pid {}: {}", exit.pid, exit.status);
                }
                // An exit may have made room for the next worker of a rollout.
                self.advance_rollout_or_stop(now);
                self.finish_if_stopped();
            }
        }
        #[cfg(test)]
        self.check_indexes();
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn on_tick(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            self.counters.restarts += 1;
            if let Err(err) = self.spawn_generation(None, now) {
                tracing::error!("restart failed: {err}");
                self.schedule_restart(Duration::ZERO, now);
            }
        }
        self.on_stop_deadline(now);
        let due: Vec<u32> = self
            .generations
            .iter()
            .filter(|g| g.kill_at.is_some_and(|d| d <= now))
            .map(|g| g.number)
            .collect();
        for number in due {
            self.on_generation_deadline(number, now);
        }
        let due: Vec<(u32, u32)> = self
            .generations
            .iter()
            .flat_map(|g| {
                g.workers
                    .due(now, &[WorkerTimer::Deadline, WorkerTimer::Probe])
                    .into_iter()
                    .map(move |index| (g.number, index))
            })
            .collect();
        for (number, index) in due {
            self.on_worker_deadline(number, index, now);
        }
        self.replace_due_workers(now);
        self.advance_rollout_or_stop(now);
        // A rollout that stopped just now made its generation the serving
        // one, with slots that may be due already: replace them in this
        // tick, so that no deadline is left in the past.
        self.replace_due_workers(now);
        self.check_watchdogs(now);
        self.check_recycles(now);
        #[cfg(test)]
        self.check_indexes();
    }

    /// A draining or failed generation did not exit in time: kill what is
    /// left of it.
    fn on_generation_deadline(&mut self, number: u32, now: Instant) {
        let drain_timeout = self.config.drain_timeout;
        let stop_timeout = self.config.stop_timeout;
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        if generation.kill_at.is_none_or(|d| d > now) {
            return;
        }
        generation.kill_at = None;
        let limit = match generation.phase {
            Phase::Draining => drain_timeout,
            _ => stop_timeout,
        };
        let (describe, pids) = (generation.describe(), generation.pids());
        let none_exited = generation.workers.len() as u32 == generation.size();
        let stop_signal = self.config.stop_signal;
        tracing::warn!(
            "{describe} did not exit within {}; killing its process group",
            crate::duration::format_duration(limit)
        );
        if none_exited && stop_signal != Signal::SIGKILL {
            let generation = self.generation_mut(number);
            if let Some(generation) = generation.filter(|g| !g.stop_signal_warned) {
                generation.stop_signal_warned = true;
                tracing::warn!(
                    "{describe}: no worker exited after {}: the server may ignore it (a shell wrapper ignores SIGQUIT); pass --stop-signal with the signal it drains on, e.g. --stop-signal SIGTERM",
                    stop_signal.as_str()
                );
            }
        }
        for pid in pids {
            self.signal_group(pid, Signal::SIGKILL);
        }
    }
}

impl<P: Spawner> Supervisor<P> {
    /// A worker asked to stop that dies of the stop signal's default action
    /// did not handle it: whatever it was doing was cut, not drained. Said
    /// once per generation, with the fix.
    fn warn_if_stop_signal_unhandled(&mut self, number: u32, index: u32, exit: Exit) {
        let stop_signal = self.config.stop_signal;
        if exit.status != crate::reaper::ExitStatus::Signal(stop_signal)
            || stop_signal == Signal::SIGKILL
        {
            return;
        }
        let stopping = self.stop.is_some();
        let Some(generation) = self.generation_mut(number) else {
            return;
        };
        let asked = stopping
            || generation.phase == Phase::Draining
            || generation
                .workers
                .get(index)
                .is_some_and(|w| w.state.is_leaving());
        if !asked || generation.stop_signal_warned {
            return;
        }
        generation.stop_signal_warned = true;
        tracing::warn!(
            "{} was killed by {} instead of draining: the server does not handle its stop signal, so requests in flight were cut; pass --stop-signal with the signal it drains on (SIGTERM for Puma, Starlet and shell wrappers)",
            generation.describe(),
            stop_signal.as_str()
        );
    }
}

fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Never => "never",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}

/// `1 worker`, `4 workers`: a count of workers as a sentence says it.
fn workers_count(count: impl Into<u64>) -> String {
    match count.into() {
        1 => "1 worker".to_string(),
        count => format!("{count} workers"),
    }
}
