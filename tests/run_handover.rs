//! The socket hand-over protocol as the child sees it: fds 3.. in
//! `--listen` order, `LISTEN_PID` equal to the child's pid, names, no leaks,
//! a clean signal state, and every listen kind actually serving.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

use common::*;
use serde_json::Value;

fn fd_info(report: &Value, fd: i64) -> &Value {
    report["fds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fd"].as_i64() == Some(fd))
        .unwrap_or_else(|| panic!("no fd {fd} in {report}"))
}

/// An abstract socket name unique to this test's directory.
fn abstract_name(dir: &TestDir) -> String {
    dir.path.file_name().unwrap().to_string_lossy().into_owned()
}

fn start_with_every_kind() -> Sockvisor {
    let dir = TestDir::new("kinds");
    let unix_path = dir.join("app.sock");
    let abstract_name = format!("unix:@{}", abstract_name(&dir));
    let mut command = std::process::Command::new(sockvisor_bin());
    command.args([
        "run",
        "--listen",
        "127.0.0.1:0,name=http",
        "--listen",
        "tcp://[::1]:0,name=v6",
        "--listen",
        "udp://127.0.0.1:0,name=dns",
        "--listen",
        &format!("unix:{},name=path", unix_path.display()),
        "--listen",
        &format!("{abstract_name},name=abstract"),
        "--",
    ]);
    command.args(Sockvisor::probe_args(&dir.path));
    Sockvisor::spawn(dir, command)
}

#[test]
fn child_gets_listen_pid_equal_to_its_own_pid() {
    let sockvisor = start_with_every_kind();
    let report = sockvisor.report(1);
    assert_eq!(
        report["env"]["LISTEN_PID"].as_str().unwrap(),
        report["pid"].to_string()
    );
    assert_eq!(
        report["listenfd_count"], 5,
        "listenfd accepts the hand-over"
    );
}

#[test]
fn listeners_are_at_fds_3_to_3_plus_n_in_listen_order_and_nothing_else_is_open() {
    let sockvisor = start_with_every_kind();
    let report = sockvisor.report(1);
    assert_eq!(fd_numbers(&report), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(report["env"]["LISTEN_FDS"], "5");
    assert_eq!(report["env"]["LISTEN_FDNAMES"], "http:v6:dns:path:abstract");
    let expected = [
        (3, "Stream", "Inet"),
        (4, "Stream", "Inet6"),
        (5, "Datagram", "Inet"),
        (6, "Stream", "Unix"),
        (7, "Stream", "Unix"),
    ];
    for (fd, kind, family) in expected {
        let info = fd_info(&report, fd);
        assert_eq!(info["socket_type"], kind, "fd {fd}");
        assert_eq!(info["family"], family, "fd {fd}");
        assert_eq!(
            info["nonblocking"], false,
            "fd {fd} is handed over blocking"
        );
        assert_eq!(info["cloexec"], false, "fd {fd}");
        if kind == "Stream" {
            assert_eq!(info["listening"], true, "fd {fd} is in listen() state");
        }
    }
}

/// The probe server is a Rust program, whose runtime ignores SIGPIPE before
/// `main`; `cat` changes nothing, so it shows exactly what `exec` left.
#[test]
fn child_starts_with_empty_signal_mask_and_default_dispositions() {
    let dir = TestDir::new("sigstate");
    let status_file = dir.join("status");
    let script = format!("exec cat /proc/self/status > {}", status_file.display());
    let mut command = std::process::Command::new(sockvisor_bin());
    command.args([
        "run",
        "--restart",
        "never",
        "--listen",
        "127.0.0.1:0",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let mut sockvisor = Sockvisor::spawn(dir, command);
    assert_eq!(sockvisor.wait_exit(), 0);
    let status = std::fs::read_to_string(&status_file).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("SigBlk:"), "0000000000000000", "signal mask is empty");
    assert_eq!(
        field("SigIgn:"),
        "0000000000000000",
        "nothing ignored, SIGPIPE included"
    );
}

#[test]
fn child_runs_in_its_own_process_group() {
    let sockvisor = start_with_every_kind();
    let report = sockvisor.report(1);
    assert_eq!(report["pgid"], report["pid"]);
    assert_eq!(report["ppid"].as_i64(), Some(sockvisor.pid() as i64));
}

#[test]
fn every_listen_kind_serves_requests() {
    let sockvisor = start_with_every_kind();
    let report = sockvisor.report(1);
    let pid_body = format!("pid={} generation=1", report["pid"]);

    let v4 = reported_address(&report, 3);
    assert!(v4.starts_with("127.0.0.1:") && !v4.ends_with(":0"), "{v4}");
    assert_eq!(body(&http_get_tcp(&v4).unwrap()), pid_body);

    let v6 = reported_address(&report, 4);
    assert!(v6.starts_with("[::1]:"), "{v6}");
    assert_eq!(body(&http_get_tcp(&v6).unwrap()), pid_body);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    udp.send_to(b"ping", reported_address(&report, 5)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");

    let path = sockvisor.dir.join("app.sock");
    assert_eq!(
        body(&http_get(UnixStream::connect(&path).unwrap()).unwrap()),
        pid_body
    );

    let name = abstract_name(&sockvisor.dir);
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let stream = UnixStream::connect_addr(&address).unwrap();
    assert_eq!(body(&http_get(stream).unwrap()), pid_body);
}

#[test]
fn port_zero_is_resolved_and_logged() {
    let sockvisor = start_with_every_kind();
    let report = sockvisor.report(1);
    let address = reported_address(&report, 3);
    let line = sockvisor.wait_for_log("listening on tcp://127.0.0.1:");
    assert!(
        line.contains(&format!("tcp://{address} (fd 3, name http)")),
        "{line}"
    );
}

#[test]
fn without_listen_the_child_gets_only_stdio_and_no_listen_variables() {
    let dir = TestDir::new("nolisten");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    assert_eq!(fd_numbers(&report), [0, 1, 2]);
    let env = report["env"].as_object().unwrap();
    assert!(
        env.keys().all(|k| !k.starts_with("LISTEN_")),
        "no LISTEN_* without --listen: {env:?}"
    );
}

#[test]
fn variables_sockvisor_inherited_are_not_passed_on() {
    let dir = TestDir::new("scrub");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .env("LISTEN_FDS", "7")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "a:b:c:d:e:f:g")
        .env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("WATCHDOG_USEC", "1000000")
        .env("WATCHDOG_PID", "1")
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let env = &report["env"];
    assert_eq!(env["LISTEN_FDS"], "1");
    assert_eq!(env["LISTEN_FDNAMES"], "unknown");
    assert_eq!(
        env["LISTEN_PID"].as_str().unwrap(),
        report["pid"].to_string()
    );
    for gone in ["WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(env.get(gone).is_none(), "{gone} must not reach the child");
    }
    let notify = env["NOTIFY_SOCKET"].as_str().unwrap();
    assert!(
        notify != "/run/systemd/notify" && notify.ends_with("/notify-1.sock"),
        "the child gets sockvisor's own notify socket, not the inherited one: {notify}"
    );
}

#[test]
fn descriptors_inherited_by_sockvisor_do_not_leak_into_the_child() {
    let dir = TestDir::new("leak");
    let script = format!(
        "exec 7</dev/null 9>{} ; exec \"$0\" \"$@\"",
        dir.join("junk").display()
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script])
        .arg(sockvisor_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    assert_eq!(fd_numbers(&report), [0, 1, 2, 3]);
}

#[test]
fn ipv6_wildcard_is_dual_stack_unless_v6only() {
    let dir = TestDir::new("dual");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--listen",
            "[::]:0",
            "--listen",
            "[::]:0,v6only",
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let port_of = |fd| {
        reported_address(&report, fd)
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let dual = format!("127.0.0.1:{}", port_of(3));
    assert!(body(&http_get_tcp(&dual).unwrap()).starts_with("pid="));
    let v6only = format!("127.0.0.1:{}", port_of(4));
    let refused = TcpStream::connect(&v6only).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let v6 = format!("[::1]:{}", port_of(4));
    assert!(body(&http_get_tcp(&v6).unwrap()).starts_with("pid="));
}

#[test]
fn unix_socket_gets_the_requested_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("mode");
    let path = dir.join("m.sock");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--listen",
            &format!("unix:{},mode=0600", path.display()),
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn stale_unix_socket_file_is_replaced() {
    let dir = TestDir::new("stale");
    let path = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a closed listener leaves its file behind");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", &format!("unix:{}", path.display()), "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.report(1);
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(body(&response).starts_with("pid="));
}

#[test]
fn no_listen_pid_serves_a_wrapper_that_forks_with_the_listenfd_crate() {
    let dir = TestDir::new("no-listen-pid");
    // `sh -c 'server; true'` forks: the server's pid is not the child's.
    let probe = Sockvisor::probe_args(&dir.path).join(" ");
    let mut command = std::process::Command::new(sockvisor_bin());
    command
        .args(["run", "--no-listen-pid", "--listen", "127.0.0.1:0", "--"])
        .args(["sh", "-c", &format!("{probe}; true")]);
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    assert!(report["env"]["LISTEN_PID"].is_null(), "{report}");
    assert_eq!(report["env"]["LISTEN_FDS"], "1");
    assert_eq!(report["listenfd_count"], 1, "listenfd takes the socket");
    let address = sockvisor.logged_tcp_address();
    wait_for("the wrapped server to answer", || {
        http_get_tcp(&address).ok().and_then(|r| answering_pid(&r))
    });
}

#[test]
fn without_listen_pid_libsystemd_sees_no_sockets_as_documented() {
    let dir = TestDir::new("no-listen-pid-libsystemd");
    let out = dir.join("libsystemd.txt");
    let script = format!(
        "from systemd import daemon; open({:?}, 'w').write(str(len(daemon.listen_fds())))",
        out.display().to_string()
    );
    for (flag, expected) in [(true, "0"), (false, "1")] {
        let mut command = std::process::Command::new(sockvisor_bin());
        command.args(["run", "--restart", "never", "--listen", "127.0.0.1:0"]);
        if flag {
            command.arg("--no-listen-pid");
        }
        let output = command
            .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
            .args(["--", "/usr/bin/python3", "-c", &script])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            expected,
            "--no-listen-pid {flag}"
        );
    }
}

#[test]
fn impossible_socket_activation_variables_are_refused_in_one_line() {
    let dir = TestDir::new("activation-bounds");
    for (fds, names, said) in [
        (
            "18446744073709551615",
            None,
            "is more descriptors than sockvisor can have open",
        ),
        (
            "1000000000000",
            None,
            "is more descriptors than sockvisor can have open",
        ),
        (
            "1",
            Some("bad name"),
            "LISTEN_FDNAMES from the service manager holds the invalid name",
        ),
    ] {
        // LISTEN_PID must be sockvisor's own pid for the variables to count.
        let mut script = format!("LISTEN_PID=$$ LISTEN_FDS={fds} ");
        if let Some(names) = names {
            script += &format!("LISTEN_FDNAMES='{names}' ");
        }
        script += &format!("exec {} run -- /bin/true", sockvisor_bin().display());
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
