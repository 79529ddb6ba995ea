//! The supervision state machine: which generation runs, when it is
//! restarted, how a stop proceeds, and what sockvisor's exit status is.
//!
//! It owns decisions only. It performs no system calls itself: processes are
//! started and signalled through [`ProcessControl`], time comes in as an
//! argument, and exits come in from the reaper. That keeps every rule here
//! testable with a fake clock and fake processes.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::reaper::{Exit, ExitStatus};
use crate::spawn::SpawnError;

/// What sockvisor does when the child exits on its own.
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
    pub stop_timeout: Duration,
}

/// The side effects the supervisor asks for.
pub trait ProcessControl {
    /// Starts generation `generation` and returns its pid.
    fn spawn(&mut self, generation: u32) -> Result<Pid, SpawnError>;
    /// Sends `signal` to one process; a process that is already gone is
    /// not an error.
    fn signal(&mut self, pid: Pid, signal: Signal);
    /// Sends `signal` to every process of a process group.
    fn signal_group(&mut self, pgid: Pid, signal: Signal);
}

/// One launch of the command. Its pid is also its process group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub number: u32,
    pub pid: Pid,
    pub started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running(Generation),
    /// The child exited; the next generation starts at `at`.
    RestartPending {
        at: Instant,
    },
    /// Stop requested. `deadline` is when the group gets `SIGKILL`; `None`
    /// once it has.
    Stopping {
        generation: Generation,
        deadline: Option<Instant>,
    },
    Finished(i32),
}

pub struct Supervisor<P: ProcessControl> {
    config: Config,
    processes: P,
    phase: Phase,
    last_generation: u32,
    consecutive_failures: u32,
}

impl<P: ProcessControl> Supervisor<P> {
    pub fn new(config: Config, processes: P) -> Supervisor<P> {
        Supervisor {
            config,
            processes,
            phase: Phase::Finished(0),
            last_generation: 0,
            consecutive_failures: 0,
        }
    }

    /// Starts the first generation. Failure here is fatal for sockvisor.
    pub fn start(&mut self, now: Instant) -> Result<Generation, SpawnError> {
        let generation = self.spawn_next(now)?;
        self.phase = Phase::Running(generation);
        Ok(generation)
    }

    /// sockvisor's exit status, once supervision is over.
    pub fn exit_code(&self) -> Option<i32> {
        match self.phase {
            Phase::Finished(code) => Some(code),
            _ => None,
        }
    }

    /// The generation whose process is alive, if any.
    pub fn current(&self) -> Option<Generation> {
        match self.phase {
            Phase::Running(generation) | Phase::Stopping { generation, .. } => Some(generation),
            _ => None,
        }
    }

    /// The next moment `on_tick` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::RestartPending { at } => Some(at),
            Phase::Stopping { deadline, .. } => deadline,
            _ => None,
        }
    }

    pub fn processes(&self) -> &P {
        &self.processes
    }

    /// Handles one exit reported by the reaper.
    pub fn on_exit(&mut self, exit: Exit, now: Instant) {
        let Some(generation) = self.current().filter(|g| g.pid == exit.pid) else {
            tracing::debug!(
                pid = exit.pid.as_raw(),
                "reaped orphan pid {}: {}",
                exit.pid,
                exit.status
            );
            return;
        };
        // Whatever the leader left behind in its group has lost its parent;
        // nothing may keep running behind sockvisor's back.
        self.processes.signal_group(generation.pid, Signal::SIGKILL);
        if let Phase::Stopping { .. } = self.phase {
            let code = self.stopped_exit_code(exit.status);
            tracing::info!(
                "generation {} (pid {}) {}; stopped",
                generation.number,
                generation.pid,
                exit.status
            );
            self.phase = Phase::Finished(code);
            return;
        }
        self.after_unrequested_exit(generation, exit.status, now);
    }

    /// A stop request (SIGTERM, SIGINT, SIGQUIT). The first asks the child to
    /// stop gracefully; a second one during the stop kills at once.
    pub fn on_stop_request(&mut self, signal: Signal, now: Instant) {
        match self.phase {
            Phase::Running(generation) => {
                tracing::info!(
                    "{} received: sending {} to generation {} (pid {}), waiting up to {:?}",
                    signal.as_str(),
                    self.config.stop_signal.as_str(),
                    generation.number,
                    generation.pid,
                    self.config.stop_timeout
                );
                self.processes
                    .signal(generation.pid, self.config.stop_signal);
                self.phase = Phase::Stopping {
                    generation,
                    deadline: Some(now + self.config.stop_timeout),
                };
            }
            Phase::Stopping { generation, .. } => {
                tracing::warn!(
                    "{} received again: killing generation {} (pid {}) now",
                    signal.as_str(),
                    generation.number,
                    generation.pid
                );
                self.processes.signal_group(generation.pid, Signal::SIGKILL);
                self.phase = Phase::Stopping {
                    generation,
                    deadline: None,
                };
            }
            Phase::RestartPending { .. } => {
                tracing::info!("{} received: no child is running; exiting", signal.as_str());
                self.phase = Phase::Finished(0);
            }
            Phase::Finished(_) => {}
        }
    }

    /// A signal with no meaning for sockvisor: pass it to the child.
    pub fn on_forward(&mut self, signal: Signal) {
        match self.current() {
            Some(generation) => {
                tracing::debug!("forwarding {} to pid {}", signal.as_str(), generation.pid);
                self.processes.signal(generation.pid, signal);
            }
            None => tracing::debug!(
                "{} received with no child running; dropped",
                signal.as_str()
            ),
        }
    }

    /// Acts on deadlines that have passed by `now`.
    pub fn on_tick(&mut self, now: Instant) {
        match self.phase {
            Phase::RestartPending { at } if at <= now => match self.spawn_next(now) {
                Ok(generation) => self.phase = Phase::Running(generation),
                Err(err) => {
                    tracing::error!("restart failed: {err}");
                    self.schedule_restart(Duration::ZERO, now);
                }
            },
            Phase::Stopping {
                generation,
                deadline: Some(deadline),
            } if deadline <= now => {
                tracing::warn!(
                    "generation {} (pid {}) did not stop within {:?}; killing its process group",
                    generation.number,
                    generation.pid,
                    self.config.stop_timeout
                );
                self.processes.signal_group(generation.pid, Signal::SIGKILL);
                self.phase = Phase::Stopping {
                    generation,
                    deadline: None,
                };
            }
            _ => {}
        }
    }

    fn spawn_next(&mut self, now: Instant) -> Result<Generation, SpawnError> {
        let number = self.last_generation + 1;
        let pid = self.processes.spawn(number)?;
        self.last_generation = number;
        tracing::info!("generation {number} started: pid {pid}");
        Ok(Generation {
            number,
            pid,
            started: now,
        })
    }

    fn after_unrequested_exit(&mut self, generation: Generation, status: ExitStatus, now: Instant) {
        let restart = match self.config.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        };
        if !restart {
            tracing::info!(
                "generation {} (pid {}) {}; not restarting (--restart {})",
                generation.number,
                generation.pid,
                status,
                policy_name(self.config.restart)
            );
            self.phase = Phase::Finished(status.as_code());
            return;
        }
        let ran_for = now.saturating_duration_since(generation.started);
        self.schedule_restart(ran_for, now);
        tracing::warn!(
            "generation {} (pid {}) {} after {:?}; restarting in {:?}",
            generation.number,
            generation.pid,
            status,
            ran_for,
            self.next_deadline()
                .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
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
        self.phase = Phase::RestartPending { at: now + delay };
    }

    /// Exit status after a requested stop: a child that exited cleanly or
    /// died of the stop signal itself did what was asked, so 0; otherwise
    /// its status (137 when it had to be killed).
    fn stopped_exit_code(&self, status: ExitStatus) -> i32 {
        match status {
            ExitStatus::Signal(signal) if signal == self.config.stop_signal => 0,
            status => status.as_code(),
        }
    }
}

fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Never => "never",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Spawn(u32),
        Signal(i32, Signal),
        SignalGroup(i32, Signal),
    }

    #[derive(Default)]
    struct FakeProcesses {
        calls: Vec<Call>,
        fail_spawns: u32,
    }

    impl ProcessControl for FakeProcesses {
        fn spawn(&mut self, generation: u32) -> Result<Pid, SpawnError> {
            self.calls.push(Call::Spawn(generation));
            if self.fail_spawns > 0 {
                self.fail_spawns -= 1;
                return Err(SpawnError::Fork(nix::errno::Errno::EAGAIN));
            }
            Ok(Pid::from_raw(1000 + generation as i32))
        }
        fn signal(&mut self, pid: Pid, signal: Signal) {
            self.calls.push(Call::Signal(pid.as_raw(), signal));
        }
        fn signal_group(&mut self, pgid: Pid, signal: Signal) {
            self.calls.push(Call::SignalGroup(pgid.as_raw(), signal));
        }
    }

    fn config(restart: RestartPolicy) -> Config {
        Config {
            restart,
            restart_delay: Duration::from_millis(100),
            restart_delay_max: Duration::from_secs(2),
            stop_signal: Signal::SIGQUIT,
            stop_timeout: Duration::from_secs(5),
        }
    }

    fn started(restart: RestartPolicy) -> (Supervisor<FakeProcesses>, Instant) {
        let now = Instant::now();
        let mut supervisor = Supervisor::new(config(restart), FakeProcesses::default());
        supervisor.start(now).unwrap();
        (supervisor, now)
    }

    fn exit(pid: i32, status: ExitStatus) -> Exit {
        Exit {
            pid: Pid::from_raw(pid),
            status,
        }
    }

    fn spawns(supervisor: &Supervisor<FakeProcesses>) -> usize {
        let calls = &supervisor.processes().calls;
        calls.iter().filter(|c| matches!(c, Call::Spawn(_))).count()
    }

    #[test]
    fn without_restart_sockvisor_exits_with_the_childs_code() {
        let (mut s, now) = started(RestartPolicy::Never);
        s.on_exit(exit(1001, ExitStatus::Code(17)), now);
        assert_eq!(s.exit_code(), Some(17));
    }

    #[test]
    fn death_by_signal_becomes_128_plus_signal() {
        let (mut s, now) = started(RestartPolicy::Never);
        s.on_exit(exit(1001, ExitStatus::Signal(Signal::SIGKILL)), now);
        assert_eq!(s.exit_code(), Some(137));
    }

    #[test]
    fn on_failure_exits_zero_after_a_clean_exit() {
        let (mut s, now) = started(RestartPolicy::OnFailure);
        s.on_exit(exit(1001, ExitStatus::Code(0)), now);
        assert_eq!(s.exit_code(), Some(0));
    }

    #[test]
    fn on_failure_restarts_after_the_backoff_delay() {
        let (mut s, now) = started(RestartPolicy::OnFailure);
        s.on_exit(exit(1001, ExitStatus::Code(3)), now);
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
            s.on_exit(exit(1000 + generation, ExitStatus::Code(1)), now);
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
        s.on_exit(exit(1001, ExitStatus::Code(1)), now);
        let now = s.next_deadline().unwrap();
        s.on_tick(now);
        let later = now + Duration::from_secs(2);
        s.on_exit(exit(1002, ExitStatus::Code(1)), later);
        assert_eq!(s.next_deadline(), Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn a_failed_restart_is_retried_not_fatal() {
        let (mut s, now) = started(RestartPolicy::Always);
        s.processes.fail_spawns = 1;
        s.on_exit(exit(1001, ExitStatus::Code(1)), now);
        let at = s.next_deadline().unwrap();
        s.on_tick(at);
        assert_eq!(s.exit_code(), None);
        let retry = s.next_deadline().expect("a retry is scheduled");
        s.on_tick(retry);
        assert!(s.current().is_some());
    }

    #[test]
    fn stop_sends_the_stop_signal_then_kills_the_group_at_the_deadline() {
        let (mut s, now) = started(RestartPolicy::OnFailure);
        s.on_stop_request(Signal::SIGTERM, now);
        assert_eq!(
            s.processes().calls.last(),
            Some(&Call::Signal(1001, Signal::SIGQUIT))
        );
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
        s.on_tick(now + Duration::from_secs(5));
        assert_eq!(
            s.processes().calls.last(),
            Some(&Call::SignalGroup(1001, Signal::SIGKILL))
        );
        assert_eq!(s.next_deadline(), None);
        s.on_exit(exit(1001, ExitStatus::Signal(Signal::SIGKILL)), now);
        assert_eq!(s.exit_code(), Some(137));
    }

    #[test]
    fn a_second_stop_request_kills_at_once() {
        let (mut s, now) = started(RestartPolicy::OnFailure);
        s.on_stop_request(Signal::SIGTERM, now);
        s.on_stop_request(Signal::SIGINT, now);
        assert_eq!(
            s.processes().calls.last(),
            Some(&Call::SignalGroup(1001, Signal::SIGKILL))
        );
    }

    #[test]
    fn graceful_stop_exits_zero_even_when_the_child_dies_of_the_stop_signal() {
        let (mut s, now) = started(RestartPolicy::Always);
        s.on_stop_request(Signal::SIGTERM, now);
        s.on_exit(exit(1001, ExitStatus::Signal(Signal::SIGQUIT)), now);
        assert_eq!(s.exit_code(), Some(0));
    }

    #[test]
    fn a_child_exiting_during_stop_is_not_restarted() {
        let (mut s, now) = started(RestartPolicy::Always);
        s.on_stop_request(Signal::SIGTERM, now);
        s.on_exit(exit(1001, ExitStatus::Code(0)), now);
        assert_eq!(s.exit_code(), Some(0));
        assert_eq!(spawns(&s), 1);
    }

    #[test]
    fn stop_while_waiting_to_restart_exits_at_once() {
        let (mut s, now) = started(RestartPolicy::Always);
        s.on_exit(exit(1001, ExitStatus::Code(1)), now);
        s.on_stop_request(Signal::SIGTERM, now);
        assert_eq!(s.exit_code(), Some(0));
    }

    #[test]
    fn orphans_are_not_mistaken_for_the_child() {
        let (mut s, now) = started(RestartPolicy::Never);
        s.on_exit(exit(4242, ExitStatus::Code(1)), now);
        assert_eq!(s.exit_code(), None);
        assert_eq!(s.current().map(|g| g.pid.as_raw()), Some(1001));
    }

    #[test]
    fn the_leaders_group_is_killed_when_it_exits() {
        let (mut s, now) = started(RestartPolicy::Never);
        s.on_exit(exit(1001, ExitStatus::Code(0)), now);
        assert!(
            s.processes()
                .calls
                .contains(&Call::SignalGroup(1001, Signal::SIGKILL))
        );
    }

    #[test]
    fn forwarded_signals_go_to_the_current_child() {
        let (mut s, _) = started(RestartPolicy::Never);
        s.on_forward(Signal::SIGUSR1);
        assert_eq!(
            s.processes().calls.last(),
            Some(&Call::Signal(1001, Signal::SIGUSR1))
        );
    }
}
