//! sockvisor under systemd: socket activation passthrough, its own
//! Type=notify readiness around upgrades and stops, and the example units.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::*;

#[test]
fn sockets_from_socket_activation_are_passed_on_with_their_names() {
    let dir = TestDir::new("activation");
    let port = free_port();
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web"])
        .arg("-E")
        .arg(format!(
            "SOCKVISOR_CONTROL={}",
            dir.join("control.sock").display()
        ))
        .arg(sockvisor_bin())
        .args(["run", "--listen", "127.0.0.1:0,name=extra", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log(&format!("Listening on 127.0.0.1:{port} as 3"));
    // systemd-socket-activate starts sockvisor on the first connection.
    let answer = http_get_tcp(&format!("127.0.0.1:{port}")).unwrap();
    let report = sockvisor.report(1);
    assert_eq!(body(&answer), format!("pid={} generation=1", report["pid"]));
    assert_eq!(report["env"]["LISTEN_FDS"], "2");
    assert_eq!(report["env"]["LISTEN_FDNAMES"], "web:extra");
    assert_eq!(reported_address(&report, 3), format!("127.0.0.1:{port}"));
    sockvisor.wait_for_log(&format!(
        "listening on tcp://127.0.0.1:{port} (fd 3, name web)"
    ));
}

/// Reads the next datagram sent to the fake service manager.
fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sockvisor_reports_ready_reloading_and_stopping_to_its_service_manager() {
    let dir = TestDir::new("typenotify");
    let manager = UnixDatagram::bind(dir.join("systemd-notify.sock")).unwrap();
    manager.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut command = Command::new(sockvisor_bin());
    command
        .env("NOTIFY_SOCKET", dir.join("systemd-notify.sock"))
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);

    let mut ready = next_message(&manager);
    while !ready.contains("READY=1") {
        ready = next_message(&manager);
    }
    assert!(ready.contains("STATUS=generation 1 serving"), "{ready}");

    assert!(sockvisor.client(&["upgrade"]).status.success());
    let reloading = next_message(&manager);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready_again = next_message(&manager);
    assert!(ready_again.starts_with("READY=1"), "{ready_again}");
    assert!(
        ready_again.contains("STATUS=generation 2 serving"),
        "{ready_again}"
    );

    sockvisor.signal(libc::SIGTERM);
    let stopping = next_message(&manager);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert_eq!(sockvisor.wait_exit(), 0);
    // The child got sockvisor's own notify socket, never the manager's.
    let report = sockvisor.report(1);
    assert!(
        report["env"]["NOTIFY_SOCKET"]
            .as_str()
            .unwrap()
            .ends_with("notify-1.sock")
    );
}

#[test]
fn the_example_units_pass_systemd_analyze_verify() {
    let dir = TestDir::new("units");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd");
    // verify wants the executables to exist: point them at real ones.
    let service = std::fs::read_to_string(source.join("myapp.service"))
        .unwrap()
        .replace("/usr/bin/sockvisor", &sockvisor_bin().display().to_string())
        .replace("/usr/local/bin/myapp", "/bin/true");
    std::fs::write(dir.join("myapp.service"), service).unwrap();
    std::fs::copy(source.join("myapp.socket"), dir.join("myapp.socket")).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("myapp.socket"))
        .arg(dir.join("myapp.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // verify exits 0 even for unparsable settings; it only says so.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze complains:\n{stderr}"
    );
}

#[test]
fn a_service_manager_that_never_reads_its_socket_does_not_stop_sockvisor() {
    let dir = TestDir::new("deaf-manager");
    // Bound, never read: its queue fills after a few messages.
    let _manager = UnixDatagram::bind(dir.join("deaf.sock")).unwrap();
    let mut command = Command::new(sockvisor_bin());
    command
        .env("NOTIFY_SOCKET", dir.join("deaf.sock"))
        // A watchdog far too short to keep: sockvisor pings every 10 ms
        // (not without pause), and each ping finds the queue full.
        .env("WATCHDOG_USEC", "1")
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    for _ in 0..6 {
        let upgrade = sockvisor.client(&["upgrade", "--timeout", "20s"]);
        assert!(upgrade.status.success(), "{upgrade:?}");
    }
    let before = cpu_ticks(sockvisor.pid());
    let window = std::time::Instant::now();
    while window.elapsed() < std::time::Duration::from_millis(500) {
        assert!(sockvisor.client(&["status"]).status.success());
    }
    let used = cpu_ticks(sockvisor.pid()) - before;
    assert!(used < 25, "sockvisor used {used} ticks in 0.5 s");
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}
