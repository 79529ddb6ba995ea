//! A generation's notify socket: the `NOTIFY_SOCKET` datagram socket its
//! processes send sd_notify messages to.
//!
//! One socket per generation: what arrives on it is a candidate for that
//! generation, and `sender` decides whether its sender may speak for it.
//! This module owns the socket file, reads datagrams without ever blocking,
//! hands every descriptor passed with a message to the caller, who closes
//! it by dropping the [`Received`] once the message is handled (which is
//! also how `BARRIER=1` is answered, and keeps a sender that waits for its
//! barrier alive until it has been checked), and bounds how much it reads
//! per wake-up so that a flood cannot stall the event loop.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};

use nix::sys::stat::{Mode, umask};

use super::message::{MAX_DATAGRAM, NotifyMessage, Rejection};
use crate::socket_file::BoundFile;

/// Most descriptors accepted with one message: a message with more is
/// refused, and all of them closed.
const MAX_PASSED_FDS: usize = 16;

/// The most the kernel passes with one message (`SCM_MAX_FD`). The control
/// buffer has room for all of them: a truncated one (`MSG_CTRUNC`) cannot
/// be read, and the descriptors the kernel had put in it would stay open
/// in sockvisor with nothing to close them.
const KERNEL_MAX_PASSED_FDS: usize = 253;

/// One datagram read from the socket.
#[derive(Debug)]
pub struct Received {
    /// The sender's pid, from the kernel's credentials.
    pub sender: Option<i32>,
    pub message: Result<NotifyMessage, Rejection>,
    /// Descriptors passed with the message; closed when this is dropped.
    pub passed: Vec<OwnedFd>,
}

#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    /// Removed when the socket is dropped, if it is still this file.
    file: BoundFile,
}

impl NotifySocket {
    /// Binds a datagram socket at `path`, which must not exist: notify
    /// sockets live in a directory sockvisor created for them.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        // 0660: the directory decides who may reach it (owner-only, or the
        // `--user` server's group). Given at creation; sockvisor is
        // single-threaded, so no other file is made under this umask.
        let address = UnixAddr::new(path)?;
        let previous = umask(Mode::from_bits_truncate(0o117));
        let bound = socket::bind(fd.as_raw_fd(), &address);
        umask(previous);
        bound?;
        let file = BoundFile::identify(path)?;
        Ok(NotifySocket { fd, file })
    }

    /// A notify socket handed over by re-exec.
    pub fn adopt(fd: OwnedFd, file: BoundFile) -> NotifySocket {
        NotifySocket { fd, file }
    }

    pub fn file(&self) -> &BoundFile {
        &self.file
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads up to `budget` datagrams that are already waiting.
    pub fn receive(&self, budget: usize) -> Vec<Received> {
        let mut received = Vec::new();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Room for the sender's credentials and every descriptor the
        // kernel may pass, made once for all the datagrams of this call.
        let mut control = nix::cmsg_space!(socket::UnixCredentials, [i32; KERNEL_MAX_PASSED_FDS]);
        while received.len() < budget {
            match self.receive_one(&mut buf, &mut control) {
                Ok(Some(one)) => received.push(one),
                Ok(None) => break,
                Err(errno) => {
                    tracing::debug!("notify socket read failed: {errno}");
                    break;
                }
            }
        }
        received
    }

    fn receive_one(&self, buf: &mut [u8], control: &mut [u8]) -> Result<Option<Received>, Errno> {
        let mut iov = [IoSliceMut::new(buf)];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC;
        let msg = loop {
            match socket::recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(control), flags) {
                Ok(msg) => break msg,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno),
            }
        };
        let mut sender = None;
        let mut passed = Vec::new();
        let cmsgs = msg.cmsgs();
        if let Err(errno) = &cmsgs {
            tracing::debug!("notify datagram's control data unreadable: {errno}");
        }
        for cmsg in cmsgs.into_iter().flatten() {
            match cmsg {
                ControlMessageOwned::ScmCredentials(creds) => sender = Some(creds.pid()),
                ControlMessageOwned::ScmRights(fds) => {
                    // SAFETY: the kernel just installed these descriptors in
                    // our table for us; nobody else owns them. Dropping one
                    // closes it (BARRIER=1 waits for exactly that).
                    passed.extend(
                        fds.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
                _ => {}
            }
        }
        let length = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC) || length > MAX_DATAGRAM;
        let message = if truncated {
            Err(Rejection::TooLarge(length))
        } else if passed.len() > MAX_PASSED_FDS {
            // Closed with the message, none of them kept.
            Err(Rejection::TooManyDescriptors(passed.len(), MAX_PASSED_FDS))
        } else {
            NotifyMessage::parse(&iov[0][..length])
        };
        Ok(Some(Received {
            sender,
            message,
            passed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A socket file in the temporary directory, removed when the returned
    /// socket is dropped.
    fn socket_in_temp(name: &str) -> NotifySocket {
        let file = format!("sockvisor-notify-{}-{name}.sock", std::process::id());
        NotifySocket::bind(&std::env::temp_dir().join(file)).unwrap()
    }

    #[test]
    fn datagrams_are_parsed_with_the_senders_pid() {
        let socket = socket_in_temp("parse");
        let sender = UnixDatagram::unbound().unwrap();
        sender
            .send_to(b"READY=1\nSTATUS=up", socket.path())
            .unwrap();
        let received = socket.receive(10);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].sender, Some(std::process::id() as i32));
        let message = received[0].message.as_ref().unwrap();
        assert!(message.ready);
        assert_eq!(message.status.as_deref(), Some("up"));
    }

    #[test]
    fn an_oversized_datagram_is_rejected_not_truncated() {
        let socket = socket_in_temp("big");
        let sender = UnixDatagram::unbound().unwrap();
        let big = format!("READY=1\nSTATUS={}", "x".repeat(MAX_DATAGRAM));
        sender.send_to(big.as_bytes(), socket.path()).unwrap();
        let received = socket.receive(10);
        assert!(matches!(received[0].message, Err(Rejection::TooLarge(_))));
    }

    #[test]
    fn a_flood_is_read_at_most_budget_at_a_time() {
        let socket = socket_in_temp("flood");
        let sender = UnixDatagram::unbound().unwrap();
        // Stay under net.unix.max_dgram_qlen (10 by default), or send blocks.
        for _ in 0..8 {
            sender.send_to(b"STATUS=x", socket.path()).unwrap();
        }
        assert_eq!(socket.receive(3).len(), 3);
        assert_eq!(socket.receive(100).len(), 5);
        assert!(socket.receive(100).is_empty());
    }

    #[test]
    fn a_passed_descriptor_is_closed_which_releases_a_barrier() {
        use nix::sys::socket::{ControlMessage, sendmsg};
        let socket = socket_in_temp("barrier");
        let sender = UnixDatagram::unbound().unwrap();
        let (barrier_read, barrier_write) = nix::unistd::pipe().unwrap();
        let fds = [barrier_write.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"BARRIER=1")];
        let addr = UnixAddr::new(socket.path()).unwrap();
        sendmsg(
            sender.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
        drop(barrier_write);
        let mut received = socket.receive(10);
        assert!(received[0].message.as_ref().unwrap().barrier);
        drop(received.remove(0));
        // With every write end closed, the read end reports end-of-file.
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&barrier_read, &mut byte), Ok(0));
    }
}
