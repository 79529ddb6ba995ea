//! `--metrics ADDR`: a Prometheus endpoint, `GET /metrics`, served from the
//! event loop like the control socket.
//!
//! This module owns the listening socket and its connections, and turns
//! sockvisor's status into the OpenMetrics text format (the encoding is
//! the official `prometheus-client` crate's; the request line is read by
//! `httparse`). It never blocks the loop and never runs a thread: every
//! socket is non-blocking, a request is at most [`MAX_REQUEST`] bytes and
//! must arrive within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] are
//! served at once (a new one closes the oldest), and a full descriptor
//! table is handled as on the control socket. Idle, it costs no wake-up.
//!
//! The figures are read when a scrape arrives: nothing is sampled between
//! scrapes.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use crate::deadline;
use crate::spare_fd::SpareDescriptor;

/// Longest request read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapers served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// What a scrape shows beyond `status --json`: the kernel's view of each
/// listener's accept queue, and sockvisor's own resources.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// Per listener, in fd order: (fd, name, queued, limit); TCP only.
    pub queues: Vec<(i32, String, u32, u32)>,
    /// Per worker: (generation, index, resident bytes).
    pub worker_rss: Vec<(u32, u32, u64)>,
    pub own_rss: u64,
    pub own_fds: u64,
}

struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    accepted: Instant,
    /// The answer is queued: close once it is written.
    answered: bool,
    dead: bool,
}

pub struct MetricsServer {
    listener: TcpListener,
    address: SocketAddr,
    connections: Vec<Connection>,
    spare: SpareDescriptor,
}

impl MetricsServer {
    /// Binds `address` (a TCP address; `:0` picks a free port).
    pub fn bind(address: SocketAddr) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(address)
            .map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
        Self::adopt(OwnedFd::from(listener))
    }

    /// The listener a previous sockvisor program bound, after a re-exec.
    pub fn adopt(fd: OwnedFd) -> Result<MetricsServer, String> {
        let listener = TcpListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics socket: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("metrics socket: {e}"))?;
        Ok(MetricsServer {
            listener,
            address,
            connections: Vec::new(),
            spare: SpareDescriptor::reserve(),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The listening descriptor, for a re-exec to hand over.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Descriptors to poll: the listener first, then each connection.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let listening = if self.spare.listening() {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let mut fds = vec![(self.listener.as_fd(), listening)];
        for connection in &self.connections {
            let flags = if connection.answered {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            fds.push((connection.stream.as_fd(), flags));
        }
        fds
    }

    /// Acts on poll results (one per `poll_fds` entry). `render` builds the
    /// exposition when a complete scrape request is there.
    pub fn handle(
        &mut self,
        events: &[Option<PollFlags>],
        now: Instant,
        render: &mut dyn FnMut() -> String,
    ) {
        let (listener, connections) = events.split_first().unwrap_or((&None, &[]));
        for (connection, events) in self.connections.iter_mut().zip(connections) {
            if events.is_some_and(|e| !e.is_empty()) {
                connection.on_ready(render);
            }
        }
        if listener.is_some_and(|e| !e.is_empty()) {
            self.accept_all(now, render);
        }
        self.connections.retain(|c| !c.dead);
    }

    fn accept_all(&mut self, now: Instant, render: &mut dyn FnMut() -> String) {
        loop {
            let accepted = self.spare.accept(
                || self.listener.accept().map(|(stream, _)| stream),
                refuse_for_want_of_descriptors,
                "metrics scrapers",
                now,
            );
            let Some(stream) = accepted else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.connections.len() >= MAX_CONNECTIONS
                && let Some(oldest) = self.connections.iter_mut().min_by_key(|c| c.accepted)
            {
                oldest.dead = true;
            }
            self.connections.retain(|c| !c.dead);
            let mut connection = Connection {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                accepted: now,
                answered: false,
                dead: false,
            };
            // A scraper sends its request with the connection.
            connection.on_ready(render);
            self.connections.push(connection);
        }
    }

    /// When the oldest scraper still owing its request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.connections
            .iter()
            .filter(|c| !c.answered)
            .map(|c| deadline::after(c.accepted, REQUEST_TIMEOUT))
            .chain(self.spare.next_deadline())
            .min()
    }

    /// Closes scrapers that did not send a request in time.
    pub fn on_tick(&mut self, now: Instant) {
        self.spare.on_tick(now);
        self.connections
            .retain(|c| c.answered || deadline::after(c.accepted, REQUEST_TIMEOUT) > now);
    }
}

impl Connection {
    fn on_ready(&mut self, render: &mut dyn FnMut() -> String) {
        if !self.answered {
            self.read(render);
        }
        if self.answered {
            self.flush();
        }
    }

    fn read(&mut self, render: &mut dyn FnMut() -> String) {
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
            if self.input.len() > MAX_REQUEST {
                break;
            }
        }
        if let Some(response) = respond(&self.input, render) {
            self.output = response;
            self.answered = true;
        }
    }

    fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        // Written, or the scraper is gone: either way, done.
        self.dead = true;
    }
}

/// The response to what a scraper sent so far, once it is a whole request
/// (or can never become one).
fn respond(input: &[u8], render: &mut dyn FnMut() -> String) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(input);
    let (status, content_type, body) = match parsed {
        Ok(httparse::Status::Partial) if input.len() <= MAX_REQUEST => return None,
        Ok(httparse::Status::Partial) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".to_string(),
        ),
        Err(_) => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some("GET" | "HEAD"), Some(path)) if path.split('?').next() == Some("/metrics") => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(),
            ),
            (Some("GET" | "HEAD"), _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n".to_string(),
            ),
        },
    };
    let head = request.method == Some("HEAD");
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        response.extend_from_slice(body.as_bytes());
    }
    Some(response)
}

/// The exposition: sockvisor's status (as `status --json` reports it) and
/// the resources read for this scrape, in the OpenMetrics text format.
pub fn render(status: &Value, resources: &Resources) -> String {
    let mut registry = Registry::with_prefix("sockvisor");
    let gauge = |value: i64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        gauge
    };
    let counter = |value: u64| {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        counter
    };
    let number = |value: &Value| value.as_u64().unwrap_or_default();

    registry.register(
        "current_generation",
        "The generation that serves (0 when none does)",
        gauge(number(&status["current"]) as i64),
    );
    registry.register(
        "stopping",
        "1 while sockvisor stops",
        gauge(i64::from(status["stopping"] == true)),
    );
    let workers = Family::<Vec<(String, String)>, Gauge>::default();
    let generations = Family::<Vec<(String, String)>, Gauge>::default();
    let rss = Family::<Vec<(String, String)>, Gauge>::default();
    let age = Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for state in ["starting", "ready", "stopping", "draining"] {
        let _ = workers.get_or_create(&vec![("state".into(), state.into())]);
    }
    for generation in status["generations"].as_array().into_iter().flatten() {
        let state = generation["state"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        generations
            .get_or_create(&vec![("state".into(), state)])
            .inc();
        let number = number(&generation["generation"]);
        for worker in generation["workers"].as_array().into_iter().flatten() {
            let state = worker["state"].as_str().unwrap_or("unknown").to_string();
            workers.get_or_create(&vec![("state".into(), state)]).inc();
            // A slot's figures are its own worker's; the second process of
            // a recycle is counted by state only.
            if worker["recycling"] == true {
                continue;
            }
            let labels = vec![
                ("generation".to_string(), number.to_string()),
                ("worker".to_string(), worker["index"].to_string()),
            ];
            age.get_or_create(&labels)
                .set(worker["age_ms"].as_u64().unwrap_or_default() as f64 / 1000.0);
        }
    }
    for (generation, index, bytes) in &resources.worker_rss {
        let labels = vec![
            ("generation".to_string(), generation.to_string()),
            ("worker".to_string(), index.to_string()),
        ];
        rss.get_or_create(&labels).set(*bytes as i64);
    }
    registry.register("workers", "Worker processes, by state", workers);
    registry.register("generations", "Generations, by state", generations);
    registry.register_with_unit(
        "worker_resident_memory",
        "Resident memory of each worker and the processes under it",
        Unit::Bytes,
        rss,
    );
    registry.register_with_unit(
        "worker_age",
        "Time since each worker process started",
        Unit::Seconds,
        age,
    );

    let counters = &status["counters"];
    registry.register(
        "upgrades",
        "Upgrades whose new generation took over",
        counter(number(&counters["upgrades"])),
    );
    registry.register(
        "rollbacks",
        "Upgrades that failed, the old generation serving on",
        counter(number(&counters["rollbacks"])),
    );
    registry.register(
        "restarts",
        "Restarts of a generation or of a worker in its slot",
        counter(number(&counters["restarts"])),
    );
    registry.register(
        "recycles",
        "Workers replaced for their memory or age by a new one that became ready",
        counter(number(&counters["recycles"])),
    );
    registry.register(
        "recycle_failures",
        "Replacements for memory or age that did not become ready (the old worker served on)",
        counter(number(&counters["recycle_failures"])),
    );
    registry.register(
        "watchdog_restarts",
        "Replacements of a generation that missed its watchdog",
        counter(number(&status["watchdog_restarts"])),
    );
    registry.register(
        "reexecs",
        "Re-executions of sockvisor itself",
        counter(number(&status["reexecs"])),
    );
    if let Some(seconds) = status["last_upgrade"]["duration_ms"].as_u64() {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(seconds as f64 / 1000.0);
        registry.register_with_unit(
            "last_upgrade_duration",
            "From the last upgrade's new generation starting to its result (the old one drained)",
            Unit::Seconds,
            gauge,
        );
    }

    let queued = Family::<Vec<(String, String)>, Gauge>::default();
    let limit = Family::<Vec<(String, String)>, Gauge>::default();
    for (fd, name, now_queued, max) in &resources.queues {
        let labels = vec![
            ("fd".to_string(), fd.to_string()),
            ("name".to_string(), name.clone()),
        ];
        queued.get_or_create(&labels).set(i64::from(*now_queued));
        limit.get_or_create(&labels).set(i64::from(*max));
    }
    registry.register(
        "listener_queue_length",
        "Connections waiting in a TCP listener's accept queue (the kernel's figure)",
        queued,
    );
    registry.register(
        "listener_queue_limit",
        "The accept queue's limit: the listen(2) backlog as the kernel applies it",
        limit,
    );
    registry.register_with_unit(
        "resident_memory",
        "sockvisor's own resident memory",
        Unit::Bytes,
        gauge(resources.own_rss as i64),
    );
    registry.register(
        "open_fds",
        "Descriptors sockvisor itself holds open",
        gauge(resources.own_fds as i64),
    );
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        let _ = writeln!(text, "# EOF");
    }
    text
}

/// The kernel's accept-queue figures for a TCP listener: (queued, limit).
/// `TCP_INFO` on a listening socket reports them in `tcpi_unacked` and
/// `tcpi_sacked`.
pub fn accept_queue(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain data; zero is a valid value for it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `length` are valid for writes of the sizes given;
    // the kernel writes at most `length` bytes.
    let got = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    // TCP_LISTEN in the kernel's tcp_states.h.
    const TCP_LISTEN: u8 = 10;
    (got == 0 && info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// Resident memory of a process, in bytes, from `/proc/PID/statm`.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    crate::process_memory::resident_bytes(pid)
}

/// How many descriptors this process has open.
pub fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Out of descriptors, a scraper taken off the queue gets a 503 that says
/// why before it is closed (one non-blocking write, or nothing).
fn refuse_for_want_of_descriptors(stream: TcpStream) {
    const BODY: &str =
        "sockvisor is out of file descriptors; raise its open-file limit (ulimit -n)\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    let _ = nix::sys::socket::send(stream.as_raw_fd(), response.as_bytes(), flags);
    // A request already in is read, so that closing sends an end of
    // stream rather than a reset that could drop the answer.
    let mut request = [0u8; 1024];
    let _ = nix::sys::socket::recv(
        stream.as_raw_fd(),
        &mut request,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(request: &[u8]) -> String {
        let mut render = || "sockvisor_up 1\n# EOF\n".to_string();
        String::from_utf8(respond(request, &mut render).expect("a whole request")).unwrap()
    }

    #[test]
    fn get_metrics_is_answered_with_the_exposition() {
        let response = served(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("application/openmetrics-text"),
            "{response}"
        );
        assert!(response.ends_with("sockvisor_up 1\n# EOF\n"), "{response}");
    }

    #[test]
    fn anything_else_gets_a_clear_status_and_no_exposition() {
        assert!(served(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(served(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(served(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let huge = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST],
        ]
        .concat();
        assert!(served(&huge).starts_with("HTTP/1.1 431"));
    }

    #[test]
    fn a_partial_request_waits_for_the_rest() {
        let mut render = String::new;
        assert!(respond(b"GET /metr", &mut render).is_none());
    }

    #[test]
    fn a_slots_second_process_counts_by_state_but_not_as_the_slots_age() {
        let status = serde_json::json!({
            "counters": {},
            "generations": [{"generation": 1, "state": "ready", "workers": [
                {"index": 0, "state": "ready", "age_ms": 1000},
                {"index": 0, "state": "draining", "age_ms": 9000, "recycling": true}]}]
        });
        let resources = Resources {
            queues: Vec::new(),
            worker_rss: Vec::new(),
            own_rss: 0,
            own_fds: 0,
        };
        let text = render(&status, &resources);
        for line in [
            "sockvisor_workers{state=\"ready\"} 1",
            "sockvisor_workers{state=\"draining\"} 1",
            "sockvisor_worker_age_seconds{generation=\"1\",worker=\"0\"} 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn the_exposition_names_follow_prometheus_conventions() {
        let status = serde_json::json!({
            "current": 2, "stopping": false, "reexecs": 1, "watchdog_restarts": 0,
            "counters": {"upgrades": 3, "rollbacks": 1, "restarts": 4, "recycles": 5,
                "recycle_failures": 6},
            "last_upgrade": {"duration_ms": 1500},
            "generations": [{"generation": 2, "state": "ready",
                "workers": [{"index": 0, "state": "ready", "age_ms": 2500}]}]
        });
        let resources = Resources {
            queues: vec![(3, "http".into(), 0, 4096)],
            worker_rss: vec![(2, 0, 1 << 20)],
            own_rss: 3 << 20,
            own_fds: 12,
        };
        let text = render(&status, &resources);
        for line in [
            "sockvisor_current_generation 2",
            "sockvisor_upgrades_total 3",
            "sockvisor_rollbacks_total 1",
            "sockvisor_restarts_total 4",
            "sockvisor_recycles_total 5",
            "sockvisor_recycle_failures_total 6",
            "sockvisor_reexecs_total 1",
            "sockvisor_workers{state=\"ready\"} 1",
            "sockvisor_workers{state=\"draining\"} 0",
            "sockvisor_worker_resident_memory_bytes{generation=\"2\",worker=\"0\"} 1048576",
            "sockvisor_worker_age_seconds{generation=\"2\",worker=\"0\"} 2.5",
            "sockvisor_last_upgrade_duration_seconds 1.5",
            "sockvisor_listener_queue_limit{fd=\"3\",name=\"http\"} 4096",
            "sockvisor_resident_memory_bytes 3145728",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
