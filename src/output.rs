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
