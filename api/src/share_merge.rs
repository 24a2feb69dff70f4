//! The shares of every Stratum shard, merged into one stream in the order
//! every reader of the shard journals uses: (timestamp, shard, sequence).
//!
//! Each I/O shard writes its accepted shares to a journal of its own
//! (`<data_dir>/pool/shares-<i>`) and a heartbeat when idle, so a merger
//! knows how far every shard has got: a share is emitted only once every
//! other shard has shown a record (share or heartbeat) at or after its
//! timestamp, or has no live writer. The merged stream's timestamps never
//! go down, which lets consumers close time intervals for good.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use otedama_journal::{Reader, ReaderOptions, kinds};

/// One share record as merged (payload copied out of the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedShare {
    pub shard: u32,
    pub seq: u64,
    pub ts: u64,
    pub version: u16,
    pub payload: Vec<u8>,
}

struct Shard {
    index: u32,
    dir: PathBuf,
    reader: Option<Reader>,
    /// Last record consumed (share emitted, or anything else skipped).
    consumed: u64,
    head: Option<MergedShare>,
    /// Newest timestamp this shard has shown.
    frontier: u64,
    /// No record waiting and no live writer: it holds nobody back.
    finished: bool,
}

/// Whether the process a journal's control block names is running.
fn pid_alive(pid: u64) -> bool {
    pid != 0 && (pid == std::process::id() as u64 || Path::new(&format!("/proc/{pid}")).exists())
}

impl Shard {
    /// Reads until a share is at the head or nothing more is there.
    fn fill(&mut self) -> Result<(), String> {
        if self.head.is_some() {
            return Ok(());
        }
        if self.reader.is_none() {
            match Reader::open(&self.dir, self.consumed + 1, ReaderOptions::default()) {
                Ok(r) => self.reader = Some(r),
                // Created but not yet initialised by its writer.
                Err(_) if !self.dir.join("journal.ctl").exists() => return Ok(()),
                Err(e) => return Err(format!("{}: {e}", self.dir.display())),
            }
        }
        let r = self.reader.as_mut().expect("opened above");
        loop {
            match r.try_next() {
                Ok(Some(rec)) => {
                    self.finished = false;
                    self.frontier = self.frontier.max(rec.timestamp_ns);
                    if rec.kind == kinds::SHARE {
                        self.head = Some(MergedShare {
                            shard: self.index,
                            seq: rec.seq,
                            ts: rec.timestamp_ns,
                            version: rec.version,
                            payload: rec.payload.to_vec(),
                        });
                        return Ok(());
                    }
                    self.consumed = rec.seq;
                }
                Ok(None) => {
                    self.finished = !pid_alive(r.writer_pid());
                    return Ok(());
                }
                Err(e) => return Err(format!("{}: {e}", self.dir.display())),
            }
        }
    }

    /// The earliest timestamp a record this shard has not shown yet can have.
    fn bound(&self) -> u64 {
        match &self.head {
            Some(h) => h.ts,
            None if self.finished => u64::MAX,
            None => self.frontier,
        }
    }
}

/// The merged share stream of one pool directory.
pub struct ShareMerger {
    pool_dir: PathBuf,
    shards: Vec<Shard>,
    last_ts: u64,
}

impl ShareMerger {
    /// A merger that resumes after `positions` (shard → last record
    /// consumed; shards not named start at the beginning) and whose stream
    /// had reached `last_ts`.
    pub fn new(pool_dir: impl Into<PathBuf>, positions: &BTreeMap<u32, u64>, last_ts: u64) -> ShareMerger {
        let mut m = ShareMerger { pool_dir: pool_dir.into(), shards: Vec::new(), last_ts };
        for (&index, &consumed) in positions {
            m.add(index, consumed);
        }
        m.rescan();
        m
    }

    fn add(&mut self, index: u32, consumed: u64) {
        let dir = self.pool_dir.join(format!("shares-{index}"));
        self.shards.push(Shard { index, dir, reader: None, consumed, head: None, frontier: 0, finished: false });
        self.shards.sort_by_key(|s| s.index);
    }

    /// Picks up shard journals created since (a pool restarted with more
    /// shards).
    pub fn rescan(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.pool_dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(i) = name.to_str().and_then(|n| n.strip_prefix("shares-")).and_then(|n| n.parse::<u32>().ok()) else { continue };
            if !self.shards.iter().any(|s| s.index == i) {
                self.add(i, 0);
            }
        }
    }

    /// The next share in merged order, if every shard has shown enough to
    /// place it.
    pub fn next_share(&mut self) -> Result<Option<MergedShare>, String> {
        for s in &mut self.shards {
            s.fill()?;
        }
        let Some(i) = (0..self.shards.len())
            .filter(|&i| self.shards[i].head.is_some())
            .min_by_key(|&i| self.shards[i].head.as_ref().map(|h| (h.ts, h.shard, h.seq)))
        else {
            return Ok(None);
        };
        let ts = self.shards[i].head.as_ref().expect("filtered").ts;
        let held_back = self.shards.iter().enumerate().any(|(j, s)| j != i && s.bound() < ts);
        if held_back {
            return Ok(None);
        }
        let s = &mut self.shards[i];
        let h = s.head.take().expect("filtered");
        s.consumed = h.seq;
        self.last_ts = self.last_ts.max(h.ts);
        Ok(Some(h))
    }

    /// Shard → last record consumed.
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        self.shards.iter().map(|s| (s.index, s.consumed)).collect()
    }

    /// The newest timestamp emitted.
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Records the shard journals hold beyond what was consumed.
    pub fn lag(&self) -> u64 {
        self.shards.iter().map(|s| s.reader.as_ref().map_or(0, |r| r.published_seq().saturating_sub(s.consumed))).sum()
    }
}
