//! A loopback HTTP load generator for sockvisor's benchmarks.
//!
//! N client threads send `GET /` to one address for a bounded time, either
//! one connection per request or over kept-alive connections, and count
//! every failure by kind: refused, reset, timeout, empty reply, bad status,
//! other. It records latency percentiles, which server pid answered, and
//! how many requests completed in each 100 ms since it started
//! (`per_100ms`, for throughput over part of a run), and prints one JSON
//! object.
//!
//! ```text
//! loadgen --address 127.0.0.1:8080 [--clients 16] [--seconds 10]
//!         [--keep-alive] [--timeout-ms 5000]
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Hard cap on requests per client, so a run is bounded even if the
/// server answers implausibly fast.
const MAX_REQUESTS_PER_CLIENT: usize = 5_000_000;

struct Options {
    address: String,
    clients: usize,
    duration: Duration,
    keep_alive: bool,
    timeout: Duration,
}

/// Width of one `per_100ms` bucket.
const BUCKET: Duration = Duration::from_millis(100);

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    /// Completed requests per `BUCKET` since the run started.
    per_bucket: Vec<u64>,
    failures: BTreeMap<&'static str, u64>,
    pids: BTreeMap<String, u64>,
}

fn main() {
    let options = parse_options();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..options.clients)
        .map(|_| {
            let stop = stop.clone();
            let address = options.address.clone();
            let (keep_alive, timeout) = (options.keep_alive, options.timeout);
            thread::spawn(move || client(&address, keep_alive, timeout, &stop, started))
        })
        .collect();
    thread::sleep(options.duration);
    stop.store(true, Ordering::SeqCst);
    let mut total = ClientResult::default();
    for client in clients {
        let result = client.join().expect("client thread panicked");
        total.latencies_us.extend(result.latencies_us);
        for (kind, n) in result.failures {
            *total.failures.entry(kind).or_default() += n;
        }
        for (pid, n) in result.pids {
            *total.pids.entry(pid).or_default() += n;
        }
        if total.per_bucket.len() < result.per_bucket.len() {
            total.per_bucket.resize(result.per_bucket.len(), 0);
        }
        for (sum, n) in total.per_bucket.iter_mut().zip(&result.per_bucket) {
            *sum += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if total.latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((total.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(total.latencies_us[index]) / 1000.0
    };
    let failed: u64 = total.failures.values().sum();
    let report = serde_json::json!({
        "requests": total.latencies_us.len(),
        "failed": failed,
        "failures": total.failures,
        "seconds": elapsed,
        "requests_per_second": total.latencies_us.len() as f64 / elapsed,
        "latency_ms": {
            "p50": percentile(0.50),
            "p99": percentile(0.99),
            "p99_9": percentile(0.999),
            "max": percentile(1.0),
        },
        "pids": total.pids,
        "per_100ms": total.per_bucket,
    });
    println!("{report}");
}

fn parse_options() -> Options {
    let mut options = Options {
        address: String::new(),
        clients: 16,
        duration: Duration::from_secs(10),
        keep_alive: false,
        timeout: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--address" => options.address = value(),
            "--clients" => options.clients = value().parse().unwrap(),
            "--seconds" => options.duration = Duration::from_secs_f64(value().parse().unwrap()),
            "--keep-alive" => options.keep_alive = true,
            "--timeout-ms" => options.timeout = Duration::from_millis(value().parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!options.address.is_empty(), "--address is required");
    options
}

fn client(
    address: &str,
    keep_alive: bool,
    timeout: Duration,
    stop: &AtomicBool,
    started: Instant,
) -> ClientResult {
    let mut result = ClientResult::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst) && result.latencies_us.len() < MAX_REQUESTS_PER_CLIENT {
        let start = Instant::now();
        let outcome = request(address, keep_alive, timeout, &mut connection);
        match outcome {
            Ok((pid, reusable)) => {
                result
                    .latencies_us
                    .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                let bucket = (started.elapsed().as_millis() / BUCKET.as_millis()) as usize;
                if result.per_bucket.len() <= bucket {
                    result.per_bucket.resize(bucket + 1, 0);
                }
                result.per_bucket[bucket] += 1;
                *result.pids.entry(pid).or_default() += 1;
                if !reusable {
                    connection = None;
                }
            }
            Err(kind) => {
                connection = None;
                *result.failures.entry(kind).or_default() += 1;
            }
        }
    }
    result
}

/// One request. Returns the answering pid and whether the connection may
/// be reused, or the kind of failure.
fn request(
    address: &str,
    keep_alive: bool,
    timeout: Duration,
    connection: &mut Option<BufReader<TcpStream>>,
) -> Result<(String, bool), &'static str> {
    // A kept-alive connection the server has closed since its last answer
    // is not a failure: reconnect, as every HTTP client does.
    if connection.is_none() {
        let stream = TcpStream::connect(address).map_err(|e| classify(&e))?;
        stream.set_read_timeout(Some(timeout)).ok();
        stream.set_write_timeout(Some(timeout)).ok();
        stream.set_nodelay(true).ok();
        *connection = Some(BufReader::new(stream));
    }
    let reader = connection.as_mut().expect("connected above");
    let head: &[u8] = if keep_alive {
        b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    };
    reader.get_mut().write_all(head).map_err(|e| classify(&e))?;
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Err("empty_reply"),
        Ok(_) => {}
        Err(e) => return Err(classify(&e)),
    }
    if !status.starts_with("HTTP/1.1 200") {
        return Err("bad_status");
    }
    let mut length = 0usize;
    let mut close = !keep_alive;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("empty_reply"),
            Ok(_) => {}
            Err(e) => return Err(classify(&e)),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().map_err(|_| "bad_status")?;
        } else if lower == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|e| classify(&e))?;
    let body = String::from_utf8_lossy(&body);
    let pid = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if !pid.starts_with("pid=") {
        return Err("bad_status");
    }
    Ok((pid, !close))
}

fn classify(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "reset",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timeout",
        io::ErrorKind::UnexpectedEof => "empty_reply",
        _ => "other",
    }
}
