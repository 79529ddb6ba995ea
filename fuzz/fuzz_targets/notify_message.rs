//! Any datagram is parsed or rejected whole; the parser never panics, and
//! a datagram over the size limit is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockvisor::notify::{MAX_DATAGRAM, NotifyMessage};

fuzz_target!(|datagram: &[u8]| {
    let parsed = NotifyMessage::parse(datagram);
    if datagram.len() > MAX_DATAGRAM {
        assert!(parsed.is_err());
    }
});
