//! The jobs an I/O shard's sessions may submit shares for: the newest
//! few of the current previous block, each with its `mining.notify` line
//! (serialised once, sent as the same bytes to every session) and the set
//! of shares already seen for it (duplicates are refused). In solo mode a
//! job has one variant per payout script (the coinbase pays the miner),
//! each built and serialised once, when the first session paying that
//! script needs it.

use std::collections::VecDeque;
use std::sync::Arc;

use super::session::notify_line;
use crate::chain::job::Job;

/// A job whose coinbase pays one miner's script.
struct Variant {
    job: Arc<Job>,
    line: String,
    clean_line: String,
}

struct Entry {
    job: Arc<Job>,
    clean: bool,
    /// Solo mode: by payout script. Ordered map: never iterated for a
    /// result, ordered anyway so nothing could depend on hash order.
    variants: std::collections::BTreeMap<Vec<u8>, Variant>,
    /// The notify line with `clean_jobs` as the job was announced, and as
    /// a clean one for sessions that start mining on it.
    line: String,
    clean_line: String,
    seen: SeenSet,
}

/// How many tables a job's set of seen shares is split into.
const SEEN_PARTS: usize = 256;

/// First 8 bytes of each accepted share's header hash, split by their
/// first byte over [`SEEN_PARTS`] tables. One table rehashes every entry
/// when it grows: in `otedama bench stratum` the runs in which one table
/// grew past 458 k and 917 k shares had a p99.9 of 8–40 ms, and 4–10 ms
/// once the set was split. Split, a growth rehashes 1/256 of the set. Membership only, never iterated, so no order
/// can leak into any result.
struct SeenSet {
    #[allow(clippy::disallowed_types)]
    parts: Box<[std::collections::HashSet<u64>]>,
    len: usize,
}

impl SeenSet {
    fn new() -> SeenSet {
        #[allow(clippy::disallowed_types)]
        let parts = (0..SEEN_PARTS).map(|_| std::collections::HashSet::new()).collect();
        SeenSet { parts, len: 0 }
    }

    fn contains(&self, key: u64) -> bool {
        self.parts[key as usize % SEEN_PARTS].contains(&key)
    }

    fn insert(&mut self, key: u64) {
        if self.parts[key as usize % SEEN_PARTS].insert(key) {
            self.len += 1;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// The job has taken its most shares: it is treated as stale.
    Full,
    Gone,
}

pub struct JobBook {
    entries: VecDeque<Entry>,
    max_jobs: usize,
    max_shares_per_job: usize,
}

impl JobBook {
    /// Keeps the newest `max_jobs` jobs and at most `max_shares_per_job`
    /// share hashes per job (a job whose set is full accepts no more
    /// shares: its submitter gets "Job not found" and the next job).
    pub fn new(max_jobs: usize, max_shares_per_job: usize) -> JobBook {
        JobBook { entries: VecDeque::new(), max_jobs: max_jobs.max(1), max_shares_per_job }
    }

    /// A new job; `clean` (a new previous block) makes every older job
    /// stale. Returns the line to send to every mining session.
    pub fn push(&mut self, job: Arc<Job>, clean: bool) -> &str {
        if clean {
            self.entries.clear();
        }
        while self.entries.len() >= self.max_jobs {
            self.entries.pop_front();
        }
        let line = notify_line(&job, clean);
        let clean_line = if clean { line.clone() } else { notify_line(&job, true) };
        let seen = SeenSet::new();
        self.entries.push_back(Entry { job, clean, variants: Default::default(), line, clean_line, seen });
        &self.entries.back().expect("just pushed").line
    }

    /// Solo mode: job `id` paying `script`, and its notify line (as
    /// announced, or with `clean_jobs` set), built on first use.
    pub fn variant(&mut self, id: u64, script: &[u8], clean: bool) -> Option<(Arc<Job>, &str)> {
        let e = self.entries.iter_mut().rev().find(|e| e.job.id == id)?;
        let was_clean = e.clean;
        let base = e.job.clone();
        let v = e.variants.entry(script.to_vec()).or_insert_with(|| {
            let job = Arc::new(base.with_payout(script));
            let line = notify_line(&job, was_clean);
            let clean_line = if was_clean { line.clone() } else { notify_line(&job, true) };
            Variant { job, line, clean_line }
        });
        Some((v.job.clone(), if clean { &v.clean_line } else { &v.line }))
    }

    /// The newest job's id.
    pub fn latest_id(&self) -> Option<u64> {
        self.entries.back().map(|e| e.job.id)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.entries.iter().rev().find(|e| e.job.id == id).map(|e| e.job.clone())
    }

    /// The newest job's id and its notify line with `clean_jobs` set.
    pub fn latest_clean(&self) -> Option<(u64, &str)> {
        self.entries.back().map(|e| (e.job.id, e.clean_line.as_str()))
    }

    /// Records a share of job `id` by its header hash.
    pub fn record(&mut self, id: u64, header_hash: &[u8; 32]) -> Seen {
        let key = u64::from_le_bytes(header_hash[..8].try_into().expect("8 bytes"));
        let max = self.max_shares_per_job;
        match self.entries.iter_mut().rev().find(|e| e.job.id == id) {
            None => Seen::Gone,
            Some(e) if e.seen.contains(key) => Seen::Duplicate,
            Some(e) if e.seen.len >= max => Seen::Full,
            Some(e) => {
                e.seen.insert(key);
                Seen::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::address::{Coin, Network};
    use crate::chain::devnet::Devnet;
    use crate::chain::job::CoinbaseConfig;
    use otedama_hashers::Algorithm;

    fn job(id: u64) -> Arc<Job> {
        let t = Devnet::new(Algorithm::Sha256d, 1_700_000_000).template(1_700_000_100);
        Arc::new(Job::new(id, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap())
    }

    fn hash(k: u64) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&k.to_le_bytes());
        h
    }

    #[test]
    fn shares_are_new_once_then_duplicates_until_the_job_is_full_or_gone() {
        let max = 5_000;
        let mut book = JobBook::new(2, max);
        book.push(job(1), true);
        // Keys spread over every table and keys that share one.
        let keys: Vec<u64> = (0..max as u64).map(|i| if i % 2 == 0 { i.wrapping_mul(0x9E37_79B9_7F4A_7C15) } else { i << 8 }).collect();
        for &k in &keys {
            assert_eq!(book.record(1, &hash(k)), Seen::New, "{k}");
        }
        for &k in &keys {
            assert_eq!(book.record(1, &hash(k)), Seen::Duplicate, "{k}");
        }
        assert_eq!(book.record(1, &hash(u64::MAX)), Seen::Full);
        assert_eq!(book.record(9, &hash(1)), Seen::Gone);
        // A new job has a set of its own; the old one goes when it falls
        // out of the newest two.
        book.push(job(2), false);
        assert_eq!(book.record(2, &hash(keys[0])), Seen::New);
        assert_eq!(book.record(1, &hash(keys[0])), Seen::Duplicate);
        book.push(job(3), false);
        assert_eq!(book.record(1, &hash(keys[0])), Seen::Gone);
    }
}
