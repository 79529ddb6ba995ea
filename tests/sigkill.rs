//! What happens when sockvisor itself is killed with SIGKILL: its
//! generations receive their parent-death signal (SIGKILL) and die, so the
//! port is free and a restarted sockvisor binds it again. (Replacing the
//! stale control socket it leaves is tested in `control.rs`.)

mod common;

use std::process::Command;

use common::*;

#[test]
fn after_sockvisor_is_killed_its_children_die_and_a_new_sockvisor_takes_the_port() {
    let dir = TestDir::new("sigkill");
    let control = dir.join("control.sock");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut first = Sockvisor::spawn(dir, command);
    let address = first.logged_tcp_address();
    let child = first.report(1)["pid"].as_i64().unwrap();
    assert!(body(&http_get_tcp(&address).unwrap()).starts_with("pid="));

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    wait_for("the orphaned generation to die", || {
        (!process_alive(child)).then_some(())
    });
    assert!(
        control.exists(),
        "a SIGKILLed sockvisor leaves its socket behind"
    );

    // The kernel finishes tearing down the connections the dead server
    // had (FIN_WAIT2 still holds the port) a moment after it dies.
    wait_for("the port to be free again", || {
        std::net::TcpListener::bind(&address).ok().map(drop)
    });

    let second_dir = TestDir::new("sigkill-again");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", &address, "--"])
        .args(Sockvisor::probe_args(&second_dir.path));
    let mut second = Sockvisor::spawn(second_dir, command);
    if let Some(code) = wait_for("the second sockvisor to start or fail", || {
        let path = second.dir.join("1.json");
        if path.exists() {
            return Some(None);
        }
        second.try_status().map(|status| Some(status.code()))
    }) {
        panic!("the second sockvisor exited {code:?}: {}", second.stderr());
    }
    let report = second.report(1);
    let answer = http_get_tcp(&address).unwrap();
    assert_eq!(body(&answer), format!("pid={} generation=1", report["pid"]));
}
