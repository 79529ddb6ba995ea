//! Text a child supplies is data: a `STATUS=` carrying terminal escape
//! sequences is shown escaped by `sockvisor status`, and kept as it is
//! (JSON-escaped) by `status --json`.

mod common;

use std::process::Command;

use common::*;

#[test]
fn status_text_with_terminal_escapes_is_shown_escaped_and_kept_in_json() {
    let script = r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\nSTATUS=\x1b]0;PWNED\x07\x1b[2Jhello", os.environ["NOTIFY_SOCKET"])
time.sleep(600)
"#;
    let dir = TestDir::new("escapes");
    let mut command = Command::new(sockvisor_bin());
    command.args(["run", "--ready", "notify", "--", "python3", "-c", script]);
    let sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("generation 1 started");
    let json = wait_for("the status text", || {
        let status = status_json(&sockvisor);
        let text = status["generations"][0]["status"].as_str()?.to_string();
        Some(text)
    });
    assert_eq!(json, "\u{1b}]0;PWNED\u{7}\u{1b}[2Jhello");

    let output = sockvisor.client(&["status"]);
    assert!(output.status.success(), "{output:?}");
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(
        !shown.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw escapes reached the terminal: {shown:?}"
    );
    assert!(
        shown.contains(r#""\u{1b}]0;PWNED\u{7}\u{1b}[2Jhello""#),
        "{shown}"
    );
}
