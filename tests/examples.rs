//! The example servers in `examples/` work under sockvisor as the README
//! says.

mod common;

use std::process::Command;

use common::*;

#[test]
fn python_example_serves_on_the_inherited_socket_and_stops_cleanly() {
    let dir = TestDir::new("python");
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/server.py");
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--listen", "127.0.0.1:0", "--", "python3", server]);
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let address = sockvisor.logged_tcp_address();
    let started = sockvisor.wait_for_log("generation 1 started: pid ");
    let pid = started.rsplit("pid ").next().unwrap().trim();
    let response = http_get_tcp(&address).expect("served, or queued until served");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert_eq!(body(&response), format!("hello from pid {pid}"));
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}
