//! The development loop: `--watch` upgrades when a source file is saved,
//! with zero failed requests under a light load, and a broken save leaves
//! the old code serving until the next save fixes it. Exercised with the
//! Python and Node.js examples, edited as a developer would.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Copies an example server into a project directory of the test's own.
fn project(dir: &TestDir, example_path: &str, file: &str) -> PathBuf {
    let app = dir.join("app");
    fs::create_dir_all(&app).unwrap();
    let source = app.join(file);
    fs::copy(example(example_path), &source).unwrap();
    source
}

/// Waits until an answer contains `text`, and returns it; on timeout the
/// failure shows sockvisor's log.
fn answer_containing(sockvisor: &Sockvisor, address: &str, text: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(answer) = http_get_tcp(address).ok().filter(|r| r.contains(text)) {
            return answer;
        }
        assert!(
            started.elapsed() < DEADLINE * 2,
            "no answer containing {text:?}; sockvisor's log:\n{}",
            sockvisor.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Saves `text` as most editors do: a new file beside it (named like an
/// editor's backup, which the watch ignores), renamed over it at once.
fn save(source: &Path, text: &str) {
    let name = source.file_name().unwrap().to_string_lossy();
    let temp = source.with_file_name(format!(".{name}.swx"));
    fs::write(&temp, text).unwrap();
    fs::rename(&temp, source).unwrap();
}

/// Edits `source`: replace `from` by `to`.
fn edit(source: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(source).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", source.display());
    save(source, &text.replace(from, to));
}

/// How the server is started from the project directory.
enum Start<'a> {
    /// `PROGRAM SOURCE`.
    Interpreter(&'a str),
    /// `sh -c SCRIPT`, run in the project directory.
    Shell(String),
}

fn develop(name: &str, example_path: &str, file: &str, start: Start<'_>) {
    develop_with(name, &[(example_path, file)], file, start, &[]);
}

fn develop_with(
    name: &str,
    files: &[(&str, &str)],
    edited: &str,
    start: Start<'_>,
    env: &[(&str, PathBuf)],
) {
    let dir = TestDir::new(name);
    for (example_path, file) in files {
        project(&dir, example_path, file);
    }
    develop_in(dir, edited, start, env);
}

/// Runs the project in `dir/app` under `--watch`, edits `edited` while a
/// light load runs, and checks every step a developer would see.
fn develop_in(dir: TestDir, edited: &str, start: Start<'_>, env: &[(&str, PathBuf)]) {
    let project = dir.path.display().to_string();
    let app = dir.join("app");
    let source = app.join(edited);
    let mut command = Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--ready-timeout",
            "60s",
            "--watch",
        ])
        .arg(&app)
        .args(["--watch-delay", "100ms", "--"])
        .current_dir(&app)
        .envs(env.iter().map(|(k, v)| (*k, v)));
    match start {
        Start::Interpreter(program) => command.arg(program).arg(&source),
        Start::Shell(script) => command.args(["sh", "-c", &script]),
    };
    let sockvisor = Sockvisor::spawn(dir, command);
    let address = sockvisor.logged_tcp_address();
    answer_containing(&sockvisor, &address, "hello from pid");
    let load = Load::start(&address, 2);
    load.wait_for_answers(50);

    // A save: the new code answers, nothing failed meanwhile.
    edit(&source, "hello from pid", "edited: hello from pid");
    answer_containing(&sockvisor, &address, "edited: hello from pid");
    sockvisor.wait_for_log("watch: generation 2 is serving");
    load.wait_for_answers(50);

    // An editor's swap file changes nothing.
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    fs::write(source.with_file_name(format!(".{name}.swp")), "swap").unwrap();

    // A broken save: the old code keeps serving; the next save fixes it.
    let good = fs::read_to_string(&source).unwrap();
    save(&source, "this is not a program (\n");
    sockvisor.wait_for_log("watch: the new code did not start");
    assert!(
        http_get_tcp(&address)
            .unwrap()
            .contains("edited: hello from pid")
    );
    save(&source, &good.replace("edited:", "fixed:"));
    answer_containing(&sockvisor, &address, "fixed: hello from pid");
    load.wait_for_answers(50);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new(), "{project}");
    // The last upgrade reports once the generation it replaced has gone.
    let log = wait_for("both good saves to be reported", || {
        let log = sockvisor.stderr();
        (log.matches("watch: generation").count() >= 2).then_some(log)
    });
    assert!(
        !log.contains(".swp"),
        "the swap file started nothing: {log}"
    );
    assert_eq!(
        log.matches("watch: generation").count(),
        2,
        "one upgrade per good save: {log}"
    );
}

#[test]
fn saving_a_python_server_upgrades_it_with_no_failed_request() {
    develop(
        "python",
        "examples/python/server.py",
        "server.py",
        Start::Interpreter("python3"),
    );
}

#[test]
fn saving_a_node_server_upgrades_it_with_no_failed_request() {
    develop(
        "node",
        "examples/node/server.js",
        "server.js",
        Start::Interpreter("node"),
    );
}

/// Go: build, then `exec` the binary (outside the watched directory), so
/// the server keeps the child's pid and `LISTEN_PID` stays true.
#[test]
fn saving_a_go_server_rebuilds_and_upgrades_it_with_no_failed_request() {
    let bin = std::env::temp_dir().join(format!("sockvisor-watch-go-{}", std::process::id()));
    let script = format!(
        "go build -o {bin} . && exec {bin}",
        bin = bin.join("app").display()
    );
    develop_with(
        "go",
        &[
            ("examples/go/main.go", "main.go"),
            ("examples/go/go.mod", "go.mod"),
        ],
        "main.go",
        Start::Shell(script),
        &[
            ("GOCACHE", example("target/go/cache")),
            ("GOPATH", example("target/go/path")),
        ],
    );
    let _ = fs::remove_dir_all(bin);
}

/// Rust: `cargo build` then `exec` the binary (the same pid, so any
/// LISTEN_PID check holds), with the example server on the listenfd crate.
#[test]
fn saving_a_rust_server_rebuilds_and_upgrades_it_with_no_failed_request() {
    let dir = TestDir::new("rust-project");
    let app = dir.join("app");
    fs::create_dir_all(app.join("src")).unwrap();
    fs::write(
        app.join("Cargo.toml"),
        "[package]\nname = \"devapp\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nlistenfd = \"1\"\nsignal-hook = \"0.4\"\n\n[workspace]\n",
    )
    .unwrap();
    fs::copy(example("examples/rust_server.rs"), app.join("src/main.rs")).unwrap();
    // The lock file is written before sockvisor watches, not during.
    let status = Command::new(env!("CARGO"))
        .args(["generate-lockfile", "--offline"])
        .current_dir(&app)
        .status()
        .unwrap();
    assert!(status.success());
    let script = format!(
        "{cargo} build -q --offline && exec target/debug/devapp",
        cargo = env!("CARGO")
    );
    develop_in(
        dir,
        "src/main.rs",
        Start::Shell(script),
        &[("CARGO_TARGET_DIR", app.join("target"))],
    );
}
