//! `--env-file`: configuration a new generation picks up. Edit the file,
//! `sockvisor upgrade`, and the new generation has the new values; a bad
//! file fails only the generation it was read for.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// The value of `key` in the environment of process `pid`.
fn env_of(pid: &Value, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", pid.as_i64()?)).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn run_with_env(name: &str, file: &str, options: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    std::fs::write(dir.join("app.env"), file).unwrap();
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--env-file"])
        .arg(dir.join("app.env"))
        .args(options)
        .arg("--")
        .args(Sockvisor::probe_args(&dir.path))
        .env("GREETING", "from sockvisor's own environment")
        .env("KEPT", "kept");
    Sockvisor::spawn(dir, command)
}

fn digest(status: &Value, index: usize) -> String {
    status["generations"][index]["environment"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {status}"))
        .to_string()
}

fn serving(sockvisor: &Sockvisor, generation: u64) -> Value {
    sockvisor.wait_for(&format!("generation {generation} to serve"), || {
        let status = status_json(sockvisor);
        (status["current"] == generation && status["generations"].as_array()?.len() == 1)
            .then_some(status)
    })
}

#[test]
fn edit_the_file_then_upgrade_and_the_new_generation_has_the_new_values() {
    let sockvisor = run_with_env("reload", "GREETING=hello\n", &[]);
    let first = sockvisor.report(1);
    assert_eq!(env_of(&first["pid"], "GREETING").as_deref(), Some("hello"));
    assert_eq!(env_of(&first["pid"], "KEPT").as_deref(), Some("kept"));
    let before = digest(&serving(&sockvisor, 1), 0);

    std::fs::write(
        sockvisor.dir.join("app.env"),
        "export GREETING='good bye'\n",
    )
    .unwrap();
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{output:?}");
    let second = sockvisor.report(2);
    assert_eq!(
        env_of(&second["pid"], "GREETING").as_deref(),
        Some("good bye")
    );
    let status = serving(&sockvisor, 2);
    assert_ne!(
        digest(&status, 0),
        before,
        "the digest shows the new contents"
    );
    let shown = String::from_utf8(sockvisor.client(&["status"]).stdout).unwrap();
    assert!(
        shown.contains(&format!("env {}", digest(&status, 0))),
        "{shown}"
    );
}

#[test]
fn a_malformed_file_fails_the_upgrade_and_the_old_generation_keeps_serving() {
    let sockvisor = run_with_env("malformed", "GREETING=hello\n", &[]);
    let first = sockvisor.report(1);
    serving(&sockvisor, 1);
    let path = sockvisor.dir.join("app.env");
    std::fs::write(&path, "GREETING=hello\nthis is not a variable\n").unwrap();
    let output = sockvisor.client(&["upgrade"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:2: expected KEY=VALUE", path.display())),
        "{stderr}"
    );
    assert_eq!(status_json(&sockvisor)["current"], 1);
    let answer = http_get_tcp(&reported_address(&first, 3)).unwrap();
    assert_eq!(
        answering_pid(&answer),
        Some(format!("pid={}", first["pid"]))
    );
}

#[test]
fn a_worker_restarted_in_its_slot_reads_the_file_again() {
    let sockvisor = run_with_env("slot", "GREETING=one\n", &["--workers", "2"]);
    let victim = sockvisor.worker_report(1, 1);
    std::fs::write(sockvisor.dir.join("app.env"), "GREETING=two\n").unwrap();
    std::fs::remove_file(sockvisor.dir.join("1-1.json")).unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(victim["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    let replacement = sockvisor.worker_report(1, 1);
    assert_eq!(
        env_of(&replacement["pid"], "GREETING").as_deref(),
        Some("two")
    );
    let untouched = sockvisor.worker_report(1, 0);
    assert_eq!(
        env_of(&untouched["pid"], "GREETING").as_deref(),
        Some("one")
    );
}

fn run_to_completion(dir: &Path, env_file: &str) -> std::process::Output {
    Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--env-file",
            env_file,
            "--",
            "true",
        ])
        .output()
        .unwrap()
}

#[test]
fn at_start_a_missing_or_malformed_file_is_a_usage_error_before_anything_binds() {
    let dir = TestDir::new("start-errors");
    std::fs::write(dir.join("bad.env"), "\nLISTEN_FDS=7\n").unwrap();
    let bad = dir.join("bad.env").display().to_string();
    let missing = dir.join("missing.env").display().to_string();
    for (file, needle) in [
        (
            bad.clone(),
            format!("{bad}:2: LISTEN_FDS is set by sockvisor itself"),
        ),
        (
            missing.clone(),
            format!("{missing}: cannot read the environment file"),
        ),
    ] {
        let output = run_to_completion(&dir.path, &file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&needle), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}

#[test]
fn an_optional_file_that_is_missing_is_skipped() {
    let dir = TestDir::new("optional");
    let file = format!("-{}", dir.join("missing.env").display());
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--env-file", &file, "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
}
