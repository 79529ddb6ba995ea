//! `--watch`: the development loop. Files and directories (recursively) are
//! watched with inotify; a change starts an upgrade once the writes have
//! settled (`--watch-delay`, so a burst of writes is one upgrade). A change
//! while a generation is starting queues exactly one more upgrade.
//!
//! Noise is ignored: anything under `.git/`, `target/`, `node_modules/` or
//! `__pycache__/` (or the temporary `target??????` directory cargo creates
//! `target/` through), editor files (`*.swp`, `*.swx`, `*.swo`, `*~`, `.#*`,
//! `#*#`, vim's `4913`), and names matching a `--watch-ignore` glob (`*`
//! and `?`, matched against the file name).
//!
//! This module owns the inotify descriptor and the debounce; the event loop
//! polls the descriptor and asks when an upgrade is due.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::deadline;

/// Directories whose contents never start an upgrade.
const IGNORED_DIRS: [&str; 4] = [".git", "target", "node_modules", "__pycache__"];

/// What a watched change may do.
pub struct Watcher {
    /// As given, for a re-exec to watch them again.
    pub paths: Vec<PathBuf>,
    inotify: Inotify,
    /// Watched directory of each descriptor, and the one file it is for
    /// when a single file was named.
    dirs: HashMap<WatchDescriptor, (PathBuf, Option<std::ffi::OsString>)>,
    pub ignore: Vec<String>,
    pub delay: Duration,
    /// When the settled change is due.
    due: Option<Instant>,
    /// A change arrived while a generation was starting.
    queued: bool,
    /// The last path that changed, for the log.
    last_change: Option<PathBuf>,
    /// sockvisor's own stdout and stderr when they are files (device,
    /// inode): `2>log.txt` in a watched directory must not be a change,
    /// or every log line would start an upgrade.
    own_output: Vec<(u64, u64)>,
}

/// The device and inode of stdout and stderr, those that are regular files.
fn own_output_files() -> Vec<(u64, u64)> {
    [std::io::stdout().as_fd(), std::io::stderr().as_fd()]
        .into_iter()
        .filter_map(|fd| nix::sys::stat::fstat(fd).ok())
        .filter(|stat| {
            nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode)
                .contains(nix::sys::stat::SFlag::S_IFREG)
        })
        .map(|stat| (stat.st_dev, stat.st_ino))
        .collect()
}

fn watch_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_ATTRIB
}

impl Watcher {
    /// Watches `paths` (files, or directories recursively).
    pub fn new(paths: &[PathBuf], ignore: Vec<String>, delay: Duration) -> Result<Watcher, String> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot watch files: {e}"))?;
        let mut watcher = Watcher {
            paths: paths.to_vec(),
            inotify,
            dirs: HashMap::new(),
            ignore,
            delay,
            due: None,
            queued: false,
            last_change: None,
            own_output: own_output_files(),
        };
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|e| {
                format!(
                    "cannot watch {}: {e} (give an existing file or directory)",
                    path.display()
                )
            })?;
            if meta.is_dir() {
                watcher.watch_tree(path)?;
            } else if !meta.is_file() {
                return Err(format!(
                    "cannot watch {}: it is not a file or a directory (give the source files, or their directory)",
                    path.display()
                ));
            } else {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                let dir = dir.unwrap_or(Path::new("."));
                let wd = watcher
                    .inotify
                    .add_watch(dir, watch_flags())
                    .map_err(|e| format!("cannot watch {}: {e}", path.display()))?;
                watcher.dirs.insert(
                    wd,
                    (dir.to_path_buf(), path.file_name().map(OsStr::to_owned)),
                );
            }
        }
        Ok(watcher)
    }

    fn watch_tree(&mut self, dir: &Path) -> Result<(), String> {
        let wd = self
            .inotify
            .add_watch(dir, watch_flags())
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        self.dirs.insert(wd, (dir.to_path_buf(), None));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !is_ignored_dir(&entry.file_name()) {
                self.watch_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads what changed; a relevant change (re)starts the settle delay.
    pub fn on_readable(&mut self, now: Instant) {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                let Some((dir, only)) = self.dirs.get(&event.wd).cloned() else {
                    continue;
                };
                let Some(name) = event.name else {
                    continue;
                };
                if only.as_ref().is_some_and(|only| *only != name) {
                    continue;
                }
                let path = dir.join(&name);
                if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                    if event
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        && !is_ignored_dir(&name)
                    {
                        let _ = self.watch_tree(&path);
                    }
                    continue;
                }
                if self.is_noise(&path) || self.is_own_output(&path) {
                    continue;
                }
                self.last_change = Some(path);
                self.due = Some(deadline::after(now, self.delay));
            }
        }
    }

    /// sockvisor's own log (or the server's, sharing it) being written.
    fn is_own_output(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        !self.own_output.is_empty()
            && std::fs::metadata(path)
                .is_ok_and(|meta| self.own_output.contains(&(meta.dev(), meta.ino())))
    }

    fn is_noise(&self, path: &Path) -> bool {
        let in_ignored_dir = path.components().any(|c| is_ignored_dir(c.as_os_str()));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        in_ignored_dir
            || is_editor_file(&name)
            || self.ignore.iter().any(|g| glob_matches(g, &name))
    }

    /// When `on_tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due
    }

    /// The settled change that is due now, if any: the event loop starts
    /// an upgrade unless a generation is starting, in which case exactly
    /// one more upgrade is queued for when it has finished.
    pub fn take_due(&mut self, now: Instant, starting: bool) -> Option<PathBuf> {
        if self.due.is_some_and(|due| due <= now) {
            self.due = None;
            self.queued = true;
        }
        if self.queued && !starting {
            self.queued = false;
            return Some(self.last_change.clone().unwrap_or_default());
        }
        None
    }
}

/// One of the ignored directories, or a temporary directory it is being
/// created through (`target` plus six random characters, as cargo does).
fn is_ignored_dir(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    IGNORED_DIRS.iter().any(|d| {
        name == *d
            || name.strip_prefix(d).is_some_and(|rest| {
                rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            })
    })
}

/// Files editors write beside the ones being edited.
fn is_editor_file(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

/// `*` (any run of characters) and `?` (one character).
pub fn glob_matches(glob: &str, name: &str) -> bool {
    fn matches(glob: &[char], name: &[char]) -> bool {
        match glob.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
            Some(('?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
            Some((c, rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
        }
    }
    let glob: Vec<char> = glob.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches(&glob, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("*.log", "app.log"));
        assert!(!glob_matches("*.log", "app.log.1"));
        assert!(glob_matches("data-?.json", "data-1.json"));
        assert!(!glob_matches("data-?.json", "data-10.json"));
        assert!(glob_matches("*", ""));
    }

    #[test]
    fn build_directories_and_their_temporary_names_are_ignored() {
        for name in [
            "target",
            "targetrONb10",
            "node_modules",
            ".git",
            "__pycache__",
        ] {
            assert!(is_ignored_dir(OsStr::new(name)), "{name}");
        }
        for name in ["src", "targets", "target-dir", "targetABCDEFG"] {
            assert!(!is_ignored_dir(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn editor_files_are_noise() {
        for name in [
            ".server.py.swp",
            "server.py~",
            ".#server.py",
            "#server.py#",
            "4913",
        ] {
            assert!(is_editor_file(name), "{name}");
        }
        assert!(!is_editor_file("server.py"));
    }

    #[test]
    fn a_burst_of_changes_is_one_upgrade_after_the_delay() {
        let dir = crate::test_dir::TestDir::new("watch-burst");
        let mut watcher = Watcher::new(
            &[dir.path().to_path_buf()],
            vec![],
            Duration::from_millis(300),
        )
        .unwrap();
        let now = Instant::now();
        for i in 0..5 {
            std::fs::write(dir.join("app.py"), format!("v{i}")).unwrap();
        }
        watcher.on_readable(now);
        assert_eq!(
            watcher.next_deadline(),
            Some(now + Duration::from_millis(300))
        );
        assert_eq!(watcher.take_due(now, false), None, "not settled yet");
        let due = watcher.take_due(now + Duration::from_millis(300), false);
        assert_eq!(due, Some(dir.join("app.py")));
        assert_eq!(
            watcher.take_due(now + Duration::from_secs(1), false),
            None,
            "once"
        );
    }

    #[test]
    fn a_change_while_starting_queues_exactly_one_more() {
        let dir = crate::test_dir::TestDir::new("watch-queue");
        let mut watcher =
            Watcher::new(&[dir.path().to_path_buf()], vec![], Duration::ZERO).unwrap();
        let now = Instant::now();
        std::fs::write(dir.join("a.js"), "1").unwrap();
        watcher.on_readable(now);
        assert_eq!(
            watcher.take_due(now, true),
            None,
            "a generation is starting"
        );
        std::fs::write(dir.join("a.js"), "2").unwrap();
        watcher.on_readable(now);
        assert_eq!(watcher.take_due(now, true), None);
        assert!(
            watcher.take_due(now, false).is_some(),
            "one once it has finished"
        );
        assert_eq!(watcher.take_due(now, false), None, "and only one");
    }

    #[test]
    fn sockvisors_own_log_in_a_watched_directory_is_no_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = crate::test_dir::TestDir::new("watch-own-log");
        std::fs::write(dir.join("log.txt"), "").unwrap();
        let mut watcher =
            Watcher::new(&[dir.path().to_path_buf()], Vec::new(), Duration::ZERO).unwrap();
        // As if sockvisor had been started with 2>log.txt.
        let log = std::fs::metadata(dir.join("log.txt")).unwrap();
        watcher.own_output = vec![(log.dev(), log.ino())];
        let now = Instant::now();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("log.txt"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"a log line\n"))
            .unwrap();
        watcher.on_readable(now);
        assert_eq!(watcher.next_deadline(), None, "a log line is no change");
        std::fs::write(dir.join("app.py"), "x").unwrap();
        watcher.on_readable(now);
        assert!(watcher.next_deadline().is_some(), "a source file is");
    }

    #[test]
    fn a_device_cannot_be_watched() {
        let why = Watcher::new(&[PathBuf::from("/dev/null")], Vec::new(), Duration::ZERO)
            .err()
            .unwrap();
        assert!(why.contains("it is not a file or a directory"), "{why}");
    }

    #[test]
    fn noise_and_ignored_names_start_nothing() {
        let dir = crate::test_dir::TestDir::new("watch-noise");
        std::fs::create_dir(dir.join("node_modules")).unwrap();
        let mut watcher = Watcher::new(
            &[dir.path().to_path_buf()],
            vec!["*.log".into()],
            Duration::ZERO,
        )
        .unwrap();
        let now = Instant::now();
        std::fs::write(dir.join(".app.py.swp"), "x").unwrap();
        std::fs::write(dir.join("debug.log"), "x").unwrap();
        std::fs::write(dir.join("node_modules").join("dep.js"), "x").unwrap();
        std::fs::create_dir(dir.join("__pycache__")).unwrap();
        std::fs::write(dir.join("__pycache__").join("app.pyc"), "x").unwrap();
        watcher.on_readable(now);
        assert_eq!(watcher.next_deadline(), None);
    }

    #[test]
    fn a_new_subdirectory_is_watched_too() {
        let dir = crate::test_dir::TestDir::new("watch-subdir");
        let mut watcher =
            Watcher::new(&[dir.path().to_path_buf()], vec![], Duration::ZERO).unwrap();
        let now = Instant::now();
        std::fs::create_dir(dir.join("lib")).unwrap();
        watcher.on_readable(now);
        std::fs::write(dir.join("lib").join("util.py"), "x").unwrap();
        watcher.on_readable(now);
        assert_eq!(
            watcher.take_due(now, false),
            Some(dir.join("lib").join("util.py"))
        );
    }

    #[test]
    fn a_single_file_is_watched_through_its_directory() {
        let dir = crate::test_dir::TestDir::new("watch-file");
        std::fs::write(dir.join("main.go"), "1").unwrap();
        let mut watcher = Watcher::new(&[dir.join("main.go")], vec![], Duration::ZERO).unwrap();
        let now = Instant::now();
        std::fs::write(dir.join("other.go"), "x").unwrap();
        watcher.on_readable(now);
        assert_eq!(
            watcher.next_deadline(),
            None,
            "another file in the directory"
        );
        // An editor that writes a new file and renames it over the old one.
        std::fs::write(dir.join(".main.go.new"), "2").unwrap();
        std::fs::rename(dir.join(".main.go.new"), dir.join("main.go")).unwrap();
        watcher.on_readable(now);
        assert!(watcher.take_due(now, false).is_some());
    }

    #[test]
    fn a_missing_path_is_a_clear_error() {
        let err = Watcher::new(&[PathBuf::from("/nonexistent/src")], vec![], Duration::ZERO)
            .err()
            .unwrap();
        assert!(err.starts_with("cannot watch /nonexistent/src"), "{err}");
    }
}
