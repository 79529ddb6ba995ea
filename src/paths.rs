//! Where sockvisor keeps its runtime files: the control socket (found by
//! name, so `sockvisor upgrade` in another shell or `docker exec` needs no
//! flags) and the private directory holding the generations' notify
//! sockets.
//!
//! Root uses `/run/sockvisor`; other users `$XDG_RUNTIME_DIR/sockvisor`, or
//! `/tmp/sockvisor-<uid>` without it. The directory is owner-only, and one
//! owned by somebody else is refused rather than used.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

/// Name used when `--name` is not given.
pub const DEFAULT_NAME: &str = "default";

/// The base directory for this user's sockvisor runtime files.
pub fn runtime_base() -> PathBuf {
    let uid = Uid::effective();
    if uid.is_root() {
        return PathBuf::from("/run/sockvisor");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("sockvisor"),
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
            "invalid name '{name}' (use up to 64 letters, digits, '-', '_' or '.')"
        ))
    }
}

/// The control socket path: `explicit` (from `--control` or
/// `SOCKVISOR_CONTROL`) or `<runtime base>/<name>.sock`.
pub fn control_path(name: &str, explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(path) => path.to_path_buf(),
        None => runtime_base().join(format!("{name}.sock")),
    }
}

/// Creates `dir` (and its parents) if needed and makes sure it is an
/// owner-only directory belonging to us.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() {
        return Err(io::Error::other(format!(
            "{} is not a directory owned by this user",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A directory that only exists while this sockvisor runs.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `<control socket>.d`, owner-only. Named after the instance
    /// rather than the pid, so that what a killed sockvisor left behind is
    /// cleared by the next start of the same instance (which owns the
    /// control socket, so no live sockvisor uses it).
    pub fn beside(control: &Path) -> io::Result<PrivateDir> {
        let mut path = control.as_os_str().to_owned();
        path.push(".d");
        let path = PathBuf::from(path);
        // Removes a symlink itself, never what it points to.
        let _ = fs::remove_dir_all(&path);
        ensure_private_dir(&path)?;
        Ok(PrivateDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
