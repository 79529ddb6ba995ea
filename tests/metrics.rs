//! `--metrics ADDR`: the Prometheus endpoint, read with a real parser
//! (the official Python client's OpenMetrics parser, Debian's
//! python3-prometheus-client, which `.ci/run` installs), across an upgrade
//! and a re-exec; and a hostile scraper never stalls sockvisor.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// One GET /metrics, the whole response as read until the server closed
/// (whatever was read if the connection broke).
fn get_metrics(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    // A server that refuses may answer and close before the request is
    // written: its answer is still read.
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    if response.is_empty() {
        read?;
    }
    Ok(response)
}

fn scrape(port: u16) -> String {
    let response = get_metrics(port).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap()
}

/// Every sample, as the Prometheus client's OpenMetrics parser reads the
/// exposition: `{"name{labels}": value}`. The parser refuses anything
/// that is not valid OpenMetrics.
fn parsed(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(sample.labels.items()))
        samples["%s{%s}" % (sample.name, labels)] = sample.value
print(json.dumps(samples))
"#;
    let mut python = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the exposition ({}; python3-prometheus-client is needed, .ci/run installs it):\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The port of the endpoint sockvisor bound for `--metrics 127.0.0.1:0`,
/// from its log line (a port picked beforehand could be taken meanwhile by
/// a parallel test's connection).
fn metrics_port(sockvisor: &Sockvisor) -> u16 {
    let line = sockvisor.wait_for_log("metrics: http://");
    line.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// sockvisor with two workers and the endpoint on a port of its choosing,
/// once generation 1 serves; and that port.
fn run_with_metrics(name: &str) -> (Sockvisor, u16) {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0,name=http", "--workers", "2"])
        .args(["--metrics", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.worker_report(1, 1);
    sockvisor.wait_for("generation 1 to serve", || {
        (status_json(&sockvisor)["current"] == 1).then_some(())
    });
    let port = metrics_port(&sockvisor);
    (sockvisor, port)
}

#[test]
fn the_endpoint_reads_as_openmetrics_and_follows_upgrades_and_reexecs() {
    let (sockvisor, port) = run_with_metrics("metrics");
    let first = parsed(&scrape(port));
    assert_eq!(first["sockvisor_current_generation{}"], 1.0, "{first}");
    assert_eq!(first["sockvisor_workers{state=ready}"], 2.0, "{first}");
    assert_eq!(first["sockvisor_upgrades_total{}"], 0.0, "{first}");
    assert!(first["sockvisor_resident_memory_bytes{}"].as_f64().unwrap() > 0.0);
    assert!(
        first["sockvisor_worker_resident_memory_bytes{generation=1,worker=0}"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(
        first["sockvisor_listener_queue_length{fd=3,name=http}"], 0.0,
        "{first}"
    );
    assert!(
        first["sockvisor_listener_queue_limit{fd=3,name=http}"]
            .as_f64()
            .unwrap()
            >= 1.0
    );

    assert!(sockvisor.client(&["upgrade"]).status.success());
    let output = sockvisor.client(&["reexec", "--timeout", "20s"]);
    assert!(output.status.success(), "{output:?}");
    // The same endpoint, served by the re-executed program, with the
    // counters carried over.
    let after = parsed(&scrape(port));
    assert_eq!(after["sockvisor_current_generation{}"], 2.0, "{after}");
    assert_eq!(after["sockvisor_upgrades_total{}"], 1.0, "{after}");
    assert_eq!(after["sockvisor_reexecs_total{}"], 1.0, "{after}");
    assert!(
        after["sockvisor_last_upgrade_duration_seconds{}"]
            .as_f64()
            .is_some(),
        "{after}"
    );
}

#[test]
fn a_silent_or_hostile_scraper_does_not_stall_sockvisor() {
    let (sockvisor, port) = run_with_metrics("metrics-hostile");
    // Connections that never send, and one that sends an endless header.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut endless = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = endless.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
    let _ = endless.write_all(&[b'a'; 16 * 1024]);
    // The control socket answers meanwhile, and a real scrape is served.
    assert!(sockvisor.client(&["status"]).status.success());
    let samples = parsed(&scrape(port));
    assert_eq!(samples["sockvisor_current_generation{}"], 1.0);
    let mut answer = String::new();
    endless.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = endless.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(idle);
}

#[test]
fn status_json_counts_upgrades_and_rollbacks() {
    let (sockvisor, _) = run_with_metrics("metrics-counters");
    assert!(sockvisor.client(&["upgrade"]).status.success());
    let status = status_json(&sockvisor);
    assert_eq!(status["counters"]["upgrades"], 1, "{status}");
    assert_eq!(status["counters"]["rollbacks"], 0, "{status}");
    assert!(
        status["last_upgrade"]["duration_ms"].as_u64().is_some(),
        "{status}"
    );
}

#[test]
fn a_worker_over_its_memory_limit_is_recycled_and_the_endpoint_counts_it() {
    let dir = TestDir::new("metrics-rss");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workers", "2"])
        .args([
            "--worker-max-rss",
            "1K",
            "--worker-sample-interval",
            "100ms",
        ])
        .args(["--metrics", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let port = metrics_port(&sockvisor);
    // Every process is over 1 KiB: each worker is replaced after two
    // samples, again and again.
    let line = sockvisor.wait_for_log("KiB: replacing it");
    assert!(line.contains("uses "), "{line}");
    let samples = sockvisor.wait_for("a recycle counted on the endpoint", || {
        let samples = parsed(&scrape(port));
        (samples["sockvisor_recycles_total{}"].as_f64()? >= 1.0).then_some(samples)
    });
    assert_eq!(samples["sockvisor_current_generation{}"], 1.0, "{samples}");
    let status = status_json(&sockvisor);
    assert!(
        status["counters"]["recycles"].as_u64().unwrap() >= 1,
        "{status}"
    );
    // A worker sampled since it started shows its figure.
    let sampled = status["generations"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["rss_bytes"].as_u64())
        .collect::<Vec<_>>();
    assert!(sampled.iter().all(|bytes| *bytes > 1024), "{status}");
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn out_of_descriptors_a_scraper_is_told_why_with_a_503() {
    let dir = TestDir::new("metrics-emfile");
    let mut command = Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path));
    limit_open_files(&mut command, 30, 30);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    let port = metrics_port(&sockvisor);
    // Idle control clients take every descriptor sockvisor has left.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..40)
        .map(|_| std::os::unix::net::UnixStream::connect(sockvisor.control_path()).unwrap())
        .collect();
    sockvisor.wait_for_log("out of file descriptors");
    let response = get_metrics(port).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response:?}"
    );
    assert!(
        response.ends_with(
            "sockvisor is out of file descriptors; raise its open-file limit (ulimit -n)\n"
        ),
        "{response:?}"
    );
    drop(idle);
    wait_for("the endpoint to answer again", || {
        let response = get_metrics(port).ok()?;
        response.starts_with("HTTP/1.1 200 OK").then_some(())
    });
}
