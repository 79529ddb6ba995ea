//! How much memory a worker uses, as `--worker-max-rss` counts it: the
//! resident set (RSS, `/proc/PID/statm`) of the worker and of every process
//! under it (found through `/proc/PID/task/TID/children`), summed. Pages
//! shared between them (a preforking server's copy-on-write pages, shared
//! libraries) are counted once per process that maps them, as `ps` and
//! `top` count them; PSS would count them once, at the cost of reading
//! every mapping. Reading is the event loop's: the supervisor only gets
//! the figures.

use nix::unistd::Pid;

/// Most processes one sample of every worker reads, beyond the workers
/// themselves: a bound on the time a sample holds the loop, whatever the
/// workers fork. Once it is spent, a worker counts for itself alone until
/// the next sample.
pub const SAMPLE_BUDGET: usize = 16_384;

/// The resident bytes of `pid` and every process under it, reading at
/// most `budget` processes under it (and taking them off the budget);
/// `None` if `pid` itself is gone.
pub fn tree_resident_bytes(pid: Pid, budget: &mut usize) -> Option<u64> {
    let mut total = resident_bytes(&pid.to_string())?;
    let mut pending = if *budget > 0 {
        children_of(pid.as_raw())
    } else {
        Vec::new()
    };
    while let Some(child) = pending.pop() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
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
        let tree = tree_resident_bytes(nix::unistd::getpid(), &mut { SAMPLE_BUDGET }).unwrap();
        assert!(own > 0);
        assert!(tree >= own / 2, "{tree} for a process of {own}");
    }

    #[test]
    fn a_gone_process_has_no_figure() {
        assert_eq!(tree_resident_bytes(Pid::from_raw(i32::MAX), &mut 10), None);
    }

    #[test]
    fn a_spent_budget_counts_the_worker_alone() {
        let mut spent = 0;
        let own = tree_resident_bytes(nix::unistd::getpid(), &mut spent).unwrap();
        assert!(own > 0);
        assert_eq!(spent, 0);
    }
}
