//! `sockvisor reexec` as the event loop carries it out: the check run of
//! the new binary (a real handshake, see `reexec::check`), its verdict or
//! its timeout, then the hand-over and the `execve`.

use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::{EventLoop, PendingReexec};
use crate::control::server::ConnectionId;
use crate::control::{ErrorKind, Reply};
use crate::deadline;
use crate::metrics::MetricsServer;
use crate::reaper;
use crate::reexec;
use crate::spawn::{self, Command as SpawnCommand, SpawnRequest};

impl EventLoop {
    /// `sockvisor reexec`: the new binary must prove that it can resume
    /// this state (a run of it in check mode, see `reexec::check`) before
    /// it is executed.
    pub(super) fn request_reexec(
        &mut self,
        connection: ConnectionId,
        binary: Option<String>,
        now: Instant,
    ) {
        let refuse = |why: String| Reply::failure(ErrorKind::Busy, why);
        if self.pending_reexec.is_some() {
            let why = "a re-exec is already being checked; try again once it is done";
            self.control.reply(connection, refuse(why.into()));
            return;
        }
        if let Some(why) = self.supervisor.handover_blocker() {
            self.control.reply(connection, refuse(why));
            return;
        }
        let binary = binary.map_or_else(reexec::started_from, PathBuf::from);
        let cannot = |what: String| {
            Reply::failure(
                ErrorKind::Failed,
                format!("cannot run {}: {what}; nothing changed", binary.display()),
            )
        };
        // The state as the exec would hand it over now, the requester's
        // connection included.
        let mut state = reexec::capture::capture(
            &self.supervisor,
            &self.control,
            self.control.connection_fd(connection),
            self.pidfile.as_ref(),
            self.watcher.as_ref(),
            self.reexecs,
            now,
        );
        state.metrics_fd = self.metrics.as_ref().map(MetricsServer::listener_fd);
        let mut challenge = match reexec::check::Challenge::new(&state) {
            Ok(challenge) => challenge,
            Err(err) => {
                let reply = cannot(format!("cannot prepare the check: {err}"));
                self.control.reply(connection, reply);
                return;
            }
        };
        let check = SpawnCommand {
            program: binary.clone().into_os_string(),
            args: std::env::args_os().skip(1).collect(),
        };
        let request = SpawnRequest {
            command: &check,
            listeners: &[],
            stored: &challenge.descriptors(),
            extra_env: &[challenge.variable()],
            terminal: None,
            watchdog: None,
            run_as: None,
            env_overrides: &[],
            no_listen_pid: true,
            pidfd: self.supervisor.processes().reaper.wants_pidfd(),
        };
        match spawn::spawn(&request) {
            Ok(spawned) => {
                let pid = spawned.pid;
                self.supervisor
                    .processes_mut()
                    .reaper
                    .adopt(pid, spawned.pidfd);
                challenge.given();
                tracing::info!("re-exec: checking {} (pid {pid})", binary.display());
                self.control.progress(
                    connection,
                    format!("checking that {} can resume this state", binary.display()),
                );
                self.pending_reexec = Some(PendingReexec {
                    connection: Some(connection),
                    binary,
                    check: pid,
                    challenge,
                    deadline: deadline::after(now, reexec::check::CHECK_TIMEOUT),
                });
            }
            Err(err) => {
                let reply = cannot(err.to_string());
                self.control.reply(connection, reply);
            }
        }
    }

    pub(super) fn on_reexec_check(&mut self, status: reaper::ExitStatus, now: Instant) {
        let Some(pending) = self.pending_reexec.take() else {
            return;
        };
        let binary = pending.binary.display().to_string();
        let Some(connection) = pending.connection else {
            tracing::debug!(
                "the re-exec check of {binary} (pid {}), killed for overrunning, {status}",
                pending.check
            );
            return;
        };
        if let Err(what) = pending.challenge.verdict(status) {
            let why = format!("{binary} {what}; nothing changed");
            tracing::warn!("re-exec refused: {why}");
            self.control
                .reply(connection, Reply::failure(ErrorKind::Failed, why));
            return;
        }
        if let Some(why) = self.supervisor.handover_blocker() {
            self.control
                .reply(connection, Reply::failure(ErrorKind::Busy, why));
            return;
        }
        // An upgrade whose new generation already serves is answered with
        // its success, not cut off with "re-executing".
        self.supervisor.finish_for_handover(now);
        for notice in self.supervisor.take_notices() {
            self.control.deliver(&notice);
        }
        self.carry_out_effects();
        let requester = self.control.connection_fd(connection);
        let mut state = reexec::capture::capture(
            &self.supervisor,
            &self.control,
            requester,
            self.pidfile.as_ref(),
            self.watcher.as_ref(),
            self.reexecs,
            now,
        );
        state.metrics_fd = self.metrics.as_ref().map(MetricsServer::listener_fd);
        self.control.close_for_reexec(connection);
        tracing::info!("re-executing into {binary}");
        let err = reexec::exec(&pending.binary, &state);
        let why = format!("cannot execute {binary}: {err}; nothing changed");
        tracing::warn!("{why}");
        self.control
            .reply(connection, Reply::failure(ErrorKind::Failed, why));
    }

    /// A check that overran is killed and its client answered now; the
    /// check stays pending until the reaper reports its exit.
    pub(super) fn reexec_check_deadline(&mut self, now: Instant) {
        let Some(pending) = self
            .pending_reexec
            .as_mut()
            .filter(|p| p.deadline <= now && p.connection.is_some())
        else {
            return;
        };
        let _ = nix::sys::signal::killpg(pending.check, Signal::SIGKILL);
        let why = format!(
            "{} did not answer the check within {} and was killed; nothing changed",
            pending.binary.display(),
            crate::duration::format_duration(reexec::check::CHECK_TIMEOUT)
        );
        tracing::warn!("re-exec refused: {why}");
        if let Some(connection) = pending.connection.take() {
            self.control
                .reply(connection, Reply::failure(ErrorKind::Failed, why));
        }
    }
}
