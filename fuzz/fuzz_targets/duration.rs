//! Any string given to a duration flag is either a duration no longer than
//! the maximum, which reads back from the way sockvisor writes it, or a
//! one-line error naming the string; the parser never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockvisor::duration::{MAX_DURATION, format_duration, parse_duration};

fuzz_target!(|text: &str| {
    match parse_duration(text) {
        Ok(duration) => {
            assert!(duration <= MAX_DURATION);
            let shown = format_duration(duration);
            assert!(parse_duration(&shown).is_ok(), "{shown}");
        }
        Err(err) => {
            assert!(err.contains(text));
            assert!(!err.contains('\n') || text.contains('\n'));
        }
    }
});
