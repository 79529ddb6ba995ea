//! The child's life under `sockvisor run`: exit status propagation, restart
//! policy with backoff on held sockets, graceful stop, escalation, and
//! signal forwarding.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

fn run(name: &str, options: &[&str], probe_options: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = std::process::Command::new(sockvisor_bin());
    command.arg("run").args(options).arg("--");
    command
        .args(Sockvisor::probe_args(&dir.path))
        .args(probe_options);
    Sockvisor::spawn(dir, command)
}

#[test]
fn without_restart_sockvisor_exits_with_the_childs_exit_code() {
    let mut sockvisor = run("code", &["--restart", "never"], &["--exit-code", "17"]);
    assert_eq!(sockvisor.wait_exit(), 17);
    sockvisor.wait_for_log("exited with status 17; not restarting");
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_the_signal() {
    let mut sockvisor = run("killed", &["--restart", "never"], &[]);
    let report = sockvisor.report(1);
    // SAFETY: killing the child this test started.
    unsafe { libc::kill(report["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    assert_eq!(sockvisor.wait_exit(), 128 + 9);
}

#[test]
fn on_failure_does_not_restart_after_a_clean_exit() {
    let mut sockvisor = run("clean", &["--restart", "on-failure"], &["--exit-code", "0"]);
    assert_eq!(sockvisor.wait_exit(), 0);
    assert!(
        !sockvisor.dir.join("2.json").exists(),
        "no second generation"
    );
}

#[test]
fn with_sockets_a_server_that_exits_cleanly_is_restarted_by_default() {
    let sockvisor = run(
        "server-default",
        &["--listen", "127.0.0.1:0", "--restart-delay", "10ms"],
        &["--exit-code", "0", "--faults-until", "1"],
    );
    let second = sockvisor.report(2);
    let answer = http_get_tcp(&reported_address(&second, 3)).unwrap();
    assert_eq!(
        answering_pid(&answer),
        Some(format!("pid={}", second["pid"]))
    );
}

#[test]
fn a_new_generation_that_exits_cleanly_after_ready_does_not_end_the_service() {
    let mut sockvisor = run(
        "ready-then-exit",
        &["--listen", "127.0.0.1:0", "--restart-delay", "10ms"],
        &[
            "--gen",
            "2",
            "--crash-after-ready-ms",
            "0",
            "--gen",
            "2",
            "--crash-exit-code",
            "0",
        ],
    );
    let first = sockvisor.report(1);
    let address = reported_address(&first, 3);
    // Generation 2 is ready, retires generation 1, then exits 0.
    let _ = sockvisor.client(&["upgrade"]);
    let third = sockvisor.report(3);
    assert!(sockvisor.is_running(), "sockvisor ended the service");
    let answer = http_get_tcp(&address).unwrap();
    assert_eq!(
        answering_pid(&answer),
        Some(format!("pid={}", third["pid"]))
    );
}

#[test]
fn without_sockets_sockvisor_exits_with_the_childs_status_by_default() {
    for (script, code) in [("exit 0", 0), ("exit 3", 3), ("kill -USR1 $$", 138)] {
        let dir = TestDir::new("init-default");
        let mut command = std::process::Command::new(sockvisor_bin());
        command.args(["run", "--", "sh", "-c", script]);
        let mut sockvisor = Sockvisor::spawn(dir, command);
        assert_eq!(sockvisor.wait_exit(), code, "{script}");
        assert!(!sockvisor.stderr().contains("; restarting"), "{script}");
    }
}

#[test]
fn always_restarts_even_after_a_clean_exit() {
    let sockvisor = run(
        "always",
        &["--restart", "always", "--restart-delay", "10ms"],
        &["--exit-code", "0", "--faults-until", "1"],
    );
    let second = sockvisor.report(2);
    assert_eq!(second["env"]["SOCKVISOR_GENERATION"], "2");
}

/// The heart of holding sockets: while crashing generations are restarted,
/// a client that connects is queued in the backlog, never refused, and is
/// answered by the first generation that stays up.
#[test]
fn restarts_back_off_and_keep_the_socket_so_clients_wait_instead_of_failing() {
    let sockvisor = run(
        "backoff",
        &[
            "--listen",
            "127.0.0.1:0",
            "--restart-delay",
            "50ms",
            "--restart-delay-max",
            "5s",
        ],
        &["--exit-code", "3", "--faults-until", "3"],
    );
    let address = sockvisor.logged_tcp_address();
    let response = http_get_tcp(&address).expect("connection queued, not refused");
    assert!(body(&response).ends_with("generation=4"), "{response}");
    let log = sockvisor.stderr();
    for delay in [
        "restarting in 50ms",
        "restarting in 100ms",
        "restarting in 200ms",
    ] {
        assert!(log.contains(delay), "missing {delay:?} in:\n{log}");
    }
    let first = sockvisor.report(1);
    let fourth = sockvisor.report(4);
    assert_eq!(
        reported_address(&first, 3),
        reported_address(&fourth, 3),
        "the same socket across restarts"
    );
}

#[test]
fn a_command_that_never_sends_ready_is_restarted_and_told_once_about_ready() {
    // With sockets the default is --ready notify: a command that never
    // sends READY=1 (a shell given in place of the server) is stopped at
    // every ready timeout and started again; the first miss says why.
    let sockvisor = run(
        "never-ready",
        &[
            "--listen",
            "127.0.0.1:0",
            "--ready-timeout",
            "300ms",
            "--restart-delay",
            "10ms",
        ],
        &["--no-ready"],
    );
    sockvisor.wait_for("generation 2 to miss its ready timeout too", || {
        (sockvisor
            .stderr()
            .matches("was not ready within 300ms")
            .count()
            >= 2)
            .then_some(())
    });
    let log = sockvisor.stderr();
    let hints: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("did not send READY=1"))
        .collect();
    assert_eq!(hints.len(), 1, "{log}");
    assert!(hints[0].contains("generation 1 (pid "), "{log}");
    assert!(
        hints[0].contains(
            "did not send READY=1 within 300ms; if this command does not speak sd_notify, \
             pass --ready now or --ready delay=DURATION"
        ),
        "{log}"
    );
}

#[test]
fn graceful_stop_lets_an_in_flight_request_finish() {
    let mut sockvisor = run(
        "inflight",
        &["--listen", "127.0.0.1:0"],
        &["--request-delay-ms", "300"],
    );
    let report = sockvisor.report(1);
    let address = reported_address(&report, 3);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (status_line, mut reader) = read_status_line(stream);
    assert_eq!(status_line, "HTTP/1.1 200 OK\r\n", "request is in flight");
    sockvisor.signal(libc::SIGTERM);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        body(&rest).starts_with(&format!("pid={}", report["pid"])),
        "in-flight request completed: {rest:?}"
    );
    assert_eq!(sockvisor.wait_exit(), 0);
    sockvisor.wait_for_log("SIGTERM received: sending SIGQUIT to every generation");
    let refused = TcpStream::connect(&address).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn sigint_and_sigquit_also_stop_gracefully() {
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGQUIT, "SIGQUIT")] {
        let mut sockvisor = run("stopsigs", &[], &[]);
        sockvisor.report(1);
        sockvisor.signal(signal);
        assert_eq!(sockvisor.wait_exit(), 0, "{name}");
        sockvisor.wait_for_log(&format!("{name} received: sending SIGQUIT"));
    }
}

#[test]
fn a_stopped_child_is_continued_so_a_stop_does_not_wait_for_the_timeout() {
    let mut sockvisor = run("sigstop", &["--stop-timeout", "60s"], &[]);
    let pid = sockvisor.report(1)["pid"].as_i64().unwrap();
    // SAFETY: stopping the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    wait_for("the child to be stopped", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.starts_with('T').then_some(())
    });
    // SIGQUIT alone would stay pending until SIGKILL at 60s; SIGCONT after
    // it lets the child drain now. Exit 0, not 137, shows it was not killed.
    let output = sockvisor.client(&["stop", "--timeout", "20s"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(sockvisor.wait_exit(), 0, "{}", sockvisor.stderr());
}

#[test]
fn a_child_ignoring_the_stop_signal_is_killed_after_the_stop_timeout() {
    let mut sockvisor = run(
        "timeout",
        &["--stop-timeout", "200ms"],
        &["--ignore", "SIGQUIT"],
    );
    sockvisor.report(1);
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 128 + 9, "killed, and says so");
    sockvisor.wait_for_log("not every generation stopped within 200ms; killing what is left");
}

#[test]
fn a_second_stop_request_escalates_at_once() {
    let mut sockvisor = run(
        "escalate",
        &["--stop-timeout", "1h"],
        &["--ignore", "SIGQUIT"],
    );
    sockvisor.report(1);
    sockvisor.signal(libc::SIGTERM);
    sockvisor.wait_for_log("SIGTERM received: sending SIGQUIT");
    sockvisor.signal(libc::SIGINT);
    assert_eq!(sockvisor.wait_exit(), 128 + 9);
    sockvisor.wait_for_log("SIGINT received again: killing every generation now");
}

#[test]
fn the_stop_signal_is_configurable() {
    let mut sockvisor = run(
        "stopsignal",
        &["--stop-signal", "USR1", "--stop-timeout", "300ms"],
        &[],
    );
    sockvisor.report(1);
    sockvisor.signal(libc::SIGTERM);
    let signals = sockvisor.dir.join("1.signals");
    wait_for("the child to receive SIGUSR1", || {
        std::fs::read_to_string(&signals)
            .ok()
            .filter(|s| s.contains("SIGUSR1"))
    });
    // The probe does not stop on SIGUSR1, so the timeout applies.
    assert_eq!(sockvisor.wait_exit(), 128 + 9);
}

#[test]
fn other_signals_are_forwarded_to_the_child() {
    let mut sockvisor = run("forward", &[], &[]);
    sockvisor.report(1);
    let expected = ["SIGUSR1", "SIGWINCH"];
    let signals = sockvisor.dir.join("1.signals");
    for (number, name) in [libc::SIGUSR1, libc::SIGWINCH].into_iter().zip(expected) {
        sockvisor.signal(number);
        wait_for(&format!("the child to receive {name}"), || {
            std::fs::read_to_string(&signals)
                .ok()
                .filter(|s| s.lines().any(|l| l == name))
        });
    }
    assert!(
        sockvisor.is_running(),
        "forwarded signals do not stop sockvisor"
    );
}

#[test]
fn json_log_format_gives_one_json_object_per_line() {
    let mut sockvisor = run(
        "jsonlog",
        &[
            "--log-format",
            "json",
            "--restart",
            "never",
            "--listen",
            "127.0.0.1:0",
        ],
        &["--exit-code", "5"],
    );
    assert_eq!(sockvisor.wait_exit(), 5);
    let log = sockvisor.stderr();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().any(|l| {
        l["level"] == "INFO"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on tcp://127.0.0.1:"))
    }));
}
