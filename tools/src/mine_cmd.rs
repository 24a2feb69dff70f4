//! `otedama mine`: a CPU miner that speaks Stratum V1 to any pool (ours
//! or another): BIP 310 version rolling, extranonce changes, difficulty
//! changes, reconnects. Worker threads grind with the fastest kernel the
//! CPU has (SHA-NI/AVX for sha256d, multi-buffer AVX2 for scrypt); the
//! main thread owns the connection, submits what they find and counts the
//! answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use otedama_hashers::{Family, Target};
use otedama_net::stratum_client::{Message, MinerJob, MinerSession, Share, grind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MineAlgorithm {
    Sha256d,
    Scrypt,
}

#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// The pool: `stratum+tcp://HOST:PORT` or `HOST:PORT`.
    #[arg(long, default_value = "stratum+tcp://127.0.0.1:3333")]
    pub url: String,
    /// Payout address, optionally `.worker`.
    #[arg(long)]
    pub user: String,
    /// Password; `d=N` asks the pool for a fixed difficulty.
    #[arg(long, default_value = "x")]
    pub password: String,
    #[arg(long, value_enum, default_value_t = MineAlgorithm::Sha256d)]
    pub algorithm: MineAlgorithm,
    /// Hashing threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Stop after this many seconds (0: run until interrupted).
    #[arg(long, default_value_t = 0.0)]
    pub seconds: f64,
    /// Do not ask for BIP 310 version rolling.
    #[arg(long)]
    pub no_version_rolling: bool,
}

/// What the workers grind: replaced as a whole when the pool changes it.
#[derive(Clone)]
struct Work {
    generation: u64,
    job: MinerJob,
    en1: Vec<u8>,
    en2_size: usize,
    target: Target,
    version_mask: u32,
}

#[derive(Default)]
struct Totals {
    hashes: AtomicU64,
    found: AtomicU64,
}

fn resolve(url: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let hostport = url.trim_start_matches("stratum+tcp://").trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))
}

pub fn mine(args: MineArgs) -> Result<i32> {
    let addr = resolve(&args.url)?;
    let family = match args.algorithm {
        MineAlgorithm::Sha256d => Family::Sha256d,
        MineAlgorithm::Scrypt => Family::Scrypt,
    };
    let threads = if args.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { args.threads };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    let deadline = (args.seconds > 0.0).then(|| Instant::now() + Duration::from_secs_f64(args.seconds));
    let work: Arc<Mutex<Option<Work>>> = Arc::new(Mutex::new(None));
    let generation = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Totals::default());
    let (share_tx, share_rx) = mpsc::channel::<(u64, Share)>();
    let en2_next = Arc::new(AtomicU64::new(1));
    let mut workers = Vec::new();
    for t in 0..threads {
        let (work, generation, totals, tx, stop, en2_next) =
            (work.clone(), generation.clone(), totals.clone(), share_tx.clone(), stop.clone(), en2_next.clone());
        workers.push(std::thread::Builder::new().name(format!("mine-{t}")).spawn(move || {
            grind_loop(t, family, &work, &generation, &totals, &tx, &stop, &en2_next);
        })?);
    }
    drop(share_tx);

    let (mut accepted, mut rejected, mut stale) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut session: Option<MinerSession> = None;
    let mut backoff = Duration::from_millis(500);
    let mut submitted: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let m = match &mut session {
            Some(m) if !m.ended => m,
            _ => {
                *work.lock().expect("work") = None;
                generation.fetch_add(1, Ordering::SeqCst);
                match MinerSession::connect(addr, &args.user, &args.password, !args.no_version_rolling, Duration::from_secs(10)) {
                    Ok(m) => {
                        println!(
                            "otedama mine: connected to {addr} as {} (extranonce1 {}, version mask {:08x}, {threads} thread(s), {:?})",
                            args.user,
                            hex::encode(&m.extranonce1),
                            m.version_mask,
                            args.algorithm
                        );
                        backoff = Duration::from_millis(500);
                        session = Some(m);
                        continue;
                    }
                    Err(e) => {
                        eprintln!("otedama mine: {addr}: {e}; retrying in {backoff:?}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
        };
        // Shares found since the last turn, on the current work only.
        let current = generation.load(Ordering::SeqCst);
        while let Ok((g, s)) = share_rx.try_recv() {
            if g != current {
                continue;
            }
            if let Ok(id) = m.submit(&args.user, &s) {
                submitted.insert(id, g);
            }
        }
        match m.next_message(Duration::from_millis(20)) {
            Ok(Some(Message::Answer { id, result })) => {
                if submitted.remove(&id).is_some() {
                    tally(result, &mut accepted, &mut stale, &mut rejected);
                }
            }
            Ok(Some(Message::Notify(_) | Message::SetDifficulty(_) | Message::SetVersionMask(_) | Message::SetExtranonce { .. })) => {
                if let Some(job) = m.job.clone() {
                    let target = Target::from_difficulty(m.difficulty, family)
                        .map_err(|e| anyhow::anyhow!("the pool's difficulty {} is unusable: {e:?}", m.difficulty))?;
                    let g = generation.load(Ordering::SeqCst) + 1;
                    *work.lock().expect("work") = Some(Work {
                        generation: g,
                        job,
                        en1: m.extranonce1.clone(),
                        en2_size: m.extranonce2_size,
                        target,
                        version_mask: m.version_mask,
                    });
                    generation.store(g, Ordering::SeqCst);
                }
            }
            Ok(Some(Message::Reconnect(_))) => println!("otedama mine: the pool asked to reconnect"),
            Ok(_) => {}
            Err(e) => eprintln!("otedama mine: connection lost: {e}"),
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "otedama mine: {:.2} MH/s, {accepted} accepted, {stale} stale, {rejected} rejected",
                totals.hashes.load(Ordering::Relaxed) as f64 / secs / 1e6
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    // Shares already submitted are counted when their answers come (for up
    // to 5 s), so the totals cover every share the pool judged.
    let until = Instant::now() + Duration::from_secs(5);
    while !submitted.is_empty() && Instant::now() < until {
        let Some(m) = session.as_mut().filter(|m| !m.ended) else { break };
        match m.next_message(Duration::from_millis(100)) {
            Ok(Some(Message::Answer { id, result })) if submitted.remove(&id).is_some() => {
                tally(result, &mut accepted, &mut stale, &mut rejected);
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("otedama mine: connection lost: {e}");
                break;
            }
        }
    }
    let hashes = totals.hashes.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "accepted": accepted, "stale": stale, "rejected": rejected,
            "found": totals.found.load(Ordering::Relaxed), "hashes": hashes,
            "seconds": secs, "hashrate": hashes as f64 / secs,
        })
    );
    if session.is_none() {
        bail!("never connected to {addr}");
    }
    Ok(if rejected == 0 { 0 } else { 1 })
}

/// Counts one share's answer: accepted, stale (21) or refused.
fn tally(result: Result<serde_json::Value, (i64, String)>, accepted: &mut u64, stale: &mut u64, rejected: &mut u64) {
    match result {
        Ok(serde_json::Value::Bool(true)) => *accepted += 1,
        Err((21, _)) => *stale += 1,
        other => {
            *rejected += 1;
            eprintln!("otedama mine: share refused: {other:?}");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn grind_loop(
    thread: usize,
    family: Family,
    work: &Mutex<Option<Work>>,
    generation: &AtomicU64,
    totals: &Totals,
    tx: &mpsc::Sender<(u64, Share)>,
    stop: &AtomicBool,
    en2_next: &AtomicU64,
) {
    let mut scrypt = (family == Family::Scrypt).then(|| otedama_hashers::scrypt::Scrypt::new(otedama_hashers::scrypt::Kernel::best()));
    // Nonces per call: short enough to notice new work within ~50 ms.
    let chunk: u32 = if family == Family::Scrypt { 1 << 11 } else { 1 << 20 };
    while !stop.load(Ordering::Relaxed) {
        let Some(w) = work.lock().expect("work").clone() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Each extranonce2 is a fresh 2^32 nonce space, shared by no one.
        let en2 = en2_next.fetch_add(1, Ordering::Relaxed);
        let en2b = en2.to_be_bytes()[8usize.saturating_sub(w.en2_size)..].to_vec();
        let en2b = if w.en2_size > 8 { [vec![0; w.en2_size - 8], en2b].concat() } else { en2b };
        let bits = (w.version_mask != 0).then(|| ((thread as u32) << w.version_mask.trailing_zeros()) & w.version_mask);
        let mut start = 0u64;
        while start < 1 << 32 && generation.load(Ordering::Relaxed) == w.generation && !stop.load(Ordering::Relaxed) {
            let n = u64::from(chunk).min((1u64 << 32) - start) as u32;
            for s in grind(&w.job, family, (&w.en1, &en2b), bits, (start as u32, n), w.target, scrypt.as_mut()) {
                totals.found.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send((w.generation, s));
            }
            totals.hashes.fetch_add(u64::from(n), Ordering::Relaxed);
            start += u64::from(n);
        }
    }
}
