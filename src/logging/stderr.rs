//! How sockvisor's log lines reach stderr: whole, in order, and without
//! ever blocking on a full pipe.
//!
//! [`LineWriter::write`] is given whole lines and writes as many as fit in
//! one `write` call of at most [`PIPE_BUF`] bytes, which a pipe takes whole
//! or refuses. A line longer than that may be taken in part; the rest is
//! kept and written first the next time, so no line is ever cut short or
//! run into the next. Lines that find no room are dropped and counted, and
//! the first write that gets through after a loss begins with a notice of
//! how many were lost, in the log's own format: one notice per gap.
//! When a write of several lines is refused, the rest go one line at a
//! time, as much as a nearly full pipe still takes.

use std::fmt::Write as _;
use std::io::{self, Write};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// What a pipe takes whole or not at all.
pub const PIPE_BUF: usize = 4096;

pub struct LineWriter {
    /// The rest of a long line that was taken only in part.
    unfinished: Vec<u8>,
    /// Lines dropped since the last write that got through.
    lost: u64,
    json: bool,
}

impl LineWriter {
    pub const fn new() -> LineWriter {
        LineWriter {
            unfinished: Vec::new(),
            lost: 0,
            json: false,
        }
    }

    /// Notices of lost lines are JSON objects, as the lines are.
    pub fn set_json(&mut self, json: bool) {
        self.json = json;
    }

    /// Writes `lines` (whole lines, each ending in a newline) to `out`;
    /// what does not fit is counted as lost.
    pub fn write(&mut self, out: &mut impl Write, lines: &[u8]) {
        if !self.finish_unfinished(out) {
            self.lost += count_lines(lines);
            return;
        }
        let mut rest = lines;
        let mut one_at_a_time = false;
        while !rest.is_empty() {
            let notice = self.notice();
            let room = if one_at_a_time {
                0
            } else {
                PIPE_BUF.saturating_sub(notice.len())
            };
            let (unit, after) = split_lines(rest, room);
            match write_once(out, &notice, unit) {
                Written::All => {
                    self.lost = 0;
                    rest = after;
                }
                Written::Part(taken) => {
                    // The notice, if any, is on its way: what it did not
                    // take is written first next time.
                    let mut unfinished = [notice.as_slice(), unit].concat();
                    self.unfinished = unfinished.split_off(taken);
                    self.lost = count_lines(after);
                    return;
                }
                Written::Nothing if !one_at_a_time && count_lines(unit) > 1 => {
                    one_at_a_time = true;
                }
                Written::Nothing => {
                    self.lost += count_lines(rest);
                    return;
                }
            }
        }
    }

    /// Writes what is left of a long line; true once nothing is left.
    fn finish_unfinished(&mut self, out: &mut impl Write) -> bool {
        if self.unfinished.is_empty() {
            return true;
        }
        match write_once(out, &[], &self.unfinished) {
            Written::All => self.unfinished.clear(),
            Written::Part(taken) => {
                self.unfinished.drain(..taken);
            }
            Written::Nothing => {}
        }
        self.unfinished.is_empty()
    }

    fn notice(&self) -> Vec<u8> {
        if self.lost == 0 {
            return Vec::new();
        }
        let message = format!(
            "{} log line(s) lost: stderr could not be written",
            self.lost
        );
        let mut time = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut time));
        let mut line = String::new();
        if self.json {
            let _ = writeln!(
                line,
                r#"{{"timestamp":"{time}","level":"WARN","fields":{{"message":"{message}"}}}}"#
            );
        } else {
            let _ = writeln!(line, "{time}  WARN {message}");
        }
        line.into_bytes()
    }
}

enum Written {
    All,
    /// Some bytes, not all: only a write longer than [`PIPE_BUF`].
    Part(usize),
    Nothing,
}

/// One `write` of `head` and `body` together (retried if interrupted).
fn write_once(out: &mut impl Write, head: &[u8], body: &[u8]) -> Written {
    let joined;
    let bytes = if head.is_empty() {
        body
    } else {
        joined = [head, body].concat();
        &joined
    };
    loop {
        return match out.write(bytes) {
            Ok(n) if n == bytes.len() => Written::All,
            Ok(0) => Written::Nothing,
            Ok(n) => Written::Part(n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Written::Nothing,
        };
    }
}

/// The first lines of `lines` that fit in `room` bytes (at least one),
/// and the rest.
fn split_lines(lines: &[u8], room: usize) -> (&[u8], &[u8]) {
    let first = lines
        .iter()
        .position(|&b| b == b'\n')
        .map_or(lines.len(), |at| at + 1);
    let mut end = first;
    while end < lines.len() {
        let next = lines[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(lines.len(), |at| end + at + 1);
        if next > room {
            break;
        }
        end = next;
    }
    lines.split_at(end)
}

fn count_lines(lines: &[u8]) -> u64 {
    let newlines = lines.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(!lines.is_empty() && !lines.ends_with(b"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A pipe with `room` bytes free: a write of up to PIPE_BUF bytes is
    /// taken whole or refused, a longer one in part, as Linux does.
    struct Pipe {
        room: usize,
        broken: bool,
        read: Vec<u8>,
        writes: usize,
    }

    impl Pipe {
        fn with_room(room: usize) -> Pipe {
            Pipe {
                room,
                broken: false,
                read: Vec::new(),
                writes: 0,
            }
        }

        fn text(&self) -> String {
            String::from_utf8(self.read.clone()).unwrap()
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            if self.broken {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let taken = if buf.len() <= PIPE_BUF {
                if buf.len() > self.room {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                buf.len()
            } else if self.room == 0 {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            } else {
                buf.len().min(self.room)
            };
            self.room -= taken;
            self.read.extend_from_slice(&buf[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<u8> {
        range
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    fn notices(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.contains("lost")).collect()
    }

    #[test]
    fn lines_that_fit_go_out_together_in_pieces_a_pipe_takes_whole() {
        let mut pipe = Pipe::with_room(1 << 20);
        let mut writer = LineWriter::new();
        let text = lines(0..1000);
        writer.write(&mut pipe, &text);
        assert_eq!(pipe.read, text);
        // 8,890 bytes of whole lines in pieces of at most 4,096.
        assert_eq!(pipe.writes, 3);
    }

    #[test]
    fn after_a_loss_one_notice_comes_with_the_next_lines_that_get_through() {
        let mut pipe = Pipe::with_room(0);
        let mut writer = LineWriter::new();
        writer.write(&mut pipe, &lines(0..3));
        writer.write(&mut pipe, &lines(3..5));
        pipe.broken = true;
        writer.write(&mut pipe, &lines(5..6));
        assert!(pipe.read.is_empty());
        pipe.broken = false;
        pipe.room = 1 << 20;
        writer.write(&mut pipe, &lines(6..8));
        writer.write(&mut pipe, &lines(8..9));
        let text = pipe.text();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 4, "{text}");
        assert!(got[0].ends_with("  WARN 6 log line(s) lost: stderr could not be written"));
        assert_eq!(&got[1..], ["line 6", "line 7", "line 8"]);
    }

    #[test]
    fn a_nearly_full_pipe_still_takes_the_lines_it_has_room_for() {
        // Room for two short lines, not for a piece of many.
        let mut pipe = Pipe::with_room(14);
        let mut writer = LineWriter::new();
        writer.write(&mut pipe, &lines(0..100));
        assert_eq!(pipe.text(), "line 0\nline 1\n");
        pipe.room = 1 << 20;
        writer.write(&mut pipe, &lines(100..101));
        let text = pipe.text();
        assert_eq!(notices(&text).len(), 1, "{text}");
        assert!(notices(&text)[0].contains(" 98 log line(s) lost"), "{text}");
        assert!(text.ends_with("line 100\n"), "{text}");
    }

    #[test]
    fn a_long_line_a_pipe_takes_in_part_is_finished_before_anything_else() {
        let long = format!("{}\n", "x".repeat(3 * PIPE_BUF));
        let mut pipe = Pipe::with_room(5000);
        let mut writer = LineWriter::new();
        writer.write(&mut pipe, format!("{long}after\n").as_bytes());
        assert_eq!(pipe.read.len(), 5000);
        // Still no room: the lines that come meanwhile are lost, the long
        // line is not.
        writer.write(&mut pipe, b"meanwhile\n");
        pipe.room = 1 << 20;
        writer.write(&mut pipe, b"later\n");
        let text = pipe.text();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got[0], &long[..long.len() - 1]);
        assert!(got[1].contains(" 2 log line(s) lost"), "{text}");
        assert_eq!(got[2], "later");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn in_the_json_format_the_notice_is_a_json_object_like_every_line() {
        let mut pipe = Pipe::with_room(0);
        let mut writer = LineWriter::new();
        writer.set_json(true);
        writer.write(&mut pipe, b"{}\n");
        pipe.room = 1 << 20;
        writer.write(&mut pipe, b"{}\n");
        let text = pipe.text();
        let notice: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(notice["level"], "WARN");
        assert_eq!(
            notice["fields"]["message"],
            "1 log line(s) lost: stderr could not be written"
        );
        assert!(notice["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    proptest! {
        /// Whatever room the pipe has from one write to the next, what it
        /// gets is whole lines in order and notices, and every line is
        /// either delivered or counted lost exactly once.
        #[test]
        fn every_line_is_delivered_whole_or_counted_lost(
            batches in proptest::collection::vec(
                (proptest::collection::vec(1usize..6000, 0..12), 0usize..20_000, any::<bool>()),
                1..30,
            )
        ) {
            let mut pipe = Pipe::with_room(0);
            let mut writer = LineWriter::new();
            let mut sent = Vec::new();
            for (number, (lengths, room, broken)) in batches.iter().enumerate() {
                pipe.room = *room;
                pipe.broken = *broken;
                let mut batch = String::new();
                for (i, length) in lengths.iter().enumerate() {
                    let tag = format!("<{number}.{i}>");
                    let line = format!("{tag}{}\n", "y".repeat(length.saturating_sub(tag.len())));
                    sent.push(line.trim_end().to_string());
                    batch.push_str(&line);
                }
                writer.write(&mut pipe, batch.as_bytes());
            }
            // Drain: one more write with room for everything.
            pipe.broken = false;
            pipe.room = usize::MAX;
            writer.write(&mut pipe, b"<end>\n");
            sent.push("<end>".to_string());
            let text = pipe.text();
            prop_assert!(text.ends_with("<end>\n"));
            let mut reported_lost = 0;
            let mut delivered = Vec::new();
            for line in text.lines() {
                if let Some(count) = line
                    .strip_suffix(" log line(s) lost: stderr could not be written")
                    .and_then(|l| l.rsplit(' ').next())
                {
                    reported_lost += count.parse::<usize>().unwrap();
                } else {
                    prop_assert!(sent.iter().any(|s| s == line), "a cut or joined line: {line:.80}");
                    delivered.push(line);
                }
            }
            // In order, each at most once.
            let mut at = 0;
            for line in &delivered {
                let found = sent[at..].iter().position(|s| s == line);
                prop_assert!(found.is_some(), "out of order: {line:.80}");
                at += found.unwrap() + 1;
            }
            prop_assert_eq!(delivered.len() + reported_lost, sent.len());
        }
    }
}
