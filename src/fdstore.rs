//! The file-descriptor store, as systemd's `FileDescriptorStoreMax=`: a
//! generation hands descriptors to sockvisor with `FDSTORE=1` (and an
//! optional `FDNAME=`), and every later generation (restart or upgrade)
//! receives them after the listeners, named in `LISTEN_FDNAMES` and counted
//! in `LISTEN_FDS`.
//!
//! Rules, as systemd applies them: the name defaults to `stored`; a name
//! must be at most 255 printable ASCII characters without `:`; a descriptor
//! already stored (the same open file) is stored once; beyond the limit,
//! descriptors are dropped; `FDSTOREREMOVE=1` with `FDNAME=` drops every
//! descriptor of that name; a stored descriptor is polled for hang-up
//! (dropped when its peer goes away) unless it came with `FDPOLL=0`. Every
//! refusal is a debug-logged drop, never an error. The descriptors are
//! closed when the store is dropped (sockvisor exits).
//!
//! It owns the descriptors and the accounting; the event loop feeds it and
//! polls what it asks to poll.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// The name of a stored descriptor sent without `FDNAME=`.
pub const DEFAULT_NAME: &str = "stored";

/// One stored descriptor.
#[derive(Debug)]
pub struct StoredFd {
    pub name: String,
    pub fd: OwnedFd,
    /// Dropped when it hangs up (`FDPOLL=0` turns this off).
    pub poll: bool,
}

#[derive(Debug, Default)]
pub struct FdStore {
    max: usize,
    entries: Vec<StoredFd>,
}

/// True when `name` may name a stored descriptor, as systemd's
/// `fdname_is_valid`.
pub fn name_is_valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// True when two descriptors are the same open file (`kcmp`). Where
/// `kcmp` is refused (Docker's default seccomp profile refuses it), the same
/// file (device and inode) counts as the same: for a socket or a pipe that
/// is the same thing, and two separate opens of one regular file are taken
/// for one, which keeps a copy out rather than let one in twice.
pub fn same_open_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    let pid = libc::c_long::from(std::process::id() as i32);
    let result = if test_kcmp_refused() {
        -1
    } else {
        // SAFETY: kcmp only compares two descriptors of this process; it
        // reads no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_kcmp,
                pid,
                pid,
                KCMP_FILE,
                libc::c_long::from(a.as_raw_fd()),
                libc::c_long::from(b.as_raw_fd()),
            )
        }
    };
    if result >= 0 {
        return result == 0;
    }
    same_file(a, b)
}

/// The device and inode of both are the same.
fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// Test-only: behave as if `kcmp` were refused, as under Docker's seccomp
/// profile.
fn test_kcmp_refused() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("SOCKVISOR_TEST_NO_KCMP").is_some())
}

impl FdStore {
    /// A store of at most `max` descriptors (0: disabled, everything passed
    /// is closed).
    pub fn new(max: usize) -> FdStore {
        FdStore {
            max,
            entries: Vec::new(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn entries(&self) -> &[StoredFd] {
        &self.entries
    }

    /// Takes what came with `FDSTORE=1`; returns why anything was dropped.
    pub fn offer(&mut self, fds: Vec<OwnedFd>, name: Option<&str>, poll: bool) -> Vec<String> {
        let name = name.unwrap_or(DEFAULT_NAME);
        let mut dropped = Vec::new();
        if !name_is_valid(name) {
            dropped.push(format!(
                "{} descriptor(s) with the invalid FDNAME {name:?}",
                fds.len()
            ));
            return dropped;
        }
        for fd in fds {
            if self
                .entries
                .iter()
                .any(|e| same_open_file(e.fd.as_fd(), fd.as_fd()))
            {
                dropped.push(format!("a descriptor already stored ({name})"));
                continue;
            }
            if self.entries.len() >= self.max {
                dropped.push(format!(
                    "a descriptor named {name}: the store is full (--fdstore-max {})",
                    self.max
                ));
                continue;
            }
            self.entries.push(StoredFd {
                name: name.to_string(),
                fd,
                poll,
            });
        }
        dropped
    }

    /// `FDSTOREREMOVE=1`: drops every descriptor named `name`; returns how
    /// many.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        before - self.entries.len()
    }

    /// The descriptors to poll for hang-up, by position.
    pub fn polled(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.poll)
            .map(|(i, e)| (i, e.fd.as_fd()))
            .collect()
    }

    /// Drops the entries at these positions (they hung up).
    pub fn drop_hung_up(&mut self, positions: &[usize]) -> Vec<String> {
        let mut names = Vec::new();
        let mut position = 0;
        self.entries.retain(|e| {
            let keep = !positions.contains(&position);
            if !keep {
                names.push(e.name.clone());
            }
            position += 1;
            keep
        });
        names
    }

    /// The descriptors and names to pass to a new generation.
    pub fn passed(&self) -> Vec<(RawFd, &str)> {
        self.entries
            .iter()
            .map(|e| (e.fd.as_raw_fd(), e.name.as_str()))
            .collect()
    }

    /// Takes back descriptors a previous program stored, after a re-exec.
    pub fn adopt(&mut self, entries: Vec<StoredFd>) {
        self.entries = entries;
    }
}

/// What kind of file a stored descriptor is, for `status`.
pub fn describe_kind(fd: BorrowedFd<'_>) -> &'static str {
    let Ok(stat) = nix::sys::stat::fstat(fd) else {
        return "unknown";
    };
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => "socket",
        libc::S_IFIFO => "fifo",
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_ends() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    #[test]
    fn names_follow_systemds_rules() {
        assert!(name_is_valid("state"));
        assert!(name_is_valid(DEFAULT_NAME));
        for bad in ["", "a:b", "with space", "tab\t", &"x".repeat(256), "é"] {
            assert!(!name_is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn descriptors_are_stored_under_their_name_or_stored() {
        let mut store = FdStore::new(4);
        let (a, b) = pipe_ends();
        assert!(store.offer(vec![a], Some("state"), true).is_empty());
        assert!(store.offer(vec![b], None, true).is_empty());
        let names: Vec<&str> = store.passed().iter().map(|(_, n)| *n).collect();
        assert_eq!(names, ["state", "stored"]);
    }

    #[test]
    fn a_full_store_drops_what_is_beyond_the_limit() {
        let mut store = FdStore::new(1);
        let (a, b) = pipe_ends();
        assert!(store.offer(vec![a], Some("one"), true).is_empty());
        let dropped = store.offer(vec![b], Some("two"), true);
        assert_eq!(dropped.len(), 1);
        assert!(dropped[0].contains("store is full"));
        assert_eq!(store.entries().len(), 1);
    }

    #[test]
    fn a_disabled_store_keeps_nothing() {
        let mut store = FdStore::new(0);
        let (a, _) = pipe_ends();
        assert_eq!(store.offer(vec![a], None, true).len(), 1);
        assert!(store.entries().is_empty());
    }

    #[test]
    fn an_invalid_name_drops_the_descriptors() {
        let mut store = FdStore::new(4);
        let (a, b) = pipe_ends();
        let dropped = store.offer(vec![a, b], Some("a:b"), true);
        assert_eq!(dropped.len(), 1);
        assert!(store.entries().is_empty());
    }

    #[test]
    fn without_kcmp_the_same_pipe_or_socket_is_still_told_apart_from_another() {
        let (a, _a_write) = pipe_ends();
        let (b, _b_write) = pipe_ends();
        let a_again = a.try_clone().unwrap();
        assert!(same_file(a.as_fd(), a_again.as_fd()));
        assert!(!same_file(a.as_fd(), b.as_fd()));
        let (s, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let s_again = s.try_clone().unwrap();
        assert!(same_file(s.as_fd(), s_again.as_fd()));
        assert!(!same_file(s.as_fd(), a.as_fd()));
    }

    #[test]
    fn the_same_open_file_is_stored_once() {
        let mut store = FdStore::new(4);
        let (a, b) = pipe_ends();
        let a_again = a.try_clone().unwrap();
        assert!(same_open_file(a.as_fd(), a_again.as_fd()));
        assert!(!same_open_file(a.as_fd(), b.as_fd()));
        assert!(store.offer(vec![a], Some("x"), true).is_empty());
        assert_eq!(store.offer(vec![a_again], Some("x"), true).len(), 1);
        assert!(store.offer(vec![b], Some("x"), true).is_empty());
        assert_eq!(store.entries().len(), 2);
    }

    #[test]
    fn fdstoreremove_drops_every_descriptor_of_the_name() {
        let mut store = FdStore::new(4);
        let (a, b) = pipe_ends();
        let (c, _) = pipe_ends();
        store.offer(vec![a, b], Some("x"), true);
        store.offer(vec![c], Some("y"), true);
        assert_eq!(store.remove("x"), 2);
        assert_eq!(store.remove("nothing"), 0);
        let names: Vec<&str> = store.passed().iter().map(|(_, n)| *n).collect();
        assert_eq!(names, ["y"]);
    }

    #[test]
    fn fdpoll_0_descriptors_are_not_polled_and_hung_up_ones_are_dropped() {
        let mut store = FdStore::new(4);
        let (a, b) = pipe_ends();
        store.offer(vec![a], Some("polled"), true);
        store.offer(vec![b], Some("kept"), false);
        let polled: Vec<usize> = store.polled().iter().map(|(i, _)| *i).collect();
        assert_eq!(polled, [0]);
        assert_eq!(store.drop_hung_up(&polled), ["polled"]);
        assert_eq!(store.entries()[0].name, "kept");
    }

    #[test]
    fn kinds_are_described() {
        let (a, _) = pipe_ends();
        assert_eq!(describe_kind(a.as_fd()), "fifo");
    }
}
