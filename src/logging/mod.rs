//! sockvisor's own log lines, on stderr, as text or JSON. The children's
//! stdout and stderr are inherited untouched and never pass through here.
//!
//! A log write must never fail the supervisor: stderr may be a pipe whose
//! reader went away (`| head -1`, a logger that restarts) or is full. A
//! line that cannot be written is dropped and counted, and the next write
//! that gets through says how many were lost ([`stderr`]). None panics,
//! and none blocks the event loop on a full pipe: when stderr is a pipe,
//! sockvisor writes through a descriptor of its own for that pipe, opened
//! non-blocking (the children keep the blocking one they share: the flag
//! belongs to the open file, so setting it on fd 2 would change theirs).
//!
//! While the event loop runs, lines are held and written together at the
//! two points of each turn of the loop where it acts or waits ([`hold`],
//! [`flush`]): before it carries out what it decided (so that a line saying
//! "sending SIGQUIT" comes before the child's answer to it) and before it
//! sleeps. A thousand workers exiting at once cost a few dozen writes, not
//! a thousand, and the reader of the pipe is woken as rarely. Lines on a
//! terminal are not held: there they interleave with the children's output
//! as they happen.

mod limit;
mod stderr;

pub use limit::RateLimit;

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::{LogFormat, LogLevel, LoggingArgs};

/// Sets up logging; `default` is the level when `--log-level` is not given.
pub fn init(args: &LoggingArgs, default: LogLevel) {
    let _ = PIPE.set(nonblocking_pipe());
    let level = match args.log_level.unwrap_or(default) {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(LossyStderr)
        .with_max_level(level)
        .with_target(false)
        .log_internal_errors(false);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    if let Some(mut log) = log() {
        log.writer
            .set_json(matches!(args.log_format, LogFormat::Json));
    }
    let earlier = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        earlier(info);
    }));
}

/// Holds log lines until [`flush`], unless stderr is a terminal. The event
/// loop holds them for the whole of its run; what is held when it ends is
/// written by the guard.
pub fn hold() -> Held {
    if !io::stderr().is_terminal()
        && let Some(mut log) = log()
    {
        log.holding = true;
    }
    Held
}

/// Writes the held lines now.
pub fn flush() {
    if let Some(mut log) = log() {
        log.write_held();
    }
}

/// Holding ends when this is dropped, and the held lines are written.
#[must_use = "lines are held only while the guard lives"]
pub struct Held;

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut log) = log() {
            log.write_held();
            log.holding = false;
        }
    }
}

struct Log {
    holding: bool,
    held: Vec<u8>,
    writer: stderr::LineWriter,
}

impl Log {
    fn write_held(&mut self) {
        if !self.held.is_empty() {
            let Log { held, writer, .. } = self;
            writer.write(&mut Stderr::get(), held);
            held.clear();
        }
    }
}

/// The log's state, unless this thread is already writing it (a panic
/// while a line is written must not wait for itself); a panic that left it
/// poisoned does not silence the log.
fn log() -> Option<MutexGuard<'static, Log>> {
    match LOG.try_lock() {
        Ok(log) => Some(log),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

static LOG: Mutex<Log> = Mutex::new(Log {
    holding: false,
    held: Vec::new(),
    writer: stderr::LineWriter::new(),
});

/// Held lines beyond this are written at once: a burst never grows the
/// buffer without bound.
const HELD_LIMIT: usize = 64 * 1024;

/// sockvisor's own non-blocking descriptor for the pipe on stderr, if
/// stderr is a pipe.
static PIPE: OnceLock<Option<File>> = OnceLock::new();

/// Opens the pipe on fd 2 again, non-blocking. Only for a pipe: a file
/// opened again would get a new offset and overwrite what is there.
fn nonblocking_pipe() -> Option<File> {
    let target = "/proc/self/fd/2";
    if !std::fs::metadata(target).ok()?.file_type().is_fifo() {
        return None;
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(target)
        .ok()
}

/// Where log lines go: the non-blocking pipe, else fd 2.
enum Stderr {
    Pipe(&'static File),
    Other(io::StderrLock<'static>),
}

impl Stderr {
    fn get() -> Stderr {
        match PIPE.get() {
            Some(Some(pipe)) => Stderr::Pipe(pipe),
            _ => Stderr::Other(io::stderr().lock()),
        }
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stderr::Pipe(pipe) => (&**pipe).write(buf),
            Stderr::Other(stderr) => stderr.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// stderr for log lines: a failed write is counted, never reported as an
/// error (the formatting layer would report it on stderr again, and panic).
#[derive(Clone, Copy)]
struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderr
    }
}

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    /// The formatting layer writes each event with one `write_all`.
    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        let Some(mut log) = log() else {
            return Ok(());
        };
        if log.holding {
            log.held.extend_from_slice(line);
            if log.held.len() >= HELD_LIMIT {
                log.write_held();
            }
        } else {
            log.writer.write(&mut Stderr::get(), line);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
