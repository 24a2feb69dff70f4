//! Commands and events survive their binary form unchanged, and garbage
//! never decodes into a panic.

mod common;

use common::*;
use otedama_engine::codec::*;
use otedama_engine::*;
use rand::{Rng, SeedableRng};

#[test]
fn round_trip_of_a_mixed_run() {
    let (mut ex, setup) = exchange();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut back = Vec::new();
    let mut s = Stream::new(3);
    let extra = [
        Command { ts: 9, kind: CommandKind::SetFees { instrument: InstrumentId(0), maker_bps: -1, taker_bps: 5 } },
        Command { ts: 9, kind: CommandKind::SetInstrumentStatus { instrument: InstrumentId(0), status: Status::Halted } },
        Command { ts: 9, kind: CommandKind::SetInstrumentStatus { instrument: InstrumentId(0), status: Status::Trading } },
        Command { ts: 9, kind: CommandKind::Transfer { from: AccountId(0), to: AccountId(1), asset: AssetId(1), amount: 5 } },
        Command { ts: 9, kind: CommandKind::Withdraw { account: AccountId(0), asset: AssetId(1), amount: 5 } },
        Command { ts: 9, kind: CommandKind::Amend { account: AccountId(0), order: OrderId(77), qty: 5 } },
    ];
    let cmds: Vec<Command> = setup.iter().chain(extra.iter()).copied().collect();
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..30_000 {
        let c = if i < cmds.len() { cmds[i] } else { s.next() };
        buf.clear();
        encode_command(&c, &mut buf);
        assert_eq!(decode_command(&buf), Ok(c));
        out.clear();
        ex.apply(&c, &mut out);
        s.observe(&out);
        buf.clear();
        encode_events(i as u64, &out, &mut buf);
        assert_eq!(decode_events(&buf, &mut back), Ok(i as u64));
        assert_eq!(back, out);
        for e in &out {
            kinds.insert(format!("{e:?}").split([' ', '{']).next().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(kinds.len(), 11, "every event kind seen: {kinds:?}");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut out = Vec::new();
    let mut ok = 0;
    for _ in 0..200_000 {
        let n = rng.random_range(0..80);
        let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        ok += decode_command(&b).is_ok() as u32;
        let _ = decode_events(&b, &mut out);
    }
    // Valid encodings are rare in random bytes, but the decoder must not care.
    assert!(ok < 200_000);
    assert_eq!(decode_command(&[]), Err(CodecError::Truncated));
    assert_eq!(decode_events(&[0; 12][..], &mut out), Ok(0));
    let mut huge = vec![0u8; 12];
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_events(&huge, &mut out), Err(CodecError::Truncated));
}

#[test]
fn each_command_has_one_encoding() {
    // Found by fuzzing: a market order whose absent protection carried bytes.
    let c = Command {
        ts: 1,
        kind: CommandKind::NewOrder {
            account: AccountId(1),
            instrument: InstrumentId(0),
            side: Side::Buy,
            qty: 5,
            order: OrderType::Market { protection: None, budget: Some(10) },
        },
    };
    let mut buf = Vec::new();
    encode_command(&c, &mut buf);
    assert_eq!(decode_command(&buf), Ok(c));
    let flags_at = 8 + 1 + 4 + 2 + 1 + 8 + 1;
    buf[flags_at + 1] = 7; // a byte of the absent protection price
    assert_eq!(decode_command(&buf), Err(CodecError::BadValue("absent market value is not zero")));
}
