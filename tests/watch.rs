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

/// Waits until an answer contains `text`, and returns it.
fn answer_containing(address: &str, text: &str) -> String {
    wait_for(&format!("an answer containing {text:?}"), || {
        http_get_tcp(address).ok().filter(|r| r.contains(text))
    })
}

/// Edits `source` as an editor saves it: replace `from` by `to`.
fn edit(source: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(source).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", source.display());
    fs::write(source, text.replace(from, to)).unwrap();
}

fn develop(name: &str, example_path: &str, file: &str, program: &str) {
    let dir = TestDir::new(name);
    let source = project(&dir, example_path, file);
    let app = source.parent().unwrap().to_path_buf();
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--watch"])
        .arg(&app)
        .args(["--watch-delay", "100ms", "--", program])
        .arg(&source);
    let sockvisor = Sockvisor::spawn(dir, command);
    let address = sockvisor.logged_tcp_address();
    answer_containing(&address, "hello from pid");
    let load = Load::start(&address, 2);
    load.wait_for_answers(50);

    // A save: the new code answers, nothing failed meanwhile.
    edit(&source, "hello from pid", "edited: hello from pid");
    answer_containing(&address, "edited: hello from pid");
    sockvisor.wait_for_log("watch: generation 2 is serving");
    load.wait_for_answers(50);

    // An editor's swap file changes nothing.
    fs::write(app.join(format!(".{file}.swp")), "swap").unwrap();

    // A broken save: the old code keeps serving; the next save fixes it.
    let good = fs::read_to_string(&source).unwrap();
    fs::write(&source, "this is not a program (\n").unwrap();
    sockvisor.wait_for_log("watch: the new code did not start");
    assert!(
        http_get_tcp(&address)
            .unwrap()
            .contains("edited: hello from pid")
    );
    fs::write(&source, good.replace("edited:", "fixed:")).unwrap();
    answer_containing(&address, "fixed: hello from pid");
    load.wait_for_answers(50);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new(), "{name}");
    let log = sockvisor.stderr();
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
        "python3",
    );
}

#[test]
fn saving_a_node_server_upgrades_it_with_no_failed_request() {
    develop("node", "examples/node/server.js", "server.js", "node");
}
