//! sockvisor as an init: orphans are reaped (as a child subreaper, and as
//! PID 1 of a new pid namespace), never mistaken for the child, and no
//! zombie remains.

mod common;

use std::process::Command;

use common::*;

/// Reads the orphan's pid that the probe wrote (as seen from its namespace).
fn orphan_pid(sockvisor: &Sockvisor) -> i32 {
    let path = sockvisor.dir.join("1.orphan");
    wait_for("the orphan's pid", || {
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    })
}

#[test]
fn orphans_are_reaped_as_a_subreaper_and_not_mistaken_for_the_child() {
    let dir = TestDir::new("subreaper");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["--log-level", "debug", "run", "--restart", "never", "--"])
        .args(Sockvisor::probe_args(&dir.path))
        .arg("--orphan");
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let report = sockvisor.report(1);
    let orphan = orphan_pid(&sockvisor);
    sockvisor.wait_for_log(&format!("reaped orphan pid {orphan}"));
    assert!(!process_alive(orphan as i64), "orphan is gone");
    assert!(
        zombie_children(sockvisor.pid()).is_empty(),
        "no zombie remains"
    );
    assert!(
        process_alive(report["pid"].as_i64().unwrap()),
        "the child still runs"
    );
    assert!(
        sockvisor.is_running(),
        "an orphan's exit does not end sockvisor"
    );
}

fn unshare_available() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    assert!(
        unshare_available(),
        "this test needs `unshare --pid` (util-linux, run as root)"
    );
    let dir = TestDir::new("pid1");
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(sockvisor_bin())
        .args([
            "--log-level",
            "debug",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--",
        ])
        .args(Sockvisor::probe_args(&dir.path))
        .arg("--orphan");
    let mut sockvisor = Sockvisor::spawn(dir, command);
    sockvisor.wait_for_log("running as PID 1");
    let report = sockvisor.report(1);
    assert_eq!(
        report["ppid"], 1,
        "the child's parent is sockvisor as PID 1"
    );
    assert_eq!(
        report["env"]["LISTEN_PID"].as_str().unwrap(),
        report["pid"].to_string(),
        "LISTEN_PID is the child's pid inside the namespace"
    );
    let orphan = orphan_pid(&sockvisor);
    sockvisor.wait_for_log(&format!("reaped orphan pid {orphan}"));

    // unshare --fork is the test's child; sockvisor is unshare's child.
    let init_host_pid = wait_for("sockvisor's host pid", || {
        children_of(sockvisor.pid()).first().copied()
    });
    assert!(
        zombie_children(init_host_pid).is_empty(),
        "no zombie remains"
    );

    // A signal from outside the namespace only reaches PID 1 through a
    // handler it installed itself.
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(init_host_pid, libc::SIGTERM) };
    assert_eq!(sockvisor.wait_exit(), 0, "graceful stop as PID 1");
}

/// Each worker has a child of its own in its process group, and the test
/// kills the groups all at once: the orphans' exits come together with the
/// workers', and their `SIGCHLD`s merge with the workers' (which sockvisor
/// also learns of by pidfd). Every orphan is still reaped, and no zombie
/// is left.
#[test]
fn orphans_that_die_with_their_workers_are_reaped_too() {
    const WORKERS: usize = 16;
    let dir = TestDir::new("orphans-with-workers");
    let mut command = Command::new(sockvisor_bin());
    command
        .args(["run", "--ready", "now", "--workers", &WORKERS.to_string()])
        .args(["--restart", "always", "--restart-delay", "1h", "--"])
        .args(["sh", "-c", "sleep 600 & exec sleep 600"]);
    let mut sockvisor = Sockvisor::spawn(dir, command);
    let groups: Vec<(i32, i32)> = wait_for("every worker with its child", || {
        let workers = children_of(sockvisor.pid());
        let groups: Vec<(i32, i32)> = workers
            .iter()
            .filter_map(|w| Some((*w, *children_of(*w).first()?)))
            .collect();
        (groups.len() == WORKERS).then_some(groups)
    });
    for (worker, _) in &groups {
        // SAFETY: kill has no memory preconditions; a worker is the
        // leader of its own process group.
        unsafe { libc::kill(-worker, libc::SIGKILL) };
    }
    wait_for("every worker and orphan gone, no zombie left", || {
        let gone = groups
            .iter()
            .all(|(worker, child)| !process_alive(*worker as i64) && !process_alive(*child as i64));
        (gone && zombie_children(sockvisor.pid()).is_empty()).then_some(())
    });
    assert!(sockvisor.is_running(), "sockvisor waits to restart them");
}
