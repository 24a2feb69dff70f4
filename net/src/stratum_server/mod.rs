//! The Stratum V1 server of `otedama engine`: I/O shards on io_uring that
//! hold miners' sessions, judge their shares and journal them.
//!
//! ```text
//!  template task ──mpsc──▶ job fan-out ──ring──▶ Stratum shard 0..n ◀──TCP── miners
//!                                                 │  │  │
//!       scrypt/RandomX verification workers ◀──q──┘  │  └──▶ shares-<i> journal (one writer each)
//!                                                    └──▶ block submitter ──▶ nodes, blocks journal
//! ```
//!
//! Each shard owns one `SO_REUSEPORT` listener, one io_uring and one pool
//! of receive buffers its multishot receives draw from (an idle miner
//! holds no receive buffer). A session lives on the shard that accepted
//! it: lines are parsed and answered there, sha256d shares are hashed
//! inline, costlier hashes go to verification workers over a bounded
//! queue (full: the share is refused as busy, the shard never waits). A
//! block-solving share is handed to the block submitter before its answer
//! is queued. Every accepted share is appended to the shard's own journal
//! before it is answered. Wire forms and record layouts: `net/STRATUM.md`.

mod bufring;
mod shard;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use otedama_engine::chain::job::Job;
use otedama_engine::stratum::session::{Pending, PortRules};
use otedama_hashers::Family;
use otedama_journal::{Journal, Options as JournalOptions};

use crate::blocks::{self, Finder};
use crate::gateway::{Poll, Waker, listener, pin};
use crate::node::Node;
use crate::template_task::Work;

#[derive(Debug, Clone)]
pub struct StratumConfig {
    /// Address every shard listens on (SO_REUSEPORT). Port 0: any free port.
    pub listen: SocketAddr,
    /// One entry per shard: the core it is pinned to, or `None`.
    pub cores: Vec<Option<usize>>,
    pub poll: Poll,
    pub rules: PortRules,
    /// Bytes of extranonce1 (the first is the shard's number).
    pub extranonce1_size: usize,
    /// Longest request line (bytes, newline excluded); a longer one ends
    /// the connection.
    pub max_line: usize,
    /// Connections per shard.
    pub max_connections: usize,
    /// Connections from one IP address, across every shard.
    pub per_ip_limit: u32,
    /// Time a connection has to subscribe and authorize.
    pub handshake_timeout: Duration,
    /// A session that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A line begun but not finished within this is a slow sender: closed.
    pub line_timeout: Duration,
    /// Bytes a session's outbound queue may hold before it is cut off.
    pub outbound_queue_bytes: usize,
    /// Jobs each shard keeps (older ones are stale) and shares remembered
    /// per job for duplicate checks.
    pub jobs_kept: usize,
    pub max_shares_per_job: usize,
    /// Threads verifying scrypt shares (unused for sha256d).
    pub verify_workers: usize,
    /// Shares waiting for a verification worker, across shards.
    pub verify_queue: usize,
    /// Receive buffers per shard and their size (a power of two count).
    pub recv_buffers: u16,
    pub recv_buffer_size: usize,
    /// Shard journals (`shares-<i>`) and the blocks journal (`blocks`).
    pub journal_dir: PathBuf,
    pub journal: JournalOptions,
    /// How long block submission waits for the nodes' tips to show a block.
    pub confirm_wait: Duration,
    /// Where each payout address's first authorize on a shard is sent
    /// (the miner accounts registry); `None`: nowhere.
    pub authorized: Option<mpsc::Sender<String>>,
    /// Core for the threads around the shards (journal writeback and
    /// segment preparation, job fan-out, block submission, verification
    /// workers), so they never preempt a shard; `None`: unpinned.
    pub housekeeping_core: Option<usize>,
    /// A second port speaking Stratum over TLS, served by the same shards.
    pub tls: Option<TlsListen>,
    /// The certificate file behind `tls` (for the start line's fingerprint).
    pub tls_cert: Option<PathBuf>,
    /// Benchmarks only: the same shards with the Stratum work taken out.
    pub baseline: Baseline,
}

#[derive(Debug, Clone)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub config: Arc<rustls::ServerConfig>,
}

/// What a shard does with a line. Anything but `Stratum` exists for
/// `otedama bench stratum`: the same io_uring loop, buffers, queues and
/// fan-out, with the protocol's work removed, so the benchmark's ratios
/// isolate what Stratum costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Real Stratum sessions.
    Stratum,
    /// Every line is sent straight back; every connection that sent a line
    /// receives each job's notify bytes, written as they are (no session
    /// bookkeeping, no job table).
    Echo,
}

impl StratumConfig {
    /// One unpinned, parking shard: tests and small hosts.
    pub fn parking(listen: SocketAddr, rules: PortRules, journal_dir: PathBuf) -> StratumConfig {
        StratumConfig {
            listen,
            cores: vec![None],
            poll: Poll::Park,
            rules,
            extranonce1_size: 4,
            max_line: 8 << 10,
            max_connections: 65_536,
            per_ip_limit: 65_536,
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(900),
            line_timeout: Duration::from_secs(15),
            outbound_queue_bytes: 256 << 10,
            jobs_kept: 8,
            max_shares_per_job: 1 << 20,
            verify_workers: 1,
            verify_queue: 4096,
            recv_buffers: 4096,
            recv_buffer_size: 2048,
            journal_dir,
            journal: JournalOptions::default(),
            confirm_wait: Duration::from_secs(2),
            authorized: None,
            housekeeping_core: None,
            tls: None,
            tls_cert: None,
            baseline: Baseline::Stratum,
        }
    }
}

/// Counters the server shares (tests, benchmarks, logs).
#[derive(Debug, Default)]
pub struct StratumCounters {
    pub connections_accepted: AtomicU64,
    pub connections_closed: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub refused_full: AtomicU64,
    pub sessions_mining: AtomicU64,
    pub lines: AtomicU64,
    pub shares_accepted: AtomicU64,
    /// Error answers by Stratum code 20..=25 (refused shares, and refused
    /// requests of other kinds).
    pub errors: [AtomicU64; 6],
    pub verify_busy: AtomicU64,
    pub blocks_found: AtomicU64,
    pub blocks_landed: AtomicU64,
    pub lines_too_long: AtomicU64,
    pub slow_readers: AtomicU64,
    pub timeouts: AtomicU64,
    pub jobs: AtomicU64,
    pub addresses_authorized: AtomicU64,
    /// Sessions whose extranonce1 a resume from their own address took
    /// over: moved with `mining.set_extranonce`, or disconnected when they
    /// never subscribed to extranonce changes.
    pub extranonce_moved: AtomicU64,
    pub extranonce_disconnected: AtomicU64,
}

impl StratumCounters {
    pub fn rejected(&self, code: u32) -> u64 {
        self.errors.get((code as usize).wrapping_sub(20)).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A share waiting for its proof-of-work hash on a verification worker.
pub(crate) struct VerifyReq {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
    pub pending: Box<Pending>,
}

pub(crate) struct Verified {
    pub slot: u32,
    pub generation: u32,
    pub pending: Box<Pending>,
    pub pow: [u8; 32],
}

/// A block-solving share on its way to the nodes.
pub(crate) struct BlockReq {
    pub job: Arc<Job>,
    pub header: [u8; 80],
    pub extranonce1: Vec<u8>,
    pub extranonce2: Vec<u8>,
    pub address: String,
    pub worker: String,
}

/// Connections per IP address, across shards (touched on accept and
/// close only).
#[derive(Default)]
pub(crate) struct PerIp {
    counts: Mutex<BTreeMap<IpAddr, u32>>,
}

impl PerIp {
    pub fn enter(&self, ip: IpAddr, limit: u32) -> bool {
        let mut m = self.counts.lock().expect("per-IP table");
        let c = m.entry(ip).or_insert(0);
        if *c >= limit {
            return false;
        }
        *c += 1;
        true
    }
    pub fn leave(&self, ip: IpAddr) {
        let mut m = self.counts.lock().expect("per-IP table");
        if let Some(c) = m.get_mut(&ip) {
            *c -= 1;
            if *c == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// A new job for a shard's sessions.
pub(crate) struct JobMsg {
    pub job: Arc<Job>,
    pub clean: bool,
}

/// What a shard reports when it stops.
#[derive(Debug, Default)]
pub struct ShardReport {
    pub shares_journaled: u64,
}

pub struct StratumServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    shards: Vec<JoinHandle<Result<ShardReport, String>>>,
    wakers: Vec<Arc<Waker>>,
    fanout: Option<JoinHandle<()>>,
    fanout_stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    verify_tx: Option<crossbeam_channel::Sender<VerifyReq>>,
    blocks: Option<JoinHandle<Result<(), String>>>,
    counters: Arc<StratumCounters>,
}

impl StratumServer {
    /// Starts the shards, the fan-out of `jobs` (the template task's
    /// output), the verification workers and the block submitter (which
    /// submits to `nodes`).
    pub fn start(cfg: StratumConfig, nodes: Vec<Node>, jobs: mpsc::Receiver<Work>) -> std::io::Result<StratumServer> {
        let n = cfg.cores.len().max(1);
        if n > 256 {
            return Err(std::io::Error::other("at most 256 Stratum shards (the first extranonce1 byte names the shard)"));
        }
        std::fs::create_dir_all(&cfg.journal_dir)?;
        // Opened on a thread pinned to the housekeeping core: the journals'
        // writeback and preparation threads inherit its affinity.
        let hk = cfg.housekeeping_core;
        let (jcfg, jdir) = (cfg.journal.clone(), cfg.journal_dir.clone());
        let (journals, block_journal) = std::thread::scope(|s| {
            s.spawn(move || -> std::io::Result<(Vec<Journal>, Journal)> {
                pin(hk, "stratum housekeeping");
                let err = |dir: &std::path::Path, e| std::io::Error::other(format!("{}: {e}", dir.display()));
                let mut journals = Vec::new();
                for i in 0..n {
                    let dir = jdir.join(format!("shares-{i}"));
                    // Segments are not zero-filled when created. The fill
                    // copies a whole segment of zeros into the page cache
                    // and writes it to the disk (on the housekeeping core,
                    // every few seconds under load) to spare later syncs
                    // the conversion of unwritten extents; these journals
                    // sync every `journal_sync_interval_ms`, behind the
                    // acknowledgements, so nobody waits for that.
                    let storage = otedama_journal::FileStorage::new(&dir)
                        .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?
                        .with_prefault(false);
                    journals.push(Journal::open_with(Arc::new(storage), jcfg.clone()).map_err(|e| err(&dir, e))?);
                }
                let dir = jdir.join("blocks");
                // Blocks are rare: the writeback thread sleeps until one comes.
                let no_wait = JournalOptions {
                    segment_bytes: 1 << 20,
                    flusher_spin: Duration::ZERO,
                    writeback_delay: Duration::ZERO,
                    sync_interval: Duration::ZERO,
                    ..jcfg
                };
                let blocks = Journal::open(&dir, no_wait).map_err(|e| err(&dir, e))?;
                Ok((journals, blocks))
            })
            .join()
            .map_err(|_| std::io::Error::other("opening the Stratum journals panicked"))?
        })?;

        let listeners = listener::bind_reuseport(cfg.listen, n)?;
        let addr = listener::local_addr(listeners[0])?;
        let (tls_listeners, tls_addr) = match &cfg.tls {
            Some(t) => {
                let l = listener::bind_reuseport(t.listen, n)?;
                let a = listener::local_addr(l[0])?;
                (l.into_iter().map(Some).collect(), Some(a))
            }
            None => (vec![None; n], None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(StratumCounters::default());
        let per_ip = Arc::new(PerIp::default());

        // Block submitter: one thread, blocks are rare; it owns the
        // blocks journal and syncs each record before the next block.
        let (block_tx, block_rx) = mpsc::channel::<BlockReq>();
        let blocks = {
            let counters = counters.clone();
            let wait = cfg.confirm_wait;
            std::thread::Builder::new().name("block-submit".into()).spawn(move || {
                pin(hk, "block submitter");
                block_submitter(nodes, block_journal, block_rx, wait, counters)
            })?
        };

        let mut wakers = Vec::new();
        for _ in 0..n {
            wakers.push(Arc::new(Waker::eventfd()?));
        }
        let (verify_tx, verify_rx) = crossbeam_channel::bounded::<VerifyReq>(cfg.verify_queue.max(1));
        let mut verified_tx = Vec::new();
        let mut verified_rx = Vec::new();
        for _ in 0..n {
            let (t, r) = crossbeam_channel::bounded::<Verified>(cfg.verify_queue.max(1));
            verified_tx.push(t);
            verified_rx.push(r);
        }
        let mut workers = Vec::new();
        if cfg.rules.family != Family::Sha256d {
            for i in 0..cfg.verify_workers.max(1) {
                let (rx, txs, wk, fam) = (verify_rx.clone(), verified_tx.clone(), wakers.clone(), cfg.rules.family);
                workers.push(std::thread::Builder::new().name(format!("share-verify-{i}")).spawn(move || {
                    pin(hk, "share verification");
                    verifier(fam, rx, txs, wk)
                })?);
            }
        }
        drop(verify_rx);

        let mut job_tx = Vec::new();
        let mut job_rx = Vec::new();
        for _ in 0..n {
            let (p, c) = rtrb::RingBuffer::<JobMsg>::new(64);
            job_tx.push(p);
            job_rx.push(c);
        }

        let (ready_tx, ready_rx) = mpsc::channel();
        let mut shards = Vec::new();
        let mut lists = listeners.into_iter();
        let mut tls_lists = tls_listeners.into_iter();
        let mut jr = job_rx.into_iter();
        let mut vr = verified_rx.into_iter();
        let mut js = journals.into_iter();
        for (i, waker) in wakers.iter().enumerate() {
            let parts = shard::Parts {
                id: i as u16,
                cfg: cfg.clone(),
                listen_fd: lists.next().expect("one listener per shard"),
                tls_listen_fd: tls_lists.next().expect("one entry per shard"),
                jobs: jr.next().expect("ring"),
                verified: vr.next().expect("channel"),
                verify_tx: verify_tx.clone(),
                block_tx: block_tx.clone(),
                journal: js.next().expect("journal"),
                waker: waker.clone(),
                stop: stop.clone(),
                counters: counters.clone(),
                per_ip: per_ip.clone(),
            };
            let core = cfg.cores.get(i).copied().flatten();
            let ready = ready_tx.clone();
            shards.push(std::thread::Builder::new().name(format!("stratum-{i}")).spawn(move || {
                pin(core, "stratum");
                // The ring is made on the thread that uses it (single issuer).
                match shard::Shard::new(parts) {
                    Ok(s) => {
                        let _ = ready.send(Ok(()));
                        let r = s.run();
                        if let Err(e) = &r {
                            // Its miners are cut off; the other shards go on.
                            tracing::error!(shard = i, error = %e, "Stratum shard stopped");
                        }
                        r
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready.send(Err(e));
                        Err(msg)
                    }
                }
            })?);
        }
        drop(ready_tx);
        drop(block_tx);
        let mut failed = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(std::io::Error::other("a Stratum shard did not start")),
            }
        }

        let fanout_stop = Arc::new(AtomicBool::new(false));
        let fanout = {
            let (wakers, counters, fstop) = (wakers.clone(), counters.clone(), fanout_stop.clone());
            std::thread::Builder::new().name("job-fanout".into()).spawn(move || {
                pin(hk, "job fan-out");
                fan_out(jobs, job_tx, wakers, counters, fstop)
            })?
        };
        let server = StratumServer {
            addr,
            tls_addr,
            stop,
            shards,
            wakers,
            fanout: Some(fanout),
            fanout_stop,
            workers,
            verify_tx: Some(verify_tx),
            blocks: Some(blocks),
            counters,
        };
        if let Some(e) = failed {
            let _ = server.shutdown();
            return Err(e);
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS port's address, when one is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn counters(&self) -> &Arc<StratumCounters> {
        &self.counters
    }

    /// Graceful stop: shards stop accepting, send `client.reconnect` to
    /// every session and close once it is flushed; their journals are
    /// synced and closed; a block being submitted finishes first.
    pub fn shutdown(mut self) -> Result<Vec<ShardReport>, String> {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            w.wake_now();
        }
        let mut reports = Vec::new();
        let mut err = None;
        for h in self.shards.drain(..) {
            match h.join() {
                Ok(Ok(r)) => reports.push(r),
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some("a Stratum shard panicked".into()),
            }
        }
        self.fanout_stop.store(true, Ordering::SeqCst);
        if let Some(f) = self.fanout.take() {
            let _ = f.join();
        }
        self.verify_tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Every shard's sender is gone: the submitter finishes its queue.
        if let Some(b) = self.blocks.take() {
            match b.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some("the block submitter panicked".into()),
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(reports),
        }
    }
}

/// Hands each new job to every shard. A shard's job ring (64 slots) is
/// only full if the shard is stuck; the fan-out then waits for it rather
/// than dropping a job.
fn fan_out(
    jobs: mpsc::Receiver<Work>,
    mut rings: Vec<rtrb::Producer<JobMsg>>,
    wakers: Vec<Arc<Waker>>,
    counters: Arc<StratumCounters>,
    stop: Arc<AtomicBool>,
) {
    loop {
        let w = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(w) => w,
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
            Err(_) => return,
        };
        counters.jobs.fetch_add(1, Ordering::Relaxed);
        for (i, ring) in rings.iter_mut().enumerate() {
            let mut msg = JobMsg { job: w.job.clone(), clean: w.clean };
            loop {
                match ring.push(msg) {
                    Ok(()) => break,
                    Err(rtrb::PushError::Full(back)) => {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        msg = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            wakers[i].wake();
        }
    }
}

/// Computes proof-of-work hashes for shares the shards could not hash
/// inline, several at a time in the multi-buffer kernel.
fn verifier(
    family: Family,
    rx: crossbeam_channel::Receiver<VerifyReq>,
    out: Vec<crossbeam_channel::Sender<Verified>>,
    wakers: Vec<Arc<Waker>>,
) {
    use otedama_hashers::scrypt::{Kernel, Scrypt};
    assert_eq!(family, Family::Scrypt, "verification workers hash scrypt; sha256d is hashed inline");
    let mut hasher = Scrypt::new(Kernel::best());
    let lanes = hasher.lanes().max(8);
    let mut batch: Vec<VerifyReq> = Vec::with_capacity(lanes);
    let mut headers: Vec<[u8; 80]> = Vec::with_capacity(lanes);
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(lanes);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < lanes {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        headers.clear();
        headers.extend(batch.iter().map(|r| r.pending.header));
        hashes.clear();
        hashes.resize(headers.len(), [0; 32]);
        hasher.hash_many(&headers, &mut hashes);
        let mut woken = 0u64;
        for (r, pow) in batch.drain(..).zip(hashes.iter()) {
            let shard = r.shard as usize;
            // The shard's channel is as deep as the shared queue, so this
            // never waits for long; a gone shard is shutting down.
            if out[shard].send(Verified { slot: r.slot, generation: r.generation, pending: r.pending, pow: *pow }).is_ok() {
                woken |= 1 << (shard % 64);
            }
        }
        for (i, w) in wakers.iter().enumerate() {
            if woken & (1 << (i % 64)) != 0 {
                w.wake();
            }
        }
    }
}

fn block_submitter(
    nodes: Vec<Node>,
    mut journal: Journal,
    rx: mpsc::Receiver<BlockReq>,
    wait: Duration,
    counters: Arc<StratumCounters>,
) -> Result<(), String> {
    for b in rx {
        let finder = Finder { address: &b.address, worker: &b.worker };
        match blocks::submit_block(&nodes, &mut journal, &b.job, &b.header, (&b.extranonce1, &b.extranonce2), finder, wait) {
            Ok(s) => {
                let landed = matches!(s.record.outcome, otedama_engine::chain::record::Outcome::Landed);
                if landed {
                    counters.blocks_landed.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(
                    height = s.record.height,
                    block = %otedama_engine::chain::to_display_hex(&s.record.id),
                    outcome = ?s.record.outcome,
                    finder = %b.address,
                    worker = %b.worker,
                    reason = %s.record.reason,
                    submit_us = s.decided.as_micros() as u64,
                    "block found"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "the block was submitted but its record could not be journaled");
                return Err(format!("blocks journal: {e}"));
            }
        }
    }
    journal.close().map_err(|e| format!("closing the blocks journal: {e}"))
}
