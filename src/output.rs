//! What sockvisor prints for a person: a client command's answer on
//! stdout, a one-line error on stderr.
//!
//! `print!` and `eprint!` panic when the write fails, and it does fail
//! when the reader has gone (`sockvisor status | head -1`, a closed log
//! pipe). Nothing sockvisor prints is worth a panic: these macros write
//! what they can and drop the rest. Log lines go through `logging`.

use std::io::Write;

#[doc(hidden)]
pub fn to_stdout(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

#[doc(hidden)]
pub fn to_stderr(args: std::fmt::Arguments<'_>) {
    // After the log lines that came before it.
    crate::logging::flush();
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Like `print!`, but a failed write is dropped.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::to_stdout(format_args!($($arg)*)) };
}

/// Like `println!`, but a failed write is dropped.
#[macro_export]
macro_rules! sayln {
    ($($arg:tt)*) => { $crate::output::to_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Like `eprintln!`, but a failed write is dropped.
#[macro_export]
macro_rules! complain {
    ($($arg:tt)*) => { $crate::output::to_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `text` with every control character (C0, DEL, C1) written as an escape
/// (`\u{1b}`, `\n`), for text that came from a child or from the control
/// socket and is shown on a terminal: `STATUS=\e]0;…\a` must not retitle or
/// clear the operator's terminal. JSON output keeps the text as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn terminal_escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            printable("\u{1b}]0;PWNED\u{7}\u{1b}[2J"),
            "\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J"
        );
        assert_eq!(printable("a\nb\u{9b}c\u{7f}"), "a\\nb\\u{9b}c\\u{7f}");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        assert_eq!(
            printable("listening on 0.0.0.0:80 — ready ✓"),
            "listening on 0.0.0.0:80 — ready ✓"
        );
    }
}
