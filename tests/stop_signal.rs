//! sockvisor tells the operator when the stop signal is wrong for the
//! server: a worker that dies of the stop signal's default action did not
//! drain, and a generation none of whose workers exits by the drain
//! timeout probably ignores it (a shell wrapper ignores SIGQUIT).

mod common;

use std::process::Command;

use common::*;

fn run_shell(name: &str, options: &[&str], script: &str) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--ready", "now"])
        .args(options)
        .args(["--", "/bin/sh", "-c", script]);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 (pid");
    sockvisor
}

fn upgrade(sockvisor: &Sockvisor) {
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_server_killed_by_its_stop_signal_is_told_to_use_another_once_per_generation() {
    // `exec sleep`: a server with no SIGQUIT handler at all.
    let sockvisor = run_shell("killed-by-quit", &[], "exec sleep 600");
    upgrade(&sockvisor);
    let warning = sockvisor.wait_for_log("instead of draining");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("generation 1"), "{warning}");
    assert!(warning.contains("killed by SIGQUIT"), "{warning}");
    assert!(warning.contains("--stop-signal"), "{warning}");
    upgrade(&sockvisor);
    sockvisor.wait_for("generation 2's warning", || {
        let log = sockvisor.stderr();
        log.lines()
            .any(|l| l.contains("instead of draining") && l.contains("generation 2"))
            .then_some(())
    });
    let warnings = sockvisor.stderr().matches("instead of draining").count();
    assert_eq!(warnings, 2, "one per generation: {}", sockvisor.stderr());
}

#[test]
fn a_generation_that_ignores_the_stop_signal_is_named_at_the_drain_timeout() {
    let sockvisor = run_shell(
        "ignores-quit",
        &["--drain-timeout", "1s", "--stop-timeout", "1s"],
        "trap '' QUIT; exec sleep 600",
    );
    upgrade(&sockvisor);
    let warning = sockvisor.wait_for_log("no worker exited after SIGQUIT");
    assert!(warning.contains("generation 1"), "{warning}");
    assert!(warning.contains("--stop-signal SIGTERM"), "{warning}");
}

#[test]
fn a_server_that_drains_on_its_stop_signal_gets_no_warning() {
    let sockvisor = run_shell(
        "drains",
        &[],
        "trap 'exit 0' QUIT; while :; do sleep 0.05; done",
    );
    upgrade(&sockvisor);
    sockvisor.wait_for_log("generation 1 (pid");
    sockvisor.wait_for("generation 1 to exit", || {
        let log = sockvisor.stderr();
        log.lines()
            .any(|l| l.contains("generation 1") && l.contains("exited with status 0"))
            .then_some(())
    });
    assert!(
        !sockvisor.stderr().contains("--stop-signal"),
        "{}",
        sockvisor.stderr()
    );
}
