//! One generation: a launch of the command, its readiness, and its place in
//! the lifecycle `starting → ready → draining → gone` (or
//! `starting → failed → gone`).
//!
//! A generation's workers and slots are kept with the indexes that make
//! every per-event question O(log N) in the number of workers: which worker
//! has this pid or runs this probe, which timers are due and which is next,
//! how many workers are ready, which worker a rollout retires next, which
//! slot waits for a replacement. A worker or a slot is changed only through
//! a guard ([`WorkerMut`], [`SlotMut`]) that brings the indexes up to date
//! when it is dropped, so they cannot drift from what they index.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde::Serialize;

use super::ids::UpgradeId;
use crate::deadline;
use crate::duration::parse_duration;
use crate::reaper::ExitStatus;

/// How sockvisor learns that a new generation is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// `READY=1` on the generation's `NOTIFY_SOCKET`.
    Notify,
    /// Ready as soon as it is spawned.
    Now,
    /// Ready if still alive after this long.
    Delay(Duration),
    /// Ready when this shell command exits 0; it is run repeatedly.
    Exec(String),
}

impl ReadyMode {
    /// Parses `notify`, `now`, `delay=DURATION` or `exec=COMMAND`.
    pub fn parse(text: &str) -> Result<ReadyMode, String> {
        match text.split_once('=') {
            None if text == "notify" => Ok(ReadyMode::Notify),
            None if text == "now" => Ok(ReadyMode::Now),
            Some(("delay", value)) => parse_duration(value).map(ReadyMode::Delay),
            Some(("exec", command)) if !command.trim().is_empty() => {
                Ok(ReadyMode::Exec(command.to_string()))
            }
            _ => Err(format!(
                "invalid ready mode '{text}' (use notify, now, delay=DURATION or exec=COMMAND)"
            )),
        }
    }
}

/// Where a generation is in its life, as `sockvisor status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Spawned, not yet ready.
    Starting,
    /// Serving (the current generation).
    Ready,
    /// Replaced by a newer generation; asked to stop, finishing its work.
    Draining,
    /// Did not become ready in time; being stopped.
    Failed,
}

/// Where one worker process is in its life, with the data only that stage
/// has: a deadline means one thing in each, and cannot outlive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawned, not yet ready.
    Starting {
        /// Its readiness deadline; `None` once its generation failed or
        /// drains (the generation's own deadline applies then).
        ready_by: Option<Instant>,
        /// `delay=` or `exec=`: when it is declared ready or probed next,
        /// or the probe that runs.
        probe: Probe,
    },
    /// Ready: it serves while its generation does.
    Ready {
        /// With a watchdog: when it is hung unless it sends `WATCHDOG=1`.
        watchdog_by: Option<Instant>,
        /// With `--worker-max-age`: when it is old enough to be replaced.
        recycle_at: Option<Instant>,
    },
    /// Asked to stop on its own (a replacement that was not ready in time).
    Stopping {
        /// When its process group gets `SIGKILL` (`None` once it has).
        kill_at: Option<Instant>,
    },
    /// Retired by a rolling upgrade or a scale-down: asked to stop and
    /// finishing its work; its exit is expected and never replaced.
    Draining {
        /// When its process group gets `SIGKILL` (`None` once it has).
        kill_at: Option<Instant>,
    },
}

/// The readiness check of a starting worker beyond `READY=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe {
    /// Nothing to wait for but a notify message (`notify`, `now`).
    #[default]
    Idle,
    /// `delay=`: ready at this moment; `exec=`: run the probe then.
    At(Instant),
    /// `exec=`: the probe runs as this process.
    Running(Pid),
}

/// A worker's stage without its data, as `sockvisor status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStage {
    Starting,
    Ready,
    Stopping,
    Draining,
}

impl WorkerState {
    /// Just spawned, to be ready by `ready_by`.
    pub fn starting(ready_by: Instant, probe: Probe) -> WorkerState {
        WorkerState::Starting {
            ready_by: Some(ready_by),
            probe,
        }
    }

    pub fn stage(&self) -> WorkerStage {
        match self {
            WorkerState::Starting { .. } => WorkerStage::Starting,
            WorkerState::Ready { .. } => WorkerStage::Ready,
            WorkerState::Stopping { .. } => WorkerStage::Stopping,
            WorkerState::Draining { .. } => WorkerStage::Draining,
        }
    }

    pub fn is_starting(&self) -> bool {
        self.stage() == WorkerStage::Starting
    }

    pub fn is_ready(&self) -> bool {
        self.stage() == WorkerStage::Ready
    }

    /// Asked to stop already: stopping or draining.
    pub fn is_leaving(&self) -> bool {
        matches!(
            self,
            WorkerState::Stopping { .. } | WorkerState::Draining { .. }
        )
    }

    /// The readiness probe that runs for it, if any.
    pub fn probe_pid(&self) -> Option<Pid> {
        match self {
            WorkerState::Starting {
                probe: Probe::Running(pid),
                ..
            } => Some(*pid),
            _ => None,
        }
    }

    /// Its deadline: to be ready, or to be killed.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            WorkerState::Starting { ready_by, .. } => *ready_by,
            WorkerState::Stopping { kill_at } | WorkerState::Draining { kill_at } => *kill_at,
            WorkerState::Ready { .. } => None,
        }
    }

    pub fn probe_at(&self) -> Option<Instant> {
        match self {
            WorkerState::Starting {
                probe: Probe::At(at),
                ..
            } => Some(*at),
            _ => None,
        }
    }

    pub fn watchdog_by(&self) -> Option<Instant> {
        match self {
            WorkerState::Ready { watchdog_by, .. } => *watchdog_by,
            _ => None,
        }
    }

    pub fn recycle_at(&self) -> Option<Instant> {
        match self {
            WorkerState::Ready { recycle_at, .. } => *recycle_at,
            _ => None,
        }
    }

    /// Just ready: its watchdog and its age limit start.
    pub fn ready(watchdog_by: Option<Instant>, recycle_at: Option<Instant>) -> WorkerState {
        WorkerState::Ready {
            watchdog_by,
            recycle_at,
        }
    }

    /// A ready worker is replaced for its age at `at` (`None`: not for
    /// its age); a worker in any other stage is not.
    pub fn set_recycle_at(&mut self, at: Option<Instant>) {
        if let WorkerState::Ready { recycle_at, .. } = self {
            *recycle_at = at;
        }
    }

    /// Retired (a rollout, a scale-down): asked to stop and finish its
    /// work, killed at `kill_at`. Returns the probe that was running, to be
    /// killed.
    pub fn drain(&mut self, kill_at: Instant) -> Option<Pid> {
        let probe = self.probe_pid();
        *self = WorkerState::Draining {
            kill_at: Some(kill_at),
        };
        probe
    }

    /// Asked to stop on its own (not ready in time), killed at `kill_at`.
    /// Returns the probe that was running, to be killed.
    pub fn stop(&mut self, kill_at: Instant) -> Option<Pid> {
        let probe = self.probe_pid();
        *self = WorkerState::Stopping {
            kill_at: Some(kill_at),
        };
        probe
    }

    /// A starting worker's probe is now `probe`; a worker in any other
    /// stage has none.
    pub fn set_probe(&mut self, new: Probe) {
        if let WorkerState::Starting { probe, .. } = self {
            *probe = new;
        }
    }

    /// A ready worker's watchdog runs out at `by` (`None`: no watchdog);
    /// a worker in any other stage has none.
    pub fn set_watchdog(&mut self, by: Option<Instant>) {
        if let WorkerState::Ready { watchdog_by, .. } = self {
            *watchdog_by = by;
        }
    }

    /// Its generation is being stopped as a whole: the generation's
    /// deadline takes over from each of its timers. Returns the probe
    /// that was running, to be killed.
    pub fn disarm(&mut self) -> Option<Pid> {
        let probe = self.probe_pid();
        match self {
            WorkerState::Starting { ready_by, probe } => {
                *ready_by = None;
                *probe = Probe::Idle;
            }
            WorkerState::Ready {
                watchdog_by,
                recycle_at,
            } => {
                *watchdog_by = None;
                *recycle_at = None;
            }
            WorkerState::Stopping { kill_at } | WorkerState::Draining { kill_at } => {
                *kill_at = None
            }
        }
        probe
    }
}

/// Workers are kept by key: a slot's own worker under the slot's index,
/// and the slot's second process while the worker in it is recycled (the
/// new worker while it starts, then the old one while it drains) under
/// this plus the index.
pub const SECOND_KEY: u32 = 1 << 16;

/// One process of a generation, in its slot.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Its slot, 0..N-1 (`SOCKVISOR_WORKER`); a replacement keeps it.
    pub index: u32,
    /// The slot's second process during a recycle (see [`SECOND_KEY`]).
    pub second: bool,
    /// With `--worker-max-rss`: the last samples in a row that found it
    /// over the limit.
    pub samples_over: u32,
    /// Its process tree's resident memory at the last sample, in bytes.
    pub rss: Option<u64>,
    /// Also its process group.
    pub pid: Pid,
    pub started: Instant,
    pub state: WorkerState,
    /// The last `STATUS=` it sent.
    pub status_text: Option<String>,
    /// Its watchdog timeout (`--watchdog`, or what it set with
    /// `WATCHDOG_USEC=`); `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// It missed its watchdog and has not pinged since: a repeated miss
    /// is not said again. (Not carried over a re-exec: at worst, said once
    /// more.)
    pub watchdog_missed: bool,
}

impl Worker {
    pub fn new(index: u32, pid: Pid, now: Instant, ready_timeout: Duration) -> Worker {
        Worker {
            index,
            second: false,
            samples_over: 0,
            rss: None,
            pid,
            started: now,
            state: WorkerState::starting(deadline::after(now, ready_timeout), Probe::Idle),
            status_text: None,
            watchdog: None,
            watchdog_missed: false,
        }
    }

    /// Puts back the slot and the second-process flag that `key` says,
    /// whatever a change wrote to them: a worker's key is its identity.
    fn keep_identity(&mut self, key: u32) {
        self.second = key >= SECOND_KEY;
        self.index = if self.second { key - SECOND_KEY } else { key };
    }

    /// Its key among its generation's workers (see [`SECOND_KEY`]).
    pub fn key(&self) -> u32 {
        if self.second {
            SECOND_KEY + self.index
        } else {
            self.index
        }
    }
}

/// One worker index of a generation, and its restart bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    /// Not started yet: a rolling upgrade fills it when there is room.
    pub pending: bool,
    /// Nobody belongs here any more: retired (rolling upgrade, scale-down)
    /// or given up (a rollout that stopped). Never refilled.
    pub vacant: bool,
    /// Replacements started in this slot so far.
    pub restarts: u32,
    /// Failures in a row, for the backoff.
    pub consecutive_failures: u32,
    /// When the replacement is due, if one waits for its backoff.
    pub restart_at: Option<Instant>,
}

/// One of a worker's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerTimer {
    /// [`WorkerState::deadline`]: to be ready, or to be killed.
    Deadline,
    /// [`WorkerState::probe_at`].
    Probe,
    /// [`WorkerState::watchdog_by`].
    Watchdog,
}

/// What the worker indexes hold of one worker, to take it out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WorkerKeys {
    pid: Pid,
    state: WorkerState,
}

impl WorkerKeys {
    fn of(worker: &Worker) -> WorkerKeys {
        WorkerKeys {
            pid: worker.pid,
            state: worker.state,
        }
    }

    fn timers(&self) -> impl Iterator<Item = (Instant, WorkerTimer)> {
        [
            (self.state.deadline(), WorkerTimer::Deadline),
            (self.state.probe_at(), WorkerTimer::Probe),
            (self.state.watchdog_by(), WorkerTimer::Watchdog),
        ]
        .into_iter()
        .filter_map(|(at, timer)| at.map(|at| (at, timer)))
    }

    /// A rollout retires starting workers before ready ones.
    fn retirable(&self) -> Option<bool> {
        match self.state.stage() {
            WorkerStage::Starting => Some(true),
            WorkerStage::Ready => Some(false),
            WorkerStage::Stopping | WorkerStage::Draining => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WorkerIndex {
    // Ordered maps rather than hash maps: O(log N) as well, and no random
    // seed to draw from the system.
    by_pid: BTreeMap<Pid, u32>,
    by_probe: BTreeMap<Pid, u32>,
    timers: BTreeSet<(Instant, u32, WorkerTimer)>,
    /// Age limits (`--worker-max-age`), apart from the other timers: one
    /// that has passed may wait for room (another replacement running),
    /// and then must neither wake the loop nor be walked over.
    recycles: BTreeSet<(Instant, u32)>,
    /// Starting and ready workers, by (starting, index): the last is the
    /// one a rollout retires first.
    retirable: BTreeSet<(bool, u32)>,
    ready: usize,
}

impl WorkerIndex {
    fn add(&mut self, index: u32, keys: &WorkerKeys) {
        self.by_pid.insert(keys.pid, index);
        if let Some(probe) = keys.state.probe_pid() {
            self.by_probe.insert(probe, index);
        }
        for (at, timer) in keys.timers() {
            self.timers.insert((at, index, timer));
        }
        if let Some(at) = keys.state.recycle_at() {
            self.recycles.insert((at, index));
        }
        if let Some(starting) = keys.retirable() {
            self.retirable.insert((starting, index));
        }
        if keys.state.is_ready() {
            self.ready += 1;
        }
    }

    fn remove(&mut self, index: u32, keys: &WorkerKeys) {
        if self.by_pid.get(&keys.pid) == Some(&index) {
            self.by_pid.remove(&keys.pid);
        }
        if let Some(probe) = keys.state.probe_pid()
            && self.by_probe.get(&probe) == Some(&index)
        {
            self.by_probe.remove(&probe);
        }
        for (at, timer) in keys.timers() {
            self.timers.remove(&(at, index, timer));
        }
        if let Some(at) = keys.state.recycle_at() {
            self.recycles.remove(&(at, index));
        }
        if let Some(starting) = keys.retirable() {
            self.retirable.remove(&(starting, index));
        }
        if keys.state.is_ready() {
            self.ready = self.ready.saturating_sub(1);
        }
    }

    fn update(&mut self, index: u32, before: &WorkerKeys, after: &WorkerKeys) {
        if before != after {
            self.remove(index, before);
            self.add(index, after);
        }
    }
}

/// A generation's live workers, one per slot index, in index order.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    by_index: BTreeMap<u32, Worker>,
    index: WorkerIndex,
}

impl Workers {
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// In index order.
    pub fn iter(&self) -> std::collections::btree_map::Values<'_, u32, Worker> {
        self.by_index.values()
    }

    /// The one with the lowest index.
    pub fn first(&self) -> Option<&Worker> {
        self.by_index.values().next()
    }

    pub fn get(&self, index: u32) -> Option<&Worker> {
        self.by_index.get(&index)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<WorkerMut<'_>> {
        let worker = self.by_index.get_mut(&index)?;
        let before = WorkerKeys::of(worker);
        Some(WorkerMut {
            worker,
            indexes: &mut self.index,
            key: index,
            before,
        })
    }

    /// Adds a worker under its key (its slot's index, or the slot's
    /// second key). One already there is displaced and returned.
    pub fn insert(&mut self, worker: Worker) -> Option<Worker> {
        let key = worker.key();
        let displaced = self.remove(key);
        self.index.add(key, &WorkerKeys::of(&worker));
        self.by_index.insert(key, worker);
        displaced
    }

    pub fn remove(&mut self, index: u32) -> Option<Worker> {
        let worker = self.by_index.remove(&index)?;
        self.index.remove(index, &WorkerKeys::of(&worker));
        Some(worker)
    }

    /// The slots' second processes (recycles in progress), in slot order.
    pub fn seconds(&self) -> impl Iterator<Item = &Worker> {
        self.by_index.range(SECOND_KEY..).map(|(_, w)| w)
    }

    /// The key of the worker whose pid is `pid`.
    pub fn index_of_pid(&self, pid: Pid) -> Option<u32> {
        self.index.by_pid.get(&pid).copied()
    }

    /// The pids of the readiness probes running.
    pub fn probe_pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.index.by_probe.keys().copied()
    }

    /// The key of the worker whose readiness probe runs as `pid`.
    pub fn index_of_probe(&self, pid: Pid) -> Option<u32> {
        self.index.by_probe.get(&pid).copied()
    }

    /// Workers in state ready.
    pub fn ready_count(&self) -> usize {
        self.index.ready
    }

    /// The worker a rollout retires next: a starting one before a ready
    /// one, the highest index first.
    pub fn retire_candidate(&self) -> Option<u32> {
        self.index.retirable.last().map(|(_, index)| *index)
    }

    /// The earliest timer of any worker.
    pub fn next_timer(&self) -> Option<Instant> {
        self.index.timers.first().map(|(at, _, _)| *at)
    }

    /// The earliest age limit of any worker.
    pub fn next_recycle(&self) -> Option<Instant> {
        self.index.recycles.first().map(|(at, _)| *at)
    }

    /// The worker whose age limit passed first, if one has by `now`.
    pub fn first_recycle_due(&self, now: Instant) -> Option<u32> {
        self.index
            .recycles
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|(_, key)| *key)
    }

    /// The workers with one of `timers` due by `now`, each once, in index
    /// order. Costs the number of due timers, not the number of workers.
    pub fn due(&self, now: Instant, timers: &[WorkerTimer]) -> Vec<u32> {
        let mut due: Vec<u32> = self
            .index
            .timers
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .filter(|(_, _, timer)| timers.contains(timer))
            .map(|(_, index, _)| *index)
            .collect();
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Changes every worker (a generation-wide step such as a stop).
    pub fn for_each_mut(&mut self, mut change: impl FnMut(&mut Worker)) {
        for (key, worker) in &mut self.by_index {
            let before = WorkerKeys::of(worker);
            change(worker);
            worker.keep_identity(*key);
            self.index.update(*key, &before, &WorkerKeys::of(worker));
        }
    }
}

/// A worker being changed; the indexes follow when it is dropped. Its key
/// (slot index, and whether it is the slot's second process) is its
/// identity and is kept whatever is written to it.
pub struct WorkerMut<'a> {
    worker: &'a mut Worker,
    indexes: &'a mut WorkerIndex,
    key: u32,
    before: WorkerKeys,
}

impl Deref for WorkerMut<'_> {
    type Target = Worker;
    fn deref(&self) -> &Worker {
        self.worker
    }
}

impl DerefMut for WorkerMut<'_> {
    fn deref_mut(&mut self) -> &mut Worker {
        self.worker
    }
}

impl Drop for WorkerMut<'_> {
    fn drop(&mut self) {
        self.worker.keep_identity(self.key);
        let after = WorkerKeys::of(self.worker);
        self.indexes.update(self.key, &self.before, &after);
    }
}

/// What the slot indexes hold of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotKeys {
    pending: bool,
    vacant: bool,
    restart_at: Option<Instant>,
}

impl SlotKeys {
    fn of(slot: &Slot) -> SlotKeys {
        SlotKeys {
            pending: slot.pending,
            vacant: slot.vacant,
            restart_at: slot.restart_at,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotIndex {
    /// Every slot with a replacement due at some time.
    timers: BTreeSet<(Instant, u32)>,
    /// Pending slots that may start now, and those waiting for a backoff.
    pending_now: BTreeSet<u32>,
    pending_later: BTreeSet<(Instant, u32)>,
    /// Slots not given up whose replacement waits for its backoff.
    waiting: BTreeSet<u32>,
    pending: usize,
    /// Neither pending nor vacant.
    active: usize,
}

impl SlotIndex {
    fn add(&mut self, index: u32, keys: &SlotKeys) {
        if let Some(at) = keys.restart_at {
            self.timers.insert((at, index));
            if !keys.vacant {
                self.waiting.insert(index);
            }
        }
        if keys.pending {
            self.pending += 1;
            match keys.restart_at {
                Some(at) => self.pending_later.insert((at, index)),
                None => self.pending_now.insert(index),
            };
        } else if !keys.vacant {
            self.active += 1;
        }
    }

    fn remove(&mut self, index: u32, keys: &SlotKeys) {
        if let Some(at) = keys.restart_at {
            self.timers.remove(&(at, index));
            self.waiting.remove(&index);
        }
        if keys.pending {
            self.pending = self.pending.saturating_sub(1);
            match keys.restart_at {
                Some(at) => self.pending_later.remove(&(at, index)),
                None => self.pending_now.remove(&index),
            };
        } else if !keys.vacant {
            self.active = self.active.saturating_sub(1);
        }
    }

    fn update(&mut self, index: u32, before: &SlotKeys, after: &SlotKeys) {
        if before != after {
            self.remove(index, before);
            self.add(index, after);
        }
    }
}

/// A generation's slots, one per worker index; their number is its size.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    slots: Vec<Slot>,
    index: SlotIndex,
}

impl Slots {
    /// `count` slots like `template`.
    pub fn new(count: usize, template: &Slot) -> Slots {
        Slots::from_vec(vec![template.clone(); count])
    }

    pub fn from_vec(slots: Vec<Slot>) -> Slots {
        let mut index = SlotIndex::default();
        for (at, slot) in slots.iter().enumerate() {
            index.add(at as u32, &SlotKeys::of(slot));
        }
        Slots { slots, index }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Slot> {
        self.slots.iter()
    }

    pub fn get(&self, index: u32) -> Option<&Slot> {
        self.slots.get(index as usize)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<SlotMut<'_>> {
        let slot = self.slots.get_mut(index as usize)?;
        let before = SlotKeys::of(slot);
        Some(SlotMut {
            slot,
            indexes: &mut self.index,
            key: index,
            before,
        })
    }

    /// Changes every slot (a generation-wide step).
    pub fn for_each_mut(&mut self, mut change: impl FnMut(&mut Slot)) {
        for (at, slot) in self.slots.iter_mut().enumerate() {
            let before = SlotKeys::of(slot);
            change(slot);
            self.index.update(at as u32, &before, &SlotKeys::of(slot));
        }
    }

    /// Grows with empty slots, or drops the highest ones.
    pub fn resize(&mut self, count: usize) {
        while self.slots.len() > count {
            if let Some(slot) = self.slots.pop() {
                let at = self.slots.len() as u32;
                self.index.remove(at, &SlotKeys::of(&slot));
            }
        }
        while self.slots.len() < count {
            let slot = Slot::default();
            self.index
                .add(self.slots.len() as u32, &SlotKeys::of(&slot));
            self.slots.push(slot);
        }
    }

    pub fn pending_count(&self) -> usize {
        self.index.pending
    }

    /// Slots that should have a worker: neither pending nor vacant.
    pub fn active_count(&self) -> usize {
        self.index.active
    }

    /// The earliest replacement due in any slot.
    pub fn next_restart(&self) -> Option<Instant> {
        self.index.timers.first().map(|(at, _)| *at)
    }

    /// Slots whose replacement is due by `now`, in index order.
    pub fn due_restarts(&self, now: Instant) -> Vec<u32> {
        let mut due: Vec<u32> = self
            .index
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, index)| *index)
            .collect();
        due.sort_unstable();
        due
    }

    /// The lowest slot not given up that waits for its replacement's
    /// backoff.
    pub fn first_waiting(&self) -> Option<u32> {
        self.index.waiting.first().copied()
    }

    /// A pending slot that may be started by `now`: the lowest that waits
    /// for nothing, or the one whose backoff ended first, whichever index
    /// is lower.
    pub fn next_pending(&self, now: Instant) -> Option<u32> {
        let ready = self.index.pending_now.first().copied();
        let backed_off = self
            .index
            .pending_later
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|(_, index)| *index);
        match (ready, backed_off) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A slot being changed; the indexes follow when it is dropped.
pub struct SlotMut<'a> {
    slot: &'a mut Slot,
    indexes: &'a mut SlotIndex,
    key: u32,
    before: SlotKeys,
}

impl Deref for SlotMut<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        self.slot
    }
}

impl DerefMut for SlotMut<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        self.slot
    }
}

impl Drop for SlotMut<'_> {
    fn drop(&mut self) {
        let after = SlotKeys::of(self.slot);
        self.indexes.update(self.key, &self.before, &after);
    }
}

/// How the workers asked to drain ended: each status with how many ended
/// so, in the order first seen. The statuses a process can end with are
/// few (256 codes and the signals), so this stays small at any N.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainExits(Vec<(ExitStatus, u32)>);

impl DrainExits {
    pub fn record(&mut self, status: ExitStatus) {
        match self.0.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count = count.saturating_add(1),
            None => self.0.push((status, 1)),
        }
    }

    /// Each status and its count, for the re-exec hand-over.
    pub fn counts(&self) -> &[(ExitStatus, u32)] {
        &self.0
    }

    pub fn from_counts(counts: impl IntoIterator<Item = (ExitStatus, u32)>) -> DrainExits {
        let mut exits = DrainExits::default();
        for (status, count) in counts.into_iter().filter(|(_, count)| *count > 0) {
            match exits.0.iter_mut().find(|(s, _)| *s == status) {
                Some((_, recorded)) => *recorded = recorded.saturating_add(count),
                None => exits.0.push((status, count)),
            }
        }
        exits
    }

    /// `exited with status 0` when every one ended the same way (or
    /// `fallback` when none was recorded); otherwise each way with its
    /// count, the most common first: `ended: 3 exited with status 0, 1 was
    /// killed by SIGKILL`.
    pub fn describe(&self, fallback: ExitStatus) -> String {
        match self.0.as_slice() {
            [] => fallback.to_string(),
            [(status, _)] => status.to_string(),
            several => {
                let mut counted = several.to_vec();
                counted.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
                let each: Vec<String> = counted
                    .iter()
                    .map(|(status, count)| format!("{count} {status}"))
                    .collect();
                format!("ended: {}", each.join(", "))
            }
        }
    }
}

/// One launch of the command: `size` worker processes on the same sockets.
#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub started: Instant,
    pub phase: Phase,
    /// Draining and failed: when every worker's process group gets
    /// `SIGKILL` (`None` once it has).
    pub kill_at: Option<Instant>,
    /// The upgrade that started it; `None` for the first start or a restart.
    pub upgrade: Option<UpgradeId>,
    /// Its worker 0's process group is (or was made) the terminal's
    /// foreground group.
    pub foreground: bool,
    /// The processes alive.
    pub workers: Workers,
    /// One per worker index; their number is the generation's size.
    pub slots: Slots,
    /// The first unplanned exit of one of its workers that counts as a
    /// failure, for sockvisor's exit status.
    pub failure: Option<ExitStatus>,
    /// How its workers that were asked to drain ended.
    pub drained: DrainExits,
    /// A worker missed its watchdog: replaced, then stopped with only a
    /// short grace (a hung process will not drain).
    pub hung: bool,
    /// The operator was told that it does not handle the stop signal
    /// (once per generation).
    pub stop_signal_warned: bool,
}

impl Generation {
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slots that should have a worker: neither pending nor vacant.
    pub fn active_slots(&self) -> usize {
        self.slots.active_count()
    }

    /// Its workers that count as serving: ready and not retired.
    pub fn serving(&self) -> Vec<&Worker> {
        self.workers.iter().filter(|w| w.state.is_ready()).collect()
    }

    /// How many of its workers serve.
    pub fn serving_count(&self) -> usize {
        self.workers.ready_count()
    }

    /// `generation 2 (pid 1234)`, or `generation 2 (4 workers)`.
    pub fn describe(&self) -> String {
        match (self.size(), self.workers.first()) {
            (1, Some(worker)) => format!("generation {} (pid {})", self.number, worker.pid),
            (1, None) => format!("generation {}", self.number),
            (size, _) => format!("generation {} ({size} workers)", self.number),
        }
    }

    /// `generation 2 (pid 1234)`, or `generation 2 worker 3 (pid 1237)`.
    /// Why a worker's exit fails this starting generation, as the
    /// operator reads it: a worker that was ready is not said to have died
    /// before.
    pub fn exit_before_ready(&self, worker: &Worker, status: crate::reaper::ExitStatus) -> String {
        let describe = self.describe_worker(worker);
        if worker.state.is_ready() {
            format!(
                "{describe} {status} after it was ready, before generation {} was",
                self.number
            )
        } else {
            format!("{describe} {status} before it was ready")
        }
    }

    pub fn describe_worker(&self, worker: &Worker) -> String {
        if self.size() == 1 {
            format!("generation {} (pid {})", self.number, worker.pid)
        } else {
            format!(
                "generation {} worker {} (pid {})",
                self.number, worker.index, worker.pid
            )
        }
    }

    pub fn worker(&self, index: u32) -> Option<&Worker> {
        self.workers.get(index)
    }

    pub fn worker_mut(&mut self, index: u32) -> Option<WorkerMut<'_>> {
        self.workers.get_mut(index)
    }

    /// Every slot that is neither pending nor vacant has a ready worker,
    /// and no slot waits to be started.
    pub fn all_ready(&self) -> bool {
        self.slots.pending_count() == 0 && self.serving_count() == self.active_slots()
    }

    /// The pids of its workers.
    pub fn pids(&self) -> Vec<Pid> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// The earliest moment one of its timers is due, leaving out its
    /// slots' restarts (a rolling generation's, while they wait for room).
    pub fn next_deadline_but_restarts(&self) -> Option<Instant> {
        [self.kill_at, self.workers.next_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest moment one of its timers is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.kill_at,
            self.workers.next_timer(),
            self.slots.next_restart(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
impl Generation {
    /// Rebuilds every index from what it indexes and compares. The
    /// supervisor's tests run this after every event, so that each rule
    /// tested there also proves the indexes never drift.
    pub(super) fn assert_indexes_agree(&self) {
        let mut rebuilt = Workers::default();
        for (key, worker) in &self.workers.by_index {
            assert_eq!(*key, worker.key(), "generation {}", self.number);
            rebuilt.insert(worker.clone());
        }
        let (rebuilt, kept) = (&rebuilt.index, &self.workers.index);
        let number = self.number;
        assert_eq!(
            rebuilt.by_pid, kept.by_pid,
            "pid index of generation {number}"
        );
        assert_eq!(
            rebuilt.by_probe, kept.by_probe,
            "probe index of generation {number}"
        );
        assert_eq!(rebuilt.timers, kept.timers, "timers of generation {number}");
        assert_eq!(
            rebuilt.recycles, kept.recycles,
            "age limits of generation {number}"
        );
        assert_eq!(
            rebuilt.retirable, kept.retirable,
            "retirement order of generation {number}"
        );
        assert_eq!(
            rebuilt.ready, kept.ready,
            "ready count of generation {number}"
        );
        let rebuilt = Slots::from_vec(self.slots.slots.clone());
        assert_eq!(
            rebuilt.index, self.slots.index,
            "slot indexes of generation {}",
            self.number
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(index: u32, pid: i32, now: Instant) -> Worker {
        Worker::new(index, Pid::from_raw(pid), now, Duration::from_secs(10))
    }

    #[test]
    fn changing_a_worker_through_its_guard_moves_it_in_every_index() {
        let now = Instant::now();
        let mut workers = Workers::default();
        for index in 0..4 {
            workers.insert(worker(index, 100 + index as i32, now));
        }
        assert_eq!(workers.index_of_pid(Pid::from_raw(102)), Some(2));
        assert_eq!(workers.next_timer(), Some(now + Duration::from_secs(10)));
        assert_eq!(workers.retire_candidate(), Some(3));
        {
            let mut third = workers.get_mut(3).unwrap();
            third.state = WorkerState::ready(Some(now + Duration::from_secs(1)), None);
        }
        {
            let mut first = workers.get_mut(1).unwrap();
            let ready_by = first.state.deadline();
            first.state = WorkerState::Starting {
                ready_by,
                probe: Probe::Running(Pid::from_raw(900)),
            };
        }
        assert_eq!(workers.ready_count(), 1);
        assert_eq!(workers.index_of_probe(Pid::from_raw(900)), Some(1));
        assert_eq!(workers.next_timer(), Some(now + Duration::from_secs(1)));
        // Starting workers are retired before ready ones.
        assert_eq!(workers.retire_candidate(), Some(2));
        let later = now + Duration::from_secs(10);
        assert_eq!(workers.due(later, &[WorkerTimer::Watchdog]), [3]);
        assert_eq!(workers.due(later, &[WorkerTimer::Deadline]), [0, 1, 2]);
        assert!(workers.due(now, &[WorkerTimer::Deadline]).is_empty());
        let removed = workers.remove(3).unwrap();
        assert_eq!(removed.pid, Pid::from_raw(103));
        assert_eq!(workers.ready_count(), 0);
        assert_eq!(workers.index_of_pid(Pid::from_raw(103)), None);
        {
            let mut first = workers.get_mut(1).unwrap();
            assert_eq!(first.state.disarm(), Some(Pid::from_raw(900)));
        }
        assert_eq!(workers.index_of_probe(Pid::from_raw(900)), None);
        workers.for_each_mut(|w| {
            w.state.disarm();
        });
        assert_eq!(workers.next_timer(), None);
    }

    #[test]
    fn a_worker_keeps_its_slot_whatever_is_written_to_its_index() {
        let now = Instant::now();
        let mut workers = Workers::default();
        workers.insert(worker(1, 101, now));
        workers.get_mut(1).unwrap().index = 7;
        assert_eq!(workers.get(1).map(|w| w.index), Some(1));
        assert!(workers.get(7).is_none());
        // A slot holds one worker: a second one displaces the first.
        let displaced = workers.insert(worker(1, 201, now)).unwrap();
        assert_eq!(displaced.pid, Pid::from_raw(101));
        assert_eq!(workers.index_of_pid(Pid::from_raw(101)), None);
        assert_eq!(workers.len(), 1);
    }

    #[test]
    fn slots_answer_pending_waiting_and_due_questions_from_their_indexes() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let pending = Slot {
            pending: true,
            ..Slot::default()
        };
        let mut slots = Slots::new(4, &pending);
        assert_eq!((slots.pending_count(), slots.active_count()), (4, 0));
        assert_eq!(slots.next_pending(now), Some(0));
        slots.get_mut(0).unwrap().pending = false;
        {
            let mut second = slots.get_mut(1).unwrap();
            second.restart_at = Some(later);
        }
        // Slot 1 waits for its backoff: slot 2 is next until it is over.
        assert_eq!(slots.next_pending(now), Some(2));
        assert_eq!(slots.next_pending(later), Some(1));
        assert_eq!(slots.next_restart(), Some(later));
        assert_eq!(slots.first_waiting(), Some(1));
        assert_eq!(slots.due_restarts(later), [1]);
        slots.get_mut(1).unwrap().vacant = true;
        assert_eq!(slots.first_waiting(), None);
        assert_eq!((slots.pending_count(), slots.active_count()), (3, 1));
        slots.resize(1);
        assert_eq!((slots.len(), slots.pending_count()), (1, 0));
        assert_eq!(slots.next_restart(), None);
        slots.resize(3);
        assert_eq!((slots.len(), slots.active_count()), (3, 3));
        slots.for_each_mut(|s| s.vacant = true);
        assert_eq!(slots.active_count(), 0);
    }

    #[test]
    fn ready_modes_parse() {
        assert_eq!(ReadyMode::parse("notify"), Ok(ReadyMode::Notify));
        assert_eq!(ReadyMode::parse("now"), Ok(ReadyMode::Now));
        assert_eq!(
            ReadyMode::parse("delay=1.5s"),
            Ok(ReadyMode::Delay(Duration::from_millis(1500)))
        );
        assert_eq!(
            ReadyMode::parse("exec=curl -f http://127.0.0.1:9000/health"),
            Ok(ReadyMode::Exec(
                "curl -f http://127.0.0.1:9000/health".into()
            ))
        );
    }

    #[test]
    fn bad_ready_modes_are_explained() {
        for bad in ["", "soon", "delay=", "exec=", "exec= ", "delay=x"] {
            assert!(ReadyMode::parse(bad).is_err(), "{bad}");
        }
        assert!(
            ReadyMode::parse("soon")
                .unwrap_err()
                .contains("notify, now")
        );
    }
}
