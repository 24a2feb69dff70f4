//! `otedama bench hashers`: hashing speed of every algorithm on one pinned
//! core, each beside its baseline in the same run.
//!
//! - sha256d: our best scanning kernel vs `Sha256::digest` twice per nonce
//!   (the plain way), plus every kernel this CPU has; and the cost of a
//!   full share check from header fields.
//! - scrypt: our best multi-buffer kernel vs the `scrypt` crate, one hash
//!   at a time (same compiler flags: both are in this binary).
//! - RandomX: our scan loop vs RandomX's own pipelined hash loop on the same
//!   VM (fast mode), light-mode hashing, and the time to build the 2 GiB
//!   dataset on all cores.
//!
//! Each figure is the median of `--runs` samples with its spread; CPU time
//! per hash comes from getrusage; a stall meter on the measured core shows
//! how much the host interfered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use otedama_hashers::randomx::{self, Cache, Dataset, Vm};
use otedama_hashers::scrypt::{self as scr, Scrypt};
use otedama_hashers::sha256d::{self, HeaderJob};
use otedama_hashers::{Family, Target};

use crate::harness::{self, StallMeter};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A shorter run (about a minute, most of it building the dataset).
    #[arg(long)]
    pub quick: bool,
    /// Samples per figure (default 5, 2 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// The core the hashing thread is pinned to.
    #[arg(long, default_value_t = 1)]
    pub core: usize,
    /// Threads that build the RandomX dataset (default: every core).
    #[arg(long)]
    pub init_threads: Option<usize>,
    /// Skip RandomX fast mode (needs 2.3 GiB of memory).
    #[arg(long)]
    pub no_randomx_fast: bool,
    /// Reserve huge pages for the RandomX dataset first (root; raises
    /// vm.nr_hugepages to 1280 for the run and puts it back afterwards).
    #[arg(long)]
    pub reserve_huge_pages: bool,
}

/// Litecoin block 2,000,000's header: a real header to hash (sha256d and
/// scrypt both accept any 80 bytes; the nonce field is what varies).
fn real_header() -> [u8; 80] {
    let mut h = [0u8; 80];
    let hexes = [
        ("20000000", false),
        ("17ffe3fc57db0dbb599c15f14024074ad705d14b29ff99587474f1439decfbc4", true),
        ("d5df7ed3506345ab3ca4544ea92bf21a8bf73f0bd96df5ba2ba8bace89ac2e3d", true),
    ];
    let mut at = 0;
    for (hx, reverse) in hexes {
        let mut b = hex::decode(hx).expect("hex");
        if reverse || b.len() == 4 {
            b.reverse();
        }
        h[at..at + b.len()].copy_from_slice(&b);
        at += b.len();
    }
    h[68..72].copy_from_slice(&1_613_205_643u32.to_le_bytes());
    h[72..76].copy_from_slice(&0x1a01a4a0u32.to_le_bytes());
    h
}

/// Runs `step` (which hashes and returns how many) until `dur` has passed;
/// returns hashes per second and CPU ns per hash.
fn push(v: &mut BTreeMap<String, Vec<f64>>, k: &str, x: f64) {
    v.entry(k.to_string()).or_default().push(x);
}

fn rate(dur: Duration, mut step: impl FnMut() -> u64) -> (f64, f64) {
    let cpu0 = harness::thread_cpu_ns();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < dur {
        n += step();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (harness::thread_cpu_ns() - cpu0) as f64;
    (n as f64 / secs, cpu / n.max(1) as f64)
}

pub fn run(a: &Args) -> Result<Value> {
    let runs = a.runs.unwrap_or(if a.quick { 2 } else { 5 }).max(1);
    let dur = Duration::from_millis(if a.quick { 400 } else { 1500 });
    let init_threads = a.init_threads.unwrap_or_else(harness::online_cores);
    harness::pin(a.core);
    let stall = StallMeter::start(Some(a.core), Duration::from_millis(1));
    let mut v: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let header = real_header();
    let job = HeaderJob::new(&header);
    // A realistic share target (difficulty 65,536): almost nothing passes.
    let share = Target::from_difficulty(65_536.0, Family::Sha256d)?;
    let sha_kernels = sha256d::Kernel::available();
    let scrypt_kernels = scr::Kernel::available();
    let sha_best = sha256d::Kernel::best();
    let scrypt_best = scr::Kernel::best();
    println!(
        "hashers on core {} (sha256d kernel {}, scrypt kernel {}), {runs} runs of {:?} per figure",
        a.core,
        sha_best.name(),
        scrypt_best.name(),
        dur
    );
    let mut found = Vec::new();
    let mut next_nonce = 0u32;
    let mut scrypts: Vec<Scrypt> = scrypt_kernels.iter().map(|&k| Scrypt::new(k)).collect();

    for run in 0..runs {
        // sha256d: every kernel, then the baseline.
        for &k in &sha_kernels {
            let chunk = 1 << 16;
            let (hps, cpu) = rate(dur, || {
                if next_nonce > u32::MAX - chunk {
                    next_nonce = 0;
                }
                sha256d::scan(&job, next_nonce, chunk, share, k, &mut found);
                next_nonce += chunk;
                u64::from(chunk)
            });
            push(&mut v, &format!("sha256d_{}_hps", k.name().replace('-', "")), hps);
            if k == sha_best {
                push(&mut v, "sha256d_scan_hps", hps);
                push(&mut v, "sha256d_scan_cpu_ns_per_hash", cpu);
            }
        }
        let mut h = header;
        let mut nonce = 0u32;
        let (base, _) = rate(dur, || {
            for _ in 0..1024 {
                nonce = nonce.wrapping_add(1);
                h[76..80].copy_from_slice(&nonce.to_le_bytes());
                let d = Sha256::digest(Sha256::digest(h));
                if d[31] == 0 && d[30] == 0 && d[29] == 0 && d[28] == 0 {
                    found.push(nonce);
                }
            }
            1024
        });
        push(&mut v, "sha256d_baseline_hps", base);
        // A full share check from header fields: assemble, hash, compare.
        let fields = (0x2000_0000u32, [7u8; 32], [9u8; 32], 1_700_000_000u32, 0x1705_0000u32);
        let mut accepted = 0u64;
        let (vps, _) = rate(dur, || {
            for _ in 0..1024 {
                nonce = nonce.wrapping_add(1);
                let mut hd = [0u8; 80];
                hd[0..4].copy_from_slice(&fields.0.to_le_bytes());
                hd[4..36].copy_from_slice(&fields.1);
                hd[36..68].copy_from_slice(&fields.2);
                hd[68..72].copy_from_slice(&fields.3.to_le_bytes());
                hd[72..76].copy_from_slice(&fields.4.to_le_bytes());
                hd[76..80].copy_from_slice(&nonce.to_le_bytes());
                accepted += u64::from(share.is_met_by(&sha256d::sha256d(&hd)));
            }
            1024
        });
        push(&mut v, "sha256d_verify_ns", 1e9 / vps);

        // scrypt: every kernel, then the baseline.
        for s in scrypts.iter_mut() {
            let k = s.kernel();
            let chunk = (s.lanes() * 8) as u32;
            let (hps, cpu) = rate(dur, || {
                if next_nonce > u32::MAX - chunk {
                    next_nonce = 0;
                }
                s.scan(&header, next_nonce, chunk, share, &mut found);
                next_nonce += chunk;
                u64::from(chunk)
            });
            push(&mut v, &format!("scrypt_{}_hps", k.name()), hps);
            if k == scrypt_best {
                push(&mut v, "scrypt_scan_hps", hps);
                push(&mut v, "scrypt_scan_cpu_ns_per_hash", cpu);
            }
        }
        let (base, _) = rate(dur, || {
            for _ in 0..8 {
                nonce = nonce.wrapping_add(1);
                h[76..80].copy_from_slice(&nonce.to_le_bytes());
                let d = scr::scrypt_1024_1_1(&h);
                if share.is_met_by(&d) {
                    found.push(nonce);
                }
            }
            8
        });
        push(&mut v, "scrypt_baseline_hps", base);
        println!(
            "  run {run}: sha256d {:.2} MH/s vs baseline {:.2} MH/s, verify {:.0} ns | scrypt {:.1} kH/s vs baseline {:.2} kH/s ({accepted} test shares met)",
            v["sha256d_scan_hps"].last().unwrap() / 1e6,
            v["sha256d_baseline_hps"].last().unwrap() / 1e6,
            v["sha256d_verify_ns"].last().unwrap(),
            v["scrypt_scan_hps"].last().unwrap() / 1e3,
            v["scrypt_baseline_hps"].last().unwrap() / 1e3,
        );
    }

    // RandomX light mode.
    let flags = randomx::recommended_flags();
    let blob = hex::decode(MONERO_BLOB)?;
    let easy = Target::MAX;
    {
        let cache = Cache::new(b"otedama bench", flags)?;
        let mut vm = Vm::light(cache)?;
        for _ in 0..runs {
            let mut n = 0u32;
            let (hps, _) = rate(dur, || {
                found.clear();
                vm.scan(&blob, 39, n, 16, easy, &mut found);
                n += 16;
                16
            });
            push(&mut v, "randomx_light_hps", hps);
        }
    }
    // RandomX fast mode: the dataset on every core, then our loop and the
    // library's loop alternately on the same VM.
    let mut large_pages = false;
    if !a.no_randomx_fast {
        let restore = if a.reserve_huge_pages {
            let before = randomx::reserve_huge_pages(randomx::HUGE_PAGES_FOR_FAST_MODE)
                .map_err(|e| anyhow::anyhow!("--reserve-huge-pages: {e} (needs root)"))?;
            Some(before)
        } else {
            None
        };
        let cache = Cache::new(b"otedama bench", flags | randomx::flags::LARGE_PAGES)?;
        let (dataset, secs) = Dataset::new(cache, init_threads, flags | randomx::flags::LARGE_PAGES)?;
        harness::pin(a.core);
        large_pages = dataset.uses_large_pages();
        push(&mut v, "randomx_dataset_init_s", secs);
        println!("  RandomX dataset built in {secs:.1} s on {init_threads} threads");
        let mut vm = Vm::fast(dataset)?;
        let mut n = 0u32;
        let mut raw = blob.clone();
        // Short alternating samples, our loop then the library's, so host
        // noise falls on both alike; the ratio is taken per pair.
        let half = dur / 2;
        for run in 0..runs {
            let mut pair_ratios = Vec::new();
            for _ in 0..4 {
                let (ours, cpu) = rate(half, || {
                    vm.scan(&blob, 39, n, 16, easy, &mut found);
                    found.clear();
                    n += 16;
                    16
                });
                let (lib, _) = rate(half, || {
                    std::hint::black_box(vm.raw_hash_loop(&mut raw, 39, n, 16));
                    n += 16;
                    16
                });
                push(&mut v, "randomx_fast_hps", ours);
                push(&mut v, "randomx_fast_cpu_us_per_hash", cpu / 1e3);
                push(&mut v, "randomx_lib_hps", lib);
                pair_ratios.push(ours / lib);
                push(&mut v, "randomx_fast_vs_lib_pairs", ours / lib);
            }
            let (r, _) = harness::median_spread(&pair_ratios);
            println!(
                "  run {run}: RandomX fast {:.0} H/s vs library loop {:.0} H/s (pair ratio median {r:.3})",
                v["randomx_fast_hps"].last().unwrap(),
                v["randomx_lib_hps"].last().unwrap()
            );
        }
        drop(vm);
        if let Some(before) = restore {
            // Best effort: pages still in use are freed when we exit.
            let _ = std::fs::write("/proc/sys/vm/nr_hugepages", before.to_string());
        }
    }

    let stalls = stall.stop();
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("hashers"));
    for (k, xs) in &v {
        let (m, spread) = harness::median_spread(xs);
        let r = |x: f64| if x.abs() >= 100.0 { x.round() } else { (x * 1000.0).round() / 1000.0 };
        out.insert(k.clone(), json!(r(m)));
        if xs.len() > 1 {
            out.insert(format!("{k}_spread"), json!(r(spread)));
        }
    }
    let med = |k: &str| v.get(k).map(|x| harness::median_spread(x).0);
    let ratio = |a: &str, b: &str| match (med(a), med(b)) {
        (Some(x), Some(y)) if y > 0.0 => json!(((x / y) * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    out.insert("sha256d_vs_baseline".into(), ratio("sha256d_scan_hps", "sha256d_baseline_hps"));
    out.insert("scrypt_vs_baseline".into(), ratio("scrypt_scan_hps", "scrypt_baseline_hps"));
    out.insert(
        "randomx_fast_vs_lib".into(),
        med("randomx_fast_vs_lib_pairs").map_or(Value::Null, |r| json!((r * 1000.0).round() / 1000.0)),
    );
    out.insert("sha256d_kernel".into(), json!(sha_best.name()));
    out.insert("scrypt_kernel".into(), json!(scrypt_best.name()));
    out.insert("randomx_large_pages".into(), json!(large_pages));
    out.insert("stall_p99_us".into(), json!(stalls.p99_us));
    out.insert("stall_max_us".into(), json!(stalls.max_us));
    out.insert("runs".into(), json!(runs));
    out.insert(
        "settings".into(),
        json!({"core": a.core, "seconds_per_sample": dur.as_secs_f64(), "init_threads": init_threads, "share_difficulty": 65536}),
    );
    out.insert("machine".into(), harness::machine());
    println!("stall meter on core {}: p99 {:.0} µs late, max {:.0} µs late", a.core, stalls.p99_us, stalls.max_us);
    let line = Value::Object(out);
    println!("{line}");
    Ok(line)
}

/// A Monero block hashing blob (RandomX's reference test input; the nonce
/// is bytes 39..43).
const MONERO_BLOB: &str = "0b0b98bea7e805e0010a2126d287a2a0cc833d312cb786385a7c2f9de69d25537f584a9bc9977b00000000666fd8753bf61a8631f12984e3fd44f4014eca629276817b56f32e9b68bd82f416";
