//! One Stratum shard: a thread with an io_uring, a `SO_REUSEPORT`
//! listener, a pool of provided receive buffers, and the sessions it
//! accepted.
//!
//! Per connection: one multishot receive (drawing buffers from the shared
//! pool, so an idle session holds none), one send in flight with later
//! lines queued behind it (bounded: a miner that stops reading is cut
//! off), and the unfinished tail of a line when one spans two receives.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use otedama_engine::stratum::extranonce::{Claimant, ShardExtranonces};
use otedama_engine::stratum::jobs::JobBook;
use otedama_engine::stratum::record::{SHARE_RECORD_VERSION, ShareRecord, work_of};
use otedama_engine::stratum::session::{Event, Extranonce1s, Session};
use otedama_hashers::Target;
use otedama_journal::{Journal, kinds};

use super::bufring::BufRing;
use super::{Baseline, BlockReq, JobMsg, PerIp, ShardReport, StratumConfig, StratumCounters, Verified, VerifyReq};
use crate::gateway::{Poll, Waker};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;

const BUF_GROUP: u16 = 1;
/// Longest a closing connection may take to flush its last lines.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Every connection's timeouts are checked once in this period...
const TIMER_EVERY: Duration = Duration::from_millis(250);
/// ...in this many slices, one slice per tick: a pass over every
/// connection at once held the shard for 150 µs to 1 ms at 19,000 sessions
/// (measured), and every share arriving meanwhile waited for it.
const TIMER_SLICES: u32 = 16;
const TIMER_TICK: Duration = Duration::from_nanos(TIMER_EVERY.as_nanos() as u64 / TIMER_SLICES as u64);
/// A shard journal with nothing to record writes a heartbeat this often.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A queue whose buffer grew past this is given back once it drains.
const KEEP_QUEUE: usize = 4 << 10;

fn ud(op: u64, slot: u32, generation: u32) -> u64 {
    (op << 56) | ((slot as u64 & 0xff_ffff) << 32) | generation as u64
}

pub(crate) struct Parts {
    pub id: u16,
    pub cfg: StratumConfig,
    pub listen_fd: RawFd,
    pub tls_listen_fd: Option<RawFd>,
    pub jobs: rtrb::Consumer<JobMsg>,
    pub verified: crossbeam_channel::Receiver<Verified>,
    pub verify_tx: crossbeam_channel::Sender<VerifyReq>,
    pub block_tx: mpsc::Sender<BlockReq>,
    pub journal: Journal,
    pub waker: Arc<Waker>,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<StratumCounters>,
    pub per_ip: Arc<PerIp>,
}

struct Conn {
    fd: RawFd,
    generation: u32,
    open: bool,
    closing: bool,
    /// Stop reading; close once the queued lines are sent.
    close_after_flush: Option<Instant>,
    ip: Option<IpAddr>,
    /// The TLS state of a connection on the TLS port.
    tls: Option<Box<rustls::ServerConnection>>,
    session: Session,
    mining: bool,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    partial_since: Instant,
    out: Vec<u8>,
    flight: Vec<u8>,
    flight_off: usize,
    recv_armed: bool,
    send_inflight: bool,
    dirty: bool,
    opened: Instant,
    last_rx: Instant,
}

pub(crate) struct Shard {
    // The ring first: dropped before the buffers its operations point into.
    ring: IoUring,
    bufs: BufRing,
    id: u16,
    cfg: StratumConfig,
    rules: Arc<otedama_engine::stratum::session::PortRules>,
    listen_fd: RawFd,
    tls_fd: Option<RawFd>,
    tls_cfg: Option<Arc<rustls::ServerConfig>>,
    /// Plaintext out of TLS records, before it is split into lines.
    plain: Vec<u8>,
    accepting: bool,
    conns: Vec<Conn>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    /// Connections whose multishot receive ended for want of buffers.
    starved: Vec<u32>,
    jobs: JobBook,
    job_rx: rtrb::Consumer<JobMsg>,
    extranonces: ShardExtranonces,
    verified: crossbeam_channel::Receiver<Verified>,
    verify_tx: crossbeam_channel::Sender<VerifyReq>,
    block_tx: mpsc::Sender<BlockReq>,
    journal: Journal,
    last_append: Instant,
    record_buf: Vec<u8>,
    /// Work of the last share target seen (targets rarely change).
    work_cache: (Target, u128),
    waker: Arc<Waker>,
    wake_buf: Box<u64>,
    stop: Arc<AtomicBool>,
    counters: Arc<StratumCounters>,
    per_ip: Arc<PerIp>,
    events: Vec<Event>,
    rx: Vec<u8>,
    now: Instant,
    unix: u32,
    /// The wall clock read once, at start; `unix` follows it by the
    /// monotonic clock (one clock read per turn, not two).
    epoch: (Instant, u64),
    last_timer: Instant,
    /// The next connection slot the timer slices check.
    timer_cursor: u32,
    stopping: Option<Instant>,
    cqes: Vec<(u64, i32, u32)>,
    report: ShardReport,
}

impl Shard {
    pub fn new(p: Parts) -> std::io::Result<Shard> {
        let ring = IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_taskrun_flag().build(4096)?;
        let bufs = BufRing::new(&ring, BUF_GROUP, p.cfg.recv_buffers, p.cfg.recv_buffer_size)?;
        let now = Instant::now();
        let rules = Arc::new(p.cfg.rules.clone());
        Ok(Shard {
            ring,
            bufs,
            id: p.id,
            rules,
            listen_fd: p.listen_fd,
            tls_fd: p.tls_listen_fd,
            tls_cfg: p.cfg.tls.as_ref().map(|t| t.config.clone()),
            plain: Vec::new(),
            accepting: true,
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            starved: Vec::new(),
            jobs: JobBook::new(p.cfg.jobs_kept, p.cfg.max_shares_per_job),
            job_rx: p.jobs,
            extranonces: ShardExtranonces::new(p.id as u8, p.cfg.extranonce1_size),
            verified: p.verified,
            verify_tx: p.verify_tx,
            block_tx: p.block_tx,
            journal: p.journal,
            last_append: now,
            record_buf: Vec::with_capacity(256),
            work_cache: (Target::from_le_bytes([0; 32]), 0),
            waker: p.waker,
            wake_buf: Box::new(0),
            stop: p.stop,
            counters: p.counters,
            per_ip: p.per_ip,
            events: Vec::with_capacity(8),
            rx: Vec::with_capacity(p.cfg.recv_buffer_size),
            now,
            unix: 0,
            epoch: (now, SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
            last_timer: now,
            timer_cursor: 0,
            stopping: None,
            cqes: Vec::with_capacity(1024),
            report: ShardReport::default(),
            cfg: p.cfg,
        })
    }

    fn push_sqe(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points to (a connection's
            // flight buffer, the provided buffers, `wake_buf`) stays put
            // until the operation's completion has been reaped.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    /// Multishot accept on the plain listener (`which` 0) or the TLS one (1).
    fn arm_accept(&mut self, which: u32) {
        let fd = if which == 1 { self.tls_fd.expect("a TLS listener") } else { self.listen_fd };
        let e = opcode::AcceptMulti::new(types::Fd(fd)).flags(libc::SOCK_CLOEXEC).build().user_data(ud(OP_ACCEPT, which, 0));
        self.push_sqe(e);
    }

    fn arm_wake(&mut self) {
        let p: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(types::Fd(self.waker.fd()), p.cast(), 8).build().user_data(ud(OP_WAKE, 0, 0));
        self.push_sqe(e);
    }

    fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.recv_armed || c.closing || c.close_after_flush.is_some() {
            return;
        }
        c.recv_armed = true;
        let e = opcode::RecvMulti::new(types::Fd(c.fd), BUF_GROUP).build().user_data(ud(OP_RECV, slot, c.generation));
        self.push_sqe(e);
    }

    pub fn run(mut self) -> Result<ShardReport, String> {
        self.arm_accept(0);
        if self.tls_fd.is_some() {
            self.arm_accept(1);
        }
        self.arm_wake();
        let mut idle = 0u32;
        loop {
            let (did, finished) = self.turn()?;
            if finished {
                self.journal.close().map_err(|e| format!("closing shard {}'s share journal: {e}", self.id))?;
                return Ok(std::mem::take(&mut self.report));
            }
            if did {
                idle = 0;
                continue;
            }
            idle += 1;
            self.idle(idle);
        }
    }

    fn idle(&mut self, idle: u32) {
        match self.cfg.poll {
            Poll::Spin => std::hint::spin_loop(),
            Poll::Park if idle < 64 => std::hint::spin_loop(),
            Poll::Park => {
                self.waker.going_to_sleep();
                if self.job_rx.is_empty() && self.verified.is_empty() && self.ring.completion().is_empty() {
                    let ts = types::Timespec::new().nsec(TIMER_TICK.as_nanos() as u32);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    let _ = self.ring.submitter().submit_with_args(1, &args);
                }
                self.waker.awake();
            }
        }
    }

    fn turn(&mut self) -> Result<(bool, bool), String> {
        self.now = Instant::now();
        self.unix = (self.epoch.1 + self.now.duration_since(self.epoch.0).as_secs()) as u32;
        let mut did = false;
        let mut cqes = std::mem::take(&mut self.cqes);
        loop {
            cqes.clear();
            cqes.extend(self.ring.completion().take(1024).map(|c| (c.user_data(), c.result(), c.flags())));
            if cqes.is_empty() {
                break;
            }
            did = true;
            for &(u, res, flags) in &cqes {
                self.complete(u, res, flags)?;
            }
        }
        self.cqes = cqes;
        did |= self.drain_jobs();
        did |= self.drain_verified()?;
        if !self.starved.is_empty() {
            for slot in std::mem::take(&mut self.starved) {
                if self.conns[slot as usize].open {
                    self.arm_recv(slot);
                }
            }
        }
        self.flush_sends();
        if self.now.duration_since(self.last_timer) >= TIMER_TICK {
            self.last_timer = self.now;
            self.timers()?;
        }
        if self.stopping.is_none() && self.stop.load(Ordering::Relaxed) {
            self.stopping = Some(self.now);
            self.begin_shutdown();
        }
        if let Some(t) = self.stopping {
            let open = self.conns.iter().filter(|c| c.open).count();
            if open == 0 || self.now.duration_since(t) > CLOSE_GRACE + Duration::from_secs(1) {
                self.finish_shutdown(open);
                return Ok((did, true));
            }
        }
        let (pending, taskrun) = {
            let sq = self.ring.submission();
            (!sq.is_empty(), sq.taskrun())
        };
        if pending || taskrun {
            let _ = self.ring.submit();
            did = true;
        }
        Ok((did, false))
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) -> Result<(), String> {
        let op = u >> 56;
        let slot = ((u >> 32) & 0xff_ffff) as u32;
        let generation = u as u32;
        match op {
            OP_ACCEPT => {
                if res >= 0 {
                    self.accepted(res, slot == 1);
                } else if res != -libc::ECANCELED {
                    tracing::warn!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "accept failed");
                }
                if !cqueue::more(flags) && self.accepting {
                    self.arm_accept(slot);
                }
            }
            OP_WAKE => self.arm_wake(),
            OP_RECV => {
                // A buffer the kernel filled goes back to the pool whatever
                // became of its connection.
                let bid = cqueue::buffer_select(flags);
                let live = self.conns.get(slot as usize).is_some_and(|c| c.open && c.generation == generation);
                if live && res > 0 {
                    let bid = bid.expect("a multishot receive always selects a buffer");
                    self.rx.clear();
                    self.rx.extend_from_slice(self.bufs.get(bid, res as usize));
                    self.bufs.recycle(bid);
                    let c = &mut self.conns[slot as usize];
                    c.last_rx = self.now;
                    if !cqueue::more(flags) {
                        c.recv_armed = false;
                    }
                    if c.close_after_flush.is_none() && !c.closing {
                        if c.tls.is_some() {
                            self.on_tls_bytes(slot)?;
                        } else {
                            self.on_bytes(slot)?;
                        }
                    }
                    let c = &self.conns[slot as usize];
                    if !c.recv_armed && c.open && !c.closing && c.close_after_flush.is_none() {
                        self.arm_recv(slot);
                    }
                } else {
                    if let Some(b) = bid {
                        self.bufs.recycle(b);
                    }
                    if !live {
                        return Ok(());
                    }
                    let c = &mut self.conns[slot as usize];
                    if !cqueue::more(flags) {
                        c.recv_armed = false;
                    }
                    if c.closing {
                        self.maybe_finish_close(slot);
                    } else if res == -libc::ENOBUFS {
                        // Every buffer is in use for a moment: ask again
                        // next turn (the data waits in the socket).
                        if !c.recv_armed {
                            self.starved.push(slot);
                        }
                    } else if res <= 0 {
                        if res < 0 && res != -libc::ECONNRESET && res != -libc::ECANCELED {
                            tracing::debug!(shard = self.id, slot, error = %std::io::Error::from_raw_os_error(-res), "recv failed");
                        }
                        self.start_close(slot);
                    }
                }
            }
            OP_SEND => {
                let Some(c) = self.conns.get_mut(slot as usize).filter(|c| c.open && c.generation == generation) else { return Ok(()) };
                c.send_inflight = false;
                if c.closing {
                    self.maybe_finish_close(slot);
                    return Ok(());
                }
                if res < 0 {
                    self.start_close(slot);
                    return Ok(());
                }
                c.flight_off += res as usize;
                if c.flight_off < c.flight.len() {
                    self.submit_send(slot);
                } else {
                    c.flight.clear();
                    c.flight_off = 0;
                    if c.flight.capacity() > KEEP_QUEUE {
                        c.flight = Vec::new();
                    }
                    if !c.out.is_empty() {
                        self.mark_dirty(slot);
                    } else if c.close_after_flush.is_some() {
                        self.start_close(slot);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn accepted(&mut self, fd: RawFd, tls: bool) {
        let refuse = |why: &str, s: &Shard| {
            tracing::debug!(shard = s.id, why, "connection refused");
            // SAFETY: the descriptor the kernel just gave us.
            unsafe { libc::close(fd) };
        };
        if !self.accepting {
            return refuse("shutting down", self);
        }
        let ip = peer_ip(fd);
        if let Some(ip) = ip
            && !self.per_ip.enter(ip, self.cfg.per_ip_limit)
        {
            self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return refuse("per-IP connection limit", self);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.conns.len() < self.cfg.max_connections => {
                self.conns.push(Conn {
                    fd: -1,
                    generation: 0,
                    open: false,
                    closing: false,
                    close_after_flush: None,
                    ip: None,
                    tls: None,
                    session: Session::new(self.rules.clone()),
                    mining: false,
                    partial: Vec::new(),
                    partial_since: self.now,
                    out: Vec::new(),
                    flight: Vec::new(),
                    flight_off: 0,
                    recv_armed: false,
                    send_inflight: false,
                    dirty: false,
                    opened: self.now,
                    last_rx: self.now,
                });
                (self.conns.len() - 1) as u32
            }
            None => {
                if let Some(ip) = ip {
                    self.per_ip.leave(ip);
                }
                self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(shard = self.id, max = self.cfg.max_connections, "connection limit reached; refusing a connection");
                return refuse("shard full", self);
            }
        };
        let _ = crate::gateway::listener::nodelay(fd);
        let tls = match (tls, &self.tls_cfg) {
            (true, Some(cfg)) => match rustls::ServerConnection::new(cfg.clone()) {
                Ok(t) => Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "TLS session refused");
                    if let Some(ip) = ip {
                        self.per_ip.leave(ip);
                    }
                    self.free.push(slot);
                    // SAFETY: the descriptor the kernel just gave us.
                    unsafe { libc::close(fd) };
                    return;
                }
            },
            _ => None,
        };
        let now = self.now;
        let c = &mut self.conns[slot as usize];
        c.tls = tls;
        c.fd = fd;
        c.open = true;
        c.closing = false;
        c.close_after_flush = None;
        c.ip = ip;
        c.session = Session::new(self.rules.clone());
        c.mining = false;
        c.partial = Vec::new();
        c.out.clear();
        c.flight.clear();
        c.flight_off = 0;
        c.dirty = false;
        c.opened = now;
        c.last_rx = now;
        self.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.arm_recv(slot);
    }

    /// Splits what arrived into lines and handles each.
    fn on_bytes(&mut self, slot: u32) -> Result<(), String> {
        let rx = std::mem::take(&mut self.rx);
        let r = self.on_bytes_in(slot, &rx);
        self.rx = rx;
        r
    }

    fn on_bytes_in(&mut self, slot: u32, data: &[u8]) -> Result<(), String> {
        let max = self.cfg.max_line;
        let mut rest = data;
        // A line begun in an earlier receive is finished first.
        if !self.conns[slot as usize].partial.is_empty() {
            match memchr::memchr(b'\n', rest) {
                None => {
                    let c = &mut self.conns[slot as usize];
                    if c.partial.len() + rest.len() > max {
                        return self.line_too_long(slot);
                    }
                    c.partial.extend_from_slice(rest);
                    return Ok(());
                }
                Some(i) => {
                    let mut line = std::mem::take(&mut self.conns[slot as usize].partial);
                    if line.len() + i > max {
                        return self.line_too_long(slot);
                    }
                    line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.on_line(slot, &line)?;
                    if !self.readable(slot) {
                        return Ok(());
                    }
                }
            }
        }
        while let Some(i) = memchr::memchr(b'\n', rest) {
            if i > max {
                return self.line_too_long(slot);
            }
            self.on_line(slot, &rest[..i])?;
            rest = &rest[i + 1..];
            if !self.readable(slot) {
                return Ok(());
            }
        }
        if !rest.is_empty() {
            if rest.len() > max {
                return self.line_too_long(slot);
            }
            let now = self.now;
            let c = &mut self.conns[slot as usize];
            c.partial.extend_from_slice(rest);
            c.partial_since = now;
        }
        Ok(())
    }

    /// Decrypts what arrived on a TLS connection, answers the handshake,
    /// and handles the plaintext's lines. A TLS error sends its alert and
    /// closes the connection.
    fn on_tls_bytes(&mut self, slot: u32) -> Result<(), String> {
        use std::io::Read;
        let rx = std::mem::take(&mut self.rx);
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let mut failed = None;
        {
            let tls = self.conns[slot as usize].tls.as_mut().expect("a TLS connection");
            let mut rd: &[u8] = &rx;
            while !rd.is_empty() {
                if let Err(e) = tls.read_tls(&mut rd) {
                    failed = Some(e.to_string());
                    break;
                }
                match tls.process_new_packets() {
                    Ok(st) => {
                        let n = st.plaintext_bytes_to_read();
                        if n > 0 {
                            let at = plain.len();
                            plain.resize(at + n, 0);
                            if tls.reader().read_exact(&mut plain[at..]).is_err() {
                                plain.truncate(at);
                            }
                        }
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        self.rx = rx;
        self.tls_flush(slot);
        let r = match failed {
            Some(e) => {
                tracing::info!(shard = self.id, slot, error = %e, "TLS error; disconnecting");
                self.close_after_flush(slot);
                Ok(())
            }
            None if plain.len() > self.cfg.max_line.saturating_mul(64) => self.line_too_long(slot),
            None if plain.is_empty() => Ok(()),
            None => self.on_bytes_in(slot, &plain),
        };
        if plain.capacity() > KEEP_QUEUE {
            plain = Vec::new();
        }
        self.plain = plain;
        r
    }

    /// Moves a TLS connection's pending records (handshake, alerts,
    /// encrypted lines) into its outbound queue.
    fn tls_flush(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let Some(t) = c.tls.as_mut() else { return };
        while t.wants_write() {
            if t.write_tls(&mut c.out).is_err() {
                break;
            }
        }
        if !c.out.is_empty() {
            self.mark_dirty(slot);
        }
    }

    fn readable(&self, slot: u32) -> bool {
        let c = &self.conns[slot as usize];
        c.open && !c.closing && c.close_after_flush.is_none()
    }

    fn line_too_long(&mut self, slot: u32) -> Result<(), String> {
        self.counters.lines_too_long.fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard = self.id, slot, max = self.cfg.max_line, "request line too long; disconnecting");
        let msg = format!("{{\"id\":null,\"result\":null,\"error\":[20,\"Request line longer than {} bytes\",null]}}\n", self.cfg.max_line);
        self.queue(slot, msg.as_bytes());
        self.close_after_flush(slot);
        Ok(())
    }

    fn close_after_flush(&mut self, slot: u32) {
        let now = self.now;
        let c = &mut self.conns[slot as usize];
        c.partial = Vec::new();
        if c.close_after_flush.is_none() {
            c.close_after_flush = Some(now);
        }
        if !c.send_inflight && c.out.is_empty() && !c.dirty {
            self.start_close(slot);
        }
    }

    fn on_line(&mut self, slot: u32, line: &[u8]) -> Result<(), String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(());
        }
        self.counters.lines.fetch_add(1, Ordering::Relaxed);
        if self.cfg.baseline == Baseline::Echo {
            let mut echo = std::mem::take(&mut self.record_buf);
            echo.clear();
            echo.extend_from_slice(line);
            echo.push(b'\n');
            self.queue(slot, &echo);
            self.record_buf = echo;
            if !self.conns[slot as usize].mining {
                // As a pool sends the current job to a new miner.
                self.conns[slot as usize].mining = true;
                self.counters.sessions_mining.fetch_add(1, Ordering::Relaxed);
                if let Some((_, notify)) = self.jobs.latest_clean() {
                    let notify = notify.as_bytes().to_vec();
                    self.queue(slot, &notify);
                }
            }
            return Ok(());
        }
        let mut events = std::mem::take(&mut self.events);
        let Shard { conns, jobs, extranonces, unix, .. } = self;
        let conn = &mut conns[slot as usize];
        let mut claimer = Claimer { en1s: extranonces, slot, ip: conn.ip, displaced: None };
        match std::str::from_utf8(line) {
            Ok(text) => conn.session.on_line(text, jobs, &mut claimer, *unix, &mut events),
            Err(_) => events.push(Event::Line("{\"id\":null,\"result\":null,\"error\":[20,\"Request is not UTF-8\",null]}\n".into())),
        }
        let displaced = claimer.displaced;
        let r = self.handle_events(slot, &mut events);
        events.clear();
        self.events = events;
        r?;
        match displaced {
            Some(other) => self.move_extranonce(other),
            None => Ok(()),
        }
    }

    /// `slot`'s extranonce1 was taken over by a session resuming it from
    /// the same address (the miner's new connection, while the old one has
    /// not been seen to die): a fresh value with `mining.set_extranonce`
    /// when the miner subscribed to extranonce changes, otherwise a
    /// disconnect, since it cannot go on mining without a value of its own.
    fn move_extranonce(&mut self, slot: u32) -> Result<(), String> {
        let c = &self.conns[slot as usize];
        if !c.open || c.closing || c.close_after_flush.is_some() {
            return Ok(());
        }
        let (en1, _) = self.extranonces.claim_for(None, claimant(slot, c.ip));
        let mut events = std::mem::take(&mut self.events);
        let Shard { conns, jobs, .. } = self;
        let moved = conns[slot as usize].session.change_extranonce1(en1.clone(), jobs, &mut events);
        let r = if moved {
            self.counters.extranonce_moved.fetch_add(1, Ordering::Relaxed);
            self.handle_events(slot, &mut events)
        } else {
            self.extranonces.release(&en1, slot);
            self.counters.extranonce_disconnected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                shard = self.id,
                slot,
                "extranonce1 resumed by a newer connection from the same address; disconnecting the old one"
            );
            self.start_close(slot);
            Ok(())
        };
        events.clear();
        self.events = events;
        r
    }

    fn handle_events(&mut self, slot: u32, events: &mut Vec<Event>) -> Result<(), String> {
        for e in events.drain(..) {
            match e {
                Event::Line(l) => {
                    if let Some(code) = error_code(&l)
                        && let Some(c) = self.counters.errors.get(code.wrapping_sub(20) as usize)
                    {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    self.queue(slot, l.as_bytes());
                }
                Event::Authorized { address } => {
                    self.counters.addresses_authorized.fetch_add(1, Ordering::Relaxed);
                    if let Some(tx) = &self.cfg.authorized {
                        // The registry ignores addresses it knows; a gone
                        // registry (shutting down) is no reason to stop.
                        let _ = tx.send(address);
                    }
                }
                Event::Verify(p) => {
                    let generation = self.conns[slot as usize].generation;
                    if let Err(e) = self.verify_tx.try_send(VerifyReq { shard: self.id, slot, generation, pending: p }) {
                        self.counters.verify_busy.fetch_add(1, Ordering::Relaxed);
                        self.counters.errors[0].fetch_add(1, Ordering::Relaxed);
                        let id = &e.into_inner().pending.id;
                        let msg = format!("{{\"id\":{id},\"result\":null,\"error\":[20,\"Server busy: share not checked\",null]}}\n");
                        self.queue(slot, msg.as_bytes());
                    }
                }
                Event::Block { job, header, extranonce1, extranonce2, address, worker } => {
                    // Before anything else is done with the share.
                    self.counters.blocks_found.fetch_add(1, Ordering::Relaxed);
                    let _ = self.block_tx.send(BlockReq { job, header, extranonce1, extranonce2, address, worker });
                }
                Event::Share(s) => {
                    let work = if self.work_cache.0 == s.share_target {
                        self.work_cache.1
                    } else {
                        let w = work_of(s.share_target);
                        self.work_cache = (s.share_target, w);
                        w
                    };
                    let rec = ShareRecord::from_accepted(s, work);
                    self.record_buf.clear();
                    rec.encode_into(&mut self.record_buf);
                    self.journal
                        .append(kinds::SHARE, SHARE_RECORD_VERSION, otedama_journal::now_ns(), &self.record_buf)
                        .map_err(|e| format!("shard {}'s share journal: {e}", self.id))?;
                    self.last_append = self.now;
                    self.report.shares_journaled += 1;
                    self.counters.shares_accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if !c.mining && c.open && c.session.is_mining() {
            c.mining = true;
            self.counters.sessions_mining.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn drain_jobs(&mut self) -> bool {
        let mut did = false;
        while let Ok(m) = self.job_rx.pop() {
            did = true;
            let (id, clean) = (m.job.id, m.clean);
            let line = self.jobs.push(m.job, clean).as_bytes().to_vec();
            let stratum = self.cfg.baseline == Baseline::Stratum;
            // Solo: each payout script's variant line, copied out of the
            // job table once per job (not once per session).
            let mut solo_lines: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::collections::BTreeMap::new();
            let mut key = Vec::new();
            for slot in 0..self.conns.len() as u32 {
                let c = &mut self.conns[slot as usize];
                if c.mining && c.open && !c.closing && c.close_after_flush.is_none() {
                    if stratum {
                        c.session.on_job(id);
                    }
                    match c.session.payout_script() {
                        // Solo: the variant paying this session, serialised
                        // once per payout script.
                        Some(script) => {
                            key.clear();
                            key.extend_from_slice(script);
                            if !solo_lines.contains_key(&key) {
                                let l = self.jobs.variant(id, &key, clean).map(|(_, l)| l.as_bytes().to_vec()).unwrap_or_default();
                                solo_lines.insert(key.clone(), l);
                            }
                            self.queue(slot, &solo_lines[&key]);
                        }
                        None => self.queue(slot, &line),
                    }
                }
            }
        }
        did
    }

    fn drain_verified(&mut self) -> Result<bool, String> {
        let mut did = false;
        while let Ok(v) = self.verified.try_recv() {
            did = true;
            let live = self.conns.get(v.slot as usize).is_some_and(|c| c.open && !c.closing && c.generation == v.generation);
            if !live {
                // The miner left before its share was checked: there is no
                // one to answer or credit.
                continue;
            }
            let mut events = std::mem::take(&mut self.events);
            self.conns[v.slot as usize].session.judge(*v.pending, &v.pow, self.unix, &mut events);
            let r = self.handle_events(v.slot, &mut events);
            events.clear();
            self.events = events;
            r?;
        }
        Ok(did)
    }

    /// Appends bytes to a connection's outbound queue; a full queue cuts
    /// the connection (a slow reader never stalls anyone else).
    fn queue(&mut self, slot: u32, bytes: &[u8]) {
        let limit = self.cfg.outbound_queue_bytes;
        let c = &mut self.conns[slot as usize];
        if c.closing || !c.open {
            return;
        }
        let queued = c.out.len() + c.flight.len() - c.flight_off;
        if queued + bytes.len() > limit {
            self.counters.slow_readers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(shard = self.id, slot, queued, "outbound queue full: slow reader disconnected");
            self.start_close(slot);
            return;
        }
        match c.tls.as_mut() {
            Some(t) => {
                use std::io::Write;
                let _ = t.writer().write_all(bytes);
                while t.wants_write() {
                    if t.write_tls(&mut c.out).is_err() {
                        break;
                    }
                }
            }
            None => c.out.extend_from_slice(bytes),
        }
        self.mark_dirty(slot);
    }

    fn mark_dirty(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn flush_sends(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            let c = &mut self.conns[slot as usize];
            c.dirty = false;
            if !c.open || c.closing || c.send_inflight {
                continue;
            }
            if c.out.is_empty() {
                if c.close_after_flush.is_some() {
                    self.start_close(slot);
                }
                continue;
            }
            std::mem::swap(&mut c.out, &mut c.flight);
            c.flight_off = 0;
            self.submit_send(slot);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn submit_send(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let rest = &c.flight[c.flight_off..];
        c.send_inflight = true;
        let e = opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32).flags(libc::MSG_NOSIGNAL).build().user_data(ud(
            OP_SEND,
            slot,
            c.generation,
        ));
        self.push_sqe(e);
    }

    /// Shuts the socket down; the slot is freed once no operation on it is
    /// in flight.
    fn start_close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.open || c.closing {
            return;
        }
        c.closing = true;
        // SAFETY: our descriptor; ends the receive in flight.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        let (r, s, g) = (c.recv_armed, c.send_inflight, c.generation);
        for (inflight, op) in [(r, OP_RECV), (s, OP_SEND)] {
            if inflight {
                let e = opcode::AsyncCancel::new(ud(op, slot, g)).build().user_data(ud(OP_CANCEL, slot, 0));
                self.push_sqe(e);
            }
        }
        self.maybe_finish_close(slot);
    }

    fn maybe_finish_close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.closing || c.recv_armed || c.send_inflight {
            return;
        }
        // SAFETY: no operation refers to the descriptor any more.
        unsafe { libc::close(c.fd) };
        c.open = false;
        c.fd = -1;
        c.generation = c.generation.wrapping_add(1);
        c.out = Vec::new();
        c.flight = Vec::new();
        c.partial = Vec::new();
        c.tls = None;
        if c.mining {
            c.mining = false;
            self.counters.sessions_mining.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(en1) = c.session.extranonce1() {
            self.extranonces.release(en1, slot);
        }
        c.session = Session::new(self.rules.clone());
        if let Some(ip) = c.ip.take() {
            self.per_ip.leave(ip);
        }
        self.free.push(slot);
        self.counters.connections_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// One slice of the timeout checks: the next `1/TIMER_SLICES` of the
    /// connection table from where the last slice stopped.
    fn timers(&mut self) -> Result<(), String> {
        let now = self.now;
        let len = self.conns.len() as u32;
        let start = self.timer_cursor.min(len);
        let end = start.saturating_add(len.div_ceil(TIMER_SLICES)).min(len);
        self.timer_cursor = if end >= len { 0 } else { end };
        for slot in start..end {
            let c = &self.conns[slot as usize];
            if !c.open || c.closing {
                continue;
            }
            if let Some(since) = c.close_after_flush {
                if now.duration_since(since) > CLOSE_GRACE {
                    self.start_close(slot);
                }
                continue;
            }
            let why = if !c.mining && now.duration_since(c.opened) > self.cfg.handshake_timeout {
                Some("did not subscribe and authorize in time")
            } else if now.duration_since(c.last_rx) > self.cfg.idle_timeout {
                Some("idle")
            } else if !c.partial.is_empty() && now.duration_since(c.partial_since) > self.cfg.line_timeout {
                Some("a request line took too long to arrive")
            } else {
                None
            };
            if let Some(why) = why {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(shard = self.id, slot, why, "closing a Stratum connection");
                self.start_close(slot);
            }
        }
        if now.duration_since(self.last_append) >= HEARTBEAT_EVERY {
            self.journal.append_heartbeat(otedama_journal::now_ns()).map_err(|e| format!("shard {}'s share journal: {e}", self.id))?;
            self.last_append = now;
        }
        Ok(())
    }

    fn begin_shutdown(&mut self) {
        self.accepting = false;
        let e = opcode::AsyncCancel::new(ud(OP_ACCEPT, 0, 0)).build().user_data(ud(OP_CANCEL, 0, 0));
        self.push_sqe(e);
        if self.tls_fd.is_some() {
            let e = opcode::AsyncCancel::new(ud(OP_ACCEPT, 1, 0)).build().user_data(ud(OP_CANCEL, 0, 0));
            self.push_sqe(e);
        }
        let reconnect = b"{\"id\":null,\"method\":\"client.reconnect\",\"params\":[]}\n";
        for slot in 0..self.conns.len() as u32 {
            if self.conns[slot as usize].open && !self.conns[slot as usize].closing {
                self.queue(slot, reconnect);
                if let Some(t) = self.conns[slot as usize].tls.as_mut() {
                    t.send_close_notify();
                }
                self.tls_flush(slot);
                self.close_after_flush(slot);
            }
        }
        tracing::info!(shard = self.id, "Stratum shard shutting down: no longer accepting; asking every miner to reconnect");
    }

    fn finish_shutdown(&mut self, still_open: usize) {
        // SAFETY: our listeners; accept was cancelled.
        unsafe { libc::close(self.listen_fd) };
        if let Some(fd) = self.tls_fd {
            unsafe { libc::close(fd) };
        }
        if still_open > 0 {
            tracing::warn!(shard = self.id, still_open, "connections did not close in time; leaking their buffers");
            for c in &mut self.conns {
                if c.open {
                    unsafe { libc::close(c.fd) };
                    std::mem::forget(std::mem::take(&mut c.flight));
                }
            }
            // The provided buffers may still be written to by a receive
            // that was never reaped.
            let bufs = std::mem::replace(&mut self.bufs, BufRing::empty());
            std::mem::forget(bufs);
        }
    }
}

/// The error code of an error response line, if it is one.
fn error_code(line: &str) -> Option<u32> {
    let at = line.find("\"error\":[")? + 9;
    line[at..].split(',').next()?.parse().ok()
}

/// The shard's extranonce1 values as a session claims them: who asks, and
/// whom a resume displaced.
struct Claimer<'a> {
    en1s: &'a mut ShardExtranonces,
    slot: u32,
    ip: Option<IpAddr>,
    displaced: Option<u32>,
}

impl Extranonce1s for Claimer<'_> {
    fn claim(&mut self, wanted: Option<&[u8]>) -> Vec<u8> {
        let (en1, displaced) = self.en1s.claim_for(wanted, claimant(self.slot, self.ip));
        self.displaced = displaced;
        en1
    }
}

fn claimant(slot: u32, ip: Option<IpAddr>) -> Claimant {
    let origin = match ip {
        Some(IpAddr::V4(a)) => u128::from(a.to_ipv6_mapped()),
        Some(IpAddr::V6(a)) => u128::from(a),
        None => 0,
    };
    Claimant { owner: slot, origin }
}

fn peer_ip(fd: RawFd) -> Option<IpAddr> {
    crate::gateway::listener::peer_addr(fd).ok().map(|a| a.ip())
}
