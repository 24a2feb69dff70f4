//! The pool's read model: pool and miner statistics and blocks, from the
//! merged share journals and the blocks journal (read-only).
//!
//! Hashrate is estimated from accepted work: a share of target `t` proves
//! `2^256 / (t + 1)` hashes on average (the `work` its record carries), so
//! the work accepted over a window divided by the window's length is the
//! hash rate, in hashes per second, whatever the algorithm. Work is kept
//! per time bucket: 10 s for the pool (one hour), 60 s per worker (ten
//! minutes) and 300 s per miner (24 hours, the miner's history).

use std::collections::{BTreeMap, VecDeque};

use otedama_engine::chain::record::{BlockRecord, Outcome};
use otedama_engine::stratum::record::ShareRecord;
use otedama_hashers::{Family, Target};

/// Work per fixed-width time bucket over a bounded past.
#[derive(Debug, Clone)]
pub struct Buckets {
    width_s: u64,
    keep: usize,
    /// (bucket start, s since the epoch; shares; work), oldest first.
    b: VecDeque<(u64, u64, u128)>,
}

impl Buckets {
    pub fn new(width_s: u64, keep: usize) -> Buckets {
        Buckets { width_s, keep, b: VecDeque::new() }
    }

    /// Adds a share at `t_s` (the merged stream's times never go down; a
    /// share older than the newest bucket joins it).
    pub fn add(&mut self, t_s: u64, work: u128) {
        let start = t_s - t_s % self.width_s;
        match self.b.back_mut() {
            Some(last) if last.0 >= start => {
                last.1 += 1;
                last.2 += work;
            }
            _ => {
                self.b.push_back((start, 1, work));
                if self.b.len() > self.keep {
                    self.b.pop_front();
                }
            }
        }
    }

    /// Work and shares in the buckets that start in `[now - window, now]`,
    /// and the seconds those buckets span up to `now`.
    pub fn window(&self, now_s: u64, window_s: u64) -> (u128, u64, u64) {
        let from = now_s.saturating_sub(window_s).div_ceil(self.width_s) * self.width_s;
        let (mut work, mut shares) = (0u128, 0u64);
        for &(start, n, w) in self.b.iter().rev() {
            if start < from {
                break;
            }
            if start <= now_s {
                work += w;
                shares += n;
            }
        }
        (work, shares, now_s.saturating_sub(from).max(1))
    }

    /// Hashes per second over the window.
    pub fn hashrate(&self, now_s: u64, window_s: u64) -> f64 {
        let (work, _, span) = self.window(now_s, window_s);
        work as f64 / span as f64
    }

    /// Every bucket, oldest first: (start, shares, work).
    pub fn iter(&self) -> impl Iterator<Item = &(u64, u64, u128)> {
        self.b.iter()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub first_share_ns: u64,
    pub last_share_ns: u64,
    pub shares: u64,
    pub work: u128,
    pub recent: Buckets,
}

#[derive(Debug, Clone)]
pub struct MinerStats {
    pub first_share_ns: u64,
    pub last_share_ns: u64,
    pub shares: u64,
    pub work: u128,
    pub blocks: u64,
    /// 300 s buckets over 24 hours.
    pub history: Buckets,
    /// 60 s buckets over 10 minutes.
    pub recent: Buckets,
    pub workers: BTreeMap<String, WorkerStats>,
}

/// A block as the pool recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Position in the blocks journal: the cursor of the blocks listing.
    pub seq: u64,
    pub recorded_ns: u64,
    pub rec: BlockRecord,
}

pub const MINER_HISTORY_S: u64 = 300;
/// Active: a share within this many seconds.
pub const ACTIVE_S: u64 = 600;

#[derive(Debug, Default)]
pub struct PoolModel {
    miners: BTreeMap<String, MinerStats>,
    workers: u64,
    shares: u64,
    work: u128,
    pool: Option<Buckets>,
    last_network_target: Option<Target>,
    last_height: u32,
    blocks: Vec<Block>,
    last_share_ns: u64,
}

fn label(o: Outcome) -> &'static str {
    match o {
        Outcome::Landed => "landed",
        Outcome::NotOnChain => "not_on_chain",
        Outcome::Rejected => "rejected",
        Outcome::Unreachable => "unreachable",
    }
}

impl Block {
    pub fn outcome(&self) -> &'static str {
        label(self.rec.outcome)
    }
    /// The block id as explorers print it (reversed byte order), hex.
    pub fn id_hex(&self) -> String {
        self.rec.id.iter().rev().map(|b| format!("{b:02x}")).collect()
    }
}

impl PoolModel {
    pub fn new() -> PoolModel {
        PoolModel::default()
    }

    /// One accepted share, at its record's timestamp (ns).
    pub fn apply_share(&mut self, ts_ns: u64, s: &ShareRecord) {
        let t = ts_ns / 1_000_000_000;
        self.shares += 1;
        self.work += s.work;
        self.last_share_ns = self.last_share_ns.max(ts_ns);
        self.pool.get_or_insert_with(|| Buckets::new(10, 360)).add(t, s.work);
        self.last_network_target = Some(s.network_target);
        self.last_height = self.last_height.max(s.height);
        let m = self.miners.entry(s.address.clone()).or_insert_with(|| MinerStats {
            first_share_ns: ts_ns,
            last_share_ns: ts_ns,
            shares: 0,
            work: 0,
            blocks: 0,
            history: Buckets::new(MINER_HISTORY_S, 288),
            recent: Buckets::new(60, 10),
            workers: BTreeMap::new(),
        });
        m.last_share_ns = ts_ns;
        m.shares += 1;
        m.work += s.work;
        m.blocks += s.block as u64;
        m.history.add(t, s.work);
        m.recent.add(t, s.work);
        if !m.workers.contains_key(&s.worker) {
            self.workers += 1;
            m.workers.insert(
                s.worker.clone(),
                WorkerStats { first_share_ns: ts_ns, last_share_ns: ts_ns, shares: 0, work: 0, recent: Buckets::new(60, 10) },
            );
        }
        let w = m.workers.get_mut(&s.worker).expect("inserted above");
        w.last_share_ns = ts_ns;
        w.shares += 1;
        w.work += s.work;
        w.recent.add(t, s.work);
    }

    pub fn apply_block(&mut self, seq: u64, ts_ns: u64, rec: BlockRecord) {
        self.blocks.push(Block { seq, recorded_ns: ts_ns, rec });
    }

    pub fn miners(&self) -> usize {
        self.miners.len()
    }
    pub fn workers(&self) -> u64 {
        self.workers
    }
    pub fn shares(&self) -> u64 {
        self.shares
    }
    pub fn work(&self) -> u128 {
        self.work
    }
    pub fn last_share_ns(&self) -> u64 {
        self.last_share_ns
    }
    pub fn height(&self) -> u32 {
        self.last_height
    }

    /// Pool hashrate (H/s) over the window ending at `now_s`.
    pub fn hashrate(&self, now_s: u64, window_s: u64) -> f64 {
        self.pool.as_ref().map_or(0.0, |b| b.hashrate(now_s, window_s))
    }

    /// Miners and workers with a share in the last [`ACTIVE_S`].
    pub fn active(&self, now_ns: u64) -> (usize, usize) {
        let since = now_ns.saturating_sub(ACTIVE_S * 1_000_000_000);
        let mut miners = 0;
        let mut workers = 0;
        for m in self.miners.values().filter(|m| m.last_share_ns >= since) {
            miners += 1;
            workers += m.workers.values().filter(|w| w.last_share_ns >= since).count();
        }
        (miners, workers)
    }

    /// The network target of the newest share's job: the node's
    /// difficulty (`getdifficulty`'s convention) and hashes per block.
    pub fn network(&self) -> Option<(f64, u128)> {
        self.last_network_target.map(|t| (t.difficulty(Family::Sha256d), otedama_engine::stratum::record::work_of(t)))
    }

    pub fn miner(&self, address: &str) -> Option<&MinerStats> {
        self.miners.get(address)
    }

    /// Blocks newest first, those with `seq < before` when given.
    pub fn blocks(&self, before: Option<u64>, limit: usize) -> impl Iterator<Item = &Block> {
        let end = match before {
            Some(b) => self.blocks.partition_point(|x| x.seq < b),
            None => self.blocks.len(),
        };
        self.blocks[..end].iter().rev().take(limit)
    }

    pub fn blocks_total(&self) -> usize {
        self.blocks.len()
    }
}
