//! `otedama bench api`: the cold path under load.
//!
//! - **Order book GETs**: `GET /api/v1/dex/orderbook/BENCH-USD?depth=50`
//!   of a book with 1,000 levels a side, from `concurrency` keep-alive
//!   connections each sending its next request when the answer arrives
//!   (a fixed concurrency), for `seconds`, while a writer on the other
//!   core changes the book `--book-updates-per-sec` times a second (the
//!   API tails those changes as it serves). The API's HTTP thread and the
//!   load generator share one core.
//!   Baseline, same run, same layout: an axum handler on the same runtime
//!   and core answering the same bytes from memory (the book's answer
//!   captured once), so the ratio is what building the answer costs.
//! - **Projection**: journals of a random exchange workload and of shares
//!   (two shards) projected into an empty SQLite file and an empty
//!   PostgreSQL database (a throwaway server unless `--postgres-url`):
//!   rows committed per second.
//!
//! - **The engine beside a saturated API**: `otedama engine` (order entry
//!   only, both shards on the engine core) takes IOC orders at a fixed
//!   rate from a load generator on the API's core; its service-time
//!   histogram (read over the admin protocol, EngineStats) is compared with
//!   the API idle and with the API tailing that engine's journal and
//!   answering order book GETs as fast as it can.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use otedama_api::projection::{Projection, ProjectionConfig, sqlite_url};
use otedama_api::server::{Api, ApiConfig};
use otedama_engine::workload::{self, Mix, Workload};
use otedama_engine::{AccountId, Command, CommandKind, Exchange, InstrumentId, OrderType, Side, TimeInForce};
use otedama_journal::{Durability, Journal, Options, kinds};
use otedama_net::sequencer::Sequencer;
use serde_json::{Value, json};

use crate::harness::{self, StallMeter, histogram, median_spread, pin, print_histogram, process_cpu_ns};
use crate::loadgen::{self, LoadSpec, Mix as OrderMix};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// A shorter run (1 s per load run, 3 runs, smaller projections).
    #[arg(long)]
    pub quick: bool,
    /// Runs of each load (medians are taken over them).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Core of the API's HTTP thread and of the load generator.
    #[arg(long, default_value_t = 0)]
    pub api_core: usize,
    /// The other core (the stall meter runs there).
    #[arg(long, default_value_t = 1)]
    pub engine_core: usize,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds per load run.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Price levels per side of the book.
    #[arg(long, default_value_t = 1000)]
    pub levels: i64,
    /// Levels per side asked for.
    #[arg(long, default_value_t = 50)]
    pub depth: usize,
    /// PostgreSQL to project into (its tables are emptied); default: a
    /// throwaway server.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Commands (and shares) in the projection's journals.
    #[arg(long)]
    pub projection_records: Option<usize>,
    /// Changes per second made to the book while it is being read (an
    /// order added at a random level, then canceled), on the engine core.
    #[arg(long, default_value_t = 1000.0)]
    pub book_updates_per_sec: f64,
    /// Orders per second offered to the engine in the interference runs.
    #[arg(long, default_value_t = 20_000.0)]
    pub order_rate: f64,
}

fn journal_opts() -> Options {
    Options { durability: Durability::None, segment_bytes: 64 << 20, ..Options::default() }
}

/// An exchange journal whose book has `levels` one-order levels a side;
/// the sequencer stays open for the book's updates.
fn book_journal(dir: &Path, levels: i64) -> Result<(u64, Sequencer, i64)> {
    let w = Workload::new(Mix::ExchangeCore, 1);
    let mut setup = w.setup();
    let CommandKind::AddInstrument { spec } = &mut setup[0].kind else { bail!("the workload's setup starts with its instrument") };
    spec.symbol = *b"BENCH-USD\0\0\0\0\0\0\0";
    let (id, mid) = (spec.id, (spec.min_price + spec.max_price) / 2);
    anyhow::ensure!(levels < (spec.max_price - spec.min_price) / 2, "--levels beyond the instrument's band");
    let mut sq = Sequencer::new(Exchange::new(workload::limits()), Journal::open(dir, journal_opts())?);
    for c in &setup {
        sq.submit(c)?;
    }
    for l in 1..=levels {
        for (account, side, price) in [(0, Side::Buy, mid - l), (1, Side::Sell, mid + l)] {
            let c = Command {
                ts: 1,
                kind: CommandKind::NewOrder {
                    account: AccountId(account),
                    instrument: InstrumentId(id.0),
                    side,
                    qty: 10,
                    order: OrderType::Limit { price, tif: TimeInForce::Gtc },
                },
            };
            sq.submit(&c)?;
        }
    }
    sq.journal().sync()?;
    let end = sq.journal().published_seq();
    Ok((end, sq, mid))
}

/// Changes the book `per_sec` times a second (a one-lot order added at a
/// random level, then canceled: two changes) on `core` until `stop`;
/// returns the changes made.
fn update_book(
    mut sq: Sequencer,
    mid: i64,
    levels: i64,
    per_sec: f64,
    core: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<(u64, f64)>> {
    std::thread::spawn(move || {
        pin(core);
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut added: Option<otedama_engine::OrderId> = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let due = t0 + Duration::from_secs_f64(n as f64 / per_sec);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
            let kind = match added.take() {
                Some(order) => CommandKind::Cancel { account: AccountId(0), order, qty: 0 },
                None => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let l = 1 + (x % levels as u64) as i64;
                    CommandKind::NewOrder {
                        account: AccountId(0),
                        instrument: InstrumentId(0),
                        side: Side::Buy,
                        qty: 1,
                        order: OrderType::Limit { price: mid - l, tif: TimeInForce::Gtc },
                    }
                }
            };
            let (_, events) = sq.submit(&Command { ts: 2, kind })?;
            if let Some(otedama_engine::Event::Accepted { order, .. }) = events.first() {
                added = Some(*order);
            }
            n += 1;
        }
        let secs = t0.elapsed().as_secs_f64();
        sq.into_parts().1.close()?;
        Ok((n, n as f64 / secs))
    })
}

/// The API on the journals of data directory `data`, pinned to `core`,
/// without a database, an engine session or a rate limit.
fn start_api(data: &Path, core: usize) -> Result<Api> {
    Ok(Api::start(ApiConfig {
        listen: "127.0.0.1:0".parse()?,
        exchange_journal: data.join("exchange"),
        pool_dir: data.join("pool"),
        database_url: None,
        rebuild: false,
        rate_per_sec: 1e12,
        rate_burst: 1e12,
        core: Some(core),
        engine: None,
        tape_max: 0,
    })?)
}

/// One keep-alive HTTP/1.1 exchange: sends `req`, reads one whole answer
/// (headers, then `Content-Length` bytes). Returns the status.
async fn round_trip(s: &mut tokio::net::TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buf[..h])?;
        let status: u16 = head.get(9..12).unwrap_or("").parse()?;
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
            .context("no content-length")?
            .parse()?;
        while buf.len() < h + 4 + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection mid-answer");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

struct LoadRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: f64,
    errors: u64,
    hist: hdrhistogram::Histogram<u64>,
}

/// `concurrency` connections each with one request in flight, for
/// `seconds`, on a tokio current-thread runtime pinned to `core`.
fn load(addr: SocketAddr, path: &str, concurrency: usize, seconds: f64, core: usize) -> Result<LoadRun> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
    let run = std::thread::Builder::new().name("api-load".into()).spawn(move || -> Result<LoadRun> {
        pin(core);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut tasks = Vec::new();
            let cpu0 = process_cpu_ns();
            let t0 = Instant::now();
            for _ in 0..concurrency {
                let req = req.clone();
                tasks.push(tokio::spawn(async move {
                    let mut h = histogram();
                    let mut errors = 0u64;
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    let mut buf = Vec::with_capacity(64 << 10);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let status = round_trip(&mut s, &req, &mut buf).await?;
                        let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
                        errors += (status != 200) as u64;
                    }
                    anyhow::Ok((h, errors))
                }));
            }
            let mut all = histogram();
            let mut errors = 0;
            for t in tasks {
                let (h, e) = t.await??;
                all.add(&h)?;
                errors += e;
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu = process_cpu_ns() - cpu0;
            let n = all.len();
            Ok(LoadRun {
                rps: n as f64 / secs,
                p50_ms: all.value_at_quantile(0.5) as f64 / 1e6,
                p99_ms: all.value_at_quantile(0.99) as f64 / 1e6,
                cpu_us_per_req: cpu as f64 / 1e3 / n.max(1) as f64,
                errors,
                hist: all,
            })
        })
    })?;
    run.join().map_err(|_| anyhow::anyhow!("load generator panicked"))?
}

/// The baseline: an axum handler answering `body` from memory, on a
/// current-thread runtime pinned to `core`.
fn constant_server(body: bytes_body::Body, core: usize) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    l.set_nonblocking(true)?;
    let addr = l.local_addr()?;
    std::thread::Builder::new().name("api-baseline".into()).spawn(move || {
        pin(core);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            let app = axum::Router::new().route(
                "/api/v1/dex/orderbook/{symbol}",
                axum::routing::get(move || {
                    let b = body.clone();
                    async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b.0) }
                }),
            );
            let _ = axum::serve(l, app).await;
        });
    })?;
    Ok(addr)
}

mod bytes_body {
    /// The captured answer (cheap to clone: shared bytes).
    #[derive(Clone)]
    pub struct Body(pub axum::body::Bytes);
}

fn get_once(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let h = out.windows(4).position(|w| w == b"\r\n\r\n").context("no header end")?;
    let status = std::str::from_utf8(&out[9..12])?.parse()?;
    Ok((status, out[h + 4..].to_vec()))
}

/// Journals of `n` random exchange commands and `n` shares over two shard
/// journals, for the projection runs.
fn projection_journals(dir: &Path, n: usize) -> Result<()> {
    let mut w = Workload::new(Mix::ExchangeCore, 7);
    let mut sq = Sequencer::new(Exchange::new(workload::limits()), Journal::open(dir.join("exchange"), journal_opts())?);
    for c in w.setup() {
        sq.submit(&c)?;
    }
    let mut ev = Vec::new();
    for _ in 0..n {
        let c = w.next_command();
        let (_, events) = sq.submit(&c)?;
        ev.clear();
        ev.extend_from_slice(events);
        w.observe(&ev);
    }
    sq.into_parts().1.close()?;
    let mut shards: Vec<Journal> =
        (0..2).map(|i| Journal::open(dir.join(format!("pool/shares-{i}")), journal_opts())).collect::<Result<_, _>>()?;
    let t0 = otedama_journal::now_ns() - n as u64 * 1_000_000;
    let target = otedama_hashers::Target::from_compact(0x1e0fffff)?;
    let net = otedama_hashers::Target::from_compact(0x1b0404cb)?;
    for k in 0..n as u64 {
        let address = format!("ltc1qminer{:04}", k % 2_000);
        let rec = otedama_engine::stratum::record::ShareRecord {
            job: k / 1000,
            height: 1,
            share_target: target,
            network_target: net,
            work: otedama_engine::stratum::record::work_of(target),
            time: (t0 / 1_000_000_000) as u32,
            block: false,
            worker: format!("{address}.rig{}", k % 4),
            address,
        };
        shards[(k % 2) as usize].append(kinds::SHARE, 1, t0 + k * 1_000_000, &rec.encode())?;
    }
    for j in shards {
        j.close()?;
    }
    Ok(())
}

/// Projects `dir`'s journals into `url` from empty; rows per second and
/// this process's CPU time per row.
fn project(dir: &Path, url: &str, want_exchange: u64) -> Result<(f64, u64, f64)> {
    let cpu0 = process_cpu_ns();
    let t = Instant::now();
    let p = Projection::start(ProjectionConfig {
        database_url: url.to_string(),
        exchange_journal: dir.join("exchange"),
        pool_dir: dir.join("pool"),
        rebuild: true,
        batch_rows: 20_000,
    })?;
    loop {
        let s = p.status();
        if s.positions.get("exchange") == Some(&want_exchange) && s.lag_records == 0 && s.batches > 0 {
            let secs = t.elapsed().as_secs_f64();
            let cpu = (process_cpu_ns() - cpu0) as f64;
            p.stop();
            return Ok((s.rows as f64 / secs, s.rows, cpu / 1e3 / s.rows.max(1) as f64));
        }
        if let Some(e) = &s.error
            && !s.connected
            && t.elapsed() > Duration::from_secs(30)
        {
            bail!("projection into {} failed: {e}", otedama_api::projection::redact(url));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(a: &Args) -> Result<Value> {
    let runs = a.runs.unwrap_or(if a.quick { 3 } else { 5 });
    let seconds = a.seconds.unwrap_or(if a.quick { 1.0 } else { 3.0 });
    let records = a.projection_records.unwrap_or(if a.quick { 50_000 } else { 200_000 });
    let tmp = tempfile::tempdir()?;
    println!(
        "otedama bench api{}: {runs} runs × {seconds} s, {} connections, book of {} levels a side, depth {}; API and load on core {}, stall meter on core {}",
        if a.quick { " --quick" } else { "" },
        a.concurrency,
        a.levels,
        a.depth,
        a.api_core,
        a.engine_core
    );
    let (end, book_sq, mid) = book_journal(&tmp.path().join("book/exchange"), a.levels)?;
    let api = start_api(&tmp.path().join("book"), a.api_core)?;
    let path = format!("/api/v1/dex/orderbook/BENCH-USD?depth={}", a.depth);
    let t = Instant::now();
    let body = loop {
        let (status, body) = get_once(api.local_addr(), &path)?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && v["seq"].as_u64() == Some(end) {
            anyhow::ensure!(v["bids"].as_array().map(Vec::len) == Some(a.depth.min(a.levels as usize)), "the book's answer: {v}");
            break body;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the API never loaded the book: {status} {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("  answer: {} bytes", body.len());
    anyhow::ensure!(a.book_updates_per_sec > 0.0, "--book-updates-per-sec must be above 0");
    let baseline = constant_server(bytes_body::Body(body.clone().into()), a.api_core)?;
    let (status, same) = get_once(baseline, &path)?;
    anyhow::ensure!(status == 200 && same == body, "the baseline answers other bytes");

    let stalls = StallMeter::start(Some(a.engine_core), Duration::from_millis(1));
    let stop_updates = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let updater = update_book(book_sq, mid, a.levels, a.book_updates_per_sec, a.engine_core, stop_updates.clone());
    let (mut api_runs, mut base_runs) = (Vec::new(), Vec::new());
    for r in 0..runs {
        // Alternate which goes first, so drift hits both alike.
        let order: [bool; 2] = if r % 2 == 0 { [true, false] } else { [false, true] };
        for is_api in order {
            let addr = if is_api { api.local_addr() } else { baseline };
            let run = load(addr, &path, a.concurrency, seconds, a.api_core)?;
            anyhow::ensure!(run.errors == 0, "{} answered {} errors", if is_api { "the API" } else { "the baseline" }, run.errors);
            println!(
                "  run {r} {:<8} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  CPU {:.1} µs/req",
                if is_api { "api" } else { "baseline" },
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.cpu_us_per_req
            );
            if is_api { api_runs.push(run) } else { base_runs.push(run) }
        }
    }
    stop_updates.store(true, std::sync::atomic::Ordering::Relaxed);
    let (updates, update_rate) = updater.join().map_err(|_| anyhow::anyhow!("book updater panicked"))??;
    println!("  book changes during the GET runs: {updates} ({update_rate:.0}/s, on core {})", a.engine_core);
    let stalls = stalls.stop();
    if let Some(last) = api_runs.last() {
        print_histogram("api GET orderbook (last run)", &last.hist, 1e6, "ms");
    }
    if let Some(last) = base_runs.last() {
        print_histogram("baseline constant (last run)", &last.hist, 1e6, "ms");
    }
    let med = |v: &[LoadRun], f: fn(&LoadRun) -> f64| median_spread(&v.iter().map(f).collect::<Vec<_>>());
    let (api_rps, api_rps_spread) = med(&api_runs, |r| r.rps);
    let (api_p99, api_p99_spread) = med(&api_runs, |r| r.p99_ms);
    let (api_p50, _) = med(&api_runs, |r| r.p50_ms);
    let (api_cpu, _) = med(&api_runs, |r| r.cpu_us_per_req);
    let (base_rps, base_rps_spread) = med(&base_runs, |r| r.rps);
    let (base_p99, base_p99_spread) = med(&base_runs, |r| r.p99_ms);
    let (base_cpu, _) = med(&base_runs, |r| r.cpu_us_per_req);
    api.stop()?;
    println!(
        "  GET orderbook: {api_rps:.0} req/s (spread {api_rps_spread:.0}), p99 {api_p99:.3} ms (spread {api_p99_spread:.3}); baseline {base_rps:.0} req/s, p99 {base_p99:.3} ms; ratio {:.3}",
        api_rps / base_rps
    );
    println!("  stall meter (core {}): p99 {:.0} µs, max {:.0} µs", a.engine_core, stalls.p99_us, stalls.max_us);

    // The engine's service time with the API idle and saturated.
    let (idle_p99, loaded_p99, idle_spread, loaded_spread) = interference(a, runs, seconds, &tmp.path().join("engine"))?;

    // Projection.
    let pdir = tmp.path().join("proj");
    projection_journals(&pdir, records)?;
    let exchange_end = otedama_journal::Reader::open(pdir.join("exchange"), 1, Default::default())?.published_seq();
    let mut sqlite = Vec::new();
    let mut pg_rates = Vec::new();
    let mut rows = 0;
    let scratch;
    let pg_url = match &a.postgres_url {
        Some(u) => Some(u.clone()),
        None => {
            scratch = otedama_api::scratch_pg::Pg::start();
            scratch.as_ref().map(|p| p.url())
        }
    };
    let prun = if a.quick { 1 } else { 3 };
    for r in 0..prun {
        let (rate, n, cpu) = project(&pdir, &sqlite_url(&pdir.join(format!("p{r}.db"))), exchange_end)?;
        println!("  projection run {r} sqlite:   {rate:>9.0} rows/s ({n} rows, CPU {cpu:.2} µs/row)");
        sqlite.push(rate);
        rows = n;
        if let Some(url) = &pg_url {
            let (rate, n, cpu) = project(&pdir, url, exchange_end)?;
            println!("  projection run {r} postgres: {rate:>9.0} rows/s ({n} rows, CPU {cpu:.2} µs/row in this process)");
            pg_rates.push(rate);
        }
    }
    let (sqlite_rate, sqlite_spread) = median_spread(&sqlite);
    let (pg_rate, pg_spread) = median_spread(&pg_rates);
    let out = json!({
        "bench": "api",
        "quick": a.quick,
        "runs": runs,
        "seconds": seconds,
        "concurrency": a.concurrency,
        "levels": a.levels,
        "depth": a.depth,
        "answer_bytes": body.len(),
        "book_updates_per_sec": update_rate,
        "orderbook_get_rps": api_rps,
        "orderbook_get_rps_spread": api_rps_spread,
        "orderbook_get_p50_ms": api_p50,
        "orderbook_get_p99_ms": api_p99,
        "orderbook_get_p99_ms_spread": api_p99_spread,
        "orderbook_cpu_us_per_get": api_cpu,
        "baseline_rps": base_rps,
        "baseline_rps_spread": base_rps_spread,
        "baseline_p99_ms": base_p99,
        "baseline_p99_ms_spread": base_p99_spread,
        "baseline_cpu_us_per_get": base_cpu,
        "orderbook_vs_baseline": api_rps / base_rps,
        "projection_rows": rows,
        "projection_rows_per_sec": {"sqlite": sqlite_rate, "sqlite_spread": sqlite_spread,
            "postgres": if pg_url.is_some() { json!(pg_rate) } else { Value::Null }, "postgres_spread": pg_spread},
        "engine_p99_ns_idle": idle_p99,
        "engine_p99_ns_idle_spread": idle_spread,
        "engine_p99_ns_under_api_load": loaded_p99,
        "engine_p99_ns_under_api_load_spread": loaded_spread,
        "engine_p99_under_load_vs_idle": loaded_p99 / idle_p99,
        "order_rate": a.order_rate,
        "stalls": {"core": a.engine_core, "p99_us": stalls.p99_us, "max_us": stalls.max_us},
        "machine": harness::machine(),
    });
    println!("{out}");
    Ok(out)
}

/// Runs IOC orders at `order_rate` against a real engine, with the API
/// idle and then saturated, `runs` times each; the engine's service-time
/// p99 (ns) per state, read over the admin protocol: medians and spreads.
fn interference(a: &Args, runs: usize, seconds: f64, dir: &Path) -> Result<(f64, f64, f64, f64)> {
    use otedama_net::keys::KeyStore;
    std::fs::create_dir_all(dir)?;
    let mut ks = KeyStore::default();
    let setup_key = ks.add(0, true, "bench setup")?;
    let stats_key = ks.add(0, true, "bench stats")?;
    let traders: Vec<_> = (1..=(2 * runs) as u32).map(|acct| ks.add(acct, false, "bench")).collect::<Result<_, _>>()?;
    ks.save(&otedama_net::keys::path_in(dir))?;
    let engine = crate::gateway::EngineProc::start(dir, (a.engine_core, a.engine_core), "park", "park", "none")?;
    crate::gateway::setup(engine.addr, (setup_key.id, setup_key.secret), traders.len() as u32)?;
    // Quiet between readings for a whole run: promise traffic every 60 s.
    let quiet = otedama_net::client::LoginOptions { next_seq: 0, flags: 0, heartbeat_ms: 60_000 };
    let mut stats = otedama_net::client::Client::login_with(engine.addr, stats_key.id, stats_key.secret, quiet)?;
    let api = start_api(dir, a.api_core)?;
    let path = format!("/api/v1/dex/orderbook/BENCH-US?depth={}", a.depth);
    let path = path.as_str();
    let (mut idle, mut loaded) = (Vec::new(), Vec::new());
    for r in 0..runs {
        for saturate in [false, true] {
            let t = &traders[2 * r + saturate as usize];
            let http = if saturate {
                let (addr, conc, core) = (api.local_addr(), a.concurrency, a.api_core);
                let path = path.to_string();
                Some(std::thread::spawn(move || load(addr, &path, conc, seconds + 0.6, core)))
            } else {
                None
            };
            std::thread::sleep(Duration::from_millis(100));
            stats.engine_stats(true)?;
            let spec = LoadSpec {
                addr: engine.addr,
                keys: vec![(t.id, t.secret)],
                raw_sessions: 0,
                rate: a.order_rate,
                duration: Duration::from_secs_f64(seconds),
                warmup: Duration::from_millis(200),
                mix: OrderMix::Ioc,
                instrument: 1,
                core: Some(a.api_core),
                flags: 0,
            };
            let res = loadgen::run(&spec)?;
            let st = stats.engine_stats(true)?;
            anyhow::ensure!(res.missing == 0 && res.rejected == 0, "the engine lost or refused orders: {res:?}");
            let gets = match http {
                Some(h) => {
                    let run = h.join().map_err(|_| anyhow::anyhow!("HTTP load panicked"))??;
                    format!("API {:.0} GET/s", run.rps)
                }
                None => "API idle".to_string(),
            };
            println!(
                "  engine run {r} ({gets}): {} commands, service time p50 {} ns, p99 {} ns, max {} ns; order rtt p99 {:.1} µs",
                st.count,
                st.p50_ns,
                st.p99_ns,
                st.max_ns,
                res.rtt.value_at_quantile(0.99) as f64 / 1e3
            );
            if saturate { &mut loaded } else { &mut idle }.push(st.p99_ns as f64);
        }
    }
    api.stop()?;
    drop(stats);
    engine.stop()?;
    let (i, is) = median_spread(&idle);
    let (l, ls) = median_spread(&loaded);
    println!("  engine service time p99: {i:.0} ns idle (spread {is:.0}), {l:.0} ns under API load (spread {ls:.0}): ratio {:.3}", l / i);
    Ok((i, l, is, ls))
}
