//! Apps written for einhorn acknowledge startup the way einhorn's Ruby
//! client does: a YAML document, percent-escaped onto one line. Tested with
//! the byte-exact line and with Ruby's own YAML writing the message
//! (`.ci/run` installs Debian's ruby), and a malformed message is refused
//! with a warning that says what was wrong.

mod common;

use std::process::Command;

use common::*;

/// sockvisor with `--fd-env einhorn` running `child`, on one socket.
fn run_einhorn(name: &str, child: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    let mut command = Command::new(sockvisor_bin());
    command
        .args([
            "run",
            "--fd-env",
            "einhorn",
            "--listen",
            "127.0.0.1:0",
            "--",
        ])
        .args(child);
    Sockvisor::spawn(dir, command)
}

fn assert_ready_by_ack(sockvisor: &Sockvisor) {
    let line = sockvisor.wait_for_log("generation 1 (pid");
    assert!(line.contains("is ready"), "{line}");
    sockvisor.wait_for("generation 1 to serve", || {
        (status_json(sockvisor)["current"] == 1).then_some(())
    });
}

#[test]
fn the_byte_exact_ack_of_einhorns_ruby_client_makes_a_worker_ready() {
    let script = r#"
import os, socket, time
line = b"---%0Acommand: worker:ack%0Apid: " + str(os.getpid()).encode() + b"%0A\n"
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
    control.connect(os.environ["EINHORN_SOCK_PATH"])
    control.sendall(line)
time.sleep(600)
"#;
    let sockvisor = run_einhorn("yaml-ack", &["/usr/bin/python3", "-c", script]);
    assert_ready_by_ack(&sockvisor);
}

#[test]
fn an_ack_written_by_rubys_yaml_as_einhorns_transport_does_makes_a_worker_ready() {
    let script = r#"
require "yaml"
require "socket"
message = YAML.dump({"command" => "worker:ack", "pid" => Process.pid})
line = message.gsub(/%|\n/, "%" => "%25", "\n" => "%0A") + "\n"
UNIXSocket.open(ENV.fetch("EINHORN_SOCK_PATH")) { |socket| socket.write(line) }
sleep
"#;
    let ruby = Command::new("ruby").arg("--version").output();
    assert!(
        ruby.is_ok_and(|o| o.status.success()),
        "ruby (Debian package ruby) is needed; .ci/run installs it"
    );
    let sockvisor = run_einhorn("ruby-ack", &["ruby", "-e", script]);
    assert_ready_by_ack(&sockvisor);
}

#[test]
fn a_malformed_einhorn_message_is_refused_with_a_warning_naming_the_fault() {
    let script = r#"
import os, socket, time
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
    control.connect(os.environ["EINHORN_SOCK_PATH"])
    control.sendall(b"---%0Acommand: worker:ack%0Apid: twelve%0A\n")
    print(control.recv(4096).decode(), flush=True)
time.sleep(600)
"#;
    let sockvisor = run_einhorn("bad-ack", &["/usr/bin/python3", "-c", script]);
    let warning = sockvisor.wait_for_log("control request refused");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("worker:ack needs a pid"), "{warning}");
    assert!(warning.contains("twelve"), "{warning}");
    let status = status_json(&sockvisor);
    assert!(status["current"].is_null(), "not ready: {status}");
}
