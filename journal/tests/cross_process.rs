//! A reader in one process tails a writer in another, parked on the futex
//! between records, and sees every record exactly once and in order.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use otedama_journal::*;

const MAX_LEN: usize = 120;
const CHILD_ENV: &str = "OTEDAMA_JOURNAL_TAIL_CHILD_DIR";
const N: u64 = 20_000;

#[test]
#[ignore = "entry point of the child process the parent test spawns; does nothing without its environment"]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let opts = Options { segment_bytes: 128 * 1024, durability: Durability::Batch, ..Options::default() };
    let mut j = Journal::open(&dir, opts).expect("child open");
    for i in 0..N {
        append_seq(&mut j, MAX_LEN);
        // Bursts and pauses, so the reader both streams and parks.
        if i % 1000 == 999 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    j.close().expect("close");
}

#[test]
fn tail_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    // The reader starts first, on an empty directory.
    let mut reader = Reader::open(dir.path(), 1, ReaderOptions::default()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_appender", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut expect = 1;
    while expect <= N {
        assert!(Instant::now() < deadline, "tail stalled at {expect}");
        if let Some(rec) = reader.next_timeout(Duration::from_millis(200)).unwrap() {
            assert_eq!(rec.seq, expect);
            check_record(&rec, MAX_LEN);
            expect += 1;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(reader.try_next().unwrap().is_none(), "nothing after the last record");
    // A durable-only reader sees the same records once they are synced.
    let mut durable = Reader::open(dir.path(), N - 10, ReaderOptions { durable_only: true, ..Default::default() }).unwrap();
    let mut n = 0;
    while let Some(rec) = durable.try_next().unwrap() {
        check_record(&rec, MAX_LEN);
        n += 1;
    }
    assert_eq!(n, 11);
}
