//! Who sent a readiness message, and which worker it counts for.
//!
//! A generation's notify socket is a path in a directory of the same user,
//! and the control socket accepts einhorn's `worker:ack` from any process
//! of that user, so any of them could claim to speak for a worker. The rule,
//! for both: a message counts for a worker only when its sender (the pid the
//! kernel attached: `SCM_CREDENTIALS` on a datagram, `SO_PEERCRED` on a
//! control connection) is that worker's own pid or a descendant of it, that
//! is, when the sender's parent chain, read from `/proc/<pid>/stat`,
//! reaches the worker. Like systemd's `NotifyAccess=all`, which accepts only
//! the service's own cgroup, nothing else counts.
//!
//! Process-group membership is never proof. Each worker is started in a
//! group of its own, but `setpgid(2)` lets a process join any group of its
//! session, and every process sockvisor starts shares sockvisor's session:
//! a process forked by generation 1 can move into generation 2's group and
//! would then pass for one of its workers. A process cannot choose its
//! parent; it can only lose it (an orphan is re-parented to sockvisor or
//! init), and then it no longer counts for anyone.
//!
//! A sender that has already exited when the message is read cannot be
//! placed and is dropped, as under systemd: a helper that sends and exits
//! at once must send with its parent's pid (as `systemd-notify` does for
//! root) or wait for `BARRIER=1`.
//!
//! Cost: one walk up the sender's ancestry per message, asking at each step
//! whether that pid is a worker (one map lookup). It stops at the first
//! worker found, at sockvisor's own pid, at pid 1, or after
//! [`MAX_ANCESTRY`] steps, so it costs O(depth of the sender's tree),
//! whatever the number of workers. A worker speaking for itself costs no
//! `/proc` read at all.
//!
//! The rule is written against a [`ProcessTable`] so it is tested without
//! real processes; [`ProcFs`] reads the real one.

use std::fs;

use nix::unistd::Pid;

/// How far up the parent chain a sender is followed before giving up.
pub const MAX_ANCESTRY: usize = 64;

/// Looks up running processes.
pub trait ProcessTable {
    /// The parent of `pid`; `None` when no such process runs.
    fn parent(&self, pid: Pid) -> Option<Pid>;
}

/// The real process table, from `/proc/<pid>/stat`.
pub struct ProcFs;

impl ProcessTable for ProcFs {
    fn parent(&self, pid: Pid) -> Option<Pid> {
        parse_parent(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }
}

/// Parses the parent out of `pid (comm) state ppid …`. The command name
/// may hold spaces and parentheses, so the fields are counted from the
/// last `)`.
fn parse_parent(stat: &str) -> Option<Pid> {
    let (_, fields) = stat.rsplit_once(") ")?;
    let parent = fields.split(' ').nth(1)?.parse().ok()?;
    Some(Pid::from_raw(parent))
}

/// The worker a message from `sender` counts for: the first pid on the way
/// from `sender` up its parent chain for which `worker_of` names a worker.
/// `None` when the chain reaches `sockvisor` (sockvisor itself, or an
/// orphan re-parented to it), pid 1, a process that is gone, or the depth
/// bound first.
pub fn attribute<W>(
    sender: Pid,
    sockvisor: Pid,
    table: &impl ProcessTable,
    mut worker_of: impl FnMut(Pid) -> Option<W>,
) -> Option<W> {
    if sender.as_raw() <= 0 {
        // No credentials, or a sender in a pid namespace we cannot see.
        return None;
    }
    let mut pid = sender;
    for _ in 0..=MAX_ANCESTRY {
        if let Some(worker) = worker_of(pid) {
            return Some(worker);
        }
        if pid == sockvisor || pid.as_raw() <= 1 {
            return None;
        }
        pid = table.parent(pid)?;
    }
    None
}

/// True when `sender` is the worker `worker` or a descendant of it.
pub fn speaks_for(sender: Pid, worker: Pid, sockvisor: Pid, table: &impl ProcessTable) -> bool {
    attribute(sender, sockvisor, table, |pid| {
        (pid == worker).then_some(())
    })
    .is_some()
}

/// Why an einhorn `worker:ack` does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckRefusal<W> {
    /// The pid it names is no worker's, nor a descendant of one.
    NotAWorker,
    /// The kernel could not name the process that connected.
    UnknownPeer { worker: W },
    /// The process that connected is not the named worker or a descendant.
    NotFromWorker { worker: W, peer: Pid },
}

/// The worker a `worker:ack` naming `named`, sent over a connection from
/// `peer`, counts for. The named pid is placed like a notify sender (a
/// worker or a descendant of one), and then the peer must speak for that
/// worker: naming a pid proves nothing. `worker_of` gives a worker's
/// identity and its pid.
pub fn ack_counts_for<W: Copy>(
    named: Pid,
    peer: Option<Pid>,
    sockvisor: Pid,
    table: &impl ProcessTable,
    mut worker_of: impl FnMut(Pid) -> Option<W>,
) -> Result<W, AckRefusal<W>> {
    let Some((worker, worker_pid)) = attribute(named, sockvisor, table, |pid| {
        worker_of(pid).map(|worker| (worker, pid))
    }) else {
        return Err(AckRefusal::NotAWorker);
    };
    let Some(peer) = peer.filter(|p| p.as_raw() > 0) else {
        return Err(AckRefusal::UnknownPeer { worker });
    };
    if speaks_for(peer, worker_pid, sockvisor, table) {
        Ok(worker)
    } else {
        Err(AckRefusal::NotFromWorker { worker, peer })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    /// pid → parent, counting the lookups.
    pub(crate) struct FakeTable {
        parents: HashMap<i32, i32>,
        pub(crate) lookups: Cell<usize>,
    }

    impl FakeTable {
        pub(crate) fn new(parents: impl IntoIterator<Item = (i32, i32)>) -> FakeTable {
            FakeTable {
                parents: parents.into_iter().collect(),
                lookups: Cell::new(0),
            }
        }
    }

    impl ProcessTable for FakeTable {
        fn parent(&self, pid: Pid) -> Option<Pid> {
            self.lookups.set(self.lookups.get() + 1);
            self.parents.get(&pid.as_raw()).map(|&p| Pid::from_raw(p))
        }
    }

    const SOCKVISOR: i32 = 100;
    /// Generation 1's worker (the attacker's side) and generation 2's.
    const OLD_WORKER: i32 = 200;
    const NEW_WORKER: i32 = 300;

    /// The processes of the attacks. Process groups are not in the table:
    /// the rule never looks at them.
    fn table() -> FakeTable {
        FakeTable::new([
            (SOCKVISOR, 1),
            (OLD_WORKER, SOCKVISOR),
            (NEW_WORKER, SOCKVISOR),
            // Forked by generation 1, then joined generation 2's group.
            (201, OLD_WORKER),
            // The new worker's child and grandchild (in groups of their own).
            (301, NEW_WORKER),
            (302, 301),
            // A worker of the new generation whose parent died: it is
            // sockvisor's now, still in the new worker's group.
            (303, SOCKVISOR),
            // Somebody else's process of the same user.
            (400, 1),
            (401, 400),
        ])
    }

    fn worker_of(pid: Pid) -> Option<u32> {
        match pid.as_raw() {
            OLD_WORKER => Some(1),
            NEW_WORKER => Some(2),
            _ => None,
        }
    }

    fn generation_of(sender: i32) -> Option<u32> {
        attribute(
            Pid::from_raw(sender),
            Pid::from_raw(SOCKVISOR),
            &table(),
            worker_of,
        )
    }

    #[test]
    fn the_worker_itself_speaks_for_it_without_reading_proc() {
        let table = table();
        let sender = Pid::from_raw(NEW_WORKER);
        assert_eq!(
            attribute(sender, Pid::from_raw(SOCKVISOR), &table, worker_of),
            Some(2)
        );
        assert_eq!(table.lookups.get(), 0);
    }

    #[test]
    fn a_child_and_a_grandchild_of_the_worker_speak_for_it() {
        assert_eq!(generation_of(301), Some(2));
        assert_eq!(generation_of(302), Some(2));
    }

    #[test]
    fn another_generations_process_in_the_workers_group_speaks_only_for_its_own() {
        assert_eq!(generation_of(201), Some(1));
        assert!(!speaks_for(
            Pid::from_raw(201),
            Pid::from_raw(NEW_WORKER),
            Pid::from_raw(SOCKVISOR),
            &table()
        ));
    }

    #[test]
    fn a_process_whose_parent_chain_does_not_reach_the_worker_speaks_for_nobody() {
        // Unrelated, and an orphan of the worker re-parented to sockvisor.
        assert_eq!(generation_of(401), None);
        assert_eq!(generation_of(303), None);
    }

    #[test]
    fn sockvisor_and_processes_that_are_gone_speak_for_nobody() {
        assert_eq!(generation_of(SOCKVISOR), None);
        assert_eq!(generation_of(1), None);
        assert_eq!(generation_of(999), None);
    }

    #[test]
    fn a_sender_without_a_visible_pid_is_refused() {
        assert_eq!(generation_of(0), None);
        assert_eq!(generation_of(-1), None);
    }

    #[test]
    fn a_parent_loop_or_an_endless_chain_ends() {
        let looping = FakeTable::new([(10, 11), (11, 10)]);
        assert_eq!(
            attribute(
                Pid::from_raw(10),
                Pid::from_raw(SOCKVISOR),
                &looping,
                worker_of
            ),
            None
        );
        assert_eq!(looping.lookups.get(), MAX_ANCESTRY + 1);
        // A descendant deeper than the bound is not followed to its worker.
        let deep =
            FakeTable::new((0..MAX_ANCESTRY as i32 + 1).map(|i| (10_000 + i + 1, 10_000 + i)));
        let top = |pid: Pid| (pid.as_raw() == 10_000).then_some(());
        let bottom = Pid::from_raw(10_000 + MAX_ANCESTRY as i32 + 1);
        assert_eq!(
            attribute(bottom, Pid::from_raw(SOCKVISOR), &deep, top),
            None
        );
        let within = Pid::from_raw(10_000 + MAX_ANCESTRY as i32);
        assert_eq!(
            attribute(within, Pid::from_raw(SOCKVISOR), &deep, top),
            Some(())
        );
    }

    fn ack(named: i32, peer: Option<i32>) -> Result<u32, AckRefusal<u32>> {
        ack_counts_for(
            Pid::from_raw(named),
            peer.map(Pid::from_raw),
            Pid::from_raw(SOCKVISOR),
            &table(),
            worker_of,
        )
    }

    #[test]
    fn a_worker_ack_from_the_worker_or_its_descendant_counts_for_it() {
        assert_eq!(ack(NEW_WORKER, Some(NEW_WORKER)), Ok(2));
        assert_eq!(ack(NEW_WORKER, Some(302)), Ok(2));
        // A descendant may name itself: it is placed like a notify sender.
        assert_eq!(ack(301, Some(301)), Ok(2));
    }

    #[test]
    fn a_worker_ack_naming_another_worker_does_not_count() {
        let refused = |peer| AckRefusal::NotFromWorker {
            worker: 2,
            peer: Pid::from_raw(peer),
        };
        // Generation 1's process inside generation 2's group.
        assert_eq!(ack(NEW_WORKER, Some(201)), Err(refused(201)));
        // Generation 1's worker itself, an unrelated process, an orphan.
        assert_eq!(ack(NEW_WORKER, Some(OLD_WORKER)), Err(refused(OLD_WORKER)));
        assert_eq!(ack(NEW_WORKER, Some(401)), Err(refused(401)));
        assert_eq!(ack(NEW_WORKER, Some(303)), Err(refused(303)));
        assert_eq!(ack(NEW_WORKER, Some(SOCKVISOR)), Err(refused(SOCKVISOR)));
    }

    #[test]
    fn a_worker_ack_from_an_unnamed_peer_or_for_no_worker_does_not_count() {
        assert_eq!(
            ack(NEW_WORKER, None),
            Err(AckRefusal::UnknownPeer { worker: 2 })
        );
        assert_eq!(
            ack(NEW_WORKER, Some(0)),
            Err(AckRefusal::UnknownPeer { worker: 2 })
        );
        assert_eq!(ack(401, Some(401)), Err(AckRefusal::NotAWorker));
        assert_eq!(ack(999, Some(NEW_WORKER)), Err(AckRefusal::NotAWorker));
    }

    #[test]
    fn stat_lines_are_parsed_past_odd_command_names() {
        let parent = parse_parent("4242 (a) b (c)) S 17 4200 4200 0 -1 4194560").unwrap();
        assert_eq!(parent, Pid::from_raw(17));
        assert_eq!(parse_parent("garbage"), None);
        assert_eq!(parse_parent("1 (x) S"), None);
    }

    #[test]
    fn the_real_table_knows_this_process() {
        let me = Pid::this();
        let parent = nix::unistd::getppid();
        assert_eq!(ProcFs.parent(me), Some(parent));
        assert!(speaks_for(me, me, parent, &ProcFs));
        assert!(speaks_for(me, parent, Pid::from_raw(1), &ProcFs));
        assert!(!speaks_for(parent, me, Pid::from_raw(1), &ProcFs));
    }
}
