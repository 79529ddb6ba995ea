//! `--pidfile`: sockvisor's pid, written atomically at start and removed at
//! exit. The pid never changes across upgrades, so the file stays true.
//!
//! The path is the user's, so the rules are narrow. What may be replaced is
//! a pidfile: a regular file holding one pid, of a process that is gone (or
//! of this very process: a container's PID 1 after a restart). A pidfile of
//! a running process, or anything that is not a pidfile (a file with other
//! contents, a directory, a symbolic link), is refused and left as it was.
//! At exit the file is removed only if it still holds our pid. The temporary
//! file used for the atomic write is created new (`O_EXCL`) under a name
//! that carries our pid, so it never overwrites anything.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Longest file accepted as a pidfile when deciding whether to replace it.
const MAX_PIDFILE_LEN: u64 = 64;

#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    contents: String,
}

/// Why the pidfile was not written.
#[derive(Debug)]
pub enum PidFileError {
    /// Something that is not a pidfile is at the path.
    NotAPidFile {
        path: PathBuf,
        what: String,
    },
    /// The pidfile names a process that runs.
    Running {
        path: PathBuf,
        pid: i32,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
}

impl fmt::Display for PidFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidFileError::NotAPidFile { path, what } => write!(
                f,
                "--pidfile {}: {what}, not a pidfile (sockvisor never replaces it; remove it yourself or choose another path)",
                path.display()
            ),
            PidFileError::Running { path, pid } => write!(
                f,
                "--pidfile {}: it names pid {pid}, which is running (another sockvisor? stop it, or choose another path)",
                path.display()
            ),
            PidFileError::Io { path, err } => {
                write!(f, "cannot write pidfile {}: {err}", path.display())
            }
        }
    }
}

impl PidFile {
    /// Writes `<pid>\n` to a new temporary file beside `path` and renames it
    /// into place, so a reader never sees a partial file.
    pub fn write(path: &Path, pid: u32) -> Result<PidFile, PidFileError> {
        check_replaceable(path, pid)?;
        let io_error = |err| PidFileError::Io {
            path: path.to_path_buf(),
            err,
        };
        let contents = format!("{pid}\n");
        let temp = temp_path(path, pid);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .map_err(io_error)?;
        let written = file
            .write_all(contents.as_bytes())
            .and_then(|()| fs::rename(&temp, path));
        if let Err(err) = written {
            // Ours: created just now with O_EXCL.
            let _ = fs::remove_file(&temp);
            return Err(io_error(err));
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            contents,
        })
    }
}

impl PidFile {
    /// The pidfile a previous sockvisor program wrote (same pid), handed
    /// over by re-exec.
    pub fn adopt(path: PathBuf, contents: String) -> PidFile {
        PidFile { path, contents }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contents(&self) -> &str {
        &self.contents
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Leave it alone if somebody else has written it since.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.<name>.<pid>.tmp` in the pidfile's directory.
fn temp_path(path: &Path, pid: u32) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.{pid}.tmp"))
}

/// Nothing at `path`, or a stale pidfile: fine. Anything else is refused.
fn check_replaceable(path: &Path, own_pid: u32) -> Result<(), PidFileError> {
    let refuse = |what: &str| PidFileError::NotAPidFile {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(PidFileError::Io {
                path: path.to_path_buf(),
                err,
            });
        }
    };
    if !meta.is_file() {
        return Err(refuse(&format!(
            "it is {}",
            crate::socket_file::describe_type(&meta.file_type())
        )));
    }
    if meta.len() > MAX_PIDFILE_LEN {
        return Err(refuse("it is a file with other contents"));
    }
    let text = fs::read_to_string(path).unwrap_or_default();
    let Some(pid) = parse_pid(&text) else {
        return Err(refuse("it is a file with other contents"));
    };
    if pid != own_pid as i32 && process_runs(pid) {
        return Err(PidFileError::Running {
            path: path.to_path_buf(),
            pid,
        });
    }
    Ok(())
}

/// A pidfile's contents: a positive decimal pid, optionally followed by
/// one newline.
fn parse_pid(text: &str) -> Option<i32> {
    let digits = text.strip_suffix('\n').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|pid| *pid > 0)
}

fn process_runs(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    /// The pid of a process that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn pidfile_contents_are_one_pid_and_an_optional_newline() {
        assert_eq!(parse_pid("123\n"), Some(123));
        assert_eq!(parse_pid("123"), Some(123));
        for bad in [
            "",
            "\n",
            "0\n",
            "12 3",
            "123\n\n",
            "-5",
            "abc",
            "precious\n",
        ] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_stale_pidfile_is_replaced_and_removed_at_exit() {
        let dir = TestDir::new("pidfile-stale");
        let path = dir.join("app.pid");
        fs::write(&path, format!("{}\n", dead_pid())).unwrap();
        let pidfile = PidFile::write(&path, std::process::id()).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pidfile);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_is_not_a_pidfile_is_refused_and_kept() {
        let dir = TestDir::new("pidfile-other");
        let path = dir.join("hosts");
        fs::write(&path, "127.0.0.1 localhost\n").unwrap();
        let err = PidFile::write(&path, std::process::id()).unwrap_err();
        assert!(err.to_string().contains("not a pidfile"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "127.0.0.1 localhost\n");
    }

    #[test]
    fn a_directory_or_symlink_is_refused_and_kept() {
        let dir = TestDir::new("pidfile-dir");
        let sub = dir.join("run.pid");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("keep"), "x").unwrap();
        let err = PidFile::write(&sub, std::process::id()).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        assert!(sub.join("keep").exists());
        let target = dir.join("target");
        fs::write(&target, format!("{}\n", dead_pid())).unwrap();
        let link = dir.join("link.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = PidFile::write(&link, std::process::id()).unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn a_pidfile_of_a_running_process_is_refused() {
        let dir = TestDir::new("pidfile-running");
        let path = dir.join("app.pid");
        // Our parent (the test runner's parent) runs.
        let running = std::os::unix::process::parent_id();
        fs::write(&path, format!("{running}\n")).unwrap();
        let err = PidFile::write(&path, std::process::id()).unwrap_err();
        assert!(err.to_string().contains("which is running"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{running}\n"));
    }

    #[test]
    fn a_pidfile_holding_our_own_pid_is_replaced() {
        let dir = TestDir::new("pidfile-own");
        let path = dir.join("app.pid");
        fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(PidFile::write(&path, std::process::id()).is_ok());
    }

    #[test]
    fn a_file_beside_with_the_old_temporary_name_is_not_touched() {
        let dir = TestDir::new("pidfile-temp");
        let path = dir.join("app.pid");
        let neighbour = dir.join("app.pid.tmp");
        fs::write(&neighbour, "precious").unwrap();
        let pidfile = PidFile::write(&path, std::process::id()).unwrap();
        assert_eq!(fs::read_to_string(&neighbour).unwrap(), "precious");
        drop(pidfile);
    }

    #[test]
    fn a_pidfile_rewritten_by_somebody_else_is_left_at_exit() {
        let dir = TestDir::new("pidfile-rewritten");
        let path = dir.join("app.pid");
        let pidfile = PidFile::write(&path, std::process::id()).unwrap();
        fs::write(&path, "99999\n").unwrap();
        drop(pidfile);
        assert_eq!(fs::read_to_string(&path).unwrap(), "99999\n");
    }
}
