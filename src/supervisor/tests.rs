//! The supervisor's rules, each checked with fake processes and a fake clock.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Spawn(u32),
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
}

/// Generation n gets pid 1000 + n; its probe runs get 5000 + n.
fn pid_of(generation: u32) -> i32 {
    1000 + generation as i32
}

impl ProcessControl for FakeProcesses {
    fn spawn(&mut self, generation: u32, foreground: bool) -> Result<Pid, SpawnError> {
        self.calls.push(if foreground {
            Call::SpawnForeground(generation)
        } else {
            Call::Spawn(generation)
        });
        if self.fail_spawns > 0 {
            self.fail_spawns -= 1;
            return Err(SpawnError::Fork(nix::errno::Errno::EAGAIN));
        }
        Ok(Pid::from_raw(pid_of(generation)))
    }
    fn spawn_probe(&mut self, _: &str, generation: u32, _: Pid) -> Result<Pid, SpawnError> {
        self.calls.push(Call::Probe(generation));
        Ok(Pid::from_raw(5000 + generation as i32))
    }
    fn signal(&mut self, pid: Pid, signal: Signal) {
        self.calls.push(Call::Signal(pid.as_raw(), signal));
    }
    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        self.calls.push(Call::SignalGroup(pgid.as_raw(), signal));
    }
    fn hand_terminal(&mut self, group: Pid) {
        self.calls.push(Call::HandTerminal(group.as_raw()));
    }
    fn retire(&mut self, generation: u32) {
        self.calls.push(Call::Retire(generation));
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
    s.on_notify(1, &ready(), now);
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
fn forwarded_signals_go_to_the_current_generation() {
    let (mut s, _) = started(RestartPolicy::Never);
    s.on_forward(Signal::SIGUSR1);
    assert_eq!(
        last_call(&s),
        Some(&Call::Signal(pid_of(1), Signal::SIGUSR1))
    );
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
    s.on_notify(2, &ready(), now);
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
        &NotifyMessage {
            status: Some("loading".into()),
            ..Default::default()
        },
        now,
    );
    assert_eq!(phase_of(&s, 1), Some(Phase::Starting));
    s.on_notify(1, &ready(), now);
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
    s.on_notify(1, &extend, later);
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
    s.on_notify(2, &ready(), now);
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
    s.on_notify(2, &ready(), now);
    s.request_upgrade(now).unwrap();
    s.on_notify(3, &ready(), now);
    assert_eq!(phase_of(&s, 1), Some(Phase::Draining));
    assert_eq!(phase_of(&s, 2), Some(Phase::Draining));
    assert_eq!(s.current().map(|g| g.number), Some(3));
}

#[test]
fn a_draining_generation_is_killed_after_the_drain_timeout() {
    let (mut s, now) = serving_with_notify();
    s.request_upgrade(now).unwrap();
    s.on_notify(2, &ready(), now);
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
    s.on_notify(2, &ready(), now);
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
    s.on_notify(2, &ready(), now);
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
    supervisor.on_notify(1, &ready(), now);
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
    s.on_notify(2, &ready(), now);
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
    s.on_notify(2, &ready(), now);
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
    s.on_notify(2, &ready(), now);
    assert_asked_to_stop(&s, 1);
    s.request_upgrade(now).unwrap();
    s.on_tick(now + Duration::from_secs(10));
    assert_asked_to_stop(&s, 3);
}
