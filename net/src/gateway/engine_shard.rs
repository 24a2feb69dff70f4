//! The engine shard: drains the I/O shards' rings, journals each command
//! (with its origin), applies it, journals its events, and routes the
//! events to the sessions they concern, numbering each session name's
//! outbound messages ([`SessionBook`], the same code recovery replays).
//!
//! Who gets an event: `crate::sessions::receives`. Sequence numbers
//! advance whether or not the session is connected: what a disconnected
//! session missed is still numbered, and the replayer serves it from the
//! journal when the session logs in again asking for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use otedama_engine::{AccountId, Command, CommandKind, Event};
use otedama_journal::{Durability, JournalError, kinds, now_ns};
use rtrb::{Consumer, Producer};

use super::io_shard::IoShard;
use super::replayer::ReplayReq;
use super::{ConnRef, Ctl, EngineOutcome, EngineState, GatewayCounters, OUT_MAX, Poll, ToEngine, ToShard, Waker};
use crate::sequencer::Sequencer;
use crate::sessions::{
    self, Binding, CloseReason, FLAG_ACK_ON_DURABLE, FLAG_CANCEL_ON_DISCONNECT, FLAGS_KNOWN, Role, SessionBook, SessionOpen,
};
use crate::wire;

/// Room each ring back to a shard must have before the engine takes the
/// next command: enough for the events of all but the largest sweeps.
const SLACK: usize = 256;

/// What the engine shard did, returned at shutdown.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub commands: u64,
    pub messages_out: u64,
    /// Messages numbered for a session that was not connected.
    pub messages_unrouted: u64,
    pub duplicates: u64,
    /// Times the engine waited for room in a ring back to a shard.
    pub backpressure_waits: u64,
    /// Sessions disconnected because their shard's ring was full (co-located mode).
    pub sessions_kicked: u64,
    /// Mass cancels issued because a cancel-on-disconnect session ended.
    pub cancels_on_disconnect: u64,
}

/// A session name's connection, if it has one.
#[derive(Clone, Copy, Default)]
struct Live {
    conn: Option<ConnRef>,
    durable: bool,
}

pub(crate) struct EngineShard {
    seq: Sequencer,
    book: SessionBook,
    live: Vec<Live>,
    from_io: Vec<Consumer<ToEngine>>,
    out: Router,
    waker: Arc<Waker>,
    poll: Poll,
    stop: Arc<AtomicBool>,
    counters: Arc<GatewayCounters>,
    heartbeat_ms: u32,
    replay: Sender<ReplayReq>,
    replayer: std::thread::Thread,
    registrations: Receiver<Binding>,
    durable_ok: bool,
    scratch: Vec<u8>,
    stats: EngineStats,
    /// Service time per command, ns, since `service_since` (ns since the
    /// epoch); read over the admin protocol (EngineStats).
    service: hdrhistogram::Histogram<u64>,
    service_since: u64,
    /// Time spent in passes over the rings that found work, ns, since
    /// `service_since`: what this shard's core spends on the engine's work
    /// (ring pops, journal append, apply, routing), without the idle polls
    /// and, when co-located, without the I/O shard's half of the loop.
    busy_ns: u64,
    /// The clock reading that began this pass while no command has taken
    /// it as its timestamp yet.
    fresh_ts: Option<u64>,
    /// The timestamp of the last command whose service time ends at the
    /// next clock reading.
    service_open: Option<u64>,
}

struct Router {
    to_io: Vec<Producer<ToShard>>,
    io_wakers: Vec<Arc<Waker>>,
    /// Shards pushed to since their last wake.
    pending_wake: Vec<bool>,
    waits: u64,
    out: u64,
    unrouted: u64,
    /// Sharing a thread with the I/O shard: a full ring cannot be waited
    /// out, so the session it was for is disconnected instead.
    colocated: bool,
    /// The I/O shards have stopped: nobody drains the rings any more.
    io_stopped: Arc<AtomicBool>,
    kicked: Vec<ConnRef>,
    kicks: u64,
}

/// Everything the engine shard is built from.
pub(crate) struct EngineParts {
    pub from_io: Vec<Consumer<ToEngine>>,
    pub to_io: Vec<Producer<ToShard>>,
    pub io_wakers: Vec<Arc<Waker>>,
    pub poll: Poll,
    pub stop: Arc<AtomicBool>,
    pub io_stopped: Arc<AtomicBool>,
    pub counters: Arc<GatewayCounters>,
    pub heartbeat_ms: u32,
    pub replay: Sender<ReplayReq>,
    pub replayer: std::thread::Thread,
    /// Keys the credential checker found in the key store.
    pub registrations: Receiver<Binding>,
}

impl EngineShard {
    /// Builds the shard and ends the sessions the journal still shows open
    /// (the engine stopped without closing them): each gets its
    /// `session_close` and, with cancel-on-disconnect, its mass cancel,
    /// journaled like any other, before anyone can log in.
    pub fn new(
        state: EngineState,
        journal: otedama_journal::Journal,
        parts: EngineParts,
        waker: Arc<Waker>,
    ) -> Result<EngineShard, String> {
        let n = parts.to_io.len();
        let durable_ok = journal.durability() != Durability::None;
        let live = vec![Live::default(); state.sessions.len()];
        let mut s = EngineShard {
            seq: Sequencer::new(state.exchange, journal),
            book: state.sessions,
            live,
            from_io: parts.from_io,
            out: Router {
                to_io: parts.to_io,
                io_wakers: parts.io_wakers,
                pending_wake: vec![false; n],
                waits: 0,
                out: 0,
                unrouted: 0,
                colocated: false,
                io_stopped: parts.io_stopped,
                kicked: Vec::with_capacity(1024),
                kicks: 0,
            },
            waker,
            poll: parts.poll,
            stop: parts.stop,
            counters: parts.counters,
            heartbeat_ms: parts.heartbeat_ms,
            replay: parts.replay,
            replayer: parts.replayer,
            registrations: parts.registrations,
            durable_ok,
            scratch: Vec::with_capacity(256),
            stats: EngineStats::default(),
            service: hdrhistogram::Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds"),
            service_since: now_ns(),
            busy_ns: 0,
            fresh_ts: None,
            service_open: None,
        };
        let open: Vec<u32> = (0..s.book.len() as u32).filter(|&i| s.book.name(i).open).collect();
        for i in open {
            s.end_session(i, CloseReason::EngineRestart).map_err(|e| format!("closing sessions left open: {e}"))?;
        }
        Ok(s)
    }
}

pub(crate) fn run(mut s: EngineShard) -> EngineOutcome {
    let mut idle_spins = 0u32;
    let result = loop {
        let did = match s.poll_once() {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        s.out.flush_wakes();
        if did {
            idle_spins = 0;
            continue;
        }
        if s.stop.load(Ordering::Relaxed) {
            // The I/O shards have stopped: drain what they left, then end.
            match s.poll_once() {
                Ok(true) => continue,
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
        idle_spins += 1;
        match s.poll {
            Poll::Spin => std::hint::spin_loop(),
            Poll::Park if idle_spins < 200 => std::hint::spin_loop(),
            Poll::Park => {
                s.waker.going_to_sleep();
                if s.inbound_empty() && !s.stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(s.heartbeat_ms.max(10) as u64));
                }
                s.waker.awake();
            }
        }
    };
    s.finish(result)
}

/// The I/O shard and the engine shard on one core share one thread: one
/// loop turns both, so a command and its answer cross no thread and wake
/// nobody. (Two busy threads pinned to one core would take turns at the
/// scheduler's pace instead.) Only with a single I/O shard.
pub(crate) fn run_colocated(mut io: IoShard, mut s: EngineShard) -> EngineOutcome {
    s.out.colocated = true;
    io.start();
    let mut idle = 0u32;
    loop {
        let (did_io, finished) = io.turn();
        let did_engine = match s.poll_once() {
            Ok(d) => d,
            Err(e) => return s.finish(Err(e)),
        };
        s.out.flush_wakes();
        for conn in s.out.kicked.drain(..) {
            io.kick(conn);
        }
        if finished {
            loop {
                match s.poll_once() {
                    Ok(true) => continue,
                    Ok(false) => return s.finish(Ok(())),
                    Err(e) => return s.finish(Err(e)),
                }
            }
        }
        if did_io || did_engine {
            idle = 0;
            continue;
        }
        idle += 1;
        let empty = s.inbound_empty();
        io.idle(idle, empty);
    }
}

impl EngineShard {
    fn inbound_empty(&self) -> bool {
        self.from_io.iter().all(|c| c.is_empty())
    }

    fn finish(mut self, result: Result<(), String>) -> EngineOutcome {
        self.out.flush_wakes();
        self.stats.backpressure_waits = self.out.waits;
        self.stats.messages_out = self.out.out;
        self.stats.messages_unrouted = self.out.unrouted;
        self.stats.sessions_kicked = self.out.kicks;
        let (exchange, mut journal) = self.seq.into_parts();
        if let Err(e) = &result {
            tracing::error!(error = %e, "engine shard stopping on a fatal error");
            journal.abandon();
            return Err(e.clone());
        }
        journal.sync().map_err(|e| format!("final journal sync: {e}"))?;
        Ok((EngineState { exchange, sessions: self.book }, journal, self.stats))
    }

    /// One pass over every inbound ring. Returns whether it did anything.
    fn poll_once(&mut self) -> Result<bool, String> {
        if self.registrations.is_empty() && self.inbound_empty() {
            return Ok(false);
        }
        // The clock is read once per pass and once per command: a command's
        // timestamp (the pass's first reading for its first command) also
        // ends the previous command's service time, and the pass's last
        // reading ends its last one and its busy time. A reading costs
        // 25-60 ns here, about a tenth of an order's engine work.
        let start = now_ns();
        self.fresh_ts = Some(start);
        let mut did = false;
        if !self.registrations.is_empty() {
            while let Ok(b) = self.registrations.try_recv() {
                did = true;
                self.close_service_now();
                self.register(&b).map_err(|e| format!("journal append: {e}"))?;
            }
        }
        for i in 0..self.from_io.len() {
            // Up to a batch per shard per pass, for fairness.
            for _ in 0..64 {
                if !self.out.has_room() {
                    break;
                }
                let Ok(msg) = self.from_io[i].pop() else { break };
                did = true;
                self.handle(msg).map_err(|e| format!("journal append: {e}"))?;
            }
        }
        self.fresh_ts = None;
        if did {
            let end = now_ns();
            self.close_service(end);
            self.busy_ns += end.saturating_sub(start);
        }
        Ok(did)
    }

    /// Ends the open command's service time at clock reading `t`.
    fn close_service(&mut self, t: u64) {
        if let Some(ts) = self.service_open.take() {
            // Preallocated buckets: recording never allocates.
            self.service.saturating_record(t.saturating_sub(ts));
        }
    }

    /// Before work that is not a command: the open command's service time
    /// ends now, and the pass's first reading is no longer fresh.
    fn close_service_now(&mut self) {
        self.fresh_ts = None;
        if self.service_open.is_some() {
            self.close_service(now_ns());
        }
    }

    fn handle(&mut self, msg: ToEngine) -> Result<(), JournalError> {
        if !matches!(msg, ToEngine::Command { .. }) {
            self.close_service_now();
        }
        match msg {
            ToEngine::Open { conn, binding, next_seq, flags } => self.open(conn, &binding, next_seq, flags)?,
            ToEngine::Close { conn, name } => {
                if self.live.get(name as usize).is_some_and(|l| l.conn == Some(conn)) {
                    self.live[name as usize] = Live::default();
                    self.end_session(name, CloseReason::Disconnected)?;
                }
            }
            ToEngine::Command { conn, name, client_seq, kind } => {
                if self.live.get(name as usize).is_none_or(|l| l.conn != Some(conn)) {
                    // Sent before the connection closed; nobody to answer.
                    return Ok(());
                }
                if client_seq <= self.book.name(name).last_client_seq {
                    self.stats.duplicates += 1;
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                let ts = match self.fresh_ts.take() {
                    Some(t) => t,
                    None => now_ns(),
                };
                self.close_service(ts);
                self.submit(name, client_seq, ts, kind)?;
                self.service_open = Some(ts);
            }
            ToEngine::Stats { conn, client_seq, reset } => {
                let h = &self.service;
                let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
                let m = wire::EngineStats {
                    seq: 0,
                    ts: now_ns(),
                    client_seq,
                    commands: self.stats.commands,
                    count: h.len(),
                    since_ns: self.service_since,
                    p50_ns: q(0.5),
                    p90_ns: q(0.9),
                    p99_ns: q(0.99),
                    p999_ns: q(0.999),
                    max_ns: h.max(),
                    busy_ns: self.busy_ns,
                };
                self.out.push(conn, Ctl::Msg, |b| m.encode(b));
                if reset {
                    self.service.reset();
                    self.service_since = now_ns();
                    self.busy_ns = 0;
                }
            }
        }
        Ok(())
    }

    /// Journals, applies and routes one command from session `name`,
    /// timestamped `ts` (ns since the epoch).
    fn submit(&mut self, name: u32, client_seq: u64, ts: u64, kind: CommandKind) -> Result<(), JournalError> {
        self.book.take_client_seq(name, client_seq);
        let key = self.book.name(name).binding.key_id;
        let done = self.seq.submit_from(key, client_seq, &Command { ts, kind })?;
        self.stats.commands += 1;
        let (cmd_seq, after) = (done.command_seq, done.events_seq);
        let (live, out) = (&self.live, &mut self.out);
        for ev in done.events {
            self.book.route(Some(name), client_seq, cmd_seq, ev, |n, seq, cs| out.send_event(live[n as usize], seq, cs, ts, after, ev));
        }
        Ok(())
    }

    /// A key the engine has not numbered for yet: journal its registration;
    /// events are numbered for it from here on.
    fn register(&mut self, binding: &Binding) -> Result<(), JournalError> {
        if self.book.find(binding.key_id).is_some() {
            return Ok(());
        }
        self.scratch.clear();
        SessionOpen { binding: binding.clone(), flags: 0 }.encode(&mut self.scratch);
        self.seq.append_session(kinds::SESSION_REGISTER, now_ns(), &self.scratch)?;
        let name = self.book.register(binding);
        if self.live.len() <= name as usize {
            self.live.resize(name as usize + 1, Live::default());
        }
        Ok(())
    }

    /// A login with good credentials: journal it, bind the connection to
    /// its name, answer, and hand a replay to the replayer if one was asked
    /// for.
    fn open(&mut self, conn: ConnRef, binding: &Binding, next_seq: u64, flags: u32) -> Result<(), JournalError> {
        let ts = now_ns();
        let refuse = |out: &mut Router, why: wire::LoginReject| {
            let m = wire::LoginRejected { ts, reason: why as u16, ..Default::default() };
            out.push(conn, Ctl::LoginFail, |b| m.encode(b));
        };
        if flags & !FLAGS_KNOWN != 0 || (flags & FLAG_ACK_ON_DURABLE != 0 && !self.durable_ok) {
            refuse(&mut self.out, wire::LoginReject::BadFlags);
            return Ok(());
        }
        if let Some(i) = self.book.find(binding.key_id)
            && self.live[i as usize].conn.is_some()
        {
            refuse(&mut self.out, wire::LoginReject::AlreadyLoggedIn);
            return Ok(());
        }
        self.scratch.clear();
        SessionOpen { binding: binding.clone(), flags }.encode(&mut self.scratch);
        self.seq.append_session(kinds::SESSION_OPEN, ts, &self.scratch)?;
        let name = self.book.open(binding, flags);
        if self.live.len() <= name as usize {
            self.live.resize(name as usize + 1, Live::default());
        }
        self.live[name as usize] = Live { conn: Some(conn), durable: flags & FLAG_ACK_ON_DURABLE != 0 };
        let n = self.book.name(name);
        // The binding frozen at the name's first login is the one in force.
        let (account, role, last) = (n.binding.account, n.binding.role, n.out_seq);
        let replay = (next_seq != 0 && next_seq <= last).then(|| self.book.resume_point(name, next_seq)).flatten();
        let m = wire::LoginAccepted {
            ts,
            next_seq: if replay.is_some() { next_seq } else { last + 1 },
            last_client_seq: n.last_client_seq,
            account,
            role: role as u8,
            heartbeat_ms: 0,
            ..Default::default()
        };
        let replay_to = if replay.is_some() { last } else { 0 };
        self.out.push(conn, Ctl::LoginOk { name, account, role, replay_to }, |b| m.encode(b));
        if let Some(start) = replay {
            let req = ReplayReq {
                conn,
                binding: n.binding.clone(),
                from: next_seq,
                to: last,
                start,
                durable_only: flags & FLAG_ACK_ON_DURABLE != 0,
            };
            if self.replay.send(req).is_ok() {
                self.replayer.unpark();
            }
        }
        Ok(())
    }

    /// Journals the end of session `name` and, when it asked for
    /// cancel-on-disconnect, cancels its account's resting orders with a
    /// journaled mass cancel (origin: the session, `client_seq` 0), so
    /// replay agrees.
    fn end_session(&mut self, name: u32, why: CloseReason) -> Result<(), JournalError> {
        let n = self.book.name(name);
        let (key, account, role, flags) = (n.binding.key_id, n.binding.account, n.binding.role, n.flags);
        self.scratch.clear();
        sessions::encode_close(key, why, &mut self.scratch);
        self.seq.append_session(kinds::SESSION_CLOSE, now_ns(), &self.scratch)?;
        self.book.close(key);
        if flags & FLAG_CANCEL_ON_DISCONNECT != 0 && role == Role::Trader {
            self.stats.cancels_on_disconnect += 1;
            let kind = CommandKind::MassCancel { account: AccountId(account), instrument: None, side: None };
            self.submit(name, 0, now_ns(), kind)?;
        }
        Ok(())
    }
}

impl Router {
    fn has_room(&self) -> bool {
        self.to_io.iter().all(|p| p.slots() >= SLACK)
    }

    fn flush_wakes(&mut self) {
        for (i, w) in self.pending_wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.io_wakers[i].wake();
            }
        }
    }

    /// Sends one numbered event to a session, if it is connected; an
    /// ack-on-durable session's waits for the journal to cover `after`.
    #[inline]
    fn send_event(&mut self, live: Live, seq: u64, client_seq: u64, ts: u64, after: u64, ev: &Event) {
        let Some(conn) = live.conn else {
            self.unrouted += 1;
            return;
        };
        let ctl = if live.durable { Ctl::MsgDurable { after } } else { Ctl::Msg };
        self.push(conn, ctl, |b| wire::encode_event(seq, ts, client_seq, ev, b));
    }

    /// Pushes one frame to the connection's shard. A full ring is waited
    /// out (the shard drains it every pass and never blocks on a client),
    /// never dropped and never grown.
    fn push(&mut self, conn: ConnRef, ctl: Ctl, encode: impl FnOnce(&mut [u8]) -> usize) {
        let mut m = ToShard { conn, ctl, len: 0, bytes: [0; OUT_MAX] };
        m.len = encode(&mut m.bytes) as u8;
        let s = conn.shard as usize;
        let mut m = Some(m);
        while let Some(v) = m.take() {
            match self.to_io[s].push(v) {
                Ok(()) => {}
                Err(rtrb::PushError::Full(_)) if self.colocated => {
                    if !self.kicked.contains(&conn) {
                        self.kicks += 1;
                        self.kicked.push(conn);
                    }
                    return;
                }
                // Stopping: nobody will read it (the sessions are closed or
                // closing, and the message stays in the journal).
                Err(rtrb::PushError::Full(_)) if self.io_stopped.load(Ordering::Relaxed) => return,
                Err(rtrb::PushError::Full(v)) => {
                    self.waits += 1;
                    self.io_wakers[s].wake();
                    std::thread::yield_now();
                    m = Some(v);
                }
            }
        }
        self.out += 1;
        self.pending_wake[s] = true;
    }
}
