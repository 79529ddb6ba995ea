//! The control socket: how `sockvisor upgrade|status|stop|signal` talk to a
//! running sockvisor.
//!
//! `protocol` defines the newline-delimited JSON messages, `server` serves
//! them from the event loop, `client` is the command-line side.

pub mod client;
pub mod einhorn;
pub mod protocol;
pub mod server;

pub use protocol::{Command, ErrorKind, Reply, Request};
pub use server::{ControlServer, Incoming};
