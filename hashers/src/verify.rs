//! Verification workers: a fixed pool of threads that checks costly shares
//! (scrypt, RandomX) off the I/O shards.
//!
//! Every client (one per I/O shard) and every worker are joined by a pair of
//! bounded SPSC rings (rtrb): jobs one way, verdicts the other. A client
//! never has more jobs in flight to a worker than the rings hold, so a
//! worker can always deliver its verdict; when every worker's share of the
//! client's budget is in use, [`Client::submit`] hands the job back as
//! [`Busy`] at once: the caller answers the miner "busy", nothing queues
//! without bound and nothing is dropped silently.
//!
//! Workers batch scrypt jobs across clients into one multi-buffer pass and
//! keep one RandomX VM each, re-made when the seed changes.

use crate::randomx::{Epochs, Vm};
use crate::scrypt::{self, Scrypt};
use crate::sha256d;
use crate::target::Target;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// The longest RandomX input a job carries inline (Monero hashing blobs are
/// 76 bytes and grow a little with varints).
pub const MAX_BLOB: usize = 128;

/// What to hash.
#[derive(Clone, Debug)]
pub enum Work {
    Sha256d { header: [u8; 80] },
    Scrypt { header: [u8; 80] },
    RandomX { seed: [u8; 32], blob: [u8; MAX_BLOB], len: u8 },
}

impl Work {
    /// A RandomX job, or `None` when the blob is longer than [`MAX_BLOB`].
    pub fn randomx(seed: [u8; 32], blob: &[u8]) -> Option<Work> {
        if blob.len() > MAX_BLOB {
            return None;
        }
        let mut b = [0u8; MAX_BLOB];
        b[..blob.len()].copy_from_slice(blob);
        Some(Work::RandomX { seed, blob: b, len: blob.len() as u8 })
    }
}

/// A share to verify; `tag` comes back with the verdict.
#[derive(Clone, Debug)]
pub struct Job {
    pub tag: u64,
    pub work: Work,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hash meets the target.
    Meets,
    /// It does not.
    Misses,
    /// RandomX: no cache or dataset for this seed (never announced, or
    /// evicted), or the pool has no RandomX epochs.
    UnknownSeed,
}

#[derive(Clone, Debug)]
pub struct Verdict {
    pub tag: u64,
    pub hash: [u8; 32],
    pub outcome: Outcome,
}

/// Every worker's queue from this client is full: the job is handed back.
#[derive(Debug)]
pub struct Busy(pub Job);

/// Pool settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub clients: usize,
    /// Jobs in flight per (client, worker) pair: the ring size.
    pub queue_depth: usize,
    /// Cores to pin workers to, round-robin; empty = unpinned.
    pub cores: Vec<usize>,
    /// The scrypt kernel (default: the fastest this CPU has).
    pub scrypt_kernel: Option<scrypt::Kernel>,
}

impl Default for Config {
    fn default() -> Config {
        Config { workers: 1, clients: 1, queue_depth: 256, cores: Vec::new(), scrypt_kernel: None }
    }
}

struct Shared {
    stop: AtomicBool,
    /// One flag per worker: set while it sleeps, so clients wake it.
    sleeping: Vec<AtomicBool>,
}

/// The running pool; dropping it stops and joins the workers.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    handles: Vec<JoinHandle<()>>,
}

/// One client's end of the rings (an I/O shard owns one).
pub struct Client {
    to: Vec<rtrb::Producer<Job>>,
    from: Vec<rtrb::Consumer<Verdict>>,
    in_flight: Vec<usize>,
    depth: usize,
    next: usize,
    shared: Arc<Shared>,
    threads: Vec<Thread>,
}

/// A waker a client may register, called by a worker after it delivers
/// verdicts to that client (e.g. to write an eventfd the shard polls).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

impl Pool {
    /// Starts the workers. `notify[c]`, when given, is called after
    /// verdicts for client `c` are delivered. `epochs` serves RandomX jobs.
    pub fn start(config: &Config, epochs: Option<Arc<Epochs>>, notify: Vec<Option<Notify>>) -> (Pool, Vec<Client>) {
        let (w, c) = (config.workers.max(1), config.clients.max(1));
        let depth = config.queue_depth.max(1);
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), sleeping: (0..w).map(|_| AtomicBool::new(false)).collect() });
        // rings[c][w]: (job producer, job consumer, verdict producer, verdict consumer)
        let mut worker_ends: Vec<Vec<(rtrb::Consumer<Job>, rtrb::Producer<Verdict>)>> = (0..w).map(|_| Vec::new()).collect();
        let mut client_ends = Vec::new();
        for _ in 0..c {
            let mut to = Vec::new();
            let mut from = Vec::new();
            for ends in worker_ends.iter_mut() {
                let (jp, jc) = rtrb::RingBuffer::new(depth);
                let (vp, vc) = rtrb::RingBuffer::new(depth);
                to.push(jp);
                from.push(vc);
                ends.push((jc, vp));
            }
            client_ends.push((to, from));
        }
        let notify: Vec<Option<Notify>> = (0..c).map(|i| notify.get(i).cloned().flatten()).collect();
        let kernel = config.scrypt_kernel.unwrap_or_else(scrypt::Kernel::best);
        let mut handles = Vec::new();
        for (i, ends) in worker_ends.into_iter().enumerate() {
            let shared = shared.clone();
            let epochs = epochs.clone();
            let notify = notify.clone();
            let core = (!config.cores.is_empty()).then(|| config.cores[i % config.cores.len()]);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("verify-{i}"))
                    .spawn(move || {
                        if let Some(core) = core {
                            core_affinity_set(core);
                        }
                        Worker { id: i, ends, shared, epochs, notify, scrypt: Scrypt::new(kernel), vm: None }.run()
                    })
                    .expect("spawn verification worker"),
            );
        }
        let threads: Vec<Thread> = handles.iter().map(|h| h.thread().clone()).collect();
        let clients = client_ends
            .into_iter()
            .map(|(to, from)| Client {
                in_flight: vec![0; to.len()],
                to,
                from,
                depth,
                next: 0,
                shared: shared.clone(),
                threads: threads.clone(),
            })
            .collect();
        (Pool { shared, threads, handles }, clients)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in &self.threads {
            t.unpark();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn core_affinity_set(core: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

impl Client {
    /// Queues a job on the least recently used worker with room, or hands
    /// it back when every worker's queue from this client is full.
    // The job comes back by value: boxing it would allocate on exactly the
    // overload path this exists for.
    #[allow(clippy::result_large_err)]
    pub fn submit(&mut self, job: Job) -> Result<(), Busy> {
        let n = self.to.len();
        for k in 0..n {
            let w = (self.next + k) % n;
            if self.in_flight[w] < self.depth {
                // Cannot fail: in_flight counts every job not yet answered,
                // and the ring holds `depth`.
                self.to[w].push(job).map_err(|_| ()).expect("ring has room");
                self.in_flight[w] += 1;
                self.next = (w + 1) % n;
                // Pairs with the worker's store-then-recheck before parking.
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.shared.sleeping[w].load(Ordering::SeqCst) {
                    self.threads[w].unpark();
                }
                return Ok(());
            }
        }
        Err(Busy(job))
    }

    /// Hands every delivered verdict to `f`; returns how many.
    pub fn poll(&mut self, mut f: impl FnMut(Verdict)) -> usize {
        let mut n = 0;
        for (w, ring) in self.from.iter_mut().enumerate() {
            while let Ok(v) = ring.pop() {
                self.in_flight[w] -= 1;
                n += 1;
                f(v);
            }
        }
        n
    }

    /// Jobs submitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().sum()
    }

    /// How many jobs this client can have in flight in all.
    pub fn capacity(&self) -> usize {
        self.depth * self.to.len()
    }
}

struct Worker {
    id: usize,
    ends: Vec<(rtrb::Consumer<Job>, rtrb::Producer<Verdict>)>,
    shared: Arc<Shared>,
    epochs: Option<Arc<Epochs>>,
    notify: Vec<Option<Notify>>,
    scrypt: Scrypt,
    vm: Option<Vm>,
}

impl Worker {
    fn run(mut self) {
        let lanes = self.scrypt.lanes();
        let mut batch: Vec<(usize, Job)> = Vec::with_capacity(lanes);
        let mut idle_spins = 0u32;
        let mut delivered = vec![false; self.ends.len()];
        loop {
            let mut did = false;
            for c in 0..self.ends.len() {
                while let Ok(job) = self.ends[c].0.pop() {
                    did = true;
                    match job.work {
                        Work::Scrypt { .. } => {
                            batch.push((c, job));
                            if batch.len() == lanes {
                                self.run_scrypt(&mut batch, &mut delivered);
                            }
                        }
                        _ => {
                            let v = self.verify_one(job);
                            self.deliver(c, v, &mut delivered);
                        }
                    }
                }
            }
            if !batch.is_empty() {
                self.run_scrypt(&mut batch, &mut delivered);
            }
            for (c, d) in delivered.iter_mut().enumerate() {
                if std::mem::take(d)
                    && let Some(n) = &self.notify[c]
                {
                    n();
                }
            }
            if did {
                idle_spins = 0;
                continue;
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            idle_spins += 1;
            if idle_spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            // Sleep: announce it, re-check every ring (a client that pushed
            // before seeing the flag is caught here), then park.
            self.shared.sleeping[self.id].store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            let empty = self.ends.iter().all(|(jc, _)| jc.is_empty());
            if empty && !self.shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            self.shared.sleeping[self.id].store(false, Ordering::SeqCst);
        }
    }

    fn deliver(&mut self, c: usize, v: Verdict, delivered: &mut [bool]) {
        // Cannot fail: the client keeps at most `depth` jobs in flight here.
        self.ends[c].1.push(v).map_err(|_| ()).expect("verdict ring has room");
        delivered[c] = true;
    }

    fn run_scrypt(&mut self, batch: &mut Vec<(usize, Job)>, delivered: &mut [bool]) {
        let headers: Vec<[u8; 80]> = batch
            .iter()
            .map(|(_, j)| match &j.work {
                Work::Scrypt { header } => *header,
                _ => unreachable!("only scrypt jobs are batched"),
            })
            .collect();
        let mut hashes = vec![[0u8; 32]; headers.len()];
        self.scrypt.hash_many(&headers, &mut hashes);
        for ((c, job), hash) in batch.drain(..).zip(hashes) {
            let outcome = if job.target.is_met_by(&hash) { Outcome::Meets } else { Outcome::Misses };
            self.deliver(c, Verdict { tag: job.tag, hash, outcome }, delivered);
        }
    }

    fn verify_one(&mut self, job: Job) -> Verdict {
        let hash = match &job.work {
            Work::Sha256d { header } => sha256d::sha256d(header),
            Work::Scrypt { header } => scrypt::scrypt_1024_1_1(header),
            Work::RandomX { seed, blob, len } => {
                let want_new = self.vm.as_ref().is_none_or(|vm| vm.key() != seed);
                if want_new {
                    self.vm = self.epochs.as_ref().and_then(|e| e.vm(seed).ok());
                }
                match self.vm.as_mut() {
                    Some(vm) => vm.hash(&blob[..*len as usize]),
                    None => return Verdict { tag: job.tag, hash: [0; 32], outcome: Outcome::UnknownSeed },
                }
            }
        };
        let outcome = if job.target.is_met_by(&hash) { Outcome::Meets } else { Outcome::Misses };
        Verdict { tag: job.tag, hash, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::randomx::{Mode, recommended_flags};

    #[test]
    fn verdicts_match_the_reference_and_come_back_to_their_client() {
        let cfg = Config { workers: 2, clients: 2, queue_depth: 8, ..Config::default() };
        let (_pool, mut clients) = Pool::start(&cfg, None, vec![]);
        let target = Target(ethnum::U256::MAX >> 1);
        let mut want = std::collections::HashMap::new();
        for i in 0..20u64 {
            let mut header = [0u8; 80];
            header[..8].copy_from_slice(&i.to_le_bytes());
            let c = (i % 2) as usize;
            let work = if i % 5 == 0 { Work::Sha256d { header } } else { Work::Scrypt { header } };
            let hash = if i % 5 == 0 { sha256d::sha256d(&header) } else { scrypt::scrypt_1024_1_1(&header) };
            want.insert(i, (c, hash, target.is_met_by(&hash)));
            clients[c].submit(Job { tag: i, work, target }).unwrap();
        }
        let mut got = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while got < 20 {
            assert!(std::time::Instant::now() < deadline, "verdicts missing");
            for (c, client) in clients.iter_mut().enumerate() {
                client.poll(|v| {
                    let (wc, hash, meets) = want[&v.tag];
                    assert_eq!(wc, c, "verdict {} went to the wrong client", v.tag);
                    assert_eq!(v.hash, hash);
                    assert_eq!(v.outcome, if meets { Outcome::Meets } else { Outcome::Misses });
                    got += 1;
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(clients[0].in_flight() + clients[1].in_flight(), 0);
    }

    #[test]
    fn a_full_queue_is_an_explicit_busy() {
        let cfg = Config { workers: 1, clients: 1, queue_depth: 4, ..Config::default() };
        let (_pool, mut clients) = Pool::start(&cfg, None, vec![]);
        let c = &mut clients[0];
        let mut busy = 0;
        let mut accepted = 0;
        for i in 0..50 {
            match c.submit(Job { tag: i, work: Work::Scrypt { header: [i as u8; 80] }, target: Target::MAX }) {
                Ok(()) => accepted += 1,
                Err(Busy(job)) => {
                    assert_eq!(job.tag, i);
                    busy += 1;
                }
            }
            assert!(c.in_flight() <= c.capacity());
        }
        assert!(busy > 0, "nothing was refused");
        // Every accepted job is answered.
        let mut answered = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while answered < accepted {
            assert!(std::time::Instant::now() < deadline);
            answered += c.poll(|v| assert_eq!(v.outcome, Outcome::Meets));
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn randomx_jobs_use_the_announced_seed() {
        let epochs = Arc::new(Epochs::new(Mode::Light, recommended_flags(), 1));
        let seed = [7u8; 32];
        epochs.prepare(&seed);
        let (_pool, mut clients) = Pool::start(&Config::default(), Some(epochs), vec![]);
        let blob = [1u8; 76];
        let want = crate::randomx::hash_light(&seed, &blob).unwrap();
        let c = &mut clients[0];
        c.submit(Job { tag: 1, work: Work::randomx(seed, &blob).unwrap(), target: Target::MAX }).unwrap();
        c.submit(Job { tag: 2, work: Work::randomx([8; 32], &blob).unwrap(), target: Target::MAX }).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got.len() < 2 {
            assert!(std::time::Instant::now() < deadline);
            c.poll(|v| got.push(v));
            std::thread::sleep(Duration::from_millis(5));
        }
        got.sort_by_key(|v| v.tag);
        assert_eq!(got[0].hash, want);
        assert_eq!(got[0].outcome, Outcome::Meets);
        assert_eq!(got[1].outcome, Outcome::UnknownSeed);
        assert!(Work::randomx(seed, &[0; MAX_BLOB + 1]).is_none());
    }
}
