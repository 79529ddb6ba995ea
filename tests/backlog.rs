//! Every listen kind opens and serves with the default backlog and with a
//! backlog above the C library's `SOMAXCONN` (128 on musl, 4096 on glibc),
//! which the kernel caps at `net.core.somaxconn` itself. CI runs this file
//! against the static musl binary too (`SOCKVISOR_TEST_BIN`), the build
//! the Docker image ships.

mod common;

use std::net::UdpSocket;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};

use common::*;

/// Starts sockvisor with a TCP, a UDP, a unix path and an abstract unix
/// listener, each with `option` appended to its stream specs, and checks
/// that each one answers.
fn every_kind_serves(test: &str, option: &str) {
    let dir = TestDir::new(test);
    let unix_path = dir.join("app.sock");
    let abstract_name = dir.path.file_name().unwrap().to_string_lossy().into_owned();
    let mut command = std::process::Command::new(sockvisor_bin());
    command.args([
        "run",
        "--listen",
        &format!("127.0.0.1:0{option}"),
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &format!("unix:{}{option}", unix_path.display()),
        "--listen",
        &format!("unix:@{abstract_name}{option}"),
        "--",
    ]);
    command.args(Sockvisor::probe_args(&dir.path));
    let sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let pid_body = format!("pid={} generation=1", report["pid"]);

    let tcp = reported_address(&report, 3);
    assert_eq!(body(&http_get_tcp(&tcp).unwrap()), pid_body);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    udp.send_to(b"ping", reported_address(&report, 4)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");

    let stream = UnixStream::connect(&unix_path).unwrap();
    assert_eq!(body(&http_get(stream).unwrap()), pid_body);

    let address = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
    let stream = UnixStream::connect_addr(&address).unwrap();
    assert_eq!(body(&http_get(stream).unwrap()), pid_body);
}

#[test]
fn every_listen_kind_serves_with_the_default_backlog() {
    every_kind_serves("default-backlog", "");
}

#[test]
fn a_backlog_above_the_c_librarys_somaxconn_is_left_to_the_kernel() {
    every_kind_serves("large-backlog", ",backlog=65535");
}

#[test]
fn the_largest_backlog_is_accepted_and_one_more_is_a_usage_error() {
    let dir = TestDir::new("max-backlog");
    let too_large = std::process::Command::new(sockvisor_bin())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0,backlog=2147483648",
            "--",
            "true",
        ])
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .output()
        .unwrap();
    assert_eq!(too_large.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&too_large.stderr);
    assert!(stderr.contains("backlog '2147483648'"), "{stderr}");
    assert!(stderr.contains("2147483647"), "{stderr}");
    every_kind_serves("max-backlog-serves", ",backlog=2147483647");
}
