//! Who sent a notify message, and whether it may speak for a generation.
//!
//! A generation's notify socket is a path in a directory of the same user,
//! so a process of another generation (or any process of that user) could
//! write to it. Like systemd's `NotifyAccess=all`, which accepts messages
//! only from the service's own cgroup, a message counts for a generation
//! only when the sender, the pid in the credentials the kernel attached, is:
//!
//! - the generation's main process;
//! - a process in its process group (the main pid is the group's id), such
//!   as a worker it forked;
//! - a descendant of its main process (a worker that made its own group).
//!
//! Anything else is dropped. A sender that has already exited when the
//! message is read cannot be placed and is dropped too, as under systemd: a
//! helper that sends and exits at once must send with its parent's pid (as
//! `systemd-notify` does for root) or wait for `BARRIER=1`.
//!
//! The rule is written against a [`ProcessTable`] so it is tested without
//! real processes; [`ProcFs`] reads the real one.

use std::fs;

use nix::unistd::Pid;

/// How far up the parent chain a sender is followed before giving up.
const MAX_ANCESTRY: usize = 64;

/// What the rule needs to know about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub parent: Pid,
    pub group: Pid,
}

/// Looks up running processes.
pub trait ProcessTable {
    /// `None` when no such process runs.
    fn info(&self, pid: Pid) -> Option<ProcessInfo>;
}

/// The real process table, from `/proc/<pid>/stat`.
pub struct ProcFs;

impl ProcessTable for ProcFs {
    fn info(&self, pid: Pid) -> Option<ProcessInfo> {
        parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }
}

/// Parses `pid (comm) state ppid pgrp …`. The command name may hold spaces
/// and parentheses, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcessInfo> {
    let (_, fields) = stat.rsplit_once(") ")?;
    let mut fields = fields.split(' ').skip(1);
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(ProcessInfo {
        parent: Pid::from_raw(parent),
        group: Pid::from_raw(group),
    })
}

/// True when `sender` may speak for the generation whose main process (and
/// process group) is `main`.
pub fn speaks_for(sender: Pid, main: Pid, table: &impl ProcessTable) -> bool {
    if sender == main {
        return true;
    }
    if sender.as_raw() <= 0 {
        // No credentials, or a sender in a pid namespace we cannot see.
        return false;
    }
    let Some(info) = table.info(sender) else {
        return false;
    };
    if info.group == main {
        return true;
    }
    let mut ancestor = info.parent;
    for _ in 0..MAX_ANCESTRY {
        if ancestor == main {
            return true;
        }
        if ancestor.as_raw() <= 1 {
            return false;
        }
        match table.info(ancestor) {
            Some(info) => ancestor = info.parent,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// pid → (parent, group).
    struct FakeTable(HashMap<i32, (i32, i32)>);

    impl ProcessTable for FakeTable {
        fn info(&self, pid: Pid) -> Option<ProcessInfo> {
            self.0
                .get(&pid.as_raw())
                .map(|&(parent, group)| ProcessInfo {
                    parent: Pid::from_raw(parent),
                    group: Pid::from_raw(group),
                })
        }
    }

    const SOCKVISOR: i32 = 100;
    const MAIN: i32 = 200;
    const OTHER_GENERATION: i32 = 300;

    fn table() -> FakeTable {
        FakeTable(HashMap::from([
            (SOCKVISOR, (1, SOCKVISOR)),
            (MAIN, (SOCKVISOR, MAIN)),
            // A worker in the generation's group.
            (201, (MAIN, MAIN)),
            // A worker that made its own group, and its child.
            (202, (MAIN, 202)),
            (203, (202, 202)),
            // An orphaned worker re-parented to sockvisor, still in the group.
            (204, (SOCKVISOR, MAIN)),
            // Another generation and its worker.
            (OTHER_GENERATION, (SOCKVISOR, OTHER_GENERATION)),
            (301, (OTHER_GENERATION, OTHER_GENERATION)),
            // Somebody else's process of the same user.
            (400, (1, 400)),
        ]))
    }

    fn speaks(sender: i32) -> bool {
        speaks_for(Pid::from_raw(sender), Pid::from_raw(MAIN), &table())
    }

    #[test]
    fn the_main_process_speaks_for_its_generation() {
        assert!(speaks(MAIN));
    }

    #[test]
    fn a_process_in_the_generations_group_speaks_for_it() {
        assert!(speaks(201));
        assert!(speaks(204));
    }

    #[test]
    fn a_descendant_in_another_group_speaks_for_it() {
        assert!(speaks(202));
        assert!(speaks(203));
    }

    #[test]
    fn another_generation_does_not_speak_for_it() {
        assert!(!speaks(OTHER_GENERATION));
        assert!(!speaks(301));
    }

    #[test]
    fn sockvisor_and_unrelated_processes_do_not_speak_for_it() {
        assert!(!speaks(SOCKVISOR));
        assert!(!speaks(400));
    }

    #[test]
    fn a_sender_that_is_gone_cannot_be_placed() {
        assert!(!speaks(999));
    }

    #[test]
    fn a_sender_without_a_visible_pid_is_refused() {
        assert!(!speaks(0));
    }

    #[test]
    fn a_parent_loop_in_the_table_ends() {
        let looping = FakeTable(HashMap::from([(10, (11, 10)), (11, (10, 11))]));
        assert!(!speaks_for(
            Pid::from_raw(10),
            Pid::from_raw(MAIN),
            &looping
        ));
    }

    #[test]
    fn stat_lines_are_parsed_past_odd_command_names() {
        let info = parse_stat("4242 (a) b (c)) S 17 4200 4200 0 -1 4194560").unwrap();
        assert_eq!(info.parent, Pid::from_raw(17));
        assert_eq!(info.group, Pid::from_raw(4200));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_real_table_knows_this_process() {
        let me = Pid::this();
        let info = ProcFs.info(me).unwrap();
        assert_eq!(info.parent, nix::unistd::getppid());
        assert_eq!(info.group, nix::unistd::getpgrp());
        assert!(speaks_for(me, nix::unistd::getppid(), &ProcFs));
    }
}
