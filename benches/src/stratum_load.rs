//! `otedama loadgen stratum`: a simulated farm. Many Stratum connections
//! in one process (tokio, one thread), each making the handshake real
//! miners make (configure with version rolling, subscribe, authorize),
//! then, open loop, shares at a set total rate from the `active` first
//! connections: valid ones (ground to the port's difficulty, some with
//! rolled version bits) mixed with duplicates, stale-job shares and
//! low-difficulty shares at known rates. It reports accepted and refused
//! counts by kind (the run fails unless every share got exactly the
//! answer its kind calls for) and share → answer latency, corrected for
//! coordinated omission (measured from when the share was due).
//!
//! With `--hold` the connections stay open after the handshake: the
//! process prints `ready N` and then reads `push JOB NS` lines (when the
//! server pushed a job, CLOCK_MONOTONIC) until `end`, and reports how long
//! each job took to reach each connection (the benchmark's fan-out).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::OwnedWriteHalf;

use otedama_engine::chain::sha256d;
use otedama_hashers::{Family, Target};
use otedama_net::stratum_client::MinerJob;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The pool's Stratum address.
    #[arg(long, default_value = "127.0.0.1:3333")]
    pub addr: SocketAddr,
    /// Connections (miners).
    #[arg(long, default_value_t = 100)]
    pub miners: usize,
    /// Local address to connect from (127.0.0.x spreads ports over addresses).
    #[arg(long)]
    pub source: Option<IpAddr>,
    /// Connections that submit shares (the first ones); 0: all.
    #[arg(long, default_value_t = 0)]
    pub active: usize,
    /// Shares per second offered, all connections together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The port's share difficulty (shares are ground to it; `d=` asks for it).
    #[arg(long, default_value_t = 1e-9)]
    pub difficulty: f64,
    /// One share in N is a duplicate of an accepted one (0: none).
    #[arg(long, default_value_t = 50)]
    pub dup_every: u64,
    /// One share in N names a job the pool does not have (0: none).
    #[arg(long, default_value_t = 50)]
    pub stale_every: u64,
    /// One share in N misses the difficulty (0: none).
    #[arg(long, default_value_t = 50)]
    pub low_every: u64,
    /// Consecutive shares sent on one connection (a proxy's burst); shares
    /// due at the same moment on one connection leave in one write.
    #[arg(long, default_value_t = 1)]
    pub burst: usize,
    /// Hold the connections for fan-out measurement instead of sending shares.
    #[arg(long)]
    pub hold: bool,
    /// Payout address used as the username.
    #[arg(long, default_value = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")]
    pub user: String,
    /// Pin the process to this core.
    #[arg(long)]
    pub core: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Valid,
    Duplicate,
    Stale,
    Low,
}

impl Kind {
    fn expected(self) -> Option<i64> {
        match self {
            Kind::Valid => None,
            Kind::Duplicate => Some(22),
            Kind::Stale => Some(21),
            Kind::Low => Some(23),
        }
    }
}

#[derive(Default)]
struct Conn {
    en1: Vec<u8>,
    en2_size: usize,
    job: Option<MinerJob>,
    /// Shares in flight, in order (the pool answers each connection in order).
    inflight: VecDeque<(u64, u64, Kind)>,
    last_valid: Option<String>,
    /// (job id, arrival ns) of every notify (hold mode).
    arrivals: Vec<(u64, u64)>,
    ready: bool,
}

#[derive(Default)]
struct Tally {
    sent: [u64; 4],
    answered: [u64; 4],
    /// Answers that did not match the share's kind.
    wrong: u64,
    wrong_example: Option<String>,
    ready: usize,
    closed: usize,
    last_answer_ns: u64,
}

fn kind_ix(k: Kind) -> usize {
    k as usize
}

pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the descriptor limit to the hard limit.
pub fn raise_nofile() {
    // SAFETY: get/setrlimit on our own process.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// The job id of a notify line, without parsing the rest.
fn notify_job(line: &str) -> Option<u64> {
    let at = line.find("\"mining.notify\",\"params\":[\"")? + 27;
    let end = line[at..].find('"')? + at;
    u64::from_str_radix(&line[at..end], 16).ok()
}

/// The id and error code of an answer (`None`: a result).
fn answer(line: &str) -> Option<(u64, Option<i64>)> {
    let rest = line.strip_prefix("{\"id\":")?;
    let end = rest.find(',')?;
    let id: u64 = rest[..end].parse().ok()?;
    let code = line.find("\"error\":[").and_then(|i| line[i + 9..].split(',').next()?.parse().ok());
    Some((id, code))
}

pub fn run(a: &LoadArgs) -> Result<Value> {
    raise_nofile();
    if let Some(c) = a.core {
        crate::harness::pin(c);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_async(a.clone()))
}

async fn run_async(a: LoadArgs) -> Result<Value> {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mut conns: Vec<Rc<RefCell<Conn>>> = Vec::new();
    let mut writers: Vec<OwnedWriteHalf> = Vec::new();
    let acks = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?));
    let password = format!("d={}", a.difficulty);
    let t_connect = std::time::Instant::now();
    for i in 0..a.miners {
        let sock = if a.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = a.source {
            sock.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}"))?;
        }
        let stream = sock.connect(a.addr).await.with_context(|| format!("connection {i} to {}", a.addr))?;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        let hello = format!(
            "{{\"id\":1,\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{{\"version-rolling.mask\":\"1fffe000\"}}]}}\n\
             {{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[\"otedama-loadgen/1\"]}}\n\
             {{\"id\":3,\"method\":\"mining.authorize\",\"params\":[\"{}.m{i}\",\"{password}\"]}}\n",
            a.user
        );
        w.write_all(hello.as_bytes()).await?;
        writers.push(w);
        let conn = Rc::new(RefCell::new(Conn::default()));
        conns.push(conn.clone());
        let (tally, acks, hold) = (tally.clone(), acks.clone(), a.hold);
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let now = mono_ns();
                if let Some(job_id) = notify_job(&line) {
                    let mut c = conn.borrow_mut();
                    if hold {
                        c.arrivals.push((job_id, now));
                    }
                    if (!hold || c.job.is_none())
                        && let Ok(v) = serde_json::from_str::<Value>(&line)
                    {
                        c.job = MinerJob::from_notify(&v["params"]).ok();
                    }
                    if !c.ready {
                        c.ready = true;
                        tally.borrow_mut().ready += 1;
                    }
                    continue;
                }
                let Some((id, code)) = answer(&line) else { continue };
                let mut c = conn.borrow_mut();
                if id == 2 {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        c.en1 = v["result"][1].as_str().and_then(otedama_engine::chain::decode_hex).unwrap_or_default();
                        c.en2_size = v["result"][2].as_u64().unwrap_or(8) as usize;
                    }
                    continue;
                }
                if id < 1000 {
                    continue;
                }
                let Some(&(want, due, kind)) = c.inflight.front() else { continue };
                if want != id {
                    continue;
                }
                c.inflight.pop_front();
                let mut t = tally.borrow_mut();
                t.answered[kind_ix(kind)] += 1;
                if code != kind.expected() {
                    t.wrong += 1;
                    if t.wrong_example.is_none() {
                        t.wrong_example = Some(format!("{kind:?} answered {line}"));
                    }
                }
                t.last_answer_ns = now;
                let _ = acks.borrow_mut().record(now.saturating_sub(due).max(1));
            }
            tally.borrow_mut().closed += 1;
        });
        // Let the reader tasks run now and then while connecting.
        if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    // Every connection subscribed, authorized and got its first job.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while tally.borrow().ready < a.miners {
        anyhow::ensure!(std::time::Instant::now() < until, "only {} of {} connections got a job", tally.borrow().ready, a.miners);
        anyhow::ensure!(tally.borrow().closed == 0, "the pool closed {} connection(s) during the handshake", tally.borrow().closed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    if a.hold {
        return hold(a.miners, &conns, &tally, connect_s).await;
    }

    // Open loop: share k is due at t0 + k / rate, from connection k % active.
    let active = if a.active == 0 { a.miners } else { a.active.min(a.miners) };
    let target = Target::from_difficulty(a.difficulty, Family::Sha256d).map_err(|e| anyhow::anyhow!("difficulty: {e:?}"))?;
    let period_ns = 1e9 / a.rate;
    let total = (a.rate * a.seconds) as u64;
    let t0 = mono_ns() + 10_000_000;
    let mut en2s = vec![0u64; active];
    let mut lag_max = 0u64;
    // How late each share left (the generator's own delay, part of its
    // ack time): the client core's share of the latency.
    let mut lags = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut line = String::with_capacity(256);
    let burst = a.burst.max(1) as u64;
    // What each connection has to send this turn (one write each).
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); active];
    let mut dirty: Vec<usize> = Vec::new();
    let mut k = 0u64;
    while k < total {
        let due = t0 + (k as f64 * period_ns) as u64;
        let now = mono_ns();
        if now < due {
            if due - now > 2_000_000 {
                tokio::time::sleep(Duration::from_nanos(due - now - 1_500_000)).await;
            }
            // Yielding (not spinning) while early: tokio polls the sockets
            // before it resumes this task, so answers are read as they
            // arrive, not when the sender next sleeps.
            while mono_ns() < due {
                tokio::task::yield_now().await;
            }
            continue;
        }
        lag_max = lag_max.max(now - due);
        // Every share due by now, grouped by connection: `burst`
        // consecutive shares go to one connection, as a farm's proxy
        // sends them, and leave in one write when they are due together.
        let mut n = 0;
        while k < total && n < 1024 {
            let due = t0 + (k as f64 * period_ns) as u64;
            if due > now {
                break;
            }
            lags.saturating_record((now - due).max(1));
            let i = ((k / burst) % active as u64) as usize;
            let kind = if a.dup_every > 0 && k % a.dup_every == a.dup_every - 1 {
                Kind::Duplicate
            } else if a.stale_every > 0 && k % a.stale_every == a.stale_every / 2 {
                Kind::Stale
            } else if a.low_every > 0 && k % a.low_every == a.low_every / 3 {
                Kind::Low
            } else {
                Kind::Valid
            };
            let id = 1000 + k;
            let mut c = conns[i].borrow_mut();
            let kind = if kind == Kind::Duplicate && c.last_valid.is_none() { Kind::Valid } else { kind };
            line.clear();
            match kind {
                Kind::Duplicate => {
                    let prev = c.last_valid.as_ref().expect("checked");
                    // Same share, new id.
                    let rest = &prev[prev.find(",\"method\"").expect("own line")..];
                    line.push_str(&format!("{{\"id\":{id}{rest}"));
                }
                _ => {
                    en2s[i] += 1;
                    share_line(&c, &a.user, i, id, en2s[i], target, kind, &mut line);
                    if kind == Kind::Valid {
                        c.last_valid = Some(line.clone());
                    }
                }
            }
            c.inflight.push_back((id, due, kind));
            tally.borrow_mut().sent[kind_ix(kind)] += 1;
            if pending[i].is_empty() {
                dirty.push(i);
            }
            pending[i].extend_from_slice(line.as_bytes());
            k += 1;
            n += 1;
        }
        for i in dirty.drain(..) {
            writers[i].write_all(&pending[i]).await?;
            pending[i].clear();
        }
        tokio::task::yield_now().await;
    }
    // Answers for everything sent.
    let sent: u64 = tally.borrow().sent.iter().sum();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while tally.borrow().answered.iter().sum::<u64>() < sent && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = tally.borrow();
    let h = acks.borrow();
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1e3;
    let names = ["valid", "duplicate", "stale", "low"];
    let by =
        |v: &[u64; 4]| -> Value { names.iter().zip(v).map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>().into() };
    Ok(json!({
        "connections": a.miners, "active": active, "connect_s": connect_s,
        "offered_rate": a.rate, "seconds": a.seconds,
        "sent": by(&t.sent), "answered": by(&t.answered),
        "unanswered": sent - t.answered.iter().sum::<u64>(),
        "wrong_answers": t.wrong, "wrong_example": t.wrong_example,
        "ack_p50_us": q(0.5), "ack_p99_us": q(0.99), "ack_p999_us": q(0.999), "ack_max_us": h.max() as f64 / 1e3,
        "sender_lag_max_us": lag_max as f64 / 1e3,
        "sender_lag_p99_us": lags.value_at_quantile(0.99) as f64 / 1e3,
        "answered_per_sec": t.answered.iter().sum::<u64>() as f64 / (t.last_answer_ns.saturating_sub(t0) as f64 / 1e9).max(1e-9),
        "closed_by_pool": t.closed,
    }))
}

/// A `mining.submit` line for connection `i` of the given kind.
#[allow(clippy::too_many_arguments)]
fn share_line(c: &Conn, user: &str, i: usize, id: u64, en2: u64, target: Target, kind: Kind, out: &mut String) {
    let job = c.job.as_ref().expect("ready connections have a job");
    let en2b = &en2.to_be_bytes()[8 - c.en2_size.min(8)..];
    // Every fourth share rolls version bits (BIP 320).
    let bits = en2.is_multiple_of(4).then_some(((en2 as u32) << 13) & 0x1fffe000);
    let version = bits.map_or(job.version, |b| job.version | b);
    let mut h = job.header(&c.en1, en2b, job.ntime, 0, version);
    let want = kind != Kind::Low;
    let mut nonce = 0u32;
    loop {
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        if target.is_met_by(&sha256d(&h)) == want {
            break;
        }
        nonce += 1;
    }
    let job_id = if kind == Kind::Stale { "dead".to_string() } else { job.job_id.clone() };
    use std::fmt::Write;
    let _ = write!(
        out,
        "{{\"id\":{id},\"method\":\"mining.submit\",\"params\":[\"{user}.m{i}\",\"{job_id}\",\"{}\",\"{:08x}\",\"{nonce:08x}\"",
        hex::encode(en2b),
        job.ntime
    );
    if let Some(b) = bits {
        let _ = write!(out, ",\"{b:08x}\"");
    }
    out.push_str("]}\n");
}

async fn hold(n: usize, conns: &[Rc<RefCell<Conn>>], tally: &Rc<RefCell<Tally>>, connect_s: f64) -> Result<Value> {
    println!("ready {n}");
    let mut pushes: Vec<(u64, u64)> = Vec::new();
    let stdin = tokio::io::stdin();
    let mut lines = BufReader::new(stdin).lines();
    while let Some(l) = lines.next_line().await? {
        let mut p = l.split_whitespace();
        match p.next() {
            Some("push") => {
                let job: u64 = p.next().context("push JOB NS")?.parse()?;
                let ns: u64 = p.next().context("push JOB NS")?.parse()?;
                pushes.push((job, ns));
            }
            Some("end") => break,
            _ => {}
        }
    }
    // Give the last notifies a moment to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut missing = 0u64;
    for (job, pushed) in &pushes {
        for c in conns {
            match c.borrow().arrivals.iter().find(|(j, _)| j == job) {
                Some((_, at)) => h.record(at.saturating_sub(*pushed).max(1))?,
                None => missing += 1,
            }
        }
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1e6;
    Ok(json!({
        "connections": n, "connect_s": connect_s, "jobs": pushes.len(), "missing": missing,
        "closed_by_pool": tally.borrow().closed,
        "fanout_p50_ms": q(0.5), "fanout_p99_ms": q(0.99), "fanout_max_ms": h.max() as f64 / 1e6,
    }))
}
