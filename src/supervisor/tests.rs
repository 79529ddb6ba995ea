//! The supervisor's rules, each checked with fake processes and a fake clock.

use super::*;
use crate::notify::NotifyMessage;
use crate::reaper::ExitStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    /// Worker 0 of a generation.
    Spawn(u32),
    /// Worker `index` > 0 of a generation.
    SpawnWorker(u32, u32),
    /// A spawn whose process group takes the terminal.
    SpawnForeground(u32),
    HandTerminal(i32),
    Probe(u32),
    Signal(i32, Signal),
    SignalGroup(i32, Signal),
    Retire(u32),
}

#[derive(Default)]
struct FakeProcesses {
    calls: Vec<Call>,
    fail_spawns: u32,
    /// Spawns that succeed before every later one fails (a process limit).
    spawns_left: Option<u32>,
}

/// Generation n's worker 0 gets pid 1000 + n, worker i 1000 + n + 100 i
/// (each replacement in a slot 10000 more); probe runs get 5000 + n.
fn pid_of(generation: u32) -> i32 {
    worker_pid(generation, 0)
}

fn worker_pid(generation: u32, index: u32) -> i32 {
    1000 + generation as i32 + 100 * index as i32
}

impl Spawner for FakeProcesses {
    fn spawn(&mut self, generation: u32, index: u32, foreground: bool) -> Result<Pid, SpawnError> {
        self.calls.push(match (index, foreground) {
            (0, true) => Call::SpawnForeground(generation),
            (0, false) => Call::Spawn(generation),
            (index, _) => Call::SpawnWorker(generation, index),
        });
        if self.fail_spawns > 0 {
            self.fail_spawns -= 1;
            return Err(SpawnError::Fork(nix::errno::Errno::EAGAIN));
        }
        match &mut self.spawns_left {
            Some(0) => return Err(SpawnError::Fork(nix::errno::Errno::EAGAIN)),
            Some(left) => *left -= 1,
            None => {}
        }
        let replacements = self
            .calls
            .iter()
            .filter(|c| {
                matches!(c, Call::Spawn(g) | Call::SpawnForeground(g) if *g == generation && index == 0)
                    || matches!(c, Call::SpawnWorker(g, i) if *g == generation && *i == index)
            })
            .count() as i32
            - 1;
        Ok(Pid::from_raw(
            worker_pid(generation, index) + 10_000 * replacements,
        ))
    }
    fn spawn_probe(&mut self, _: &str, generation: u32, _: Pid) -> Result<Pid, SpawnError> {
        self.calls.push(Call::Probe(generation));
        Ok(Pid::from_raw(5000 + generation as i32))
    }
    fn observe(&mut self, effect: &Effect) {
        self.calls.push(match *effect {
            Effect::Signal { pid, signal } => Call::Signal(pid.as_raw(), signal),
            Effect::SignalGroup { group, signal } => Call::SignalGroup(group.as_raw(), signal),
            Effect::Forward { worker, signal } => Call::Signal(
                worker.as_raw(),
                Signal::try_from(signal).expect("these tests forward standard signals"),
            ),
            Effect::HandTerminal { group } => Call::HandTerminal(group.as_raw()),
            Effect::Retire { generation } => Call::Retire(generation),
        });
    }
}

fn config(restart: RestartPolicy, ready: ReadyMode) -> Config {
    Config {
        restart,
        restart_delay: Duration::from_millis(100),
        restart_delay_max: Duration::from_secs(2),
        stop_signal: Signal::SIGQUIT,
        stop_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(7),
        ready,
        ready_timeout: Duration::from_secs(10),
        workers: 1,
        max_surge: None,
        watchdog: None,
        recycle: Recycle::default(),
        terminal: false,
    }
}

fn started_with(restart: RestartPolicy, ready: ReadyMode) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut supervisor = Supervisor::new(config(restart, ready), FakeProcesses::default());
    supervisor.start(now).unwrap();
    (supervisor, now)
}

/// Started with `--ready now`, so generation 1 serves at once.
fn started(restart: RestartPolicy) -> (Supervisor<FakeProcesses>, Instant) {
    started_with(restart, ReadyMode::Now)
}

/// Generation 1 serving with `--ready notify`.
fn serving_with_notify() -> (Supervisor<FakeProcesses>, Instant) {
    let (mut s, now) = started_with(RestartPolicy::OnFailure, ReadyMode::Notify);
    s.on_notify(1, 0, &ready(), now);
    s.take_notices();
    (s, now)
}

fn ready() -> NotifyMessage {
    NotifyMessage {
        ready: true,
        ..NotifyMessage::default()
    }
}

fn exit(generation: u32, status: ExitStatus) -> Exit {
    Exit {
        pid: Pid::from_raw(pid_of(generation)),
        status,
    }
}

fn spawns(s: &Supervisor<FakeProcesses>) -> usize {
    s.processes()
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Spawn(_) | Call::SpawnForeground(_)))
        .count()
}

fn last_call(s: &Supervisor<FakeProcesses>) -> Option<&Call> {
    s.processes().calls.last()
}

/// The last calls were the stop signal to the generation's process and
/// SIGCONT to its group.
fn assert_asked_to_stop(s: &Supervisor<FakeProcesses>, generation: u32) {
    let calls = &s.processes().calls;
    let pid = pid_of(generation);
    assert_eq!(
        calls[calls.len().saturating_sub(2)..],
        [
            Call::Signal(pid, Signal::SIGQUIT),
            Call::SignalGroup(pid, Signal::SIGCONT)
        ],
        "{calls:?}"
    );
}

fn finished(notices: &[Notice]) -> Option<Result<String, String>> {
    notices.iter().find_map(|n| match n {
        Notice::Finished { result, .. } => Some(result.clone()),
        _ => None,
    })
}

fn phase_of(s: &Supervisor<FakeProcesses>, generation: u32) -> Option<Phase> {
    s.generations()
        .iter()
        .find(|g| g.number == generation)
        .map(|g| g.phase)
}

// ----- exit status and restart policy -----

#[test]
fn without_restart_sockvisor_exits_with_the_childs_code() {
    let (mut s, now) = started(RestartPolicy::Never);
    s.on_exit(exit(1, ExitStatus::Code(17)), now);
    assert_eq!(s.exit_code(), Some(17));
}

#[test]
fn death_by_signal_becomes_128_plus_signal() {
    let (mut s, now) = started(RestartPolicy::Never);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGKILL)), now);
    assert_eq!(s.exit_code(), Some(137));
}

#[test]
fn on_failure_exits_zero_after_a_clean_exit() {
    let (mut s, now) = started(RestartPolicy::OnFailure);
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn on_failure_restarts_after_the_backoff_delay() {
    let (mut s, now) = started(RestartPolicy::OnFailure);
    s.on_exit(exit(1, ExitStatus::Code(3)), now);
    assert_eq!(s.exit_code(), None);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_millis(100)));
    s.on_tick(now + Duration::from_millis(99));
    assert_eq!(spawns(&s), 1, "no restart before the delay");
    s.on_tick(now + Duration::from_millis(100));
    assert_eq!(spawns(&s), 2);
    assert_eq!(s.current().map(|g| g.number), Some(2));
}

#[test]
fn backoff_doubles_and_is_capped() {
    let (mut s, mut now) = started(RestartPolicy::Always);
    let mut delays = Vec::new();
    for generation in 1..=7 {
        s.on_exit(exit(generation, ExitStatus::Code(1)), now);
        let at = s.next_deadline().unwrap();
        delays.push(at - now);
        now = at;
        s.on_tick(now);
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
}

#[test]
fn a_child_that_ran_long_enough_resets_the_backoff() {
    let (mut s, now) = started(RestartPolicy::Always);
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    let now = s.next_deadline().unwrap();
    s.on_tick(now);
    let later = now + Duration::from_secs(2);
    s.on_exit(exit(2, ExitStatus::Code(1)), later);
    assert_eq!(s.next_deadline(), Some(later + Duration::from_millis(100)));
}

#[test]
fn a_failed_restart_is_retried_not_fatal() {
    let (mut s, now) = started(RestartPolicy::Always);
    s.processes.fail_spawns = 1;
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    let at = s.next_deadline().unwrap();
    s.on_tick(at);
    assert_eq!(s.exit_code(), None);
    let retry = s.next_deadline().expect("a retry is scheduled");
    s.on_tick(retry);
    assert!(s.current().is_some());
}

#[test]
fn the_leaders_group_is_killed_and_its_resources_retired_when_it_exits() {
    let (mut s, now) = started(RestartPolicy::Never);
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    let calls = &s.processes().calls;
    assert!(calls.contains(&Call::SignalGroup(pid_of(1), Signal::SIGKILL)));
    assert!(calls.contains(&Call::Retire(1)));
}

#[test]
fn orphans_are_not_mistaken_for_a_generation() {
    let (mut s, now) = started(RestartPolicy::Never);
    s.on_exit(
        Exit {
            pid: Pid::from_raw(4242),
            status: ExitStatus::Code(1),
        },
        now,
    );
    assert_eq!(s.exit_code(), None);
    assert_eq!(s.current().map(|g| g.number), Some(1));
}

#[test]
fn forwarded_signals_go_to_the_serving_generation_only() {
    let (mut s, now) = started(RestartPolicy::Never);
    assert_eq!(s.serving_pids(), vec![Pid::from_raw(pid_of(1))]);
    // Once generation 2 serves, generation 1 drains: it is sent nothing more.
    s.request_upgrade(now).unwrap();
    assert_eq!(s.serving_pids(), vec![Pid::from_raw(pid_of(2))]);
}

// ----- stop -----

#[test]
fn stop_sends_the_stop_signal_then_kills_at_the_deadline() {
    let (mut s, now) = started(RestartPolicy::OnFailure);
    s.on_stop_request("SIGTERM received", now);
    assert_asked_to_stop(&s, 1);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
    s.on_tick(now + Duration::from_secs(5));
    assert_eq!(
        last_call(&s),
        Some(&Call::SignalGroup(pid_of(1), Signal::SIGKILL))
    );
    assert_eq!(s.next_deadline(), None);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGKILL)), now);
    assert_eq!(s.exit_code(), Some(137));
}

#[test]
fn a_second_stop_request_kills_at_once() {
    let (mut s, now) = started(RestartPolicy::OnFailure);
    s.on_stop_request("SIGTERM received", now);
    s.on_stop_request("SIGINT received", now);
    assert_eq!(
        last_call(&s),
        Some(&Call::SignalGroup(pid_of(1), Signal::SIGKILL))
    );
}

#[test]
fn a_second_stop_call_waits_for_the_stop_under_way() {
    let (mut s, now) = started(RestartPolicy::Never);
    s.on_stop_call("stop requested on the control socket", now);
    s.on_stop_call("stop requested on the control socket", now);
    assert_eq!(
        signals_to(&s, pid_of(1)),
        [Signal::SIGQUIT, Signal::SIGCONT],
        "asked to stop once, not killed"
    );
    // The stop timeout still applies.
    s.on_tick(now + Duration::from_secs(60));
    assert!(signals_to(&s, pid_of(1)).contains(&Signal::SIGKILL));
}

#[test]
fn graceful_stop_exits_zero_even_when_the_child_dies_of_the_stop_signal() {
    let (mut s, now) = started(RestartPolicy::Always);
    s.on_stop_request("SIGTERM received", now);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGQUIT)), now);
    assert_eq!(s.exit_code(), Some(0));
    assert_eq!(spawns(&s), 1, "not restarted");
}

#[test]
fn stop_while_waiting_to_restart_exits_at_once() {
    let (mut s, now) = started(RestartPolicy::Always);
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    s.on_stop_request("SIGTERM received", now);
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn stop_during_an_upgrade_stops_every_generation() {
    let (mut s, now) = serving_with_notify();
    let id = s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.request_upgrade(now).unwrap();
    // Generation 1 drains, 2 serves, 3 starts.
    s.take_notices();
    s.on_stop_request("SIGTERM received", now);
    let notices = s.take_notices();
    assert!(matches!(finished(&notices), Some(Err(m)) if m.contains("stopping")));
    for generation in [2, 3] {
        assert!(
            s.processes()
                .calls
                .contains(&Call::Signal(pid_of(generation), Signal::SIGQUIT))
        );
    }
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    s.on_exit(exit(3, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), None, "generation 2 still runs");
    s.on_exit(exit(2, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), Some(0));
    let _ = id;
}

// ----- readiness -----

#[test]
fn notify_mode_waits_for_ready_1() {
    let (mut s, now) = started_with(RestartPolicy::OnFailure, ReadyMode::Notify);
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    s.on_notify(
        1,
        0,
        &NotifyMessage {
            status: Some("loading".into()),
            ..Default::default()
        },
        now,
    );
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    s.on_notify(1, 0, &ready(), now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(
        s.snapshot(now).generations[0].status.as_deref(),
        Some("loading")
    );
}

#[test]
fn extend_timeout_pushes_the_ready_deadline() {
    let (mut s, now) = started_with(RestartPolicy::OnFailure, ReadyMode::Notify);
    let later = now + Duration::from_secs(9);
    let extend = NotifyMessage {
        extend_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    s.on_notify(1, 0, &extend, later);
    s.on_tick(now + Duration::from_secs(10));
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting), "still waiting");
    s.on_tick(later + Duration::from_secs(30));
    assert_eq!(phase_of(&s, 1), Some(Phase::Failed));
}

#[test]
fn delay_mode_is_ready_after_the_delay_if_still_alive() {
    let (mut s, now) = started_with(
        RestartPolicy::OnFailure,
        ReadyMode::Delay(Duration::from_secs(2)),
    );
    s.on_tick(now + Duration::from_secs(1));
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    s.on_tick(now + Duration::from_secs(2));
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
}

#[test]
fn exec_mode_runs_the_probe_until_it_succeeds() {
    let (mut s, now) = started_with(RestartPolicy::OnFailure, ReadyMode::Exec("true".into()));
    s.on_tick(now);
    assert_eq!(last_call(&s), Some(&Call::Probe(1)));
    let probe = Pid::from_raw(5001);
    s.on_exit(
        Exit {
            pid: probe,
            status: ExitStatus::Code(1),
        },
        now,
    );
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    assert_eq!(s.next_deadline(), Some(now + PROBE_INTERVAL));
    s.on_tick(now + PROBE_INTERVAL);
    s.on_exit(
        Exit {
            pid: probe,
            status: ExitStatus::Code(0),
        },
        now + PROBE_INTERVAL,
    );
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(spawns(&s), 1, "a probe's exit is not a generation's");
}

/// The process-wide default subscriber of the unit tests: interested in
/// every callsite ("sometimes": asked again at each event), enabling none.
///
/// `tracing` caches each callsite's interest once for the whole process,
/// computed by whichever thread reaches it first; with a single dispatcher
/// registered, from that thread's own default. A test thread without a
/// subscriber would cache "never", and a `logged` capture running at the
/// same time on another thread would then miss that line. With this as the
/// global default, no callsite is ever cached as "never".
struct AskEveryTime;

impl tracing::Subscriber for AskEveryTime {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` with the supervisor's log lines captured as text, and returns
/// them.
fn logged(f: impl FnOnce()) -> String {
    static ASK_EVERY_TIME: std::sync::Once = std::sync::Once::new();
    ASK_EVERY_TIME.call_once(|| {
        // Fails only if another default was set first, which none is.
        let _ = tracing::subscriber::set_global_default(AskEveryTime);
        tracing::callsite::rebuild_interest_cache();
    });
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = lines.0.lock().map(|l| l.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Generation 1 and its restart, generation 2, both miss the ready
/// deadline.
fn two_generations_never_ready(ready: ReadyMode) -> String {
    logged(|| {
        let (mut s, now) = started_with(RestartPolicy::Always, ready);
        let missed = now + Duration::from_secs(10);
        s.on_tick(missed);
        assert_eq!(phase_of(&s, 1), Some(Phase::Failed));
        s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGQUIT)), missed);
        let restart = s.next_deadline().expect("a restart is scheduled");
        s.on_tick(restart);
        assert_eq!(spawns(&s), 2);
        s.on_tick(restart + Duration::from_secs(10));
        assert_eq!(phase_of(&s, 2), Some(Phase::Failed));
    })
}

#[test]
fn the_first_missed_ready_timeout_says_once_how_to_run_a_command_without_sd_notify() {
    let log = two_generations_never_ready(ReadyMode::Notify);
    assert_eq!(log.matches("was not ready within 10s").count(), 2, "{log}");
    assert_eq!(log.matches("did not send READY=1").count(), 1, "{log}");
    assert!(
        log.contains(
            "generation 1 (pid 1001) did not send READY=1 within 10s; if this command does not \
             speak sd_notify, pass --ready now or --ready delay=DURATION"
        ),
        "{log}"
    );
}

#[test]
fn a_missed_ready_timeout_without_notify_mode_gives_no_sd_notify_hint() {
    let log = two_generations_never_ready(ReadyMode::Exec("false".into()));
    assert_eq!(log.matches("was not ready within 10s").count(), 2, "{log}");
    assert!(!log.contains("READY=1"), "{log}");
}

// ----- upgrades -----

#[test]
fn upgrade_drains_the_old_generation_only_after_the_new_one_is_ready() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    assert_eq!(
        phase_of(&s, 1),
        Some(Phase::Ready),
        "old serves while new starts"
    );
    assert!(
        !s.processes()
            .calls
            .contains(&Call::Signal(pid_of(1), Signal::SIGQUIT))
    );
    s.on_notify(2, 0, &ready(), now);
    assert_eq!(s.current().map(|g| g.number), Some(2));
    assert_eq!(phase_of(&s, 1), Some(Phase::Draining));
    assert_asked_to_stop(&s, 1);
    assert_eq!(
        finished(&s.take_notices()),
        None,
        "done only when the old one exits"
    );
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    let notices = s.take_notices();
    assert_eq!(
        finished(&notices),
        Some(Ok("generation 2 is serving".into()))
    );
    assert!(s.snapshot(now).last_upgrade.unwrap().ok);
}

#[test]
fn upgrade_keeps_the_old_generation_when_the_new_one_crashes() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_exit(exit(2, ExitStatus::Code(17)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert_eq!(
        result,
        Err("generation 2 (pid 1002) exited with status 17 before it was ready; generation 1 keeps serving".into())
    );
    assert_eq!(s.current().map(|g| g.number), Some(1));
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(spawns(&s), 2, "no restart: the old generation serves");
}

#[test]
fn upgrade_that_is_never_ready_is_stopped_at_the_deadline() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_tick(now + Duration::from_secs(10));
    let result = finished(&s.take_notices()).unwrap();
    assert!(
        matches!(&result, Err(m) if m.contains("not ready within 10s; generation 1 keeps serving")),
        "{result:?}"
    );
    assert_eq!(phase_of(&s, 2), Some(Phase::Failed));
    assert_asked_to_stop(&s, 2);
    s.on_tick(now + Duration::from_secs(15));
    assert_eq!(
        last_call(&s),
        Some(&Call::SignalGroup(pid_of(2), Signal::SIGKILL))
    );
    s.on_exit(exit(2, ExitStatus::Signal(Signal::SIGKILL)), now);
    assert_eq!(s.current().map(|g| g.number), Some(1));
    assert_eq!(s.exit_code(), None);
}

#[test]
fn a_second_upgrade_while_one_is_starting_is_refused() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    let refused = s.request_upgrade(now).unwrap_err();
    assert!(
        matches!(&refused, UpgradeRejection::Busy(m) if m.contains("generation 2 (pid 1002) is still starting"))
    );
    assert_eq!(spawns(&s), 2);
}

#[test]
fn an_upgrade_may_start_while_an_older_generation_drains() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.request_upgrade(now).unwrap();
    s.on_notify(3, 0, &ready(), now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Draining));
    assert_eq!(phase_of(&s, 2), Some(Phase::Draining));
    assert_eq!(s.current().map(|g| g.number), Some(3));
}

#[test]
fn a_draining_generation_is_killed_after_the_drain_timeout() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.on_tick(now + Duration::from_secs(7));
    assert_eq!(
        last_call(&s),
        Some(&Call::SignalGroup(pid_of(1), Signal::SIGKILL))
    );
}

#[test]
fn a_spawn_failure_fails_the_upgrade_at_once() {
    let (mut s, now) = serving_with_notify();
    s.processes.fail_spawns = 1;
    let refused = s.request_upgrade(now).unwrap_err();
    assert!(
        matches!(&refused, UpgradeRejection::SpawnFailed(m) if m.ends_with("generation 1 keeps serving"))
    );
    assert!(
        s.request_upgrade(now).is_ok(),
        "the next attempt may proceed"
    );
}

#[test]
fn upgrade_is_refused_while_stopping() {
    let (mut s, now) = serving_with_notify();
    s.on_stop_request("SIGTERM received", now);
    assert_eq!(s.request_upgrade(now), Err(UpgradeRejection::Stopping));
}

#[test]
fn if_the_current_generation_dies_during_an_upgrade_the_new_one_takes_over() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    assert_eq!(spawns(&s), 2, "no restart while a generation is starting");
    s.on_notify(2, 0, &ready(), now);
    assert_eq!(s.current().map(|g| g.number), Some(2));
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 2 is serving".into()))
    );
}

#[test]
fn if_both_die_during_an_upgrade_the_restart_policy_applies() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    s.on_exit(exit(2, ExitStatus::Code(1)), now);
    assert!(s.next_deadline().is_some(), "a restart is scheduled");
    s.on_tick(s.next_deadline().unwrap());
    assert_eq!(spawns(&s), 3);
}

#[test]
fn a_new_generation_crashing_after_ready_fails_its_upgrade_truthfully() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.take_notices();
    s.on_exit(exit(2, ExitStatus::Code(9)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert_eq!(
        result,
        Err("generation 2 (pid 1002) became ready but then exited with status 9".into())
    );
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    assert!(
        s.take_notices().is_empty(),
        "no second result for the same upgrade"
    );
    assert!(
        s.next_deadline().is_some(),
        "the restart policy brings a generation back"
    );
}

#[test]
fn a_generation_killed_before_it_was_ready_gives_its_status_to_the_stop() {
    let (mut s, now) = started_with(RestartPolicy::OnFailure, ReadyMode::Notify);
    s.on_stop_request("SIGTERM received", now);
    s.on_stop_request("SIGINT received", now);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGKILL)), now);
    assert_eq!(
        s.exit_code(),
        Some(137),
        "it had to be killed, and sockvisor says so"
    );
}

#[test]
fn the_current_generations_status_decides_a_stop_during_an_upgrade() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_stop_request("SIGTERM received", now);
    s.on_exit(exit(2, ExitStatus::Signal(Signal::SIGKILL)), now);
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    assert_eq!(
        s.exit_code(),
        Some(0),
        "generation 1 served and stopped cleanly"
    );
}

// ----- terminal -----

fn on_terminal(restart: RestartPolicy) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(restart, ReadyMode::Notify);
    config.terminal = true;
    let mut supervisor = Supervisor::new(config, FakeProcesses::default());
    supervisor.start(now).unwrap();
    supervisor.on_notify(1, 0, &ready(), now);
    (supervisor, now)
}

#[test]
fn on_a_terminal_the_first_generation_takes_it_at_spawn() {
    let (s, _) = on_terminal(RestartPolicy::OnFailure);
    assert_eq!(s.processes().calls[0], Call::SpawnForeground(1));
    assert!(
        !s.processes()
            .calls
            .iter()
            .any(|c| matches!(c, Call::HandTerminal(_))),
        "it already has the terminal"
    );
}

#[test]
fn without_a_terminal_nothing_takes_one() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    let calls = &s.processes().calls;
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::SpawnForeground(_) | Call::HandTerminal(_))),
        "{calls:?}"
    );
}

#[test]
fn an_upgrade_hands_the_terminal_over_only_once_the_new_generation_is_ready() {
    let (mut s, now) = on_terminal(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    assert_eq!(
        last_call(&s),
        Some(&Call::Spawn(2)),
        "spawned in the background"
    );
    s.on_notify(2, 0, &ready(), now);
    let calls = &s.processes().calls;
    let handed = calls
        .iter()
        .position(|c| *c == Call::HandTerminal(pid_of(2)))
        .expect("handed to generation 2");
    let asked = calls
        .iter()
        .position(|c| *c == Call::Signal(pid_of(1), Signal::SIGQUIT))
        .expect("generation 1 asked to stop");
    assert!(handed < asked, "{calls:?}");
}

#[test]
fn a_failed_upgrade_leaves_the_terminal_with_the_serving_generation() {
    let (mut s, now) = on_terminal(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    s.on_exit(exit(2, ExitStatus::Code(1)), now);
    assert!(
        !s.processes()
            .calls
            .iter()
            .any(|c| matches!(c, Call::HandTerminal(_)))
    );
}

#[test]
fn a_restart_after_a_crash_takes_the_terminal_at_spawn() {
    let (mut s, now) = on_terminal(RestartPolicy::OnFailure);
    s.on_exit(exit(1, ExitStatus::Code(3)), now);
    s.on_tick(now + Duration::from_secs(1));
    assert_eq!(last_call(&s), Some(&Call::SpawnForeground(2)));
}

#[test]
fn on_a_terminal_a_generation_killed_by_ctrl_c_ends_sockvisor_with_130() {
    let (mut s, now) = on_terminal(RestartPolicy::Always);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGINT)), now);
    assert_eq!(s.exit_code(), Some(130));
    assert_eq!(spawns(&s), 1, "not restarted");
}

#[test]
fn on_a_terminal_ctrl_backslash_ends_sockvisor_with_131() {
    let (mut s, now) = on_terminal(RestartPolicy::OnFailure);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGQUIT)), now);
    assert_eq!(s.exit_code(), Some(131));
}

#[test]
fn without_a_terminal_a_generation_killed_by_sigint_is_restarted() {
    let (mut s, now) = started(RestartPolicy::OnFailure);
    s.on_exit(exit(1, ExitStatus::Signal(Signal::SIGINT)), now);
    assert_eq!(s.exit_code(), None);
    s.on_tick(now + Duration::from_secs(1));
    assert_eq!(spawns(&s), 2);
}

#[test]
fn a_drain_and_a_failed_start_also_continue_a_stopped_group() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    assert_asked_to_stop(&s, 1);
    s.request_upgrade(now).unwrap();
    s.on_tick(now + Duration::from_secs(10));
    assert_asked_to_stop(&s, 3);
}

// ----- workers -----

fn with_workers(workers: u32, restart: RestartPolicy) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(restart, ReadyMode::Notify);
    config.workers = workers;
    let mut supervisor = Supervisor::new(config, FakeProcesses::default());
    supervisor.start(now).unwrap();
    (supervisor, now)
}

/// Generation `generation`'s workers all send READY=1.
fn all_notify(s: &mut Supervisor<FakeProcesses>, generation: u32, workers: u32, now: Instant) {
    for index in 0..workers {
        s.on_notify(generation, index, &ready(), now);
    }
}

fn worker_exit(generation: u32, index: u32, status: ExitStatus) -> Exit {
    Exit {
        pid: Pid::from_raw(worker_pid(generation, index)),
        status,
    }
}

/// Four workers of generation 1 serving.
fn four_serving(restart: RestartPolicy) -> (Supervisor<FakeProcesses>, Instant) {
    let (mut s, now) = with_workers(4, restart);
    all_notify(&mut s, 1, 4, now);
    s.take_notices();
    (s, now)
}

fn signals_to(s: &Supervisor<FakeProcesses>, pid: i32) -> Vec<Signal> {
    s.processes()
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::Signal(p, signal) | Call::SignalGroup(p, signal) if *p == pid => Some(*signal),
            _ => None,
        })
        .collect()
}

#[test]
fn each_worker_is_spawned_in_its_own_slot() {
    let (s, _) = with_workers(3, RestartPolicy::OnFailure);
    assert_eq!(
        s.processes().calls,
        [
            Call::Spawn(1),
            Call::SpawnWorker(1, 1),
            Call::SpawnWorker(1, 2)
        ]
    );
    let workers = s.workers_of(1);
    assert_eq!(workers.len(), 3);
    assert_eq!(s.snapshot(Instant::now()).generations[0].workers.len(), 3);
}

#[test]
fn a_generation_is_ready_only_when_every_worker_is() {
    let (mut s, now) = with_workers(4, RestartPolicy::OnFailure);
    for index in 0..3 {
        s.on_notify(1, index, &ready(), now);
        assert_eq!(phase_of(&s, 1), Some(Phase::Starting), "{index}");
    }
    // A second READY=1 from the same worker does not count twice.
    s.on_notify(1, 0, &ready(), now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    s.on_notify(1, 3, &ready(), now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(s.current().map(|g| g.number), Some(1));
}

#[test]
fn readiness_modes_apply_to_each_worker() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::OnFailure, ReadyMode::Exec("true".into()));
    config.workers = 2;
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.on_tick(now);
    let probes = s
        .processes()
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Probe(1)))
        .count();
    assert_eq!(probes, 2, "one probe per worker");
}

#[test]
fn a_worker_crashing_before_ready_rolls_the_whole_upgrade_back() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.on_exit(worker_exit(2, 2, ExitStatus::Code(5)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert_eq!(
        result,
        Err("generation 2 worker 2 (pid 1202) exited with status 5 before it was ready; generation 1 keeps serving".into())
    );
    assert_eq!(phase_of(&s, 2), Some(Phase::Failed));
    for index in [0, 1, 3] {
        assert!(
            signals_to(&s, worker_pid(2, index)).contains(&Signal::SIGQUIT),
            "worker {index} asked to stop"
        );
    }
    for index in 0..4 {
        assert!(
            signals_to(&s, worker_pid(1, index)).is_empty(),
            "old worker {index} untouched"
        );
    }
    for index in [0, 1, 3] {
        s.on_exit(worker_exit(2, index, ExitStatus::Code(0)), now);
    }
    assert_eq!(phase_of(&s, 2), None);
    assert_eq!(s.current().map(|g| g.number), Some(1));
    assert_eq!(spawns(&s), 2, "no restart: generation 1 serves");
}

#[test]
fn a_worker_not_ready_in_time_fails_the_upgrade() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    for index in [0, 1, 2] {
        s.on_notify(2, index, &ready(), now);
    }
    s.on_tick(now + Duration::from_secs(10));
    let result = finished(&s.take_notices()).unwrap();
    assert!(
        matches!(&result, Err(m) if m.starts_with("generation 2 worker 3 (pid 1302) was not ready within 10s")),
        "{result:?}"
    );
}

#[test]
fn an_upgrade_drains_every_old_worker_once_all_new_ones_are_ready() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    for index in 0..3 {
        s.on_notify(2, index, &ready(), now);
    }
    assert!(signals_to(&s, worker_pid(1, 0)).is_empty());
    s.on_notify(2, 3, &ready(), now);
    for index in 0..4 {
        assert_eq!(
            signals_to(&s, worker_pid(1, index)),
            [Signal::SIGQUIT, Signal::SIGCONT],
            "old worker {index}"
        );
    }
    for index in 0..3 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), now);
    }
    assert_eq!(
        finished(&s.take_notices()),
        None,
        "one old worker still drains"
    );
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 2 is serving".into()))
    );
}

#[test]
fn a_draining_generation_of_workers_is_killed_at_the_drain_timeout() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    all_notify(&mut s, 2, 4, now);
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    s.on_tick(now + Duration::from_secs(7));
    for index in 1..4 {
        assert!(signals_to(&s, worker_pid(1, index)).contains(&Signal::SIGKILL));
    }
}

fn progress_lines(notices: &[Notice]) -> Vec<String> {
    notices
        .iter()
        .filter_map(|n| match n {
            Notice::Progress { message, .. } => Some(message.clone()),
            Notice::Finished { .. } => None,
        })
        .collect()
}

#[test]
fn a_drained_generation_says_how_each_of_its_workers_ended() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    all_notify(&mut s, 2, 4, now);
    for index in 0..3 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), now);
    }
    s.on_exit(worker_exit(1, 3, ExitStatus::Signal(Signal::SIGKILL)), now);
    let lines = progress_lines(&s.take_notices());
    assert!(
        lines.contains(
            &"generation 1 (4 workers) ended: 3 exited with status 0, 1 was killed by SIGKILL"
                .to_string()
        ),
        "{lines:?}"
    );
}

#[test]
fn a_drain_is_not_reported_with_an_earlier_crash_or_retirement() {
    let (mut s, now) = four_serving(RestartPolicy::Never);
    // Worker 2 crashed long before the upgrade (and was not replaced).
    s.on_exit(worker_exit(1, 2, ExitStatus::Signal(Signal::SIGSEGV)), now);
    let later = now + Duration::from_secs(1);
    s.request_upgrade(later).unwrap();
    all_notify(&mut s, 2, 4, later);
    s.take_notices();
    // Handed over to a re-executed sockvisor half-way through the drain.
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), later);
    let mut s = round_trip(&s, later);
    let log = logged(|| {
        for index in [1, 3] {
            s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), later);
        }
    });
    assert!(
        log.contains("generation 1 (4 workers) exited with status 0\n"),
        "{log}"
    );
}

#[test]
fn a_serving_worker_that_exits_is_replaced_in_its_slot_after_the_backoff() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_exit(worker_exit(1, 2, ExitStatus::Signal(Signal::SIGKILL)), now);
    assert_eq!(s.current().map(|g| g.number), Some(1), "the others serve");
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(s.next_deadline(), Some(now + Duration::from_millis(100)));
    s.on_tick(now + Duration::from_millis(100));
    assert_eq!(last_call(&s), Some(&Call::SpawnWorker(1, 2)));
    assert_eq!(spawns(&s), 1, "no new generation");
    for index in [0, 1, 3] {
        assert!(
            signals_to(&s, worker_pid(1, index)).is_empty(),
            "worker {index} untouched"
        );
    }
    let status = s.snapshot(now);
    let replacement = &status.generations[0].workers[2];
    assert_eq!(replacement.index, 2);
    assert_eq!(replacement.restarts, 1);
    assert_eq!(replacement.state, WorkerStage::Starting);
    assert_eq!(replacement.pid, worker_pid(1, 2) + 10_000);
    s.on_notify(1, 2, &ready(), now);
    assert_eq!(
        s.snapshot(now).generations[0].workers[2].state,
        WorkerStage::Ready
    );
}

#[test]
fn a_replacement_not_ready_in_time_is_stopped_and_retried_with_more_backoff() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_exit(worker_exit(1, 1, ExitStatus::Code(1)), now);
    let at = now + Duration::from_millis(100);
    s.on_tick(at);
    let replacement = worker_pid(1, 1) + 10_000;
    s.on_tick(at + Duration::from_secs(10));
    assert_eq!(
        signals_to(&s, replacement),
        [Signal::SIGQUIT, Signal::SIGCONT]
    );
    let gone = at + Duration::from_secs(11);
    s.on_exit(
        Exit {
            pid: Pid::from_raw(replacement),
            status: ExitStatus::Signal(Signal::SIGQUIT),
        },
        gone,
    );
    assert_eq!(s.next_deadline(), Some(gone + Duration::from_millis(200)));
    assert_eq!(s.current().map(|g| g.number), Some(1));
}

#[test]
fn restart_never_does_not_replace_workers_and_exits_with_the_first_failure() {
    let (mut s, now) = four_serving(RestartPolicy::Never);
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    s.on_exit(worker_exit(1, 1, ExitStatus::Code(3)), now);
    s.on_exit(worker_exit(1, 2, ExitStatus::Code(4)), now);
    assert_eq!(s.next_deadline(), None, "nothing replaced");
    assert_eq!(s.exit_code(), None, "worker 3 still serves");
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), Some(3));
}

#[test]
fn on_failure_does_not_replace_a_worker_that_exited_cleanly() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    assert_eq!(s.next_deadline(), None);
    for index in 1..4 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), now);
    }
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn a_generation_that_loses_every_worker_restarts_as_a_new_generation() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    for index in 0..4 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(1)), now);
    }
    let at = s.next_deadline().unwrap();
    s.on_tick(at);
    assert_eq!(spawns(&s), 2);
    let generation_1_workers = s
        .processes()
        .calls
        .iter()
        .filter(|c| matches!(c, Call::SpawnWorker(1, _)))
        .count();
    assert_eq!(
        generation_1_workers, 3,
        "only the first start: pending replacements died with their generation"
    );
    assert_eq!(s.workers_of(2).len(), 4);
}

#[test]
fn stop_reaches_every_worker_of_every_generation_and_cancels_replacements() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(1)), now);
    s.request_upgrade(now).unwrap();
    s.on_stop_request("SIGTERM received", now);
    for generation in [1, 2] {
        for index in 0..3 {
            assert!(
                signals_to(&s, worker_pid(generation, index)).contains(&Signal::SIGQUIT),
                "generation {generation} worker {index}"
            );
        }
    }
    s.on_tick(now + Duration::from_secs(1));
    let slot_3_spawns = s
        .processes()
        .calls
        .iter()
        .filter(|c| **c == Call::SpawnWorker(1, 3))
        .count();
    assert_eq!(
        slot_3_spawns, 1,
        "the replacement was cancelled by the stop"
    );
    for generation in [1, 2] {
        for index in 0..3 {
            s.on_exit(
                worker_exit(generation, index, ExitStatus::Signal(Signal::SIGQUIT)),
                now,
            );
        }
    }
    s.on_exit(worker_exit(2, 3, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn a_stop_exits_with_the_worst_status_of_the_serving_workers() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_stop_request("SIGTERM received", now);
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    s.on_exit(worker_exit(1, 1, ExitStatus::Signal(Signal::SIGKILL)), now);
    s.on_exit(worker_exit(1, 2, ExitStatus::Code(0)), now);
    s.on_exit(worker_exit(1, 3, ExitStatus::Signal(Signal::SIGQUIT)), now);
    assert_eq!(s.exit_code(), Some(137));
}

#[test]
fn a_signal_reaches_every_worker_of_the_current_generation() {
    let (mut s, _) = four_serving(RestartPolicy::OnFailure);
    let done = s.signal_current(libc::SIGUSR1).unwrap();
    assert_eq!(done, "sent SIGUSR1 to generation 1 (4 workers)");
    for index in 0..4 {
        assert_eq!(signals_to(&s, worker_pid(1, index)), [Signal::SIGUSR1]);
    }
}

#[test]
fn a_workers_pid_maps_to_its_generation_and_slot_and_no_other_pid_does() {
    let (s, _) = with_workers(3, RestartPolicy::OnFailure);
    let pid = Pid::from_raw(worker_pid(1, 2));
    assert_eq!(s.worker_of(pid), Some((1, 2)));
    assert_eq!(s.worker_of(Pid::from_raw(99)), None);
    assert_eq!(
        s.describe_worker(1, 2),
        Some(format!("generation 1 worker 2 (pid {pid})"))
    );
}

#[test]
fn one_worker_behaves_as_a_single_process_generation() {
    let (s, _) = with_workers(1, RestartPolicy::OnFailure);
    assert!(s.current().is_none());
    assert_eq!(s.processes().calls, [Call::Spawn(1)]);
    assert_eq!(s.generations()[0].describe(), "generation 1 (pid 1001)");
}

// ----- rolling upgrades -----

/// Four workers of generation 1 serving, upgrades rolling with `surge`.
fn four_rolling(surge: u32) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(RestartPolicy::OnFailure, ReadyMode::Notify);
    config.workers = 4;
    config.max_surge = Some(surge);
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    all_notify(&mut s, 1, 4, now);
    s.take_notices();
    (s, now)
}

/// Processes alive, and workers ready and not retired, across generations.
fn alive_and_serving(s: &Supervisor<FakeProcesses>) -> (usize, usize) {
    let workers = s.generations().iter().flat_map(|g| g.workers.iter());
    let alive = workers.clone().count();
    let serving = workers.filter(|w| w.state.is_ready()).count();
    (alive, serving)
}

#[test]
fn a_rolling_upgrade_keeps_n_ready_and_at_most_n_plus_k_running() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    assert_eq!(last_call(&s), Some(&Call::Spawn(2)), "one new worker first");
    for index in 0..4 {
        let (alive, serving) = alive_and_serving(&s);
        assert!(alive <= 5, "step {index}: {alive} running");
        assert!(serving >= 4, "step {index}: {serving} serving");
        s.on_notify(2, index, &ready(), now);
        let old = 3 - index;
        assert!(
            signals_to(&s, worker_pid(1, old)).contains(&Signal::SIGQUIT),
            "old worker {old} retired once new worker {index} is ready"
        );
        let (alive, serving) = alive_and_serving(&s);
        assert!(alive <= 5 && serving >= 4, "{alive} {serving}");
        s.on_exit(worker_exit(1, old, ExitStatus::Code(0)), now);
    }
    assert_eq!(s.current().map(|g| g.number), Some(2));
    assert_eq!(s.generations().len(), 1);
    let notices = s.take_notices();
    assert_eq!(
        finished(&notices),
        Some(Ok("generation 2 is serving".into()))
    );
    assert_eq!(spawns(&s), 2, "no restart");
}

#[test]
fn an_old_worker_that_exits_during_a_rollout_gives_its_slot_to_the_rollout_and_says_so() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    let log = logged(|| s.on_exit(worker_exit(1, 1, ExitStatus::Code(1)), now));
    assert!(
        log.contains(
            "replacing it in 100ms, unless a new worker of generation 2 is ready first and takes its place"
        ),
        "{log}"
    );
    s.take_notices();
    let log = logged(|| s.on_notify(2, 0, &ready(), now));
    let said = "generation 1 worker 1 has no process (it exited): generation 2 takes its place, and its replacement is called off";
    assert!(log.contains(said), "{log}");
    assert!(progress_lines(&s.take_notices()).contains(&said.to_string()));
    // No live old worker was retired for that new one, and none replaces
    // worker 1 later.
    for index in [0, 2, 3] {
        assert!(signals_to(&s, worker_pid(1, index)).is_empty());
    }
    let respawns = |s: &Supervisor<FakeProcesses>| {
        let calls = &s.processes().calls;
        calls
            .iter()
            .filter(|c| **c == Call::SpawnWorker(1, 1))
            .count()
    };
    let before = respawns(&s);
    s.on_tick(now + Duration::from_secs(1));
    assert_eq!(respawns(&s), before, "worker 1's slot was given up");
}

#[test]
fn a_surge_of_two_starts_two_new_workers_at_a_time() {
    let (mut s, now) = four_rolling(2);
    s.request_upgrade(now).unwrap();
    let new_workers = s.workers_of(2).len();
    assert_eq!(new_workers, 2);
    assert_eq!(alive_and_serving(&s).0, 6);
}

#[test]
fn a_rollout_that_fails_part_way_keeps_n_serving_and_says_which() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    for index in 0..2 {
        s.on_notify(2, index, &ready(), now);
        s.on_exit(worker_exit(1, 3 - index, ExitStatus::Code(0)), now);
    }
    s.take_notices();
    s.on_exit(worker_exit(2, 2, ExitStatus::Code(9)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert_eq!(
        result,
        Err(
            "generation 2 worker 2 (pid 1202) exited with status 9 before it was ready; \
             rolling upgrade stopped with 4 workers serving: generation 1 workers 0, 1 and \
             generation 2 workers 0, 1; run `sockvisor upgrade` again to complete it"
                .into()
        )
    );
    assert_eq!(alive_and_serving(&s), (4, 4));
    s.on_tick(now + Duration::from_secs(60));
    assert!(
        !s.processes().calls.contains(&Call::SpawnWorker(2, 3)),
        "the rollout does not go on by itself"
    );
    assert!(
        s.signal_current(libc::SIGUSR1)
            .unwrap()
            .contains("generation 1")
    );
}

#[test]
fn a_later_upgrade_completes_a_rollout_that_stopped() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    for index in 0..2 {
        s.on_notify(2, index, &ready(), now);
        s.on_exit(worker_exit(1, 3 - index, ExitStatus::Code(0)), now);
    }
    s.on_exit(worker_exit(2, 2, ExitStatus::Code(9)), now);
    s.take_notices();
    s.request_upgrade(now).unwrap();
    // The oldest generation is retired first.
    let retire_order = [(1, 1), (1, 0), (2, 1), (2, 0)];
    for (index, (generation, old)) in retire_order.into_iter().enumerate() {
        s.on_notify(3, index as u32, &ready(), now);
        assert!(
            signals_to(&s, worker_pid(generation, old)).contains(&Signal::SIGQUIT),
            "generation {generation} worker {old}"
        );
        s.on_exit(worker_exit(generation, old, ExitStatus::Code(0)), now);
    }
    assert_eq!(s.current().map(|g| g.number), Some(3));
    assert_eq!(s.generations().len(), 1);
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 3 is serving".into()))
    );
}

#[test]
fn a_rollout_whose_first_worker_fails_rolls_back_entirely() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    s.on_exit(worker_exit(2, 0, ExitStatus::Code(9)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert!(
        matches!(&result, Err(m) if m.ends_with("before it was ready; generation 1 keeps serving")),
        "{result:?}"
    );
    for index in 0..4 {
        assert!(signals_to(&s, worker_pid(1, index)).is_empty());
    }
    assert_eq!(s.current().map(|g| g.number), Some(1));
}

#[test]
fn a_rolling_replacement_never_ready_in_time_stops_the_rollout() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    s.on_tick(now + Duration::from_secs(10));
    let result = finished(&s.take_notices()).unwrap();
    assert!(
        matches!(&result, Err(m) if m.contains("was not ready within 10s; rolling upgrade stopped with 4 workers serving")),
        "{result:?}"
    );
}

#[test]
fn stop_during_a_rollout_stops_every_worker() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.on_stop_request("SIGTERM received", now);
    for index in 0..3 {
        assert!(signals_to(&s, worker_pid(1, index)).contains(&Signal::SIGQUIT));
    }
    assert!(signals_to(&s, worker_pid(2, 0)).contains(&Signal::SIGQUIT));
    for index in 0..4 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), now);
    }
    assert!(
        !s.processes().calls.contains(&Call::SpawnWorker(2, 1)),
        "no new worker after the stop"
    );
    s.on_exit(worker_exit(2, 0, ExitStatus::Code(0)), now);
    assert_eq!(s.exit_code(), Some(0));
}

#[test]
fn rolling_with_ready_now_retires_as_each_new_worker_starts() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::OnFailure, ReadyMode::Now);
    config.workers = 2;
    config.max_surge = Some(1);
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.request_upgrade(now).unwrap();
    assert!(signals_to(&s, worker_pid(1, 1)).contains(&Signal::SIGQUIT));
    s.on_exit(worker_exit(1, 1, ExitStatus::Code(0)), now);
    assert!(signals_to(&s, worker_pid(1, 0)).contains(&Signal::SIGQUIT));
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    assert_eq!(s.current().map(|g| g.number), Some(2));
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 2 is serving".into()))
    );
}

// ----- scale -----

#[test]
fn scaling_up_adds_workers_that_go_through_readiness() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    let id = s.request_scale(6, now).unwrap();
    assert_eq!(
        s.processes().calls[s.processes().calls.len() - 2..],
        [Call::SpawnWorker(1, 4), Call::SpawnWorker(1, 5)]
    );
    s.on_notify(1, 4, &ready(), now);
    assert_eq!(finished(&s.take_notices()), None, "worker 5 is not ready");
    s.on_notify(1, 5, &ready(), now);
    let notices = s.take_notices();
    assert!(notices.iter().all(|n| match n {
        Notice::Progress { upgrade, .. } | Notice::Finished { upgrade, .. } => *upgrade == id,
    }));
    assert_eq!(
        finished(&notices),
        Some(Ok("generation 1 serves with 6 workers".into()))
    );
    assert_eq!(s.snapshot(now).workers, 6);
    assert_eq!(s.current().unwrap().serving().len(), 6);
}

#[test]
fn scaling_to_the_count_already_serving_is_done_at_once_and_says_only_that() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(4, now).unwrap();
    let notices = s.take_notices();
    assert!(progress_lines(&notices).is_empty(), "{notices:?}");
    assert_eq!(
        finished(&notices),
        Some(Ok("generation 1 serves with 4 workers".into()))
    );
}

#[test]
fn scaling_down_to_one_worker_says_one_worker() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(1, now).unwrap();
    for index in 1..4 {
        s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), now);
    }
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 1 serves with 1 worker".into()))
    );
}

#[test]
fn scaling_down_drains_the_highest_indexes_and_is_done_when_they_exit() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(2, now).unwrap();
    for index in [2, 3] {
        assert_eq!(
            signals_to(&s, worker_pid(1, index)),
            [Signal::SIGQUIT, Signal::SIGCONT]
        );
    }
    for index in [0, 1] {
        assert!(signals_to(&s, worker_pid(1, index)).is_empty());
    }
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    assert_eq!(finished(&s.take_notices()), None);
    s.on_exit(worker_exit(1, 2, ExitStatus::Code(0)), now);
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 1 serves with 2 workers".into()))
    );
    s.on_tick(now + Duration::from_secs(60));
    for index in [2, 3] {
        let spawned = s
            .processes()
            .calls
            .iter()
            .filter(|c| **c == Call::SpawnWorker(1, index))
            .count();
        assert_eq!(spawned, 1, "removed worker {index} is not replaced");
    }
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.exit_code(), None);
}

#[test]
fn later_upgrades_start_the_scaled_count() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(2, now).unwrap();
    s.on_exit(worker_exit(1, 2, ExitStatus::Code(0)), now);
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    s.request_upgrade(now).unwrap();
    assert_eq!(s.workers_of(2).len(), 2);
}

#[test]
fn a_scaled_up_worker_failing_is_reported_and_its_slot_given_up() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(5, now).unwrap();
    s.on_exit(worker_exit(1, 4, ExitStatus::Code(3)), now);
    let result = finished(&s.take_notices()).unwrap();
    assert_eq!(
        result,
        Err(
            "generation 1 worker 4 (pid 1401) exited with status 3 before it was ready; \
             4 workers serving: generation 1 workers 0, 1, 2, 3; the next upgrade starts 5 workers"
                .into()
        )
    );
    s.on_tick(now + Duration::from_secs(60));
    assert_eq!(
        s.processes()
            .calls
            .iter()
            .filter(|c| **c == Call::SpawnWorker(1, 4))
            .count(),
        1,
        "not retried"
    );
}

#[test]
fn scale_is_refused_during_an_upgrade_and_an_upgrade_during_a_scale() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    assert!(matches!(
        s.request_scale(6, now),
        Err(UpgradeRejection::Busy(m)) if m.contains("still starting")
    ));
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(6, now).unwrap();
    assert!(matches!(
        s.request_upgrade(now),
        Err(UpgradeRejection::Busy(m)) if m.contains("scale is in progress")
    ));
}

#[test]
fn scale_is_refused_while_a_stopped_rollout_leaves_two_generations_serving() {
    let (mut s, now) = four_rolling(1);
    s.request_upgrade(now).unwrap();
    s.on_notify(2, 0, &ready(), now);
    s.on_exit(worker_exit(1, 3, ExitStatus::Code(0)), now);
    s.on_exit(worker_exit(2, 1, ExitStatus::Code(9)), now);
    assert!(matches!(
        s.request_scale(6, now),
        Err(UpgradeRejection::Busy(m)) if m.contains("run `sockvisor upgrade` to complete it first")
    ));
}

#[test]
fn a_stop_during_a_scale_abandons_it() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(6, now).unwrap();
    s.on_stop_request("SIGTERM received", now);
    assert!(matches!(
        finished(&s.take_notices()),
        Some(Err(m)) if m.contains("scale was abandoned")
    ));
    assert!(signals_to(&s, worker_pid(1, 5)).contains(&Signal::SIGQUIT));
}

#[test]
fn scaling_to_the_same_count_is_done_at_once() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(4, now).unwrap();
    assert_eq!(
        finished(&s.take_notices()),
        Some(Ok("generation 1 serves with 4 workers".into()))
    );
}

// ----- re-exec hand-over -----

/// Captures, writes as JSON, reads back, restores, and captures again.
fn round_trip(s: &Supervisor<FakeProcesses>, now: Instant) -> Supervisor<FakeProcesses> {
    let state = s.capture(now);
    let json = serde_json::to_string(&state).unwrap();
    let read: SupervisorState = serde_json::from_str(&json).unwrap();
    assert_eq!(read, state);
    let restored = Supervisor::restore(&read, FakeProcesses::default(), now).unwrap();
    assert_eq!(restored.capture(now), state, "nothing lost");
    restored
}

#[test]
fn the_handover_state_round_trips_workers_drains_and_pending_replacements() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_exit(worker_exit(1, 2, ExitStatus::Code(1)), now);
    s.request_upgrade(now).unwrap();
    all_notify(&mut s, 2, 4, now);
    s.on_exit(worker_exit(1, 0, ExitStatus::Code(0)), now);
    s.take_notices();
    let later = now + Duration::from_secs(3);
    let mut restored = round_trip(&s, later);
    assert_eq!(restored.current().map(|g| g.number), Some(2));
    assert_eq!(phase_of(&restored, 1), Some(Phase::Draining));
    // The drain deadline still applies: 7 s after it began.
    assert_eq!(restored.next_deadline(), Some(now + Duration::from_secs(7)));
    restored.on_tick(now + Duration::from_secs(7));
    for index in [1, 3] {
        assert!(signals_to(&restored, worker_pid(1, index)).contains(&Signal::SIGKILL));
    }
}

#[test]
fn the_handover_state_round_trips_a_restart_backoff_and_the_last_outcome() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_exit(exit(2, ExitStatus::Code(3)), now);
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    assert!(s.next_deadline().is_some());
    let mut restored = round_trip(&s, now);
    assert_eq!(restored.next_deadline(), s.next_deadline());
    let last = restored.snapshot(now).last_upgrade.unwrap();
    assert!(!last.ok);
    restored.on_tick(now + Duration::from_secs(1));
    assert_eq!(last_call(&restored), Some(&Call::Spawn(3)));
}

#[test]
fn the_handover_state_keeps_the_configuration() {
    let now = Instant::now();
    let mut config = config(
        RestartPolicy::Always,
        ReadyMode::Delay(Duration::from_millis(1500)),
    );
    config.workers = 3;
    config.max_surge = Some(2);
    config.stop_signal = Signal::SIGTERM;
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    let restored = round_trip(&s, now);
    assert_eq!(
        restored.config.ready,
        ReadyMode::Delay(Duration::from_millis(1500))
    );
    assert_eq!(restored.config.stop_signal, Signal::SIGTERM);
    assert_eq!(restored.config.restart, RestartPolicy::Always);
    assert_eq!(restored.config.max_surge, Some(2));
}

#[test]
fn a_handover_is_refused_while_an_upgrade_a_scale_or_a_stop_is_in_progress() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    assert_eq!(s.handover_blocker(), None);
    s.request_upgrade(now).unwrap();
    assert!(
        s.handover_blocker()
            .unwrap()
            .contains("upgrade is in progress")
    );
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_scale(6, now).unwrap();
    assert!(s.handover_blocker().unwrap().contains("scale"));
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.on_stop_request("SIGTERM received", now);
    assert!(s.handover_blocker().unwrap().contains("stopping"));
}

#[test]
fn a_garbled_handover_state_is_an_error_not_a_crash() {
    let (s, now) = four_serving(RestartPolicy::OnFailure);
    let mut state = s.capture(now);
    state.generations[0].phase = "sideways".into();
    assert!(Supervisor::restore(&state, FakeProcesses::default(), now).is_err());
}

// ----- watchdog -----

fn watched(timeout: Duration) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(RestartPolicy::OnFailure, ReadyMode::Notify);
    config.watchdog = Some(timeout);
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.on_notify(1, 0, &ready(), now);
    s.take_notices();
    (s, now)
}

fn ping() -> NotifyMessage {
    NotifyMessage {
        watchdog_ping: true,
        ..NotifyMessage::default()
    }
}

#[test]
fn the_watchdog_starts_when_a_worker_is_ready_and_pings_reset_it() {
    let (mut s, now) = watched(Duration::from_secs(2));
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(2)));
    let later = now + Duration::from_millis(1500);
    s.on_notify(1, 0, &ping(), later);
    assert_eq!(s.next_deadline(), Some(later + Duration::from_secs(2)));
    s.on_tick(now + Duration::from_secs(3));
    assert_eq!(spawns(&s), 1, "pinged in time: nothing replaced");
}

#[test]
fn a_missed_watchdog_replaces_the_generation_and_kills_the_hung_one_after_a_short_grace() {
    let (mut s, now) = watched(Duration::from_secs(2));
    let missed = now + Duration::from_secs(2);
    s.on_tick(missed);
    assert_eq!(last_call(&s), Some(&Call::Spawn(2)), "a replacement starts");
    assert!(
        signals_to(&s, pid_of(1)).is_empty(),
        "the hung one still holds on"
    );
    assert_eq!(s.snapshot(missed).watchdog_restarts, 1);
    assert!(s.snapshot(missed).generations[0].hung);
    // Still hung while the replacement starts: no second replacement.
    s.on_tick(missed + Duration::from_secs(2));
    assert_eq!(spawns(&s), 2);
    let ready_at = missed + Duration::from_secs(3);
    s.on_notify(2, 0, &ready(), ready_at);
    assert_asked_to_stop(&s, 1);
    // A short grace, not the 7 s drain timeout. (Generation 2 pings.)
    let grace_ends = ready_at + super::watchdog::HUNG_GRACE;
    s.on_notify(2, 0, &ping(), ready_at + Duration::from_millis(1900));
    s.on_tick(grace_ends - Duration::from_millis(1));
    assert!(!signals_to(&s, pid_of(1)).contains(&Signal::SIGKILL));
    s.on_tick(grace_ends);
    assert!(signals_to(&s, pid_of(1)).contains(&Signal::SIGKILL));
    assert_eq!(spawns(&s), 2, "generation 2 is healthy");
}

#[test]
fn watchdog_trigger_is_a_miss_at_once() {
    let (mut s, now) = watched(Duration::from_secs(60));
    let trigger = NotifyMessage {
        watchdog_trigger: true,
        ..NotifyMessage::default()
    };
    s.on_notify(1, 0, &trigger, now);
    assert_eq!(last_call(&s), Some(&Call::Spawn(2)));
}

#[test]
fn watchdog_usec_changes_the_workers_own_timeout() {
    let (mut s, now) = watched(Duration::from_secs(2));
    let longer = NotifyMessage {
        watchdog_timeout: Some(Duration::from_secs(10)),
        ..NotifyMessage::default()
    };
    s.on_notify(1, 0, &longer, now);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(10)));
    let off = NotifyMessage {
        watchdog_timeout: Some(Duration::ZERO),
        ..NotifyMessage::default()
    };
    s.on_notify(1, 0, &off, now);
    assert_eq!(s.next_deadline(), None, "WATCHDOG_USEC=0 turns it off");
}

#[test]
fn without_a_watchdog_there_is_no_timer() {
    let (s, _) = serving_with_notify();
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn a_worker_that_is_still_starting_has_no_watchdog_yet() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::OnFailure, ReadyMode::Notify);
    config.watchdog = Some(Duration::from_secs(1));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.on_tick(now + Duration::from_secs(5));
    assert_eq!(spawns(&s), 1, "only the ready timeout applies before ready");
}

#[test]
fn the_watchdog_round_trips_through_a_reexec() {
    let (s, now) = watched(Duration::from_secs(2));
    let restored = round_trip(&s, now + Duration::from_millis(500));
    assert_eq!(restored.next_deadline(), Some(now + Duration::from_secs(2)));
}

/// The parser keeps flags within a year, but a re-exec's state, a child's
/// `EXTEND_TIMEOUT_USEC` or the service manager's `WATCHDOG_USEC` reach
/// the supervisor without it: every deadline saturates instead.
#[test]
fn waits_too_long_for_the_clock_lie_in_the_far_future_instead_of_panicking() {
    let forever = Duration::MAX;
    let mut config = config(RestartPolicy::Always, ReadyMode::Delay(forever));
    config.restart_delay = forever;
    config.restart_delay_max = forever;
    config.stop_timeout = forever;
    config.drain_timeout = forever;
    config.ready_timeout = forever;
    config.watchdog = Some(forever);
    let now = Instant::now();
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    let extend = NotifyMessage {
        extend_timeout: Some(forever),
        watchdog_timeout: Some(forever),
        ..Default::default()
    };
    s.on_notify(1, 0, &extend, now);
    let a_century = Duration::from_secs(100 * 365 * 24 * 3600);
    assert!(s.next_deadline().is_some_and(|at| at >= now + a_century));
    s.on_tick(now + Duration::from_secs(365 * 24 * 3600));
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting), "not due yet");

    // A failed start is retried after the (endless) backoff.
    s.on_exit(exit(1, ExitStatus::Code(1)), now);
    assert!(s.next_deadline().is_some_and(|at| at >= now + a_century));
    s.on_stop_request("stop requested", now);
    assert!(s.exit_code().is_some(), "nothing left to wait for");
}

#[test]
fn a_scale_that_hits_a_process_limit_with_ready_now_reports_what_really_serves() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Now);
    config.workers = 1;
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.take_notices();
    // Two more processes fit, then the limit.
    s.processes_mut().spawns_left = Some(2);
    let id = s.request_scale(6, now).unwrap();
    let notices = s.take_notices();
    let result = notices.iter().find_map(|n| match n {
        Notice::Finished { upgrade, result } if *upgrade == id => Some(result.clone()),
        _ => None,
    });
    let Some(Err(message)) = result else {
        panic!("the scale must fail: {notices:?}");
    };
    assert!(
        message.contains("cannot start generation 1 worker 3"),
        "{message}"
    );
    assert!(!message.contains("serves with 6"), "{message}");
    let serving = s.current().map(|g| g.workers.len());
    assert_eq!(serving, Some(3), "three workers run");
}

#[test]
fn a_rolling_worker_that_crashes_after_retiring_an_old_one_is_replaced_in_its_slot() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.workers = 3;
    config.max_surge = Some(1);
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    all_notify(&mut s, 1, 3, now);
    s.take_notices();
    s.request_upgrade(now).unwrap();
    // The new worker 0 is ready and retires an old worker; then it crashes,
    // while it is the only process of generation 2.
    s.on_notify(2, 0, &ready(), now);
    assert!(
        s.generations()[0]
            .workers
            .iter()
            .any(|w| w.state.stage() == WorkerStage::Draining),
        "one old worker retired"
    );
    let log = logged(|| s.on_exit(worker_exit(2, 0, ExitStatus::Code(3)), now));
    assert!(!log.contains("before it was ready"), "{log}");
    // Generation 2 goes on rolling, with the crashed worker's slot to be
    // filled again.
    assert_eq!(
        phase_of(&s, 2),
        Some(Phase::Starting),
        "the rollout goes on"
    );
    let slot = s.generations()[1].slots.get(0).unwrap();
    assert!(slot.pending && !slot.vacant, "slot 0 is refilled: {slot:?}");
    // Every old worker drains as new ones take over; the refilled slot
    // starts once its backoff has passed and there is room.
    let mut later = now;
    for _ in 0..6 {
        later += Duration::from_secs(1);
        s.on_tick(later);
        let new: Vec<u32> = s.generations()[1..]
            .iter()
            .flat_map(|g| g.workers.iter().map(|w| w.index))
            .collect();
        for index in new {
            s.on_notify(2, index, &ready(), later);
        }
        let draining: Vec<u32> = s.generations()[0]
            .workers
            .iter()
            .filter(|w| w.state.stage() == WorkerStage::Draining)
            .map(|w| w.index)
            .collect();
        for index in draining {
            s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), later);
        }
    }
    assert_eq!(
        s.current().map(|g| g.number),
        Some(2),
        "generation 2 serves"
    );
    assert_eq!(
        s.current().map(|g| g.workers.len()),
        Some(3),
        "with all 3 workers"
    );
}

#[test]
fn a_worker_that_crashes_just_after_ready_is_said_to_have_been_ready() {
    let (mut s, now) = with_workers(2, RestartPolicy::Always);
    all_notify(&mut s, 1, 2, now);
    s.request_upgrade(now).unwrap();
    // Worker 0 of generation 2 is ready, worker 1 not yet; 0.2 s later
    // worker 0 crashes.
    s.on_notify(2, 0, &ready(), now);
    let log = logged(|| {
        s.on_exit(
            worker_exit(2, 0, ExitStatus::Code(3)),
            now + Duration::from_millis(200),
        )
    });
    assert!(
        log.contains("generation 2 worker 0 (pid 1002) exited with status 3 after it was ready"),
        "{log}"
    );
    assert!(!log.contains("before it was ready"), "{log}");
    assert_eq!(
        s.current().map(|g| g.number),
        Some(1),
        "generation 1 keeps serving"
    );
}

#[test]
fn a_late_ready_from_a_failed_generation_does_not_mark_its_worker_ready() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    // Generation 2 misses its ready timeout and is being stopped.
    let later = now + Duration::from_secs(11);
    s.on_tick(later);
    assert_eq!(phase_of(&s, 2), Some(Phase::Failed));
    s.on_notify(2, 0, &ready(), later);
    let state = s.generations()[1].workers.get(0).unwrap().state;
    assert!(
        !state.is_ready(),
        "a failed generation's worker is not ready"
    );
    assert_eq!(s.current().map(|g| g.number), Some(1));
}

// ----- cost per event -----

/// What attributing one notify message costs with `workers` workers: the
/// sender is a grandchild of worker `index`, placed the way the event loop
/// places it. Returns where it was placed, the process-table lookups and
/// the pid → worker lookups.
fn attribution_cost(
    s: &Supervisor<FakeProcesses>,
    index: u32,
) -> (Option<(u32, u32)>, usize, usize) {
    use crate::notify::sender::{self, tests::FakeTable};
    const SOCKVISOR: i32 = 10;
    let worker = worker_pid(1, index);
    let (child, grandchild) = (1_000_000 + index as i32, 2_000_000 + index as i32);
    let table = FakeTable::new([(worker, SOCKVISOR), (child, worker), (grandchild, child)]);
    let mut worker_lookups = 0;
    let placed = sender::attribute(
        Pid::from_raw(grandchild),
        Pid::from_raw(SOCKVISOR),
        &table,
        |pid| {
            worker_lookups += 1;
            s.worker_of(pid)
        },
    );
    (placed, table.lookups.get(), worker_lookups)
}

#[test]
fn placing_a_notify_message_costs_the_same_lookups_with_16_or_1024_workers() {
    let mut costs = Vec::new();
    for workers in [16, 1024] {
        let (mut s, now) = with_workers(workers, RestartPolicy::OnFailure);
        for index in [0, workers / 2, workers - 1] {
            let (placed, proc_reads, worker_lookups) = attribution_cost(&s, index);
            assert_eq!(placed, Some((1, index)), "{workers} workers");
            costs.push((workers, proc_reads, worker_lookups));
        }
        // The last one's READY=1 counts for its slot only.
        s.on_notify(1, workers - 1, &ready(), now);
        let status = s.snapshot(now);
        let ready: Vec<u32> = status.generations[0]
            .workers
            .iter()
            .filter(|w| w.state == WorkerStage::Ready)
            .map(|w| w.index)
            .collect();
        assert_eq!(ready, [workers - 1]);
    }
    // Two /proc reads (grandchild → child → worker) and three pid lookups,
    // wherever the worker is and however many there are.
    for (workers, proc_reads, worker_lookups) in costs {
        assert_eq!((proc_reads, worker_lookups), (2, 3), "{workers} workers");
    }
}

#[test]
fn with_many_workers_the_next_deadline_is_the_earliest_of_every_timer() {
    let (mut s, now) = with_workers(256, RestartPolicy::OnFailure);
    let ready_timeout = Duration::from_secs(10);
    // Each worker asks for a little more time than the one before it.
    for index in 0..256 {
        let extend = NotifyMessage {
            extend_timeout: Some(ready_timeout + Duration::from_millis(index as u64)),
            ..NotifyMessage::default()
        };
        s.on_notify(1, index, &extend, now);
    }
    assert_eq!(s.next_deadline(), Some(now + ready_timeout));
    // Every worker but 200 is ready: its deadline alone is left.
    for index in (0..256).filter(|i| *i != 200) {
        s.on_notify(1, index, &ready(), now);
    }
    let deadline = now + ready_timeout + Duration::from_millis(200);
    assert_eq!(s.next_deadline(), Some(deadline));
    s.on_tick(deadline);
    assert_eq!(phase_of(&s, 1), Some(Phase::Failed));
    let (mut s, now) = with_workers(256, RestartPolicy::OnFailure);
    all_notify(&mut s, 1, 256, now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Ready));
    assert_eq!(s.next_deadline(), None, "a serving generation sleeps");
}

/// One worker, ready, with a watchdog of 2 s.
fn serving_with_a_watchdog() -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.watchdog = Some(Duration::from_secs(2));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.on_notify(1, 0, &ready(), now);
    (s, now)
}

#[test]
fn a_hung_worker_with_a_tiny_watchdog_is_said_once_and_looked_at_once_a_second() {
    let (mut s, now) = serving_with_a_watchdog();
    // It asks for a watchdog of 1 µs, then misses it.
    let tiny = NotifyMessage {
        watchdog_timeout: Some(Duration::from_micros(1)),
        ..NotifyMessage::default()
    };
    s.on_notify(1, 0, &tiny, now);
    let missed = now + Duration::from_millis(1);
    let log = logged(|| {
        s.on_tick(missed);
        // The replacement starts; the loop is woken again and again.
        for step in 1..100 {
            let later = missed + Duration::from_millis(step);
            if s.next_deadline().is_some_and(|at| at <= later) {
                s.on_tick(later);
            }
        }
    });
    assert_eq!(log.matches("is hung").count(), 1, "{log}");
    assert!(
        s.next_deadline()
            .is_some_and(|at| at >= missed + Duration::from_secs(1)),
        "the watchdog is looked at again a second after the miss, not at once"
    );
}

#[test]
fn a_second_worker_that_hangs_while_the_replacement_starts_is_said_too() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.workers = 2;
    config.watchdog = Some(Duration::from_secs(2));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    all_notify(&mut s, 1, 2, now);
    // Worker 1 keeps pinging until worker 0 has missed.
    let ping = NotifyMessage {
        watchdog_ping: true,
        ..NotifyMessage::default()
    };
    let first_miss = now + Duration::from_millis(2100);
    s.on_notify(1, 1, &ping, now + Duration::from_millis(1500));
    let log = logged(|| s.on_tick(first_miss));
    assert_eq!(log.matches("is hung").count(), 1, "{log}");
    assert!(log.contains("worker 0"), "{log}");
    // The replacement is still starting when worker 1 stops pinging.
    let second_miss = now + Duration::from_millis(3600);
    let log = logged(|| s.on_tick(second_miss));
    assert!(log.contains("worker 1") && log.contains("WARN"), "{log}");
    let worker_0 = format!("worker 0 (pid {}) is hung", worker_pid(1, 0));
    assert!(
        !log.contains(&worker_0),
        "worker 0's miss is not said twice: {log}"
    );
}

#[test]
fn watchdog_trigger_is_said_as_what_it_is() {
    let (mut s, now) = serving_with_a_watchdog();
    let trigger = NotifyMessage {
        watchdog_trigger: true,
        ..NotifyMessage::default()
    };
    let log = logged(|| s.on_notify(1, 0, &trigger, now));
    assert!(
        log.contains("is hung (it sent WATCHDOG=trigger); replacing generation 1"),
        "{log}"
    );
}

#[test]
fn a_ready_worker_that_hangs_while_its_siblings_start_fails_the_start_and_the_loop_sleeps() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.workers = 2;
    config.watchdog = Some(Duration::from_secs(5));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    // Worker 0 is ready and armed; worker 1 is still starting when worker
    // 0 stops pinging.
    s.on_notify(1, 0, &ready(), now);
    let missed = now + Duration::from_secs(6);
    let log = logged(|| s.on_tick(missed));
    assert!(
        log.contains("is hung (no WATCHDOG=1 within 5s) before its generation was ready"),
        "{log}"
    );
    assert_eq!(phase_of(&s, 1), Some(Phase::Failed));
    assert!(
        s.next_deadline().is_none_or(|at| at > missed),
        "a watchdog left in the past would wake the loop at once, again and again"
    );
}

#[test]
fn what_the_supervisor_decides_to_do_is_returned_as_effects_in_order_and_taken_once() {
    let (mut s, now) = serving_with_notify();
    s.take_effects();
    s.request_upgrade(now).unwrap();
    assert!(
        s.take_effects().is_empty(),
        "starting a generation signals nobody"
    );
    s.on_notify(2, 0, &ready(), now);
    let old = Pid::from_raw(pid_of(1));
    assert_eq!(
        s.take_effects(),
        [
            Effect::Signal {
                pid: old,
                signal: Signal::SIGQUIT
            },
            Effect::SignalGroup {
                group: old,
                signal: Signal::SIGCONT
            },
        ]
    );
    assert!(s.take_effects().is_empty(), "effects are taken once");
    s.on_exit(exit(1, ExitStatus::Code(0)), now);
    assert_eq!(
        s.take_effects(),
        [
            Effect::SignalGroup {
                group: old,
                signal: Signal::SIGKILL
            },
            Effect::Retire { generation: 1 },
        ]
    );
}

#[test]
fn status_of_the_most_workers_each_sending_the_longest_status_fits_the_control_sockets_queue() {
    let (mut s, now) = with_workers(MAX_WORKERS, RestartPolicy::OnFailure);
    all_notify(&mut s, 1, MAX_WORKERS, now);
    // The longest STATUS= a datagram can carry, every character one that
    // JSON has to escape.
    let longest = "\u{1}".repeat(crate::notify::MAX_DATAGRAM - "STATUS=".len());
    for index in 0..MAX_WORKERS {
        let message = NotifyMessage {
            status: Some(longest.clone()),
            ..NotifyMessage::default()
        };
        s.on_notify(1, index, &message, now);
    }
    let snapshot = s.snapshot(now);
    let json = serde_json::to_vec(&snapshot).unwrap();
    assert!(
        json.len() < 1024 * 1024,
        "status is {} bytes, over the 1 MiB a control client may have queued",
        json.len()
    );
    let kept = snapshot.generations[0].workers[5]
        .status
        .as_deref()
        .unwrap();
    assert_eq!(kept.chars().count(), super::readiness::MAX_STATUS_CHARS);
    assert!(kept.ends_with('…'), "a cut text says so");
}

#[test]
fn a_status_text_within_the_limit_is_kept_whole() {
    let (mut s, now) = serving_with_notify();
    let text = "é".repeat(super::readiness::MAX_STATUS_CHARS);
    let message = NotifyMessage {
        status: Some(text.clone()),
        ..NotifyMessage::default()
    };
    s.on_notify(1, 0, &message, now);
    assert_eq!(
        s.snapshot(now).generations[0].workers[0].status.as_deref(),
        Some(text.as_str())
    );
}

// ----- recycling (--worker-max-rss, --worker-max-age) -----

use super::generation::SECOND_KEY;

fn recycling(workers: u32, recycle: Recycle) -> (Supervisor<FakeProcesses>, Instant) {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.workers = workers;
    config.recycle = recycle;
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    all_notify(&mut s, 1, workers, now);
    s.take_notices();
    (s, now)
}

fn by_age(max_age: Duration) -> Recycle {
    Recycle {
        max_age: Some(max_age),
        ..Recycle::default()
    }
}

fn worker_spawns(s: &Supervisor<FakeProcesses>) -> usize {
    s.processes()
        .calls
        .iter()
        .filter(|c| {
            matches!(
                c,
                Call::Spawn(_) | Call::SpawnForeground(_) | Call::SpawnWorker(_, _)
            )
        })
        .count()
}

fn slot_pid(s: &Supervisor<FakeProcesses>, generation: u32, key: u32) -> Option<i32> {
    s.generations()
        .iter()
        .find(|g| g.number == generation)?
        .workers
        .get(key)
        .map(|w| w.pid.as_raw())
}

#[test]
fn a_worker_at_its_age_limit_is_replaced_surge_first_one_at_a_time() {
    let (mut s, now) = recycling(2, by_age(Duration::from_secs(100)));
    let before = worker_spawns(&s);
    // Past both workers' limits (each 90 to 100 s): one replacement starts,
    // the other waits for it.
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    assert_eq!(worker_spawns(&s), before + 1, "one replacement at a time");
    let (index, old) = (0..2)
        .find_map(|i| slot_pid(&s, 1, SECOND_KEY + i).map(|_| (i, worker_pid(1, i))))
        .expect("a replacement runs as the slot's second process");
    assert!(
        signals_to(&s, old).is_empty(),
        "the old worker serves until its replacement is ready"
    );
    assert_eq!(
        s.serving_pids().len(),
        3,
        "both old workers serve, and the new one starts"
    );
    s.on_notify(1, SECOND_KEY + index, &ready(), later);
    assert_eq!(signals_to(&s, old), [Signal::SIGQUIT, Signal::SIGCONT]);
    assert_eq!(
        slot_pid(&s, 1, index),
        Some(old + 10_000),
        "the new worker has the slot"
    );
    assert_eq!(
        slot_pid(&s, 1, SECOND_KEY + index),
        Some(old),
        "the old one drains"
    );
    assert_eq!(s.snapshot(later).counters.recycles, 1);
    // The old worker's exit is expected: nothing is started for it.
    let spawned = worker_spawns(&s);
    s.on_exit(
        Exit {
            pid: Pid::from_raw(old),
            status: ExitStatus::Code(0),
        },
        later,
    );
    assert_eq!(worker_spawns(&s), spawned);
    assert_eq!(slot_pid(&s, 1, SECOND_KEY + index), None);
    // The other worker's turn comes within a second.
    s.on_tick(later + recycle::RETRY);
    assert_eq!(worker_spawns(&s), spawned + 1);
    assert!(slot_pid(&s, 1, SECOND_KEY + (1 - index)).is_some());
}

#[test]
fn a_replacement_that_fails_leaves_the_old_worker_serving_and_is_tried_again() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).expect("a replacement starts");
    s.on_exit(
        Exit {
            pid: Pid::from_raw(new),
            status: ExitStatus::Code(3),
        },
        later,
    );
    assert!(
        signals_to(&s, pid_of(1)).is_empty(),
        "the old worker was not asked to stop"
    );
    assert_eq!(slot_pid(&s, 1, 0), Some(pid_of(1)));
    assert_eq!(s.current().map(|g| g.number), Some(1));
    let counters = s.snapshot(later).counters;
    assert_eq!((counters.recycles, counters.recycle_failures), (0, 1));
    let spawned = worker_spawns(&s);
    s.on_tick(later + recycle::RETRY);
    assert_eq!(worker_spawns(&s), spawned + 1, "tried again");
}

#[test]
fn a_replacement_not_ready_in_time_is_stopped_and_the_old_worker_serves_on() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).unwrap();
    let timeout = later + Duration::from_secs(11);
    s.on_tick(timeout);
    assert_eq!(signals_to(&s, new), [Signal::SIGQUIT, Signal::SIGCONT]);
    assert!(signals_to(&s, pid_of(1)).is_empty());
    s.on_exit(
        Exit {
            pid: Pid::from_raw(new),
            status: ExitStatus::Signal(Signal::SIGQUIT),
        },
        timeout,
    );
    assert_eq!(s.snapshot(timeout).counters.recycle_failures, 1);
    assert_eq!(slot_pid(&s, 1, 0), Some(pid_of(1)));
}

#[test]
fn memory_over_the_limit_at_two_samples_in_a_row_replaces_a_worker_and_a_spike_does_not() {
    let limit = 100 << 20;
    let (mut s, now) = recycling(
        2,
        Recycle {
            max_rss: Some(limit),
            ..Recycle::default()
        },
    );
    assert_eq!(s.sampled_workers().len(), 2);
    let spawned = worker_spawns(&s);
    s.on_memory_samples(&[(1, 1, 2 * limit), (1, 0, limit)], now);
    s.on_memory_samples(&[(1, 1, limit / 2), (1, 0, limit)], now);
    s.on_memory_samples(&[(1, 1, 2 * limit), (1, 0, limit)], now);
    assert_eq!(
        worker_spawns(&s),
        spawned,
        "one sample over the limit at a time"
    );
    s.on_memory_samples(&[(1, 1, 2 * limit), (1, 0, limit)], now);
    assert_eq!(worker_spawns(&s), spawned + 1);
    assert_eq!(
        slot_pid(&s, 1, SECOND_KEY + 1),
        Some(worker_pid(1, 1) + 10_000)
    );
    assert_eq!(
        s.snapshot(now).generations[0].workers[1].rss_bytes,
        Some(2 * limit)
    );
}

#[test]
fn without_the_recycle_flags_nothing_is_sampled_and_no_timer_is_armed() {
    let (mut s, now) = recycling(4, Recycle::default());
    assert!(s.sampled_workers().is_empty());
    assert_eq!(
        s.next_deadline(),
        None,
        "an idle sockvisor sleeps without a timer"
    );
    let spawned = worker_spawns(&s);
    s.on_tick(now + Duration::from_secs(365 * 24 * 3600));
    assert_eq!(worker_spawns(&s), spawned);
}

#[test]
fn an_upgrade_stops_a_starting_replacement_and_counts_no_failure() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).unwrap();
    s.request_upgrade(later).unwrap();
    assert_eq!(signals_to(&s, new), [Signal::SIGQUIT, Signal::SIGCONT]);
    s.on_exit(
        Exit {
            pid: Pid::from_raw(new),
            status: ExitStatus::Signal(Signal::SIGQUIT),
        },
        later,
    );
    assert_eq!(s.snapshot(later).counters.recycle_failures, 0);
    assert!(
        signals_to(&s, pid_of(1)).is_empty(),
        "the old worker serves until generation 2 is ready"
    );
    s.on_notify(2, 0, &ready(), later);
    assert_eq!(s.current().map(|g| g.number), Some(2));
}

#[test]
fn a_worker_that_exits_while_its_replacement_starts_hands_it_the_slot() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).unwrap();
    let spawned = worker_spawns(&s);
    s.on_exit(exit(1, ExitStatus::Code(1)), later);
    assert_eq!(
        slot_pid(&s, 1, 0),
        Some(new),
        "the replacement takes the slot"
    );
    assert_eq!(slot_pid(&s, 1, SECOND_KEY), None);
    s.on_tick(later + Duration::from_secs(5));
    assert_eq!(worker_spawns(&s), spawned, "no restart besides it");
    s.on_notify(1, 0, &ready(), later);
    assert_eq!(s.serving_pids(), [Pid::from_raw(new)]);
}

#[test]
fn a_replacement_in_flight_survives_a_re_exec() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).unwrap();
    let state = s.capture(later);
    let json = serde_json::to_string(&state).unwrap();
    let decoded: SupervisorState = serde_json::from_str(&json).unwrap();
    let mut restored = Supervisor::restore(&decoded, FakeProcesses::default(), later).unwrap();
    assert_eq!(slot_pid(&restored, 1, SECOND_KEY), Some(new));
    restored.on_notify(1, SECOND_KEY, &ready(), later);
    assert_eq!(slot_pid(&restored, 1, 0), Some(new));
    assert_eq!(
        signals_to(&restored, pid_of(1)),
        [Signal::SIGQUIT, Signal::SIGCONT]
    );
    assert_eq!(restored.snapshot(later).counters.recycles, 1);
}

#[test]
fn a_scale_stops_a_starting_replacement_and_finishes() {
    let (mut s, now) = recycling(2, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let index = (0..2)
        .find(|i| slot_pid(&s, 1, SECOND_KEY + i).is_some())
        .unwrap();
    let new = slot_pid(&s, 1, SECOND_KEY + index).unwrap();
    let id = s.request_scale(1, later).unwrap();
    assert_eq!(signals_to(&s, new), [Signal::SIGQUIT, Signal::SIGCONT]);
    s.on_exit(
        Exit {
            pid: Pid::from_raw(new),
            status: ExitStatus::Signal(Signal::SIGQUIT),
        },
        later,
    );
    // Worker 1 drains for the scale-down; once it exits, the scale is done.
    s.on_exit(worker_exit(1, 1, ExitStatus::Code(0)), later);
    let finished = s
        .take_notices()
        .into_iter()
        .any(|n| matches!(n, Notice::Finished { upgrade, result: Ok(_) } if upgrade == id));
    assert!(finished, "the scale got its result");
    assert_eq!(s.snapshot(later).counters.recycle_failures, 0);
    assert_eq!(s.serving_pids(), [Pid::from_raw(worker_pid(1, 0))]);
}

#[test]
fn no_replacement_starts_while_a_rolling_upgrade_is_in_progress() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.workers = 2;
    config.max_surge = Some(1);
    config.recycle = by_age(Duration::from_secs(5));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    all_notify(&mut s, 1, 2, now);
    s.request_upgrade(now).unwrap();
    let spawned = worker_spawns(&s);
    // Past generation 1's age limits, within the rolling worker's ready
    // timeout.
    s.on_tick(now + Duration::from_secs(6));
    assert_eq!(
        worker_spawns(&s),
        spawned,
        "the rollout is the only change in flight"
    );
    assert!(
        s.generations()
            .iter()
            .all(|g| g.workers.seconds().count() == 0)
    );
}

#[test]
fn the_workers_of_an_upgraded_generation_are_recycled_by_their_own_age() {
    let (mut s, now) = recycling(1, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(50);
    s.request_upgrade(later).unwrap();
    s.on_notify(2, 0, &ready(), later);
    s.on_exit(exit(1, ExitStatus::Code(0)), later);
    let spawned = worker_spawns(&s);
    // Generation 1's limit has passed, generation 2's has not.
    s.on_tick(now + Duration::from_secs(100));
    assert_eq!(worker_spawns(&s), spawned);
    s.on_tick(later + Duration::from_secs(100));
    assert_eq!(worker_spawns(&s), spawned + 1);
    assert!(slot_pid(&s, 2, SECOND_KEY).is_some());
}

#[test]
fn workers_past_their_age_wait_for_room_without_waking_the_loop() {
    // 64 workers: the fake's pids stay distinct (see `worker_pid`).
    let (mut s, now) = recycling(64, by_age(Duration::from_secs(100)));
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let running: Vec<u32> = s.generations()[0]
        .workers
        .seconds()
        .map(|w| w.index)
        .collect();
    assert_eq!(running.len(), 1, "one replacement at a time");
    // 63 workers are past their limit: none of it is a deadline now.
    assert!(
        s.next_deadline().is_none_or(|d| d > later),
        "a deadline in the past would wake the loop at once, again and again"
    );
    // The replacement is ready and its predecessor drains: still no room.
    let index = running[0];
    s.on_notify(1, SECOND_KEY + index, &ready(), later);
    assert!(s.next_deadline().is_none_or(|d| d > later));
    // The predecessor is gone: the next replacement starts at once.
    let spawned = worker_spawns(&s);
    s.on_exit(worker_exit(1, index, ExitStatus::Code(0)), later);
    assert!(
        s.next_deadline().is_some_and(|d| d <= later),
        "room: due now"
    );
    s.on_tick(later);
    assert_eq!(worker_spawns(&s), spawned + 1);
    assert_eq!(s.generations()[0].workers.seconds().count(), 1);
    assert!(s.next_deadline().is_none_or(|d| d > later));
}

#[test]
fn the_stop_signal_warning_given_once_per_generation_survives_a_re_exec() {
    let (mut s, now) = four_serving(RestartPolicy::OnFailure);
    s.request_upgrade(now).unwrap();
    all_notify(&mut s, 2, 4, now);
    // Generation 1 drains; one of its workers dies of the stop signal.
    s.on_exit(worker_exit(1, 0, ExitStatus::Signal(Signal::SIGQUIT)), now);
    let warned = |s: &Supervisor<FakeProcesses>| {
        s.generations()
            .iter()
            .find(|g| g.number == 1)
            .map(|g| g.stop_signal_warned)
    };
    assert_eq!(warned(&s), Some(true));
    s.take_notices();
    let state = s.capture(now);
    let json = serde_json::to_string(&state).unwrap();
    let decoded: SupervisorState = serde_json::from_str(&json).unwrap();
    let restored = Supervisor::restore(&decoded, FakeProcesses::default(), now).unwrap();
    assert_eq!(
        warned(&restored),
        Some(true),
        "said once, not again after it"
    );
}

#[test]
fn on_a_terminal_the_keyboard_passes_to_the_replacement_of_worker_0_with_the_slot() {
    let now = Instant::now();
    let mut config = config(RestartPolicy::Always, ReadyMode::Notify);
    config.terminal = true;
    config.recycle = by_age(Duration::from_secs(100));
    let mut s = Supervisor::new(config, FakeProcesses::default());
    s.start(now).unwrap();
    s.on_notify(1, 0, &ready(), now);
    let later = now + Duration::from_secs(100);
    s.on_tick(later);
    let new = slot_pid(&s, 1, SECOND_KEY).unwrap();
    assert!(
        !s.processes().calls.contains(&Call::HandTerminal(new)),
        "the old worker keeps the keyboard while it serves"
    );
    s.on_notify(1, SECOND_KEY, &ready(), later);
    let calls = &s.processes().calls;
    let handed = calls.iter().position(|c| *c == Call::HandTerminal(new));
    let asked = calls
        .iter()
        .position(|c| *c == Call::Signal(pid_of(1), Signal::SIGQUIT));
    assert!(handed.is_some() && handed < asked, "{calls:?}");
}
