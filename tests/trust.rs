//! Another local user tries to be believed: a fake control server planted
//! where a victim's client looks for its sockvisor. Runs the victim and the
//! attacker as two unprivileged users (`setpriv`, from util-linux), the way
//! it happens on a shared host.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;

const ATTACKER: u32 = 65534;

/// A uid nobody else on the machine uses, as the victim.
fn victim_uid() -> u32 {
    40_000 + std::process::id() % 10_000
}

/// `command` run as `uid` (and its own gid, no supplementary groups).
fn as_user(uid: u32, program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program)
        .env_remove("SOCKVISOR_CONTROL")
        .env_remove("XDG_RUNTIME_DIR");
    command
}

/// A fake sockvisor, run by the attacker: it answers every request with a
/// success that says generation 1 serves, and a message meant to retitle
/// and clear the victim's terminal.
struct FakeServer {
    child: Child,
}

impl FakeServer {
    fn start(socket: &Path) -> FakeServer {
        let ready = socket.with_extension("ready");
        let script = format!(
            r#"
import json, os, socket
path = {socket:?}
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(16)
open({ready:?}, "w").close()
status = {{"pid": 1, "current": 1, "stopping": False, "listeners": [],
          "generations": [{{"generation": 1, "pid": 1, "state": "ready", "age_ms": 1}}]}}
reply = {{"type": "result", "ok": True, "message": "\u001b]0;PWNED\u0007\u001b[2J", "status": status}}
while True:
    client, _ = server.accept()
    client.recv(65536)
    client.sendall(json.dumps(reply).encode() + b"\n")
    client.close()
"#,
            socket = socket.display().to_string(),
            ready = ready.display().to_string(),
        );
        let child = as_user(ATTACKER, Path::new("/usr/bin/python3"))
            .args(["-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the fake server (setpriv and python3 are needed)");
        let fake = FakeServer { child };
        wait_for("the fake server to listen", || ready.exists().then_some(()));
        fake
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed at the end even though another user owns it.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn victim_client(args: &[&str]) -> Output {
    as_user(victim_uid(), &sockvisor_bin())
        .args(args)
        .output()
        .unwrap()
}

fn assert_refused_untrusted(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(stderr.contains("refusing control socket"), "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(
        !stderr.contains("PWNED") && output.stdout.is_empty(),
        "{output:?}"
    );
}

#[test]
fn clients_refuse_a_server_planted_in_their_runtime_directory_by_another_user() {
    // The victim has no XDG_RUNTIME_DIR: its clients look in /tmp.
    let base = PathBuf::from(format!("/tmp/sockvisor-{}", victim_uid()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir(&base).unwrap();
    let planted = Planted(base.clone());
    chown(&planted.0, Some(ATTACKER), Some(ATTACKER)).unwrap();
    let _fake = FakeServer::start(&base.join("default.sock"));

    for verb in [&["status"][..], &["stop"], &["upgrade"]] {
        assert_refused_untrusted(&victim_client(verb), &format!("belongs to uid {ATTACKER}"));
    }
    let check = victim_client(&["status", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        check.stdout.is_empty() && check.stderr.is_empty(),
        "{check:?}"
    );
    let verbose = victim_client(&["status", "--check", "--verbose"]);
    let stdout = String::from_utf8_lossy(&verbose.stdout);
    assert!(
        stdout.starts_with("not serving: refusing control socket"),
        "{stdout}"
    );
}

#[test]
fn clients_refuse_a_server_of_another_user_in_a_shared_sticky_directory() {
    let dir = TestDir::new("sticky");
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = dir.join("app.sock");
    let _fake = FakeServer::start(&socket);
    let control = socket.display().to_string();
    assert_refused_untrusted(
        &victim_client(&["status", "--control", &control]),
        &format!("runs as uid {ATTACKER}"),
    );
}

#[test]
fn a_planted_runtime_directory_does_not_stop_run_with_an_explicit_control_socket() {
    let base = PathBuf::from(format!("/tmp/sockvisor-{}", victim_uid() + 1));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir(&base).unwrap();
    let _planted = Planted(base.clone());
    chown(&base, Some(ATTACKER), Some(ATTACKER)).unwrap();

    let dir = TestDir::new("planted-run");
    chown(&dir.path, Some(victim_uid() + 1), Some(victim_uid() + 1)).unwrap();
    let control = dir.join("app.sock").display().to_string();
    let mut command = as_user(victim_uid() + 1, &sockvisor_bin());
    command.args(["run", "--control", &control, "--", "sleep", "60"]);
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("notify sockets go to a new directory");
    let status = as_user(victim_uid() + 1, &sockvisor_bin())
        .args(["status", "--control", &control])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
}

#[test]
fn a_runtime_directory_the_user_cannot_make_is_named_with_the_fix() {
    let dir = TestDir::new("runtime-unusable");
    // Root's, mode 0700: the victim can make nothing in it.
    let locked = dir.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let output = as_user(victim_uid(), &sockvisor_bin())
        .env("XDG_RUNTIME_DIR", &locked)
        .args(["run", "--restart", "never", "--", "/bin/true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot use runtime directory {}",
            locked.join("sockvisor").display()
        )) && stderr.contains(
            "set XDG_RUNTIME_DIR to a directory of your own, or give --control PATH in one"
        ),
        "{stderr}"
    );
}

#[test]
fn only_root_can_use_user_whatever_the_user_given() {
    for user in ["nobody", "4294967295", &victim_uid().to_string()] {
        let output = as_user(victim_uid(), &sockvisor_bin())
            .args(["run", "--user", user, "--", "/bin/true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("only root can use --user"), "{stderr}");
    }
}
