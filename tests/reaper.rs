//! The reaper's cost rule, against real children: an exit of a child
//! watched by pidfd is reaped without a walk over every child, and SIGCHLD
//! (for orphans and children without a pidfd) walks at most once per
//! `SWEEP_INTERVAL`.
//!
//! One test function: in-process children must not be reaped by another
//! test's walk.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use sockvisor::reaper::{Exit, ExitStatus, Reaper, SWEEP_INTERVAL};
use sockvisor::spawn::{self, Command, SpawnRequest, Spawned};

fn exiting_with(code: i32) -> Spawned {
    let command = Command {
        program: OsString::from("/bin/sh"),
        args: vec![OsString::from("-c"), OsString::from(format!("exit {code}"))],
    };
    spawn::spawn(&SpawnRequest {
        command: &command,
        listeners: &[],
        stored: &[],
        extra_env: &[],
        terminal: None,
        watchdog: None,
        no_listen_pid: true,
        run_as: None,
        env_overrides: &[],
    })
    .expect("/bin/sh starts")
}

/// Waits, without reaping it, until `pid` has exited.
fn wait_until_exited(pid: Pid) {
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("the child exits");
}

#[test]
fn watched_children_are_reaped_without_a_walk_and_sigchld_walks_at_most_once_per_interval() {
    let mut reaper = Reaper::new();

    // More children watched by pidfd than one epoll round returns (64),
    // each with its own status, all exited before they are reaped.
    let mut expected: Vec<Exit> = Vec::new();
    for code in 0..100 {
        let child = exiting_with(code);
        let pidfd = child
            .pidfd
            .expect("the kernel gives a pidfd with the child");
        reaper.watch(child.pid, pidfd);
        expected.push(Exit {
            pid: child.pid,
            status: ExitStatus::Code(code),
        });
    }
    assert_eq!(reaper.watched(), 100);
    for exit in &expected {
        wait_until_exited(exit.pid);
    }
    let fd = reaper.fd().expect("an epoll instance");
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(1000u16)).expect("poll");
    assert!(
        fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN)),
        "the epoll descriptor is readable once a watched child has exited"
    );
    let mut reaped = reaper.reap_watched();
    reaped.sort_by_key(|e| e.pid);
    expected.sort_by_key(|e| e.pid);
    assert_eq!(
        reaped, expected,
        "every watched exit in one call, with its status"
    );
    assert_eq!(reaper.walks(), 0, "no walk over every child for them");
    assert_eq!(reaper.watched(), 0, "their pidfds are closed");
    assert!(reaper.reap_watched().is_empty());

    // A child without a pidfd (as an orphan has none): SIGCHLD walks.
    let unwatched = exiting_with(7);
    drop(unwatched.pidfd);
    wait_until_exited(unwatched.pid);
    let now = Instant::now();
    assert_eq!(
        reaper.on_sigchld(now),
        [Exit {
            pid: unwatched.pid,
            status: ExitStatus::Code(7)
        }]
    );
    assert_eq!(reaper.walks(), 1);
    assert_eq!(reaper.next_deadline(), None);

    // Another SIGCHLD within the interval is not a walk of its own: one is
    // scheduled for the end of the interval, and finds the exit then.
    let second = exiting_with(9);
    drop(second.pidfd);
    wait_until_exited(second.pid);
    assert!(
        reaper
            .on_sigchld(now + Duration::from_millis(10))
            .is_empty()
    );
    assert!(
        reaper
            .on_sigchld(now + Duration::from_millis(20))
            .is_empty()
    );
    assert_eq!(reaper.walks(), 1);
    assert_eq!(reaper.next_deadline(), Some(now + SWEEP_INTERVAL));
    assert!(reaper.on_tick(now + Duration::from_millis(30)).is_empty());
    assert_eq!(
        reaper.on_tick(now + SWEEP_INTERVAL),
        [Exit {
            pid: second.pid,
            status: ExitStatus::Code(9)
        }]
    );
    assert_eq!(reaper.walks(), 2);
    assert_eq!(reaper.next_deadline(), None, "no timer is left armed");
}
