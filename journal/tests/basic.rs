//! Append, read back, roll, reopen, reserve, limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use otedama_journal::*;
use rand::{Rng, SeedableRng};

fn small(durability: Durability) -> Options {
    Options { segment_bytes: 64 * 1024, durability, prepare_ahead: 2, ..Options::default() }
}

#[test]
fn property_random_sizes_read_back_equals_written() {
    for seed in 0..8u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let storage = Arc::new(SimStorage::new());
        let pol = [Durability::None, Durability::Batch, Durability::Always][seed as usize % 3];
        let mut j = Journal::open_with(storage.clone(), small(pol)).unwrap();
        let n = rng.random_range(1..3000);
        let mut written = Vec::new();
        for _ in 0..n {
            let len = if rng.random_bool(0.05) { rng.random_range(0..j.max_payload()) } else { rng.random_range(0..200) };
            let p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let kind = rng.random();
            let seq = j.append(kind, 3, 77, &p).unwrap();
            written.push((seq, kind, p));
        }
        // Read back from a random start while the writer is still open.
        let from = rng.random_range(1..=n as u64);
        let mut r = Reader::open_with(storage.clone(), None, from, false).unwrap();
        for (seq, kind, p) in written.iter().skip(from as usize - 1) {
            // A rolled segment may still await its final name: wait for it.
            let rec = r.next_timeout(Duration::from_secs(5)).unwrap().expect("record present");
            assert_eq!((rec.seq, rec.kind, rec.version, rec.timestamp_ns, rec.payload), (*seq, *kind, 3, 77, &p[..]));
        }
        assert!(r.try_next().unwrap().is_none());
        j.close().unwrap();
        // And after a clean reopen, from the start.
        let j2 = Journal::open_with(storage.clone(), small(pol)).unwrap();
        assert_eq!(j2.next_seq(), n as u64 + 1);
        assert!(j2.open_report().truncated_at.is_none());
        let mut r = Reader::open_with(storage, None, 1, false).unwrap();
        for (seq, _, p) in &written {
            let rec = r.try_next().unwrap().unwrap();
            assert_eq!((rec.seq, rec.payload), (*seq, &p[..]));
        }
    }
}

#[test]
fn rolls_segments_and_names_them_by_first_sequence() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), small(Durability::None)).unwrap();
    for _ in 0..5000 {
        append_seq(&mut j, 100);
    }
    assert!(j.stats().rolls >= 5, "{:?}", j.stats());
    j.close().unwrap();
    let names = storage.list().unwrap();
    let segs: Vec<u64> = names.iter().filter_map(|n| format::parse_segment_name(n)).collect();
    assert!(segs.len() >= 6 && segs[0] == 1, "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(format::PREPARED_PREFIX)), "unused prepared segments removed at close: {names:?}");
    assert_eq!(read_all_checked(storage, 100), 5000);
}

#[test]
fn reservation_writes_in_place_and_drop_writes_nothing() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), small(Durability::None)).unwrap();
    {
        let mut r = j.reserve(5).unwrap();
        r.payload().copy_from_slice(b"hello");
        assert_eq!(r.commit(9, 1, 5).unwrap(), 1);
    }
    {
        let mut r = j.reserve(3).unwrap();
        r.payload().copy_from_slice(b"abc");
        // dropped: never committed
    }
    assert_eq!(j.append(9, 1, 6, b"world").unwrap(), 2);
    assert_eq!(j.append_heartbeat(7).unwrap(), 3);
    // Readers see records once the writeback thread has published them.
    let mut r = Reader::open_with(storage, None, 1, false).unwrap();
    assert_eq!(r.next_timeout(Duration::from_secs(5)).unwrap().unwrap().payload, b"hello");
    assert_eq!(r.next_timeout(Duration::from_secs(5)).unwrap().unwrap().payload, b"world");
    let hb = r.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((hb.kind, hb.timestamp_ns, hb.payload.len()), (otedama_journal::kinds::HEARTBEAT, 7, 0));
    assert!(r.next_timeout(Duration::from_millis(50)).unwrap().is_none());
}

#[test]
fn oversized_record_is_an_error_and_changes_nothing() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage, small(Durability::None)).unwrap();
    let max = j.max_payload();
    assert!(matches!(j.append(1, 1, 0, &vec![0; max + 1]), Err(JournalError::TooLarge { .. })));
    assert_eq!(j.next_seq(), 1);
    assert_eq!(j.append(1, 1, 0, &vec![7; max]).unwrap(), 1);
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _j = Journal::open(dir.path(), small(Durability::None)).unwrap();
    match Journal::open(dir.path(), small(Durability::None)) {
        Err(JournalError::Locked(m)) => assert!(m.contains("already has a writer"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second writer must be refused"),
    }
}

#[test]
fn batch_policy_advances_the_durable_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), small(Durability::Batch)).unwrap();
    let watch = j.durability_watch();
    let mut last = 0;
    for _ in 0..2000 {
        last = append_seq(&mut j, 64);
    }
    assert!(watch.wait(last, Duration::from_secs(10)).unwrap(), "durable watermark reaches {last}");
    assert!(j.durable_seq() >= last);
    assert!(j.stats().syncs > 0);
}

#[test]
fn always_policy_is_durable_on_return() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), small(Durability::Always)).unwrap();
    for _ in 0..50 {
        let s = append_seq(&mut j, 64);
        assert_eq!(j.durable_seq(), s);
    }
    // Nothing unsynced may be lost: cut power with worst-case tearing.
    let after = storage.power_cut(PowerLoss { seed: 1, tear: true });
    let j2 = Journal::open_with(Arc::new(after.clone()), small(Durability::None)).unwrap();
    assert_eq!(j2.next_seq(), 51);
    drop(j2);
    assert_eq!(read_all_checked(Arc::new(after), 64), 50);
}

#[test]
fn released_segments_are_recycled_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), small(Durability::None)).unwrap();
    for i in 0..20_000u64 {
        append_seq(&mut j, 64);
        if i % 500 == 0 {
            j.release(j.next_seq().saturating_sub(2000));
        }
    }
    let st = j.stats();
    assert!(st.segments_recycled > 0, "{st:?}");
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files < 20, "disk use stays bounded: {files} files");
    let next = j.next_seq();
    j.close().unwrap();
    let names: Vec<String> = FileStorage::existing(dir.path()).unwrap().list().unwrap();
    assert!(!names.iter().any(|n| n.starts_with(format::PREPARED_PREFIX)), "every rolled segment renamed by close: {names:?}");
    // The tail is intact after recycling.
    let mut r = Reader::open(dir.path(), next - 1000, ReaderOptions::default()).unwrap();
    let mut n = 0;
    while let Some(rec) = r.try_next().unwrap() {
        check_record(&rec, 64);
        n += 1;
    }
    assert_eq!(n, 1000);
}

#[test]
fn full_disk_is_an_error_not_a_half_written_record() {
    let storage = Arc::new(SimStorage::new());
    let opts = Options { prepare_ahead: 1, ..small(Durability::Batch) };
    let mut j = Journal::open_with(storage.clone(), opts.clone()).unwrap();
    // Wait until the one prepared segment exists, then fill the disk.
    append_seq(&mut j, 64);
    std::thread::sleep(Duration::from_millis(100));
    storage.set_disk_full(true);
    let mut err = None;
    for _ in 0..10_000 {
        let seq = j.next_seq();
        match j.append(otedama_journal::kinds::TEST, 1, seq * 10, &payload_for(seq, 64)) {
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("a full disk must surface as an error");
    assert!(err.is_no_space(), "{err}");
    let last = j.next_seq() - 1;
    // Space comes back: appends continue where they stopped.
    storage.set_disk_full(false);
    let mut ok = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let seq = j.next_seq();
        if j.append(otedama_journal::kinds::TEST, 1, seq * 10, &payload_for(seq, 64)).is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "appends resume once space is back");
    j.close().unwrap();
    assert_eq!(read_all_checked(storage, 64), last + 1);
}

#[test]
fn a_failed_sync_poisons_the_journal_and_is_reported() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), small(Durability::Batch)).unwrap();
    let watch = j.durability_watch();
    let s = append_seq(&mut j, 64);
    assert!(watch.wait(s, Duration::from_secs(5)).unwrap());
    storage.set_fail_syncs(true);
    let s = append_seq(&mut j, 64);
    // The record is never reported durable: the waiter gets the failure.
    match watch.wait(s, Duration::from_secs(5)) {
        Err(JournalError::Poisoned(m)) => assert!(m.contains("Input/output error"), "{m}"),
        other => panic!("expected the sync failure, got {other:?}"),
    }
    assert!(j.durable_seq() < s);
    // And every later append fails instead of pretending.
    assert!(matches!(j.append(1, 1, 0, b"x"), Err(JournalError::Poisoned(_))));
    assert!(j.close().is_err(), "close reports the failure too");
}

#[test]
fn writeback_delay_publishes_without_wakes_and_sync_still_waits() {
    for pol in [Durability::None, Durability::Batch] {
        let storage = Arc::new(SimStorage::new());
        let opts = Options { flusher_spin: Duration::ZERO, writeback_delay: Duration::from_millis(2), ..small(pol) };
        let mut j = Journal::open_with(storage.clone(), opts).unwrap();
        let mut r = Reader::open_with(storage.clone(), None, 1, false).unwrap();
        for i in 0..50u64 {
            let seq = j.append(kinds::TEST, 1, i, b"delayed").unwrap();
            // Published by the flusher's own timer, no wake from the writer.
            let t = std::time::Instant::now();
            let rec = r.next_timeout(Duration::from_secs(5)).unwrap().expect("published within the delay");
            assert_eq!(rec.seq, seq);
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        }
        let last = j.sync().unwrap();
        assert_eq!(j.durable_seq(), last, "{pol:?}: sync wakes the flusher and waits");
        j.close().unwrap();
    }
}

#[test]
fn an_open_with_preparation_held_prepares_nothing_until_released_or_a_roll_needs_it() {
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), small(Durability::None)).unwrap();
    // Stop in the middle of a segment, as a restart usually finds it.
    for _ in 0..300 {
        append_seq(&mut j, 100);
    }
    j.close().unwrap();

    let held = Options { hold_preparation: true, ..small(Durability::None) };
    let j = Journal::open_with(storage.clone(), held.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(j.prepared_segments(), 0, "nothing prepared while held");
    j.release_preparation();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while j.prepared_segments() < 2 {
        assert!(std::time::Instant::now() < until, "released: prepares ahead again");
        std::thread::sleep(Duration::from_millis(10));
    }
    j.close().unwrap();

    // Held and never released: the writer resumes in the segment it
    // found (its stage faulted in only from there on), rolls, and rolls
    // again into reused stages; every record reads back.
    let mut j = Journal::open_with(storage.clone(), held).unwrap();
    for i in 0..5000u64 {
        append_seq(&mut j, 100);
        if i % 500 == 0 {
            j.release(j.next_seq().saturating_sub(1000));
        }
    }
    assert!(j.stats().rolls >= 5, "{:?}", j.stats());
    let next = j.next_seq();
    j.close().unwrap();
    let mut r = Reader::open_with(storage, None, next - 900, false).unwrap();
    let mut n = 0;
    while let Some(rec) = r.try_next().unwrap() {
        check_record(&rec, 100);
        n += 1;
    }
    assert_eq!(n, 900);
}

#[test]
fn a_resumed_stage_past_its_first_window_is_filled_in_while_the_writer_writes() {
    // 8 MiB segments: an open with preparation held faults in 1 MiB of the
    // resumed stage at once and the preparer the rest once released, while
    // the writer is already writing there.
    let opts = Options { segment_bytes: 8 << 20, durability: Durability::None, prepare_ahead: 1, ..Options::default() };
    let storage = Arc::new(SimStorage::new());
    let mut j = Journal::open_with(storage.clone(), opts.clone()).unwrap();
    for _ in 0..1000 {
        append_seq(&mut j, 200);
    }
    j.close().unwrap();
    let mut j = Journal::open_with(storage.clone(), Options { hold_preparation: true, ..opts }).unwrap();
    j.release_preparation();
    // About 20 MiB: past the window, through the populated rest and two rolls.
    for _ in 0..150_000 {
        append_seq(&mut j, 200);
    }
    assert!(j.stats().rolls >= 2, "{:?}", j.stats());
    j.close().unwrap();
    assert_eq!(read_all_checked(storage, 200), 151_000);
}

#[test]
fn a_sync_interval_spaces_group_commits_while_readers_see_records_at_once() {
    let storage = Arc::new(SimStorage::new());
    let interval = Duration::from_millis(400);
    let opts = Options { sync_interval: interval, ..small(Durability::Batch) };
    let mut j = Journal::open_with(storage.clone(), opts).unwrap();
    let watch = j.durability_watch();
    // The first record is synced at once (no sync started yet).
    let first = append_seq(&mut j, 100);
    assert!(watch.wait(first, Duration::from_secs(5)).unwrap());
    let t = std::time::Instant::now();
    let second = append_seq(&mut j, 100);
    // Readers see it at once; the sync waits for the interval.
    let mut r = Reader::open_with(storage.clone(), None, second, false).unwrap();
    let rec = r.next_timeout(Duration::from_secs(5)).unwrap().expect("published before the sync");
    assert_eq!(rec.seq, second);
    assert!(t.elapsed() < interval / 2, "published in {:?}", t.elapsed());
    assert!(j.durable_seq() < second, "not synced before the interval");
    assert!(watch.wait(second, Duration::from_secs(5)).unwrap());
    let took = t.elapsed();
    assert!(took >= interval / 2, "synced after {took:?}, interval {interval:?}");
    // sync() does not wait for the interval.
    let third = append_seq(&mut j, 100);
    let t = std::time::Instant::now();
    assert_eq!(j.sync().unwrap(), third);
    assert!(j.durable_seq() >= third);
    assert!(t.elapsed() < interval / 2, "sync() took {:?}", t.elapsed());
    j.close().unwrap();
}
