//! sockvisor's own log lines, on stderr, as text or JSON. The children's
//! stdout and stderr are inherited untouched and never pass through here.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;

use crate::cli::{LogFormat, LogLevel, LoggingArgs};

pub fn init(args: &LoggingArgs) {
    let level = match args.log_level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
