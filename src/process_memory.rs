//! How much memory a worker uses, as `--worker-max-rss` counts it: the
//! resident set (RSS, `/proc/PID/statm`) of the worker and of every process
//! under it (found through `/proc/PID/task/TID/children`), summed. Pages
//! shared between them (a preforking server's copy-on-write pages, shared
//! libraries) are counted once per process that maps them, as `ps` and
//! `top` count them; PSS would count them once, at the cost of reading
//! every mapping. Reading is the event loop's: the supervisor only gets
//! the figures.

use nix::unistd::Pid;

/// Most processes counted under one worker: enough for any server, and a
/// bound on one sample's cost whatever a worker forks.
pub const MAX_TREE: usize = 4096;

/// The resident bytes of `pid` and every process under it; `None` if
/// `pid` itself is gone.
pub fn tree_resident_bytes(pid: Pid) -> Option<u64> {
    let mut total = resident_bytes(&pid.to_string())?;
    let mut pending = children_of(pid.as_raw());
    let mut seen = 1;
    while let Some(child) = pending.pop() {
        if seen >= MAX_TREE {
            break;
        }
        seen += 1;
        // A process that exited meanwhile counts for nothing.
        if let Some(bytes) = resident_bytes(&child.to_string()) {
            total = total.saturating_add(bytes);
            pending.extend(children_of(child));
        }
    }
    Some(total)
}

/// Resident memory of one process (`self` for sockvisor), in bytes.
pub fn resident_bytes(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).unwrap_or(4096)
}

/// The children of every thread of `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_tree_counts_at_least_its_root() {
        let own = resident_bytes("self").unwrap();
        let tree = tree_resident_bytes(nix::unistd::getpid()).unwrap();
        assert!(own > 0);
        assert!(tree >= own / 2, "{tree} for a process of {own}");
    }

    #[test]
    fn a_gone_process_has_no_figure() {
        assert_eq!(tree_resident_bytes(Pid::from_raw(i32::MAX)), None);
    }
}
