//! `otedama bench stratum`: the Stratum server under a simulated farm,
//! beside its baseline in the same run.
//!
//! The server runs in a process of its own (`otedama bench
//! stratum-server`, pinned, the same `StratumServer` `otedama engine`
//! runs) fed a job whose network target is mainnet's, so no share is a
//! block; it takes `job` (push a new clean job), `stats` and `quit` on
//! stdin. The load generators (`otedama loadgen stratum`) run in their own
//! processes (this VM allows 20,000 descriptors per process), each from
//! its own 127.0.0.x source address. The baseline is the same server with
//! the Stratum work taken out (`Baseline::Echo`: lines echoed, notify bytes
//! written as they are), same core, same polling mode.
//!
//! Phases: (1) connections up to the target, memory per session at 5 k,
//! 10 k and the maximum, idle CPU per session-second, notify fan-out;
//! (2) shares at a fixed rate from a few hundred connections, with known
//! rates of duplicate, stale and low-difficulty shares (the run fails
//! unless every share got exactly its answer), ack latency and CPU per
//! share; (3) the highest rate sustained; (4) the same on the baseline.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::devnet::Devnet;
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::stratum::session::{BIP320_MASK, PortRules};
use otedama_hashers::{Algorithm, Family};
use otedama_net::stratum_server::{Baseline, StratumConfig, StratumServer};
use otedama_net::template_task::Work;

use crate::harness::{self, StallMeter, median_spread};
use crate::stratum_load::{mono_ns, raise_nofile};

/// Difficulty of the benchmark's port: about half of all hashes meet it,
/// so the load generator grinds ~2 hashes per valid share.
pub const BENCH_DIFFICULTY: f64 = 4.66e-10;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A shorter run (5,000 connections, shorter share runs).
    #[arg(long)]
    pub quick: bool,
    /// Share runs per rate (medians are taken over them).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Concurrent sessions to reach (at most ~19,900 on this VM).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Core of the Stratum shard (and of the baseline server).
    #[arg(long, default_value_t = 1)]
    pub server_core: usize,
    /// Core of the load generators.
    #[arg(long, default_value_t = 0)]
    pub client_core: usize,
    /// Polling mode of the shard and of the baseline.
    #[arg(long, value_enum, default_value_t = crate::gateway::PollArg::Park)]
    pub poll: crate::gateway::PollArg,
    /// Least time between two syncs of the share journal, ms (the engine's
    /// `stratum.journal_sync_interval_ms`; 0: back to back).
    #[arg(long, default_value_t = 100)]
    pub sync_interval_ms: u64,
    /// How often the share journal's writeback thread wakes, µs (the
    /// engine's `stratum.journal_writeback_delay_us`).
    #[arg(long, default_value_t = 1000)]
    pub writeback_delay_us: u64,
    /// Offered share rate of the latency runs, shares/s.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Connections sending shares in the share runs.
    #[arg(long, default_value_t = 200)]
    pub active: usize,
    /// Consecutive shares per connection in the share runs (a farm proxy's
    /// burst, sent in one write when due together).
    #[arg(long, default_value_t = 4)]
    pub burst: usize,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[arg(long)]
    pub core: Option<usize>,
    #[arg(long, value_enum, default_value_t = crate::gateway::PollArg::Park)]
    pub poll: crate::gateway::PollArg,
    /// Run the echo baseline instead of Stratum.
    #[arg(long)]
    pub baseline: bool,
    /// Core for the journal, fan-out and other helper threads.
    #[arg(long)]
    pub housekeeping_core: Option<usize>,
    /// Where the share journal goes.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100)]
    pub sync_interval_ms: u64,
    #[arg(long, default_value_t = 1000)]
    pub writeback_delay_us: u64,
}

fn bench_job(id: u64) -> Arc<Job> {
    let mut t = Devnet::new(Algorithm::Sha256d, 1_700_000_000 + id as u32).template(1_700_000_100);
    t.bits = "1d00ffff".into();
    t.curtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Arc::new(Job::new(id, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).expect("devnet job"))
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `RssAnon`, ...).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Anonymous resident memory: heap, stacks, the receive buffer pool, the
/// rings. It leaves out the journal's file mapping (page cache the kernel
/// can write back and drop, whatever the number of sessions).
fn anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

/// TCP socket memory of the whole host, KiB (`/proc/net/sockstat`, pages).
fn sockstat_kib() -> u64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("TCP:"))?;
            let mut it = l.split_whitespace();
            while let Some(w) = it.next() {
                if w == "mem" {
                    return it.next()?.parse::<u64>().ok();
                }
            }
            None
        })
        .unwrap_or(0)
        * 4
}

/// The hidden `otedama bench stratum-server`.
pub fn server_main(a: &ServerArgs) -> Result<()> {
    raise_nofile();
    let rules = PortRules {
        family: Family::Sha256d,
        coin: Coin::Bitcoin,
        network: Network::Regtest,
        extranonce2_size: 8,
        version_mask: BIP320_MASK,
        difficulty: BENCH_DIFFICULTY,
        min_difficulty: 1e-12,
        max_difficulty: 1e12,
        ntime_future: 7200,
        solo: false,
    };
    let mut cfg = StratumConfig::parking("127.0.0.1:0".parse().expect("addr"), rules, a.dir.clone());
    cfg.cores = vec![a.core];
    cfg.housekeeping_core = a.housekeeping_core;
    cfg.poll = match a.poll {
        crate::gateway::PollArg::Park => otedama_net::gateway::Poll::Park,
        crate::gateway::PollArg::Spin => otedama_net::gateway::Poll::Spin,
    };
    cfg.handshake_timeout = Duration::from_secs(600);
    cfg.idle_timeout = Duration::from_secs(3600);
    cfg.max_shares_per_job = 1 << 24;
    cfg.outbound_queue_bytes = 1 << 20;
    cfg.baseline = if a.baseline { Baseline::Echo } else { Baseline::Stratum };
    // As `otedama engine` runs share journals (`stratum.journal_segment_bytes`,
    // `stratum.journal_sync_interval_ms`, `stratum.journal_writeback_delay_us`):
    // the writeback thread parks at once and wakes itself every
    // `--writeback-delay-us` (the engine's default: every millisecond), so
    // no syscall per share, and an idle pool costs it ~1,000 wake-ups a
    // second (a 200 µs timer, as the gateway benchmark uses, costs 70 ms of
    // CPU a second when idle).
    cfg.journal.flusher_spin = Duration::ZERO;
    cfg.journal.writeback_delay = Duration::from_micros(a.writeback_delay_us);
    cfg.journal.segment_bytes = 16 << 20;
    cfg.journal.sync_interval = Duration::from_millis(a.sync_interval_ms);
    let (tx, rx) = mpsc::channel();
    let server = StratumServer::start(cfg, vec![], rx)?;
    let mut next = 1u64;
    tx.send(Work { job: bench_job(next), clean: true, node: 0, build: Duration::ZERO, learned: Instant::now() })?;
    println!("listening {}", server.local_addr());
    std::io::stdout().flush()?;
    let c = server.counters().clone();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.trim() {
            "job" => {
                next += 1;
                let job = bench_job(next);
                let t = mono_ns();
                tx.send(Work { job, clean: true, node: 0, build: Duration::ZERO, learned: Instant::now() })?;
                println!("pushed {next} {t}");
            }
            "stats" => {
                use std::sync::atomic::Ordering::Relaxed;
                println!(
                    "{}",
                    json!({
                        "cpu_ns": harness::process_cpu_ns(),
                        "rss_kib": rss_kib(std::process::id()),
                        "sessions": c.sessions_mining.load(Relaxed),
                        "accepted": c.shares_accepted.load(Relaxed),
                        "errors": c.errors.iter().map(|e| e.load(Relaxed)).collect::<Vec<_>>(),
                        "lines": c.lines.load(Relaxed),
                        "closed": c.connections_closed.load(Relaxed),
                        "slow_readers": c.slow_readers.load(Relaxed),
                    })
                );
            }
            "quit" => break,
            _ => {}
        }
        std::io::stdout().flush()?;
    }
    server.shutdown().map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Starts `cmd` with piped stdin and stdout; its stdout lines arrive on
/// the returned channel.
fn spawn_piped(mut cmd: Command, what: &str) -> Result<(Child, ChildStdin, mpsc::Receiver<String>)> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting {what}"))?;
    let stdin = child.stdin.take().expect("piped");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    Ok((child, stdin, lines))
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Server {
    fn start(a: &Args, baseline: bool, dir: &std::path::Path) -> Result<Server> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "--log-level=warn",
            "bench",
            "stratum-server",
            &format!("--core={}", a.server_core),
            &format!("--dir={}", dir.display()),
        ]);
        // The server's helper threads (journal writeback and segment
        // preparation, job fan-out) share the load generators' core: the
        // shard's core runs the shard alone.
        cmd.arg(format!("--housekeeping-core={}", a.client_core));
        cmd.arg(format!("--sync-interval-ms={}", a.sync_interval_ms));
        cmd.arg(format!("--writeback-delay-us={}", a.writeback_delay_us));
        cmd.arg(format!("--poll={}", if a.poll == crate::gateway::PollArg::Spin { "spin" } else { "park" }));
        if baseline {
            cmd.arg("--baseline");
        }
        let (child, stdin, lines) = spawn_piped(cmd, "the Stratum server process")?;
        let first = lines.recv_timeout(Duration::from_secs(30)).context("the server did not start")?;
        let addr = first.strip_prefix("listening ").context("server start line")?.parse()?;
        // Let the journal prepare its segments before memory is read.
        std::thread::sleep(Duration::from_secs(2));
        Ok(Server { child, stdin, lines, addr })
    }

    fn ask(&mut self, cmd: &str) -> Result<String> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.lines.recv_timeout(Duration::from_secs(30)).with_context(|| format!("no answer to {cmd}"))
    }

    fn stats(&mut self) -> Result<Value> {
        Ok(serde_json::from_str(&self.ask("stats")?)?)
    }

    fn stop(mut self) -> Result<()> {
        writeln!(self.stdin, "quit")?;
        let st = self.child.wait()?;
        anyhow::ensure!(st.success(), "the Stratum server exited with {st}");
        Ok(())
    }
}

/// A load generator process.
struct Load {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Load {
    fn start(addr: SocketAddr, core: usize, source: &str, extra: &[String]) -> Result<Load> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["loadgen", "stratum", &format!("--addr={addr}"), &format!("--core={core}"), &format!("--source={source}")]);
        cmd.arg(format!("--difficulty={BENCH_DIFFICULTY}"));
        cmd.args(extra);
        let (child, stdin, lines) = spawn_piped(cmd, "otedama loadgen stratum")?;
        Ok(Load { child, stdin, lines })
    }

    /// The next line that parses as JSON (the result), or `ready N`.
    fn line(&self, within: Duration) -> Result<String> {
        self.lines.recv_timeout(within).context("the load generator said nothing")
    }

    fn result(mut self, within: Duration) -> Result<Value> {
        let until = Instant::now() + within;
        loop {
            let l = self.line(until.saturating_duration_since(Instant::now()))?;
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                let _ = self.child.wait();
                return Ok(v);
            }
        }
    }
}

/// Connects `total` sessions in processes of `per_proc`, reading memory
/// at each checkpoint; returns the held load generators.
fn connect_all(
    server: &mut Server,
    a: &Args,
    total: usize,
    per_proc: usize,
    checkpoints: &[usize],
    mem: &mut Vec<Value>,
) -> Result<Vec<Load>> {
    let pid = server.child.id();
    let (anon0, sock0) = (anon_kib(pid), sockstat_kib());
    let mut loads = Vec::new();
    let mut held = 0;
    let mut cps = checkpoints.iter().copied().filter(|&c| c <= total).peekable();
    while held < total {
        // Up to the next checkpoint (or the process size).
        let next_cp = cps.peek().copied().unwrap_or(total);
        let n = per_proc.min(total - held).min(next_cp.saturating_sub(held).max(1));
        let src = format!("127.0.0.{}", 2 + loads.len());
        let l = Load::start(server.addr, a.client_core, &src, &["--hold".into(), format!("--miners={n}")])?;
        let ready = l.line(Duration::from_secs(300))?;
        anyhow::ensure!(ready == format!("ready {n}"), "load generator: {ready}");
        loads.push(l);
        held += n;
        if cps.peek() == Some(&held) {
            cps.next();
            std::thread::sleep(Duration::from_millis(500));
            let st = server.stats()?;
            let sessions = st["sessions"].as_u64().unwrap_or(0);
            anyhow::ensure!(sessions as usize == held, "the server holds {sessions} sessions, not {held}");
            let (rss, anon, sock) = (rss_kib(pid), anon_kib(pid), sockstat_kib());
            let sock_added = sock.saturating_sub(sock0);
            let per = (anon.saturating_sub(anon0) + sock_added) as f64 * 1024.0 / held as f64;
            let total_per = (anon + sock_added) as f64 * 1024.0 / held as f64;
            println!(
                "  {held} sessions: server RSS {rss} KiB (anonymous {anon} KiB, +{} KiB since the first session; the rest is the share journal's file mapping), TCP socket memory +{sock_added} KiB (both ends) → {per:.0} B/session added, {total_per:.0} B/session all in",
                anon.saturating_sub(anon0)
            );
            mem.push(json!({"sessions": held, "rss_kib": rss, "anon_kib": anon, "sockstat_added_kib": sock_added, "bytes_per_session_added": per, "bytes_per_session_total": total_per}));
        }
    }
    Ok(loads)
}

/// Pushes `jobs` jobs a second apart and returns the fan-out (ms, p50/p99
/// over every session and job) and sessions that missed a job.
fn fanout(server: &mut Server, loads: Vec<Load>, jobs: usize) -> Result<(f64, f64, u64)> {
    let mut pushes = Vec::new();
    for _ in 0..jobs {
        std::thread::sleep(Duration::from_millis(700));
        let l = server.ask("job")?;
        let mut p = l.split_whitespace().skip(1);
        let (id, ns) = (p.next().context("pushed")?.to_string(), p.next().context("pushed")?.to_string());
        pushes.push(format!("push {id} {ns}"));
    }
    std::thread::sleep(Duration::from_millis(700));
    let mut results = Vec::new();
    for mut l in loads {
        for p in &pushes {
            writeln!(l.stdin, "{p}")?;
        }
        writeln!(l.stdin, "end")?;
        l.stdin.flush()?;
        results.push(l);
    }
    let mut p50s = Vec::new();
    let mut p99 = 0f64;
    let mut missing = 0;
    for l in results {
        let r = l.result(Duration::from_secs(60))?;
        p50s.push(r["fanout_p50_ms"].as_f64().unwrap_or(0.0));
        p99 = p99.max(r["fanout_p99_ms"].as_f64().unwrap_or(0.0));
        missing += r["missing"].as_u64().unwrap_or(0) + r["closed_by_pool"].as_u64().unwrap_or(0);
    }
    Ok((median_spread(&p50s).0, p99, missing))
}

/// One open-loop share run; returns the load generator's report and the
/// server's CPU ns spent during it.
fn share_run(server: &mut Server, a: &Args, rate: f64, seconds: f64, bad: bool) -> Result<(Value, u64)> {
    let mix =
        if bad { ["--dup-every=50", "--stale-every=50", "--low-every=50"] } else { ["--dup-every=0", "--stale-every=0", "--low-every=0"] };
    let mut extra: Vec<String> =
        vec![format!("--miners={}", a.active), format!("--rate={rate}"), format!("--seconds={seconds}"), format!("--burst={}", a.burst)];
    extra.extend(mix.iter().map(|s| s.to_string()));
    let cpu0 = server.stats()?["cpu_ns"].as_u64().unwrap_or(0);
    let l = Load::start(server.addr, a.client_core, "127.0.0.1", &extra)?;
    let r = l.result(Duration::from_secs_f64(seconds + 180.0))?;
    let cpu1 = server.stats()?["cpu_ns"].as_u64().unwrap_or(0);
    Ok((r, cpu1 - cpu0))
}

fn sent_total(r: &Value) -> u64 {
    ["valid", "duplicate", "stale", "low"].iter().map(|k| r["sent"][k].as_u64().unwrap_or(0)).sum()
}

pub fn run(a: &Args) -> Result<Value> {
    raise_nofile();
    let runs = a.runs.unwrap_or(if a.quick { 3 } else { 5 });
    let target = a.connections.unwrap_or(if a.quick { 5_000 } else { 19_000 });
    let per_proc = 9_500;
    let seconds = if a.quick { 3.0 } else { 5.0 };
    let poll = if a.poll == crate::gateway::PollArg::Spin { "spin" } else { "park" };
    println!(
        "bench stratum: server (one shard) on core {} ({poll}), load generators on core {}; {target} sessions; share runs at {} shares/s from {} connections, {runs} runs",
        a.server_core, a.client_core, a.rate, a.active
    );
    let meter = StallMeter::start(Some(a.server_core), Duration::from_millis(1));
    let dir = tempfile::tempdir()?;

    // (1) Stratum: connections, memory, idle CPU, fan-out.
    let mut server = Server::start(a, false, &dir.path().join("stratum"))?;
    let mut mem = Vec::new();
    let cps: Vec<usize> = [5_000, 10_000, target].into_iter().filter(|&c| c <= target).collect();
    let t = Instant::now();
    let loads = connect_all(&mut server, a, target, per_proc, &cps, &mut mem)?;
    println!("  {target} sessions subscribed, authorized and holding a job after {:.1} s", t.elapsed().as_secs_f64());
    let idle_s = 5.0;
    let c0 = server.stats()?["cpu_ns"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs_f64(idle_s));
    let c1 = server.stats()?["cpu_ns"].as_u64().unwrap_or(0);
    let idle_us = (c1 - c0) as f64 / 1e3 / (target as f64 * idle_s);
    println!("  idle: {idle_us:.3} µs CPU per session-second (→ one core holds {:.0} idle sessions)", 1e6 / idle_us.max(1e-9));
    let jobs = if a.quick { 5 } else { 10 };
    let (fan50, fan99, fan_missing) = fanout(&mut server, loads, jobs)?;
    println!("  notify fan-out to {target} sessions: p50 {fan50:.2} ms, p99 {fan99:.2} ms ({jobs} jobs, {fan_missing} missed)");
    if fan_missing > 0 {
        bail!("{fan_missing} session×job notifies never arrived");
    }

    // (2) Shares at the fixed rate, with the bad-share mix.
    let mut acks50 = Vec::new();
    let mut acks99 = Vec::new();
    let mut cpu_per = Vec::new();
    for i in 0..runs {
        let (r, cpu) = share_run(&mut server, a, a.rate, seconds, true)?;
        let sent = sent_total(&r);
        if r["wrong_answers"].as_u64() != Some(0) || r["unanswered"].as_u64() != Some(0) {
            bail!("share run {i}: answers do not match the shares' kinds: {r}");
        }
        acks50.push(r["ack_p50_us"].as_f64().unwrap_or(0.0));
        acks99.push(r["ack_p99_us"].as_f64().unwrap_or(0.0));
        cpu_per.push(cpu as f64 / 1e3 / sent as f64);
        println!(
            "  run {i}: {sent} shares (valid {}, duplicate {}, stale {}, low {}; every answer as expected) ack p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs | server CPU {:.2} µs/share | sender lag p99 {:.0} µs, max {:.0} µs",
            r["sent"]["valid"],
            r["sent"]["duplicate"],
            r["sent"]["stale"],
            r["sent"]["low"],
            r["ack_p50_us"].as_f64().unwrap_or(0.0),
            r["ack_p99_us"].as_f64().unwrap_or(0.0),
            r["ack_p999_us"].as_f64().unwrap_or(0.0),
            cpu as f64 / 1e3 / sent as f64,
            r["sender_lag_p99_us"].as_f64().unwrap_or(0.0),
            r["sender_lag_max_us"].as_f64().unwrap_or(0.0)
        );
    }

    // (3) Saturation: far more offered than one core can take, in bursts
    // of 16 per connection; what the shard answers per second is its
    // capacity when it never sleeps. The shard's core use says whether it
    // or the load generator was the limit.
    let sat_rate = 400_000.0;
    let sat_s = 2.0;
    let sat = {
        let mut extra: Vec<String> = vec![format!("--miners={}", a.active), format!("--rate={sat_rate}"), format!("--seconds={sat_s}")];
        extra.extend(["--burst=16", "--dup-every=0", "--stale-every=0", "--low-every=0"].iter().map(|s| s.to_string()));
        let cpu0 = server.stats()?["cpu_ns"].as_u64().unwrap_or(0);
        let t = Instant::now();
        let l = Load::start(server.addr, a.client_core, "127.0.0.1", &extra)?;
        let r = l.result(Duration::from_secs(300))?;
        let wall = t.elapsed().as_secs_f64();
        let cpu = server.stats()?["cpu_ns"].as_u64().unwrap_or(0) - cpu0;
        (r, cpu, wall)
    };
    let (sr, scpu, _) = &sat;
    let best = sr["answered_per_sec"].as_f64().unwrap_or(0.0);
    let answered: u64 = ["valid", "duplicate", "stale", "low"].iter().map(|k| sr["answered"][k].as_u64().unwrap_or(0)).sum();
    let best_cpu = *scpu as f64 / 1e3 / answered.max(1) as f64;
    // Busy share of the shard's core while answering (server CPU over the answering time).
    let busy = (*scpu as f64 / 1e9) / (answered as f64 / best.max(1e-9));
    let limit_note = format!(
        "offered {sat_rate:.0}/s in bursts of 16: answered {best:.0}/s, server CPU {best_cpu:.2} µs/share, server busy {:.0}% of the time (load generator lag max {:.0} ms)",
        busy * 100.0,
        sr["sender_lag_max_us"].as_f64().unwrap_or(0.0) / 1e3
    );
    println!("  saturation: {limit_note}");
    if sr["wrong_answers"].as_u64() != Some(0) {
        bail!("saturation run: wrong answers: {sr}");
    }
    server.stop()?;

    // (4) The baseline: the same shard echoing lines and writing notify bytes.
    let mut base = Server::start(a, true, &dir.path().join("baseline"))?;
    let mut bmem = Vec::new();
    let loads = connect_all(&mut base, a, target, per_proc, &[target], &mut bmem)?;
    let (bfan50, bfan99, _) = fanout(&mut base, loads, jobs)?;
    println!("  baseline write fan-out to {target} sockets: p50 {bfan50:.2} ms, p99 {bfan99:.2} ms");
    let mut b99 = Vec::new();
    let mut b50 = Vec::new();
    for i in 0..runs {
        let (r, cpu) = share_run(&mut base, a, a.rate, seconds, false)?;
        b50.push(r["ack_p50_us"].as_f64().unwrap_or(0.0));
        b99.push(r["ack_p99_us"].as_f64().unwrap_or(0.0));
        println!(
            "  baseline run {i}: echo p50 {:.1} µs p99 {:.1} µs | server CPU {:.2} µs/line | sender lag p99 {:.0} µs, max {:.0} µs",
            b50[i],
            b99[i],
            cpu as f64 / 1e3 / sent_total(&r) as f64,
            r["sender_lag_p99_us"].as_f64().unwrap_or(0.0),
            r["sender_lag_max_us"].as_f64().unwrap_or(0.0)
        );
    }
    base.stop()?;
    let stalls = meter.stop();

    let (ack50, s50) = median_spread(&acks50);
    let (ack99, s99) = median_spread(&acks99);
    let (cpu_share, _) = median_spread(&cpu_per);
    let (echo50, _) = median_spread(&b50);
    let (echo99, se99) = median_spread(&b99);
    let max_mem = mem.last().and_then(|m| m["bytes_per_session_total"].as_f64()).unwrap_or(0.0);
    println!(
        "  medians: ack p50 {ack50:.1} µs (spread {s50:.1}), p99 {ack99:.1} µs (spread {s99:.1}) | echo p50 {echo50:.1} µs, p99 {echo99:.1} µs (spread {se99:.1}) | ratio p99 {:.2}×",
        ack99 / echo99.max(1e-9)
    );
    println!("  stall meter on core {}: p99 {:.0} µs, max {:.0} µs", a.server_core, stalls.p99_us, stalls.max_us);
    let goals = json!({
        "sessions_19k_at_8kib": target >= 19_000 && max_mem <= 8192.0,
        "sessions_per_core_50k": 1e6 / idle_us.max(1e-9) >= 50_000.0,
        "shares_per_sec_150k": best >= 150_000.0,
        "ack_p99_1ms": ack99 <= 1_000.0,
        "ack_p99_2x_echo": ack99 <= 2.0 * echo99,
        "fanout_1_2x_write": fan99 <= 1.2 * bfan99,
    });
    let line = json!({
        "bench": "stratum",
        "machine": harness::machine(),
        "server_core": a.server_core, "client_core": a.client_core, "poll": poll, "sync_interval_ms": a.sync_interval_ms, "writeback_delay_us": a.writeback_delay_us,
        "connections": target,
        "memory": mem,
        "bytes_per_connection": max_mem,
        "cpu_us_per_session_second": idle_us,
        "notify_fanout_ms_p50": fan50, "notify_fanout_ms_p99": fan99,
        "baseline_write_fanout_ms_p50": bfan50, "baseline_write_fanout_ms_p99": bfan99,
        "offered_rate": a.rate, "active_connections": a.active, "runs": runs,
        "ack_p50_us": ack50, "ack_p99_us": ack99, "ack_p99_spread_us": s99,
        "baseline_echo_p50_us": echo50, "baseline_echo_p99_us": echo99,
        "cpu_us_per_share": cpu_share,
        "shares_per_sec": best, "cpu_us_per_share_at_max": best_cpu, "max_rate_note": limit_note,
        "stall_p99_us": stalls.p99_us, "stall_max_us": stalls.max_us,
        "goals_met": goals,
    });
    println!("{line}");
    Ok(line)
}
