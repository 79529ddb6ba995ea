//! Paths a user names (`--control`, `--pidfile`, unix `--listen`) and what
//! is beside them are never removed or replaced unless sockvisor provably
//! created them. Each case puts a user's data where sockvisor might have
//! touched it and checks that it is intact afterwards.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs `sockvisor run <options> --restart never -- true` to completion.
fn run_true(dir: &TestDir, options: &[&str]) -> Output {
    Command::new(sockvisor_bin())
        .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
        .arg("run")
        .args(options)
        .args(["--restart", "never", "--", "true"])
        .output()
        .unwrap()
}

/// One line on stderr containing every needle, and exit status 1.
fn assert_refused(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr:?}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing: {stderr:?}");
    }
}

fn control_arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn control_at_a_regular_file_is_refused_and_the_file_kept() {
    let dir = TestDir::new("ctl-file");
    let path = dir.join("notasocket");
    fs::write(&path, "precious\n").unwrap();
    let output = run_true(&dir, &["--control", &control_arg(&path)]);
    assert_refused(&output, &["notasocket", "a regular file, not a socket"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn control_at_a_directory_is_refused_and_its_contents_kept() {
    let dir = TestDir::new("ctl-dir");
    let path = dir.join("app");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("data.conf"), "x").unwrap();
    let output = run_true(&dir, &["--control", &control_arg(&path)]);
    assert_refused(&output, &["a directory, not a socket"]);
    assert_eq!(fs::read_to_string(path.join("data.conf")).unwrap(), "x");
}

#[test]
fn control_at_a_symlink_is_refused_and_link_and_target_kept() {
    let dir = TestDir::new("ctl-link");
    let target = dir.join("hosts");
    fs::write(&target, "127.0.0.1 localhost\n").unwrap();
    let link = dir.join("control-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = run_true(&dir, &["--control", &control_arg(&link)]);
    assert_refused(&output, &["a symbolic link, not a socket"]);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "127.0.0.1 localhost\n"
    );
}

#[test]
fn a_directory_beside_the_control_socket_is_never_touched() {
    let dir = TestDir::new("ctl-beside");
    let control = dir.join("app");
    let users = dir.join("app.d");
    fs::create_dir(&users).unwrap();
    fs::write(users.join("data.conf"), "x").unwrap();
    let output = run_true(&dir, &["--control", &control_arg(&control)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(fs::read_to_string(users.join("data.conf")).unwrap(), "x");
    assert_eq!(fs::read_dir(&users).unwrap().count(), 1);
    assert!(
        fs::symlink_metadata(&control).is_err(),
        "the control socket sockvisor created is removed at exit"
    );
}

#[test]
fn a_stale_control_socket_is_replaced() {
    let dir = TestDir::new("ctl-stale");
    let control = dir.join("ctl.sock");
    drop(std::os::unix::net::UnixListener::bind(&control).unwrap());
    let output = run_true(&dir, &["--control", &control_arg(&control)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(fs::symlink_metadata(&control).is_err());
}

#[test]
fn pidfile_at_a_file_with_other_contents_is_refused_and_kept() {
    let dir = TestDir::new("pid-file");
    let path = dir.join("hosts");
    fs::write(&path, "127.0.0.1 localhost\n").unwrap();
    let output = run_true(&dir, &["--pidfile", &control_arg(&path)]);
    assert_refused(&output, &["--pidfile", "not a pidfile"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "127.0.0.1 localhost\n");
}

#[test]
fn a_stale_pidfile_is_replaced_and_a_neighbour_kept() {
    let dir = TestDir::new("pid-stale");
    let path = dir.join("app.pid");
    let mut gone = Command::new("true").spawn().unwrap();
    let stale_pid = gone.id();
    gone.wait().unwrap();
    fs::write(&path, format!("{stale_pid}\n")).unwrap();
    let neighbour = dir.join("app.pid.tmp");
    fs::write(&neighbour, "precious").unwrap();
    let output = run_true(&dir, &["--pidfile", &control_arg(&path)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(!path.exists(), "sockvisor's own pidfile is removed at exit");
    assert_eq!(fs::read_to_string(&neighbour).unwrap(), "precious");
}

#[test]
fn a_unix_listen_path_at_a_regular_file_is_refused_and_kept() {
    let dir = TestDir::new("listen-file");
    let path = dir.join("app.sock");
    fs::write(&path, "precious\n").unwrap();
    let spec = format!("unix:{}", path.display());
    let output = run_true(&dir, &["--listen", &spec]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("a regular file, not a socket"), "{stderr}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn notify_sockets_live_in_sockvisors_own_directory_removed_at_exit() {
    let dir = TestDir::new("notify-dir");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0", "--"])
        .args(Sockvisor::probe_args(&dir.path));
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let notify = report["env"]["NOTIFY_SOCKET"].as_str().unwrap().to_string();
    let notify_dir = Path::new(&notify).parent().unwrap().to_path_buf();
    let control = sockvisor.control_path();
    assert!(
        !notify_dir.starts_with(control.parent().unwrap()),
        "notify sockets are not put beside the user's control path: {notify}"
    );
    let name = notify_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&format!("notify.{}.", sockvisor.pid())),
        "{name}"
    );
    sockvisor.signal(libc::SIGTERM);
    assert_eq!(sockvisor.wait_exit(), 0);
    assert!(!notify_dir.exists(), "{} left behind", notify_dir.display());
}

/// An attacker who can write the directory of a unix listener swaps the
/// freshly bound socket for a symbolic link to a file of sockvisor's user,
/// as fast as it can. sockvisor gives the socket its mode when it creates
/// it and never changes a mode by path afterwards, so the file keeps its
/// mode however the race falls.
#[test]
fn a_symlink_swapped_in_for_a_new_socket_never_gets_the_sockets_mode() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = TestDir::new("symlink-swap");
    let secret = dir.join("secret");
    fs::write(&secret, "private").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let socket = dir.join("app.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, socket, secret) = (Arc::clone(&stop), socket.clone(), secret.clone());
        let link = dir.join("link.tmp");
        let moved = dir.join("moved.sock");
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let is_socket =
                    fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
                if is_socket && fs::rename(&socket, &moved).is_ok() {
                    let _ = std::os::unix::fs::symlink(&secret, &link);
                    let _ = fs::rename(&link, &socket);
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let listen = format!("unix:{},mode=0666", socket.display());
    for _ in 0..1000 {
        let _ = fs::remove_file(&socket);
        let output = run_true(&dir, &["--listen", &listen]);
        assert!(
            output.status.code().is_some(),
            "sockvisor was killed: {output:?}"
        );
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        if mode != 0o600 {
            stop.store(true, Ordering::Relaxed);
            attacker.join().unwrap();
            panic!("the file behind the swapped-in link became {mode:o}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    assert!(
        swaps > 0,
        "the attacker never won a swap: the test proved nothing"
    );
}

#[test]
fn run_refuses_a_control_socket_where_its_clients_would_refuse_it() {
    let dir = TestDir::new("ctl-foreign-dir");
    // Another user's directory, writable by all.
    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
    fs::set_permissions(
        &foreign,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let output = run_true(&dir, &["--control", &control_arg(&foreign.join("c.sock"))]);
    assert_refused(
        &output,
        &[
            "belongs to uid 65534",
            "sockvisor's clients would refuse it there",
        ],
    );
    assert!(!foreign.join("c.sock").exists());
}
