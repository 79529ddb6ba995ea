//! Opening the sockets described by [`ListenSpec`]s: socket, options, bind,
//! listen. Everything is bound before any child starts and held for the life
//! of sockvisor.
//!
//! This module owns the listening descriptors and the unix socket files it
//! creates (removed again when the [`Listener`] is dropped, so a failed start
//! leaves no stray file). It never accepts a connection: the data path belongs
//! to the children.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, UnixAddr,
    sockopt,
};
use nix::sys::stat::{Mode, umask};

use super::spec::{ListenAddress, ListenSpec};
use crate::socket_file::{self, BoundFile, Occupied};

/// Backlog used when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: i32 = 4096;

/// A bound socket, ready to hand to children.
#[derive(Debug)]
pub struct Listener {
    pub spec: ListenSpec,
    fd: OwnedFd,
    /// The address the kernel actually bound (port 0 resolved).
    pub bound: String,
    /// The socket file we created, removed on drop if it is still ours.
    socket_file: Option<BoundFile>,
}

impl Listener {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A listener handed over by re-exec.
    pub fn adopt(
        fd: OwnedFd,
        spec: ListenSpec,
        bound: String,
        socket_file: Option<BoundFile>,
    ) -> Listener {
        Listener {
            spec,
            fd,
            bound,
            socket_file,
        }
    }

    /// The socket file it bound, if any.
    pub fn socket_file(&self) -> Option<&BoundFile> {
        self.socket_file.as_ref()
    }

    /// A socket received from the service manager at `number`.
    pub(crate) fn inherited(fd: OwnedFd, number: i32, name: String) -> Listener {
        let address = ListenAddress::Inherited(number);
        let bound = describe_socket(&fd).unwrap_or_else(|| address.to_string());
        Listener {
            spec: ListenSpec {
                text: address.to_string(),
                address,
                name,
                backlog: None,
                reuseport: false,
                mode: None,
                v6only: false,
            },
            fd,
            bound,
            socket_file: None,
        }
    }
}

/// Why a listener could not be opened. `Display` gives one line: the spec,
/// the OS reason and, where there is one, the fix.
#[derive(Debug)]
pub struct BindError {
    pub spec: String,
    pub reason: String,
    pub hint: Option<String>,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on '{}': {}", self.spec, self.reason)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for BindError {}

/// Binds every spec in order. On failure, listeners opened so far are dropped
/// (and their socket files removed) before the error is returned.
pub fn bind_all(specs: &[ListenSpec]) -> Result<Vec<Listener>, BindError> {
    specs.iter().map(bind).collect()
}

/// Opens one listener.
pub fn bind(spec: &ListenSpec) -> Result<Listener, BindError> {
    let fail = |errno: Errno, hint: Option<String>| BindError {
        spec: spec.text.clone(),
        reason: errno.desc().to_lowercase(),
        hint,
    };
    let backlog = spec
        .backlog
        .map_or_else(default_backlog, |n| i32::try_from(n).unwrap_or(i32::MAX));
    let (fd, socket_file) = match &spec.address {
        ListenAddress::Tcp(addr) => (bind_inet(spec, *addr, SockType::Stream, backlog), None),
        ListenAddress::Udp(addr) => (bind_inet(spec, *addr, SockType::Datagram, backlog), None),
        ListenAddress::UnixAbstract(name) => {
            let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| fail(e, None))?;
            (bind_unix(&addr, backlog, None), None)
        }
        ListenAddress::Inherited(_) => {
            return Err(BindError {
                spec: spec.text.clone(),
                reason: "an inherited socket is taken over, not bound".into(),
                hint: None,
            });
        }
        ListenAddress::UnixPath(path) => {
            remove_stale_socket(spec, path)?;
            let addr = UnixAddr::new(path.as_path()).map_err(|e| fail(e, None))?;
            let fd = bind_unix(&addr, backlog, Some(spec.mode.unwrap_or(0o666)));
            let file = match &fd {
                Ok(_) => Some(BoundFile::identify(path).map_err(|e| fail(errno_of(&e), None))?),
                Err(_) => None,
            };
            (fd, file)
        }
    };
    let fd = fd.map_err(|errno| fail(errno, hint_for(spec, errno)))?;
    let bound = describe_bound(&spec.address, &fd);
    Ok(Listener {
        spec: spec.clone(),
        fd,
        bound,
        socket_file,
    })
}

fn bind_inet(
    spec: &ListenSpec,
    addr: SocketAddr,
    kind: SockType,
    backlog: i32,
) -> Result<OwnedFd, Errno> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if kind == SockType::Stream {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if spec.reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    match addr {
        SocketAddr::V4(v4) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            // Set explicitly so behaviour does not depend on the host's
            // net.ipv6.bindv6only: dual-stack unless `v6only` was asked for.
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &spec.v6only)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?
        }
    }
    if kind == SockType::Stream {
        listen(&fd, backlog)?;
    }
    Ok(fd)
}

/// Binds a unix stream socket. For a path, the file is created with
/// `mode` (owner-only when `None`) by the umask in force during `bind`, so
/// it never exists with another mode and no path is changed afterwards: a
/// `chmod` of the path would follow a symbolic link that someone who can
/// write the directory swapped in after the bind.
pub(crate) fn bind_unix(
    addr: &UnixAddr,
    backlog: i32,
    mode: Option<u32>,
) -> Result<OwnedFd, Errno> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // The kernel gives a new socket file 0777 less the umask. sockvisor is
    // single-threaded, so no other file is created under this umask.
    let mode = mode.unwrap_or(0o600) & 0o777;
    let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = socket::bind(fd.as_raw_fd(), addr);
    umask(previous);
    bound?;
    listen(&fd, backlog)?;
    Ok(fd)
}

/// `listen(2)` with the backlog as given. The kernel caps it at
/// `net.core.somaxconn` itself; the C library's `SOMAXCONN` (128 on musl,
/// 4096 on glibc) is no limit of the kernel's, so it is not applied here
/// (nix's `Backlog::new` applies it and refuses larger values).
fn listen(fd: &OwnedFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: `fd` is an open socket owned by the caller for the duration
    // of the call; listen(2) reads no memory of ours.
    let result = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    Errno::result(result).map(drop)
}

/// A socket file left behind by a crashed process is replaced; one that a
/// live process still listens on, or a path that is not a socket, is not.
fn remove_stale_socket(spec: &ListenSpec, path: &Path) -> Result<(), BindError> {
    let fail = |reason: String, hint: &str| BindError {
        spec: spec.text.clone(),
        reason,
        hint: Some(hint.to_string()),
    };
    socket_file::clear_stale(path).map_err(|occupied| match occupied {
        Occupied::NotASocket(what) => fail(
            format!("{} is {what}, not a socket", path.display()),
            "sockvisor never replaces it; remove it yourself or choose another path",
        ),
        Occupied::Live => fail(
            format!("another process is listening on {}", path.display()),
            "stop it or choose another path",
        ),
        Occupied::Io(err) => fail(err.to_string().to_lowercase(), "check the path"),
    })
}

fn errno_of(err: &std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// The fix to suggest for the common failures.
fn hint_for(spec: &ListenSpec, errno: Errno) -> Option<String> {
    let port = match &spec.address {
        ListenAddress::Tcp(addr) | ListenAddress::Udp(addr) => Some(addr.port()),
        _ => None,
    };
    let hint = match errno {
        Errno::EADDRINUSE if port.is_some() => {
            "another process uses this address; stop it or choose another port"
        }
        Errno::EADDRINUSE => "another socket has this name; stop its owner or choose another name",
        Errno::EACCES if port.is_some_and(|p| p < 1024) => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE"
        }
        Errno::EACCES => "check the permissions of the directory",
        Errno::ENOENT => match &spec.address {
            ListenAddress::UnixPath(path) => {
                let dir = path.parent().unwrap_or(Path::new("/"));
                return Some(format!(
                    "directory {} does not exist; create it first",
                    dir.display()
                ));
            }
            _ => return None,
        },
        Errno::EADDRNOTAVAIL => "no local interface has this address; use 0.0.0.0 or [::] for all",
        _ => return None,
    };
    Some(hint.to_string())
}

fn default_backlog() -> i32 {
    fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Describes the address the kernel bound, with the real port for port 0.
fn describe_bound(address: &ListenAddress, fd: &OwnedFd) -> String {
    describe_socket(fd).unwrap_or_else(|| address.to_string())
}

/// Describes a socket from what the kernel says of it: `tcp://…`,
/// `udp://…`, `unix:/path` or `unix:@name`.
fn describe_socket(fd: &OwnedFd) -> Option<String> {
    let local = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    let kind = socket::getsockopt(fd, sockopt::SockType).ok()?;
    let inet = local
        .as_sockaddr_in()
        .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
        .or_else(|| {
            local
                .as_sockaddr_in6()
                .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
        });
    if let Some(addr) = inet {
        return Some(match kind {
            SockType::Datagram => ListenAddress::Udp(addr).to_string(),
            _ => ListenAddress::Tcp(addr).to_string(),
        });
    }
    let unix = local.as_unix_addr()?;
    if let Some(path) = unix.path() {
        return Some(ListenAddress::UnixPath(path.to_path_buf()).to_string());
    }
    unix.as_abstract().map(|name| {
        ListenAddress::UnixAbstract(String::from_utf8_lossy(name).into_owned()).to_string()
    })
}
