//! `--user`/`--group`: sockvisor binds as root, and every worker of every
//! generation runs as the user, across upgrades, restarts, scale and
//! re-exec, with no root uid, gid, group or capability left
//! (`/proc/PID/status`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use serde_json::Value;

const NOBODY: u32 = 65534;

/// One `Name:` line of `/proc/PID/status`, its fields split.
fn proc_status(pid: i64, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Checks that the process of `report` runs as `uid`/`gid` with exactly
/// `groups` and no capability, and has the user's login variables.
fn assert_runs_as(report: &Value, uid: u32, gid: u32, groups: &[u32], user: &str, home: &str) {
    let pid = report["pid"].as_i64().unwrap();
    let uid = uid.to_string();
    let gid = gid.to_string();
    assert_eq!(proc_status(pid, "Uid"), [uid.as_str(); 4], "pid {pid}");
    assert_eq!(proc_status(pid, "Gid"), [gid.as_str(); 4], "pid {pid}");
    let mut supplementary: Vec<u32> = proc_status(pid, "Groups")
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    supplementary.sort_unstable();
    assert_eq!(supplementary, groups, "pid {pid}");
    for capabilities in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            proc_status(pid, capabilities),
            ["0000000000000000"],
            "{capabilities}"
        );
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for variable in [
        format!("USER={user}"),
        format!("LOGNAME={user}"),
        format!("HOME={home}"),
    ] {
        assert!(
            environ.contains(&variable),
            "{variable} missing: {environ:?}"
        );
    }
}

/// sockvisor (as root) running the probe server as `user_args`, reporting
/// into a directory that user may write.
fn run_as(name: &str, user_args: &[&str], extra: &[&str]) -> Sockvisor {
    let dir = TestDir::new(name);
    // Root's, so that root's client trusts the control socket in it, and
    // sticky and writable by all, so that the server can write its reports.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(user_args)
        .args(extra)
        .arg("--")
        .args(Sockvisor::probe_args(&dir.path));
    Sockvisor::spawn(dir, command)
}

#[test]
fn every_worker_runs_as_the_user_across_upgrade_restart_scale_and_reexec() {
    let nobody = |report: &Value| {
        assert_runs_as(report, NOBODY, NOBODY, &[NOBODY], "nobody", "/nonexistent")
    };
    let sockvisor = run_as("user", &["--user", "nobody"], &["--workers", "2"]);
    let first = sockvisor.worker_report(1, 0);
    nobody(&first);
    nobody(&sockvisor.worker_report(1, 1));
    let address = reported_address(&first, 3);

    // Upgrade: a new generation, the same identity.
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{output:?}");
    nobody(&sockvisor.worker_report(2, 0));
    nobody(&sockvisor.worker_report(2, 1));

    // Restart in the slot of a killed worker.
    let victim = sockvisor.worker_report(2, 1)["pid"].as_i64().unwrap();
    std::fs::remove_file(sockvisor.dir.join("2-1.json")).unwrap();
    // SAFETY: killing a worker this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let replacement = sockvisor.worker_report(2, 1);
    assert_ne!(replacement["pid"].as_i64().unwrap(), victim);
    nobody(&replacement);

    // Scale: the new worker too.
    let output = sockvisor.client(&["scale", "3", "--timeout", "30s"]);
    assert!(output.status.success(), "{output:?}");
    nobody(&sockvisor.worker_report(2, 2));

    // After a re-exec, the next generation still drops to the user.
    let output = sockvisor.client(&["reexec", "--timeout", "20s"]);
    assert!(output.status.success(), "{output:?}");
    let output = sockvisor.client(&["upgrade"]);
    assert!(output.status.success(), "{output:?}");
    for worker in 0..3 {
        nobody(&sockvisor.worker_report(3, worker));
    }
    let answer = http_get_tcp(&address).unwrap();
    assert!(answer.contains("generation=3"), "{answer}");
}

#[test]
fn a_numeric_user_and_group_without_entries_are_taken_as_given() {
    let sockvisor = run_as("numeric", &["--user", "40001", "--group", "65534"], &[]);
    let report = sockvisor.report(1);
    assert_runs_as(&report, 40001, NOBODY, &[NOBODY], "40001", "/");
}

#[test]
fn the_server_cannot_control_its_sockvisor() {
    let sockvisor = run_as("no-control", &["--user", "nobody"], &[]);
    sockvisor.report(1);
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(sockvisor_bin())
        .args(["stop", "--control"])
        .arg(sockvisor.control_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("ermission denied"),
        "{output:?}"
    );
    assert_eq!(status_json(&sockvisor)["current"], 1, "still serving");
}

#[test]
fn an_unknown_user_or_group_is_a_usage_error_before_anything_is_bound() {
    let dir = TestDir::new("unknown-user");
    for (args, needle) in [
        (
            &["--user", "no-such-user-here"][..],
            "unknown user 'no-such-user-here'",
        ),
        (
            &["--user", "nobody", "--group", "no-such-group-here"],
            "unknown group 'no-such-group-here'",
        ),
        (&["--user", "4000000"], "give --group"),
    ] {
        let output = Command::new(sockvisor_bin())
            .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(args)
            .args(["--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}

#[test]
fn the_ids_the_kernel_reads_as_unchanged_are_refused_before_anything_runs() {
    let dir = TestDir::new("user-minus-one");
    let ran = dir.join("ran");
    for (user, group, said) in [
        ("4294967295", "1", "uid and gid 4294967295 are no identity"),
        (
            "4000000",
            "4294967295",
            "uid and gid 4294967295 are no identity",
        ),
    ] {
        let output = Command::new(sockvisor_bin())
            .args([
                "run",
                "--restart",
                "never",
                "--user",
                user,
                "--group",
                group,
                "--",
            ])
            .args(["/bin/sh", "-c", &format!("touch {}", ran.display())])
            .env("SOCKVISOR_CONTROL", dir.join("control.sock"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(said),
            "{output:?}"
        );
        assert!(!ran.exists(), "the server ran");
    }
}
