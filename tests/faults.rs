//! The fault matrix: misbehaving generations × upgrade triggers (the
//! `upgrade` command and SIGHUP). Every case must end in a consistent
//! state: one ready generation serving, nothing running that should not
//! be, no zombie, and a truthful result for the upgrade.

mod common;

use std::process::Command;

use common::*;

#[derive(Clone, Copy, Debug)]
enum Trigger {
    Command,
    Sighup,
}

struct Case {
    name: &'static str,
    /// Extra `sockvisor run` options.
    run: &'static [&'static str],
    /// Probe server options that make a generation misbehave.
    probe: &'static [&'static str],
    upgrade_ok: bool,
    /// Text the upgrade's result (or progress) must contain.
    says: &'static str,
    /// The generation serving once everything has settled.
    settles_on: u64,
    /// Whether clients may see failures: only when a generation that
    /// already accepted connections dies abruptly (its own fault).
    may_lose_requests: bool,
}

struct Outcome {
    ok: bool,
    text: String,
}

fn trigger_upgrade(sockvisor: &Sockvisor, trigger: Trigger) -> Outcome {
    match trigger {
        Trigger::Command => {
            let output = sockvisor.client(&["upgrade", "--timeout", "30s"]);
            Outcome {
                ok: output.status.success(),
                text: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            }
        }
        Trigger::Sighup => {
            sockvisor.signal(libc::SIGHUP);
            let last = wait_for("the SIGHUP upgrade's outcome", || {
                let status = status_json(sockvisor);
                let last = status["last_upgrade"].clone();
                last.is_object().then_some(last)
            });
            Outcome {
                ok: last["ok"] == true,
                text: format!("{}\n{}", last["message"], sockvisor.stderr()),
            }
        }
    }
}

fn run_case(case: &Case, trigger: Trigger) {
    let label = format!("{} via {trigger:?}", case.name);
    let dir = TestDir::new(case.name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["--log-level", "debug", "run", "--listen", "127.0.0.1:0"])
        .args(case.run)
        .arg("--")
        .args(Sockvisor::probe_args(&dir.path))
        .args(case.probe);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 (pid");
    let address = sockvisor.logged_tcp_address();
    wait_for("generation 1 to serve", || http_get_tcp(&address).ok());
    let load = Load::start(&address, 2);
    load.wait_for_answers(50);

    let outcome = trigger_upgrade(&sockvisor, trigger);
    assert_eq!(outcome.ok, case.upgrade_ok, "{label}: {}", outcome.text);
    assert!(
        outcome.text.contains(case.says),
        "{label}: missing {:?} in {}",
        case.says,
        outcome.text
    );

    let status = wait_for(&format!("{label}: a settled state"), || {
        let status = status_json(&sockvisor);
        let generations = status["generations"].as_array()?.clone();
        (generations.len() == 1
            && generations[0]["state"] == "ready"
            && status["current"] == case.settles_on)
            .then_some(status)
    });
    load.wait_for_answers(50);
    let result = load.stop();
    if !case.may_lose_requests {
        assert_eq!(result.failures, Vec::<String>::new(), "{label}");
    }
    assert!(
        body(&http_get_tcp(&address).unwrap())
            .ends_with(&format!("generation={}", case.settles_on)),
        "{label}: {status}"
    );

    // Nothing of any other generation is left running.
    for generation in 1..=case.settles_on + 1 {
        if generation == case.settles_on {
            continue;
        }
        let path = sockvisor.dir.join(&format!("{generation}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pid = report["pid"].as_i64().unwrap();
        wait_for(
            &format!("{label}: generation {generation} (pid {pid}) to be gone"),
            || (!process_alive(pid)).then_some(()),
        );
    }
    wait_for(&format!("{label}: no zombie"), || {
        zombie_children(sockvisor.pid()).is_empty().then_some(())
    });
}

fn run_matrix(case: &Case) {
    for trigger in [Trigger::Command, Trigger::Sighup] {
        run_case(case, trigger);
    }
}

#[test]
fn new_generation_crashes_at_start() {
    run_matrix(&Case {
        name: "crash-at-start",
        run: &[],
        probe: &["--gen", "2", "--exit-code", "17"],
        upgrade_ok: false,
        says: "exited with status 17 before it was ready; generation 1 keeps serving",
        settles_on: 1,
        may_lose_requests: false,
    });
}

#[test]
fn new_generation_crashes_right_after_ready() {
    run_matrix(&Case {
        name: "crash-after-ready",
        // The old generation drains slowly, so the crash comes first (with
        // a margin for a loaded machine, where the crash may be late).
        run: &["--restart-delay", "50ms"],
        probe: &[
            "--gen",
            "1",
            "--drain-delay-ms",
            "3000",
            "--gen",
            "2",
            "--crash-after-ready-ms",
            "0",
        ],
        upgrade_ok: false,
        says: "became ready but then exited with status 9",
        settles_on: 3,
        may_lose_requests: true,
    });
}

#[test]
fn new_generation_never_becomes_ready() {
    run_matrix(&Case {
        name: "never-ready",
        run: &["--ready-timeout", "400ms"],
        probe: &["--gen", "2", "--no-ready"],
        upgrade_ok: false,
        says: "was not ready within 400ms; generation 1 keeps serving",
        settles_on: 1,
        may_lose_requests: false,
    });
}

#[test]
fn old_generation_ignores_the_stop_signal() {
    run_matrix(&Case {
        name: "ignores-stop",
        run: &["--drain-timeout", "300ms"],
        probe: &["--gen", "1", "--ignore", "SIGQUIT"],
        upgrade_ok: true,
        says: "generation 2 is serving",
        settles_on: 2,
        // It keeps accepting until it is killed: its own requests die with it.
        may_lose_requests: true,
    });
}

#[test]
fn old_generation_exits_with_an_error_while_draining() {
    run_matrix(&Case {
        name: "exits-during-drain",
        run: &[],
        probe: &["--gen", "1", "--drain-exit-code", "3"],
        upgrade_ok: true,
        says: "generation 2 is serving",
        settles_on: 2,
        may_lose_requests: false,
    });
}

#[test]
fn new_generation_forks_orphans() {
    run_matrix(&Case {
        name: "orphans",
        run: &[],
        probe: &["--gen", "2", "--orphan"],
        upgrade_ok: true,
        says: "generation 2 is serving",
        settles_on: 2,
        may_lose_requests: false,
    });
}

#[test]
fn new_generation_floods_the_notify_socket() {
    run_matrix(&Case {
        name: "flood",
        run: &[],
        probe: &["--gen", "2", "--flood", "3000"],
        upgrade_ok: true,
        says: "generation 2 is serving",
        settles_on: 2,
        may_lose_requests: false,
    });
}

#[test]
fn new_generation_reports_ready_from_a_forked_worker() {
    run_matrix(&Case {
        name: "worker-ready",
        run: &[],
        probe: &["--gen", "2", "--ready-from-worker"],
        upgrade_ok: true,
        says: "generation 2 is serving",
        settles_on: 2,
        may_lose_requests: false,
    });
}
