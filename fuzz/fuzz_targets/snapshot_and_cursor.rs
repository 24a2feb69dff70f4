//! Arbitrary bytes as a snapshot file and as a reader cursor file: loading
//! must never panic and never return a snapshot that does not check out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_journal::{retention, snapshot::Snapshots};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = Snapshots::open(dir.path(), 2).expect("open");
    std::fs::write(snaps.dir().join("00000000000000000005.snap"), data).expect("write");
    if let Ok(Some(s)) = snaps.latest() {
        assert_eq!(s.seq, 5);
    }
    let readers = dir.path().join(retention::READERS_DIR);
    std::fs::create_dir_all(&readers).expect("mkdir");
    std::fs::write(readers.join("r.cursor"), data).expect("write");
    let _ = retention::readers(dir.path()).expect("list readers");
});
