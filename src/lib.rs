//! sockvisor: a socket-holding process supervisor for Linux.
//!
//! It binds a server's ports once, runs any server program as its child with
//! the sockets inherited the way systemd passes them (fds 3.., `LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`), and acts as a correct init: one reaper,
//! forwarded signals, graceful stop, the child's exit status.
//!
//! One process, one thread, one `poll(2)` loop. See `README.md` and `docs/`
//! (`docs/architecture.md` maps the modules and the supervisor state machine).

pub mod byte_size;
pub mod children;
pub mod cli;
pub mod control;
pub mod credentials;
pub mod deadline;
pub mod digest;
pub mod duration;
pub mod env_file;
pub mod event_loop;
pub mod fd_env;
pub mod fdstore;
pub mod init;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod paths;
pub mod pidfile;
pub mod process_memory;
pub mod reaper;
pub mod reexec;
pub mod run;
pub mod service_notify;
pub mod signals;
pub mod socket_file;
pub mod spare_fd;
pub mod spawn;
pub mod supervisor;
pub mod terminal;
#[cfg(test)]
mod test_dir;
pub mod watch;
