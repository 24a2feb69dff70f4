//! `otedama bench matching`: the exchange state machine on exchange-core's
//! command mix and on a sweep mix, against a straightforward BTreeMap book
//! on the same stream, with the same core layout.
//!
//! - Streams are generated once per mix by running the engine (the
//!   generator learns live orders from events) and stored; every
//!   measurement then replays the same commands into a fresh engine.
//! - `ops_per_sec_max`: commands/s, state machine only, engine pinned to
//!   `--engine-core`. `ops_per_sec_journaled`: the same, each command and its
//!   events appended to a journal (policy `none`), every run.
//! - Latency: a producer on `--producer-core` offers commands open-loop at
//!   `--rate` per second through an SPSC ring (rtrb); the engine busy-polls
//!   it. Service time = dequeued → events emitted; response time = planned
//!   send time → events emitted (queueing included). Tails are the median
//!   of `--runs` runs with their spread.
//! - `instructions_per_op`: callgrind on a fixed stream (`--callgrind`).
//! - `allocations_per_op`: the binary's counting allocator, engine thread.
//! - `replay_events_per_sec`: the journaled run replayed into a fresh engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use otedama_engine::workload::{Mix, Workload, limits};
use otedama_engine::{Command, Event, Exchange};
use otedama_journal::{Durability, Journal, Options, Reader};
use otedama_net::sequencer::{Sequencer, replay};

use crate::alloc;
use crate::baseline_book::BaselineBook;
use crate::harness::{self, Clock, StallMeter};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A shorter run (under a minute).
    #[arg(long)]
    pub quick: bool,
    #[arg(long)]
    pub runs: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub engine_core: usize,
    #[arg(long, default_value_t = 0)]
    pub producer_core: usize,
    /// Offered rate for the latency runs, commands/s.
    #[arg(long, default_value_t = 1_000_000)]
    pub rate: u64,
    /// Also count instructions per command under callgrind (slow; needs valgrind).
    #[arg(long)]
    pub callgrind: bool,
    /// Internal: apply N commands of the exchange-core stream and exit
    /// (what callgrind measures).
    #[arg(long, hide = true)]
    pub instructions_only: Option<usize>,
}

/// The setup commands and a stored stream of `n` commands.
fn stream(mix: Mix, seed: u64, n: usize) -> (Vec<Command>, Vec<Command>) {
    let mut ex = Exchange::new(limits());
    let mut w = Workload::new(mix, seed);
    let setup = w.setup();
    let mut out = Vec::with_capacity(4096);
    for c in &setup {
        ex.apply(c, &mut out);
    }
    let mut cmds = Vec::with_capacity(n);
    for _ in 0..n {
        let c = w.next_command();
        out.clear();
        ex.apply(&c, &mut out);
        w.observe(&out);
        cmds.push(c);
    }
    (setup, cmds)
}

fn fresh(setup: &[Command], warm: &[Command]) -> Exchange {
    let mut ex = Exchange::new(limits());
    let mut out = Vec::with_capacity(4096);
    for c in setup.iter().chain(warm) {
        out.clear();
        ex.apply(c, &mut out);
    }
    ex
}

#[inline(never)]
fn apply_stream(ex: &mut Exchange, cmds: &[Command], out: &mut Vec<Event>) -> u64 {
    let mut events = 0u64;
    for c in cmds {
        out.clear();
        ex.apply(c, out);
        events += out.len() as u64;
    }
    events
}

struct Stream {
    setup: Vec<Command>,
    warm: Vec<Command>,
    timed: Vec<Command>,
}

/// Commands that bring a fresh engine to the steady-state book before timing.
const WARM: usize = 50_000;

fn make(mix: Mix, n: usize) -> Stream {
    let (setup, all) = stream(mix, 7, n + WARM);
    let (warm, timed) = all.split_at(WARM);
    Stream { setup, warm: warm.to_vec(), timed: timed.to_vec() }
}

/// Trades (maker-side executions) the engine makes on the timed stream,
/// to check the baseline did the same matching work.
fn engine_trades(s: &Stream) -> u64 {
    let mut ex = fresh(&s.setup, &s.warm);
    let mut out = Vec::with_capacity(4096);
    let mut trades = 0;
    for c in &s.timed {
        out.clear();
        ex.apply(c, &mut out);
        trades += out.iter().filter(|e| matches!(e, Event::Executed { maker: true, .. })).count() as u64;
    }
    trades
}

fn throughput(s: &Stream, core: usize) -> (f64, f64, f64, u64) {
    let mut ex = fresh(&s.setup, &s.warm);
    let timed = s.timed.clone();
    let (rate, cpu, allocs, events) = run_on(core, move || {
        let mut out = Vec::with_capacity(4096);
        let a0 = alloc::thread_allocations();
        let c0 = harness::thread_cpu_ns();
        let t0 = Instant::now();
        let events = apply_stream(&mut ex, &timed, &mut out);
        let el = t0.elapsed().as_secs_f64();
        let cpu = (harness::thread_cpu_ns() - c0) as f64 / timed.len() as f64;
        let allocs = (alloc::thread_allocations() - a0) as f64 / timed.len() as f64;
        (timed.len() as f64 / el, cpu, allocs, events)
    });
    (rate, cpu, allocs, events)
}

fn baseline(s: &Stream, core: usize) -> (f64, u64) {
    let all: Vec<Command> = s.warm.iter().chain(&s.timed).copied().collect();
    let n_warm = s.warm.len();
    run_on(core, move || {
        let mut b = BaselineBook::new(1 << 16);
        for c in &all[..n_warm] {
            b.apply(c);
        }
        let warm_trades = b.trades;
        let t0 = Instant::now();
        for c in &all[n_warm..] {
            b.apply(c);
        }
        let el = t0.elapsed().as_secs_f64();
        ((all.len() - n_warm) as f64 / el, b.trades - warm_trades)
    })
}

fn journaled(s: &Stream, core: usize, dir: &std::path::Path) -> Result<(f64, f64)> {
    let ex = fresh(&s.setup, &s.warm);
    let opts = Options { segment_bytes: 256 << 20, durability: Durability::None, prepare_ahead: 4, ..Options::default() };
    let j = Journal::open(dir, opts)?;
    let t = Instant::now();
    while j.prepared_segments() < 4 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let timed = s.timed.clone();
    let (rate, seq) = run_on(core, move || {
        let mut sq = Sequencer::new(ex, j);
        let t0 = Instant::now();
        for c in &timed {
            sq.submit(c).expect("journal append");
        }
        let el = t0.elapsed().as_secs_f64();
        (timed.len() as f64 / el, sq)
    });
    let (_, j) = seq.into_parts();
    j.close()?;
    // Replay the journaled run into a fresh engine (warmed the same way).
    let mut ex = fresh(&s.setup, &s.warm);
    let mut r = Reader::open(dir, 1, Default::default())?;
    let t0 = Instant::now();
    let rep = replay(&mut r, &mut ex).context("replay")?;
    let replay_rate = rep.events as f64 / t0.elapsed().as_secs_f64();
    anyhow::ensure!(rep.commands == s.timed.len() as u64, "replayed {} of {}", rep.commands, s.timed.len());
    Ok((rate, replay_rate))
}

struct Latency {
    service: Histogram<u64>,
    response: Histogram<u64>,
}

/// Open loop at `rate`: producer and engine on their own cores, an SPSC ring between.
fn latency(s: &Stream, a: &Args, clock: Clock, seconds: f64) -> Latency {
    let n = ((a.rate as f64 * seconds) as usize).min(s.timed.len());
    let mut ex = fresh(&s.setup, &s.warm);
    let cmds: Vec<Command> = s.timed[..n].to_vec();
    let (mut tx, mut rx) = rtrb::RingBuffer::<(u64, Command)>::new(1 << 16);
    let start = clock.now_ns() + 50_000_000;
    let period = 1e9 / a.rate as f64;
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let core = a.producer_core;
        let done = done.clone();
        std::thread::spawn(move || {
            harness::pin(core);
            for (i, c) in cmds.into_iter().enumerate() {
                let due = start + (i as f64 * period) as u64;
                while clock.now_ns() < due {
                    std::hint::spin_loop();
                }
                let mut item = (due, c);
                loop {
                    match tx.push(item) {
                        Ok(()) => break,
                        // A full ring is backpressure: the delay lands in response time.
                        Err(rtrb::PushError::Full(v)) => {
                            item = v;
                            std::hint::spin_loop();
                        }
                    }
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let result = run_on(a.engine_core, move || {
        let mut service = harness::histogram();
        let mut response = harness::histogram();
        let mut out = Vec::with_capacity(4096);
        let mut got = 0usize;
        while got < n {
            match rx.pop() {
                Ok((due, c)) => {
                    let t0 = Clock::raw();
                    out.clear();
                    ex.apply(&c, &mut out);
                    let t1 = Clock::raw();
                    let now = clock.now_ns();
                    let _ = service.record(clock.ticks_to_ns(t1.wrapping_sub(t0)).max(1));
                    let _ = response.record(now.saturating_sub(due).max(1));
                    got += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        Latency { service, response }
    });
    let _ = producer.join();
    result
}

fn run_on<T: Send + 'static>(core: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        harness::pin(core);
        f()
    })
    .join()
    .expect("bench thread")
}

/// Instructions per command under callgrind, by re-running this binary.
fn instructions_per_op(n: usize) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let outf = dir.path().join("callgrind.out");
    let status = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--collect-atstart=no", "--toggle-collect=*apply_stream*"])
        .arg(format!("--callgrind-out-file={}", outf.display()))
        .arg(&exe)
        .args(["bench", "matching", "--instructions-only", &n.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running valgrind (apt-get install valgrind)")?;
    anyhow::ensure!(status.success(), "callgrind run failed: {status}");
    let text = std::fs::read_to_string(&outf)?;
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no totals in the callgrind output")?;
    Ok(total as f64 / n as f64)
}

/// The `--instructions-only` mode: the fixed stream, applied once.
pub fn instructions_only(n: usize) {
    let s = make(Mix::ExchangeCore, n);
    let mut ex = fresh(&s.setup, &s.warm);
    let mut out = Vec::with_capacity(4096);
    let events = apply_stream(&mut ex, &s.timed[..n], &mut out);
    std::hint::black_box(events);
}

fn q(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_quantile(p) as f64
}

/// Runs the benchmark, prints percentiles and a final JSON line.
pub fn run(a: &Args) -> Result<Value> {
    if let Some(n) = a.instructions_only {
        instructions_only(n);
        return Ok(Value::Null);
    }
    let runs = a.runs.unwrap_or(if a.quick { 3 } else { 5 });
    let n = if a.quick { 1_000_000 } else { 3_000_000 };
    let lat_seconds = if a.quick { 0.5 } else { 1.0 };
    harness::pin(a.producer_core);
    let clock = Clock::calibrate();
    println!(
        "otedama bench matching{}: {runs} runs, {n} commands per throughput run, latency at {} commands/s for {lat_seconds} s, engine on core {}, producer on core {}",
        if a.quick { " --quick" } else { "" },
        a.rate,
        a.engine_core,
        a.producer_core
    );
    let stall = StallMeter::start(Some(a.engine_core), Duration::from_millis(1));
    let mut out = Map::new();
    out.insert("bench".into(), json!("matching"));
    out.insert("quick".into(), json!(a.quick));
    for (mix, prefix) in [(Mix::ExchangeCore, ""), (Mix::Sweep, "sweep_")] {
        let s = make(mix, n);
        let trades = engine_trades(&s);
        let mut v: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
        let mut hs = (harness::histogram(), harness::histogram());
        for run in 0..runs {
            let (ops, cpu, allocs, events) = throughput(&s, a.engine_core);
            let (base, base_trades) = baseline(&s, a.engine_core);
            anyhow::ensure!(base_trades == trades, "the baseline made {base_trades} trades, the engine {trades}: not the same work");
            let l = latency(&s, a, clock, lat_seconds);
            v.entry("ops_per_sec_max").or_default().push(ops);
            v.entry("cpu_ns_per_op").or_default().push(cpu);
            v.entry("allocations_per_op").or_default().push(allocs);
            v.entry("events_per_op").or_default().push(events as f64 / s.timed.len() as f64);
            v.entry("baseline_ops_per_sec").or_default().push(base);
            v.entry("p50_ns").or_default().push(q(&l.service, 0.5));
            v.entry("p99_ns").or_default().push(q(&l.service, 0.99));
            v.entry("p9999_ns").or_default().push(q(&l.service, 0.9999));
            v.entry("response_p99_ns").or_default().push(q(&l.response, 0.99));
            hs.0.add(&l.service).expect("hist");
            hs.1.add(&l.response).expect("hist");
            println!(
                "  {prefix}run {run}: {:.2} M ops/s ({cpu:.0} ns CPU/op) vs baseline {:.2} M ops/s ({trades} trades) | service p50 {:.0} p99 {:.0} p99.99 {:.0} ns | response p99 {:.0} ns",
                ops / 1e6,
                base / 1e6,
                q(&l.service, 0.5),
                q(&l.service, 0.99),
                q(&l.service, 0.9999),
                q(&l.response, 0.99)
            );
        }
        // Journaled runs last, so their disk traffic never overlaps a latency run.
        for run in 0..runs {
            let dir = tempfile::tempdir()?;
            let (jops, replay_rate) = journaled(&s, a.engine_core, dir.path())?;
            println!("  {prefix}journaled run {run}: {:.2} M ops/s, replay {:.1} M events/s", jops / 1e6, replay_rate / 1e6);
            v.entry("ops_per_sec_journaled").or_default().push(jops);
            v.entry("replay_events_per_sec").or_default().push(replay_rate);
        }
        harness::print_histogram(&format!("{prefix}service time @{}/s", a.rate), &hs.0, 1.0, "ns");
        harness::print_histogram(&format!("{prefix}response time @{}/s", a.rate), &hs.1, 1.0, "ns");
        for (k, xs) in &v {
            let (m, spread) = harness::median_spread(xs);
            out.insert(format!("{prefix}{k}"), json!((m * 100.0).round() / 100.0));
            if xs.len() > 1 {
                out.insert(format!("{prefix}{k}_spread"), json!((spread * 100.0).round() / 100.0));
            }
        }
        let med = |k: &str| harness::median_spread(&v[k]).0;
        out.insert(format!("{prefix}vs_baseline"), json!(((med("ops_per_sec_max") / med("baseline_ops_per_sec")) * 100.0).round() / 100.0));
    }
    if a.callgrind {
        let ipo = instructions_per_op(200_000)?;
        println!("instructions per command (callgrind, 200,000 commands of the exchange-core stream): {ipo:.0}");
        out.insert("instructions_per_op".into(), json!(ipo.round()));
    }
    let stalls = stall.stop();
    println!("stall meter on core {}: p99 {:.0} µs late, max {:.0} µs late", a.engine_core, stalls.p99_us, stalls.max_us);
    out.insert("stall_p99_us".into(), json!(stalls.p99_us));
    out.insert("stall_max_us".into(), json!(stalls.max_us));
    out.insert("runs".into(), json!(runs));
    out.insert(
        "settings".into(),
        json!({"commands": n, "rate": a.rate, "latency_s": lat_seconds, "engine_core": a.engine_core, "producer_core": a.producer_core, "journal_policy": "none"}),
    );
    out.insert("machine".into(), harness::machine());
    let line = Value::Object(out);
    println!("{line}");
    Ok(line)
}
