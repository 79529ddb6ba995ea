//! A model-based property test of the supervisor: random sequences of
//! events (upgrade, scale, stop, READY=1, WATCHDOG=1, exits with any
//! status, clock ticks, failed spawns, re-exec round trips) against the real state
//! machine with a fake process table, checking after every step the rules
//! users rely on:
//!
//! - at most one generation is starting;
//! - `current` names a generation that is ready;
//! - the processes of starting and serving generations never exceed twice
//!   the largest worker count asked for (old and new side by side);
//! - nothing is spawned once a stop was requested;
//! - every process the supervisor counts as a worker is alive, and every
//!   live process is counted (nothing runs behind its back);
//! - after a tick, no deadline is in the past (watchdogs included);
//! - the re-exec state captured at any step restores to the same state;
//! - at the end, a stop stops everything and every operation that was
//!   accepted has had exactly one result.
//!
//! `PROPTEST_CASES=20000 cargo test --lib supervisor::model` is the long
//! run; the default is proptest's 256 cases.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::notify::NotifyMessage;
use crate::reaper::ExitStatus;

/// The processes the supervisor started, as the kernel would see them.
#[derive(Debug, Clone, Default)]
struct World {
    next_pid: i32,
    /// pid → (generation, worker index).
    alive: BTreeMap<i32, (u32, u32)>,
    /// Processes sent SIGKILL (to them or their group): they exit next.
    killed: BTreeSet<i32>,
    /// Processes sent the stop signal.
    asked_to_stop: BTreeSet<i32>,
    /// Spawns that fail from now on (EAGAIN), counted down.
    failing_spawns: u32,
    /// Set when a stop was requested: nothing may be spawned after.
    stop_requested: bool,
    spawned_after_stop: bool,
}

impl Spawner for World {
    fn spawn(&mut self, generation: u32, index: u32, _: bool) -> Result<Pid, SpawnError> {
        if self.stop_requested {
            self.spawned_after_stop = true;
        }
        if self.failing_spawns > 0 {
            self.failing_spawns -= 1;
            return Err(SpawnError::Fork(nix::errno::Errno::EAGAIN));
        }
        self.next_pid += 1;
        let pid = 10_000 + self.next_pid;
        self.alive.insert(pid, (generation, index));
        Ok(Pid::from_raw(pid))
    }

    fn spawn_probe(&mut self, _: &str, _: u32, _: Pid) -> Result<Pid, SpawnError> {
        Err(SpawnError::Fork(nix::errno::Errno::EAGAIN))
    }
}

impl World {
    /// The kernel's part of an effect the supervisor decided: a process
    /// sent SIGKILL will die, one sent another signal (but SIGCONT) was
    /// asked to stop.
    fn carry_out(&mut self, effect: Effect) {
        let (pid, signal) = match effect {
            Effect::Signal { pid, signal } => (pid.as_raw(), signal),
            // Every worker is its own process group.
            Effect::SignalGroup { group, signal } => (group.as_raw(), signal),
            // A signal passed on for the server's own use (USR1, HUP
            // without sockets) is no request to stop.
            Effect::HandTerminal { .. } | Effect::Retire { .. } | Effect::Forward { .. } => return,
        };
        if signal == Signal::SIGKILL {
            if self.alive.contains_key(&pid) {
                self.killed.insert(pid);
            }
        } else if signal != Signal::SIGCONT && self.alive.contains_key(&pid) {
            self.asked_to_stop.insert(pid);
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Upgrade,
    Scale(u32),
    Stop,
    /// READY=1 from the live process chosen by the selector.
    Ready(usize),
    /// WATCHDOG=1 from the chosen live process.
    Ping(usize),
    /// A memory sample of the chosen live process: over the limit or not.
    Sample(usize, bool),
    /// The chosen live process exits on its own.
    Exit(usize, Ending),
    /// Processes asked to stop finish draining (exit 0).
    Drained,
    Tick(u64),
    FailSpawns(u32),
    Reexec,
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Clean,
    Code(i32),
    Killed,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Upgrade),
        1 => (1u32..=4).prop_map(Event::Scale),
        1 => Just(Event::Stop),
        6 => any::<usize>().prop_map(Event::Ready),
        2 => any::<usize>().prop_map(Event::Ping),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(which, over)| Event::Sample(which, over)),
        3 => (any::<usize>(), prop_oneof![
            Just(Ending::Clean),
            (1i32..=3).prop_map(Ending::Code),
            Just(Ending::Killed),
        ]).prop_map(|(which, ending)| Event::Exit(which, ending)),
        2 => Just(Event::Drained),
        3 => (0u64..=12_000).prop_map(Event::Tick),
        1 => (1u32..=2).prop_map(Event::FailSpawns),
        1 => Just(Event::Reexec),
    ]
}

/// One run: the supervisor, its world and the clock.
struct Run {
    supervisor: Supervisor<World>,
    now: Instant,
    /// Operations accepted (upgrade, scale) and how many results each had.
    operations: BTreeMap<u64, u32>,
    most_workers: u32,
    max_surge: Option<u32>,
}

/// `--worker-max-rss` in the model: a sample is either twice this or half.
const MAX_RSS: u64 = 100 << 20;

/// What the property test recycles by: nothing, or age and memory.
fn recycle_settings(on: bool) -> Recycle {
    if on {
        Recycle {
            max_rss: Some(MAX_RSS),
            max_age: Some(Duration::from_secs(8)),
            sample_interval: Duration::from_secs(10),
        }
    } else {
        Recycle::default()
    }
}

impl Run {
    fn new(
        workers: u32,
        max_surge: Option<u32>,
        restart: RestartPolicy,
        watchdog: Option<Duration>,
        recycle: Recycle,
    ) -> Run {
        let config = Config {
            restart,
            restart_delay: Duration::from_millis(100),
            restart_delay_max: Duration::from_secs(2),
            stop_signal: Signal::SIGQUIT,
            stop_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(7),
            ready: ReadyMode::Notify,
            ready_timeout: Duration::from_secs(10),
            workers,
            max_surge,
            watchdog,
            recycle,
            terminal: false,
        };
        let now = Instant::now();
        let mut supervisor = Supervisor::new(config, World::default());
        supervisor.start(now).expect("the first spawn cannot fail");
        let mut run = Run {
            supervisor,
            now,
            operations: BTreeMap::new(),
            most_workers: workers,
            max_surge,
        };
        run.carry_out_effects();
        run
    }

    /// As the event loop does after each event: carry out what the
    /// supervisor decided, in order.
    fn carry_out_effects(&mut self) {
        for effect in self.supervisor.take_effects() {
            self.world().carry_out(effect);
        }
    }

    fn world(&mut self) -> &mut World {
        self.supervisor.processes_mut()
    }

    /// The generation and key of the live process `which` selects, as the
    /// event loop finds a notify message's sender: by the supervisor's pid
    /// index.
    fn owner(&self, which: usize) -> Option<(u32, u32)> {
        let (pid, _, _) = self.pick(which)?;
        self.supervisor.worker_of(Pid::from_raw(pid))
    }

    /// The live process `which` selects, if any.
    fn pick(&self, which: usize) -> Option<(i32, u32, u32)> {
        let alive = &self.supervisor.processes().alive;
        if alive.is_empty() {
            return None;
        }
        alive
            .iter()
            .nth(which % alive.len())
            .map(|(pid, (g, i))| (*pid, *g, *i))
    }

    fn exit(&mut self, pid: i32, status: ExitStatus) {
        self.world().alive.remove(&pid);
        self.world().killed.remove(&pid);
        self.world().asked_to_stop.remove(&pid);
        let now = self.now;
        self.supervisor.on_exit(
            Exit {
                pid: Pid::from_raw(pid),
                status,
            },
            now,
        );
        self.carry_out_effects();
    }

    /// The kernel's part: what was sent SIGKILL dies.
    fn deliver_kills(&mut self) {
        while let Some(pid) = self.world().killed.iter().next().copied() {
            self.exit(pid, ExitStatus::Signal(Signal::SIGKILL));
        }
    }

    fn collect_notices(&mut self) {
        for notice in self.supervisor.take_notices() {
            if let Notice::Finished { upgrade, .. } = notice {
                *self.operations.entry(upgrade).or_default() += 1;
                assert!(
                    self.operations[&upgrade] == 1,
                    "operation {} finished twice",
                    upgrade
                );
            }
        }
    }

    fn accepted(&mut self, id: Result<UpgradeId, UpgradeRejection>) {
        if let Ok(id) = id {
            let previous = self.operations.insert(id, 0);
            assert!(previous.is_none(), "operation id {} reused", id);
        }
    }

    fn apply(&mut self, event: &Event) {
        let now = self.now;
        match event {
            Event::Upgrade => {
                let id = self.supervisor.request_upgrade(now);
                self.accepted(id);
            }
            Event::Scale(workers) => {
                self.most_workers = self.most_workers.max(*workers);
                let id = self.supervisor.request_scale(*workers, now);
                self.accepted(id);
            }
            Event::Stop => {
                self.world().stop_requested = true;
                self.supervisor.on_stop_request("stop requested", now);
            }
            Event::Ready(which) => {
                if let Some((generation, index)) = self.owner(*which) {
                    let message = NotifyMessage {
                        ready: true,
                        ..NotifyMessage::default()
                    };
                    self.supervisor.on_notify(generation, index, &message, now);
                }
            }
            Event::Ping(which) => {
                if let Some((generation, index)) = self.owner(*which) {
                    let message = NotifyMessage {
                        watchdog_ping: true,
                        ..NotifyMessage::default()
                    };
                    self.supervisor.on_notify(generation, index, &message, now);
                }
            }
            Event::Sample(which, over) => {
                if let Some((generation, key)) = self.owner(*which) {
                    let bytes = if *over { 2 * MAX_RSS } else { MAX_RSS / 2 };
                    self.supervisor
                        .on_memory_samples(&[(generation, key, bytes)], now);
                }
            }
            Event::Exit(which, ending) => {
                if let Some((pid, _, _)) = self.pick(*which) {
                    let status = match ending {
                        Ending::Clean => ExitStatus::Code(0),
                        Ending::Code(code) => ExitStatus::Code(*code),
                        Ending::Killed => ExitStatus::Signal(Signal::SIGKILL),
                    };
                    self.exit(pid, status);
                }
            }
            Event::Drained => {
                let asked: Vec<i32> = self.world().asked_to_stop.iter().copied().collect();
                for pid in asked {
                    self.exit(pid, ExitStatus::Code(0));
                }
            }
            Event::Tick(ms) => {
                self.now += Duration::from_millis(*ms);
                let now = self.now;
                self.supervisor.on_tick(now);
                if let Some(deadline) = self.supervisor.next_deadline() {
                    assert!(
                        deadline > now,
                        "a deadline in the past after a tick: {}",
                        self.past_deadlines(now)
                    );
                }
            }
            Event::FailSpawns(count) => self.world().failing_spawns = *count,
            Event::Reexec => {
                if self.supervisor.handover_blocker().is_none() {
                    // As the event loop does: answer what is answered
                    // before the exec, then hand over.
                    self.supervisor.finish_for_handover(now);
                    self.carry_out_effects();
                    self.collect_notices();
                    let pending: Vec<u64> = self
                        .operations
                        .iter()
                        .filter(|(_, results)| **results == 0)
                        .map(|(id, _)| *id)
                        .collect();
                    assert!(
                        pending.is_empty(),
                        "operations {pending:?} would be cut off by the re-exec"
                    );
                    self.round_trip();
                }
            }
        }
        self.carry_out_effects();
        self.deliver_kills();
        self.collect_notices();
    }

    /// Captures the re-exec state, restores a supervisor from it, and
    /// goes on with that one: both must describe the same state.
    fn round_trip(&mut self) {
        let now = self.now;
        let state = self.supervisor.capture(now);
        let json = serde_json::to_string(&state).expect("the state serializes");
        let decoded: SupervisorState = serde_json::from_str(&json).expect("the state reads back");
        let world = self.supervisor.processes().clone();
        let restored =
            Supervisor::restore(&decoded, world, now).expect("a captured state restores");
        let again = serde_json::to_string(&restored.capture(now)).unwrap();
        assert_eq!(json, again, "the re-exec state did not round-trip");
        self.supervisor = restored;
    }

    /// Which deadlines are at or before `now`, for a failure message.
    fn past_deadlines(&self, now: Instant) -> String {
        let past = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let mut found = Vec::new();
        for g in self.supervisor.generations() {
            if past(g.kill_at) {
                found.push(format!("generation {} ({:?})", g.number, g.phase));
            }
            for w in g.workers.iter() {
                for (what, at) in [
                    ("deadline", w.state.deadline()),
                    ("probe", w.state.probe_at()),
                    ("watchdog", w.state.watchdog_by()),
                    ("recycle", w.state.recycle_at()),
                ] {
                    if past(at) {
                        found.push(format!(
                            "generation {} ({:?}) worker {} ({:?}) {what}",
                            g.number, g.phase, w.index, w.state
                        ));
                    }
                }
            }
            for (index, slot) in g.slots.iter().enumerate() {
                if past(slot.restart_at) {
                    found.push(format!(
                        "generation {} ({:?}) slot {index} restart ({slot:?})",
                        g.number, g.phase
                    ));
                }
            }
        }
        found.join("; ")
    }

    fn check_invariants(&self) {
        let generations = self.supervisor.generations();
        let starting = generations
            .iter()
            .filter(|g| g.phase == Phase::Starting)
            .count();
        assert!(starting <= 1, "{starting} generations starting at once");
        if let Some(current) = self.supervisor.current() {
            assert_eq!(current.phase, Phase::Ready, "current generation not ready");
        }
        let world = self.supervisor.processes();
        assert!(
            !world.spawned_after_stop,
            "a process was spawned after a stop"
        );
        let counted: BTreeSet<i32> = generations
            .iter()
            .flat_map(|g| g.workers.iter().map(|w| w.pid.as_raw()))
            .collect();
        let alive: BTreeSet<i32> = world.alive.keys().copied().collect();
        assert_eq!(
            counted, alive,
            "the supervisor's workers are not the live processes"
        );
        let active: usize = generations
            .iter()
            .filter(|g| matches!(g.phase, Phase::Starting | Phase::Ready))
            .map(|g| g.workers.iter().filter(|w| !w.second).count())
            .sum();
        let recycle_limit = self.max_surge.unwrap_or(1).max(1) as usize;
        for g in generations {
            let seconds = g.workers.seconds().count();
            assert!(
                seconds <= recycle_limit,
                "generation {} has {seconds} recycles at once, over {recycle_limit}",
                g.number
            );
        }
        assert!(
            active <= 2 * self.most_workers as usize,
            "{active} processes in starting and serving generations, for {} workers",
            self.most_workers
        );
    }

    /// Stops, then lets every process go (drained, or killed at the
    /// deadline), and checks that everything ended.
    fn finish(&mut self) {
        self.apply(&Event::Stop);
        for _ in 0..32 {
            if self.supervisor.exit_code().is_some() {
                break;
            }
            self.apply(&Event::Tick(6_000));
            self.check_invariants();
        }
        assert!(
            self.supervisor.exit_code().is_some(),
            "sockvisor did not finish stopping: {:?}",
            self.supervisor.generations()
        );
        assert!(
            self.supervisor.processes().alive.is_empty(),
            "processes left running after the stop: {:?}",
            self.supervisor.processes().alive
        );
        for (id, results) in &self.operations {
            assert_eq!(*results, 1, "operation {id} had {results} results");
        }
    }
}

/// Replays one sequence of events, as a failure found by the property
/// test is kept: as a named test.
fn replay(workers: u32, max_surge: Option<u32>, restart: RestartPolicy, events: &[Event]) {
    replay_watched(workers, max_surge, restart, None, events);
}

/// [`replay`], with `--watchdog`.
fn replay_watched(
    workers: u32,
    max_surge: Option<u32>,
    restart: RestartPolicy,
    watchdog: Option<Duration>,
    events: &[Event],
) {
    replay_all(
        workers,
        max_surge,
        restart,
        watchdog,
        Recycle::default(),
        events,
    );
}

/// [`replay_watched`], with `--worker-max-rss` and `--worker-max-age`.
fn replay_all(
    workers: u32,
    max_surge: Option<u32>,
    restart: RestartPolicy,
    watchdog: Option<Duration>,
    recycle: Recycle,
    events: &[Event],
) {
    let mut run = Run::new(workers, max_surge, restart, watchdog, recycle);
    run.check_invariants();
    for event in events {
        if run.supervisor.exit_code().is_some() {
            break;
        }
        run.apply(event);
        run.check_invariants();
    }
    if run.supervisor.exit_code().is_none() {
        run.finish();
    }
}

#[test]
fn an_upgrade_while_draining_old_workers_is_answered_before_a_reexec() {
    use Event::*;
    replay(
        2,
        None,
        RestartPolicy::OnFailure,
        &[
            Ready(0),
            Ready(1),
            Exit(0, Ending::Clean),
            Upgrade,
            Ready(2),
            Ready(3),
            Reexec,
        ],
    );
}

#[test]
fn a_failed_spawn_during_a_rolling_scale_leaves_no_deadline_in_the_past() {
    use Event::*;
    replay(
        1,
        Some(1),
        RestartPolicy::Always,
        &[
            Ready(0),
            FailSpawns(1),
            Scale(3),
            Upgrade,
            Ready(3576900642166408027),
            Exit(864156321484406064, Ending::Clean),
            Ready(1247513792045154833),
            FailSpawns(1),
            Exit(14306021903126074325, Ending::Clean),
            Tick(100),
        ],
    );
}

#[test]
fn a_stop_while_a_rolling_worker_waits_for_room_ends() {
    use Event::*;
    replay(
        1,
        Some(1),
        RestartPolicy::Always,
        &[
            Ready(0),
            Upgrade,
            Ready(46260628911633943),
            Upgrade,
            Upgrade,
        ],
    );
}

#[test]
fn a_rolling_worker_due_for_its_restart_but_without_room_does_not_wake_the_loop() {
    use Event::*;
    replay(
        2,
        Some(1),
        RestartPolicy::Always,
        &[
            Ready(6844522318393954915),
            Ready(7463864819653741506),
            Scale(3),
            Exit(242893997386185585, Ending::Clean),
            Ready(3916752793940744273),
            Upgrade,
            Tick(100),
            Exit(8591360155528976682, Ending::Clean),
            Upgrade,
            Exit(2117940960707448519, Ending::Clean),
            Exit(1145338705489948692, Ending::Clean),
            Tick(200),
            Ready(9682154017320766977),
            Drained,
            Exit(145037052116317698, Ending::Clean),
            Tick(100),
        ],
    );
}

proptest! {
    // Shrunk failures are kept as the named tests above, not in a file.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_rules_users_rely_on_hold_after_every_step(
        workers in 1u32..=3,
        max_surge in prop_oneof![Just(None), (1u32..=2).prop_map(Some)],
        restart in prop_oneof![
            Just(RestartPolicy::Always),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::Never),
        ],
        watchdog in prop_oneof![Just(None), Just(Some(Duration::from_secs(5)))],
        recycling in any::<bool>(),
        events in proptest::collection::vec(event(), 1..60),
    ) {
        let recycle = recycle_settings(recycling);
        replay_all(workers, max_surge, restart, watchdog, recycle, &events);
    }
}
