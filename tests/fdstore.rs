//! The file-descriptor store end to end: a descriptor stored by generation 1
//! with FDSTORE=1 reaches generation 2 with its name and content, as
//! libsystemd's own `sd_listen_fds_with_names` (Debian's python3-systemd,
//! installed by .ci/run) reads it; without `--fdstore-max` nothing is kept.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn run(name: &str, fdstore_max: &str) -> Sockvisor {
    let dir = TestDir::new(name);
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fdstore/server.py");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--fdstore-max", fdstore_max])
        .args(["--listen", "127.0.0.1:0,name=http", "--"])
        .arg("/usr/bin/python3")
        .arg(server)
        .arg(&dir.path);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    sockvisor
}

fn report(sockvisor: &Sockvisor, generation: u32) -> Value {
    let path = sockvisor.dir.join(&format!("fdstore-{generation}.json"));
    wait_for(&format!("generation {generation}'s report"), || {
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()
    })
}

#[test]
fn a_memfd_stored_by_generation_1_reaches_generation_2_with_its_name_and_content() {
    let sockvisor = run("kept", "4");
    let first = report(&sockvisor, 1);
    assert_eq!(first["names"], serde_json::json!(["http"]));
    wait_for("the stored descriptor in status", || {
        let status = status_json(&sockvisor);
        (status["fdstore"]["descriptors"][0]["name"] == "state").then_some(())
    });
    let status = status_json(&sockvisor);
    assert_eq!(status["fdstore"]["descriptors"][0]["type"], "file");
    // The text status lists it too.
    let text = sockvisor.client(&["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("stored descriptors (1 of at most 4):\n  state  file\n"),
        "{text:?}"
    );
    assert!(sockvisor.client(&["upgrade"]).status.success());
    let second = report(&sockvisor, 2);
    assert_eq!(second["names"], serde_json::json!(["http", "state"]));
    assert_eq!(
        second["fds"],
        serde_json::json!([3, 4]),
        "after the listener"
    );
    assert_eq!(second["found"]["state"], "written by generation 1");
    // The store survives a re-exec of sockvisor itself.
    let copy = sockvisor.dir.join("sockvisor-new");
    std::fs::copy(sockvisor_bin(), &copy).unwrap();
    let copy = copy.display().to_string();
    let output = sockvisor.client(&["reexec", "--binary", &copy]);
    assert!(output.status.success(), "{output:?}");
    assert!(sockvisor.client(&["upgrade"]).status.success());
    let third = report(&sockvisor, 3);
    assert_eq!(third["names"], serde_json::json!(["http", "state"]));
    assert_eq!(third["found"]["state"], "written by generation 1");
}

#[test]
fn without_fdstore_max_passed_descriptors_are_closed() {
    let sockvisor = run("disabled", "0");
    report(&sockvisor, 1);
    assert!(sockvisor.client(&["upgrade"]).status.success());
    let second = report(&sockvisor, 2);
    assert_eq!(second["names"], serde_json::json!(["http"]));
    assert_eq!(
        status_json(&sockvisor)["fdstore"]["descriptors"],
        serde_json::json!([])
    );
}

#[test]
fn a_copy_of_a_listening_socket_is_not_stored_beside_it() {
    copy_of_the_listener_is_not_stored("fdstore-listener", false);
}

#[test]
fn without_kcmp_a_copy_of_a_listening_socket_is_not_stored_either() {
    // As under Docker's default seccomp profile, which refuses kcmp(2).
    copy_of_the_listener_is_not_stored("fdstore-listener-no-kcmp", true);
}

fn copy_of_the_listener_is_not_stored(name: &str, without_kcmp: bool) {
    let dir = TestDir::new(name);
    // Stores its listening socket (fd 3) and a pipe in one message, then
    // says it is ready.
    let script = r#"
import os, socket
address = os.environ["NOTIFY_SOCKET"]
read_end, _ = os.pipe()
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.connect(address)
socket.send_fds(notify, [b"FDSTORE=1\nFDNAME=kept"], [3, read_end])
notify.send(b"READY=1")
while True:
    socket.socket(fileno=3).accept()[0].close()
"#;
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--fdstore-max", "4", "--listen", "127.0.0.1:0", "--"])
        .args(["/usr/bin/python3", "-c", script]);
    if without_kcmp {
        command.env("SOCKVISOR_TEST_NO_KCMP", "1");
    }
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("is ready after");
    let stored = sockvisor.wait_for("the pipe in the store", || {
        let status = status_json(&sockvisor);
        let stored = status["fdstore"]["descriptors"].as_array()?.clone();
        (!stored.is_empty()).then_some(stored)
    });
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["type"], "fifo", "{stored:?}");
}
