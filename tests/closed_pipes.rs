//! A reader that goes away never takes sockvisor down: `sockvisor run …
//! 2>&1 | head -1`, a logger that restarts, `sockvisor status | head -1`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn sockvisor_keeps_serving_after_the_reader_of_its_log_pipe_exits() {
    let dir = TestDir::new("closed-log-pipe");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--listen", "127.0.0.1:0", "--"]);
    command.args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn_with_stderr(dir, command, writer.into());
    // `head -1`: read one line, then go away.
    let mut first = String::new();
    BufReader::new(reader).read_line(&mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    let report = sockvisor.report(1);

    // Every line sockvisor logs from here on meets a closed pipe.
    for generation in 2..=3 {
        let upgrade = sockvisor.client(&["upgrade"]);
        assert!(upgrade.status.success(), "{upgrade:?}");
        assert!(sockvisor.is_running(), "sockvisor died writing its log");
        let answer = http_get_tcp(&reported_address(&report, 3)).unwrap();
        assert_eq!(
            answering_pid(&answer),
            Some(format!("pid={}", sockvisor.report(generation)["pid"]))
        );
    }
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn a_client_whose_output_reader_is_gone_exits_quietly() {
    let sockvisor = Sockvisor::start_with(
        "closed-stdout",
        |_| {},
        &["run", "--ready", "now", "--", "sleep", "60"],
    );
    wait_for("sockvisor to serve", || {
        sockvisor.client(&["status"]).status.success().then_some(())
    });
    for args in [&["status"][..], &["status", "--json"], &["signal", "USR1"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(sockvisor_bin())
            .args(args)
            .env("SOCKVISOR_CONTROL", sockvisor.control_path())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
