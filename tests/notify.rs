//! The notify protocol end to end, with children that use it in unusual
//! ways: a flood of datagrams, and READY=1 sent from a forked worker.

mod common;

use std::process::Command;

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
