//! `sockvisor reexec`: sockvisor replaces its own program in place, as an
//! operator runs it after installing a new binary. The pid, every
//! generation and the listening sockets stay; the control socket answers
//! afterwards; a binary that is not sockvisor (whatever its exit status),
//! one that cannot prove it can resume the state, or one that cannot
//! restore it, changes nothing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A copy of the sockvisor binary at another path, as a package upgrade
/// would install it.
fn copy_of_sockvisor(dir: &TestDir, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(sockvisor_bin(), &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An executable shell script in the test directory.
fn script(dir: &TestDir, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exe_of(pid: i32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// The inode of a socket descriptor, `socket:[N]`.
fn socket_inode(pid: i64, fd: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .unwrap()
        .display()
        .to_string()
}

/// Every socket inode a process holds.
fn socket_inodes(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("socket:"))
        .collect()
}

fn reexec(sockvisor: &Sockvisor, binary: &Path) -> std::process::Output {
    let binary = binary.display().to_string();
    sockvisor.client(&["reexec", "--binary", &binary, "--timeout", "20s"])
}

fn run(name: &str, options: &[&str], probe: &[&str]) -> Sockvisor {
    let sockvisor = Sockvisor::listening_probe(name, options, probe);
    sockvisor.wait_for_log("is ready after");
    sockvisor
}

/// Asks for a re-exec into `binary` and asserts what an operator must see
/// when it is refused: exit status 1 with one line naming the binary and
/// containing `why`, and afterwards the same sockvisor program at the same
/// pid, the same server processes, and requests answered by them. Returns
/// the client's stderr.
fn assert_reexec_refused(sockvisor: &mut Sockvisor, binary: &Path, why: &str) -> String {
    let address = sockvisor.logged_tcp_address();
    let exe = exe_of(sockvisor.pid());
    let pids = generation_pids(sockvisor);
    let output = reexec(sockvisor, binary);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&binary.display().to_string()),
        "the reason names the binary: {stderr}"
    );
    assert!(stderr.contains(why), "{stderr}");
    assert!(stderr.contains("nothing changed"), "{stderr}");
    assert!(sockvisor.is_running(), "sockvisor still runs");
    assert_eq!(exe_of(sockvisor.pid()), exe, "the same program");
    let status = status_json(sockvisor);
    assert_eq!(status["pid"].as_i64(), Some(sockvisor.pid() as i64));
    assert_eq!(status["reexecs"], 0);
    assert_eq!(
        generation_pids(sockvisor),
        pids,
        "the same server processes"
    );
    let response = http_get_tcp(&address).unwrap();
    let answered = answering_pid(&response).unwrap_or_default();
    assert!(
        pids.iter().any(|pid| answered == format!("pid={pid}")),
        "answered by {answered:?}, not one of {pids:?}"
    );
    stderr
}

fn generation_pids(sockvisor: &Sockvisor) -> Vec<i64> {
    status_json(sockvisor)["generations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["workers"].as_array().unwrap().clone())
        .map(|w| w["pid"].as_i64().unwrap())
        .collect()
}

#[test]
fn reexec_under_load_keeps_the_pid_the_children_and_the_sockets() {
    let mut sockvisor = run("load", &["--workers", "2"], &["--request-delay-ms", "2"]);
    // Counted before any control connection: one that is answered closes
    // a moment later, and counted open here it would never come back.
    let fds_before = fs::read_dir(format!("/proc/{}/fd", sockvisor.pid()))
        .unwrap()
        .count();
    let address = sockvisor.logged_tcp_address();
    let new_binary = copy_of_sockvisor(&sockvisor.dir, "sockvisor-new");
    let pids = generation_pids(&sockvisor);
    let child = sockvisor.report(1)["pid"].as_i64().unwrap();
    let listener = socket_inode(child, 3);
    assert!(socket_inodes(sockvisor.pid()).contains(&listener));
    let load = Load::start(&address, 4);
    load.wait_for_answers(100);
    let output = reexec(&sockvisor, &new_binary);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("re-executed in place: pid {}", sockvisor.pid())),
        "{text}"
    );
    load.wait_for_answers(100);
    assert_eq!(exe_of(sockvisor.pid()), new_binary);
    assert_eq!(generation_pids(&sockvisor), pids, "the same children");
    assert!(
        socket_inodes(sockvisor.pid()).contains(&listener),
        "the same listening socket"
    );
    // Control connections close a moment after their client has its
    // answer; a descriptor leaked by the re-exec never would.
    let fd_dir = format!("/proc/{}/fd", sockvisor.pid());
    wait_for("sockvisor's descriptors to be what they were", || {
        (fs::read_dir(&fd_dir).unwrap().count() == fds_before).then_some(())
    });
    let status = status_json(&sockvisor);
    assert_eq!(status["reexecs"], 1);
    assert_eq!(status["pid"].as_i64(), Some(sockvisor.pid() as i64));
    // A later upgrade of the server works, under the new program.
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    load.wait_for_answers(100);
    let result = load.stop();
    assert_eq!(result.failures, Vec::<String>::new());
    // A stop afterwards stops everything.
    let new_pids = generation_pids(&sockvisor);
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
    for pid in new_pids.iter().chain(&pids) {
        assert!(!process_alive(*pid), "pid {pid} still runs");
    }
}

#[test]
fn reexec_while_an_old_generation_drains_keeps_its_drain_timeout() {
    let sockvisor = run(
        "draining",
        &["--drain-timeout", "2s"],
        &["--gen", "1", "--ignore", "SIGQUIT"],
    );
    let old = sockvisor.report(1)["pid"].as_i64().unwrap();
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    wait_for("generation 1 to drain", || {
        let status = status_json(&sockvisor);
        (status["current"] == 2 && status["generations"][0]["state"] == "draining").then_some(())
    });
    let new_binary = copy_of_sockvisor(&sockvisor.dir, "sockvisor-new");
    let output = reexec(&sockvisor, &new_binary);
    assert!(output.status.success(), "{output:?}");
    assert!(process_alive(old), "still draining right after the re-exec");
    sockvisor.wait_for_log("did not exit within 2s; killing its process group");
    wait_for("generation 1 to be gone", || {
        (!process_alive(old)).then_some(())
    });
    // The client that waited for the upgrade is told that it succeeded:
    // the new generation serves (it used to hear "re-executing, try
    // again").
    let waited = upgrade.join().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{waited:?}");
    let said = String::from_utf8_lossy(&waited.stdout);
    assert!(
        said.contains("generation 2 is serving; generation 1 is still draining"),
        "{said}"
    );
    assert_eq!(status_json(&sockvisor)["current"], 2);
}

#[test]
fn reexec_into_a_file_that_is_not_sockvisor_is_refused_and_nothing_changes() {
    let mut sockvisor = run("not-sockvisor", &[], &[]);
    let script = script(&sockvisor.dir, "not-sockvisor.sh", "exit 1");
    assert_reexec_refused(
        &mut sockvisor,
        &script,
        "exited with status 1 when asked to prove that it can resume this state",
    );
}

#[test]
fn reexec_into_bin_true_is_refused_because_exit_status_0_proves_nothing() {
    let mut sockvisor = run("bin-true", &[], &[]);
    assert_reexec_refused(
        &mut sockvisor,
        Path::new("/bin/true"),
        "exited with status 0 without proving that it read the state",
    );
}

#[test]
fn reexec_into_a_script_that_exits_0_whatever_it_is_given_is_refused() {
    let mut sockvisor = run("exits-0", &[], &[]);
    let script = script(&sockvisor.dir, "exits-0.sh", "exit 0");
    assert_reexec_refused(&mut sockvisor, &script, "without proving");
}

#[test]
fn reexec_into_a_script_that_forges_the_proof_is_refused() {
    let mut sockvisor = run("forged", &[], &[]);
    // The right words and shape, and a digest that cannot be right; out of
    // check mode it would take over the pid and sleep.
    let script = script(
        &sockvisor.dir,
        "forged.sh",
        "if [ -n \"$SOCKVISOR_REEXEC_CHECK\" ]; then\n\
         echo \"sockvisor-reexec-ok 1 0123456789abcdef\" >&4\n\
         exit 0\n\
         fi\n\
         exec sleep 600",
    );
    assert_reexec_refused(
        &mut sockvisor,
        &script,
        "answered with a proof that does not match the state it was given",
    );
}

#[test]
fn reexec_into_a_program_that_never_answers_is_refused_within_the_timeout() {
    let mut sockvisor = run("never-answers", &[], &[]);
    let script = script(&sockvisor.dir, "sleeps.sh", "exec sleep 600");
    let asked = Instant::now();
    assert_reexec_refused(
        &mut sockvisor,
        &script,
        "did not answer the check within 5s",
    );
    // The check's timeout is 5 s; the refusal follows it.
    assert!(
        asked.elapsed() < Duration::from_secs(9),
        "refused after {:?}",
        asked.elapsed()
    );
    // The control socket answers right away, and the candidate is gone.
    let status = sockvisor.client(&["status"]);
    assert!(status.status.success(), "{status:?}");
    let line = sockvisor.wait_for_log("re-exec: checking");
    let check: i64 = line
        .rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    wait_for("the check run to be killed", || {
        (!process_alive(check)).then_some(())
    });
}

#[test]
fn reexec_into_a_sockvisor_that_answers_for_an_older_state_version_is_refused() {
    let dir = TestDir::new("old-version");
    let old = copy_of_sockvisor(&dir, "sockvisor-old");
    let mut command = Command::new(sockvisor_bin());
    command
        .env("SOCKVISOR_TEST_CLAIMS_OLD_VERSION_IN", &old)
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    assert_reexec_refused(
        &mut sockvisor,
        &old,
        "answered for state version 0, but this sockvisor hands over version 1",
    );
}

#[test]
fn a_new_binary_that_cannot_restore_the_state_falls_back_to_the_old_program() {
    let dir = TestDir::new("fallback");
    let new_binary = copy_of_sockvisor(&dir, "sockvisor-broken");
    let mut command = Command::new(sockvisor_bin());
    command
        .env("SOCKVISOR_TEST_RESTORE_FAILS_IN", &new_binary)
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    let address = sockvisor.logged_tcp_address();
    let exe = exe_of(sockvisor.pid());
    let pids = generation_pids(&sockvisor);
    let output = reexec(&sockvisor, &new_binary);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the new binary could not restore the state"),
        "{stderr}"
    );
    assert!(
        stderr.contains("runs again, generation 1 serving"),
        "{stderr}"
    );
    assert_eq!(exe_of(sockvisor.pid()), exe, "the old program runs again");
    assert_eq!(generation_pids(&sockvisor), pids);
    assert!(http_get_tcp(&address).is_ok());
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
}

#[test]
fn reexec_is_refused_while_an_upgrade_is_starting() {
    let sockvisor = run("busy", &[], &["--gen", "2", "--ready-delay-ms", "3000"]);
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    sockvisor.report(2);
    let output = sockvisor.client(&["reexec"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("an upgrade is in progress"), "{stderr}");
    assert!(upgrade.join().unwrap().status.success());
}

#[test]
fn reexec_as_pid_1_in_a_pid_namespace() {
    let dir = TestDir::new("pid1");
    let new_binary = copy_of_sockvisor(&dir, "sockvisor-new");
    let mut command = Command::new("unshare");
    command
        // If the test ends early, sockvisor (the namespace's PID 1) goes too.
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(sockvisor_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    let child = sockvisor.report(1)["pid"].as_i64().unwrap();
    let output = reexec(&sockvisor, &new_binary);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(text.contains("re-executed in place: pid 1,"), "{text}");
    let status = status_json(&sockvisor);
    assert_eq!(status["pid"], 1);
    assert_eq!(status["generations"][0]["pid"].as_i64(), Some(child));
    assert!(sockvisor.client(&["upgrade"]).status.success());
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn sigkill_during_a_reexec_leaves_nothing_running() {
    let mut sockvisor = run("sigkill", &["--workers", "2"], &[]);
    let address = sockvisor.logged_tcp_address();
    let pids = generation_pids(&sockvisor);
    let new_binary = copy_of_sockvisor(&sockvisor.dir, "sockvisor-new");
    let control = sockvisor.control_path();
    let binary = new_binary.display().to_string();
    let request = std::thread::spawn(move || {
        Command::new(sockvisor_bin())
            .args(["reexec", "--binary", &binary, "--control"])
            .arg(control)
            .output()
            .unwrap()
    });
    // Wherever the kill lands (checking, exec'ing, restoring), the
    // documented SIGKILL policy holds: the generations die with sockvisor.
    sockvisor.wait_for_log("re-exec: checking");
    sockvisor.child.kill().unwrap();
    sockvisor.child.wait().unwrap();
    let _ = request.join();
    for pid in pids {
        wait_for(&format!("worker {pid} to die"), || {
            (!process_alive(pid)).then_some(())
        });
    }
    wait_for("the port to be free again", || {
        std::net::TcpListener::bind(&address).ok().map(drop)
    });
}

/// The soft limit on open files that process `pid` runs under.
fn open_files_limit(pid: i64) -> u64 {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// sockvisor raises its own soft limit on open files to the hard one (it
/// holds a descriptor per child), and every child, before and after a
/// re-exec, runs under the limit sockvisor was started with.
/// The children's open-file limit is restored only once their descriptors
/// are in place: with sockvisor's own descriptors (a pidfd per worker)
/// taking every number below that limit, the re-exec's check run and a new
/// generation still get their sockets.
#[test]
fn children_get_their_sockets_when_sockvisors_descriptors_fill_their_open_file_limit() {
    const WORKERS: usize = 64;
    let mut sockvisor = Sockvisor::start_with(
        "full-below-limit",
        |command| limit_open_files(command, WORKERS as u64, 4096),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--ready",
            "now",
            "--workers",
            "64",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_for("every worker to start", || {
        (children_of(sockvisor.pid()).len() == WORKERS).then_some(())
    });
    assert!(
        pidfds_of(sockvisor.pid()) >= WORKERS,
        "sockvisor's pidfds alone fill the children's limit of {WORKERS}"
    );
    let output = sockvisor.client(&["reexec"]);
    assert!(output.status.success(), "{output:?}");
    let output = sockvisor.client(&["upgrade", "--timeout", "30s"]);
    assert!(output.status.success(), "{output:?}");
    let workers = children_of(sockvisor.pid());
    assert_eq!(workers.len(), WORKERS);
    assert!(
        workers
            .iter()
            .all(|pid| open_files_limit(*pid as i64) == WORKERS as u64)
    );
    assert!(sockvisor.client(&["stop"]).status.success());
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn children_keep_the_open_file_limit_sockvisor_was_started_with() {
    let dir = TestDir::new("open-files");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    limit_open_files(&mut command, 256, 4096);
    let sockvisor = Sockvisor::spawn(dir, command);
    let first = sockvisor.report(1)["pid"].as_i64().unwrap();
    assert_eq!(open_files_limit(sockvisor.pid() as i64), 4096);
    assert_eq!(open_files_limit(first), 256);
    let output = reexec(
        &sockvisor,
        &copy_of_sockvisor(&sockvisor.dir, "sockvisor-new"),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(open_files_limit(sockvisor.pid() as i64), 4096);
    let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(upgrade.status.success(), "{upgrade:?}");
    let second = sockvisor.report(2)["pid"].as_i64().unwrap();
    assert_eq!(open_files_limit(second), 256, "after the re-exec too");
}
