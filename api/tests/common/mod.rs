//! Test fixtures: journals as the engine and the pool write them, and a
//! real PostgreSQL server.
#![allow(dead_code)]

use std::path::Path;

use otedama_engine::chain::record::{BlockRecord, Outcome};
use otedama_engine::stratum::record::{ShareRecord, work_of};
use otedama_engine::workload::{self, Mix, Workload};
use otedama_engine::{Event, Exchange};
use otedama_hashers::Target;
use otedama_journal::{Durability, Journal, Options, kinds};
use otedama_net::sequencer::Sequencer;

pub fn opts() -> Options {
    Options { durability: Durability::None, segment_bytes: 8 << 20, ..Options::default() }
}

/// What an exchange journal holds, counted from the engine's own events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeCounts {
    pub trades: u64,
    pub orders: u64,
    pub open: u64,
}

/// Appends `n` random commands (after the workload's setup when `setup`)
/// to the exchange journal in `dir`, continuing `w`.
pub fn exchange_journal(dir: &Path, w: &mut Workload, n: usize, setup: bool, c: &mut ExchangeCounts, ex: Option<Exchange>) -> Exchange {
    let journal = Journal::open(dir, opts()).unwrap();
    let mut sq = Sequencer::new(ex.unwrap_or_else(|| Exchange::new(workload::limits())), journal);
    if setup {
        for cmd in w.setup() {
            sq.submit(&cmd).unwrap();
        }
    }
    let mut ev = Vec::new();
    for _ in 0..n {
        let cmd = w.next_command();
        let (_, events) = sq.submit(&cmd).unwrap();
        ev.clear();
        ev.extend_from_slice(events);
        w.observe(&ev);
        for e in &ev {
            match e {
                Event::Accepted { .. } => c.orders += 1,
                Event::Executed { maker: true, .. } => c.trades += 1,
                _ => {}
            }
        }
    }
    c.open = sq.exchange().open_orders() as u64;
    let (ex, journal) = sq.into_parts();
    journal.close().unwrap();
    ex
}

pub fn new_workload(seed: u64) -> Workload {
    Workload::new(Mix::ExchangeCore, seed)
}

pub fn share(i: u64, addr: &str, worker: &str, diff_shift: u32, block: bool) -> ShareRecord {
    // Share targets 2^(240 - shift): work 2^(16 + shift) roughly.
    let mut t = [0u8; 32];
    t[30 - (diff_shift as usize / 8)] = 1;
    let share_target = Target::from_le_bytes(t);
    let network_target = Target::from_compact(0x1d00ffff).unwrap();
    ShareRecord {
        job: i,
        height: 100,
        share_target,
        network_target,
        work: work_of(share_target),
        time: 1_700_000_000,
        block,
        address: addr.to_string(),
        worker: format!("{addr}.{worker}"),
    }
}

/// Shares written to `shards` journals with timestamps `t0 + k·step`
/// (shard k % shards), then closed. Returns Σ work per address.
pub fn share_journals(pool: &Path, shards: u32, n: u64, t0: u64, step: u64, start_k: u64) -> std::collections::BTreeMap<String, u128> {
    let mut js: Vec<Journal> = (0..shards).map(|i| Journal::open(pool.join(format!("shares-{i}")), opts()).unwrap()).collect();
    let mut work = std::collections::BTreeMap::new();
    for k in start_k..start_k + n {
        let addr = format!("addr{}", k % 7);
        let rec = share(k, &addr, &format!("w{}", k % 3), (k % 3) as u32 * 8, k % 97 == 0);
        *work.entry(addr).or_insert(0u128) += rec.work;
        let j = &mut js[(k % shards as u64) as usize];
        j.append(kinds::SHARE, 1, t0 + k * step, &rec.encode()).unwrap();
    }
    for j in js {
        j.close().unwrap();
    }
    work
}

pub fn block(height: u32, finder: &str) -> BlockRecord {
    BlockRecord {
        height,
        id: [height as u8; 32],
        time: 1_700_000_000 + height,
        subsidy: 5_000_000_000,
        fees: 1234,
        job: height as u64 * 10,
        outcome: Outcome::Landed,
        on_chain_mask: 3,
        finder: finder.to_string(),
        worker: "rig".into(),
        reason: String::new(),
    }
}

pub fn blocks_journal(pool: &Path, heights: std::ops::Range<u32>) {
    let mut j = Journal::open(pool.join("blocks"), opts()).unwrap();
    for h in heights {
        j.append(kinds::BLOCK_FOUND, 1, otedama_journal::now_ns(), &block(h, "addr1").encode()).unwrap();
    }
    j.close().unwrap();
}
