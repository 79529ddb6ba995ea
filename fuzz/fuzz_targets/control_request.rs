//! Any request line decodes to a request or to an error reply that is one
//! line of JSON; the decoder never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockvisor::control::protocol::decode_request;

fuzz_target!(|line: &[u8]| {
    if let Err(reply) = decode_request(line) {
        let bytes = reply.to_line();
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
    }
});
