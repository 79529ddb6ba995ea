//! The notify protocol end to end, with children that use it in unusual
//! ways: a flood of datagrams, READY=1 sent from a forked worker, and
//! readiness forged for another generation: by a process of generation 1
//! that joined generation 2's process group (READY=1 or einhorn's
//! `worker:ack`), and by a process outside every generation.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use serde_json::Value;

use common::*;

fn run_python(name: &str, script: &str) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--ready", "notify", "--", "python3", "-c", script]);
    Sockvisor::spawn(dir, command)
}

#[test]
fn a_generation_flooding_its_notify_socket_does_not_stall_sockvisor() {
    let script = r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
path = os.environ["NOTIFY_SOCKET"]
for i in range(20000):
    s.sendto(b"no equals sign here" if i % 2 else b"STATUS=flood %d" % i, path)
s.sendto(b"STATUS=done\nREADY=1", path)
time.sleep(600)
"#;
    let mut sockvisor = run_python("flood", script);
    sockvisor.wait_for_log("generation 1 started");
    // While the flood runs, the control socket answers.
    for _ in 0..5 {
        let output = sockvisor.client(&["status", "--json"]);
        assert!(output.status.success(), "{output:?}");
    }
    wait_for("READY=1 after the flood", || {
        let status = status_json(&sockvisor);
        (status["current"] == 1 && status["generations"][0]["status"] == "done").then_some(())
    });
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn ready_sent_by_a_forked_worker_counts_for_its_generation() {
    let script = r#"
import os, socket, time
if os.fork() == 0:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\nSTATUS=worker %d" % os.getpid(), os.environ["NOTIFY_SOCKET"])
    time.sleep(600)
    os._exit(0)
time.sleep(600)
"#;
    let sockvisor = run_python("worker", script);
    let line = sockvisor.wait_for_log("generation 1 (pid");
    assert!(line.contains("is ready"), "{line}");
    let status = status_json(&sockvisor);
    let text = status["generations"][0]["status"]
        .as_str()
        .unwrap()
        .to_string();
    let worker: i32 = text.trim_start_matches("worker ").parse().unwrap();
    assert_ne!(
        worker as i64,
        status["generations"][0]["pid"].as_i64().unwrap()
    );
}

#[test]
fn ready_from_a_process_outside_the_generation_is_dropped() {
    let dir = TestDir::new("foreign");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--log-level", "debug", "--listen", "127.0.0.1:0"])
        .args(["--ready-timeout", "2s", "--"])
        .args(Sockvisor::probe_args(&dir.path))
        .args(["--gen", "2", "--no-ready"]);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 (pid");
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    // Generation 2 runs and never notifies; this test process, which is
    // not one of its processes, tries to speak for it.
    let report = sockvisor.report(2);
    let socket = report["env"]["NOTIFY_SOCKET"].as_str().unwrap().to_string();
    let foreign = std::os::unix::net::UnixDatagram::unbound().unwrap();
    foreign.send_to(b"READY=1", &socket).unwrap();
    sockvisor.wait_for_log(&format!(
        "dropped: sender pid {} is not a process of it",
        std::process::id()
    ));
    let output = upgrade.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not ready within 2s"), "{stderr}");
    assert_eq!(status_json(&sockvisor)["current"], 1);
}

/// Generation 1 serves; generation 2 never becomes ready on its own, and
/// generation 1 plays the attacker given by `forge` (a probe server knob).
fn run_with_forger(name: &str, options: &[&str], forge: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--log-level", "debug", "--listen", "127.0.0.1:0"])
        .args(["--ready-timeout", "2s"])
        .args(options)
        .arg("--")
        .args(Sockvisor::probe_args(&dir.path))
        .args(["--gen", "2", "--no-ready", "--gen", "1"])
        .args(forge);
    Sockvisor::spawn(dir, command)
}

/// Kills a process this test caused to exist when the test ends, however it
/// ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a process the test's own child started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Waits for generation 1's forger to report what it did; returns the
/// report and a guard that kills the forger.
fn forged(sockvisor: &Sockvisor) -> (Value, KillOnDrop) {
    let path = sockvisor.dir.join("1.forged");
    let report: Value = sockvisor.wait_for("generation 1's forger", || {
        serde_json::from_slice(&std::fs::read(&path).ok()?).ok()
    });
    assert_eq!(report["error"], Value::Null, "{report}");
    let guard = KillOnDrop(report["pid"].as_i64().unwrap() as i32);
    (report, guard)
}

/// Sends one control request line as this process and returns the reply.
fn control_request(sockvisor: &Sockvisor, line: &str) -> Value {
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    writeln!(stream, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

/// The upgrade to generation 2 ends at its readiness deadline and
/// generation 1 keeps serving: clients are answered by it.
fn assert_upgrade_refused_and_generation_1_serves(
    sockvisor: &Sockvisor,
    upgrade: std::thread::JoinHandle<std::process::Output>,
) {
    let output = upgrade.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was not ready within 2s"), "{stderr}");
    let status = status_json(sockvisor);
    assert_eq!(status["current"], 1, "{status}");
    let gen1 = sockvisor.report(1)["pid"].as_i64().unwrap();
    let response = http_get_tcp(&sockvisor.logged_tcp_address()).unwrap();
    assert_eq!(answering_pid(&response), Some(format!("pid={gen1}")));
}

#[test]
fn ready_from_another_generations_process_in_the_new_generations_group_is_dropped() {
    let sockvisor = run_with_forger("forged-ready", &[], &["--forge-ready-for", "2"]);
    sockvisor.wait_for_log("generation 1 (pid");
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    let gen1 = sockvisor.report(1)["pid"].as_i64().unwrap();
    let gen2 = sockvisor.report(2)["pid"].as_i64().unwrap();
    let (forger, _guard) = forged(&sockvisor);
    // The forgery is real: a process forked by generation 1, inside
    // generation 2's process group, alive while its READY=1 is read.
    assert_eq!(forger["ppid"], gen1);
    assert_eq!(forger["pgid"], gen2);
    sockvisor.wait_for_log(&format!(
        "notify datagram for generation 2 dropped: sender pid {} is not a process of it",
        forger["pid"]
    ));
    assert_upgrade_refused_and_generation_1_serves(&sockvisor, upgrade);
}

#[test]
fn worker_ack_without_fd_env_einhorn_is_refused() {
    let sockvisor = run_with_forger("ack-without-einhorn", &[], &[]);
    sockvisor.wait_for_log("generation 1 (pid");
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    let gen2 = sockvisor.report(2)["pid"].as_i64().unwrap();
    let reply = control_request(
        &sockvisor,
        &format!(r#"{{"command":"worker:ack","pid":{gen2}}}"#),
    );
    assert_eq!(reply["ok"], false, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("only with --fd-env einhorn"), "{message}");
    sockvisor.wait_for_log(&format!(
        "worker:ack for pid {gen2} refused: it counts only"
    ));
    assert_upgrade_refused_and_generation_1_serves(&sockvisor, upgrade);
}

#[test]
fn worker_ack_from_a_process_that_is_not_the_named_worker_is_refused() {
    let sockvisor = run_with_forger(
        "forged-ack",
        &["--fd-env", "einhorn"],
        &["--forge-ack-for", "2"],
    );
    sockvisor.wait_for_log("generation 1 (pid");
    let upgrade = sockvisor.client_in_background(&["upgrade"]);
    let gen2 = sockvisor.report(2)["pid"].as_i64().unwrap();
    // Generation 1's process inside generation 2's group.
    let (forger, _guard) = forged(&sockvisor);
    assert_eq!(forger["pgid"], gen2);
    let reply = &forger["reply"];
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["error"], "permission_denied", "{reply}");
    let expected = format!(
        "the connection comes from pid {}, which is not generation 2 (pid {gen2}) or a descendant of it",
        forger["pid"]
    );
    assert!(
        reply["message"].as_str().unwrap().contains(&expected),
        "{reply}"
    );
    sockvisor.wait_for_log(&format!("worker:ack for pid {gen2} refused: {expected}"));
    // A process outside every generation (this test) fares no better.
    let reply = control_request(
        &sockvisor,
        &format!(r#"{{"command":"worker:ack","pid":{gen2}}}"#),
    );
    assert_eq!(reply["error"], "permission_denied", "{reply}");
    assert_upgrade_refused_and_generation_1_serves(&sockvisor, upgrade);
}

/// Descriptors sockvisor has open.
fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_message_passing_more_descriptors_than_allowed_is_refused_and_none_stays_open() {
    // 40 messages of 17 descriptors each (one over the limit, under the
    // kernel's 253), with FDSTORE=1, then READY=1 after them.
    let script = r#"
import array, os, signal, socket
path = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(17)]
for _ in range(40):
    s.sendmsg([b"FDSTORE=1\nFDNAME=many"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
s.send(b"READY=1")
while True:
    signal.pause()
"#;
    let dir = TestDir::new("too-many-fds");
    let mut command = Command::new(sockvisor_bin());
    command.args([
        "run",
        "--ready",
        "notify",
        "--fdstore-max",
        "100",
        "--log-level",
        "debug",
    ]);
    command.args(["--", "python3", "-c", script]);
    let sockvisor = Sockvisor::spawn(dir, command);
    // Messages are read in order: READY=1 comes after the 40.
    sockvisor.wait_for_log("is ready after");
    let open = open_descriptors(sockvisor.pid());
    assert!(open < 40, "sockvisor has {open} descriptors open");
    assert_eq!(
        status_json(&sockvisor)["fdstore"]["descriptors"],
        serde_json::json!([])
    );
    assert!(
        sockvisor
            .stderr()
            .contains("17 descriptors passed with it, over the 16 one message may pass"),
        "{}",
        sockvisor.stderr()
    );
}
