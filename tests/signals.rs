//! Every asynchronous signal reaches the child and none kills sockvisor,
//! as tini's and dumb-init's test suites expect: each forwarded signal is
//! sent to sockvisor, as a plain process and as PID 1 of a pid namespace,
//! and the child must report it while sockvisor lives on.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The signals sockvisor forwards in init mode (no sockets): every
/// asynchronous signal but the stop requests, `SIGCHLD` and `SIGPIPE`, and
/// every real-time one (a sample: first, `SIGRTMIN+3`, last).
fn forwarded() -> Vec<i32> {
    let mut signals = vec![
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGSTKFLT,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGURG,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGIO,
        libc::SIGPWR,
    ];
    signals.extend([libc::SIGRTMIN(), libc::SIGRTMIN() + 3, libc::SIGRTMAX()]);
    signals
}

/// A child that records every signal it gets, one number a line, in
/// `received`, and says it is ready once its handlers are in place.
fn recording_child(dir: &Path) -> Vec<String> {
    let script = format!(
        r#"
import signal, sys, time
log = open({received:?}, "a", buffering=1)
def record(number, frame):
    log.write("%d\n" % number)
skip = {{signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}}
for number in range(1, signal.SIGRTMAX + 1):
    if number in skip or number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL):
        continue
    try:
        signal.signal(number, record)
    except (OSError, ValueError):
        pass
open({ready:?}, "w").close()
while True:
    time.sleep(60)
"#,
        received = dir.join("received").display().to_string(),
        ready = dir.join("ready").display().to_string(),
    );
    vec!["/usr/bin/python3".into(), "-c".into(), script]
}

fn received(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("received"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Sends each forwarded signal to `target` (sockvisor, as the host sees
/// it) and waits for the child to report it.
fn each_signal_reaches_the_child(sockvisor: &mut Sockvisor, target: i32) {
    let dir = sockvisor.dir.path.clone();
    sockvisor.wait_for("the child's handlers", || {
        dir.join("ready").exists().then_some(())
    });
    for signal in forwarded() {
        let before = received(&dir).iter().filter(|s| **s == signal).count();
        // SAFETY: signalling the sockvisor this test started.
        unsafe { libc::kill(target, signal) };
        sockvisor.wait_for(&format!("the child to receive signal {signal}"), || {
            (received(&dir).iter().filter(|s| **s == signal).count() > before).then_some(())
        });
        assert!(sockvisor.is_running(), "signal {signal} ended sockvisor");
    }
}

#[test]
fn every_asynchronous_signal_reaches_the_child_and_none_kills_sockvisor() {
    let dir = TestDir::new("forward");
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--"]).args(recording_child(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let pid = sockvisor.pid();
    each_signal_reaches_the_child(&mut sockvisor, pid);
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn as_pid_1_every_asynchronous_signal_reaches_the_child() {
    let dir = TestDir::new("forward-pid1");
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(sockvisor_bin())
        .args(["run", "--"])
        .args(recording_child(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    // unshare --fork is the test's child; sockvisor, PID 1 inside, is its.
    let init = sockvisor.wait_for("sockvisor's host pid", || {
        children_of(sockvisor.pid()).first().copied()
    });
    each_signal_reaches_the_child(&mut sockvisor, init);
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(init, libc::SIGTERM) };
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn with_sockets_hup_and_usr2_start_upgrades_instead() {
    let dir = TestDir::new("hup-upgrade");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    sockvisor.signal(libc::SIGHUP);
    sockvisor.report(2);
    sockvisor.wait_for_log("generation 2 (pid");
    sockvisor.wait_for("generation 2 to serve", || {
        (status_json(&sockvisor)["current"] == 2).then_some(())
    });
    sockvisor.signal(libc::SIGUSR2);
    sockvisor.report(3);
}

/// A child that forks a helper into its own process group; both record
/// `SIGUSR1` in their own file.
fn child_with_a_helper(dir: &Path) -> Vec<String> {
    let script = format!(
        r#"
import os, signal, time
def recorder(name):
    def record(number, frame):
        open(os.path.join({dir:?}, name), "a").write("%d\n" % number)
    return record
signal.signal(signal.SIGUSR1, recorder("child"))
if os.fork() == 0:
    signal.signal(signal.SIGUSR1, recorder("helper"))
    open(os.path.join({dir:?}, "helper-ready"), "w").close()
    while True:
        time.sleep(60)
while True:
    time.sleep(60)
"#,
        dir = dir.display().to_string()
    );
    vec!["/usr/bin/python3".into(), "-c".into(), script]
}

fn run_with_helper(name: &str, options: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .arg("run")
        .args(options)
        .arg("--")
        .args(child_with_a_helper(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let dir = sockvisor.dir.path.clone();
    sockvisor.wait_for("the helper", || {
        dir.join("helper-ready").exists().then_some(())
    });
    sockvisor.signal(libc::SIGUSR1);
    sockvisor.wait_for("the child to get SIGUSR1", || {
        dir.join("child").exists().then_some(())
    });
    sockvisor
}

#[test]
fn a_forwarded_signal_goes_to_the_child_alone_by_default() {
    let sockvisor = run_with_helper("signal-child", &[]);
    // Sent to the helper directly, it arrives: the check below can fail.
    let helper_pid = children_of(
        children_of(sockvisor.pid())
            .first()
            .copied()
            .expect("the child"),
    );
    assert_eq!(helper_pid.len(), 1, "one helper");
    assert!(
        !sockvisor.dir.join("helper").exists(),
        "the helper got it too"
    );
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(helper_pid[0], libc::SIGUSR1) };
    sockvisor.wait_for("the helper to get SIGUSR1 sent to it", || {
        sockvisor.dir.join("helper").exists().then_some(())
    });
}

#[test]
fn with_signal_group_a_forwarded_signal_reaches_the_whole_process_group() {
    let sockvisor = run_with_helper("signal-group", &["--signal-group"]);
    sockvisor.wait_for("the helper to get SIGUSR1", || {
        sockvisor.dir.join("helper").exists().then_some(())
    });
}

#[test]
fn with_signal_group_sockvisor_signal_reaches_the_whole_process_group_too() {
    let sockvisor = run_with_helper("signal-command-group", &["--signal-group"]);
    let helper = sockvisor.dir.join("helper");
    sockvisor.wait_for("the helper to get the forwarded SIGUSR1", || {
        helper.exists().then_some(())
    });
    std::fs::remove_file(&helper).unwrap();
    let output = sockvisor.client(&["signal", "USR1"]);
    assert!(output.status.success(), "{output:?}");
    sockvisor.wait_for("the helper to get SIGUSR1 from `sockvisor signal`", || {
        helper.exists().then_some(())
    });
}

#[test]
fn sockvisor_signal_passes_real_time_signals_on() {
    let dir = TestDir::new("signal-realtime");
    let got = dir.join("got");
    let ready = dir.join("ready");
    let script = format!(
        r#"
import signal, time
def record(number, frame):
    open({got:?}, "a").write("%d\n" % number)
signal.signal(signal.SIGRTMIN + 3, record)
open({ready:?}, "w").close()
while True:
    time.sleep(60)
"#,
        got = got.display().to_string(),
        ready = ready.display().to_string()
    );
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--", "/usr/bin/python3", "-c", &script]);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for("the child's handler", || ready.exists().then_some(()));
    let output = sockvisor.client(&["signal", "RTMIN+3"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("sent SIGRTMIN+3 to generation 1"),
        "{output:?}"
    );
    let expected = format!("{}\n", libc::SIGRTMIN() + 3);
    sockvisor.wait_for("the child to get SIGRTMIN+3", || {
        (std::fs::read_to_string(&got).ok()? == expected).then_some(())
    });
    let output = sockvisor.client(&["signal", "RTMIN+99"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
