//! An I/O shard: one thread, one io_uring, one `SO_REUSEPORT` listener.
//!
//! Multishot accept; one recv in flight per connection into that
//! connection's own buffer; one send in flight per connection, with later
//! frames queued behind it (bounded: a client that stops reading is cut
//! off). Frames are decoded in place; commands go to the engine shard over
//! a ring, answers come back over another. The shard never blocks on a
//! client or on the engine.
//!
//! Two kinds of messages wait in the shard instead of going straight to a
//! connection: an ack-on-durable session's (held, in engine order, until
//! the journal's durable watermark covers them; the journal's sync thread wakes
//! the shard when it moves), and anything the engine sends a session while
//! the replayer is still serving it its missed messages (kept behind the
//! replay, bounded like the outbound queue).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use otedama_journal::DurabilityWatch;
use rtrb::{Consumer, Producer};

use super::auth::{AuthReq, AuthResp};
use super::replayer::{ReplayChunk, ReplayCtl};
use super::{ConnRef, Ctl, GatewayConfig, GatewayCounters, Poll, ToEngine, ToShard, Waker, listener};
use crate::sessions::Role;
use crate::wire::{self, Frame, FrameError, GatewayReject, GoodbyeReason, LoginReject};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;

fn cfg_max_connections(cfg: &GatewayConfig) -> usize {
    cfg.max_connections.min(1 << 16)
}

fn ud(op: u64, slot: u32, generation: u32) -> u64 {
    (op << 56) | ((slot as u64 & 0xff_ffff) << 32) | generation as u64
}

const INBUF: usize = 16 << 10;
/// Longest a closing connection may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
const TIMER_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connected,
    Authing,
    LoggedIn,
}

struct Conn {
    fd: RawFd,
    generation: u32,
    open: bool,
    state: State,
    inbuf: Box<[u8]>,
    in_len: usize,
    /// Frames queued behind the send in flight.
    out: Vec<u8>,
    /// Bytes handed to the kernel; `flight_off` of them are sent.
    flight: Vec<u8>,
    flight_off: usize,
    recv_inflight: bool,
    send_inflight: bool,
    dirty: bool,
    /// `shutdown(2)` issued; waiting for the ops in flight to end.
    closing: bool,
    /// Stop reading; close once the queued frames are sent.
    close_after_flush: Option<Instant>,
    name: u32,
    account: u32,
    admin: bool,
    read_only: bool,
    /// Login's `next_seq` and `flags`, kept while the credentials are checked.
    login_next_seq: u64,
    login_flags: u32,
    /// The replayer is serving this session: what the engine sends it
    /// meanwhile waits here, behind the replay.
    replay: Option<Replay>,
    opened: Instant,
    last_rx: Instant,
    last_tx: Instant,
    hb_timeout: Duration,
    tokens: f64,
    refilled: Instant,
}

struct Replay {
    held: Vec<u8>,
    /// The connection took a chunk while its queue was full: ask for the
    /// next when it drains.
    want_more: bool,
}

/// What an I/O shard shares with the replayer and the journal's sync thread.
pub(crate) struct IoLinks {
    pub durable: DurabilityWatch,
    /// The lowest journal sequence this shard waits to see durable (0:
    /// none); the journal's sync thread reads it (`wake_durable`).
    pub durable_wait: Arc<AtomicU64>,
    pub replay_chunks: Receiver<ReplayChunk>,
    pub replay_ctl: Sender<ReplayCtl>,
    pub replayer: Thread,
}

pub(crate) struct IoShard {
    // The ring first: dropped before the buffers its operations point into.
    ring: IoUring,
    id: u16,
    cfg: GatewayConfig,
    listen_fd: RawFd,
    accepting: bool,
    conns: Vec<Conn>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    to_engine: Producer<ToEngine>,
    from_engine: Consumer<ToShard>,
    auth_req: Producer<AuthReq>,
    auth_resp: Consumer<AuthResp>,
    waker: Arc<Waker>,
    engine_waker: Arc<Waker>,
    auth_thread: Thread,
    wake_buf: Box<u64>,
    stop: Arc<AtomicBool>,
    counters: Arc<GatewayCounters>,
    engine_pushed: bool,
    /// Session ends waiting for room in the ring to the engine (at most
    /// one per connection).
    pending_to_engine: std::collections::VecDeque<ToEngine>,
    now: Instant,
    last_timer: Instant,
    stopping: Option<Instant>,
    cqes: Vec<(u64, i32, u32)>,
    links: IoLinks,
    /// Messages for ack-on-durable sessions, in engine order, waiting for
    /// the journal's durable watermark.
    held: VecDeque<ToShard>,
}

impl IoShard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u16,
        cfg: GatewayConfig,
        listen_fd: RawFd,
        to_engine: Producer<ToEngine>,
        from_engine: Consumer<ToShard>,
        auth_req: Producer<AuthReq>,
        auth_resp: Consumer<AuthResp>,
        waker: Arc<Waker>,
        engine_waker: Arc<Waker>,
        auth_thread: Thread,
        stop: Arc<AtomicBool>,
        counters: Arc<GatewayCounters>,
        links: IoLinks,
    ) -> std::io::Result<IoShard> {
        // Cooperative task running: the kernel does not interrupt the shard to
        // post completions; it flags pending work (IORING_SQ_TASKRUN) and the
        // shard runs it on its next enter, in one batch.
        let ring = IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_taskrun_flag().build(4096)?;
        let now = Instant::now();
        let pending_cap = cfg_max_connections(&cfg);
        Ok(IoShard {
            ring,
            id,
            cfg,
            listen_fd,
            accepting: true,
            conns: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            to_engine,
            from_engine,
            auth_req,
            auth_resp,
            waker,
            engine_waker,
            auth_thread,
            wake_buf: Box::new(0),
            stop,
            counters,
            engine_pushed: false,
            pending_to_engine: std::collections::VecDeque::with_capacity(pending_cap),
            now,
            last_timer: now,
            stopping: None,
            cqes: Vec::with_capacity(1024),
            links,
            held: VecDeque::new(),
        })
    }

    fn push_sqe(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points to lives in a Conn (or
            // in `wake_buf`) that is not freed or moved until the
            // operation's completion has been reaped.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn arm_accept(&mut self) {
        let e = opcode::AcceptMulti::new(types::Fd(self.listen_fd)).flags(libc::SOCK_CLOEXEC).build().user_data(ud(OP_ACCEPT, 0, 0));
        self.push_sqe(e);
    }

    fn arm_wake(&mut self) {
        let p: *mut u64 = &mut *self.wake_buf;
        let e = opcode::Read::new(types::Fd(self.waker.fd()), p.cast(), 8).build().user_data(ud(OP_WAKE, 0, 0));
        self.push_sqe(e);
    }

    fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.recv_inflight || c.closing || c.close_after_flush.is_some() {
            return;
        }
        let free = c.inbuf.len() - c.in_len;
        debug_assert!(free > 0, "a full buffer holds a complete frame, which was consumed");
        // SAFETY: in bounds of the connection's buffer.
        let ptr = unsafe { c.inbuf.as_mut_ptr().add(c.in_len) };
        c.recv_inflight = true;
        let e = opcode::Recv::new(types::Fd(c.fd), ptr, free as u32).build().user_data(ud(OP_RECV, slot, c.generation));
        self.push_sqe(e);
    }

    pub fn run(mut self) {
        self.start();
        let mut idle = 0u32;
        loop {
            let (did, finished) = self.turn();
            if finished {
                return;
            }
            if did {
                idle = 0;
                continue;
            }
            idle += 1;
            self.idle(idle, true);
        }
    }

    pub fn start(&mut self) {
        self.arm_accept();
        self.arm_wake();
        self.last_timer = Instant::now();
    }

    /// One pass: completions, the rings, sends, timers, shutdown. Returns
    /// (did work, finished shutting down).
    pub fn turn(&mut self) -> (bool, bool) {
        self.now = Instant::now();
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
                self.complete(u, res, flags);
            }
        }
        self.cqes = cqes;
        did |= self.retry_pending();
        did |= self.drain_auth();
        did |= self.drain_engine();
        did |= self.release_durable();
        did |= self.drain_replay();
        self.flush_sends();
        if self.engine_pushed {
            self.engine_pushed = false;
            self.engine_waker.wake();
        }
        if self.now.duration_since(self.last_timer) >= TIMER_EVERY {
            self.last_timer = self.now;
            self.timers();
        }
        if self.stopping.is_none() && self.stop.load(Ordering::Relaxed) {
            self.stopping = Some(self.now);
            self.begin_shutdown();
        }
        if let Some(t) = self.stopping {
            let open = self.conns.iter().filter(|c| c.open).count();
            if open == 0 || self.now.duration_since(t) > CLOSE_GRACE + Duration::from_secs(1) {
                self.finish_shutdown(open);
                return (did, true);
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
        (did, false)
    }

    /// Waits for work after `idle` empty turns: spins, or (parking mode,
    /// after a short spin) sleeps in io_uring until a completion, a wake
    /// on the eventfd, or the next timer tick. `others_empty`: whether the
    /// rings of a role sharing this thread are empty too.
    pub fn idle(&mut self, idle: u32, others_empty: bool) {
        match self.cfg.io_poll {
            Poll::Spin => std::hint::spin_loop(),
            Poll::Park if idle < 64 => std::hint::spin_loop(),
            Poll::Park => {
                self.waker.going_to_sleep();
                if others_empty
                    && !self.held_ready()
                    && self.from_engine.is_empty()
                    && self.auth_resp.is_empty()
                    && self.links.replay_chunks.is_empty()
                    && self.ring.completion().is_empty()
                {
                    let ts = types::Timespec::new().nsec(TIMER_EVERY.as_nanos() as u32);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    let _ = self.ring.submitter().submit_with_args(1, &args);
                }
                self.waker.awake();
            }
        }
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) {
        let op = u >> 56;
        let slot = ((u >> 32) & 0xff_ffff) as u32;
        let generation = u as u32;
        match op {
            OP_ACCEPT => {
                if res >= 0 {
                    self.accepted(res);
                } else if res != -libc::ECANCELED {
                    tracing::warn!(shard = self.id, error = %std::io::Error::from_raw_os_error(-res), "accept failed");
                }
                if !cqueue::more(flags) && self.accepting {
                    self.arm_accept();
                }
            }
            OP_WAKE => {
                self.arm_wake();
            }
            OP_RECV => {
                let Some(c) = self.conns.get_mut(slot as usize).filter(|c| c.open && c.generation == generation) else { return };
                c.recv_inflight = false;
                if c.closing {
                    self.maybe_finish_close(slot);
                } else if res <= 0 {
                    if res < 0 && res != -libc::ECONNRESET {
                        tracing::debug!(shard = self.id, slot, error = %std::io::Error::from_raw_os_error(-res), "recv failed");
                    }
                    self.start_close(slot);
                } else if c.close_after_flush.is_none() {
                    c.in_len += res as usize;
                    c.last_rx = self.now;
                    self.on_bytes(slot);
                    self.arm_recv(slot);
                }
            }
            OP_SEND => {
                let Some(c) = self.conns.get_mut(slot as usize).filter(|c| c.open && c.generation == generation) else { return };
                c.send_inflight = false;
                if c.closing {
                    self.maybe_finish_close(slot);
                    return;
                }
                if res < 0 {
                    self.start_close(slot);
                    return;
                }
                c.flight_off += res as usize;
                if c.flight_off < c.flight.len() {
                    self.submit_send(slot);
                } else {
                    c.flight.clear();
                    c.flight_off = 0;
                    if !c.out.is_empty() {
                        self.mark_dirty(slot);
                    } else if c.close_after_flush.is_some() {
                        self.start_close(slot);
                    }
                    self.maybe_more_replay(slot);
                }
            }
            _ => {}
        }
    }

    fn accepted(&mut self, fd: RawFd) {
        if !self.accepting {
            unsafe { libc::close(fd) };
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.conns.len() < self.cfg.max_connections => {
                self.conns.push(Conn {
                    fd: -1,
                    generation: 0,
                    open: false,
                    state: State::Connected,
                    inbuf: vec![0u8; INBUF].into_boxed_slice(),
                    in_len: 0,
                    out: Vec::new(),
                    flight: Vec::new(),
                    flight_off: 0,
                    recv_inflight: false,
                    send_inflight: false,
                    dirty: false,
                    closing: false,
                    close_after_flush: None,
                    name: 0,
                    account: 0,
                    admin: false,
                    read_only: false,
                    login_next_seq: 0,
                    login_flags: 0,
                    replay: None,
                    opened: self.now,
                    last_rx: self.now,
                    last_tx: self.now,
                    hb_timeout: Duration::ZERO,
                    tokens: 0.0,
                    refilled: self.now,
                });
                (self.conns.len() - 1) as u32
            }
            None => {
                tracing::warn!(shard = self.id, max = self.cfg.max_connections, "connection limit reached; refusing a connection");
                unsafe { libc::close(fd) };
                return;
            }
        };
        let _ = listener::nodelay(fd);
        let now = self.now;
        let burst = self.cfg.rate_burst as f64;
        let c = &mut self.conns[slot as usize];
        c.fd = fd;
        c.open = true;
        c.state = State::Connected;
        c.in_len = 0;
        c.out.clear();
        c.flight.clear();
        c.flight_off = 0;
        c.closing = false;
        c.close_after_flush = None;
        c.dirty = false;
        c.replay = None;
        c.opened = now;
        c.last_rx = now;
        c.last_tx = now;
        c.tokens = burst;
        c.refilled = now;
        self.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.arm_recv(slot);
    }

    fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef { shard: self.id, slot, generation: self.conns[slot as usize].generation }
    }

    /// Decodes every complete frame in the connection's buffer.
    fn on_bytes(&mut self, slot: u32) {
        let buf = std::mem::take(&mut self.conns[slot as usize].inbuf);
        let len = self.conns[slot as usize].in_len;
        let mut pos = 0;
        while pos < len {
            match wire::split_frame(&buf[pos..len], true) {
                Ok(None) => break,
                Ok(Some((f, used))) => {
                    pos += used;
                    self.on_frame(slot, f);
                    let c = &self.conns[slot as usize];
                    if c.closing || c.close_after_flush.is_some() {
                        break;
                    }
                }
                Err(e) => {
                    self.protocol_error(slot, e);
                    break;
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        c.inbuf = buf;
        c.inbuf.copy_within(pos..len, 0);
        c.in_len = len - pos;
    }

    fn protocol_error(&mut self, slot: u32, e: FrameError) {
        self.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard = self.id, slot, error = %e, "protocol error; disconnecting");
        self.goodbye(slot, GoodbyeReason::ProtocolError);
    }

    fn on_frame(&mut self, slot: u32, f: Frame<'_>) {
        let state = self.conns[slot as usize].state;
        match (state, f.ty) {
            (State::Connected, wire::Login::TYPE) => {
                let v = wire::LoginView::parse(f.body).expect("split_frame checked the size");
                let hb = if v.heartbeat_ms() == 0 { self.cfg.heartbeat_ms } else { v.heartbeat_ms().clamp(100, 60_000) };
                let c = &mut self.conns[slot as usize];
                c.hb_timeout = Duration::from_millis(hb as u64 * self.cfg.heartbeat_misses.max(1) as u64);
                c.login_next_seq = v.next_seq();
                c.login_flags = v.flags();
                let req = AuthReq { conn: self.conn_ref(slot), key_id: v.key_id(), secret: v.secret() };
                if self.auth_req.push(req).is_err() {
                    self.login_rejected(slot, LoginReject::Busy);
                    return;
                }
                self.conns[slot as usize].state = State::Authing;
                self.auth_thread.unpark();
            }
            (State::Connected, _) => self.goodbye(slot, GoodbyeReason::NotLoggedIn),
            (State::Authing, _) => {
                tracing::info!(shard = self.id, slot, "frame before the login answer; disconnecting");
                self.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                self.goodbye(slot, GoodbyeReason::ProtocolError);
            }
            (State::LoggedIn, wire::ClientHeartbeat::TYPE) => {}
            (State::LoggedIn, wire::Logout::TYPE) => self.goodbye(slot, GoodbyeReason::Logout),
            (State::LoggedIn, wire::Login::TYPE) => {
                self.counters.protocol_errors.fetch_add(1, Ordering::Relaxed);
                self.goodbye(slot, GoodbyeReason::ProtocolError);
            }
            (State::LoggedIn, _) => self.on_command(slot, f),
        }
    }

    fn on_command(&mut self, slot: u32, f: Frame<'_>) {
        let (rate, burst) = (self.cfg.rate_per_sec as f64, self.cfg.rate_burst as f64);
        let now = self.now;
        let c = &mut self.conns[slot as usize];
        let dt = now.duration_since(c.refilled).as_secs_f64();
        c.refilled = now;
        c.tokens = (c.tokens + dt * rate).min(burst);
        let client_seq = if f.body.len() >= 8 { u64::from_le_bytes(f.body[..8].try_into().expect("8 bytes")) } else { 0 };
        if c.tokens < 1.0 {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            let m = wire::Throttled { seq: 0, ts: otedama_journal::now_ns(), client_seq };
            self.send_frame(slot, &mut [0; 64][..], |b| m.encode(b));
            return;
        }
        c.tokens -= 1.0;
        let (name, account, admin) = (c.name, c.account, c.admin);
        if c.read_only {
            let client_seq = if f.body.len() >= 8 { u64::from_le_bytes(f.body[..8].try_into().expect("8 bytes")) } else { 0 };
            self.reject(slot, client_seq, GatewayReject::ReadOnly);
            return;
        }
        if f.ty == wire::EngineStatsRequest::TYPE {
            let Some(r) = wire::EngineStatsRequestView::parse(f.body).map(|v| v.to_owned()) else {
                return self.reject(slot, client_seq, GatewayReject::BadField);
            };
            if !admin {
                return self.reject(slot, client_seq, GatewayReject::NotAdmin);
            }
            if r.flags & !1 != 0 || r.reserved != 0 {
                return self.reject(slot, client_seq, GatewayReject::BadField);
            }
            let conn = self.conn_ref(slot);
            if !self.try_engine(ToEngine::Stats { conn, client_seq, reset: r.flags & 1 != 0 }) {
                self.counters.engine_busy.fetch_add(1, Ordering::Relaxed);
                self.reject(slot, client_seq, GatewayReject::EngineBusy);
            }
            return;
        }
        match wire::decode_command(f, account, admin) {
            Ok((client_seq, kind)) => {
                let conn = self.conn_ref(slot);
                if !self.try_engine(ToEngine::Command { conn, name, client_seq, kind }) {
                    self.counters.engine_busy.fetch_add(1, Ordering::Relaxed);
                    self.reject(slot, client_seq, GatewayReject::EngineBusy);
                }
            }
            Err((client_seq, why)) => self.reject(slot, client_seq, why),
        }
    }

    fn reject(&mut self, slot: u32, client_seq: u64, why: GatewayReject) {
        let m = wire::Rejected { seq: 0, ts: otedama_journal::now_ns(), client_seq, reason: why as u16, reserved: [0; 6] };
        self.send_frame(slot, &mut [0; 64][..], |b| m.encode(b));
    }

    fn login_rejected(&mut self, slot: u32, why: LoginReject) {
        self.counters.logins_failed.fetch_add(1, Ordering::Relaxed);
        let m = wire::LoginRejected { seq: 0, ts: otedama_journal::now_ns(), reason: why as u16, reserved: [0; 6] };
        self.send_frame(slot, &mut [0; 64][..], |b| m.encode(b));
        self.conns[slot as usize].close_after_flush = Some(self.now);
    }

    /// Sends Goodbye and closes once it is out.
    fn goodbye(&mut self, slot: u32, why: GoodbyeReason) {
        let c = &self.conns[slot as usize];
        if c.closing || c.close_after_flush.is_some() {
            return;
        }
        let m = wire::Goodbye { seq: 0, ts: otedama_journal::now_ns(), reason: why as u16, reserved: [0; 6] };
        self.send_frame(slot, &mut [0; 64][..], |b| m.encode(b));
        if let Some(c) = self.conns.get_mut(slot as usize)
            && !c.closing
        {
            c.close_after_flush = Some(self.now);
            if c.out.is_empty() && !c.send_inflight && !c.dirty {
                self.start_close(slot);
            }
        }
    }

    /// Queues one frame, encoded by `encode` into `scratch`.
    fn send_frame(&mut self, slot: u32, scratch: &mut [u8], encode: impl FnOnce(&mut [u8]) -> usize) {
        let n = encode(scratch);
        self.queue(slot, &scratch[..n]);
    }

    /// Appends bytes to a connection's outbound queue; a full queue cuts
    /// the connection (a slow reader never stalls anyone else).
    fn queue(&mut self, slot: u32, bytes: &[u8]) {
        let limit = self.cfg.outbound_queue_bytes;
        let c = &mut self.conns[slot as usize];
        if c.closing {
            return;
        }
        let queued = c.out.len() + c.flight.len() - c.flight_off;
        if queued + bytes.len() > limit {
            self.counters.slow_readers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(shard = self.id, slot, queued, "outbound queue full: slow reader disconnected");
            self.start_close(slot);
            return;
        }
        c.out.extend_from_slice(bytes);
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
            if !c.open || c.closing || c.send_inflight || c.out.is_empty() {
                continue;
            }
            std::mem::swap(&mut c.out, &mut c.flight);
            c.flight_off = 0;
            c.last_tx = self.now;
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
    /// in flight (the kernel may still be writing into its buffer).
    fn start_close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.open || c.closing {
            return;
        }
        c.closing = true;
        // SAFETY: our descriptor; wakes the recv in flight with 0 bytes.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        let (r, s, g) = (c.recv_inflight, c.send_inflight, c.generation);
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
        if !c.closing || c.recv_inflight || c.send_inflight {
            return;
        }
        // SAFETY: no operation refers to the descriptor any more.
        unsafe { libc::close(c.fd) };
        c.open = false;
        c.fd = -1;
        let was = c.state;
        let conn = ConnRef { shard: self.id, slot, generation: c.generation };
        let name = c.name;
        c.generation = c.generation.wrapping_add(1);
        c.state = State::Connected;
        c.out.clear();
        c.flight.clear();
        if c.replay.take().is_some() {
            let _ = self.links.replay_ctl.send(ReplayCtl::Stop(conn));
            self.links.replayer.unpark();
        }
        self.free.push(slot);
        self.counters.connections_closed.fetch_add(1, Ordering::Relaxed);
        if was == State::LoggedIn {
            self.tell_engine(ToEngine::Close { conn, name });
        }
    }

    /// Hands a message the engine must see (a session's end) to the ring,
    /// or, when the ring is full, to a list retried every turn: the shard
    /// never waits for the engine (which may be waiting for this shard, or
    /// be this very thread in co-located mode). Order is kept: while the
    /// list is not empty, every later message queues behind it or is
    /// refused (`try_engine`).
    fn tell_engine(&mut self, m: ToEngine) {
        if self.pending_to_engine.is_empty() {
            match self.to_engine.push(m) {
                Ok(()) => self.engine_pushed = true,
                Err(rtrb::PushError::Full(back)) => self.pending_to_engine.push_back(back),
            }
        } else {
            self.pending_to_engine.push_back(m);
        }
    }

    /// Pushes a message the engine may refuse (a command, a login): false
    /// if the ring is full or control messages are still waiting for room.
    fn try_engine(&mut self, m: ToEngine) -> bool {
        if !self.pending_to_engine.is_empty() || self.to_engine.push(m).is_err() {
            return false;
        }
        self.engine_pushed = true;
        true
    }

    /// Moves waiting control messages into the ring as room appears.
    fn retry_pending(&mut self) -> bool {
        let mut did = false;
        while let Some(m) = self.pending_to_engine.pop_front() {
            match self.to_engine.push(m) {
                Ok(()) => {
                    did = true;
                    self.engine_pushed = true;
                }
                Err(rtrb::PushError::Full(back)) => {
                    self.pending_to_engine.push_front(back);
                    break;
                }
            }
        }
        did
    }

    /// Disconnects a session whose outbound messages the engine could not
    /// deliver (co-located mode, ring full): explicit, never a silent drop.
    pub fn kick(&mut self, conn: ConnRef) {
        let live = self.conns.get(conn.slot as usize).is_some_and(|c| c.open && c.generation == conn.generation);
        if live {
            self.counters.slow_readers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(shard = self.id, slot = conn.slot, "engine could not deliver to this session: disconnected");
            self.start_close(conn.slot);
        }
    }

    fn drain_auth(&mut self) -> bool {
        let mut did = false;
        while let Ok(r) = self.auth_resp.pop() {
            did = true;
            let slot = r.conn.slot;
            let live = self
                .conns
                .get(slot as usize)
                .is_some_and(|c| c.open && !c.closing && c.generation == r.conn.generation && c.state == State::Authing);
            if !live {
                continue;
            }
            match r.ok {
                None => {
                    tracing::info!(shard = self.id, key = format_args!("{:016x}", r.key_id), "login refused: bad credentials");
                    self.login_rejected(slot, LoginReject::BadCredentials);
                }
                Some(binding) => {
                    let conn = self.conn_ref(slot);
                    let c = &self.conns[slot as usize];
                    let (next_seq, flags) = (c.login_next_seq, c.login_flags);
                    if !self.try_engine(ToEngine::Open { conn, binding, next_seq, flags }) {
                        self.login_rejected(slot, LoginReject::Busy);
                    }
                }
            }
        }
        did
    }

    fn drain_engine(&mut self) -> bool {
        let mut did = false;
        while let Ok(m) = self.from_engine.pop() {
            did = true;
            let slot = m.conn.slot;
            let live = self.conns.get(slot as usize).is_some_and(|c| c.open && !c.closing && c.generation == m.conn.generation);
            match m.ctl {
                Ctl::Msg if live => self.deliver(slot, &m.bytes[..m.len as usize]),
                Ctl::Msg => {}
                Ctl::MsgDurable { after } if live => {
                    if self.held.is_empty() && after <= self.links.durable.durable_seq() {
                        self.deliver(slot, &m.bytes[..m.len as usize]);
                    } else {
                        self.hold(m, after);
                    }
                }
                Ctl::MsgDurable { .. } => {}
                Ctl::LoginOk { name, .. } if !live => {
                    // Closed while the engine opened it: unbind at once.
                    self.tell_engine(ToEngine::Close { conn: m.conn, name });
                }
                Ctl::LoginOk { name, account, role, replay_to } => {
                    self.counters.logins_ok.fetch_add(1, Ordering::Relaxed);
                    let c = &mut self.conns[slot as usize];
                    c.state = State::LoggedIn;
                    c.name = name;
                    c.account = account;
                    c.admin = role == Role::Admin;
                    c.read_only = role == Role::DropCopy;
                    c.last_rx = self.now;
                    self.queue(slot, &m.bytes[..m.len as usize]);
                    if replay_to != 0 {
                        self.counters.replays.fetch_add(1, Ordering::Relaxed);
                        self.conns[slot as usize].replay = Some(Replay { held: Vec::new(), want_more: false });
                    }
                }
                Ctl::LoginFail if live => {
                    self.counters.logins_failed.fetch_add(1, Ordering::Relaxed);
                    self.queue(slot, &m.bytes[..m.len as usize]);
                    if let Some(c) = self.conns.get_mut(slot as usize) {
                        c.state = State::Connected;
                        c.close_after_flush = Some(self.now);
                    }
                }
                Ctl::LoginFail => {}
            }
        }
        did
    }

    /// A live message for a logged-in session: behind its replay if one is
    /// being served, else into its outbound queue.
    fn deliver(&mut self, slot: u32, bytes: &[u8]) {
        let limit = self.cfg.outbound_queue_bytes;
        let Some(r) = self.conns[slot as usize].replay.as_mut() else {
            self.queue(slot, bytes);
            return;
        };
        if r.held.len() + bytes.len() > limit {
            self.counters.slow_readers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(shard = self.id, slot, "messages held behind a replay exceed the queue limit: slow reader disconnected");
            self.start_close(slot);
        } else {
            r.held.extend_from_slice(bytes);
        }
    }

    /// Keeps an ack-on-durable session's message until the journal is
    /// durable through `after`.
    fn hold(&mut self, m: ToShard, after: u64) {
        if self.held.is_empty() {
            self.links.durable_wait.store(after, Ordering::SeqCst);
        }
        self.held.push_back(m);
    }

    /// Whether the first held message may go now. Read after the wait was
    /// published (`going_to_sleep` fences), so either this sees the new
    /// watermark or the sync thread sees the wait and wakes the shard.
    fn held_ready(&self) -> bool {
        match self.held.front().map(|m| m.ctl) {
            Some(Ctl::MsgDurable { after }) => after <= self.links.durable.durable_seq(),
            _ => false,
        }
    }

    /// Delivers every held message the durable watermark now covers.
    fn release_durable(&mut self) -> bool {
        let Some(first) = self.held.front() else { return false };
        let Ctl::MsgDurable { after } = first.ctl else { unreachable!("only durable messages are held") };
        let durable = self.links.durable.durable_seq();
        if after > durable {
            return false;
        }
        while let Some(m) = self.held.front() {
            let Ctl::MsgDurable { after } = m.ctl else { unreachable!() };
            if after > durable {
                self.links.durable_wait.store(after, Ordering::SeqCst);
                return true;
            }
            let m = self.held.pop_front().expect("front exists");
            let slot = m.conn.slot;
            let live = self.conns.get(slot as usize).is_some_and(|c| c.open && !c.closing && c.generation == m.conn.generation);
            if live {
                self.deliver(slot, &m.bytes[..m.len as usize]);
            }
        }
        self.links.durable_wait.store(0, Ordering::SeqCst);
        true
    }

    /// Takes the replayer's chunks into their connections' queues.
    fn drain_replay(&mut self) -> bool {
        let mut did = false;
        while let Ok(ch) = self.links.replay_chunks.try_recv() {
            did = true;
            let slot = ch.conn.slot;
            let live = self
                .conns
                .get(slot as usize)
                .is_some_and(|c| c.open && !c.closing && c.generation == ch.conn.generation && c.replay.is_some());
            if !live {
                if !ch.done && !ch.failed {
                    let _ = self.links.replay_ctl.send(ReplayCtl::Stop(ch.conn));
                    self.links.replayer.unpark();
                }
                continue;
            }
            self.queue(slot, &ch.bytes);
            if ch.failed {
                self.conns[slot as usize].replay = None;
                self.goodbye(slot, GoodbyeReason::ReplayUnavailable);
            } else if ch.done {
                let r = self.conns[slot as usize].replay.take().expect("checked above");
                self.queue(slot, &r.held);
            } else if let Some(r) = self.conns[slot as usize].replay.as_mut() {
                r.want_more = true;
                self.maybe_more_replay(slot);
            }
        }
        did
    }

    /// Asks the replayer for the next chunk once the connection's queue is
    /// down to a quarter of its limit.
    fn maybe_more_replay(&mut self, slot: u32) {
        let limit = self.cfg.outbound_queue_bytes;
        let conn = self.conn_ref(slot);
        let c = &mut self.conns[slot as usize];
        let queued = c.out.len() + c.flight.len() - c.flight_off;
        if let Some(r) = c.replay.as_mut()
            && r.want_more
            && queued <= limit / 4
        {
            r.want_more = false;
            let _ = self.links.replay_ctl.send(ReplayCtl::More(conn));
            self.links.replayer.unpark();
        }
    }

    fn timers(&mut self) {
        let now = self.now;
        let login_timeout = Duration::from_millis(self.cfg.login_timeout_ms as u64);
        let hb = Duration::from_millis(self.cfg.heartbeat_ms as u64);
        for slot in 0..self.conns.len() as u32 {
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
            match c.state {
                State::Connected | State::Authing => {
                    if now.duration_since(c.opened) > login_timeout {
                        self.goodbye(slot, GoodbyeReason::LoginTimeout);
                    }
                }
                State::LoggedIn => {
                    if now.duration_since(c.last_rx) > c.hb_timeout {
                        self.counters.heartbeat_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(shard = self.id, slot, "no traffic within the heartbeat timeout; disconnecting");
                        self.goodbye(slot, GoodbyeReason::HeartbeatTimeout);
                    } else if now.duration_since(c.last_tx) >= hb && c.out.is_empty() && !c.send_inflight {
                        let m = wire::ServerHeartbeat { seq: 0, ts: otedama_journal::now_ns() };
                        self.send_frame(slot, &mut [0; 32][..], |b| m.encode(b));
                        self.conns[slot as usize].last_tx = now;
                    }
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.accepting = false;
        let e = opcode::AsyncCancel::new(ud(OP_ACCEPT, 0, 0)).build().user_data(ud(OP_CANCEL, 0, 0));
        self.push_sqe(e);
        for slot in 0..self.conns.len() as u32 {
            if self.conns[slot as usize].open {
                self.goodbye(slot, GoodbyeReason::Shutdown);
            }
        }
        tracing::info!(shard = self.id, "shutting down: no longer accepting; saying goodbye to every session");
    }

    fn finish_shutdown(&mut self, still_open: usize) {
        // SAFETY: our listener; accept was cancelled.
        unsafe { libc::close(self.listen_fd) };
        if still_open > 0 {
            tracing::warn!(
                shard = self.id,
                still_open,
                "connections did not close in time; leaking their buffers rather than risking the kernel writing into freed memory"
            );
            for c in &mut self.conns {
                if c.open {
                    unsafe { libc::close(c.fd) };
                    std::mem::forget(std::mem::take(&mut c.inbuf));
                    std::mem::forget(std::mem::take(&mut c.flight));
                }
            }
        }
        // Tell the engine about every logged-in session that ended.
        self.engine_waker.wake();
    }
}
