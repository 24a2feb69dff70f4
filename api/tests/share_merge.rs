//! The shard journals merged in (timestamp, shard, sequence) order: a
//! share waits until every live shard has shown a later record, a
//! heartbeat moves a shard's bound, a closed journal holds nobody back.

mod common;

use common::{opts, share};
use otedama_api::share_merge::ShareMerger;
use otedama_journal::{Journal, kinds};

fn append(j: &mut Journal, ts: u64, job: u64) {
    j.append(kinds::SHARE, 1, ts, &share(job, "a", "w", 0, false).encode()).unwrap();
}

fn drain(m: &mut ShareMerger) -> Vec<(u64, u32)> {
    let mut v = Vec::new();
    while let Some(s) = m.next_share().unwrap() {
        v.push((s.ts, s.shard));
    }
    v
}

#[test]
fn shares_come_out_in_timestamp_order_once_every_live_shard_has_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Journal::open(dir.path().join("shares-0"), opts()).unwrap();
    let mut b = Journal::open(dir.path().join("shares-1"), opts()).unwrap();
    append(&mut a, 10, 1);
    append(&mut a, 30, 2);
    append(&mut b, 20, 3);
    a.sync().unwrap();
    b.sync().unwrap();
    let mut m = ShareMerger::new(dir.path(), &Default::default(), 0);
    // Shard 1 (live) has shown 20: 10 and 20 may go, 30 waits.
    assert_eq!(drain(&mut m), vec![(10, 0), (20, 1)]);
    // A heartbeat at 35 from shard 1 lets 30 out.
    b.append_heartbeat(35).unwrap();
    b.sync().unwrap();
    assert_eq!(drain(&mut m), vec![(30, 0)]);
    // Equal timestamps: the lower shard first.
    append(&mut a, 40, 4);
    append(&mut b, 40, 5);
    a.append_heartbeat(50).unwrap();
    b.append_heartbeat(50).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    assert_eq!(drain(&mut m), vec![(40, 0), (40, 1)]);
    // Resuming from the positions gives the rest, nothing twice.
    append(&mut a, 60, 6);
    a.sync().unwrap();
    let pos = m.positions();
    assert_eq!(drain(&mut m), vec![], "shard 1 is live and has only shown 50");
    // A closed journal (its writer gone) holds nobody back.
    b.close().unwrap();
    let mut resumed = ShareMerger::new(dir.path(), &pos, m.last_ts());
    assert_eq!(drain(&mut resumed), vec![(60, 0)]);
    // A shard that appears later is picked up by a rescan.
    let mut c = Journal::open(dir.path().join("shares-2"), opts()).unwrap();
    append(&mut c, 70, 7);
    c.close().unwrap();
    a.close().unwrap();
    resumed.rescan();
    assert_eq!(drain(&mut resumed), vec![(70, 2)]);
    assert_eq!(resumed.last_ts(), 70);
}

#[test]
fn hashrate_is_work_over_the_window() {
    use otedama_api::pool_model::Buckets;
    let mut b = Buckets::new(60, 10);
    // 600 s of shares worth 6,000 hashes each second.
    for t in 0..600u64 {
        b.add(10_000 + t, 6_000);
    }
    let now = 10_599;
    let rate = b.hashrate(now, 600);
    assert!((rate - 6_000.0).abs() / 6_000.0 < 0.11, "{rate}");
    // Ten minutes later nothing is in the window.
    assert_eq!(b.hashrate(now + 1_200, 600), 0.0);
    // Only `keep` buckets are kept.
    assert_eq!(b.iter().count(), 10);
}
