//! A crash test that really kills: a child process appends and is SIGKILLed
//! at random moments, many times. Reopening always succeeds and returns a
//! clean prefix, and every record the child saw durable is there.
//!
//! The child is this test binary itself, re-run with an environment
//! variable that makes `child_writer` do the writing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use otedama_journal::*;
use rand::{Rng, SeedableRng};

const MAX_LEN: usize = 500;
const CHILD_ENV: &str = "OTEDAMA_JOURNAL_CRASH_CHILD_DIR";

fn opts() -> Options {
    Options { segment_bytes: 256 * 1024, durability: Durability::Batch, prepare_ahead: 2, ..Options::default() }
}

/// Runs only inside the child: append forever, printing durable watermarks.
#[test]
#[ignore = "entry point of the child process the parent test spawns; does nothing without its environment"]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let mut j = Journal::open(&dir, opts()).expect("child open");
    let mut last_print = 0;
    loop {
        append_seq(&mut j, MAX_LEN);
        let d = j.durable_seq();
        if d >= last_print + 200 {
            println!("durable {d}");
            last_print = d;
        }
    }
}

#[test]
fn sigkill_at_random_moments_always_reopens_to_a_clean_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut prev_last = 0;
    let mut kills = 0;
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(d) = line.strip_prefix("durable ") {
                    let _ = tx.send(d.parse::<u64>().unwrap());
                }
            }
        });
        // Wait until it is writing, then kill it at a random moment.
        let mut seen_durable = rx.recv_timeout(Duration::from_secs(30)).expect("child reports progress");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..80)));
        while let Ok(d) = rx.try_recv() {
            seen_durable = seen_durable.max(d);
        }
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        kills += 1;
        while let Ok(d) = rx.try_recv() {
            seen_durable = seen_durable.max(d);
        }

        let j = Journal::open(dir.path(), opts()).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let last = j.next_seq() - 1;
        assert!(last >= seen_durable, "round {round}: durable {seen_durable} reported, only {last} present");
        assert!(last >= prev_last, "round {round}: the journal went backwards");
        drop(j);
        let storage = std::sync::Arc::new(FileStorage::existing(dir.path()).unwrap());
        assert_eq!(read_all_checked(storage, MAX_LEN), last, "round {round}");
        prev_last = last;
    }
    assert_eq!(kills, 25);
    assert!(prev_last > 1000, "the children made progress: {prev_last}");
}
