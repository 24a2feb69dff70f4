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
    /// First 8 bytes of each accepted share's header hash. Membership only,
    /// never iterated, so its order cannot leak into any result.
    #[allow(clippy::disallowed_types)]
    seen: std::collections::HashSet<u64>,
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
        #[allow(clippy::disallowed_types)]
        let seen = std::collections::HashSet::new();
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
            Some(e) if e.seen.contains(&key) => Seen::Duplicate,
            Some(e) if e.seen.len() >= max => Seen::Full,
            Some(e) => {
                e.seen.insert(key);
                Seen::New
            }
        }
    }
}
