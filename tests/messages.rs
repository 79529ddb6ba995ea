//! What an operator reads: one true line per event, naming the real cause.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_missing_program_named_by_a_path_is_said_not_to_exist() {
    let dir = TestDir::new("no-such-path");
    let output = Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .args(["run", "--", "/does/not/exist"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "sockvisor: command not found: '/does/not/exist' does not exist (check the path)\n"
    );
}

#[test]
fn a_generation_stopped_at_its_ready_timeout_ends_in_one_line_that_says_so() {
    let dir = TestDir::new("ready-timeout-line");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workers", "2"])
        .args(["--ready-timeout", "200ms", "--restart-delay", "30s", "--"])
        .args(Sockvisor::probe_args(&dir.path))
        .arg("--no-ready");
    let sockvisor = Sockvisor::spawn(dir, command);
    let line = sockvisor.wait_for_log("restarting in");
    assert!(
        line.contains("generation 1 (2 workers) failed to start (exited with status 0)"),
        "{line}"
    );
    let log = sockvisor.stderr();
    assert!(
        !log.contains("exited with status 1"),
        "an exit that did not happen: {log}"
    );
    let ends: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("generation 1") && (l.contains("exited with") || l.contains("killed by"))
        })
        .collect();
    assert_eq!(
        ends.len(),
        1,
        "one line for the generation's end: {ends:#?}"
    );
}

#[test]
fn a_rolling_upgrade_announces_each_stop_signal_once() {
    let dir = TestDir::new("rollout-lines");
    let mut command = Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--max-surge",
            "1",
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.worker_report(1, 1);
    sockvisor.wait_for("generation 1 to serve", || {
        (status_json(&sockvisor)["current"] == 1).then_some(())
    });
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{output:?}");
    let log = sockvisor.stderr();
    let sent: Vec<&str> = log.lines().filter(|l| l.contains("sent SIGQUIT")).collect();
    assert_eq!(sent.len(), 2, "one line per signal sent: {sent:#?}");
    assert!(sent.iter().all(|l| l.contains("worker")), "{sent:#?}");
}
