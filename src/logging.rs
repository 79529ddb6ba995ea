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
//!
//! While the event loop runs, lines are held for the wake-up that makes
//! them and written together before it sleeps again ([`hold`], [`flush`]):
//! a thousand workers exiting at once cost a few dozen writes, not a
//! thousand, and the reader of the pipe is woken as rarely. Writes are cut
//! at line ends into pieces of at most `PIPE_BUF` bytes, which a pipe takes
//! whole or not at all, so a full pipe drops whole lines, never half of
//! one. Lines on a terminal are not held: there they interleave with the
//! children's output as they happen.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

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
        && let Ok(mut held) = HELD.lock()
    {
        held.holding = true;
    }
    Held
}

/// Writes the held lines now.
pub fn flush() {
    // `try_lock`: a panic while the lines are being written must not wait
    // for itself.
    if let Ok(mut held) = HELD.try_lock() {
        write_held(&held.lines);
        held.lines.clear();
    }
}

/// Holding ends when this is dropped, and the held lines are written.
#[must_use = "lines are held only while the guard lives"]
pub struct Held;

impl Drop for Held {
    fn drop(&mut self) {
        flush();
        if let Ok(mut held) = HELD.lock() {
            held.holding = false;
        }
    }
}

struct HeldLines {
    holding: bool,
    lines: Vec<u8>,
}

static HELD: Mutex<HeldLines> = Mutex::new(HeldLines {
    holding: false,
    lines: Vec::new(),
});

/// Held lines beyond this are written at once: a burst never grows the
/// buffer without bound.
const HELD_LIMIT: usize = 64 * 1024;

/// What a pipe takes whole or not at all (`PIPE_BUF`).
const ATOMIC_WRITE: usize = 4096;

fn write_held(lines: &[u8]) {
    for piece in pieces(lines, ATOMIC_WRITE) {
        let count = piece.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        write_to_stderr(piece, count);
    }
}

/// `lines` cut after a newline into pieces of at most `limit` bytes; a
/// single line longer than that is a piece of its own.
fn pieces(lines: &[u8], limit: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = lines;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let window = &rest[..rest.len().min(limit)];
        let end = if window.len() == rest.len() {
            rest.len()
        } else {
            match window.iter().rposition(|&b| b == b'\n') {
                Some(last) => last + 1,
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |first| first + 1),
            }
        };
        let (piece, after) = rest.split_at(end);
        rest = after;
        Some(piece)
    })
}

fn write_to_stderr(piece: &[u8], lines: u64) {
    match PIPE.get() {
        Some(Some(pipe)) => write_lines(&mut &*pipe, piece, lines, &LOST_LINES),
        _ => write_lines(&mut io::stderr().lock(), piece, lines, &LOST_LINES),
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
        if let Ok(mut held) = HELD.try_lock()
            && held.holding
        {
            held.lines.extend_from_slice(line);
            if held.lines.len() >= HELD_LIMIT {
                write_held(&held.lines);
                held.lines.clear();
            }
            return Ok(());
        }
        write_to_stderr(line, 1);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `piece` (`lines` lines) to `out`, first saying how many lines
/// were lost before it; lines that cannot be written are counted in `lost`.
fn write_lines(out: &mut impl Write, piece: &[u8], lines: u64, lost: &AtomicU64) {
    let missed = lost.swap(0, Ordering::Relaxed);
    if missed > 0 {
        let notice = format!("sockvisor: {missed} log line(s) lost: stderr could not be written\n");
        if out.write_all(notice.as_bytes()).is_err() {
            lost.fetch_add(missed + lines, Ordering::Relaxed);
            return;
        }
    }
    if out.write_all(piece).is_err() {
        lost.fetch_add(lines, Ordering::Relaxed);
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
        write_lines(&mut pipe, b"one\n", 1, &lost);
        write_lines(&mut pipe, b"two\nthree\n", 2, &lost);
        assert_eq!(lost.load(Ordering::Relaxed), 3);
        pipe.broken = false;
        write_lines(&mut pipe, b"four\n", 1, &lost);
        write_lines(&mut pipe, b"five\n", 1, &lost);
        assert_eq!(
            String::from_utf8(pipe.written).unwrap(),
            "sockvisor: 3 log line(s) lost: stderr could not be written\nfour\nfive\n"
        );
        assert_eq!(lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn held_lines_are_cut_at_line_ends_into_pieces_a_pipe_takes_whole() {
        fn cut(lines: &[u8], limit: usize) -> Vec<&[u8]> {
            pieces(lines, limit).collect()
        }
        assert_eq!(cut(b"", 8), Vec::<&[u8]>::new());
        assert_eq!(cut(b"aa\nbb\ncc\n", 8), vec![&b"aa\nbb\n"[..], b"cc\n"]);
        assert_eq!(cut(b"aa\nbb\ncc\n", 9), vec![&b"aa\nbb\ncc\n"[..]]);
        // A line longer than a piece is a piece of its own, whole.
        assert_eq!(
            cut(b"a\nbbbbbbbbbbbb\nc\n", 8),
            vec![&b"a\n"[..], b"bbbbbbbbbbbb\n", b"c\n"]
        );
        assert_eq!(
            cut(b"bbbbbbbbbbbb\nc\n", 8),
            vec![&b"bbbbbbbbbbbb\n"[..], b"c\n"]
        );
        // Every byte is written once, in order.
        let text: Vec<u8> = (0..500)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        assert_eq!(cut(&text, 100).concat(), text);
        assert!(
            cut(&text, 100)
                .iter()
                .all(|p| p.len() <= 100 && p.ends_with(b"\n"))
        );
    }
}
