//! Arbitrary bytes as a journaled exchange command or events record:
//! decoding returns a value or an error, never panics; a decoded command
//! re-encodes to the same bytes, and applying it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_engine::codec::{decode_command, decode_events, encode_command};
use otedama_engine::workload::limits;
use otedama_engine::Exchange;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = decode_command(data) {
        let mut buf = Vec::new();
        encode_command(&cmd, &mut buf);
        assert_eq!(buf, data, "canonical encoding");
        let mut small = limits();
        small.orders_max = 64;
        small.levels_max = 4096;
        let mut ex = Exchange::new(small);
        let mut out = Vec::new();
        ex.apply(&cmd, &mut out);
        assert!(!out.is_empty());
    }
    let mut events = Vec::new();
    let _ = decode_events(data, &mut events);
});
