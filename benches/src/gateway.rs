//! `otedama bench gateway`: NewOrder → Accepted round trips over loopback
//! TCP against a real `otedama engine` child process, beside a plain TCP
//! echo of the same message sizes with the same core layout and polling
//! mode, in the same run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use otedama_net::client::Client;
use otedama_net::keys::KeyStore;
use otedama_net::wire;

use crate::harness::{self, StallMeter, median_spread};
use crate::loadgen::{self, LoadSpec, Mix};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PollArg {
    Park,
    Spin,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A shorter run (about a minute).
    #[arg(long)]
    pub quick: bool,
    /// Latency runs (medians are taken over them).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Core of the I/O shard. The same core as the engine runs both roles
    /// in one thread (co-located).
    #[arg(long, default_value_t = 1)]
    pub io_core: usize,
    #[arg(long, default_value_t = 1)]
    pub engine_core: usize,
    /// Core of the load generator (sender and receiver threads).
    #[arg(long, default_value_t = 0)]
    pub client_core: usize,
    /// Polling mode of the engine shard and of the baseline server. The I/O
    /// shard parks whenever it shares its core with the load generator.
    #[arg(long, value_enum, default_value_t = PollArg::Park)]
    pub poll: PollArg,
    /// Offered rate of the latency runs, orders/s.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Where the engine keeps its data (journal, keys) for the run: a fresh
    /// temporary directory under this path (default: the system's temp
    /// directory). `/dev/shm` shows the path without disk writeback.
    #[arg(long)]
    pub data_parent: Option<std::path::PathBuf>,
    /// Sessions of the throughput search (orders spread round-robin).
    #[arg(long, default_value_t = 1)]
    pub sessions: usize,
    /// Offered rate of the ack-on-match vs ack-on-durable runs, orders/s.
    #[arg(long, default_value_t = 20_000)]
    pub durable_rate: u64,
    /// Only the recovery figures: ack-on-durable round trips, restart
    /// speed, replay speed.
    #[arg(long)]
    pub recovery_only: bool,
    /// With `--recovery-only`: just one of its parts (for profiling).
    #[arg(long, value_parser = ["durability", "restart", "replay"])]
    pub only: Option<String>,
}

/// The engine as a child process, and its CPU time.
pub(crate) struct EngineProc {
    child: Child,
    pub addr: SocketAddr,
}

impl EngineProc {
    /// `otedama engine` (order entry only) on `dir`, its I/O shard on
    /// `cores.0` and its engine shard on `cores.1`.
    pub(crate) fn start(dir: &Path, cores: (usize, usize), io_poll: &str, engine_poll: &str, durability: &str) -> Result<EngineProc> {
        use std::io::BufRead;
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([
                &format!("--data-dir={}", dir.display()),
                "--gateway-listen=127.0.0.1:0",
                &format!("--gateway-io-cores={}", cores.0),
                &format!("--gateway-engine-core={}", cores.1),
                &format!("--gateway-io-poll={io_poll}"),
                &format!("--gateway-engine-poll={engine_poll}"),
                "--gateway-rate-per-sec=1000000000",
                "--gateway-rate-burst=100000000",
                "--gateway-outbound-queue-bytes=268435456",
                &format!("--journal-durability={durability}"),
                // The writeback thread parks at once instead of spinning 50 µs
                // after each record (on a 2-core host its spinning competes
                // with the shards), and wakes itself every 200 µs instead of
                // being woken per record: no syscall per command for the
                // journal (tuning/README.md).
                "--journal-flusher-spin-us=0",
                // Under `batch` the writeback thread is woken per record (the
                // default): a timer would delay every group commit.
                &format!("--journal-writeback-delay-us={}", if durability == "none" { 200 } else { 0 }),
                "--log-level=warn",
                // Only order entry is measured: no devnet or template task.
                "--pool-enabled=false",
                "engine",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting otedama engine")?;
        let out = child.stdout.take().expect("piped");
        let mut reader = std::io::BufReader::new(out);
        // Lines before the address (how it recovered) are passed through.
        let mut line = String::new();
        while !line.contains("order entry on ") {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                anyhow::bail!("engine exited before reporting its address");
            }
            if !line.contains("order entry on ") {
                print!("  [engine] {line}");
            }
        }
        // Keep reading the engine's stdout (its final report) so it never
        // writes into a closed pipe.
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                println!("  [engine] {l}");
            }
        });
        let addr = line
            .split("order entry on ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("engine did not report its address: {line:?}"))?;
        Ok(EngineProc { child, addr })
    }

    /// ns on CPU of the process's threads, summed by thread name.
    fn cpu_ns_by_thread(&self) -> std::collections::BTreeMap<String, u64> {
        threads_cpu_ns(&format!("/proc/{}/task", self.child.id()))
    }

    /// ns on CPU of every thread of the process.
    fn cpu_ns(&self) -> u64 {
        self.cpu_ns_by_thread().values().sum()
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait()?;
        anyhow::ensure!(st.success(), "engine exited with {st}");
        Ok(())
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(c: &mut Client, f: impl FnOnce(u64, &mut Vec<u8>)) -> Result<()> {
    let cs = c.take_client_seq();
    c.send(|b| f(cs, b))?;
    match c.next_app()? {
        wire::ServerMsg::Done(_) => Ok(()),
        m => anyhow::bail!("setup command refused: {m:?}"),
    }
}

/// Accounts 1..=n with funds, and instrument 1.
pub(crate) fn setup(addr: SocketAddr, admin_key: (u64, [u8; 32]), n: u32) -> Result<()> {
    let mut c = Client::login(addr, admin_key.0, admin_key.1)?;
    for acct in 1..=n {
        admin(&mut c, |cs, b| wire::CreateAccount { client_seq: cs, account: acct }.push(b))?;
        for asset in [1u16, 2] {
            admin(&mut c, |cs, b| wire::Deposit { client_seq: cs, account: acct, asset, reserved: 0, amount: 1 << 60 }.push(b))?;
        }
    }
    let mut symbol = [0u8; 16];
    symbol[..8].copy_from_slice(b"BENCH-US");
    admin(&mut c, |cs, b| {
        wire::AddInstrument {
            client_seq: cs,
            instrument: 1,
            base: 1,
            quote: 2,
            status: 0,
            reserved: 0,
            symbol,
            tick: 1,
            lot: 1,
            min_price: 1,
            max_price: 1_000_000,
            min_qty: 1,
            max_qty: 1_000_000,
            quote_per_unit: 1,
            base_per_unit: 1,
            maker_bps: 0,
            taker_bps: 0,
        }
        .push(b)
    })?;
    Ok(())
}

/// fdatasync of a 4 KiB write in `dir`, `n` times: (p50, p99) in µs.
fn sync_probe(dir: &Path, n: usize) -> Result<(f64, f64)> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let p = dir.join("sync-probe");
    let mut f = std::fs::File::create(&p)?;
    f.write_all(&[0u8; 4096])?;
    f.sync_all()?;
    let mut h = harness::histogram();
    for i in 0..n {
        let t = std::time::Instant::now();
        f.write_all_at(&[i as u8; 4096], 0)?;
        f.sync_data()?;
        h.record(t.elapsed().as_nanos() as u64).ok();
    }
    std::fs::remove_file(&p)?;
    Ok((h.value_at_quantile(0.5) as f64 / 1e3, h.value_at_quantile(0.99) as f64 / 1e3))
}

/// Ack-on-match against ack-on-durable, both on one engine whose journal
/// group-commits (`batch`), alternating runs at one fixed rate, and the
/// host's sync time measured beside them.
fn durability_part(a: &Args, runs: usize, secs: f64, io_poll: &str, engine_poll: &str) -> Result<Map<String, Value>> {
    let dir = match &a.data_parent {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    };
    let mut ks = KeyStore::default();
    let admin_key = ks.add(0, true, "bench admin")?;
    let matcher = ks.add(1, false, "bench match")?;
    let durable = ks.add(2, false, "bench durable")?;
    ks.save(&otedama_net::keys::path_in(dir.path()))?;
    let engine = EngineProc::start(dir.path(), (a.io_core, a.engine_core), io_poll, engine_poll, "batch")?;
    setup(engine.addr, (admin_key.id, admin_key.secret), 2)?;
    println!(
        "  ack-on-match vs ack-on-durable: journal policy batch (group commit) on {}, {runs} runs of {secs} s each at {} orders/s",
        fs_type(dir.path()),
        a.durable_rate
    );
    let mut v: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut syncs = Vec::new();
    for run in 0..runs {
        let mut line = format!("  durability run {}:", run + 1);
        for (name, k, flags) in [("match", matcher, 0), ("durable", durable, otedama_net::sessions::FLAG_ACK_ON_DURABLE)] {
            let spec = LoadSpec {
                addr: engine.addr,
                keys: vec![(k.id, k.secret)],
                raw_sessions: 0,
                rate: a.durable_rate as f64,
                duration: Duration::from_secs_f64(secs),
                warmup: Duration::from_millis(200),
                mix: Mix::Ioc,
                instrument: 1,
                core: Some(a.client_core),
                flags,
            };
            let r = loadgen::run(&spec)?;
            anyhow::ensure!(r.missing == 0 && r.throttled == 0 && r.rejected == 0, "{name} run lost answers: {r:?}");
            let (p50, p99) = (r.rtt.value_at_quantile(0.5) as f64 / 1e3, r.rtt.value_at_quantile(0.99) as f64 / 1e3);
            v.entry(if flags == 0 { "m50" } else { "d50" }).or_default().push(p50);
            v.entry(if flags == 0 { "m99" } else { "d99" }).or_default().push(p99);
            line.push_str(&format!(" ack-on-{name} p50 {p50:.1} p99 {p99:.1} µs |"));
        }
        let (s50, s99) = sync_probe(dir.path(), 200)?;
        syncs.push((s50, s99));
        line.push_str(&format!(" 4 KiB fdatasync p50 {s50:.1} p99 {s99:.1} µs"));
        println!("{line}");
    }
    engine.stop()?;
    let m = |k: &str| median_spread(v.get(k).map(Vec::as_slice).unwrap_or(&[]));
    let ((m50, _), (m99, m99s), (d50, _), (d99, d99s)) = (m("m50"), m("m99"), m("d50"), m("d99"));
    let (s50, _) = median_spread(&syncs.iter().map(|s| s.0).collect::<Vec<_>>());
    let (s99, _) = median_spread(&syncs.iter().map(|s| s.1).collect::<Vec<_>>());
    println!(
        "  durability medians: ack-on-match p50 {m50:.1} p99 {m99:.1} µs, ack-on-durable p50 {d50:.1} p99 {d99:.1} µs; sync p50 {s50:.1} p99 {s99:.1} µs; durable p99 − match p99 = {:.1} µs",
        d99 - m99
    );
    let mut out = Map::new();
    out.insert("durable_offered_rate".into(), json!(a.durable_rate));
    out.insert("match_rtt_p50_us".into(), json!(m50));
    out.insert("match_rtt_p99_us".into(), json!(m99));
    out.insert("match_rtt_p99_us_spread".into(), json!(m99s));
    out.insert("durable_rtt_p50_us".into(), json!(d50));
    out.insert("durable_rtt_p99_us".into(), json!(d99));
    out.insert("durable_rtt_p99_us_spread".into(), json!(d99s));
    out.insert("sync_p50_us".into(), json!(s50));
    out.insert("sync_p99_us".into(), json!(s99));
    out.insert("durable_p99_minus_match_p99_us".into(), json!(d99 - m99));
    Ok(out)
}

/// ns on CPU of the threads under `tasks` (a `/proc/PID/task` directory),
/// summed by thread name (each thread's `schedstat` run time).
fn threads_cpu_ns(tasks: &str) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).map(|c| c.trim_end().to_string()).unwrap_or_default();
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            *by.entry(name).or_insert(0) += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    by
}

/// ns on CPU of this process's threads named `name`: the in-process echo
/// servers' cost, measured the way the engine's is.
fn own_threads_cpu_ns(name: &str) -> u64 {
    threads_cpu_ns("/proc/self/task").get(name).copied().unwrap_or(0)
}

/// The recovery figures alone (`--recovery-only`), or added to the rest.
fn recovery_parts(a: &Args, runs: usize, secs: f64, io_poll: &str, engine_poll: &str) -> Result<Map<String, Value>> {
    let part = |p: &str| a.only.as_deref().is_none_or(|o| o == p);
    let mut out = if part("durability") { durability_part(a, runs, secs, io_poll, engine_poll)? } else { Map::new() };
    let parent = a.data_parent.as_deref();
    if part("restart") {
        let commands = if a.quick { 300_000 } else { 2_000_000 };
        for (k, v) in crate::recovery::recovery_speed(parent, commands, runs, a.engine_core)?.as_object().expect("object") {
            out.insert(k.clone(), v.clone());
        }
    }
    if part("replay") {
        let orders = if a.quick { 200_000 } else { 1_000_000 };
        for (k, v) in crate::recovery::replay_speed(parent, orders, runs.min(3), a.engine_core, a.client_core)?.as_object().expect("object")
        {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

pub fn run(a: &Args) -> Result<Value> {
    let runs = a.runs.unwrap_or(if a.quick { 3 } else { 5 });
    let lat_secs = if a.quick { 1.0 } else { 3.0 };
    let sustain_secs = if a.quick { 2.0 } else { 10.0 };
    let spin = a.poll == PollArg::Spin;
    let engine_poll = if spin { "spin" } else { "park" };
    // A spinning I/O shard on the load generator's core would starve it.
    let io_poll = if spin && a.io_core != a.client_core { "spin" } else { "park" };
    let layout = format!(
        "client core {}, io shard core {} ({io_poll}), engine shard core {} ({engine_poll}); baseline echo on core {} ({engine_poll})",
        a.client_core, a.io_core, a.engine_core, a.io_core
    );
    println!("otedama bench gateway{}: {layout}", if a.quick { " --quick" } else { "" });
    if a.recovery_only {
        let stall = StallMeter::start(Some(a.engine_core), Duration::from_millis(1));
        let mut out = recovery_parts(a, runs, lat_secs, io_poll, engine_poll)?;
        let stalls = stall.stop();
        println!("  stall meter on core {}: p99 {:.0} µs, max {:.0} µs", a.engine_core, stalls.p99_us, stalls.max_us);
        out.insert("bench".into(), json!("gateway"));
        out.insert("recovery_only".into(), json!(true));
        out.insert("quick".into(), json!(a.quick));
        out.insert("runs".into(), json!(runs));
        out.insert("stall_p99_us".into(), json!(stalls.p99_us));
        out.insert("stall_max_us".into(), json!(stalls.max_us));
        out.insert("cores_layout".into(), json!(layout));
        return Ok(Value::Object(out));
    }
    println!(
        "  {runs} latency runs of {lat_secs} s at {} orders/s offered, one session, IOC orders (ack-on-match, journal policy none)",
        a.rate
    );

    let dir = match &a.data_parent {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    };
    println!("  engine data directory {} (journal on {})", dir.path().display(), fs_type(dir.path()));
    let mut ks = KeyStore::default();
    let admin_key = ks.add(0, true, "bench admin")?;
    let traders: Vec<_> = (1..=a.sessions.max(1) as u32).map(|acct| ks.add(acct, false, "bench")).collect::<Result<_, _>>()?;
    ks.save(&otedama_net::keys::path_in(dir.path()))?;
    let engine = EngineProc::start(dir.path(), (a.io_core, a.engine_core), io_poll, engine_poll, "none")?;
    setup(engine.addr, (admin_key.id, admin_key.secret), traders.len() as u32)?;
    // The engine shard's own busy time per order (EngineStats over an admin
    // session, quiet between readings): what one engine core spends per
    // order once the I/O shards have cores of their own.
    let quiet = otedama_net::client::LoginOptions { next_seq: 0, flags: 0, heartbeat_ms: 60_000 };
    let mut stats = Client::login_with(engine.addr, admin_key.id, admin_key.secret, quiet)?;
    let (echo_addr, echo_stop) = loadgen::echo_server(Some(a.io_core), spin)?;

    let stall = StallMeter::start(Some(a.engine_core), Duration::from_millis(1));
    let mut v: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let spec = |addr, keys: Vec<(u64, [u8; 32])>, raw, rate: f64, secs: f64, mix| LoadSpec {
        addr,
        keys,
        raw_sessions: raw,
        rate,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::from_millis(200),
        mix,
        instrument: 1,
        core: Some(a.client_core),
        flags: 0,
    };
    let mut hs = (harness::histogram(), harness::histogram());
    let by_thread0 = engine.cpu_ns_by_thread();
    let mut latency_orders = 0u64;
    let mut cpu_per_order = Vec::new();
    let mut base_cpu_per_order = Vec::new();
    for run in 0..runs {
        // One session per run: each login is a new session name, so the
        // client_seq space starts fresh.
        let t = &traders[run % traders.len()];
        stats.engine_stats(true)?;
        let cpu0 = engine.cpu_ns();
        let r = loadgen::run(&spec(engine.addr, vec![(t.id, t.secret)], 0, a.rate as f64, lat_secs, Mix::Ioc))?;
        let cpu = engine.cpu_ns() - cpu0;
        let st = stats.engine_stats(true)?;
        let busy_per_order = st.busy_ns as f64 / st.count.max(1) as f64;
        v.entry("engine_busy").or_default().push(busy_per_order);
        v.entry("engine_service_p50").or_default().push(st.p50_ns as f64);
        anyhow::ensure!(r.missing == 0 && r.throttled == 0 && r.rejected == 0, "engine run lost answers: {r:?}");
        let done0 = loadgen::ECHO_THREADS_DONE.load(std::sync::atomic::Ordering::Acquire);
        let bcpu0 = loadgen::ECHO_CPU_NS.load(std::sync::atomic::Ordering::Acquire);
        let b = loadgen::run(&spec(echo_addr, vec![], 1, a.rate as f64, lat_secs, Mix::Ioc))?;
        // The run's one connection thread adds its CPU when it ends.
        let bcpu = loadgen::echo_cpu_after(done0 + 1) - bcpu0;
        cpu_per_order.push(cpu as f64 / r.sent as f64);
        latency_orders += r.sent;
        base_cpu_per_order.push(bcpu as f64 / b.sent.max(1) as f64);
        for (key, h) in [("rtt", &r.rtt), ("base", &b.rtt)] {
            v.entry(if key == "rtt" { "rtt_p50" } else { "base_p50" }).or_default().push(h.value_at_quantile(0.5) as f64 / 1e3);
            v.entry(if key == "rtt" { "rtt_p99" } else { "base_p99" }).or_default().push(h.value_at_quantile(0.99) as f64 / 1e3);
            v.entry(if key == "rtt" { "rtt_p9999" } else { "base_p9999" }).or_default().push(h.value_at_quantile(0.9999) as f64 / 1e3);
        }
        println!(
            "  run {}: engine p50 {:.1} p99 {:.1} p99.99 {:.1} µs | echo p50 {:.1} p99 {:.1} p99.99 {:.1} µs | engine CPU {:.0} ns/order (engine shard busy {:.0}), echo {:.0} ns/order | sender lag max {:.0} µs",
            run + 1,
            r.rtt.value_at_quantile(0.5) as f64 / 1e3,
            r.rtt.value_at_quantile(0.99) as f64 / 1e3,
            r.rtt.value_at_quantile(0.9999) as f64 / 1e3,
            b.rtt.value_at_quantile(0.5) as f64 / 1e3,
            b.rtt.value_at_quantile(0.99) as f64 / 1e3,
            b.rtt.value_at_quantile(0.9999) as f64 / 1e3,
            cpu as f64 / r.sent as f64,
            busy_per_order,
            base_cpu_per_order[run],
            r.sender_lag_max_us
        );
        hs.0.add(&r.rtt).ok();
        hs.1.add(&b.rtt).ok();
    }
    // Where the engine process's CPU went over those runs, by thread
    // (the echo runs in between cost the engine only its idle timers).
    let split: Vec<String> = engine
        .cpu_ns_by_thread()
        .into_iter()
        .map(|(name, ns)| (name.clone(), ns.saturating_sub(by_thread0.get(&name).copied().unwrap_or(0))))
        .filter(|(_, ns)| *ns > 0)
        .map(|(name, ns)| format!("{name} {:.0}", ns as f64 / latency_orders.max(1) as f64))
        .collect();
    println!("  engine CPU by thread over the latency runs, ns per order: {}", split.join(", "));
    // The same echo on tokio (current thread) and glommio, same core, same
    // load: what the runtime alone costs (ARCHITECTURE.md, the runtime choice).
    let tokio_addr = crate::runtimes::tokio_echo(Some(a.io_core))?;
    let glommio_addr = crate::runtimes::glommio_echo(a.io_core)?;
    let uring_addr = crate::runtimes::io_uring_echo(Some(a.io_core))?;
    for run in 0..runs {
        let mut line = format!("  runtimes run {}:", run + 1);
        for (name, addr) in [("tokio", tokio_addr), ("glommio", glommio_addr), ("io_uring", uring_addr)] {
            let thread = match name {
                "tokio" => Some("tokio-echo"),
                "io_uring" => Some("uring-echo"),
                _ => None,
            };
            let c0 = thread.map(own_threads_cpu_ns);
            let r = loadgen::run(&spec(addr, vec![], 1, a.rate as f64, lat_secs, Mix::Ioc))?;
            if let (Some(t), Some(c0)) = (thread, c0) {
                v.entry(if name == "tokio" { "tokio_cpu" } else { "uring_cpu" })
                    .or_default()
                    .push((own_threads_cpu_ns(t) - c0) as f64 / r.sent.max(1) as f64);
            }
            let (p50, p99) = (r.rtt.value_at_quantile(0.5) as f64 / 1e3, r.rtt.value_at_quantile(0.99) as f64 / 1e3);
            let (k50, k99) = match name {
                "tokio" => ("tokio_p50", "tokio_p99"),
                "glommio" => ("glommio_p50", "glommio_p99"),
                _ => ("uring_p50", "uring_p99"),
            };
            v.entry(k50).or_default().push(p50);
            v.entry(k99).or_default().push(p99);
            line.push_str(&format!(" {name} echo p50 {p50:.1} p99 {p99:.1} µs |"));
        }
        println!("{}", line.trim_end_matches(" |"));
    }
    harness::print_histogram("engine NewOrder→Accepted (all runs)", &hs.0, 1e3, "µs");
    harness::print_histogram("plain TCP echo (all runs)", &hs.1, 1e3, "µs");

    // Sustained: the highest offered rate whose p99 stays under 1 ms for
    // the whole run, all sessions together.
    println!("  throughput search: {} sessions, {sustain_secs} s per step, p99 < 1 ms and every order answered", traders.len());
    let keys: Vec<(u64, [u8; 32])> = traders.iter().map(|t| (t.id, t.secret)).collect();
    let mut best = 0u64;
    let mut best_cpu = 0.0;
    let mut best_busy = 0.0;
    let mut base_best = 0u64;
    let (mut engine_ok, mut base_ok) = (true, true);
    // Every step is a new set of logins: a session name carries its
    // client_seq on, so each step logs in with fresh keys, added live (the
    // engine re-reads the key store when it changes).
    let mut step_keys = keys;
    for rate in [50_000u64, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000, 1_500_000, 2_000_000] {
        // `cpu`: the engine process's CPU and the engine shard's busy time
        // per order over the step.
        let passes = |r: &Result<loadgen::LoadResult>, who: &str, cpu: Option<(u64, f64)>| match r {
            Ok(r) => {
                let p99 = r.rtt.value_at_quantile(0.99) as f64 / 1e3;
                println!(
                    "    {who:<6} {rate:>9} orders/s offered: {:.0}/s answered, p50 {:.1} µs, p99 {:.1} µs{}",
                    r.accepted as f64 / r.seconds,
                    r.rtt.value_at_quantile(0.5) as f64 / 1e3,
                    p99,
                    cpu.map(|(c, busy)| format!(
                        ", engine CPU {:.0} ns/order (engine shard busy {busy:.0})",
                        c as f64 / r.sent.max(1) as f64
                    ))
                    .unwrap_or_default()
                );
                r.missing == 0 && r.throttled == 0 && r.rejected == 0 && p99 < 1000.0
            }
            Err(e) => {
                println!("    {who:<6} {rate:>9} orders/s offered: failed: {e:#}");
                false
            }
        };
        if engine_ok {
            stats.engine_stats(true)?;
            let cpu0 = engine.cpu_ns();
            let r = loadgen::run(&spec(engine.addr, step_keys.clone(), 0, rate as f64, sustain_secs, Mix::Ioc));
            let cpu = engine.cpu_ns() - cpu0;
            let st = stats.engine_stats(true)?;
            let busy = st.busy_ns as f64 / st.count.max(1) as f64;
            engine_ok = passes(&r, "engine", Some((cpu, busy)));
            if engine_ok {
                best = rate;
                best_cpu = cpu as f64 / r.as_ref().map(|r| r.sent).unwrap_or(1) as f64;
                best_busy = busy;
                step_keys = (0..step_keys.len())
                    .map(|i| {
                        let path = otedama_net::keys::path_in(dir.path());
                        let mut ks = KeyStore::load(&path)?;
                        let k = ks.add((i % traders.len()) as u32 + 1, false, "bench step")?;
                        ks.save(&path)?;
                        Ok((k.id, k.secret))
                    })
                    .collect::<Result<_, otedama_net::keys::KeyError>>()?;
            }
        }
        // The echo at the same rate: where the host and the load generator
        // themselves give out.
        if base_ok {
            let r = loadgen::run(&spec(echo_addr, vec![], step_keys.len(), rate as f64, sustain_secs, Mix::Ioc));
            base_ok = passes(&r, "echo", None);
            if base_ok {
                base_best = rate;
            }
        }
        if !engine_ok && !base_ok {
            break;
        }
    }
    echo_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(stats);
    engine.stop()?;
    let recovery = recovery_parts(a, runs, lat_secs, io_poll, engine_poll)?;
    let stalls = stall.stop();

    let m = |k: &str| median_spread(v.get(k).map(Vec::as_slice).unwrap_or(&[]));
    let (p50, _) = m("rtt_p50");
    let (p99, p99s) = m("rtt_p99");
    let (p9999, p9999s) = m("rtt_p9999");
    let (b50, _) = m("base_p50");
    let (b99, _) = m("base_p99");
    let (cpu_med, _) = median_spread(&cpu_per_order);
    let (base_cpu_med, _) = median_spread(&base_cpu_per_order);
    let (t50, _) = m("tokio_p50");
    let (t99, _) = m("tokio_p99");
    let (g50, _) = m("glommio_p50");
    let (g99, _) = m("glommio_p99");
    let (u50, _) = m("uring_p50");
    let (u99, _) = m("uring_p99");
    let (tcpu, _) = m("tokio_cpu");
    let (ucpu, _) = m("uring_cpu");
    let (busy, busy_s) = m("engine_busy");
    let (svc50, _) = m("engine_service_p50");
    println!(
        "  runtimes (the same echo, same core, same load; medians): std threads p50 {b50:.1} / p99 {b99:.1} µs, tokio {t50:.1} / {t99:.1} µs, glommio {g50:.1} / {g99:.1} µs, raw io_uring {u50:.1} / {u99:.1} µs; the io_uring gateway with the engine {p50:.1} / {p99:.1} µs"
    );
    println!(
        "  server CPU per order at {} orders/s (medians): the gateway with the engine {cpu_med:.0} ns, std-threads echo {base_cpu_med:.0} ns, tokio echo {tcpu:.0} ns, raw io_uring echo {ucpu:.0} ns",
        a.rate
    );
    println!(
        "  engine shard busy time per order at {} orders/s (median [spread]): {busy:.0} [{busy_s:.0}] ns, service p50 {svc50:.0} ns: {:.2} M orders/s per engine core",
        a.rate,
        1e3 / busy
    );
    println!(
        "  medians: engine p50 {p50:.1} µs, p99 {p99:.1} µs, p99.99 {p9999:.1} µs | echo p50 {b50:.1} µs, p99 {b99:.1} µs | ratio p50 {:.2}×, p99 {:.2}×",
        p50 / b50,
        p99 / b99
    );
    println!(
        "  sustained {best} orders/s (the plain echo: {base_best}/s); engine CPU {cpu_med:.0} ns/order at {} orders/s (the plain echo: {base_cpu_med:.0}), {best_cpu:.0} ns/order at {best}/s",
        a.rate
    );
    println!("  stall meter on core {}: p99 {:.0} µs, max {:.0} µs", a.engine_core, stalls.p99_us, stalls.max_us);
    let mut out = Map::new();
    out.insert("bench".into(), json!("gateway"));
    out.insert("quick".into(), json!(a.quick));
    out.insert("runs".into(), json!(runs));
    out.insert("offered_rate".into(), json!(a.rate));
    out.insert("rtt_p50_us".into(), json!(p50));
    out.insert("rtt_p99_us".into(), json!(p99));
    out.insert("rtt_p99_us_spread".into(), json!(p99s));
    out.insert("rtt_p9999_us".into(), json!(p9999));
    out.insert("rtt_p9999_us_spread".into(), json!(p9999s));
    out.insert("baseline_rtt_p50_us".into(), json!(b50));
    out.insert("baseline_rtt_p99_us".into(), json!(b99));
    out.insert("p50_ratio".into(), json!(p50 / b50));
    out.insert("p99_ratio".into(), json!(p99 / b99));
    out.insert("runtime_echo_std_p50_us".into(), json!(b50));
    out.insert("runtime_echo_std_p99_us".into(), json!(b99));
    out.insert("runtime_echo_tokio_p50_us".into(), json!(t50));
    out.insert("runtime_echo_tokio_p99_us".into(), json!(t99));
    out.insert("runtime_echo_glommio_p50_us".into(), json!(g50));
    out.insert("runtime_echo_glommio_p99_us".into(), json!(g99));
    out.insert("runtime_echo_io_uring_p50_us".into(), json!(u50));
    out.insert("runtime_echo_io_uring_p99_us".into(), json!(u99));
    out.insert("orders_per_sec_max".into(), json!(best));
    out.insert("baseline_orders_per_sec_max".into(), json!(base_best));
    out.insert("server_cpu_ns_per_order".into(), json!(cpu_med));
    out.insert("baseline_cpu_ns_per_order".into(), json!(base_cpu_med));
    out.insert("runtime_echo_tokio_cpu_ns_per_order".into(), json!(tcpu));
    out.insert("runtime_echo_io_uring_cpu_ns_per_order".into(), json!(ucpu));
    out.insert("server_cpu_ns_per_order_at_max".into(), json!(best_cpu));
    out.insert("engine_shard_ns_per_order".into(), json!(busy));
    out.insert("engine_shard_ns_per_order_spread".into(), json!(busy_s));
    out.insert("engine_service_p50_ns".into(), json!(svc50));
    out.insert("engine_orders_per_sec_per_core".into(), json!(1e9 / busy));
    out.insert("engine_shard_ns_per_order_at_max".into(), json!(best_busy));
    out.insert("stall_p99_us".into(), json!(stalls.p99_us));
    out.insert("stall_max_us".into(), json!(stalls.max_us));
    out.insert("cores_layout".into(), json!(layout));
    out.insert("journal_fs".into(), json!(fs_type(dir.path())));
    out.extend(recovery);
    out.insert("machine".into(), harness::machine());
    let v = Value::Object(out);
    println!("{v}");
    Ok(v)
}

/// The filesystem type holding `p` (from /proc/mounts: the longest mount
/// point that prefixes it).
fn fs_type(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && p.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max()
        .map(|(_, t)| t)
        .unwrap_or_else(|| "unknown".into())
}
