//! Upgrading sockvisor itself in place: `sockvisor reexec` replaces the
//! program with `execve`, keeping the pid (so every generation stays its
//! child, and a pidfile, systemd's `MAINPID` or a container's PID 1 stay
//! valid) and the listening sockets, which are never closed.
//!
//! `state` is the versioned hand-over format; `check` is the handshake by
//! which a new binary proves, before the exec, that it can resume the
//! state; `exec` carries the exec out and falls back to the old program
//! when the new one cannot restore.
//! Deciding when a re-exec may happen is the supervisor's
//! (`handover_blocker`); gathering and restoring the objects is the event
//! loop's and `run`'s.

pub mod capture;
pub mod check;
pub mod exec;
pub mod state;

pub use exec::{Handover, Inherited, exec, fall_back, is_restoring, started_from, take_inherited};
pub use state::{STATE_VERSION, State};
