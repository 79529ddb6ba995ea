//! Zero-downtime upgrades as an operator runs them: `sockvisor upgrade`
//! under load, bad deploys that roll back, drains, concurrency, and stops
//! in the middle of it all.

mod common;

use std::process::Output;
use std::thread;

use common::*;

fn run(name: &str, options: &[&str], probe_options: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(options)
        .arg("--");
    command
        .args(Sockvisor::probe_args(&dir.path))
        .args(probe_options);
    Sockvisor::spawn(dir, command)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn pid_of_generation(sockvisor: &Sockvisor, generation: u32) -> String {
    format!("pid={}", sockvisor.report(generation)["pid"])
}

/// Runs `sockvisor upgrade` while two clients load the service, with
/// traffic flowing before and after it.
fn upgrade_under_load(sockvisor: &Sockvisor, address: &str) -> (Output, LoadResult) {
    let load = Load::start(address, 2);
    load.wait_for_answers(100);
    let output = sockvisor.client(&["upgrade"]);
    load.wait_for_answers(100);
    (output, load.stop())
}

/// Runs `sockvisor upgrade` in a thread, for tests that act while it runs.
fn upgrade_in_background(sockvisor: &Sockvisor) -> thread::JoinHandle<Output> {
    let control = sockvisor.control_path();
    thread::spawn(move || {
        std::process::Command::new(sockvisor_bin())
            .args(["upgrade", "--control"])
            .arg(control)
            .output()
            .unwrap()
    })
}

/// True for a duration written as the flags take it (`53ms`, `1.5s`): at
/// most one decimal, then a unit.
fn is_shown_duration(text: &str) -> bool {
    let Some(split) = text.find(|c: char| !(c.is_ascii_digit() || c == '.')) else {
        return false;
    };
    let (number, unit) = text.split_at(split);
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
    !number.is_empty()
        && number.parse::<f64>().is_ok()
        && decimals <= 1
        && ["ms", "s", "m", "h"].contains(&unit)
}

/// Waits until generation 1 is ready (the probe notifies at once).
fn serving(sockvisor: &Sockvisor) -> String {
    sockvisor.wait_for_log("generation 1 (pid");
    let address = sockvisor.logged_tcp_address();
    wait_for("generation 1 to serve", || http_get_tcp(&address).ok());
    address
}

#[test]
fn five_upgrades_under_load_fail_no_request() {
    let sockvisor = run("five", &[], &["--request-delay-ms", "5"]);
    let address = serving(&sockvisor);
    let load = Load::start(&address, 4);
    for generation in 2..=6 {
        load.wait_for_answers(200);
        let output = sockvisor.client(&["upgrade", "--timeout", "30s"]);
        assert!(
            output.status.success(),
            "upgrade {generation}: {}",
            stderr(&output)
        );
        let out = stdout(&output);
        assert!(
            out.contains(&format!("generation {generation} started: pid ")),
            "{out}"
        );
        assert!(
            out.contains(&format!("generation {generation} (pid")),
            "{out}"
        );
        assert!(
            out.contains(&format!("generation {} (pid", generation - 1)),
            "{out}"
        );
        assert!(
            out.trim_end()
                .ends_with(&format!("generation {generation} is serving")),
            "{out}"
        );
    }
    load.wait_for_answers(200);
    let result = load.stop();
    eprintln!(
        "five upgrades under load: {} requests answered by {} pids, {} failed",
        result.ok,
        result.pids.len(),
        result.failures.len()
    );
    assert_eq!(
        result.failures,
        Vec::<String>::new(),
        "zero failed requests"
    );
    assert!(result.ok > 0);
    assert!(result.pids.contains(&pid_of_generation(&sockvisor, 1)));
    assert_eq!(
        result.last_pid,
        Some(pid_of_generation(&sockvisor, 6)),
        "answers moved to the newest generation"
    );
    let after = http_get_tcp(&address).unwrap();
    assert!(body(&after).ends_with("generation=6"), "{after}");
}

#[test]
fn upgrade_keeps_the_old_generation_when_the_new_one_crashes_at_start() {
    let sockvisor = run("crash", &[], &["--exit-code", "17", "--faults-from", "2"]);
    let address = serving(&sockvisor);
    let (output, result) = upgrade_under_load(&sockvisor, &address);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let pid2 = sockvisor.report(2)["pid"].to_string();
    assert!(
        stderr(&output).contains(&format!(
            "upgrade failed: generation 2 (pid {pid2}) exited with status 17 before it was ready; generation 1 keeps serving"
        )),
        "{}",
        stderr(&output)
    );
    assert_eq!(result.failures, Vec::<String>::new());
    assert!(body(&http_get_tcp(&address).unwrap()).ends_with("generation=1"));
}

#[test]
fn upgrade_that_never_becomes_ready_is_rolled_back_at_the_deadline() {
    let sockvisor = run(
        "never",
        &["--ready-timeout", "500ms"],
        &["--no-ready", "--faults-from", "2"],
    );
    let address = serving(&sockvisor);
    let (output, result) = upgrade_under_load(&sockvisor, &address);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("was not ready within 500ms; generation 1 keeps serving"),
        "{}",
        stderr(&output)
    );
    assert_eq!(result.failures, Vec::<String>::new());
    let pid2 = sockvisor.report(2)["pid"].as_i64().unwrap();
    wait_for("the failed generation to be stopped", || {
        (!process_alive(pid2)).then_some(())
    });
    assert!(body(&http_get_tcp(&address).unwrap()).ends_with("generation=1"));
}

#[test]
fn exec_probe_that_never_succeeds_rolls_the_upgrade_back() {
    let sockvisor = run(
        "probe",
        &[
            "--ready",
            "exec=test \"$SOCKVISOR_GENERATION\" = 1 && kill -0 \"$SOCKVISOR_READY_PID\"",
            "--ready-timeout",
            "700ms",
        ],
        &[],
    );
    let address = serving(&sockvisor);
    let (output, result) = upgrade_under_load(&sockvisor, &address);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("was not ready within 700ms"),
        "{}",
        stderr(&output)
    );
    assert_eq!(result.failures, Vec::<String>::new());
    assert!(body(&http_get_tcp(&address).unwrap()).ends_with("generation=1"));
}

#[test]
fn an_old_generation_ignoring_the_stop_signal_is_killed_after_the_drain_timeout() {
    let sockvisor = run(
        "ignore",
        &["--drain-timeout", "300ms"],
        &["--ignore", "SIGQUIT", "--faults-until", "1"],
    );
    serving(&sockvisor);
    let output = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let pid1 = sockvisor.report(1)["pid"].to_string();
    assert!(
        stdout(&output).contains(&format!("generation 1 (pid {pid1}) was killed by SIGKILL")),
        "{}",
        stdout(&output)
    );
    sockvisor.wait_for_log("did not exit within 300ms; killing its process group");
}

#[test]
fn a_slow_new_generation_leaves_the_old_one_serving_until_it_is_ready() {
    let sockvisor = run(
        "slow",
        &[],
        &["--ready-delay-ms", "1500", "--faults-from", "2"],
    );
    let address = serving(&sockvisor);
    let upgrade = upgrade_in_background(&sockvisor);
    sockvisor.report(2);
    // Generation 2 exists but is not ready: every answer is generation 1's.
    let load = Load::start(&address, 2);
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 1, "{status}");
    let output = upgrade.join().unwrap();
    let result = load.stop();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(result.failures, Vec::<String>::new());
    assert_eq!(result.pids.first(), Some(&pid_of_generation(&sockvisor, 1)));
    assert!(body(&http_get_tcp(&address).unwrap()).ends_with("generation=2"));
    // Durations read like the flags: "is ready after 1.5s", never
    // nanosecond noise.
    let progress = stdout(&output);
    let waited = progress
        .lines()
        .find_map(|line| line.split(" is ready after ").nth(1))
        .unwrap_or_else(|| panic!("no readiness line in {progress}"));
    assert!(is_shown_duration(waited), "{progress}");
    assert!(
        waited.ends_with('s') && !waited.ends_with("ms"),
        "{progress}"
    );
    let draining = progress
        .lines()
        .find_map(|line| line.split("draining for up to ").nth(1))
        .unwrap_or_else(|| panic!("no drain line in {progress}"));
    assert_eq!(draining, "30s");
}

#[test]
fn a_second_upgrade_while_one_is_starting_gets_a_clear_refusal() {
    let sockvisor = run(
        "busy",
        &[],
        &["--ready-delay-ms", "1000", "--faults-from", "2"],
    );
    serving(&sockvisor);
    let first = upgrade_in_background(&sockvisor);
    sockvisor.report(2);
    let second = sockvisor.client(&["upgrade"]);
    assert_eq!(second.status.code(), Some(4), "{}", stderr(&second));
    // Not waiting for the result is no reason to take a refusal for an
    // upgrade under way.
    let unwaited = sockvisor.client(&["upgrade", "--timeout", "0"]);
    assert_eq!(unwaited.status.code(), Some(4), "{}", stderr(&unwaited));
    assert!(
        stderr(&second).contains("generation 2 (pid"),
        "{}",
        stderr(&second)
    );
    assert!(
        stderr(&second).contains("is still starting"),
        "{}",
        stderr(&second)
    );
    assert!(first.join().unwrap().status.success());
}

#[test]
fn an_upgrade_may_start_while_an_older_generation_still_drains() {
    let sockvisor = run(
        "drain",
        &["--drain-timeout", "3s"],
        &["--ignore", "SIGQUIT", "--faults-until", "1"],
    );
    serving(&sockvisor);
    let first = upgrade_in_background(&sockvisor);
    wait_for("generation 2 to serve while 1 drains", || {
        let status = status_json(&sockvisor);
        (status["current"] == 2).then_some(())
    });
    let second = sockvisor.client(&["upgrade"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let status = status_json(&sockvisor);
    let states: Vec<(u64, String)> = status["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["generation"].as_u64().unwrap(),
                g["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(states.contains(&(1, "draining".into())), "{states:?}");
    assert!(states.contains(&(3, "ready".into())), "{states:?}");
    assert!(first.join().unwrap().status.success());
}

#[test]
fn stop_during_an_upgrade_leaves_nothing_running() {
    let mut sockvisor = run(
        "stopup",
        &[],
        &["--ready-delay-ms", "3000", "--faults-from", "2"],
    );
    serving(&sockvisor);
    let upgrade = upgrade_in_background(&sockvisor);
    let pid2 = sockvisor.report(2)["pid"].as_i64().unwrap();
    let pid1 = sockvisor.report(1)["pid"].as_i64().unwrap();
    let stop = sockvisor.client(&["stop", "--timeout", "20s"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(
        stdout(&stop).contains("every generation has exited"),
        "{}",
        stdout(&stop)
    );
    let upgrade = upgrade.join().unwrap();
    assert_eq!(upgrade.status.code(), Some(1));
    assert!(
        stderr(&upgrade).contains("abandoned"),
        "{}",
        stderr(&upgrade)
    );
    assert_eq!(sockvisor.wait_exit(), 0);
    assert!(
        !process_alive(pid1) && !process_alive(pid2),
        "nothing left running"
    );
    // The log says what became of both, and that sockvisor exits.
    let log = sockvisor.stderr();
    for (generation, pid) in [(1, pid1), (2, pid2)] {
        assert!(
            log.contains(&format!(
                "generation {generation} (pid {pid}) exited with status 0; stopped"
            )),
            "{log}"
        );
    }
    assert!(
        log.trim_end()
            .ends_with("every generation has exited; sockvisor exits with status 0"),
        "{log}"
    );
}

#[test]
fn a_sighup_storm_ends_with_one_generation_serving() {
    let sockvisor = run("storm", &[], &[]);
    let address = serving(&sockvisor);
    let load = Load::start(&address, 2);
    load.wait_for_answers(100);
    for _ in 0..25 {
        sockvisor.signal(libc::SIGHUP);
    }
    sockvisor.signal(libc::SIGUSR2);
    sockvisor.wait_for_log("received: upgrade started");
    let status = wait_for("a settled state", || {
        let status = status_json(&sockvisor);
        let generations = status["generations"].as_array().unwrap().clone();
        (generations.len() == 1 && generations[0]["state"] == "ready").then_some(status)
    });
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    let current = status["current"].as_u64().unwrap();
    assert!(current >= 2, "at least one upgrade ran: {status}");
    assert!(body(&http_get_tcp(&address).unwrap()).ends_with(&format!("generation={current}")));
}

#[test]
fn status_shows_generations_listeners_status_text_and_the_last_upgrade() {
    let sockvisor = run("status", &[], &["--status", "serving requests"]);
    let address = serving(&sockvisor);
    wait_for("the STATUS= text", || {
        let status = status_json(&sockvisor);
        (status["generations"][0]["status"] == "serving requests").then_some(())
    });
    assert!(sockvisor.client(&["upgrade"]).status.success());
    let status = status_json(&sockvisor);
    assert_eq!(status["current"], 2);
    assert_eq!(status["pid"].as_i64(), Some(sockvisor.pid() as i64));
    assert_eq!(
        status["listeners"][0]["address"],
        format!("tcp://{address}")
    );
    assert_eq!(status["last_upgrade"]["ok"], true);
    // JSON keeps exact numbers in a fixed unit.
    assert!(status["generations"][0]["age_ms"].is_u64(), "{status}");
    assert!(status["last_upgrade"]["ago_ms"].is_u64(), "{status}");
    let text = stdout(&sockvisor.client(&["status"]));
    assert!(
        text.contains("(current)") && text.contains("last upgrade: generation 2 succeeded"),
        "{text}"
    );
    let age = text
        .lines()
        .find(|line| line.contains("(current)"))
        .and_then(|line| line.split_whitespace().nth(4))
        .unwrap_or_default();
    assert!(is_shown_duration(age), "{text}");
    let ago = text
        .split(" ago)")
        .next()
        .and_then(|before| before.rsplit('(').next())
        .unwrap_or_default();
    assert!(is_shown_duration(ago), "{text}");
}

#[test]
fn signal_command_reaches_the_current_generation() {
    let sockvisor = run("signal", &[], &[]);
    serving(&sockvisor);
    let output = sockvisor.client(&["signal", "USR1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let signals = sockvisor.dir.join("1.signals");
    wait_for("SIGUSR1 at generation 1", || {
        std::fs::read_to_string(&signals)
            .ok()
            .filter(|s| s.contains("SIGUSR1"))
    });
}

#[test]
fn pidfile_holds_sockvisors_pid_across_upgrades_and_is_removed_at_exit() {
    let dir = TestDir::new("pidfile");
    let pidfile = dir.join("sockvisor.pid");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--pidfile"])
        .arg(&pidfile)
        .arg("--")
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    serving(&sockvisor);
    let expected = format!("{}\n", sockvisor.pid());
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), expected);
    assert!(sockvisor.client(&["upgrade"]).status.success());
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), expected);
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
    assert!(!pidfile.exists());
}

#[test]
fn an_upgrade_runs_the_command_as_it_is_on_disk_now() {
    let dir = TestDir::new("replaced");
    let script = dir.join("server.sh");
    let dir_path = dir.path.clone();
    let write_version = |version: &str| {
        let text = format!(
            "#!/bin/sh\nexec {} --report-dir {} --status {version}\n",
            probe_bin().display(),
            dir_path.display()
        );
        // Replace the file as a deploy does: write aside, rename over.
        let temp = dir_path.join("server.sh.new");
        std::fs::write(&temp, text).unwrap();
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&temp, &script).unwrap();
    };
    write_version("v1");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .arg(&script);
    let sockvisor = Sockvisor::spawn(dir, command);
    serving(&sockvisor);
    write_version("v2");
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status = status_json(&sockvisor);
    assert_eq!(status["generations"][0]["status"], "v2", "{status}");
}
