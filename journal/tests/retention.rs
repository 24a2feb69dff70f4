//! Retention removes or archives only segments that the newest snapshot
//! (minus the margin) and every registered reader have moved past; readers
//! still read archived segments.

mod common;

use common::*;
use otedama_journal::retention::{self, Cursor, RetentionPolicy};
use otedama_journal::snapshot::Snapshots;
use otedama_journal::*;

fn segments(dir: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> =
        std::fs::read_dir(dir).unwrap().filter_map(|e| format::parse_segment_name(e.unwrap().file_name().to_str().unwrap())).collect();
    v.sort();
    v
}

fn build(dir: &std::path::Path, n: u64) -> Vec<u64> {
    let opts = Options { segment_bytes: 64 * 1024, durability: Durability::None, ..Options::default() };
    let mut j = Journal::open(dir, opts).unwrap();
    for _ in 0..n {
        append_seq(&mut j, 100);
    }
    j.close().unwrap();
    segments(dir)
}

#[test]
fn nothing_goes_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let before = build(dir.path(), 5000);
    let rep = retention::apply(dir.path(), 3, &RetentionPolicy::default()).unwrap();
    assert_eq!(rep.snapshot_seq, None);
    assert!(rep.removed.is_empty());
    assert_eq!(segments(dir.path()), before);
}

#[test]
fn snapshot_margin_and_readers_bound_what_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 5000);
    assert!(segs.len() >= 6, "{segs:?}");
    Snapshots::open(dir.path(), 3).unwrap().write(4000, b"state at 4000").unwrap();
    // A reader that has consumed everything below segs[2].
    let cursor = Cursor::register(dir.path(), "cold-path").unwrap();
    cursor.commit(segs[2]).unwrap();

    let rep = retention::apply(dir.path(), 3, &RetentionPolicy { margin_records: 100, archive: None }).unwrap();
    assert_eq!(rep.slowest_reader, Some(("cold-path".into(), segs[2])));
    assert_eq!(rep.limit_seq, segs[2], "the reader is the tighter bound");
    assert_eq!(segments(dir.path()), segs[2..].to_vec(), "segments wholly below the reader's position are gone");

    // The reader moves on: the snapshot margin becomes the bound.
    cursor.commit(5001).unwrap();
    let rep = retention::apply(dir.path(), 3, &RetentionPolicy { margin_records: 100, archive: None }).unwrap();
    assert_eq!(rep.limit_seq, 3901);
    let left = segments(dir.path());
    assert!(left.first().is_some_and(|&f| f <= 3901), "the segment holding 3901 stays: {left:?}");
    assert!(left.len() >= 2, "the newest segment always stays");
    // The journal still opens and reads from its new first record.
    let storage = std::sync::Arc::new(FileStorage::existing(dir.path()).unwrap());
    assert_eq!(read_all_checked(storage, 100), 5000);
}

#[test]
fn archived_segments_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let segs = build(dir.path(), 5000);
    Snapshots::open(dir.path(), 3).unwrap().write(5000, b"all").unwrap();
    let rep = retention::apply(dir.path(), 3, &RetentionPolicy { margin_records: 0, archive: Some(archive.path().to_owned()) }).unwrap();
    assert_eq!(rep.archived.len(), segs.len() - 1, "all but the newest");
    assert_eq!(segments(dir.path()), vec![*segs.last().unwrap()]);
    // A reader given the archive reads from sequence 1 across both places.
    let mut r = Reader::open(dir.path(), 1, ReaderOptions { archive: Some(archive.path().to_owned()), durable_only: false }).unwrap();
    let mut n = 0;
    while let Some(rec) = r.try_next().unwrap() {
        assert_eq!(rec.seq, n + 1);
        check_record(&rec, 100);
        n += 1;
    }
    assert_eq!(n, 5000);
    // Without the archive, the old records are reported as gone.
    assert!(matches!(Reader::open(dir.path(), 1, ReaderOptions::default()), Err(JournalError::NotAvailable { .. })));
}
