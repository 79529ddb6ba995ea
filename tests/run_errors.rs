//! Bad input to `sockvisor run`: each case gives one line on stderr that
//! names the problem and the fix, a documented exit status, no child
//! started, and no socket file left behind.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::*;

/// Runs sockvisor to completion with a command that would leave a marker
/// file if it were ever started.
fn run_to_failure(dir: &TestDir, listen: &[&str]) -> Output {
    run_command_to_failure(dir, listen, &["sh", "-c", "touch \"$0\"", &marker(dir)])
}

fn run_command_to_failure(dir: &TestDir, listen: &[&str], child: &[&str]) -> Output {
    let mut command = Command::new(sockvisor_bin());
    command.env("SOCKVISOR_CONTROL", dir.join("control.sock"));
    command.args(["run", "--restart", "never"]);
    for spec in listen {
        command.args(["--listen", spec]);
    }
    command.arg("--").args(child);
    command.output().unwrap()
}

fn marker(dir: &TestDir) -> String {
    dir.join("child-started").display().to_string()
}

/// Asserts exit status, a single stderr line containing every `needle`, and
/// that no child ran.
fn assert_fails(dir: &TestDir, output: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr:?}");
    assert!(lines[0].starts_with("sockvisor: "), "{stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {stderr:?}"
        );
    }
    assert!(
        !std::path::Path::new(&marker(dir)).exists(),
        "no child may be started"
    );
    stderr
}

#[test]
fn a_malformed_listen_spec_is_a_usage_error() {
    let dir = TestDir::new("badspec");
    let output = run_to_failure(&dir, &["127.0.0.1"]);
    assert_fails(
        &dir,
        &output,
        2,
        &["invalid listen spec '127.0.0.1'", "missing ':PORT'"],
    );
}

#[test]
fn an_unknown_option_in_a_spec_is_an_error_not_ignored() {
    let dir = TestDir::new("badopt");
    let output = run_to_failure(&dir, &["127.0.0.1:0,backlg=10"]);
    assert_fails(
        &dir,
        &output,
        2,
        &["'127.0.0.1:0,backlg=10'", "unknown option 'backlg=10'"],
    );
}

#[test]
fn a_port_in_use_is_reported_with_the_fix() {
    let dir = TestDir::new("inuse");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = taken.local_addr().unwrap().to_string();
    let output = run_to_failure(&dir, &[&spec]);
    assert_fails(
        &dir,
        &output,
        3,
        &[
            &format!("cannot listen on '{spec}'"),
            "address already in use",
            "choose another port",
        ],
    );
}

#[test]
fn a_privileged_port_without_permission_is_reported_with_the_fix() {
    let dir = TestDir::new("privileged");
    // A fresh network namespace has the default unprivileged port floor
    // (1024) whatever the host's setting; then drop to nobody.
    // nobody needs a directory of its own for its control socket.
    let runtime = dir.join("nobody");
    std::fs::create_dir(&runtime).unwrap();
    std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
    let mut command = Command::new("unshare");
    command.env("SOCKVISOR_CONTROL", runtime.join("control.sock"));
    command.args([
        "--net",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    command
        .arg(sockvisor_bin())
        .args(["run", "--listen", "0.0.0.0:80", "--", "true"]);
    let output = command.output().unwrap();
    assert_fails(
        &dir,
        &output,
        3,
        &[
            "cannot listen on '0.0.0.0:80'",
            "permission denied",
            "CAP_NET_BIND_SERVICE",
        ],
    );
}

#[test]
fn a_unix_path_in_a_missing_directory_names_the_directory() {
    let dir = TestDir::new("nodir");
    let path = dir.join("missing/app.sock");
    let spec = format!("unix:{}", path.display());
    let output = run_to_failure(&dir, &[&spec]);
    assert_fails(
        &dir,
        &output,
        3,
        &[
            &format!("cannot listen on '{spec}'"),
            &format!("directory {} does not exist", dir.join("missing").display()),
        ],
    );
}

#[test]
fn a_unix_path_a_live_process_listens_on_is_not_taken_over() {
    let dir = TestDir::new("live");
    let path = dir.join("live.sock");
    let _owner = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let spec = format!("unix:{}", path.display());
    let output = run_to_failure(&dir, &[&spec]);
    assert_fails(&dir, &output, 3, &["another process is listening on"]);
    assert!(path.exists(), "the live socket file is left alone");
}

#[test]
fn a_missing_command_exits_127_and_leaves_no_socket_file() {
    let dir = TestDir::new("nocmd");
    let path = dir.join("app.sock");
    let spec = format!("unix:{}", path.display());
    let output = run_command_to_failure(&dir, &[&spec], &["sockvisor-no-such-server"]);
    assert_fails(
        &dir,
        &output,
        127,
        &["command not found: 'sockvisor-no-such-server'", "PATH="],
    );
    assert!(!path.exists(), "no stray socket file");
}

#[test]
fn a_command_that_is_not_executable_exits_126() {
    let dir = TestDir::new("noexec");
    let script = dir.join("server.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let script = script.display().to_string();
    let output = run_command_to_failure(&dir, &[], &[&script]);
    assert_fails(
        &dir,
        &output,
        126,
        &[&format!("cannot execute '{script}'"), "chmod +x"],
    );
}

#[test]
fn a_command_the_kernel_refuses_to_execute_is_reported_with_the_kernels_reason() {
    // Executable, but neither a binary nor a script: only execve itself,
    // in the child, can tell.
    let dir = TestDir::new("badformat");
    let program = dir.join("server");
    std::fs::write(&program, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = program.display().to_string();
    let output = run_command_to_failure(&dir, &[], &[&program]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(126), "{stderr}");
    let expected = format!(
        "sockvisor: cannot execute '{program}': exec format error (not a program for this \
         machine, or a script without a #! line)"
    );
    assert!(stderr.lines().any(|l| l == expected), "{stderr}");
}

#[test]
fn a_script_whose_interpreter_is_missing_is_not_called_missing_itself() {
    let dir = TestDir::new("badinterpreter");
    let script = dir.join("server.sh");
    std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    // Only execve, in the child, finds that out (after the control socket
    // is up, so not the only line).
    let output = run_command_to_failure(&dir, &[], &[&script]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(126), "{stderr}");
    let expected = format!(
        "sockvisor: cannot execute '{script}': the interpreter its #! line names, or its \
         dynamic loader, does not exist"
    );
    assert!(stderr.lines().any(|l| l == expected), "{stderr}");
}

#[test]
fn a_directory_given_as_the_command_is_named_as_one() {
    let dir = TestDir::new("dircommand");
    let program = dir.path.display().to_string();
    let output = run_command_to_failure(&dir, &[], &[&program]);
    assert_fails(
        &dir,
        &output,
        126,
        &[&format!(
            "cannot execute '{program}': is a directory (give the path of the program in it)"
        )],
    );
}

#[test]
fn a_failing_second_listener_removes_the_first_ones_socket_file() {
    let dir = TestDir::new("rollback");
    let path = dir.join("first.sock");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let first = format!("unix:{}", path.display());
    let second = taken.local_addr().unwrap().to_string();
    let output = run_to_failure(&dir, &[&first, &second]);
    assert_fails(&dir, &output, 3, &["address already in use"]);
    assert!(!path.exists(), "no stray socket file");
}

#[test]
fn a_bad_stop_signal_or_duration_is_rejected_before_anything_starts() {
    let dir = TestDir::new("badflags");
    for (flag, value, needle) in [
        ("--stop-signal", "SIGNOPE", "unknown signal 'SIGNOPE'"),
        ("--stop-timeout", "soon", "invalid duration 'soon'"),
        // A ready timeout of 0 would fail every generation; a watchdog
        // is off or at least 100ms.
        ("--ready-timeout", "0", "'0' is zero"),
        ("--watchdog", "1ms", "'1ms' is shorter than 100ms"),
    ] {
        let output = Command::new(sockvisor_bin())
            .args([
                "run",
                flag,
                value,
                "--",
                "sh",
                "-c",
                "touch \"$0\"",
                &marker(&dir),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!std::path::Path::new(&marker(&dir)).exists());
    }
}

#[test]
fn an_empty_command_is_a_usage_error() {
    let dir = TestDir::new("empty-command");
    let output = run_command_to_failure(&dir, &["127.0.0.1:0"], &[""]);
    assert_fails(&dir, &output, 2, &["the command is empty", "after --"]);
}

#[test]
fn the_same_address_twice_is_a_usage_error_not_another_process() {
    let dir = TestDir::new("listen-twice");
    let path = dir.join("app.sock");
    let spec = format!("unix:{}", path.display());
    let output = run_to_failure(&dir, &[&spec, &spec]);
    assert_fails(&dir, &output, 2, &["is given twice"]);
    assert!(!path.exists(), "no socket file left");
}
