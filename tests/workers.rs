//! `--workers N`: several processes per generation on the same sockets, as
//! an operator runs them: every worker gets the protocol as a single child
//! would, a killed worker is replaced in its slot while the others serve,
//! and upgrades under load fail no request.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn run(name: &str, options: &[&str], probe_options: &[&str]) -> Sockvisor {
    Sockvisor::listening_probe(name, options, probe_options)
}

/// Waits until generation `generation` serves and returns the address.
fn serving(sockvisor: &Sockvisor, generation: u32) -> String {
    let address = sockvisor.logged_tcp_address();
    wait_for(&format!("generation {generation} to serve"), || {
        (status_json(sockvisor)["current"] == generation).then_some(())
    });
    address
}

fn worker_pids(status: &Value, generation: usize) -> Vec<i64> {
    status["generations"][generation]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect()
}

#[test]
fn four_workers_each_get_the_sockets_and_their_own_listen_pid() {
    let sockvisor = run("four", &["--workers", "4"], &[]);
    let address = serving(&sockvisor, 1);
    let mut pids = BTreeSet::new();
    for worker in 0..4 {
        let report = sockvisor.worker_report(1, worker);
        let pid = report["pid"].as_i64().unwrap();
        assert_eq!(
            report["env"]["LISTEN_PID"],
            pid.to_string(),
            "worker {worker}"
        );
        assert_eq!(report["env"]["LISTEN_FDS"], "1");
        assert_eq!(report["env"]["SOCKVISOR_WORKER"], worker.to_string());
        assert_eq!(report["pgid"].as_i64(), Some(pid), "own process group");
        assert_eq!(fd_numbers(&report), [0, 1, 2, 3], "worker {worker}");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 4);
    // Every worker accepts from the one shared socket.
    let answering: BTreeSet<String> = wait_for("answers from all four workers", || {
        let mut seen = BTreeSet::new();
        for _ in 0..400 {
            if let Ok(response) = http_get_tcp(&address)
                && let Some(pid) = answering_pid(&response)
            {
                seen.insert(pid);
            }
            if seen.len() == 4 {
                return Some(seen);
            }
        }
        None
    });
    let expected: BTreeSet<String> = pids.iter().map(|p| format!("pid={p}")).collect();
    assert_eq!(answering, expected);
    let status = status_json(&sockvisor);
    assert_eq!(status["workers"], 4);
    assert_eq!(worker_pids(&status, 0).len(), 4);
}

#[test]
fn a_killed_worker_is_replaced_in_its_slot_and_the_others_are_untouched() {
    let sockvisor = run("replace", &["--workers", "3"], &[]);
    let address = serving(&sockvisor, 1);
    let before = worker_pids(&status_json(&sockvisor), 0);
    let victim = sockvisor.worker_report(1, 1)["pid"].as_i64().unwrap();
    std::fs::remove_file(sockvisor.dir.join("1-1.json")).unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let replacement = sockvisor.worker_report(1, 1);
    let new_pid = replacement["pid"].as_i64().unwrap();
    assert_ne!(new_pid, victim);
    assert_eq!(replacement["env"]["SOCKVISOR_WORKER"], "1");
    assert_eq!(replacement["env"]["SOCKVISOR_GENERATION"], "1");
    assert_eq!(replacement["env"]["LISTEN_PID"], new_pid.to_string());
    let status = wait_for("the replacement to be ready", || {
        let status = status_json(&sockvisor);
        let worker = status["generations"][0]["workers"][1].clone();
        (worker["pid"] == new_pid && worker["state"] == "ready").then_some(status)
    });
    assert_eq!(status["current"], 1, "still generation 1");
    assert_eq!(status["generations"][0]["workers"][1]["restarts"], 1);
    let after = worker_pids(&status, 0);
    for (index, (old, new)) in before.iter().zip(&after).enumerate() {
        if index != 1 {
            assert_eq!(old, new, "worker {index} untouched");
            assert!(process_alive(*old));
        }
    }
    assert!(http_get_tcp(&address).is_ok());
    assert!(
        sockvisor.stderr().contains(&format!(
            "generation 1 worker 1 (pid {victim}) was killed by SIGKILL"
        )),
        "{}",
        sockvisor.stderr()
    );
}

#[test]
fn an_upgrade_of_four_workers_under_load_fails_no_request() {
    let sockvisor = run("upgrade", &["--workers", "4"], &["--request-delay-ms", "5"]);
    let address = serving(&sockvisor, 1);
    let load = Load::start(&address, 4);
    load.wait_for_answers(200);
    for generation in 2..=3 {
        let output = sockvisor.client(&["upgrade", "--timeout", "30s"]);
        assert!(output.status.success(), "{output:?}");
        let progress = String::from_utf8_lossy(&output.stdout);
        assert!(
            progress.contains(&format!("generation {generation} started: 4 workers")),
            "{progress}"
        );
        load.wait_for_answers(200);
    }
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 3);
    assert_eq!(status["generations"].as_array().unwrap().len(), 1);
    // The last answers came from generation 3's workers.
    let current: BTreeSet<String> = worker_pids(&status, 0)
        .iter()
        .map(|p| format!("pid={p}"))
        .collect();
    assert!(current.contains(result.last_pid.as_ref().unwrap()));
}

#[test]
fn a_new_worker_that_crashes_at_start_rolls_back_the_whole_generation() {
    let sockvisor = run(
        "rollback",
        &["--workers", "3"],
        &["--gen", "2", "--exit-code", "9"],
    );
    let address = serving(&sockvisor, 1);
    let before = worker_pids(&status_json(&sockvisor), 0);
    let output = sockvisor.client(&["upgrade"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exited with status 9 before it was ready; generation 1 keeps serving"),
        "{stderr}"
    );
    let status = wait_for("generation 2 to be gone", || {
        let status = status_json(&sockvisor);
        (status["generations"].as_array().unwrap().len() == 1).then_some(status)
    });
    assert_eq!(status["current"], 1);
    assert_eq!(worker_pids(&status, 0), before);
    assert!(http_get_tcp(&address).is_ok());
}

#[test]
fn stop_and_signal_reach_every_worker() {
    let mut sockvisor = run("stop", &["--workers", "3"], &[]);
    serving(&sockvisor, 1);
    let output = sockvisor.client(&["signal", "USR1"]);
    assert!(output.status.success(), "{output:?}");
    for name in ["1", "1-1", "1-2"] {
        let log = sockvisor.dir.join(&format!("{name}.signals"));
        wait_for(&format!("SIGUSR1 in {name}.signals"), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("SIGUSR1"))
        });
    }
    let pids = worker_pids(&status_json(&sockvisor), 0);
    let output = sockvisor.client(&["stop"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(sockvisor.wait_exit(), 0);
    for pid in pids {
        assert!(!process_alive(pid), "worker {pid} still runs");
    }
}

#[test]
fn a_rolling_upgrade_under_load_fails_no_request_and_never_exceeds_the_surge() {
    let sockvisor = run(
        "rolling",
        &["--workers", "4", "--max-surge", "1"],
        &["--request-delay-ms", "5"],
    );
    let address = serving(&sockvisor, 1);
    let load = Load::start(&address, 4);
    load.wait_for_answers(200);
    let output = sockvisor.client(&["upgrade", "--timeout", "60s"]);
    assert!(output.status.success(), "{output:?}");
    load.wait_for_answers(200);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    let progress = String::from_utf8_lossy(&output.stdout);
    assert!(
        progress.contains("generation 2 rolling in: 4 workers, at most 1 beyond 4 at a time"),
        "{progress}"
    );
    // Each of the four new workers was ready in turn ("(1 of 4)" …), and
    // each retired one old worker.
    assert_eq!(progress.matches(" of 4)").count(), 4, "{progress}");
    for old in 0..4 {
        assert!(
            progress.contains(&format!("generation 1 worker {old} (pid")),
            "{progress}"
        );
    }
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 2);
    assert_eq!(worker_pids(&status, 0).len(), 4);
    // sockvisor's own children never numbered more than N + K: every
    // spawn of generation 2 came after a worker of generation 1 had gone.
    let log = sockvisor.stderr();
    let mut alive: i32 = 4;
    let mut peak = alive;
    for line in log.lines() {
        if line.contains("generation 2 worker") && line.ends_with("started") {
            alive += 1;
        } else if line.contains("generation 1 worker") && line.contains("exited with") {
            alive -= 1;
        }
        peak = peak.max(alive);
    }
    assert!(peak <= 5, "peak {peak}:\n{log}");
}

#[test]
fn a_rolling_upgrade_that_fails_part_way_leaves_four_serving_and_a_later_one_completes() {
    let sockvisor = run(
        "rolling-fail",
        &["--workers", "4", "--max-surge", "1"],
        &["--gen", "2", "--worker", "2", "--exit-code", "9"],
    );
    let address = serving(&sockvisor, 1);
    let output = sockvisor.client(&["upgrade", "--timeout", "60s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "exited with status 9 before it was ready; rolling upgrade stopped with 4 workers \
             serving: generation 1 workers 0, 1 and generation 2 workers 0, 1"
        ),
        "{stderr}"
    );
    let status = status_json(&sockvisor);
    let serving: usize = status["generations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["workers"].as_array().unwrap().clone())
        .filter(|w| w["state"] == "ready")
        .count();
    assert_eq!(serving, 4, "{status}");
    assert!(http_get_tcp(&address).is_ok());
    let output = sockvisor.client(&["upgrade", "--timeout", "60s"]);
    assert!(output.status.success(), "{output:?}");
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 3);
    assert_eq!(status["generations"].as_array().unwrap().len(), 1);
    assert_eq!(worker_pids(&status, 0).len(), 4);
}

#[test]
fn scale_up_and_down_under_load_fails_no_request() {
    let mut sockvisor = run("scale", &["--workers", "2"], &["--request-delay-ms", "2"]);
    let address = serving(&sockvisor, 1);
    let load = Load::start(&address, 4);
    load.wait_for_answers(100);
    let output = sockvisor.client(&["scale", "4", "--timeout", "30s"]);
    assert!(output.status.success(), "{output:?}");
    let progress = String::from_utf8_lossy(&output.stdout);
    assert!(
        progress.contains("scaling generation 1 from 2 to 4 workers"),
        "{progress}"
    );
    assert!(
        progress.contains("generation 1 serves with 4 workers"),
        "{progress}"
    );
    let status = status_json(&sockvisor);
    assert_eq!(status["workers"], 4);
    let four = worker_pids(&status, 0);
    assert_eq!(four.len(), 4);
    load.wait_for_answers(100);
    let output = sockvisor.client(&["scale", "1", "--timeout", "30s"]);
    assert!(output.status.success(), "{output:?}");
    load.wait_for_answers(100);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    let status = status_json(&sockvisor);
    assert_eq!(worker_pids(&status, 0), [four[0]]);
    for removed in &four[1..] {
        assert!(!process_alive(*removed), "worker {removed} still runs");
    }
    // A later upgrade starts the scaled count.
    assert!(sockvisor.client(&["upgrade"]).status.success());
    assert_eq!(worker_pids(&status_json(&sockvisor), 0).len(), 1);
    let text = String::from_utf8_lossy(&sockvisor.client(&["scale", "0"]).stderr).into_owned();
    assert!(text.contains("0 is out of range (1 to 1024)"), "{text}");
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

/// Under a tight `ulimit -n`, sockvisor keeps pidfds for only some of its
/// workers (it leaves descriptors for everything else) and reaps the others
/// by `waitpid(-1)`: every exit is still seen, whichever way it comes.
#[test]
fn with_pidfds_for_only_some_workers_every_exit_is_still_seen() {
    const WORKERS: usize = 64;
    let mut sockvisor = Sockvisor::start_with(
        "few-pidfds",
        |command| limit_open_files(command, 300, 300),
        &[
            "run",
            "--ready",
            "now",
            "--workers",
            "64",
            "--restart",
            "always",
            "--",
            "sleep",
            "600",
        ],
    );
    let first: Vec<i32> = wait_for("every worker to start", || {
        let workers = children_of(sockvisor.pid());
        (workers.len() == WORKERS).then_some(workers)
    });
    let watched = pidfds_of(sockvisor.pid());
    assert!(
        watched > 0 && watched < WORKERS,
        "{watched} of {WORKERS} workers have a pidfd"
    );
    for worker in &first {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(*worker, libc::SIGKILL) };
    }
    // Each killed worker is seen to exit, and the workers are started
    // again (as a new generation: all of them ended).
    let status = wait_for("every worker to be started again", || {
        let status = status_json(&sockvisor);
        status["generations"][0]["workers"].as_array()?;
        let pids: BTreeSet<i64> = worker_pids(&status, 0).into_iter().collect();
        let replaced = pids.len() == WORKERS
            && first.iter().all(|old| !pids.contains(&(*old as i64)))
            && pids.iter().all(|pid| process_alive(*pid));
        replaced.then_some(status)
    });
    assert!(zombie_children(sockvisor.pid()).is_empty(), "{status}");
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
    for pid in worker_pids(&status, 0) {
        assert!(!process_alive(pid), "pid {pid} still runs");
    }
}

/// Where the system refuses a child the calls that give it a descriptor
/// table of its own (`close_range`, `unshare`: a seccomp filter may), the
/// child exits before it has touched anything and sockvisor starts it
/// again with a copy of the table: the workers get exactly what they
/// would otherwise, and every exit is still reaped.
#[test]
fn workers_start_the_same_where_a_child_cannot_unshare_its_descriptors() {
    let dir = TestDir::new("cannot-unshare");
    let probe = Sockvisor::probe_args(&dir.path);
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["--log-level", "debug", "run", "--listen", "127.0.0.1:0"])
        .args(["--workers", "2", "--"])
        .args(&probe)
        .env("SOCKVISOR_TEST_SPAWN_CANNOT_UNSHARE", "1");
    let sockvisor = Sockvisor::spawn(dir, command);
    for worker in 0..2 {
        let report = sockvisor.worker_report(1, worker);
        let pid = report["pid"].as_i64().unwrap();
        assert_eq!(report["env"]["LISTEN_PID"], pid.to_string());
        assert_eq!(fd_numbers(&report), [0, 1, 2, 3], "worker {worker}");
    }
    sockvisor.wait_for_log("cannot unshare its descriptor table");
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    sockvisor.worker_report(2, 1);
    wait_for("no zombie left", || {
        zombie_children(sockvisor.pid()).is_empty().then_some(())
    });
}

/// `workers` workers of `sleep` that are ready at once and wait a minute
/// before each restart, once generation 1 serves; with worker 0's pid.
fn serving_with_slow_restarts(name: &str, workers: usize) -> (Sockvisor, i64) {
    let count = workers.to_string();
    let sockvisor = Sockvisor::start_with(
        name,
        |_| {},
        &[
            "run",
            "--ready",
            "now",
            "--workers",
            &count,
            "--restart",
            "always",
            "--restart-delay",
            "60s",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_for("every worker to start", || {
        (children_of(sockvisor.pid()).len() == workers).then_some(())
    });
    let first = wait_for("generation 1 to serve", || {
        let status = status_json(&sockvisor);
        (status["current"] == 1).then(|| status["generations"][0]["pid"].as_i64())?
    });
    (sockvisor, first)
}

/// A worker that waits for its restart backoff holds no process: `status`
/// lists its slot as such, and no generation is ever shown with pid 0 (a
/// script that signals "the generation's pid" would signal its own group).
#[test]
fn a_slot_waiting_to_restart_is_listed_and_never_shown_as_pid_0() {
    let (mut sockvisor, first) = serving_with_slow_restarts("empty-slot", 3);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let status = wait_for("worker 0's slot to wait for its restart", || {
        let status = status_json(&sockvisor);
        status["generations"][0]["empty_slots"]
            .as_array()
            .is_some_and(|slots| !slots.is_empty())
            .then_some(status)
    });
    let generation = &status["generations"][0];
    assert!(generation["pid"].is_null(), "{generation}");
    let slot = &generation["empty_slots"][0];
    assert_eq!(slot["index"], 0, "{generation}");
    assert_eq!(slot["state"], "restarting", "{generation}");
    assert!(slot["restart_in_ms"].as_u64().unwrap() > 0, "{generation}");
    assert_eq!(worker_pids(&status, 0).len(), 2);
    let text = sockvisor.client(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("  1  pid -  ready"), "{text}");
    assert!(
        text.contains("worker 0  no process  restarting in "),
        "{text}"
    );
    // With one process left, the text still lists every slot, in order.
    let second = worker_pids(&status, 0)[0];
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(second as i32, libc::SIGKILL) };
    let status = wait_for("a second slot to wait for its restart", || {
        let status = status_json(&sockvisor);
        (status["generations"][0]["empty_slots"].as_array()?.len() == 2).then_some(status)
    });
    let last = worker_pids(&status, 0)[0];
    let text = sockvisor.client(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let slots: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("worker "))
        .collect();
    assert_eq!(slots.len(), 3, "{text}");
    assert!(slots[0].contains("worker 0  no process"), "{text}");
    assert!(
        slots
            .iter()
            .any(|l| l.contains(&format!("pid {last}  ready"))),
        "{text}"
    );
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
}

/// While a generation that ended on its own waits to be started again,
/// `status` says so instead of showing nothing.
#[test]
fn a_generation_restart_that_waits_for_its_backoff_is_shown() {
    let (mut sockvisor, pid) = serving_with_slow_restarts("restart-pending", 1);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let status = wait_for("the restart to wait for its backoff", || {
        let status = status_json(&sockvisor);
        status["restart_in_ms"].as_u64().map(|_| status)
    });
    assert!(status["restart_in_ms"].as_u64().unwrap() > 0, "{status}");
    let text = sockvisor.client(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("every worker has ended: a new generation starts in "),
        "{text}"
    );
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
}
