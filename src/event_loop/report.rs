//! What the event loop reports about the whole of sockvisor: the status a
//! `sockvisor status` request gets, and the exposition a metrics scrape
//! gets, both read when asked.

use std::os::fd::AsFd;
use std::time::Instant;

use std::path::PathBuf;

use nix::poll::PollFlags;
use serde::Serialize;

use super::EventLoop;
use crate::reexec;
use crate::supervisor::{GenerationStatus, StatusSnapshot};

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
                worker_rss: {
                    let mut budget = crate::process_memory::SAMPLE_BUDGET;
                    self.supervisor
                        .generations()
                        .iter()
                        .flat_map(|g| g.workers.iter().map(move |w| (g.number, w)))
                        .filter(|(_, w)| !w.second)
                        .filter_map(|(number, w)| {
                            let bytes =
                                crate::process_memory::tree_resident_bytes(w.pid, &mut budget)?;
                            Some((number, w.index, bytes))
                        })
                        .collect()
                },
                own_rss: crate::metrics::resident_bytes("self").unwrap_or_default(),
                own_fds: crate::metrics::open_descriptors(),
            };
            crate::metrics::render(&status, &resources)
        };
        metrics.handle(events, now, &mut render);
        self.metrics = Some(metrics);
    }

    pub(super) fn status(&self, now: Instant) -> serde_json::Value {
        serde_json::to_value(self.status_report(now)).unwrap_or_default()
    }

    /// The whole status, typed: the supervisor's snapshot and what only
    /// the event loop knows.
    fn status_report(&self, now: Instant) -> StatusReport {
        let children = self.supervisor.processes();
        let mut snapshot = self.supervisor.snapshot(now);
        let generations = std::mem::take(&mut snapshot.generations)
            .into_iter()
            .map(|generation| GenerationReport {
                environment: children.environment_of(generation.generation).map(|e| {
                    EnvironmentReport {
                        digest: e.digest.clone(),
                        read_at_unix_ms: e
                            .read_at
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, crate::duration::as_millis),
                    }
                }),
                generation,
            })
            .collect();
        let store = &children.fdstore;
        StatusReport {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            state_version: reexec::STATE_VERSION,
            reexecs: self.reexecs,
            last_reexec_ago_ms: self
                .last_reexec
                .map(|at| crate::duration::as_millis(now.saturating_duration_since(at))),
            control: self.control.path().to_path_buf(),
            listeners: children
                .listeners
                .iter()
                .enumerate()
                .map(|(index, l)| ListenerReport {
                    fd: 3 + index,
                    name: l.spec.name.clone(),
                    address: l.bound.clone(),
                })
                .collect(),
            fdstore: FdStoreReport {
                max: store.max(),
                descriptors: store
                    .entries()
                    .iter()
                    .map(|e| StoredReport {
                        name: e.name.clone(),
                        kind: crate::fdstore::describe_kind(e.fd.as_fd()).to_string(),
                    })
                    .collect(),
            },
            generations,
            snapshot,
        }
    }
}

/// `sockvisor status --json`'s `status` object.
#[derive(Serialize)]
struct StatusReport {
    pid: u32,
    version: &'static str,
    /// The re-exec state format this program reads and writes.
    state_version: u32,
    reexecs: u32,
    last_reexec_ago_ms: Option<u64>,
    control: PathBuf,
    listeners: Vec<ListenerReport>,
    fdstore: FdStoreReport,
    /// The supervisor's snapshot, its generations replaced by the fuller
    /// ones below.
    #[serde(flatten)]
    snapshot: StatusSnapshot,
    generations: Vec<GenerationReport>,
}

#[derive(Serialize)]
struct ListenerReport {
    fd: usize,
    name: String,
    address: String,
}

#[derive(Serialize)]
struct FdStoreReport {
    max: usize,
    descriptors: Vec<StoredReport>,
}

#[derive(Serialize)]
struct StoredReport {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A generation as the supervisor reports it, and what its workers read
/// from the `--env-file`s.
#[derive(Serialize)]
struct GenerationReport {
    #[serde(flatten)]
    generation: GenerationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<EnvironmentReport>,
}

#[derive(Serialize)]
struct EnvironmentReport {
    digest: String,
    read_at_unix_ms: u64,
}
