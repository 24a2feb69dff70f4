//! The engine shard: drains the I/O shards' rings, journals each command,
//! applies it, journals its events, and routes the events to the sessions
//! they concern, numbering each session name's outbound messages.
//!
//! Who gets an event: the session whose command caused it (with that
//! command's `client_seq`), and every trader session bound to the event's
//! account (a maker's fill, an admin's cancel on its behalf; `client_seq`
//! 0). Admin sessions get only the answers to their own commands.
//! Sequence numbers advance whether or not the session is connected:
//! what a disconnected session missed is still numbered, so recovery can
//! serve it from the journal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use otedama_engine::{Command, Event, Exchange};
use otedama_journal::{Journal, now_ns};
use rtrb::{Consumer, Producer};

use super::io_shard::IoShard;
use super::{ConnRef, Ctl, EngineOutcome, GatewayCounters, OUT_MAX, Poll, ToEngine, ToShard, Waker};
use crate::sequencer::Sequencer;
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
}

struct Name {
    key_id: u64,
    account: u32,
    admin: bool,
    /// Last outbound sequence number assigned.
    out_seq: u64,
    /// Highest inbound `client_seq` applied.
    last_client_seq: u64,
    live: Option<ConnRef>,
}

pub(crate) struct EngineShard {
    seq: Sequencer,
    from_io: Vec<Consumer<ToEngine>>,
    out: Router,
    waker: Arc<Waker>,
    poll: Poll,
    stop: Arc<AtomicBool>,
    counters: Arc<GatewayCounters>,
    heartbeat_ms: u32,
    stats: EngineStats,
}

struct Router {
    to_io: Vec<Producer<ToShard>>,
    io_wakers: Vec<Arc<Waker>>,
    /// Shards pushed to since their last wake.
    pending_wake: Vec<bool>,
    names: Vec<Name>,
    by_key: BTreeMap<u64, u32>,
    /// account → trader names bound to it.
    by_account: BTreeMap<u32, Vec<u32>>,
    waits: u64,
    out: u64,
    unrouted: u64,
    /// Sharing a thread with the I/O shard: a full ring cannot be waited
    /// out, so the session it was for is disconnected instead.
    colocated: bool,
    kicked: Vec<ConnRef>,
    kicks: u64,
}

impl EngineShard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exchange: Exchange,
        journal: Journal,
        from_io: Vec<Consumer<ToEngine>>,
        to_io: Vec<Producer<ToShard>>,
        io_wakers: Vec<Arc<Waker>>,
        waker: Arc<Waker>,
        poll: Poll,
        stop: Arc<AtomicBool>,
        counters: Arc<GatewayCounters>,
        heartbeat_ms: u32,
    ) -> EngineShard {
        let n = to_io.len();
        EngineShard {
            seq: Sequencer::new(exchange, journal),
            from_io,
            out: Router {
                to_io,
                io_wakers,
                pending_wake: vec![false; n],
                names: Vec::new(),
                by_key: BTreeMap::new(),
                by_account: BTreeMap::new(),
                waits: 0,
                out: 0,
                unrouted: 0,
                colocated: false,
                kicked: Vec::with_capacity(1024),
                kicks: 0,
            },
            waker,
            poll,
            stop,
            counters,
            heartbeat_ms,
            stats: EngineStats::default(),
        }
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
        Ok((exchange, journal, self.stats))
    }

    /// One pass over every inbound ring. Returns whether it did anything.
    fn poll_once(&mut self) -> Result<bool, String> {
        let mut did = false;
        for i in 0..self.from_io.len() {
            // Up to a batch per shard per pass, for fairness.
            for _ in 0..64 {
                if !self.out.has_room() {
                    break;
                }
                let Ok(msg) = self.from_io[i].pop() else { break };
                did = true;
                self.handle(msg)?;
            }
        }
        Ok(did)
    }

    fn handle(&mut self, msg: ToEngine) -> Result<(), String> {
        match msg {
            ToEngine::Open { conn, key_id, account, admin } => self.out.open(conn, key_id, account, admin),
            ToEngine::Close { conn, name } => {
                if let Some(n) = self.out.names.get_mut(name as usize)
                    && n.live == Some(conn)
                {
                    n.live = None;
                }
            }
            ToEngine::Command { conn, name, client_seq, kind } => {
                let Some(n) = self.out.names.get_mut(name as usize) else { return Ok(()) };
                if n.live != Some(conn) {
                    // Sent before the connection closed; nobody to answer.
                    return Ok(());
                }
                if client_seq <= n.last_client_seq {
                    self.stats.duplicates += 1;
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                n.last_client_seq = client_seq;
                let ts = now_ns();
                let (_, events) = self.seq.submit(&Command { ts, kind }).map_err(|e| format!("journal append: {e}"))?;
                self.stats.commands += 1;
                for ev in events {
                    self.out.route(name, client_seq, ts, ev);
                }
            }
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

    fn open(&mut self, conn: ConnRef, key_id: u64, account: u32, admin: bool) {
        let ts = now_ns();
        let idx = match self.by_key.get(&key_id) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(Name { key_id, account, admin, out_seq: 0, last_client_seq: 0, live: None });
                self.by_key.insert(key_id, i);
                if !admin {
                    self.by_account.entry(account).or_default().push(i);
                }
                i
            }
        };
        let n = &mut self.names[idx as usize];
        debug_assert_eq!(n.key_id, key_id);
        if n.live.is_some() {
            let m = wire::LoginRejected { ts, reason: wire::LoginReject::AlreadyLoggedIn as u16, ..Default::default() };
            self.push(conn, Ctl::LoginFail, |b| m.encode(b));
            return;
        }
        n.live = Some(conn);
        let (account, admin) = (n.account, n.admin);
        let m = wire::LoginAccepted {
            ts,
            next_seq: n.out_seq + 1,
            last_client_seq: n.last_client_seq,
            account,
            admin: admin as u8,
            heartbeat_ms: 0,
            ..Default::default()
        };
        self.push(conn, Ctl::LoginOk { name: idx, account, admin }, |b| m.encode(b));
    }

    /// Delivers one event to the sessions it concerns.
    fn route(&mut self, origin: u32, client_seq: u64, ts: u64, ev: &Event) {
        let account = match *ev {
            Event::Accepted { account, .. }
            | Event::Executed { account, .. }
            | Event::Canceled { account, .. }
            | Event::Replaced { account, .. }
            | Event::Amended { account, .. } => Some(account.0),
            Event::Rejected { .. } | Event::Done => None,
            // Market-by-order changes feed market data, not order entry.
            Event::BookAdd { .. } | Event::BookExecute { .. } | Event::BookReduce { .. } | Event::BookDelete { .. } => return,
        };
        let o = &self.names[origin as usize];
        let origin_gets = o.admin || account.is_none() || account == Some(o.account);
        if origin_gets {
            self.send_event(origin, client_seq, ts, ev);
        }
        if let Some(a) = account
            && let Some(list) = self.by_account.get_mut(&a)
        {
            // Taken out for the loop (no allocation: the Vec moves) so the
            // map is searched twice per event, not once per recipient.
            let list = std::mem::take(list);
            for &n in &list {
                if n != origin {
                    self.send_event(n, 0, ts, ev);
                }
            }
            *self.by_account.get_mut(&a).expect("still there") = list;
        }
    }

    fn send_event(&mut self, name: u32, client_seq: u64, ts: u64, ev: &Event) {
        let n = &mut self.names[name as usize];
        n.out_seq += 1;
        let seq = n.out_seq;
        let Some(conn) = n.live else {
            self.unrouted += 1;
            return;
        };
        match *ev {
            Event::Accepted { order, account, instrument, side, price, qty } => {
                let m = wire::Accepted {
                    seq,
                    ts,
                    client_seq,
                    order: order.0,
                    account: account.0,
                    instrument: instrument.0,
                    side: side as u8,
                    reserved: 0,
                    price,
                    qty,
                };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Executed { match_id, order, account, maker, price, qty, fee, leaves } => {
                let m = wire::Executed {
                    seq,
                    ts,
                    client_seq,
                    match_id,
                    order: order.0,
                    account: account.0,
                    maker: maker as u8,
                    reserved: [0; 3],
                    price,
                    qty,
                    fee,
                    leaves,
                };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Canceled { order, account, qty, leaves, reason } => {
                let m = wire::Canceled {
                    seq,
                    ts,
                    client_seq,
                    order: order.0,
                    account: account.0,
                    reason: reason as u8,
                    reserved: [0; 3],
                    qty,
                    leaves,
                };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Replaced { old, new, account } => {
                let m = wire::Replaced { seq, ts, client_seq, old_order: old.0, new_order: new.0, account: account.0, reserved: 0 };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Amended { order, account, leaves } => {
                let m = wire::Amended { seq, ts, client_seq, order: order.0, account: account.0, reserved: 0, leaves };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Rejected { reason } => {
                let m = wire::Rejected { seq, ts, client_seq, reason: reason as u16, reserved: [0; 6] };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::Done => {
                let m = wire::Done { seq, ts, client_seq };
                self.push(conn, Ctl::Msg, |b| m.encode(b))
            }
            Event::BookAdd { .. } | Event::BookExecute { .. } | Event::BookReduce { .. } | Event::BookDelete { .. } => {}
        }
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
