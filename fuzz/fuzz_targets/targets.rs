//! Arbitrary bytes as the inputs of the target math: compact nBits,
//! Stratum difficulties (any f64, NaN and infinities included), display hex
//! and Monero Stratum target hex. Nothing panics, errors are errors, and the
//! invariants hold: a decoded compact re-encodes to a value that decodes to
//! the same target rounded down, and a larger difficulty never gives an
//! easier target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_hashers::target::{Family, MoneroShareTarget, Target};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let bits = u32::from_le_bytes(data[..4].try_into().unwrap());
        if let Ok(t) = Target::from_compact(bits) {
            let c = t.to_compact();
            let back = Target::from_compact(c).expect("our encoding decodes");
            assert!(back <= t, "re-encoding rounds down");
            let _ = t.work();
            let _ = t.difficulty(Family::Sha256d);
        }
    }
    if data.len() >= 16 {
        let a = f64::from_le_bytes(data[..8].try_into().unwrap());
        let b = f64::from_le_bytes(data[8..16].try_into().unwrap());
        for family in [Family::Sha256d, Family::Scrypt, Family::RandomX] {
            match (Target::from_difficulty(a, family), Target::from_difficulty(b, family)) {
                (Ok(ta), Ok(tb)) => {
                    if a < b {
                        assert!(ta >= tb, "difficulty {a} < {b} but target harder");
                    }
                }
                (Err(_), _) => assert!(!(a.is_finite() && a > 0.0)),
                _ => {}
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Target::from_be_hex(s);
        if let Some(t) = MoneroShareTarget::parse(s) {
            let _ = t.difficulty();
            let _ = t.to_hex4();
            assert_eq!(MoneroShareTarget::parse(&t.to_hex8()), Some(t));
        }
    }
});
