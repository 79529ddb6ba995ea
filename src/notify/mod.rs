//! sd_notify: the readiness protocol between a generation and sockvisor.
//!
//! `message` parses datagrams; `socket` receives them on one socket per
//! generation. Deciding what a message means for the generation's state is
//! the supervisor's job.

mod message;
mod socket;

pub use message::{MAX_DATAGRAM, NotifyMessage, Rejection};
pub use socket::{NotifySocket, Received};
