//! The one event loop: sleep in `poll(2)` on the signal pipe, the control
//! socket and its clients, and the generations' notify sockets, until one
//! is readable or the nearest deadline passes; then hand what happened to
//! the supervisor and route its upgrade notices to the clients that asked.
//! With nothing to do it sleeps with no timeout at all.
//!
//! This module owns the waiting and the dispatching, not the decisions.
//! Carrying out a re-exec lives in `reexec_request`, building the status
//! and metrics reports in `report`.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use crate::children::Children;
use crate::cli::FdEnv;
use crate::control::server::ConnectionId;
use crate::control::{Command, ControlServer, ErrorKind, Incoming, Reply};
use crate::metrics::MetricsServer;
use crate::notify::NotifyMessage;
use crate::notify::sender::{self, AckRefusal};
use crate::pidfile::PidFile;
use crate::reaper::Exit;
use crate::reexec;
use crate::service_notify::{ServiceNotifier, ServiceState};
use crate::signals::{self, Meaning, SignalSource};
use crate::supervisor::{Notice, Supervisor, UpgradeRejection};
use crate::watch::Watcher;

/// Datagrams read from one notify socket per wake-up, so that a flooding
/// generation cannot starve everything else.
const NOTIFY_BUDGET: usize = 64;

mod reexec_request;
mod report;

pub struct EventLoop {
    supervisor: Supervisor<Children>,
    signals: SignalSource,
    control: ControlServer,
    /// sockvisor's own service manager, when it runs under one.
    service: Option<ServiceNotifier>,
    /// Handed over by re-exec; removed at exit if still ours.
    pidfile: Option<PidFile>,
    /// Re-execs of this sockvisor so far, and when the last one happened.
    reexecs: u32,
    last_reexec: Option<Instant>,
    /// A re-exec waiting for its check run of the new binary.
    pending_reexec: Option<PendingReexec>,
    /// `--watch`, and the upgrade it started last (to report its result).
    watcher: Option<Watcher>,
    /// `--metrics`: the Prometheus endpoint.
    metrics: Option<MetricsServer>,
    watch_upgrade: Option<crate::supervisor::UpgradeId>,
    /// `--worker-max-rss`: when workers' memory is sampled next.
    memory_sample_at: Option<Instant>,
}

pub(super) struct PendingReexec {
    /// The client that asked; `None` once it has its answer because the
    /// check overran and was killed: then its exit is only waited for.
    connection: Option<ConnectionId>,
    binary: PathBuf,
    check: Pid,
    challenge: reexec::check::Challenge,
    deadline: Instant,
}

/// What one `poll` reported.
struct Readiness {
    signals: bool,
    /// A watched child exited (the reaper's pidfds).
    exited: bool,
    control: Vec<Option<PollFlags>>,
    /// The metrics endpoint's listener and connections, when it serves.
    metrics: Vec<Option<PollFlags>>,
    notify: Vec<u32>,
    /// Positions of stored descriptors that hung up.
    hung_up: Vec<usize>,
    /// A watched file changed.
    watched: bool,
}

impl EventLoop {
    pub fn new(
        supervisor: Supervisor<Children>,
        signals: SignalSource,
        control: ControlServer,
        service: Option<ServiceNotifier>,
    ) -> EventLoop {
        EventLoop {
            supervisor,
            signals,
            control,
            service,
            pidfile: None,
            reexecs: 0,
            last_reexec: None,
            pending_reexec: None,
            watcher: None,
            metrics: None,
            watch_upgrade: None,
            memory_sample_at: None,
        }
    }

    /// `--watch`: changed files start upgrades.
    /// The metrics endpoint to serve (`--metrics`), if any.
    pub fn with_metrics(mut self, metrics: Option<MetricsServer>) -> EventLoop {
        if let Some(metrics) = &metrics {
            tracing::info!("metrics: http://{}/metrics", metrics.address());
        }
        self.metrics = metrics;
        self
    }

    /// The metrics endpoint, for a re-exec to hand over.
    pub fn metrics(&self) -> Option<&MetricsServer> {
        self.metrics.as_ref()
    }

    pub fn with_watcher(mut self, watcher: Option<Watcher>) -> EventLoop {
        self.watcher = watcher;
        self
    }

    /// The pidfile to hand over on a re-exec (and remove at exit).
    pub fn with_pidfile(mut self, pidfile: Option<PidFile>) -> EventLoop {
        self.pidfile = pidfile;
        self
    }

    /// After a re-exec: how many there were, when the last one happened
    /// (`None` when it fell back to this, the previous program), and the
    /// client that asked for it, which gets `result`.
    pub fn resumed(
        mut self,
        reexecs: u32,
        last_reexec: Option<Instant>,
        requester: Option<UnixStream>,
        result: Reply,
        now: Instant,
    ) -> EventLoop {
        self.last_reexec = last_reexec;
        self.reexecs = reexecs;
        if let Some(stream) = requester {
            let connection = self.control.adopt_client(stream, now);
            self.control.reply(connection, result);
        }
        self
    }

    /// Runs until the supervisor has an exit status, and returns it.
    pub fn run(mut self) -> i32 {
        let recycle = self.supervisor.config().recycle;
        if recycle.max_rss.is_some() {
            self.memory_sample_at = Some(crate::deadline::after(
                Instant::now(),
                recycle.sample_interval,
            ));
        }
        let _held = crate::logging::hold();
        loop {
            // What was decided is logged before it is done: "sending
            // SIGQUIT" comes before the child's answer to it.
            crate::logging::flush();
            self.carry_out_effects();
            self.control.flush();
            self.tell_service_manager();
            if let Some(code) = self.supervisor.exit_code() {
                tracing::info!("every generation has exited; sockvisor exits with status {code}");
                crate::logging::flush();
                self.control.close_for_exit(code);
                return code;
            }
            // And what carrying it out logged, before sleeping.
            crate::logging::flush();
            let ready = self.wait();
            let now = Instant::now();
            // Messages before exits: a process that sent READY=1 and then
            // exited was ready, and its datagram is lost once its
            // generation's socket is retired.
            for generation in ready.notify {
                self.on_notify(generation, now);
            }
            // A child's exit wakes `poll` through its pidfd, and the
            // `SIGCHLD` handler runs as `poll` returns: seen by its flag,
            // both are dealt with in this one wake-up.
            if ready.signals || self.signals.any_pending() {
                for signal in self.signals.take() {
                    self.on_signal(signal, now);
                }
            }
            // After the signals, as `SIGCHLD` is: a stop request that came
            // with an exit is seen first.
            if ready.exited {
                let exits = self.supervisor.processes_mut().reaper.reap_ready();
                self.on_exits(exits, now);
            }
            if ready.watched
                && let Some(watcher) = &mut self.watcher
            {
                watcher.on_readable(now);
            }
            if !ready.hung_up.is_empty() {
                let store = &mut self.supervisor.processes_mut().fdstore;
                for name in store.drop_hung_up(&ready.hung_up) {
                    tracing::debug!("stored descriptor {name} hung up; dropped");
                }
            }
            for incoming in self.control.handle(&ready.control, now) {
                self.on_request(incoming, now);
            }
            if !ready.metrics.is_empty() {
                self.serve_metrics(&ready.metrics, now);
            }
            let now = Instant::now();
            let exits = self.supervisor.processes_mut().reaper.on_tick(now);
            self.on_exits(exits, now);
            self.supervisor.on_tick(now);
            self.control.on_tick(now);
            if let Some(metrics) = &mut self.metrics {
                metrics.on_tick(now);
            }
            self.reexec_check_deadline(now);
            self.sample_memory(now);
            self.upgrade_on_change(now);
            if let Some(service) = &mut self.service {
                service.on_tick(now);
            }
            for notice in self.supervisor.take_notices() {
                self.report_watch_result(&notice);
                self.control.deliver(&notice);
            }
        }
    }

    /// `--worker-max-rss`: every `--worker-sample-interval`, each serving
    /// worker's process tree's resident memory, for the supervisor to
    /// judge. O(N) per sample, never per event.
    fn sample_memory(&mut self, now: Instant) {
        let Some(at) = self.memory_sample_at.filter(|at| *at <= now) else {
            return;
        };
        let mut budget = crate::process_memory::SAMPLE_BUDGET;
        let samples: Vec<(u32, u32, u64)> = self
            .supervisor
            .sampled_workers()
            .into_iter()
            .filter_map(|(generation, key, pid)| {
                crate::process_memory::tree_resident_bytes(pid, &mut budget)
                    .map(|bytes| (generation, key, bytes))
            })
            .collect();
        self.supervisor.on_memory_samples(&samples, now);
        let interval = self.supervisor.config().recycle.sample_interval;
        // From the time it was due, so that a slow loop does not drift.
        let next = crate::deadline::after(at, interval);
        self.memory_sample_at = Some(if next > now {
            next
        } else {
            crate::deadline::after(now, interval)
        });
    }

    /// Carries out what the supervisor decided since the last call, in
    /// order. Called before each sleep and before a re-exec's hand-over.
    fn carry_out_effects(&mut self) {
        for effect in self.supervisor.take_effects() {
            self.supervisor.processes_mut().carry_out(effect);
        }
    }

    fn tell_service_manager(&mut self) {
        if let Some(service) = &mut self.service {
            let serving = self.supervisor.current().map(|g| g.number);
            service.update(&ServiceState {
                serving,
                upgrading: serving.is_some() && self.supervisor.is_starting(),
                stopping: self.supervisor.is_stopping(),
            });
        }
    }

    fn wait(&self) -> Readiness {
        let deadline = [
            self.supervisor.next_deadline(),
            self.control.next_deadline(),
            self.pending_reexec
                .as_ref()
                .filter(|p| p.connection.is_some())
                .map(|p| p.deadline),
            self.service
                .as_ref()
                .and_then(ServiceNotifier::next_deadline),
            self.watcher.as_ref().and_then(Watcher::next_deadline),
            self.metrics.as_ref().and_then(MetricsServer::next_deadline),
            self.memory_sample_at,
            self.supervisor.processes().reaper.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let control_fds = self.control.poll_fds();
        let control_count = control_fds.len();
        let notify_fds = self.supervisor.processes().notify_fds();
        let stored = self.supervisor.processes().fdstore.polled();
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
        let reaper_fd = self.supervisor.processes().reaper.fd();
        let exited_at = fds.len();
        fds.extend(reaper_fd.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        let control_at = fds.len();
        fds.extend(
            control_fds
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        );
        fds.extend(
            notify_fds
                .iter()
                .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        let watch_at = fds.len();
        if let Some(watcher) = &self.watcher {
            fds.push(PollFd::new(watcher.fd(), PollFlags::POLLIN));
        }
        let metrics_at = fds.len();
        let metrics_fds = self
            .metrics
            .as_ref()
            .map(MetricsServer::poll_fds)
            .unwrap_or_default();
        let metrics_count = metrics_fds.len();
        fds.extend(
            metrics_fds
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        );
        let stored_at = fds.len();
        // Stored descriptors are watched for hang-up only (reported whatever
        // is asked).
        fds.extend(
            stored
                .iter()
                .map(|(_, fd)| PollFd::new(*fd, PollFlags::empty())),
        );
        match poll(&mut fds, poll_timeout(deadline, Instant::now())) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => tracing::error!("poll failed: {errno}"),
        }
        let readable = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Readiness {
            signals: readable(&fds[0]),
            exited: reaper_fd.is_some() && readable(&fds[exited_at]),
            control: fds[control_at..control_at + control_count]
                .iter()
                .map(PollFd::revents)
                .collect(),
            notify: notify_fds
                .iter()
                .zip(&fds[control_at + control_count..])
                .filter(|(_, fd)| readable(fd))
                .map(|((generation, _), _)| *generation)
                .collect(),
            watched: self.watcher.is_some() && readable(&fds[watch_at]),
            metrics: fds[metrics_at..metrics_at + metrics_count]
                .iter()
                .map(PollFd::revents)
                .collect(),
            hung_up: stored
                .iter()
                .zip(&fds[stored_at..])
                .filter(|(_, fd)| {
                    fd.revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
                    })
                })
                .map(|((position, _), _)| *position)
                .collect(),
        }
    }

    /// Acts on one signal as the table in `signals` says.
    fn on_signal(&mut self, signal: i32, now: Instant) {
        let name = signals::name(signal);
        let serves_sockets = !self.supervisor.processes().listeners.is_empty();
        match signals::meaning(signal) {
            Meaning::Reap => {
                let exits = self.supervisor.processes_mut().reaper.on_sigchld(now);
                self.on_exits(exits, now);
            }
            Meaning::Stop => {
                self.supervisor
                    .on_stop_request(&format!("{name} received"), now);
            }
            Meaning::Upgrade if serves_sockets => match self.supervisor.request_upgrade(now) {
                Ok(_) => tracing::info!("{name} received: upgrade started"),
                Err(why) => tracing::warn!("{name} received: upgrade not started: {why}"),
            },
            // An init has nothing to upgrade: a server's HUP (reload your
            // configuration) is the server's.
            Meaning::Upgrade | Meaning::Forward => self.forward(signal, &name),
            Meaning::Untouched(_) => {}
        }
    }

    /// Dispatches what the reaper collected. Whose process it was: the
    /// re-exec check is the loop's own; a worker or probe is the
    /// supervisor's (by its pid index); anything else is an orphan, which
    /// the supervisor logs.
    fn on_exits(&mut self, exits: Vec<Exit>, now: Instant) {
        for exit in exits {
            let is_check = self
                .pending_reexec
                .as_ref()
                .is_some_and(|p| p.check == exit.pid);
            if is_check {
                self.on_reexec_check(exit.status, now);
            } else {
                self.supervisor.on_exit(exit, now);
            }
        }
    }

    /// Passes `signal` to every worker of the serving generation (or, with
    /// `--signal-group`, to each worker's process group).
    fn forward(&mut self, signal: i32, name: &str) {
        let workers = self.supervisor.serving_pids();
        if workers.is_empty() {
            tracing::debug!("{name} dropped: no generation is serving");
            return;
        }
        let children = self.supervisor.processes();
        for pid in &workers {
            children.forward(*pid, signal);
        }
        tracing::debug!("{name} forwarded to {} worker(s)", workers.len());
    }

    fn on_notify(&mut self, generation: u32, now: Instant) {
        let Some(socket) = self.supervisor.processes().notify_socket(generation) else {
            return;
        };
        let sockvisor = self.supervisor.processes().sockvisor_pid;
        // Each `Received` is dropped (closing what was passed with it) only
        // after its sender has been checked.
        for received in socket.receive(NOTIFY_BUDGET) {
            let sender = Pid::from_raw(received.sender.unwrap_or(0));
            let owner = sender::attribute(sender, sockvisor, &sender::ProcFs, |pid| {
                self.supervisor.worker_of(pid)
            });
            let index = match owner {
                Some((owner, index)) if owner == generation => index,
                Some((owner, _)) => {
                    tracing::debug!(
                        "notify datagram for generation {generation} dropped: sender pid {sender} is not a process of it (it is generation {owner}'s)"
                    );
                    continue;
                }
                None => {
                    tracing::debug!(
                        "notify datagram for generation {generation} dropped: sender pid {sender} is not a process of it"
                    );
                    continue;
                }
            };
            match received.message {
                Ok(message) => {
                    self.store_descriptors(generation, &message, received.passed);
                    self.supervisor.on_notify(generation, index, &message, now)
                }
                Err(why) => tracing::debug!(
                    "notify datagram from pid {sender} for generation {generation} dropped: {why}"
                ),
            }
        }
    }

    fn on_request(&mut self, incoming: Incoming, now: Instant) {
        let connection = incoming.connection;
        match incoming.request.command {
            Command::Upgrade => match self.supervisor.request_upgrade(now) {
                Ok(upgrade) => self.control.follow_upgrade(connection, upgrade),
                Err(why) => self.refuse(connection, why),
            },
            Command::Status => {
                let status = self.status(now);
                self.control.reply(
                    connection,
                    Reply::Result {
                        ok: true,
                        message: "status".into(),
                        error: None,
                        status: Some(status),
                    },
                );
            }
            Command::Stop => {
                self.control.wait_for_exit(connection);
                self.supervisor
                    .on_stop_call("stop requested on the control socket", now);
            }
            Command::Signal { signal } => self.signal_request(connection, &signal),
            Command::Reexec { binary } => self.request_reexec(connection, binary, now),
            Command::Scale { workers } => match self.supervisor.request_scale(workers, now) {
                Ok(scale) => self.control.follow_upgrade(connection, scale),
                Err(why) => self.refuse(connection, why),
            },
            Command::WorkerAck { pid } => self.worker_ack(connection, incoming.peer, pid, now),
        }
    }

    /// `--watch`: a settled change starts an upgrade, or waits for the
    /// generation that is starting.
    fn upgrade_on_change(&mut self, now: Instant) {
        let starting = self.supervisor.is_starting();
        let Some(path) = self
            .watcher
            .as_mut()
            .and_then(|w| w.take_due(now, starting))
        else {
            return;
        };
        match self.supervisor.request_upgrade(now) {
            Ok(id) => {
                tracing::info!("watch: {} changed; upgrading", path.display());
                self.watch_upgrade = Some(id);
            }
            Err(why) => tracing::warn!("watch: {} changed, but no upgrade: {why}", path.display()),
        }
    }

    fn report_watch_result(&mut self, notice: &Notice) {
        let Notice::Finished { upgrade, result } = notice else {
            return;
        };
        if self.watch_upgrade != Some(*upgrade) {
            return;
        }
        self.watch_upgrade = None;
        match result {
            Ok(done) => tracing::info!("watch: {done}"),
            Err(why) => {
                tracing::warn!("watch: the new code did not start: {why}; fix it and save again")
            }
        }
    }

    /// `FDSTORE=1` keeps what came with the message; `FDSTOREREMOVE=1`
    /// drops by name. Anything not kept is closed when `passed` drops.
    fn store_descriptors(
        &mut self,
        generation: u32,
        message: &NotifyMessage,
        passed: Vec<OwnedFd>,
    ) {
        let children = self.supervisor.processes_mut();
        // A copy of a listening socket is not kept: every generation gets
        // that socket already, and would get it twice.
        let (listening, passed): (Vec<OwnedFd>, Vec<OwnedFd>) =
            passed.into_iter().partition(|fd| {
                children
                    .listeners
                    .iter()
                    .any(|l| crate::fdstore::same_open_file(l.fd(), std::os::fd::AsFd::as_fd(fd)))
            });
        if message.fdstore && !listening.is_empty() {
            tracing::debug!(
                "generation {generation}: FDSTORE=1 dropped {} copy(ies) of a listening socket (every generation gets those as fds 3 and up)",
                listening.len()
            );
        }
        let store = &mut children.fdstore;
        if message.fdstore_remove {
            match &message.fdname {
                Some(name) => {
                    let removed = store.remove(name);
                    tracing::debug!(
                        "generation {generation}: {removed} stored descriptor(s) named {name} removed"
                    );
                }
                None => tracing::debug!(
                    "generation {generation}: FDSTOREREMOVE=1 without FDNAME= ignored"
                ),
            }
        }
        if message.fdstore && !passed.is_empty() {
            let count = passed.len();
            let dropped = store.offer(passed, message.fdname.as_deref(), !message.no_fdpoll);
            for why in &dropped {
                tracing::debug!("generation {generation}: FDSTORE=1 dropped {why}");
            }
            tracing::debug!(
                "generation {generation}: {} of {count} descriptor(s) stored",
                count - dropped.len().min(count)
            );
        }
    }

    /// Answers an upgrade or scale that could not start.
    fn refuse(&mut self, connection: ConnectionId, why: UpgradeRejection) {
        let kind = match why {
            UpgradeRejection::Busy(_) | UpgradeRejection::Stopping => ErrorKind::Busy,
            UpgradeRejection::SpawnFailed(_) => ErrorKind::Failed,
        };
        self.control
            .reply(connection, Reply::failure(kind, why.to_string()));
    }

    /// einhorn's `worker:ack`: counts like READY=1 for the worker it names,
    /// when it comes from that worker (see [`Self::ack_origin`]).
    fn worker_ack(&mut self, connection: ConnectionId, peer: Option<Pid>, pid: i32, now: Instant) {
        let reply = match self.ack_origin(peer, Pid::from_raw(pid)) {
            Err((kind, why)) => {
                let why = format!("worker:ack for pid {pid} refused: {why}");
                tracing::warn!("{why}");
                Reply::failure(kind, why)
            }
            Ok((generation, index)) => {
                match self.supervisor.on_worker_ack(generation, index, now) {
                    Ok(()) => Reply::success(format!("generation {generation} acknowledged")),
                    Err(why) => Reply::failure(ErrorKind::Failed, why),
                }
            }
        };
        self.control.reply(connection, reply);
    }

    /// The worker (generation, index) a `worker:ack` naming `named` counts
    /// for. It counts only with `--fd-env einhorn`, and only when the
    /// process that connected, `peer`, is the worker that `named` belongs
    /// to or a descendant of it: naming a pid proves nothing.
    fn ack_origin(&self, peer: Option<Pid>, named: Pid) -> Result<(u32, u32), (ErrorKind, String)> {
        let children = self.supervisor.processes();
        if !children.fd_env.contains(&FdEnv::Einhorn) {
            return Err((
                ErrorKind::BadRequest,
                "it counts only with --fd-env einhorn (it is einhorn's readiness message; \
                 without that option a worker reports readiness with READY=1 on NOTIFY_SOCKET)"
                    .to_string(),
            ));
        }
        let origin = sender::ack_counts_for(
            named,
            peer,
            children.sockvisor_pid,
            &sender::ProcFs,
            |pid| self.supervisor.worker_of(pid),
        );
        let describe = |(generation, index): (u32, u32)| {
            self.supervisor
                .describe_worker(generation, index)
                .unwrap_or_else(|| format!("generation {generation} worker {index}"))
        };
        origin.map_err(|refusal| match refusal {
            AckRefusal::NotAWorker => (
                ErrorKind::Failed,
                "that pid is not a process of any generation".to_string(),
            ),
            AckRefusal::UnknownPeer { worker } => (
                ErrorKind::PermissionDenied,
                format!(
                    "the kernel could not name the process that connected, so it cannot be shown to be {}",
                    describe(worker)
                ),
            ),
            AckRefusal::NotFromWorker { worker, peer } => (
                ErrorKind::PermissionDenied,
                format!(
                    "the connection comes from pid {peer}, which is not {} or a descendant of it; a worker acknowledges only its own start",
                    describe(worker)
                ),
            ),
        })
    }

    fn signal_request(&mut self, connection: ConnectionId, signal: &str) {
        let reply = match signals::parse_forwarded(signal) {
            Err(why) => Reply::failure(ErrorKind::BadRequest, why),
            Ok(signal) => match self.supervisor.signal_current(signal) {
                Ok(done) => Reply::success(done),
                Err(why) => Reply::failure(ErrorKind::Failed, why),
            },
        };
        self.control.reply(connection, reply);
    }
}

/// Milliseconds until `deadline`, rounded up so the loop never wakes just
/// before it and spins; no deadline means wait forever.
fn poll_timeout(deadline: Option<Instant>, now: Instant) -> PollTimeout {
    let Some(deadline) = deadline else {
        return PollTimeout::NONE;
    };
    let remaining = deadline.saturating_duration_since(now);
    let millis = remaining.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn no_deadline_means_no_timer() {
        assert_eq!(poll_timeout(None, Instant::now()), PollTimeout::NONE);
    }

    #[test]
    fn timeout_is_rounded_up_and_never_negative() {
        let now = Instant::now();
        let t = poll_timeout(Some(now + Duration::from_micros(1500)), now);
        assert_eq!(t.as_millis(), Some(2));
        assert_eq!(
            poll_timeout(Some(now), now + Duration::from_secs(1)).as_millis(),
            Some(0)
        );
    }
}
