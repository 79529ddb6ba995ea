//! Any string given to `--listen` is either a valid spec or a one-line
//! error naming it; the parser never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockvisor::listen::ListenSpec;

fuzz_target!(|text: &str| {
    match ListenSpec::parse(text) {
        Ok(spec) => {
            assert_eq!(spec.text, text);
            assert!(!spec.name.is_empty() && !spec.name.contains(':'));
        }
        Err(err) => assert!(!err.to_string().contains('\n') || text.contains('\n')),
    }
});
