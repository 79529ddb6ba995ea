//! The watchdog end to end: every worker gets systemd's `WATCHDOG_USEC` and
//! `WATCHDOG_PID`; a server that stops pinging is replaced under load
//! without a failed request; `--watchdog 0` is off; sockvisor pings its own
//! service manager when that manager has a watchdog.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_server_that_stops_pinging_is_replaced_and_no_request_fails() {
    let dir = TestDir::new("hung");
    let mut command = Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--watchdog",
            "300ms",
            "--listen",
            "127.0.0.1:0",
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path))
        .args(["--gen", "1", "--watchdog-stop-after-ms", "600"]);
    let sockvisor = Sockvisor::spawn(dir, command);
    let first = sockvisor.report(1);
    let pid = first["pid"].as_i64().unwrap();
    assert_eq!(first["env"]["WATCHDOG_USEC"], "300000");
    assert_eq!(first["env"]["WATCHDOG_PID"], pid.to_string());
    let address = sockvisor.logged_tcp_address();
    let load = Load::start(&address, 4);
    load.wait_for_answers(50);
    sockvisor.wait_for_log(&format!(
        "generation 1 (pid {pid}) is hung (no WATCHDOG=1 within 300ms); replacing generation 1"
    ));
    let status = wait_for("generation 2 to serve alone", || {
        let status = status_json(&sockvisor);
        (status["current"] == 2 && status["generations"].as_array()?.len() == 1).then_some(status)
    });
    assert_eq!(status["watchdog_restarts"], 1);
    // Generation 2 keeps pinging: it stays.
    load.wait_for_answers(300);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 2);
    assert_eq!(status["watchdog_restarts"], 1);
    assert!(!process_alive(pid));
}

#[test]
fn sockvisor_pings_its_own_service_managers_watchdog() {
    let dir = TestDir::new("own-watchdog");
    let manager = UnixDatagram::bind(dir.join("manager.sock")).unwrap();
    manager.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut command = Command::new(sockvisor_bin());
    command
        .env("NOTIFY_SOCKET", dir.join("manager.sock"))
        .env("WATCHDOG_USEC", "200000")
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let started = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while pings < 3 {
        let n = manager.recv(&mut buf).expect("a message from sockvisor");
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
    // Three pings at half of 200 ms take about 300 ms; far less than the
    // deadline, and never a burst.
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The manager's variables are not passed on to the server.
    let report = sockvisor.report(1);
    assert!(report["env"]["WATCHDOG_USEC"].is_null(), "{report}");
}

#[test]
fn a_zero_watchdog_is_off_like_watchdogsec_0() {
    let dir = TestDir::new("zero-watchdog");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--watchdog", "0", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    assert!(report["env"]["WATCHDOG_USEC"].is_null(), "{report}");
    // A whole upgrade's worth of event-loop turns after generation 1 was
    // ready: a zero interval would have had it declared hung by now.
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 2, "{status}");
    assert_eq!(status["watchdog_restarts"], 0, "{status}");
    assert!(
        !sockvisor.stderr().contains("is hung"),
        "{}",
        sockvisor.stderr()
    );
}
