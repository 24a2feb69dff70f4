//! `otedama bench journal`: the journal against the best plain
//! alternatives, in the same run, on the same cores.
//!
//! Layout: the writer (ours and the baselines') is pinned to
//! `--writer-core`; the journal's preparer and flusher, the baselines'
//! flusher and the durability observer run on `--background-core`. A stall
//! meter sleeps 1 ms at a time on the writer's core and records how late it
//! wakes.
//!
//! Workloads (records of `--payload-bytes`, default 64):
//! - append: policy `none`, the writer appends as fast as it can
//!   (throughput pass, untimed), then a latency pass timing every append
//!   with the TSC. Baseline: one `pwrite` per record into a preallocated,
//!   zero-filled file, timed the same way.
//! - scan: a reader reads back everything the append passes wrote.
//! - batch at saturation: policy `batch`, the writer appends as fast as it
//!   can while staying at most `max_ahead` records ahead of the durable
//!   watermark (so disk use stays bounded); the figure is records covered by
//!   completed syncs per second. Timing starts once the journal recycles
//!   segments (steady state), as the baseline's file is allocated up front. Baseline: a writer filling a ring and a
//!   flusher doing one `pwrite` per batch (everything written since its last
//!   sync) plus `fdatasync`, the same group-commit dynamic.
//! - batch latency: 100 k records/s offered open-loop (planned send times);
//!   latency is planned send time → observed covered by a sync. Same for the
//!   baseline.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use otedama_journal::{Durability, Journal, Options, Reader, ReaderOptions, kinds};

use crate::harness::{self, Clock, StallMeter};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A shorter run (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Directory for the benchmark's files (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Runs per workload; tail figures are the median across runs.
    #[arg(long)]
    pub runs: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub writer_core: usize,
    #[arg(long, default_value_t = 0)]
    pub background_core: usize,
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    #[arg(long, default_value_t = 256 << 20)]
    pub segment_bytes: u64,
}

struct Plan {
    runs: usize,
    append_records: u64,
    latency_records: u64,
    baseline_records: u64,
    saturation: Duration,
    paced: Duration,
    paced_rate: u64,
    max_ahead: u64,
}

impl Plan {
    fn new(a: &Args) -> Plan {
        if a.quick {
            Plan {
                runs: a.runs.unwrap_or(3),
                append_records: 5_000_000,
                latency_records: 2_000_000,
                baseline_records: 300_000,
                saturation: Duration::from_secs(2),
                paced: Duration::from_secs(2),
                paced_rate: 100_000,
                max_ahead: 2_000_000,
            }
        } else {
            Plan {
                runs: a.runs.unwrap_or(5),
                append_records: 8_000_000,
                latency_records: 3_000_000,
                baseline_records: 1_000_000,
                saturation: Duration::from_secs(4),
                paced: Duration::from_secs(4),
                paced_rate: 100_000,
                max_ahead: 2_000_000,
            }
        }
    }
}

fn run_on<T: Send + 'static>(core: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("bench-writer".into())
        .spawn(move || {
            harness::pin(core);
            f()
        })
        .expect("spawn")
        .join()
        .expect("bench thread panicked")
}

fn open(dir: &Path, a: &Args, durability: Durability, prepare_ahead: usize) -> Result<Journal> {
    let opts = Options { segment_bytes: a.segment_bytes, durability, prepare_ahead, ..Options::default() };
    let j = Journal::open(dir, opts)?;
    // Start timing only once the preparer has its segments ready.
    let t = Instant::now();
    while j.prepared_segments() < prepare_ahead && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(j)
}

/// Records that fit in `prepare_ahead` segments plus the first.
fn segments_for(records: u64, a: &Args) -> usize {
    let per = (a.segment_bytes as usize - 4096) / otedama_journal::format::record_bytes(a.payload_bytes);
    (records as usize).div_ceil(per).clamp(1, 16)
}

struct AppendRun {
    records_per_sec: f64,
    cpu_ns_per_record: f64,
    latency: Histogram<u64>,
    scan_records_per_sec: f64,
}

fn append_run(dir: &Path, a: &Args, p: &Plan, clock: Clock) -> Result<AppendRun> {
    let total = p.append_records + p.latency_records;
    let j = open(dir, a, Durability::None, segments_for(total, a))?;
    let payload = vec![0xA5u8; a.payload_bytes];
    let (append_records, latency_records) = (p.append_records, p.latency_records);
    let (j, rate, cpu, hist) = run_on(a.writer_core, move || {
        let mut j = j;
        let cpu0 = harness::thread_cpu_ns();
        let t0 = Instant::now();
        for i in 0..append_records {
            j.append(kinds::BENCH, 1, i, &payload).expect("append");
        }
        let el = t0.elapsed().as_secs_f64();
        let cpu = (harness::thread_cpu_ns() - cpu0) as f64 / append_records as f64;
        let mut h = harness::histogram();
        for i in 0..latency_records {
            let c0 = Clock::raw();
            j.append(kinds::BENCH, 1, i, &payload).expect("append");
            let c1 = Clock::raw();
            let _ = h.record(clock.ticks_to_ns(c1.wrapping_sub(c0)).max(1));
        }
        (j, append_records as f64 / el, cpu, h)
    });
    // Scan everything back on the writer's core, once the writeback thread
    // has published it all.
    let t = Instant::now();
    while j.published_seq() < total && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let dir2 = dir.to_owned();
    let core = a.writer_core;
    let scan_rate = run_on(core, move || -> Result<f64> {
        let mut r = Reader::open(&dir2, 1, ReaderOptions::default())?;
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut sum = 0u64;
        while let Some(rec) = r.try_next()? {
            sum = sum.wrapping_add(rec.payload.len() as u64);
            n += 1;
        }
        std::hint::black_box(sum);
        anyhow::ensure!(n == total, "scan read {n} of {total} records");
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    })?;
    drop(j);
    Ok(AppendRun { records_per_sec: rate, cpu_ns_per_record: cpu, latency: hist, scan_records_per_sec: scan_rate })
}

/// Builds a record exactly as the journal lays it out, into `buf`.
fn encode(buf: &mut [u8], seq: u64, payload: &[u8]) -> usize {
    use otedama_journal::format::*;
    let total = record_bytes(payload.len());
    put_u64(buf, R_SEQ, seq);
    put_u64(buf, R_TIMESTAMP, seq);
    put_u16(buf, R_KIND, kinds::BENCH);
    put_u16(buf, R_VERSION, 1);
    put_u32(buf, R_PAYLOAD_LEN, payload.len() as u32);
    buf[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    buf[RECORD_HEADER_BYTES + payload.len()..total].fill(0);
    put_u32(buf, R_SIZE, total as u32);
    let crc = record_crc(&buf[R_SEQ..total]);
    put_u32(buf, R_CRC, crc);
    total
}

fn zeroed_file(path: &Path, bytes: u64) -> Result<File> {
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < bytes {
        f.write_all_at(&zeros, off)?;
        off += zeros.len() as u64;
    }
    f.sync_all()?;
    Ok(f)
}

/// One `pwrite` per record, each timed.
fn baseline_append(dir: &Path, a: &Args, p: &Plan, clock: Clock) -> Result<(Histogram<u64>, f64)> {
    let rec = otedama_journal::format::record_bytes(a.payload_bytes) as u64;
    let file_bytes = (p.baseline_records * rec).next_multiple_of(1 << 20);
    let f = zeroed_file(&dir.join("baseline-append.dat"), file_bytes)?;
    let payload = vec![0xA5u8; a.payload_bytes];
    let n = p.baseline_records;
    Ok(run_on(a.writer_core, move || {
        let mut h = harness::histogram();
        let mut buf = vec![0u8; rec as usize];
        let t0 = Instant::now();
        for i in 0..n {
            let c0 = Clock::raw();
            let len = encode(&mut buf, i + 1, &payload);
            f.write_all_at(&buf[..len], i * rec).expect("pwrite");
            let c1 = Clock::raw();
            let _ = h.record(clock.ticks_to_ns(c1.wrapping_sub(c0)).max(1));
        }
        (h, n as f64 / t0.elapsed().as_secs_f64())
    }))
}

/// Offered-rate schedule: planned send time of record `i`, ns from start.
fn planned_ns(i: u64, rate: u64) -> u64 {
    i * 1_000_000_000 / rate
}

/// Open loop: waits for record `i`'s planned send time and records it for
/// the latency observer; false once the schedule's capacity is used up.
fn send_at_planned_time(clock: Clock, start_ns: u64, i: u64, rate: u64, planned: &[AtomicU64]) -> bool {
    let due = start_ns + planned_ns(i, rate);
    while clock.now_ns() < due {
        std::hint::spin_loop();
    }
    match planned.get(i as usize) {
        Some(slot) => {
            slot.store(due, Ordering::Release);
            true
        }
        None => false,
    }
}

/// Our journal under `batch`: saturation rate, or paced latency when
/// `rate` is given.
/// Returns (durable records/s, append→durable histogram, process CPU ns per
/// durable record).
fn batch_run(dir: &Path, a: &Args, p: &Plan, rate: Option<u64>, clock: Clock) -> Result<(f64, Histogram<u64>, f64)> {
    let j = open(dir, a, Durability::Batch, 2)?;
    let watch = j.durability_watch();
    let duration = if rate.is_some() { p.paced } else { p.saturation };
    let max_ahead = p.max_ahead;
    let payload = vec![0xA5u8; a.payload_bytes];
    // planned[i] for the paced run, read by the observer.
    let capacity = rate.map(|r| (r as u128 * duration.as_nanos() / 1_000_000_000) as usize + 16).unwrap_or(0);
    let planned: Arc<Vec<AtomicU64>> = Arc::new((0..capacity).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let start_ns = clock.now_ns() + 20_000_000;

    // The observer: parked on the durable watermark, stamps each advance.
    let observer = {
        let (watch, planned, done) = (watch.clone(), planned.clone(), done.clone());
        let core = a.background_core;
        std::thread::spawn(move || {
            harness::pin(core);
            let mut h = harness::histogram();
            let mut seen = 0u64;
            while !done.load(Ordering::Acquire) {
                let _ = watch.wait(seen + 1, Duration::from_millis(50));
                let d = watch.durable_seq();
                if d > seen && !planned.is_empty() {
                    let now = clock.now_ns();
                    for s in seen + 1..=d {
                        if let Some(t) = planned.get(s as usize - 1) {
                            let t = t.load(Ordering::Acquire);
                            if t != 0 {
                                let _ = h.record(now.saturating_sub(t).max(1));
                            }
                        }
                    }
                }
                seen = d;
            }
            h
        })
    };

    let cpu0 = harness::process_cpu_ns();
    let (j, count, elapsed) = run_on(a.writer_core, {
        let planned = planned.clone();
        move || {
            let mut j = j;
            if rate.is_none() {
                // Warm up to steady state: appending and releasing until the
                // preparer recycles segments instead of creating them (the
                // baseline's file is likewise allocated before it starts).
                let t = Instant::now();
                while j.stats().segments_recycled < 2 && t.elapsed() < Duration::from_secs(30) {
                    for _ in 0..100_000 {
                        while j.next_seq() > watch.durable_seq() + max_ahead {
                            std::hint::spin_loop();
                        }
                        j.append(kinds::BENCH, 1, 0, &payload).expect("append");
                    }
                    j.release(watch.durable_seq().saturating_sub(max_ahead));
                }
                let _ = watch.wait(j.next_seq() - 1, Duration::from_secs(30));
            }
            let start_ns = start_ns.max(clock.now_ns());
            while clock.now_ns() < start_ns {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            let mut i = 0u64;
            let d0 = watch.durable_seq();
            let mut last_release = 0;
            while t0.elapsed() < duration {
                match rate {
                    Some(r) => {
                        if !send_at_planned_time(clock, start_ns, i, r, &planned) {
                            break;
                        }
                    }
                    None => {
                        // Saturate the flusher but bound the disk in use.
                        while j.next_seq() > watch.durable_seq() + max_ahead {
                            std::hint::spin_loop();
                        }
                    }
                }
                j.append(kinds::BENCH, 1, i, &payload).expect("append");
                i += 1;
                if i - last_release >= 1_000_000 {
                    j.release(watch.durable_seq().saturating_sub(max_ahead));
                    last_release = i;
                }
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let durable = watch.durable_seq() - d0;
            (j, durable, elapsed)
        }
    });
    // Let the paced run's last records become durable before stopping.
    if rate.is_some() {
        let _ = j.durability_watch().wait(j.next_seq() - 1, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu = (harness::process_cpu_ns() - cpu0) as f64 / count.max(1) as f64;
    done.store(true, Ordering::Release);
    let h = observer.join().expect("observer");
    drop(j);
    Ok((count as f64 / elapsed, h, cpu))
}

/// The baseline group commit: the writer encodes records into a ring, the
/// flusher writes everything since its last sync with one `pwrite` (two
/// when the ring wraps) and calls `fdatasync`.
fn baseline_batch_run(dir: &Path, a: &Args, p: &Plan, rate: Option<u64>, clock: Clock) -> Result<(f64, Histogram<u64>, f64)> {
    let rec = otedama_journal::format::record_bytes(a.payload_bytes) as u64;
    let ring_bytes = p.max_ahead * rec * 2;
    let file_bytes = ring_bytes;
    let file = Arc::new(zeroed_file(&dir.join("baseline-batch.dat"), file_bytes)?);
    struct Ring(std::cell::UnsafeCell<Vec<u8>>);
    // SAFETY: the writer writes only [durable, head + rec) and the flusher
    // reads only [done, head); head/durable are published with release/acquire.
    unsafe impl Sync for Ring {}
    let ring = Arc::new(Ring(std::cell::UnsafeCell::new(vec![0u8; ring_bytes as usize])));
    let head = Arc::new(AtomicU64::new(0)); // bytes written
    let durable = Arc::new(AtomicU64::new(0)); // bytes synced
    let done = Arc::new(AtomicBool::new(false));
    let duration = if rate.is_some() { p.paced } else { p.saturation };
    let capacity = rate.map(|r| (r as u128 * duration.as_nanos() / 1_000_000_000) as usize + 16).unwrap_or(0);
    let planned: Arc<Vec<AtomicU64>> = Arc::new((0..capacity).map(|_| AtomicU64::new(0)).collect());
    let start_ns = clock.now_ns() + 20_000_000;

    let flusher = {
        let (file, ring, head, durable, done, planned) =
            (file.clone(), ring.clone(), head.clone(), durable.clone(), done.clone(), planned.clone());
        let core = a.background_core;
        std::thread::spawn(move || {
            harness::pin(core);
            let mut h = harness::histogram();
            let mut synced = 0u64;
            loop {
                let hd = head.load(Ordering::Acquire);
                if hd == synced {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    std::hint::spin_loop();
                    continue;
                }
                // SAFETY: see `Ring`.
                let buf = unsafe { &*ring.0.get() };
                let (from, to) = (synced % ring_bytes, hd % ring_bytes);
                if from < to || to == 0 {
                    let end = if to == 0 { ring_bytes } else { to };
                    file.write_all_at(&buf[from as usize..end as usize], from).expect("pwrite");
                } else {
                    file.write_all_at(&buf[from as usize..], from).expect("pwrite");
                    file.write_all_at(&buf[..to as usize], 0).expect("pwrite");
                }
                file.sync_data().expect("fdatasync");
                let now = clock.now_ns();
                if !planned.is_empty() {
                    for s in synced / rec..hd / rec {
                        if let Some(t) = planned.get(s as usize) {
                            let t = t.load(Ordering::Acquire);
                            if t != 0 {
                                let _ = h.record(now.saturating_sub(t).max(1));
                            }
                        }
                    }
                }
                synced = hd;
                durable.store(hd, Ordering::Release);
            }
            h
        })
    };

    let payload = vec![0xA5u8; a.payload_bytes];
    let max_ahead_bytes = p.max_ahead * rec;
    let cpu0 = harness::process_cpu_ns();
    let (count, elapsed) = run_on(a.writer_core, {
        let (ring, head, durable, planned) = (ring.clone(), head.clone(), durable.clone(), planned.clone());
        move || {
            while clock.now_ns() < start_ns {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            let mut i = 0u64;
            let mut tmp = vec![0u8; rec as usize];
            while t0.elapsed() < duration {
                if let Some(r) = rate
                    && !send_at_planned_time(clock, start_ns, i, r, &planned)
                {
                    break;
                }
                let hd = head.load(Ordering::Relaxed);
                while hd + rec > durable.load(Ordering::Acquire) + max_ahead_bytes {
                    std::hint::spin_loop();
                }
                let len = encode(&mut tmp, i + 1, &payload);
                // SAFETY: see `Ring`; this range is not being flushed.
                let buf = unsafe { &mut *ring.0.get() };
                let at = (hd % ring_bytes) as usize;
                if at + len <= buf.len() {
                    buf[at..at + len].copy_from_slice(&tmp[..len]);
                } else {
                    let k = buf.len() - at;
                    buf[at..].copy_from_slice(&tmp[..k]);
                    buf[..len - k].copy_from_slice(&tmp[k..len]);
                }
                head.store(hd + rec, Ordering::Release);
                i += 1;
            }
            let el = t0.elapsed().as_secs_f64();
            (durable.load(Ordering::Acquire) / rec, el)
        }
    });
    if rate.is_some() {
        let target = head.load(Ordering::Acquire);
        let t = Instant::now();
        while durable.load(Ordering::Acquire) < target && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let cpu = (harness::process_cpu_ns() - cpu0) as f64 / count.max(1) as f64;
    done.store(true, Ordering::Release);
    let h = flusher.join().expect("flusher");
    Ok((count as f64 / elapsed, h, cpu))
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64
}

/// Runs the benchmark, prints percentiles and a final JSON line.
pub fn run(a: &Args) -> Result<Value> {
    let p = Plan::new(a);
    let tmp;
    let base = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("temporary directory")?;
            tmp.path().to_owned()
        }
    };
    harness::pin(a.background_core);
    let clock = Clock::calibrate();
    println!(
        "otedama bench journal{}: {} runs, payload {} B, segment {} MiB, writer on core {}, background on core {}, dir {}",
        if a.quick { " --quick" } else { "" },
        p.runs,
        a.payload_bytes,
        a.segment_bytes >> 20,
        a.writer_core,
        a.background_core,
        base.display()
    );
    let stall = StallMeter::start(Some(a.writer_core), Duration::from_millis(1));
    let cpu0 = harness::process_cpu_ns();

    let mut v: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    fn push(v: &mut std::collections::BTreeMap<&'static str, Vec<f64>>, k: &'static str, x: f64) {
        v.entry(k).or_default().push(x);
    }
    let mut hists: std::collections::BTreeMap<&str, Histogram<u64>> = Default::default();
    fn merge(hists: &mut std::collections::BTreeMap<&'static str, Histogram<u64>>, k: &'static str, h: &Histogram<u64>) {
        hists.entry(k).or_insert_with(harness::histogram).add(h).expect("histogram add");
    }

    for run in 0..p.runs {
        let d = base.join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;

        let ar = append_run(&d.join("append"), a, &p, clock)?;
        push(&mut v, "append_records_per_sec", ar.records_per_sec);
        push(&mut v, "append_cpu_ns_per_record", ar.cpu_ns_per_record);
        push(&mut v, "append_p50_ns", q(&ar.latency, 0.5));
        push(&mut v, "append_p99_ns", q(&ar.latency, 0.99));
        push(&mut v, "append_p9999_ns", q(&ar.latency, 0.9999));
        push(&mut v, "scan_records_per_sec", ar.scan_records_per_sec);
        merge(&mut hists, "append (none) per record", &ar.latency);
        std::fs::remove_dir_all(d.join("append"))?;

        let (bh, brate) = baseline_append(&d, a, &p, clock)?;
        push(&mut v, "baseline_append_p99_ns", q(&bh, 0.99));
        push(&mut v, "baseline_append_p50_ns", q(&bh, 0.5));
        push(&mut v, "baseline_append_records_per_sec", brate);
        merge(&mut hists, "baseline append (pwrite) per record", &bh);

        let (rate, _, cpu) = batch_run(&d.join("batch"), a, &p, None, clock)?;
        push(&mut v, "batch_durable_records_per_sec", rate);
        push(&mut v, "batch_cpu_ns_per_durable_record", cpu);
        std::fs::remove_dir_all(d.join("batch"))?;
        let (rate, _, cpu) = baseline_batch_run(&d, a, &p, None, clock)?;
        push(&mut v, "baseline_durable_records_per_sec", rate);
        push(&mut v, "baseline_cpu_ns_per_durable_record", cpu);

        let (_, h, _) = batch_run(&d.join("paced"), a, &p, Some(p.paced_rate), clock)?;
        push(&mut v, "batch_durable_p50_us", q(&h, 0.5) / 1e3);
        push(&mut v, "batch_durable_p99_us", q(&h, 0.99) / 1e3);
        merge(&mut hists, "batch append→durable @100k/s", &h);
        std::fs::remove_dir_all(d.join("paced"))?;
        let (_, h, _) = baseline_batch_run(&d, a, &p, Some(p.paced_rate), clock)?;
        push(&mut v, "baseline_durable_p50_us", q(&h, 0.5) / 1e3);
        push(&mut v, "baseline_durable_p99_us", q(&h, 0.99) / 1e3);
        merge(&mut hists, "baseline append→durable @100k/s", &h);

        std::fs::remove_dir_all(&d)?;
        println!(
            "  run {run}: append {:.1} M/s p99 {:.0} ns | baseline append p99 {:.0} ns | batch durable {:.2} M/s vs baseline {:.2} M/s | p99 durable {:.0} µs vs {:.0} µs | scan {:.1} M/s",
            v["append_records_per_sec"][run] / 1e6,
            v["append_p99_ns"][run],
            v["baseline_append_p99_ns"][run],
            v["batch_durable_records_per_sec"][run] / 1e6,
            v["baseline_durable_records_per_sec"][run] / 1e6,
            v["batch_durable_p99_us"][run],
            v["baseline_durable_p99_us"][run],
            v["scan_records_per_sec"][run] / 1e6,
        );
    }
    let cpu_total_ns = harness::process_cpu_ns() - cpu0;
    let stalls = stall.stop();

    println!("percentiles over all runs:");
    for (label, h) in &hists {
        let (div, unit) = if label.contains("durable") { (1e3, "µs") } else { (1.0, "ns") };
        harness::print_histogram(label, h, div, unit);
    }
    println!(
        "stall meter on core {}: {} samples, p99 {:.0} µs late, max {:.0} µs late",
        a.writer_core, stalls.samples, stalls.p99_us, stalls.max_us
    );

    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("journal"));
    out.insert("quick".into(), json!(a.quick));
    for (k, xs) in &v {
        let (m, spread) = harness::median_spread(xs);
        out.insert((*k).into(), json!((m * 100.0).round() / 100.0));
        out.insert(format!("{k}_spread"), json!((spread * 100.0).round() / 100.0));
    }
    let med = |k: &str| harness::median_spread(&v[k]).0;
    out.insert("append_p99_vs_baseline".into(), json!(((med("baseline_append_p99_ns") / med("append_p99_ns")) * 100.0).round() / 100.0));
    out.insert(
        "durable_vs_baseline".into(),
        json!(((med("batch_durable_records_per_sec") / med("baseline_durable_records_per_sec")) * 100.0).round() / 100.0),
    );
    out.insert("stall_p99_us".into(), json!(stalls.p99_us));
    out.insert("stall_max_us".into(), json!(stalls.max_us));
    out.insert("process_cpu_s".into(), json!(cpu_total_ns as f64 / 1e9));
    out.insert("runs".into(), json!(p.runs));
    out.insert(
        "settings".into(),
        json!({
            "payload_bytes": a.payload_bytes,
            "segment_bytes": a.segment_bytes,
            "writer_core": a.writer_core,
            "background_core": a.background_core,
            "append_records": p.append_records,
            "latency_records": p.latency_records,
            "baseline_records": p.baseline_records,
            "saturation_s": p.saturation.as_secs_f64(),
            "paced_rate": p.paced_rate,
            "paced_s": p.paced.as_secs_f64(),
            "max_ahead_records": p.max_ahead,
            "append_policy": "none",
            "durable_policy": "batch",
        }),
    );
    out.insert("machine".into(), harness::machine());
    let line = Value::Object(out);
    println!("{line}");
    Ok(line)
}
