//! Arbitrary bytes as an order-entry stream, as an I/O shard sees them:
//! frames are split off one by one; each either decodes to a command, is
//! refused with a gateway reason, or ends the stream with a frame error —
//! never a panic. Server frames decode the same way for the client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_net::wire::{decode_command, split_frame, EngineStatsRequest, EngineStatsRequestView, ServerMsg};

fuzz_target!(|data: &[u8]| {
    for inbound in [true, false] {
        let mut pos = 0;
        while pos < data.len() {
            match split_frame(&data[pos..], inbound) {
                Ok(Some((f, used))) => {
                    assert!(used >= 4 && used <= 256 && pos + used <= data.len());
                    pos += used;
                    if inbound {
                        for admin in [false, true] {
                            let _ = decode_command(f, 7, admin);
                        }
                        if f.ty == EngineStatsRequest::TYPE {
                            assert!(EngineStatsRequestView::parse(f.body).is_some(), "split_frame checked its size");
                        }
                    } else {
                        assert!(ServerMsg::decode(f).is_some(), "split_frame only passes known sizes");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
