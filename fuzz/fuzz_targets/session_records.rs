//! Arbitrary bytes as the gateway's journal records (`session_open`,
//! `session_register`, `session_close`, the command envelope), as a
//! snapshot's session book and as a whole engine state snapshot: decoding
//! never panics, and whatever decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_net::sessions::{self, SessionBook, SessionOpen};

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = SessionOpen::decode(data) {
        let mut v = Vec::new();
        o.encode(&mut v);
        assert_eq!(v, data, "a session_open record re-encodes to its bytes");
    }
    if let Ok((key, reason)) = sessions::decode_close(data) {
        let mut v = Vec::new();
        let why = if reason == 0 { sessions::CloseReason::Disconnected } else { sessions::CloseReason::EngineRestart };
        sessions::encode_close(key, why, &mut v);
        if reason <= 1 {
            assert_eq!(v, data, "a session_close record re-encodes to its bytes");
        }
    }
    for version in [1u16, 2, 3] {
        let _ = sessions::split_envelope(version, data);
    }
    if let Ok(book) = SessionBook::decode(data) {
        let mut v = Vec::new();
        book.encode(&mut v);
        assert_eq!(v, data, "a session book re-encodes to its bytes");
        // Every name can be asked where a replay starts.
        for i in 0..book.len() as u32 {
            let _ = book.resume_point(i, 1);
        }
    }
    if let Ok(state) = otedama_net::recovery::decode_state(data) {
        let _ = state.exchange.state_hash();
    }
});
