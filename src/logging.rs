//! sockvisor's own log lines, on stderr, as text or JSON. The children's
//! stdout and stderr are inherited untouched and never pass through here.
//!
//! A log write must never fail the supervisor: stderr may be a pipe whose
//! reader went away (`| head -1`, a logger that restarts) or is full. A
//! line that cannot be written is dropped and counted, and the next line
//! that can be written is preceded by one saying how many were lost. None
//! panics, and none blocks the event loop on a full pipe: when stderr is a
//! pipe, sockvisor writes through a descriptor of its own for that pipe,
//! opened non-blocking (the children keep the blocking one they share: the
//! flag belongs to the open file, so setting it on fd 2 would change theirs).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// Log lines that could not be written since the last one that could.
static LOST_LINES: AtomicU64 = AtomicU64::new(0);

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
        match PIPE.get() {
            Some(Some(pipe)) => write_line(&mut &*pipe, line, &LOST_LINES),
            _ => write_line(&mut io::stderr().lock(), line, &LOST_LINES),
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `line` to `out`, first saying how many lines were lost before it;
/// a line that cannot be written is counted in `lost`.
fn write_line(out: &mut impl Write, line: &[u8], lost: &AtomicU64) {
    let missed = lost.swap(0, Ordering::Relaxed);
    if missed > 0 {
        let notice = format!("sockvisor: {missed} log line(s) lost: stderr could not be written\n");
        if out.write_all(notice.as_bytes()).is_err() {
            lost.fetch_add(missed + 1, Ordering::Relaxed);
            return;
        }
    }
    if out.write_all(line).is_err() {
        lost.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stderr that fails while `broken` is set.
    struct Pipe {
        broken: bool,
        written: Vec<u8>,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_lost_while_stderr_is_broken_are_counted_and_reported_once_it_works() {
        let lost = AtomicU64::new(0);
        let mut pipe = Pipe {
            broken: true,
            written: Vec::new(),
        };
        write_line(&mut pipe, b"one\n", &lost);
        write_line(&mut pipe, b"two\n", &lost);
        assert_eq!(lost.load(Ordering::Relaxed), 2);
        pipe.broken = false;
        write_line(&mut pipe, b"three\n", &lost);
        write_line(&mut pipe, b"four\n", &lost);
        assert_eq!(
            String::from_utf8(pipe.written).unwrap(),
            "sockvisor: 2 log line(s) lost: stderr could not be written\nthree\nfour\n"
        );
        assert_eq!(lost.load(Ordering::Relaxed), 0);
    }
}
