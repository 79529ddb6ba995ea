//! Where sockvisor keeps its runtime files: the control socket (found by
//! name, so `sockvisor upgrade` in another shell or `docker exec` needs no
//! flags) and the private directory holding the generations' notify
//! sockets.
//!
//! Root uses `/run/sockvisor`; other users `$XDG_RUNTIME_DIR/sockvisor`, or
//! `/tmp/sockvisor-<uid>` without it. The directory is owner-only, and one
//! owned by somebody else is refused rather than used.
//!
//! Nothing here removes a path the user named: the notify directory is
//! always sockvisor's own, made fresh inside the runtime base.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Uid;

/// Name used when `--name` is not given.
pub const DEFAULT_NAME: &str = "default";

/// The base directory for this user's sockvisor runtime files.
pub fn runtime_base() -> PathBuf {
    let uid = Uid::effective();
    if uid.is_root() {
        return PathBuf::from("/run/sockvisor");
    }
    // A relative value is to be ignored, as the XDG base directory rules say.
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Path::new(&dir).join("sockvisor"),
        _ => PathBuf::from(format!("/tmp/sockvisor-{uid}")),
    }
}

/// Checks a `--name`: it becomes a file name.
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name '{}' (use up to 64 letters, digits, '-', '_' or '.')",
            crate::output::printable(name)
        ))
    }
}

/// The control socket path: `explicit` (from `--control` or
/// `SOCKVISOR_CONTROL`) or `<runtime base>/<name>.sock`.
pub fn control_path(name: &str, explicit: Option<&Path>) -> PathBuf {
    match explicit {
        // Made absolute: the children are told it, and may change
        // directory.
        Some(path) => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        None => runtime_base().join(format!("{name}.sock")),
    }
}

/// Creates `dir` (and its parents) if needed and makes sure it is an
/// owner-only directory belonging to us.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    create_missing_parents(dir)?;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    // Checked and changed through one descriptor opened without following
    // a link, so what is checked is what is changed.
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir);
    let not_ours = |what: String| {
        io::Error::other(format!(
            "{} {what}, where sockvisor needs a directory of uid {} (remove it, or set XDG_RUNTIME_DIR or --control elsewhere)",
            dir.display(),
            Uid::effective()
        ))
    };
    let handle = match opened {
        Ok(handle) => handle,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let what = match fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    "is a symbolic link (never followed here)".to_string()
                }
                Ok(meta) => format!(
                    "is {}",
                    crate::socket_file::describe_type(&meta.file_type())
                ),
                Err(_) => "is not a directory".to_string(),
            };
            return Err(not_ours(what));
        }
        Err(e) => return Err(e),
    };
    let meta = handle.metadata()?;
    if meta.uid() != Uid::effective().as_raw() {
        return Err(not_ours(format!("is owned by uid {}", meta.uid())));
    }
    // Read and write for others go; search stays, as a `--user` sockvisor
    // may need it for its server to reach its notify directory (which
    // guards itself; see `NotifyDir::open_to_group`).
    // And the owner has all of it, whatever the umask was when it was
    // made (a umask of 177 would leave it unsearchable).
    let wanted = 0o700 | (meta.mode() & 0o011);
    if meta.mode() & 0o7777 != wanted {
        handle.set_permissions(fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Creates the missing ancestors of `dir`, each mode 0711 whatever the
/// umask: searchable by everyone, listable and writable only by us. In an
/// image without `/run` (FROM scratch), root's runtime directory is
/// `/run/sockvisor` and sockvisor creates `/run` itself: made owner-only,
/// it would keep a `--user` server from ever reaching its notify socket.
fn create_missing_parents(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .collect();
    for parent in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o711).create(parent) {
            Ok(()) => {
                // Through a descriptor opened without following a link,
                // so the mode goes to the directory just made.
                let handle = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(parent)?;
                handle.set_permissions(fs::Permissions::from_mode(0o711))?;
            }
            // Made by someone else meanwhile: theirs, left as it is.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Prefix of a notify directory's name: `notify.<pid>.<random>`.
const NOTIFY_DIR_PREFIX: &str = "notify.";

/// The directory holding one sockvisor's notify sockets, inside its runtime
/// base (never beside a path the user named, where it could meet a user's
/// directory).
///
/// Its name carries the pid of the sockvisor that made it (for people) and
/// 64 random bits, and it is created with `mkdir`, which fails rather than
/// reuse anything already there. The sockvisor using it holds an exclusive
/// `flock` on it for its whole life, which the kernel releases when that
/// process dies, in whatever pid namespace: a directory nobody holds
/// locked is a leftover. Only notify sockets (`notify-<N>.sock`) are ever
/// removed from it, and it is removed with `rmdir`, which fails on anything
/// else: never recursively.
#[derive(Debug)]
pub struct NotifyDir {
    path: PathBuf,
    _lock: Flock<fs::File>,
}

impl NotifyDir {
    /// Creates a new notify directory in `base` (owner-only, ours), after
    /// clearing what dead sockvisors left there.
    pub fn create(base: &Path) -> io::Result<NotifyDir> {
        ensure_private_dir(base)?;
        clear_leftover_notify_dirs(base);
        Self::make_in(base)
    }

    /// A notify directory in a directory others can write too (the
    /// temporary directory, when the runtime base is someone else's). The
    /// name is new and `mkdir` never reuses a path, so nobody else's
    /// directory is taken; leftovers there are not cleared.
    pub fn create_in_shared(dir: &Path) -> io::Result<NotifyDir> {
        Self::make_in(dir)
    }

    fn make_in(base: &Path) -> io::Result<NotifyDir> {
        // Another sockvisor starting at this moment may take the new,
        // not yet locked directory for a leftover and remove it: then
        // make another.
        for _ in 0..32 {
            let name = format!(
                "{NOTIFY_DIR_PREFIX}{}.{:016x}",
                std::process::id(),
                random_u64()?
            );
            let path = base.join(name);
            fs::DirBuilder::new().mode(0o700).create(&path)?;
            // Gone already, or locked by the one checking it for a
            // leftover (who then removes it): make another.
            let dir = match fs::File::open(&path) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let lock = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, errno)) => return Err(io::Error::from(errno)),
            };
            let locked = lock.metadata()?;
            let still_there = fs::symlink_metadata(&path)
                .is_ok_and(|m| (m.dev(), m.ino()) == (locked.dev(), locked.ino()));
            if still_there {
                return Ok(NotifyDir { path, _lock: lock });
            }
        }
        Err(io::Error::other("the notify directory kept disappearing"))
    }

    /// The notify directory a previous sockvisor program made, handed over
    /// by re-exec with the descriptor that holds its lock (taken again:
    /// the same open file keeps the lock it has).
    pub fn adopt(path: PathBuf, lock: fs::File) -> io::Result<NotifyDir> {
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(NotifyDir { path, _lock: lock })
    }

    /// The descriptor holding the lock, for the re-exec hand-over.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where generation `number`'s notify socket goes.
    /// Lets the processes of group `gid` (the `--user` server) send to the
    /// notify sockets, and nobody else: the directory becomes group `gid`,
    /// mode 02710 (search for the group; set-group-id, so the sockets made
    /// in it belong to the group too, and they are made 0660), and the
    /// directory holding it, if it is ours, searchable (0711: the names in
    /// it cannot be listed, and everything in it guards itself).
    pub fn open_to_group(&self, gid: u32) -> io::Result<()> {
        let dir: &fs::File = &self._lock;
        nix::unistd::fchown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))?;
        dir.set_permissions(fs::Permissions::from_mode(0o2710))?;
        let Some(parent) = self.path.parent() else {
            return Ok(());
        };
        let parent = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(parent)?;
        let meta = parent.metadata()?;
        if meta.uid() == Uid::effective().as_raw() && meta.mode() & 0o011 != 0o011 {
            parent.set_permissions(fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o011))?;
        }
        Ok(())
    }

    pub fn socket_path(&self, number: u32) -> PathBuf {
        self.path.join(format!("notify-{number}.sock"))
    }
}

impl Drop for NotifyDir {
    fn drop(&mut self) {
        remove_notify_dir(&self.path);
    }
}

/// Removes the notify directories in `base` that no running sockvisor
/// holds locked.
fn clear_leftover_notify_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_notify_dir_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let Ok(dir) = fs::File::open(&path) else {
            continue;
        };
        // Held while cleaning, so that nobody else cleans it meanwhile.
        if let Ok(_lock) = Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            tracing::debug!("removing leftover notify directory {}", path.display());
            remove_notify_dir(&path);
        }
    }
}

/// A notify directory's name: `notify.<pid>.<16 hex digits>`.
fn is_notify_dir_name(name: &str) -> bool {
    let Some((pid, random)) = name
        .strip_prefix(NOTIFY_DIR_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes the notify sockets in `dir`, then `dir` itself if that left it
/// empty. Anything else in it stays, and so does the directory.
fn remove_notify_dir(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() {
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            if is_socket && is_notify_socket_name(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    if let Err(err) = fs::remove_dir(dir) {
        tracing::debug!("notify directory {} kept: {err}", dir.display());
    }
}

fn is_notify_socket_name(name: &str) -> bool {
    name.strip_prefix("notify-")
        .and_then(|rest| rest.strip_suffix(".sock"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// 64 bits from the kernel's random source.
fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn names_must_be_plain_file_names() {
        assert!(validate_name("web-1.prod_a").is_ok());
        for bad in ["", "a/b", "..", ".hidden", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_path_defaults_to_the_name_under_the_runtime_base() {
        assert_eq!(control_path("web", None), runtime_base().join("web.sock"));
        let explicit = Path::new("/tmp/x.sock");
        assert_eq!(control_path("web", Some(explicit)), explicit);
        // A relative one is made absolute: the children are told it.
        let relative = control_path("web", Some(Path::new("run/x.sock")));
        assert_eq!(
            relative,
            std::env::current_dir().unwrap().join("run/x.sock")
        );
    }

    #[test]
    fn missing_parents_of_the_runtime_dir_are_searchable_and_the_dir_owner_only() {
        let base = TestDir::new("paths-parents");
        let dir = base.join("run/deeper/sockvisor");
        ensure_private_dir(&dir).unwrap();
        let mode = |p: PathBuf| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(base.join("run")), 0o711);
        assert_eq!(mode(base.join("run/deeper")), 0o711);
        assert_eq!(mode(dir.clone()), 0o700);
        // Again, with everything in place: nothing changes.
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(base.join("run")), 0o711);
        assert_eq!(mode(dir), 0o700);
    }

    #[test]
    fn a_file_where_the_private_dir_should_be_is_refused() {
        let base = TestDir::new("paths-file");
        let dir = base.join("sockvisor");
        fs::write(&dir, "not a directory").unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            err.to_string()
                .contains("sockvisor is a regular file, where sockvisor needs a directory of uid"),
            "{err}"
        );
        // A symbolic link is named as one (and not followed).
        let link = base.join("linked");
        std::os::unix::fs::symlink(base.join("elsewhere"), &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(
            err.to_string()
                .contains("linked is a symbolic link (never followed here)"),
            "{err}"
        );
    }

    fn bind_stale_socket(path: &Path) {
        drop(std::os::unix::net::UnixDatagram::bind(path).unwrap());
    }

    #[test]
    fn notify_dir_names_carry_a_pid_and_64_random_bits() {
        assert!(is_notify_dir_name("notify.123.00112233aabbccdd"));
        for other in [
            "notify.123",
            "notify..00112233aabbccdd",
            "notify.12a.00112233aabbccdd",
            "notify.123.0011",
            "app.d",
            "default.sock",
        ] {
            assert!(!is_notify_dir_name(other), "{other}");
        }
    }

    #[test]
    fn each_notify_dir_is_new_and_removed_with_its_sockets() {
        let base = TestDir::new("paths-fresh");
        let first = NotifyDir::create(base.path()).unwrap();
        let second = NotifyDir::create(base.path()).unwrap();
        assert_ne!(first.path(), second.path());
        let socket = first.socket_path(7);
        bind_stale_socket(&socket);
        let kept = first.path().to_path_buf();
        drop(first);
        assert!(!kept.exists());
        drop(second);
    }

    #[test]
    fn a_dead_sockvisors_notify_dir_is_cleared_at_start() {
        let base = TestDir::new("paths-leftover");
        let leftover = base.join("notify.4242.00112233aabbccdd");
        fs::create_dir(&leftover).unwrap();
        bind_stale_socket(&leftover.join("notify-3.sock"));
        let dir = NotifyDir::create(base.path()).unwrap();
        assert!(!leftover.exists());
        drop(dir);
    }

    #[test]
    fn leftover_cleaning_keeps_anything_that_is_not_a_notify_socket() {
        let base = TestDir::new("paths-foreign");
        let leftover = base.join("notify.4242.00112233aabbccdd");
        fs::create_dir(&leftover).unwrap();
        bind_stale_socket(&leftover.join("notify-1.sock"));
        fs::write(leftover.join("notify-2.sock"), "a file, not a socket").unwrap();
        fs::write(leftover.join("data.conf"), "x").unwrap();
        let users = base.join("app.d");
        fs::create_dir(&users).unwrap();
        fs::write(users.join("data.conf"), "x").unwrap();
        let dir = NotifyDir::create(base.path()).unwrap();
        assert!(!leftover.join("notify-1.sock").exists());
        assert_eq!(
            fs::read_to_string(leftover.join("notify-2.sock")).unwrap(),
            "a file, not a socket"
        );
        assert_eq!(fs::read_to_string(leftover.join("data.conf")).unwrap(), "x");
        assert_eq!(fs::read_to_string(users.join("data.conf")).unwrap(), "x");
        drop(dir);
    }

    #[test]
    fn a_notify_dir_in_use_is_left_alone_whatever_its_pid() {
        let base = TestDir::new("paths-running");
        let in_use = NotifyDir::create(base.path()).unwrap();
        let socket = in_use.socket_path(1);
        bind_stale_socket(&socket);
        // A second sockvisor starting beside it (here: in the same process,
        // as one in another pid namespace would see a pid it cannot find).
        let other = NotifyDir::create(base.path()).unwrap();
        assert!(socket.exists());
        drop(other);
        drop(in_use);
    }

    #[test]
    fn sockvisors_starting_together_never_fail_to_make_their_notify_directory() {
        // Each start clears the directories nobody holds locked, and may
        // take another's new one, not locked yet, for a leftover.
        let dir = TestDir::new("notify-race");
        let base = dir.path().to_path_buf();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let base = base.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .filter_map(|_| NotifyDir::create(&base).err().map(|e| e.to_string()))
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        let failures: Vec<String> = starts
            .into_iter()
            .flat_map(|start| start.join().unwrap())
            .collect();
        assert_eq!(failures, Vec::<String>::new());
    }
}
