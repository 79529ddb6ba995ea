//! The example servers in `examples/` (Python, Node.js, Go, Rust, and a
//! server that cannot notify) work under sockvisor as docs/recipes.md says:
//! each serves on the inherited socket, becomes ready, and goes through
//! upgrades under load with zero failed requests.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn manifest(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// Runs `server` under sockvisor, upgrades it three times while two clients
/// load it, and stops it.
fn survives_upgrades_under_load(name: &str, run_options: &[&str], server: &[String]) {
    let mut sockvisor = Sockvisor::listening_in(TestDir::new(name), run_options, server);
    sockvisor.wait_for_log("is ready after");
    let address = sockvisor.logged_tcp_address();
    let first = wait_for("the example to answer", || {
        http_get_tcp(&address).ok().and_then(|r| answering_pid(&r))
    });
    let load = Load::start(&address, 2);
    for generation in 2..=4 {
        load.wait_for_answers(50);
        let output = sockvisor.client(&["upgrade", "--timeout", "60s"]);
        assert!(
            output.status.success(),
            "{name}: upgrade to generation {generation}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    load.wait_for_answers(50);
    let result = load.stop();
    assert_eq!(
        result.failures,
        Vec::<String>::new(),
        "{name}: zero failed requests"
    );
    assert!(
        result.pids.len() >= 2,
        "{name}: answers moved: {:?}",
        result.pids
    );
    let last = answering_pid(&http_get_tcp(&address).unwrap()).unwrap();
    assert_ne!(last, first, "{name}: a new generation serves");
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0, "{name}: clean stop");
}

#[test]
fn python_example_survives_upgrades_under_load() {
    let server = vec!["python3".into(), manifest("examples/python/server.py")];
    survives_upgrades_under_load("python", &[], &server);
}

#[test]
fn python_example_scaled_with_workers_survives_rolling_upgrades_under_load() {
    let server = vec!["python3".into(), manifest("examples/python/server.py")];
    survives_upgrades_under_load(
        "python-workers",
        &["--workers", "3", "--max-surge", "1"],
        &server,
    );
}

#[test]
fn python_example_with_three_workers_answers_from_three_processes() {
    let dir = TestDir::new("python-three");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--workers", "3", "--"])
        .args(["python3", &manifest("examples/python/server.py")]);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    let address = sockvisor.logged_tcp_address();
    let pids = wait_for("answers from three worker processes", || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            if let Some(pid) = http_get_tcp(&address).ok().and_then(|r| answering_pid(&r)) {
                seen.insert(pid);
            }
            if seen.len() == 3 {
                return Some(seen);
            }
        }
        None
    });
    let status = status_json(&sockvisor);
    let workers: std::collections::BTreeSet<String> = status["generations"][0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("pid={}", w["pid"]))
        .collect();
    assert_eq!(pids, workers);
}

#[test]
fn node_example_survives_upgrades_under_load() {
    let server = vec!["node".into(), manifest("examples/node/server.js")];
    survives_upgrades_under_load("node", &[], &server);
}

#[test]
fn go_example_survives_upgrades_under_load() {
    let dir = TestDir::new("gobuild");
    let binary = dir.join("goserver");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(manifest("examples/go"))
        // Independent of $HOME, which CI may not set.
        .env("GOCACHE", manifest("target/go/cache"))
        .env("GOPATH", manifest("target/go/path"))
        .status()
        .expect("go (Debian package golang-go) is needed; .ci/run installs it");
    assert!(status.success(), "go build failed");
    let server = vec![binary.display().to_string()];
    survives_upgrades_under_load("go", &["--stop-signal", "SIGTERM"], &server);
}

#[test]
fn rust_example_survives_upgrades_under_load() {
    let binary = probe_bin().parent().unwrap().join("rust_server");
    // A no-op when it is up to date; `cargo test --test examples` alone
    // does not build examples.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "rust_server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success());
    survives_upgrades_under_load("rust", &[], &[binary.display().to_string()]);
}

#[test]
fn a_server_that_cannot_notify_works_with_ready_delay() {
    let server = vec!["sh".into(), manifest("examples/shell/server.sh")];
    survives_upgrades_under_load("legacy", &["--ready", "delay=300ms"], &server);
}

#[test]
fn an_app_written_for_einhorn_runs_unchanged_with_fd_env_einhorn() {
    let server = vec![
        "python3".into(),
        manifest("examples/compat/einhorn_worker.py"),
    ];
    survives_upgrades_under_load("einhorn", &["--fd-env", "einhorn"], &server);
}

#[test]
fn an_app_written_for_server_starter_runs_unchanged_with_fd_env_server_starter() {
    let server = vec![
        "python3".into(),
        manifest("examples/compat/server_starter_worker.py"),
    ];
    survives_upgrades_under_load(
        "server-starter",
        &["--fd-env", "server-starter", "--ready", "delay=300ms"],
        &server,
    );
}
