//! sd_notify: the readiness protocol between a generation and sockvisor.
//!
//! `message` parses datagrams; `socket` receives them on one socket per
//! generation; `sender` decides whether the process that sent one may speak
//! for that generation. Deciding what a message means for the generation's
//! state is the supervisor's job.

mod message;
pub mod sender;
mod socket;

pub use message::{MAX_DATAGRAM, NotifyMessage, Rejection};
pub use socket::{NotifySocket, Received};
