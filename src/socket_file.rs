//! Socket files at paths sockvisor binds: unix `--listen` paths, the control
//! socket and the notify sockets.
//!
//! One rule for all of them. What is at a path before sockvisor binds it is
//! replaced only when it is a socket that nobody listens on any more (what a
//! crashed process leaves behind). A live socket belongs to somebody else.
//! Anything that is not a socket (a regular file, a directory, a symbolic
//! link whatever it points to, a FIFO, a device) belongs to a person and is
//! never touched. A file sockvisor bound is removed later only if it is still
//! that very socket (a socket, same device and inode): somebody may have
//! replaced it.
//!
//! This module must not decide which paths to use; callers name them.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

/// Why a path cannot be bound.
#[derive(Debug)]
pub enum Occupied {
    /// A process listens on the socket there.
    Live,
    /// Something that is not a socket; the text names what it is.
    NotASocket(&'static str),
    /// The path could not be inspected or the stale socket not removed.
    Io(io::Error),
}

/// Makes `path` free for `bind`: nothing there is fine, a stale socket is
/// removed, anything else is refused and left exactly as it was.
pub fn clear_stale(path: &Path) -> Result<(), Occupied> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Occupied::Io(err)),
    };
    if !meta.file_type().is_socket() {
        return Err(Occupied::NotASocket(describe_type(&meta.file_type())));
    }
    if is_live(path) {
        return Err(Occupied::Live);
    }
    fs::remove_file(path).map_err(Occupied::Io)
}

/// What a non-socket file is, for an error message.
pub fn describe_type(kind: &fs::FileType) -> &'static str {
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a socket"
    }
}

/// True when connecting to the stream socket file at `path` reaches a
/// listener. A full backlog (`EAGAIN`) also means somebody listens.
pub fn is_live(path: &Path) -> bool {
    let Ok(fd) = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    !matches!(
        socket::connect(fd.as_raw_fd(), &addr),
        Err(Errno::ECONNREFUSED | Errno::ENOENT)
    )
}

/// A socket file sockvisor bound, removed on drop if it is still the same
/// file.
#[derive(Debug)]
pub struct BoundFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundFile {
    /// Records the identity of the file just bound at `path`.
    pub fn identify(path: &Path) -> io::Result<BoundFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(BoundFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// A file a previous sockvisor program bound, handed over by re-exec:
    /// its path, device and inode.
    pub fn adopt(path: PathBuf, dev: u64, ino: u64) -> BoundFile {
        BoundFile { path, dev, ino }
    }

    /// Its identity, for the re-exec hand-over.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while the file at the path is the one that was bound. The
    /// kernel reuses a freed inode number at once, so the file must also
    /// still be a socket: a file somebody put there in its place is not.
    pub fn is_still_ours(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|meta| {
            meta.file_type().is_socket() && meta.dev() == self.dev && meta.ino() == self.ino
        })
    }
}

impl Drop for BoundFile {
    fn drop(&mut self) {
        if self.is_still_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_missing_path_is_free() {
        let dir = TestDir::new("socket-file-missing");
        assert!(clear_stale(&dir.join("nothing.sock")).is_ok());
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = TestDir::new("socket-file-stale");
        let path = dir.join("old.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(fs::symlink_metadata(&path).is_ok());
        assert!(clear_stale(&path).is_ok());
        assert!(fs::symlink_metadata(&path).is_err());
    }

    #[test]
    fn a_live_socket_is_refused_and_kept() {
        let dir = TestDir::new("socket-file-live");
        let path = dir.join("live.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        assert!(matches!(clear_stale(&path), Err(Occupied::Live)));
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    }

    #[test]
    fn a_regular_file_is_refused_and_its_data_kept() {
        let dir = TestDir::new("socket-file-file");
        let path = dir.join("precious");
        fs::write(&path, "precious\n").unwrap();
        assert!(matches!(
            clear_stale(&path),
            Err(Occupied::NotASocket("a regular file"))
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious\n");
    }

    #[test]
    fn a_directory_is_refused_and_its_contents_kept() {
        let dir = TestDir::new("socket-file-dir");
        let path = dir.join("app");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("data.conf"), "x").unwrap();
        assert!(matches!(
            clear_stale(&path),
            Err(Occupied::NotASocket("a directory"))
        ));
        assert_eq!(fs::read_to_string(path.join("data.conf")).unwrap(), "x");
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_stale_socket() {
        let dir = TestDir::new("socket-file-link");
        let target = dir.join("real.sock");
        drop(UnixListener::bind(&target).unwrap());
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            clear_stale(&link),
            Err(Occupied::NotASocket("a symbolic link"))
        ));
        assert!(fs::symlink_metadata(&link).is_ok());
        assert!(fs::symlink_metadata(&target).is_ok());
    }

    #[test]
    fn a_bound_file_replaced_by_somebody_else_is_not_removed() {
        let dir = TestDir::new("socket-file-replaced");
        let path = dir.join("ours.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let bound = BoundFile::identify(&path).unwrap();
        drop(listener);
        fs::remove_file(&path).unwrap();
        fs::write(&path, "somebody else's").unwrap();
        drop(bound);
        assert_eq!(fs::read_to_string(&path).unwrap(), "somebody else's");
    }

    #[test]
    fn a_bound_file_still_ours_is_removed() {
        let dir = TestDir::new("socket-file-ours");
        let path = dir.join("ours.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        drop(BoundFile::identify(&path).unwrap());
        assert!(fs::symlink_metadata(&path).is_err());
    }
}
