//! Corruption: bit flips and truncations below the durable watermark are
//! detected and reported with their place; above it they are truncated;
//! wrong data is never returned.

mod common;

use std::sync::Arc;

use common::*;
use otedama_journal::*;
use rand::{Rng, SeedableRng};

const MAX_LEN: usize = 200;

fn opts() -> Options {
    Options { segment_bytes: 64 * 1024, durability: Durability::Batch, prepare_ahead: 1, ..Options::default() }
}

/// Every record's (segment, offset, seq), found by walking the segments.
fn places(storage: &SimStorage) -> Vec<(String, usize, u64)> {
    let scan = scan(storage, false).unwrap();
    let mut places = Vec::new();
    for seg in &scan.segments {
        let mut off = format::SEGMENT_HEADER_BYTES;
        for seq in seg.header.first_seq..=seg.last_seq {
            places.push((seg.name.clone(), off, seq));
            off += storage.with_file(&seg.name, |b| format::get_u32(b, off)).unwrap() as usize;
        }
    }
    places
}

/// A closed journal with `n` records, and where each record lives.
fn build(n: u64) -> (Arc<SimStorage>, Vec<(String, usize, u64)>) {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), opts()).unwrap();
    for _ in 0..n {
        append_seq(&mut j, MAX_LEN);
    }
    j.close().unwrap();
    let places = places(&storage);
    assert_eq!(places.len() as u64, n);
    (storage, places)
}

#[test]
fn damage_below_the_watermark_is_reported_with_its_place() {
    let (storage, places) = build(3000);
    let watermark = scan(&*storage, false).unwrap().watermark;
    assert_eq!(watermark, 3000, "close persists the watermark of every record");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let (seg, off, seq) = places[rng.random_range(0..places.len())].clone();
        let size = storage.with_file(&seg, |b| format::get_u32(b, off)).unwrap() as usize;
        let bit = rng.random_range(0..size * 8);
        storage.with_file(&seg, |b| b[off + bit / 8] ^= 1 << (bit % 8));
        match Journal::open_with(storage.clone(), opts()) {
            Err(JournalError::Corrupt { segment, offset, seq: bad, .. }) => {
                assert_eq!((segment.as_str(), offset as usize, bad), (seg.as_str(), off, seq), "the damage is named exactly");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a flipped bit in record {seq} below the watermark must fail the open"),
        }
        // A reader refuses to go past it too, and never returns the record.
        let mut r = Reader::open_with(storage.clone(), None, seq, false).unwrap();
        assert!(r.try_next().is_err(), "reader must not return damaged record {seq}");
        storage.with_file(&seg, |b| b[off + bit / 8] ^= 1 << (bit % 8));
    }
    // Undamaged again: opens cleanly.
    assert_eq!(Journal::open_with(storage, opts()).unwrap().next_seq(), 3001);
}

#[test]
fn repair_truncates_at_the_damage_and_reports_it() {
    let (storage, places) = build(2000);
    let (seg, off, seq) = places[1234].clone();
    storage.with_file(&seg, |b| b[off + 9] ^= 0x40);
    let j = Journal::open_with(storage.clone(), Options { repair: true, ..opts() }).unwrap();
    let rep = j.open_report().clone();
    assert_eq!(j.next_seq(), seq, "truncated right before the damaged record");
    assert!(rep.repaired_below_watermark);
    assert_eq!(rep.truncated_at.as_ref().map(|d| (d.segment.as_str(), d.offset as usize, d.seq)), Some((seg.as_str(), off, seq)));
    assert!(!rep.dropped_segments.is_empty(), "later segments are reported as dropped");
    drop(j);
    // After repair the journal opens normally and holds the intact prefix.
    let j = Journal::open_with(storage.clone(), opts()).unwrap();
    assert_eq!(j.next_seq(), seq);
    drop(j);
    assert_eq!(read_all_checked(storage, MAX_LEN), seq - 1);
}

#[test]
fn damage_above_the_watermark_is_truncated_silently_and_cleanly() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for round in 0..40 {
        // Records past the watermark: written under `none` and abandoned
        // without a sync, so the persisted watermark stays at 0.
        let storage = Arc::new(SimStorage::new());
        let mut j = Journal::open_with(storage.clone(), Options { durability: Durability::None, ..opts() }).unwrap();
        let n = rng.random_range(10..400);
        for _ in 0..n {
            append_seq(&mut j, MAX_LEN);
        }
        // Wait until the records are in the files (not synced), then crash.
        let t = std::time::Instant::now();
        while j.published_seq() < n && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::yield_now();
        }
        j.abandon();
        let scan0 = scan(&*storage, false).unwrap();
        assert_eq!(scan0.watermark, 0);
        let places = places(&storage);
        let (seg, off, seq) = places[rng.random_range(0..places.len())].clone();
        let size = storage.with_file(&seg, |b| format::get_u32(b, off)).unwrap() as usize;
        // Flip a random bit of record `seq`, or cut the segment where it starts.
        if round % 2 == 0 {
            let at = off + rng.random_range(0..size);
            storage.with_file(&seg, |b| b[at] ^= 1 << rng.random_range(0..8));
        } else {
            storage.with_file(&seg, |b| b[off..].fill(0));
        }
        let j = Journal::open_with(storage.clone(), opts()).unwrap();
        assert_eq!(j.next_seq(), seq, "round {round}: truncated right before the damaged record");
        drop(j);
        // What remains is a clean, checked prefix.
        assert_eq!(read_all_checked(storage, MAX_LEN), seq - 1);
    }
}
