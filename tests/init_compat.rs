//! Init mode (no sockets) against the expectations of tini's and
//! dumb-init's own test suites, written here as tests: the child's exit
//! status is sockvisor's, death by a signal is 128 + the signal, a program
//! that cannot be executed is a non-zero exit naming it, and nothing of the
//! child's process group outlives it.

mod common;

use std::process::{Command, Output};

use common::*;

fn init(script: &str) -> Output {
    let dir = TestDir::new("init-compat");
    Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .args(["run", "--", "sh", "-c", script])
        .output()
        .unwrap()
}

#[test]
fn the_childs_exit_status_is_sockvisors() {
    for status in [0, 1, 2, 32, 64, 127, 254, 255] {
        let output = init(&format!("exit {status}"));
        assert_eq!(output.status.code(), Some(status), "{output:?}");
    }
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_the_signal() {
    for signal in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGUSR1,
    ] {
        let output = init(&format!("kill -{signal} $$"));
        assert_eq!(output.status.code(), Some(128 + signal), "{output:?}");
    }
}

#[test]
fn a_program_that_cannot_be_executed_is_a_non_zero_exit_naming_it() {
    let dir = TestDir::new("bad-exec");
    let output = Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .args(["run", "--", "/doesnotexist"])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/doesnotexist"), "{stderr}");
}

#[test]
fn what_the_child_left_in_its_process_group_dies_with_it() {
    let dir = TestDir::new("leftovers");
    let pidfile = dir.join("background.pid");
    let script = format!("sleep 600 & echo $! > {}; exit 0", pidfile.display());
    let output = init(&script);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let pid: i64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the background sleep to be gone", || {
        (!process_alive(pid)).then_some(())
    });
}
