//! The control socket server, driven by the event loop.
//!
//! It owns the listening socket file and the client connections. Every
//! descriptor is non-blocking and every buffer is bounded, so a slow, stuck
//! or vanished client never blocks the supervisor: a request line longer
//! than the limit, invalid JSON, an unknown command or a value out of range
//! (by the command line's own rules, see [`super::protocol`]) gets an error
//! reply and the connection is closed before the supervisor sees it; a
//! client that sends nothing in time is closed; a client that does not read
//! its replies is dropped once too much is queued for it. A client that goes
//! away mid-upgrade does not cancel the upgrade. Only the owner's user and
//! root may connect. The peer's pid, read from its credentials when it
//! connects, goes with its request: einhorn's `worker:ack` counts only when
//! it comes from the worker it names.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{UnixAddr, getsockopt, sockopt};
use nix::unistd::{Pid, Uid};

use super::protocol::{ErrorKind, MAX_REQUEST_LINE, Reply, Request, decode_request};
use crate::deadline;
use crate::duration::format_duration;
use crate::listen::bind_unix;
use crate::socket_file::{self, BoundFile, Occupied};
use crate::spare_fd::SpareDescriptor;
use crate::supervisor::{Notice, UpgradeId};

/// Connections served at once. Past it, an idle one makes room; one more
/// is taken while a request is being answered in the same turn (a burst of
/// `status` calls), up to twice this; otherwise the newcomer is answered
/// "busy" and closed.
const MAX_CONNECTIONS: usize = 64;
/// Replies queued for one client before it is considered stuck.
const MAX_QUEUED_OUTPUT: usize = 1024 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub type ConnectionId = u64;

/// A request read from a client, for the event loop to carry out.
#[derive(Debug)]
pub struct Incoming {
    pub connection: ConnectionId,
    pub request: Request,
    /// The process that connected (`SO_PEERCRED`), if the kernel could
    /// name it in sockvisor's pid namespace.
    pub peer: Option<Pid>,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the request line.
    Reading,
    /// Request accepted; progress may follow, then the result.
    Waiting {
        upgrade: Option<UpgradeId>,
        exit: bool,
    },
    /// Result queued; closed once it is written.
    Closing,
}

struct Connection {
    id: ConnectionId,
    stream: UnixStream,
    /// Who connected, as the kernel recorded it at `connect`.
    peer: Option<Pid>,
    input: Vec<u8>,
    output: Vec<u8>,
    accepted: Instant,
    state: State,
    /// The client has finished sending (end-of-file); replies may still go.
    read_closed: bool,
    /// Broken or abandoned: removed at the next sweep.
    dead: bool,
}

pub struct ControlServer {
    listener: UnixListener,
    /// The socket file, removed when the server is dropped if still ours.
    file: BoundFile,
    connections: Vec<Connection>,
    last_id: ConnectionId,
    spare: SpareDescriptor,
}

impl ControlServer {
    /// Binds the control socket at `path`, owner-only. A socket file left
    /// by a crashed sockvisor is replaced; a live one is an error.
    pub fn bind(path: &Path) -> Result<ControlServer, String> {
        socket_file::clear_stale(path).map_err(|occupied| match occupied {
            Occupied::Live => format!(
                "another sockvisor is running with control socket {} (stop it, or give this one another --name)",
                path.display()
            ),
            Occupied::NotASocket(what) => format!(
                "cannot use {} as the control socket: it is {what}, not a socket (sockvisor never replaces it; remove it yourself or choose another --control path)",
                path.display()
            ),
            Occupied::Io(e) => format!("cannot use control socket {}: {e}", path.display()),
        })?;
        let fail = |e: nix::errno::Errno| {
            format!(
                "cannot create control socket {}: {}",
                path.display(),
                e.desc().to_lowercase()
            )
        };
        let addr = UnixAddr::new(path).map_err(fail)?;
        let fd: OwnedFd = bind_unix(&addr, 128, Some(0o600)).map_err(fail)?;
        let listener = UnixListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let file = BoundFile::identify(path).map_err(|e| format!("control socket: {e}"))?;
        Ok(ControlServer {
            listener,
            file,
            connections: Vec::new(),
            last_id: 0,
            spare: SpareDescriptor::reserve(),
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The control socket a previous sockvisor program bound, handed over
    /// by re-exec.
    pub fn adopt(listener: OwnedFd, file: BoundFile) -> Result<ControlServer, String> {
        let listener = UnixListener::from(listener);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        Ok(ControlServer {
            listener,
            file,
            connections: Vec::new(),
            last_id: 0,
            spare: SpareDescriptor::reserve(),
        })
    }

    /// What a re-exec hands over: the listening descriptor and the socket
    /// file.
    pub fn listener_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.listener)
    }

    pub fn file(&self) -> &BoundFile {
        &self.file
    }

    /// The connection's descriptor, to carry it over a re-exec.
    pub fn connection_fd(&self, id: ConnectionId) -> Option<std::os::fd::RawFd> {
        self.connections
            .iter()
            .find(|c| c.id == id)
            .map(|c| std::os::fd::AsRawFd::as_raw_fd(&c.stream))
    }

    /// Before a re-exec: every client but `keep` gets a final answer now,
    /// and every queued line is written (best effort, the write does not
    /// wait).
    pub fn close_for_reexec(&mut self, keep: ConnectionId) {
        for connection in &mut self.connections {
            // One that has its result already gets no second one.
            if connection.id != keep && connection.state != State::Closing {
                connection.finish(Reply::failure(
                    ErrorKind::Busy,
                    "sockvisor is re-executing itself; try again",
                ));
            }
            // The requester's progress lines too: its connection is handed
            // over, what is queued here is not.
            connection.flush();
        }
    }

    /// A client carried over a re-exec: it waits for one result.
    pub fn adopt_client(&mut self, stream: UnixStream, now: Instant) -> ConnectionId {
        let _ = stream.set_nonblocking(true);
        self.last_id += 1;
        let peer = peer_credentials(&stream).ok().and_then(peer_pid);
        self.connections.push(Connection {
            id: self.last_id,
            stream,
            peer,
            input: Vec::new(),
            output: Vec::new(),
            accepted: now,
            state: State::Waiting {
                upgrade: None,
                exit: false,
            },
            read_closed: true,
            dead: false,
        });
        self.last_id
    }

    /// Descriptors to poll: the listener first, then every connection, in
    /// the order `handle` expects their events.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let listening = if self.spare.listening() {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        let mut fds = vec![(self.listener.as_fd(), listening)];
        for connection in &self.connections {
            // After end-of-file the socket would report readable forever.
            let mut flags = PollFlags::empty();
            if !connection.read_closed {
                flags |= PollFlags::POLLIN;
            }
            if !connection.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push((connection.stream.as_fd(), flags));
        }
        fds
    }

    /// Acts on poll results (one per `poll_fds` entry) and returns the
    /// requests that arrived.
    pub fn handle(&mut self, events: &[Option<PollFlags>], now: Instant) -> Vec<Incoming> {
        let mut incoming = Vec::new();
        let (listener_events, connection_events) = events.split_first().unwrap_or((&None, &[]));
        for (connection, events) in self.connections.iter_mut().zip(connection_events) {
            let Some(events) = events.filter(|e| !e.is_empty()) else {
                continue;
            };
            if events.contains(PollFlags::POLLOUT) {
                connection.flush();
            }
            if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                && !connection.read_closed
                && let Some(request) = connection.read()
            {
                incoming.push(Incoming {
                    connection: connection.id,
                    request,
                    peer: connection.peer,
                });
            }
            if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // Gone in both directions: nothing more can be written. A
                // request it sent before leaving is carried out all the same.
                connection.dead = true;
            }
        }
        if listener_events.is_some_and(|e| !e.is_empty()) {
            let first_new = self.connections.len();
            self.accept_all(now, &mut incoming);
            // A client usually sends its request with the connection: read
            // it now, so that it no longer counts as idle.
            for connection in &mut self.connections[first_new..] {
                if connection.state == State::Reading
                    && let Some(request) = connection.read()
                {
                    incoming.push(Incoming {
                        connection: connection.id,
                        request,
                        peer: connection.peer,
                    });
                }
            }
        }
        self.sweep();
        incoming
    }

    fn accept_all(&mut self, now: Instant, incoming: &mut Vec<Incoming>) {
        loop {
            let accepted = self.spare.accept(
                || self.listener.accept().map(|(stream, _)| stream),
                refuse_for_want_of_descriptors,
                "control clients",
                now,
            );
            let Some(stream) = accepted else {
                return;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.last_id += 1;
            let credentials = peer_credentials(&stream);
            let mut connection = Connection {
                id: self.last_id,
                stream,
                peer: credentials.as_ref().ok().copied().and_then(peer_pid),
                input: Vec::new(),
                output: Vec::new(),
                accepted: now,
                state: State::Reading,
                read_closed: false,
                dead: false,
            };
            if let Err(why) = credentials.and_then(peer_allowed) {
                crate::warn_limited!("control connection refused: {why}");
                connection.finish(Reply::failure(ErrorKind::PermissionDenied, why));
            } else if self.live_connections() >= MAX_CONNECTIONS
                && !self.evict_idle(incoming)
                && !(self.live_connections() < 2 * MAX_CONNECTIONS && self.answering_now())
            {
                connection.finish(Reply::failure(
                    ErrorKind::Busy,
                    format!("{MAX_CONNECTIONS} control clients are waiting for results; try again"),
                ));
            }
            self.connections.push(connection);
        }
    }

    /// Makes room for a new client by closing the one that has been
    /// connected longest without sending its request, so that idle or
    /// leaked connections never lock out a request (a health probe above
    /// all). A request already in a connection's buffer is read first (into
    /// `incoming`): that connection is not idle. The one closed is told why.
    /// False when every connection has a request in.
    fn evict_idle(&mut self, incoming: &mut Vec<Incoming>) -> bool {
        loop {
            let oldest = self
                .connections
                .iter_mut()
                .filter(|c| c.state == State::Reading && !c.dead)
                .min_by_key(|c| c.accepted);
            let Some(oldest) = oldest else {
                return false;
            };
            if let Some(request) = oldest.read() {
                incoming.push(Incoming {
                    connection: oldest.id,
                    request,
                    peer: oldest.peer,
                });
                continue;
            }
            if oldest.dead {
                // It went away: that is the room.
                return true;
            }
            if oldest.state != State::Reading {
                // Its request was answered as malformed: not idle either.
                continue;
            }
            // Everything it sent has been read, so closing it does not
            // reset the connection before the reason arrives.
            oldest.finish(Reply::failure(
                ErrorKind::Busy,
                "closed to make room for a newer control client: send the request as soon as you connect",
            ));
            oldest.flush();
            oldest.dead = true;
            return true;
        }
    }

    /// Connections not yet let go of (those done are removed at the end of
    /// the turn).
    fn live_connections(&self) -> usize {
        self.connections.iter().filter(|c| !c.is_done()).count()
    }

    /// Whether a connection holds a request that is being answered in this
    /// turn of the loop (it has been read, and follows no upgrade and no
    /// exit): its place is free again before the next.
    fn answering_now(&self) -> bool {
        self.connections.iter().any(|c| {
            !c.dead
                && c.state
                    == State::Waiting {
                        upgrade: None,
                        exit: false,
                    }
        })
    }

    /// Sends the final result to a client and closes its connection.
    pub fn reply(&mut self, id: ConnectionId, reply: Reply) {
        if let Some(connection) = self.connection(id) {
            connection.finish(reply);
        }
        self.sweep();
    }

    /// Sends a progress line to a client.
    pub fn progress(&mut self, id: ConnectionId, message: String) {
        if let Some(connection) = self.connection(id) {
            connection.send(&Reply::Progress { message });
        }
    }

    /// The client waits for the upgrade's notices.
    pub fn follow_upgrade(&mut self, id: ConnectionId, upgrade: UpgradeId) {
        if let Some(connection) = self.connection(id) {
            connection.state = State::Waiting {
                upgrade: Some(upgrade),
                exit: false,
            };
        }
    }

    /// The client waits until sockvisor exits.
    pub fn wait_for_exit(&mut self, id: ConnectionId) {
        if let Some(connection) = self.connection(id) {
            connection.state = State::Waiting {
                upgrade: None,
                exit: true,
            };
        }
    }

    /// Passes an upgrade notice to the clients following it.
    pub fn deliver(&mut self, notice: &Notice) {
        let (upgrade, reply, last) = match notice {
            Notice::Progress { upgrade, message } => (
                *upgrade,
                Reply::Progress {
                    message: message.clone(),
                },
                false,
            ),
            Notice::Finished { upgrade, result } => {
                let reply = match result {
                    Ok(message) => Reply::success(message.clone()),
                    Err(message) => Reply::failure(ErrorKind::Failed, message.clone()),
                };
                (*upgrade, reply, true)
            }
        };
        for connection in &mut self.connections {
            if let State::Waiting {
                upgrade: Some(id), ..
            } = connection.state
                && id == upgrade
            {
                if last {
                    connection.finish(reply.clone());
                } else {
                    connection.send(&reply);
                }
            }
        }
        self.sweep();
    }

    /// sockvisor is exiting: answer the clients waiting for that, and give
    /// every queued reply one last chance to be written.
    pub fn close_for_exit(&mut self, code: i32) {
        for connection in &mut self.connections {
            if let State::Waiting { exit: true, .. } = connection.state {
                connection.finish(Reply::success(format!(
                    "every generation has exited; sockvisor exits with status {code}"
                )));
            }
            connection.flush();
        }
    }

    /// When the oldest client still owing its request times out, or the
    /// listener is polled again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.connections
            .iter()
            .filter(|c| c.state == State::Reading)
            .map(|c| deadline::after(c.accepted, REQUEST_TIMEOUT))
            .chain(self.spare.next_deadline())
            .min()
    }

    /// Closes clients that did not send a request in time.
    pub fn on_tick(&mut self, now: Instant) {
        self.spare.on_tick(now);
        for connection in &mut self.connections {
            if connection.state == State::Reading
                && deadline::after(connection.accepted, REQUEST_TIMEOUT) <= now
            {
                connection.finish(Reply::failure(
                    ErrorKind::BadRequest,
                    format!(
                        "no request received within {}",
                        format_duration(REQUEST_TIMEOUT)
                    ),
                ));
            }
        }
        self.sweep();
    }

    fn connection(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| c.id == id)
    }

    fn sweep(&mut self) {
        self.connections.retain(|c| !c.is_done());
    }

    /// Writes every client's queued replies (as far as each socket takes
    /// them without waiting) and lets go of the clients that are done.
    /// The event loop calls it before each sleep.
    pub fn flush(&mut self) {
        for connection in &mut self.connections {
            connection.flush();
        }
        self.sweep();
    }
}

impl Connection {
    /// Reads what is available; returns the request once a whole line has
    /// arrived. Errors are answered here.
    fn read(&mut self) -> Option<Request> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    // The client has sent all it will (it may still read
                    // the reply). A complete request still counts.
                    self.read_closed = true;
                    break;
                }
                Ok(n) if self.state == State::Reading => self.input.extend_from_slice(&buf[..n]),
                Ok(_) => {} // Only one request per connection: ignore the rest.
                Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(_) => {
                    self.dead = true;
                    return None;
                }
            }
            if self.state == State::Reading && self.input.len() > MAX_REQUEST_LINE {
                break;
            }
        }
        if self.state != State::Reading {
            return None;
        }
        match self.input.iter().position(|b| *b == b'\n') {
            Some(end) if end <= MAX_REQUEST_LINE => {
                let line = self.input[..end].to_vec();
                self.take_request(&line)
            }
            None if self.read_closed
                && !self.input.is_empty()
                && self.input.len() <= MAX_REQUEST_LINE =>
            {
                // The end of the stream ends the line too.
                let line = std::mem::take(&mut self.input);
                self.take_request(&line)
            }
            _ if self.read_closed => {
                // Went away without sending anything: nothing to answer.
                self.dead = true;
                None
            }
            _ if self.input.len() > MAX_REQUEST_LINE => {
                self.finish(Reply::failure(
                    ErrorKind::BadRequest,
                    format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                ));
                None
            }
            _ => None,
        }
    }

    /// The request `line` (without its newline) decoded, or refused with
    /// the reason.
    fn take_request(&mut self, line: &[u8]) -> Option<Request> {
        match decode_request(line) {
            Ok(request) => {
                self.state = State::Waiting {
                    upgrade: None,
                    exit: false,
                };
                Some(request)
            }
            Err(reply) => {
                crate::warn_limited!(
                    "control request refused: {} (request: {})",
                    reply.message(),
                    crate::output::printable(&String::from_utf8_lossy(
                        &line[..line.len().min(200)]
                    ))
                );
                self.finish(reply);
                None
            }
        }
    }

    /// Broken, or finished with its result written.
    fn is_done(&self) -> bool {
        self.dead || (self.state == State::Closing && self.output.is_empty())
    }

    /// Queues `reply`; [`ControlServer::flush`] writes what is queued,
    /// once per turn of the loop, so that the lines one event brings go
    /// out in one write.
    fn send(&mut self, reply: &Reply) {
        if self.dead {
            return;
        }
        self.output.extend_from_slice(&reply.to_line());
        if self.output.len() > MAX_QUEUED_OUTPUT {
            self.flush();
        }
        if self.output.len() > MAX_QUEUED_OUTPUT {
            tracing::debug!(
                "control client {} does not read its replies; dropped",
                self.id
            );
            self.dead = true;
        }
    }

    fn finish(&mut self, reply: Reply) {
        self.send(&reply);
        self.state = State::Closing;
    }

    fn flush(&mut self) {
        while !self.output.is_empty() && !self.dead {
            match self.stream.write(&self.output) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => break,
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(_) => self.dead = true,
            }
        }
    }
}

fn peer_credentials(stream: &UnixStream) -> Result<nix::sys::socket::UnixCredentials, String> {
    getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot read peer credentials: {e}"))
}

/// The peer's pid; the kernel reports 0 for a process it cannot name in
/// sockvisor's pid namespace.
fn peer_pid(credentials: nix::sys::socket::UnixCredentials) -> Option<Pid> {
    (credentials.pid() > 0).then(|| Pid::from_raw(credentials.pid()))
}

/// Only sockvisor's own user and root may control it.
fn peer_allowed(credentials: nix::sys::socket::UnixCredentials) -> Result<(), String> {
    let own = Uid::effective().as_raw();
    let peer = credentials.uid();
    if peer == own || peer == 0 {
        Ok(())
    } else {
        Err(format!(
            "permission denied: uid {peer} may not control this sockvisor (owned by uid {own})"
        ))
    }
}

/// Out of descriptors, a client taken off the queue is told why before it
/// is closed, as `busy` (exit 4): one non-blocking write that its socket
/// buffer holds, or nothing if it does not.
fn refuse_for_want_of_descriptors(stream: UnixStream) {
    let reply = Reply::failure(
        ErrorKind::Busy,
        "sockvisor is out of file descriptors and cannot take this request; raise its open-file limit (ulimit -n, or LimitNOFILE= in its unit) and try again",
    );
    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
    let _ = nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &reply.to_line(),
        flags,
    );
}
