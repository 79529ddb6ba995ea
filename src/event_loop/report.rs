//! What the event loop reports about the whole of sockvisor: the status a
//! `sockvisor status` request gets, and the exposition a metrics scrape
//! gets, both read when asked.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::PollFlags;
use serde_json::json;

use super::EventLoop;
use crate::reexec;

impl EventLoop {
    /// Answers the scrapers whose requests are complete, with the figures
    /// read now.
    pub(super) fn serve_metrics(&mut self, events: &[Option<PollFlags>], now: Instant) {
        let Some(mut metrics) = self.metrics.take() else {
            return;
        };
        let mut render = || {
            let status = self.status(now);
            let children = self.supervisor.processes();
            let resources = crate::metrics::Resources {
                queues: children
                    .listeners
                    .iter()
                    .enumerate()
                    .filter_map(|(index, l)| {
                        let (queued, limit) = crate::metrics::accept_queue(l.fd())?;
                        Some((3 + index as i32, l.spec.name.clone(), queued, limit))
                    })
                    .collect(),
                worker_rss: self
                    .supervisor
                    .generations()
                    .iter()
                    .flat_map(|g| g.workers.iter().map(move |w| (g.number, w)))
                    .filter_map(|(number, w)| {
                        let bytes = crate::metrics::resident_bytes(&w.pid.to_string())?;
                        Some((number, w.index, bytes))
                    })
                    .collect(),
                own_rss: crate::metrics::resident_bytes("self").unwrap_or_default(),
                own_fds: crate::metrics::open_descriptors(),
            };
            crate::metrics::render(&status, &resources)
        };
        metrics.handle(events, now, &mut render);
        self.metrics = Some(metrics);
    }

    pub(super) fn status(&self, now: Instant) -> serde_json::Value {
        let children = self.supervisor.processes();
        let listeners: Vec<_> = children
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| json!({"fd": 3 + index, "name": l.spec.name, "address": l.bound}))
            .collect();
        let mut status = serde_json::to_value(self.supervisor.snapshot(now)).unwrap_or_default();
        status["pid"] = json!(std::process::id());
        status["version"] = json!(env!("CARGO_PKG_VERSION"));
        status["state_version"] = json!(reexec::STATE_VERSION);
        status["reexecs"] = json!(self.reexecs);
        let store = &children.fdstore;
        status["fdstore"] = json!({
            "max": store.max(),
            "descriptors": store
                .entries()
                .iter()
                .map(|e| json!({"name": e.name, "type": crate::fdstore::describe_kind(e.fd.as_fd())}))
                .collect::<Vec<_>>(),
        });
        status["last_reexec_ago_ms"] = json!(
            self.last_reexec
                .map(|at| crate::duration::as_millis(now.saturating_duration_since(at)))
        );
        if let Some(generations) = status["generations"].as_array_mut() {
            for generation in generations {
                let number = generation["generation"].as_u64().unwrap_or_default() as u32;
                if let Some(environment) = children.environment_of(number) {
                    let read_at_ms = environment
                        .read_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, crate::duration::as_millis);
                    generation["environment"] =
                        json!({"digest": environment.digest, "read_at_unix_ms": read_at_ms});
                }
            }
        }
        status["control"] = json!(self.control.path());
        status["listeners"] = json!(listeners);
        status
    }
}
