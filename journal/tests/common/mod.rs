//! Helpers shared by the journal's integration tests.
#![allow(dead_code)]

use otedama_journal::{Journal, Record};

/// Deterministic payload for sequence `seq`: its length and bytes derive
/// from the sequence, so any record read back can be checked on its own.
pub fn payload_for(seq: u64, max_len: usize) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = (next() % (max_len as u64 + 1)) as usize;
    (0..len).map(|_| next() as u8).collect()
}

pub fn append_seq(j: &mut Journal, max_len: usize) -> u64 {
    let seq = j.next_seq();
    let p = payload_for(seq, max_len);
    let got = j.append(otedama_journal::kinds::TEST, 1, seq * 10, &p).expect("append");
    assert_eq!(got, seq);
    seq
}

pub fn check_record(r: &Record<'_>, max_len: usize) {
    assert_eq!(r.kind, otedama_journal::kinds::TEST);
    assert_eq!(r.version, 1);
    assert_eq!(r.timestamp_ns, r.seq * 10);
    assert_eq!(r.payload, &payload_for(r.seq, max_len)[..], "payload of record {}", r.seq);
}

/// Reads every record of a journal through a fresh reader, from the oldest
/// segment still present, and checks each one; returns the last sequence
/// (0 if empty).
pub fn read_all_checked(storage: std::sync::Arc<dyn otedama_journal::Storage>, max_len: usize) -> u64 {
    let first = otedama_journal::scan(&*storage, false).expect("scan").first_seq;
    let mut r = otedama_journal::Reader::open_with(storage, None, first, false).expect("reader");
    let mut expect = first;
    while let Some(rec) = r.try_next().expect("read") {
        assert_eq!(rec.seq, expect, "records are contiguous");
        check_record(&rec, max_len);
        expect += 1;
    }
    expect - 1
}
