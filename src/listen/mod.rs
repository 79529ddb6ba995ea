//! Listening sockets: the `--listen` spec language and binding.
//!
//! sockvisor binds every socket once, before the first child starts, and
//! holds it for its whole life; children receive duplicates. Sockets that
//! sockvisor itself received from a service manager come first.

mod activation;
mod bind;
mod spec;

pub use activation::take_inherited;

pub(crate) use bind::bind_unix;
pub use bind::{BindError, Listener, bind, bind_all};
pub use spec::{DEFAULT_NAME, ListenAddress, ListenSpec, SpecError};
