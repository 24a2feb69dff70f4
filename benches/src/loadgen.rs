//! Open-loop order load over the binary protocol: `otedama loadgen orders`
//! and the load side of `otedama bench gateway`.
//!
//! One sender thread offers orders at a fixed rate across the sessions, on
//! a schedule fixed in advance (order k is due at start + k/rate); one
//! receiver thread reads every session. Round trip = arrival of the order's
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
    let mut readers = Vec::new();
    for i in 0..n {
        let s = if spec.keys.is_empty() {
            let s = TcpStream::connect(spec.addr)?;
            s.set_nodelay(true)?;
            s
        } else {
            let (id, secret) = spec.keys[i];
            let c = Client::login(spec.addr, id, secret).with_context(|| format!("logging in session {i}"))?;
            c.stream().try_clone()?
        };
        let r = s.try_clone()?;
        r.set_nonblocking(true)?;
        writers.push(s);
        readers.push(r);
    }
    // Planned send time (ns after start) of each order, by global index;
    // client_seq = index + 1 (strictly increasing on every session).
    let total = (spec.rate * (spec.duration + spec.warmup).as_secs_f64()).ceil() as usize;
    let interval_ns = 1e9 / spec.rate;
    let warmup_orders = (spec.rate * spec.warmup.as_secs_f64()) as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let done_sending = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(20);

    let receiver = {
        let sent = sent.clone();
        let done = done_sending.clone();
        let core = spec.core;
        std::thread::Builder::new().name("loadgen-recv".into()).spawn(move || receive(readers, core, start, interval_ns, warmup_orders, sent, done))?
    };

    if let Some(c) = spec.core {
        pin(c);
    }
    // SAFETY: prctl with an integer argument; shrinks this thread's timer
    // slack so short sleeps end on time (the default adds up to 50 µs).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(64 << 10)).collect();
    let mut k = 0usize;
    let mut lag_max = 0f64;
    while k < total {
        let now_ns = Instant::now().saturating_duration_since(start).as_nanos() as f64;
        let due = ((now_ns / interval_ns) as usize + 1).min(total);
        if due <= k {
            let wait = (k as f64 * interval_ns - now_ns).max(0.0);
            if wait > 20_000.0 {
                std::thread::sleep(Duration::from_nanos((wait - 10_000.0) as u64));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        lag_max = f64::max(lag_max, now_ns - k as f64 * interval_ns);
        while k < due {
            let s = k % n;
            let cs = k as u64 + 1;
            let m = match spec.mix {
                Mix::Ioc => wire::NewOrder {
                    client_seq: cs,
                    account: 0,
                    instrument: spec.instrument,
                    side: 0,
                    ord_type: 0,
                    tif: 1,
                    flags: 0,
                    reserved: 0,
                    price: 1,
                    qty: 1,
                    budget: 0,
                },
                Mix::Cross => wire::NewOrder {
                    client_seq: cs,
                    account: 0,
                    instrument: spec.instrument,
                    side: ((k / n.max(1)) % 2) as u8,
                    ord_type: 0,
                    tif: 0,
                    flags: 0,
                    reserved: 0,
                    price: 100,
                    qty: 1,
                    budget: 0,
                },
            };
            m.push(&mut bufs[s]);
            k += 1;
        }
        for (s, b) in bufs.iter_mut().enumerate() {
            if !b.is_empty() {
                writers[s].write_all(b).context("sending orders")?;
                b.clear();
            }
        }
        sent.store(k as u64, Ordering::Release);
    }
    done_sending.store(true, Ordering::Release);
    let (rtt, accepted, throttled, rejected) = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    let missing = (k as u64).saturating_sub(accepted + throttled + rejected);
    Ok(LoadResult { rtt, sent: k as u64, accepted, throttled, rejected, missing, seconds, sender_lag_max_us: lag_max / 1e3 })
}

type Received = Result<(Histogram<u64>, u64, u64, u64)>;

fn receive(
    mut readers: Vec<TcpStream>,
    core: Option<usize>,
    start: Instant,
    interval_ns: f64,
    warmup_orders: u64,
    sent: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> Received {
    if let Some(c) = core {
        pin(c);
    }
    let mut h = histogram();
    let mut bufs: Vec<(Vec<u8>, usize)> = readers.iter().map(|_| (vec![0u8; 256 << 10], 0usize)).collect();
    let (mut accepted, mut throttled, mut rejected) = (0u64, 0u64, 0u64);
    let mut drain_deadline: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = readers.iter().map(|r| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(r), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        let mut got = false;
        for (i, r) in readers.iter_mut().enumerate() {
            let (buf, len) = &mut bufs[i];
            match r.read(&mut buf[*len..]) {
                Ok(0) => anyhow::bail!("session {i}: the server closed the connection"),
                Ok(m) => {
                    got = true;
                    *len += m;
                    let now = Instant::now();
                    let mut pos = 0;
                    while let Some((f, used)) = wire::split_frame(&buf[pos..*len], false).context("bad frame from the server")? {
                        pos += used;
                        match f.ty {
                            wire::Accepted::TYPE => {
                                let v = wire::AcceptedView::parse(f.body).context("accepted")?;
                                let k = v.client_seq() - 1;
                                accepted += 1;
                                if k >= warmup_orders {
                                    let planned = start + Duration::from_nanos((k as f64 * interval_ns) as u64);
                                    let rtt = now.saturating_duration_since(planned).as_nanos() as u64;
                                    let _ = h.record(rtt.max(1));
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
        if done.load(Ordering::Acquire) {
            let total = sent.load(Ordering::Acquire);
            if accepted + throttled + rejected >= total {
                break;
            }
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(3));
            if Instant::now() > d {
                break;
            }
        }
        if !got {
            // SAFETY: poll over our own descriptors, 1 ms timeout.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1) };
        }
    }
    Ok((h, accepted, throttled, rejected))
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
                            len += m;
                            let mut pos = 0;
                            while len - pos >= ORDER_BYTES {
                                let cs = u64::from_le_bytes(inb[pos + 4..pos + 12].try_into().expect("8 bytes"));
                                wire::Accepted { client_seq: cs, ..Default::default() }.push(&mut out);
                                pos += ORDER_BYTES;
                            }
                            inb.copy_within(pos..len, 0);
                            len -= pos;
                            if s.write_all(&out).is_err() {
                                break;
                            }
                            out.clear();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                        Err(_) => break,
                    }
                }
            });
        }
    })?;
    Ok((addr, stop))
}
