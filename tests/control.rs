//! The control socket under abuse: garbage, endless lines, idle and
//! vanishing clients, foreign users, and a second sockvisor with the same
//! name. In every case the supervisor carries on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;

use common::*;
use serde_json::Value;

fn run(name: &str) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 (pid");
    sockvisor
}

/// Sends raw bytes and returns every reply line until the server closes.
fn exchange(sockvisor: &Sockvisor, bytes: &[u8]) -> Vec<Value> {
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The server may close before taking everything; that is its answer.
    let _ = stream.write_all(bytes);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_refused(replies: &[Value], kind: &str, needle: &str) {
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["type"], "result");
    assert_eq!(replies[0]["ok"], false);
    assert_eq!(replies[0]["error"], kind, "{replies:?}");
    assert!(
        replies[0]["message"].as_str().unwrap().contains(needle),
        "{replies:?}"
    );
}

#[test]
fn garbage_gets_an_error_reply_and_the_connection_is_closed() {
    let sockvisor = run("garbage");
    assert_refused(
        &exchange(&sockvisor, b"hello there\n"),
        "bad_request",
        "invalid JSON",
    );
    assert_refused(
        &exchange(&sockvisor, b"[1,2]\n"),
        "unsupported_version",
        "version",
    );
    assert_refused(
        &exchange(&sockvisor, b"{not json\n"),
        "bad_request",
        "invalid JSON",
    );
    assert_refused(
        &exchange(&sockvisor, b"{\"version\":1,\"command\":\"explode\"}\n"),
        "bad_request",
        "commands: upgrade, status, stop, signal",
    );
    assert_refused(
        &exchange(&sockvisor, b"{\"version\":9,\"command\":\"status\"}\n"),
        "unsupported_version",
        "speaks version 1",
    );
    assert!(status_json(&sockvisor)["current"] == 1, "still serving");
}

#[test]
fn an_endless_line_is_cut_off_with_an_error() {
    let sockvisor = run("endless");
    let huge = vec![b'x'; 200 * 1024];
    assert_refused(
        &exchange(&sockvisor, &huge),
        "bad_request",
        "longer than 65536 bytes",
    );
    assert!(status_json(&sockvisor)["current"] == 1);
}

#[test]
fn idle_connections_do_not_block_other_clients() {
    let sockvisor = run("idle");
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(sockvisor.control_path()).unwrap())
        .collect();
    let output = sockvisor.client(&["upgrade", "--timeout", "20s"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(status_json(&sockvisor)["current"], 2);
    drop(idle);
}

#[test]
fn a_client_disconnecting_mid_upgrade_does_not_cancel_it() {
    let sockvisor = run("vanish");
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"{\"version\":1,\"command\":\"upgrade\"}\n")
        .unwrap();
    let mut first = String::new();
    BufReader::new(&stream).read_line(&mut first).unwrap();
    assert!(first.contains("generation 2 started"), "{first}");
    drop(stream);
    let status = wait_for("the upgrade to finish anyway", || {
        let status = status_json(&sockvisor);
        (status["last_upgrade"]["ok"] == true).then_some(status)
    });
    assert_eq!(status["current"], 2);
}

#[test]
fn the_control_socket_is_owner_only() {
    let sockvisor = run("mode");
    let mode = std::fs::metadata(sockvisor.control_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn status_as_nobody(sockvisor: &Sockvisor) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(sockvisor_bin())
        .args(["status", "--control"])
        .arg(sockvisor.control_path())
        .output()
        .unwrap()
}

#[test]
fn another_user_is_refused() {
    let sockvisor = run("nobody");
    // The file mode stops other users first.
    let output = status_as_nobody(&sockvisor);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ermission denied"));
    // Even with the file opened up, the peer's credentials are checked.
    std::fs::set_permissions(&sockvisor.dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        sockvisor.control_path(),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let output = status_as_nobody(&sockvisor);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("uid 65534 may not control this sockvisor"),
        "{stderr}"
    );
    sockvisor.wait_for_log("control connection refused");
    assert_eq!(status_json(&sockvisor)["current"], 1, "root still may");
}

#[test]
fn a_second_sockvisor_with_the_same_control_socket_refuses_to_start() {
    let first = run("twice");
    let output = Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", first.control_path())
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another sockvisor is running with control socket"),
        "{stderr}"
    );
    assert!(stderr.contains("--name"), "{stderr}");
    assert_eq!(
        status_json(&first)["current"],
        1,
        "the first one is unharmed"
    );
}

#[test]
fn a_stale_control_socket_from_a_crashed_run_is_replaced() {
    let dir = TestDir::new("stalecontrol");
    let path = dir.join("control.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 (pid");
    assert_eq!(status_json(&sockvisor)["current"], 1);
}

#[test]
fn a_client_with_no_sockvisor_to_talk_to_says_so() {
    let dir = TestDir::new("nobodyhome");
    let output = Command::new(sockvisor_bin())
        .args(["upgrade", "--control"])
        .arg(dir.join("none.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr.contains("cannot reach sockvisor at"), "{stderr}");
    assert!(stderr.contains("is sockvisor running?"), "{stderr}");
}

#[test]
fn a_request_from_a_client_that_closes_at_once_is_still_carried_out() {
    let sockvisor = run("sendclose");
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream
        .write_all(b"{\"version\":1,\"command\":\"upgrade\"}\n")
        .unwrap();
    drop(stream);
    wait_for("the upgrade to happen anyway", || {
        (status_json(&sockvisor)["current"] == 2).then_some(())
    });
}

#[test]
fn a_client_that_half_closes_still_gets_its_reply() {
    let sockvisor = run("halfclose");
    // The end of the stream ends the request's line too.
    for request in [
        &b"{\"version\":1,\"command\":\"status\"}\n"[..],
        &b"{\"version\":1,\"command\":\"status\"}"[..],
    ] {
        let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let reply = last_reply(&mut stream);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["status"]["current"], 1);
    }
}

#[test]
fn status_check_is_a_quiet_health_probe() {
    let sockvisor = run("check");
    wait_for("generation 1 to serve", || {
        (status_json(&sockvisor)["current"] == 1).then_some(())
    });
    let output = sockvisor.client(&["status", "--check"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{output:?}"
    );
    let output = sockvisor.client(&["status", "--check", "--verbose"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "generation 1 serving\n"
    );
    // Nobody at the path: not healthy, and still quiet.
    let output = Command::new(sockvisor_bin())
        .args(["status", "--check", "--control"])
        .arg(sockvisor.dir.join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{output:?}"
    );
}

#[test]
fn status_check_fails_while_no_generation_is_ready() {
    let dir = TestDir::new("check-starting");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path))
        .arg("--no-ready");
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    let output = sockvisor.client(&["status", "--check", "--verbose"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "not serving: no generation is serving\n"
    );
}

/// Opens `count` connections that never send a request, and waits until
/// sockvisor has accepted them all.
fn idle_clients(sockvisor: &Sockvisor, count: usize) -> Vec<UnixStream> {
    (0..count)
        .map(|_| UnixStream::connect(sockvisor.control_path()).unwrap())
        .collect()
}

#[test]
fn status_check_says_serving_however_many_idle_clients_are_connected() {
    let sockvisor = run("check-crowded");
    wait_for("generation 1 to serve", || {
        (status_json(&sockvisor)["current"] == 1).then_some(())
    });
    let idle = idle_clients(&sockvisor, 100);
    for _ in 0..3 {
        let output = sockvisor.client(&["status", "--check", "--verbose"]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "generation 1 serving\n"
        );
        let output = sockvisor.client(&["status"]);
        assert!(output.status.success(), "{output:?}");
    }
    drop(idle);
}

#[test]
fn out_of_descriptors_the_loop_rests_and_recovers_when_clients_leave() {
    let dir = TestDir::new("emfile");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    limit_open_files(&mut command, 30, 30);
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let idle = idle_clients(&sockvisor, 40);
    sockvisor.wait_for_log("out of file descriptors");

    // A busy loop would use about a core; resting, it uses next to none.
    let before = cpu_ticks(sockvisor.pid());
    let window = std::time::Instant::now();
    while window.elapsed() < std::time::Duration::from_millis(500) {
        // The server is not harmed meanwhile.
        assert!(http_get_tcp(&reported_address(&report, 3)).is_ok());
    }
    let used = cpu_ticks(sockvisor.pid()) - before;
    assert!(
        used < 15,
        "sockvisor used {used} ticks in 0.5 s with no descriptor left"
    );
    // A client is told why, not cut off.
    let output = sockvisor.client(&["status"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "sockvisor is out of file descriptors and cannot take this request; raise its open-file limit"
        ),
        "{output:?}"
    );

    drop(idle);
    wait_for("control to answer again", || {
        sockvisor.client(&["status"]).status.success().then_some(())
    });
    let warnings = sockvisor
        .stderr()
        .matches("out of file descriptors")
        .count();
    assert_eq!(warnings, 1, "{}", sockvisor.stderr());
}

#[test]
fn sockvisor_starts_and_serves_with_a_small_descriptor_limit() {
    let dir = TestDir::new("few-fds");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    limit_open_files(&mut command, 20, 20);
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    assert!(http_get_tcp(&reported_address(&report, 3)).is_ok());
    assert!(sockvisor.client(&["upgrade"]).status.success());
}

/// A status request written on a new connection, before its answer is
/// read.
fn send_status(sockvisor: &Sockvisor) -> UnixStream {
    let mut stream = UnixStream::connect(sockvisor.control_path()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"{\"version\":1,\"command\":\"status\"}\n")
        .unwrap();
    stream
}

/// The last line the server wrote before it closed, as JSON.
fn last_reply(stream: &mut UnixStream) -> Value {
    let mut text = String::new();
    let read = stream.read_to_string(&mut text);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{read:?}: {text:?}"))
}

#[test]
fn a_burst_of_requests_is_answered_while_idle_clients_hold_every_place() {
    let sockvisor = run("burst");
    let mut idle = idle_clients(&sockvisor, 64);
    wait_for("the idle clients to be taken", || {
        status_json(&sockvisor)["current"].is_number().then_some(())
    });
    // Stopped, sockvisor leaves every request in the queue: once it
    // resumes, it takes all of them in one go, more than it has places for.
    sockvisor.signal(libc::SIGSTOP);
    let mut burst: Vec<UnixStream> = (0..100).map(|_| send_status(&sockvisor)).collect();
    sockvisor.signal(libc::SIGCONT);
    for (n, stream) in burst.iter_mut().enumerate() {
        let reply = last_reply(stream);
        assert_eq!(reply["type"], "result", "request {n}: {reply}");
        assert_eq!(reply["ok"], true, "request {n}: {reply}");
    }
    // The idle clients closed to make room were told why, not cut off.
    let mut told = 0;
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let mut text = String::new();
        match stream.read_to_string(&mut text) {
            Ok(_) => {
                assert!(
                    text.contains("closed to make room for a newer control client"),
                    "{text:?}"
                );
                told += 1;
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
    assert!(told > 0, "no idle client made room");
}

#[test]
fn status_and_signal_give_up_on_a_sockvisor_that_does_not_answer() {
    let sockvisor = run("frozen");
    sockvisor.signal(libc::SIGSTOP);
    let status = sockvisor.client(&["status", "--timeout", "200ms"]);
    let signal = sockvisor.client(&["signal", "USR1", "--timeout", "200ms"]);
    sockvisor.signal(libc::SIGCONT);
    for (output, verb, still) in [
        (status, "status", ""),
        (signal, "signal", "; it may still carry the request out"),
    ] {
        assert_eq!(output.status.code(), Some(5), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            format!(
                "sockvisor: no answer to the {verb} request within 200ms: sockvisor is not answering its control socket (stopped with SIGSTOP, or overloaded?){still}\n"
            )
        );
    }
    assert!(sockvisor.client(&["status"]).status.success());
}

#[test]
fn a_control_path_that_is_no_socket_or_too_long_is_named_as_such() {
    let dir = TestDir::new("not-a-socket");
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let too_long = dir.join(&"a".repeat(120));
    let cases = [
        (
            file.clone(),
            format!(
                "{} is not a control socket: it is a regular file",
                file.display()
            ),
        ),
        (
            dir.path.clone(),
            format!(
                "{} is not a control socket: it is a directory",
                dir.path.display()
            ),
        ),
        (
            too_long.clone(),
            format!(
                "control socket path {} is {} bytes long; a Unix socket path holds at most 107",
                too_long.display(),
                too_long.as_os_str().len()
            ),
        ),
    ];
    for (path, said) in cases {
        let output = Command::new(sockvisor_bin())
            .arg("status")
            .arg("--control")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("sockvisor: {said}")),
            "{stderr}"
        );
    }
}

#[test]
fn an_empty_sockvisor_control_variable_counts_as_unset() {
    let name = format!("no-such-instance-{}", std::process::id());
    let output = Command::new(sockvisor_bin())
        .args(["status", "--name", &name])
        .env("SOCKVISOR_CONTROL", "")
        .output()
        .unwrap();
    // The name decides, as with the variable unset: nothing runs under it.
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("{name}.sock")),
        "{output:?}"
    );
}
