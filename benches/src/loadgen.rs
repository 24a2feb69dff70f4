//! Open-loop order load over the binary protocol: `otedama loadgen orders`
//! and the load side of `otedama bench gateway`.
//!
//! One thread offers orders at a fixed rate across the sessions, on a
//! schedule fixed in advance (order k is due at start + k/rate), and reads
//! every session. Round trip = arrival of the order's
//! Accepted − the order's *planned* send time, so a stalled sender or
//! server shows up in the percentiles instead of being hidden
//! (coordinated omission corrected).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use otedama_net::client::Client;
use otedama_net::wire;

use crate::harness::{histogram, pin};

/// What orders the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// IOC buys at the bottom of the band: accepted, then canceled unfilled
    /// (the book stays empty).
    Ioc,
    /// GTC orders at one price, sides alternating per session pair: every
    /// other order fills a resting one (executions and maker reports).
    Cross,
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// One (key id, secret) per session; empty with `raw_sessions` > 0 for
    /// the plain echo baseline (no login).
    pub keys: Vec<(u64, [u8; 32])>,
    pub raw_sessions: usize,
    /// Orders per second offered, all sessions together.
    pub rate: f64,
    pub duration: Duration,
    /// Orders sent before recording starts.
    pub warmup: Duration,
    pub mix: Mix,
    pub instrument: u16,
    /// Core for the sender and receiver threads.
    pub core: Option<usize>,
    /// Login flags of every session (ack-on-durable: bit 0).
    pub flags: u32,
}

#[derive(Debug)]
pub struct LoadResult {
    /// Round trips in ns (after the warm-up).
    pub rtt: Histogram<u64>,
    pub sent: u64,
    pub accepted: u64,
    pub throttled: u64,
    pub rejected: u64,
    /// Orders whose Accepted never came within the drain time.
    pub missing: u64,
    pub seconds: f64,
    /// Largest lag of the sender behind its schedule (µs).
    pub sender_lag_max_us: f64,
}

const ORDER_BYTES: usize = wire::HEADER + wire::NewOrder::BODY;

/// Runs the load; every session must already be able to trade `instrument`.
pub fn run(spec: &LoadSpec) -> Result<LoadResult> {
    let n = if spec.keys.is_empty() { spec.raw_sessions } else { spec.keys.len() };
    anyhow::ensure!(n > 0, "no sessions");
    let mut writers = Vec::new();
    // Where each session's client_seq continues (a session name keeps its
    // numbering across logins).
    let mut bases = Vec::new();
    for i in 0..n {
        let s = if spec.keys.is_empty() {
            let s = TcpStream::connect(spec.addr)?;
            s.set_nodelay(true)?;
            s
        } else {
            let (id, secret) = spec.keys[i];
            let opts = otedama_net::client::LoginOptions { flags: spec.flags, ..Default::default() };
            let mut c = Client::login_with(spec.addr, id, secret, opts).with_context(|| format!("logging in session {i}"))?;
            let base = c.take_client_seq() - 1;
            bases.push(base);
            c.stream().try_clone()?
        };
        if bases.len() <= i {
            bases.push(0);
        }
        writers.push(s);
    }
    // Order k is due at start + k/rate and goes to session k % n as that
    // session's (k / n + 1)th message.
    let total = (spec.rate * (spec.duration + spec.warmup).as_secs_f64()).ceil() as usize;
    let interval_ns = 1e9 / spec.rate;
    let warmup_orders = (spec.rate * spec.warmup.as_secs_f64()) as u64;
    for w in &writers {
        w.set_nonblocking(true)?;
    }
    if let Some(c) = spec.core {
        pin(c);
    }
    let _slack = crate::harness::precise_timers();
    // One thread sends and receives: it sleeps in ppoll until an answer
    // arrives or the next order is due, so the load generator costs one
    // wake-up per event on its core instead of two threads' hand-offs.
    let mut out: Vec<(Vec<u8>, usize)> = (0..n).map(|_| (Vec::with_capacity(256 << 10), 0)).collect();
    let mut inb: Vec<(Vec<u8>, usize)> = (0..n).map(|_| (vec![0u8; 256 << 10], 0)).collect();
    let mut fds: Vec<libc::pollfd> =
        writers.iter().map(|w| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(w), events: 0, revents: 0 }).collect();
    let mut h = histogram();
    let (mut accepted, mut throttled, mut rejected) = (0u64, 0u64, 0u64);
    let mut k = 0usize;
    let mut lag_max = 0f64;
    let start = Instant::now() + Duration::from_millis(20);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let mut busy = false;
        let now_ns = Instant::now().saturating_duration_since(start).as_nanos() as f64;
        if k < total {
            let due = if now_ns <= 0.0 && Instant::now() < start { 0 } else { ((now_ns / interval_ns) as usize + 1).min(total) };
            if due > k {
                lag_max = f64::max(lag_max, now_ns - k as f64 * interval_ns);
                while k < due {
                    let s = k % n;
                    let cs = bases[s] + (k / n) as u64 + 1;
                    let side = match spec.mix {
                        Mix::Ioc => 0,
                        Mix::Cross => ((k / n) % 2) as u8,
                    };
                    let (tif, price) = match spec.mix {
                        Mix::Ioc => (1, 1),
                        Mix::Cross => (0, 100),
                    };
                    wire::NewOrder {
                        client_seq: cs,
                        account: 0,
                        instrument: spec.instrument,
                        side,
                        ord_type: 0,
                        tif,
                        flags: 0,
                        reserved: 0,
                        price,
                        qty: 1,
                        budget: 0,
                    }
                    .push(&mut out[s].0);
                    k += 1;
                }
            }
        }
        for (s, (buf, off)) in out.iter_mut().enumerate() {
            if *off < buf.len() {
                match writers[s].write(&buf[*off..]) {
                    Ok(m) => {
                        *off += m;
                        busy = true;
                        if *off == buf.len() {
                            buf.clear();
                            *off = 0;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("sending orders"),
                }
            }
        }
        for (i, (buf, len)) in inb.iter_mut().enumerate() {
            match writers[i].read(&mut buf[*len..]) {
                Ok(0) => anyhow::bail!("session {i}: the server closed the connection"),
                Ok(m) => {
                    busy = true;
                    *len += m;
                    let now = Instant::now();
                    let mut pos = 0;
                    while let Some((f, used)) = wire::split_frame(&buf[pos..*len], false).context("bad frame from the server")? {
                        pos += used;
                        match f.ty {
                            wire::Accepted::TYPE => {
                                let v = wire::AcceptedView::parse(f.body).context("accepted")?;
                                let kk = (v.client_seq() - bases[i] - 1) * n as u64 + i as u64;
                                accepted += 1;
                                if kk >= warmup_orders {
                                    let planned = start + Duration::from_nanos((kk as f64 * interval_ns) as u64);
                                    let _ = h.record(now.saturating_duration_since(planned).as_nanos().max(1) as u64);
                                }
                            }
                            wire::Throttled::TYPE => throttled += 1,
                            wire::Rejected::TYPE => rejected += 1,
                            wire::Goodbye::TYPE => anyhow::bail!("session {i}: the server said goodbye"),
                            _ => {}
                        }
                    }
                    buf.copy_within(pos..*len, 0);
                    *len -= pos;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        if k >= total {
            if accepted + throttled + rejected >= k as u64 {
                break;
            }
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(3));
            if Instant::now() > d {
                break;
            }
        }
        if busy {
            continue;
        }
        // Sleep until an answer arrives, a send can proceed, or the next
        // order is due.
        let now_ns = Instant::now().saturating_duration_since(start).as_nanos() as f64;
        let wait_ns = if k < total { (k as f64 * interval_ns - now_ns).clamp(0.0, 1e6) } else { 1e6 };
        if wait_ns < 2_000.0 {
            continue;
        }
        for (i, f) in fds.iter_mut().enumerate() {
            f.events = libc::POLLIN | if out[i].1 < out[i].0.len() { libc::POLLOUT } else { 0 };
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: wait_ns as i64 };
        // SAFETY: ppoll over our own descriptors with a local timespec.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
    }
    let seconds = start.elapsed().as_secs_f64();
    let missing = (k as u64).saturating_sub(accepted + throttled + rejected);
    Ok(LoadResult { rtt: h, sent: k as u64, accepted, throttled, rejected, missing, seconds, sender_lag_max_us: lag_max / 1e3 })
}

/// The echo's whole work: answers every complete 48-byte order frame in
/// `inb[..len]` with a 68-byte Accepted-shaped frame carrying its
/// `client_seq`, keeps the incomplete rest at the front of `inb`, and
/// returns its length.
pub fn answer_orders(inb: &mut [u8], len: usize, out: &mut Vec<u8>) -> usize {
    let mut pos = 0;
    while len - pos >= ORDER_BYTES {
        let cs = u64::from_le_bytes(inb[pos + 4..pos + 12].try_into().expect("8 bytes"));
        wire::Accepted { client_seq: cs, ..Default::default() }.push(out);
        pos += ORDER_BYTES;
    }
    inb.copy_within(pos..len, 0);
    len - pos
}

/// CPU time (ns) of the plain echo's connection threads that have ended,
/// and how many have ended: each adds its own when its connection closes.
pub static ECHO_CPU_NS: AtomicU64 = AtomicU64::new(0);
pub static ECHO_THREADS_DONE: AtomicU64 = AtomicU64::new(0);

fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Waits (up to 2 s) until `n` echo connection threads have ended in all,
/// and returns their CPU time so far, ns.
pub fn echo_cpu_after(n: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while ECHO_THREADS_DONE.load(Ordering::Acquire) < n && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    ECHO_CPU_NS.load(Ordering::Acquire)
}

/// The plain baseline: a TCP server that answers each 48-byte order frame
/// with a 68-byte frame shaped like Accepted (echoing `client_seq`), one
/// thread per connection, blocking (`spin` = false) or busy-polling.
/// No protocol state, no engine: what the kernel and the loopback cost.
pub fn echo_server(core: Option<usize>, spin: bool) -> Result<(SocketAddr, Arc<AtomicBool>)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::Builder::new().name("echo-accept".into()).spawn(move || {
        if let Some(c) = core {
            pin(c);
        }
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            if st.load(Ordering::Relaxed) {
                break;
            }
            let _ = s.set_nodelay(true);
            let _ = s.set_nonblocking(spin);
            let st = st.clone();
            let _ = std::thread::Builder::new().name("echo".into()).spawn(move || {
                if let Some(c) = core {
                    pin(c);
                }
                let mut inb = vec![0u8; 256 << 10];
                let mut len = 0;
                let mut out = Vec::with_capacity(512 << 10);
                while !st.load(Ordering::Relaxed) {
                    match s.read(&mut inb[len..]) {
                        Ok(0) => break,
                        Ok(m) => {
                            len = answer_orders(&mut inb, len + m, &mut out);
                            if s.write_all(&out).is_err() {
                                break;
                            }
                            out.clear();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                        Err(_) => break,
                    }
                }
                ECHO_CPU_NS.fetch_add(thread_cpu_ns(), Ordering::AcqRel);
                ECHO_THREADS_DONE.fetch_add(1, Ordering::AcqRel);
            });
        }
    })?;
    Ok((addr, stop))
}
