//! `otedama engine`'s order-entry gateway: I/O shards on io_uring, one
//! engine shard, a credential checker, and the bounded SPSC rings (rtrb)
//! between them.
//!
//! ```text
//!  clients ──TCP──▶ I/O shard 0 ──ring──▶ ┐
//!  clients ──TCP──▶ I/O shard 1 ──ring──▶ ├─ engine shard: journal → apply → route
//!                        ▲  ▲             │
//!                        │  └────ring─────┘  (events, sequenced per session name)
//!                        └── auth worker (argon2id, off the shards)
//! ```
//!
//! Every ring is bounded: an I/O shard whose ring to the engine is full
//! answers `Rejected(EngineBusy)` (and queues a closed session's notice,
//! one per connection at most, to retry: a shard never waits for the
//! engine); the engine only takes a command when every ring back to the
//! shards has room for a burst of events, and waits (never drops, never
//! grows) in the rare case one command's events outrun that room, or, when
//! it shares the shard's thread and so cannot wait, disconnects the
//! session the message was for. A client that stops reading is
//! disconnected when its bounded outbound queue fills, so it never stalls
//! a shard or the engine.

mod auth;
mod engine_shard;
mod io_shard;
pub(crate) mod listener;
mod replayer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use otedama_engine::{CommandKind, Exchange};
use otedama_journal::Journal;

use crate::sessions::{Binding, Role, SessionBook};

pub use engine_shard::EngineStats;

/// What the engine shard hands back when it stops: the state, the journal
/// (synced) and its counters; or why it stopped on its own.
pub type EngineOutcome = Result<(EngineState, Journal, EngineStats), String>;

/// The engine's whole deterministic state: the exchange and the session
/// names' numbering. Both are rebuilt by replaying the journal.
pub struct EngineState {
    pub exchange: Exchange,
    pub sessions: SessionBook,
}

impl EngineState {
    /// A state with no sessions yet (a new journal).
    pub fn fresh(exchange: Exchange) -> EngineState {
        EngineState { exchange, sessions: SessionBook::new() }
    }
}

/// How a role waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Busy-polls: lowest latency, one core fully used.
    Spin,
    /// Sleeps in the kernel when idle (io_uring wait, futex): the mode for
    /// shared hosts and tests.
    Park,
}

impl std::str::FromStr for Poll {
    type Err = String;
    fn from_str(s: &str) -> Result<Poll, String> {
        match s {
            "spin" => Ok(Poll::Spin),
            "park" => Ok(Poll::Park),
            _ => Err(format!("polling mode must be spin or park, not {s:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address every I/O shard listens on (SO_REUSEPORT). Port 0: any free port.
    pub listen: SocketAddr,
    /// One entry per I/O shard: the core it is pinned to, or `None`.
    pub io_cores: Vec<Option<usize>>,
    pub engine_core: Option<usize>,
    pub io_poll: Poll,
    pub engine_poll: Poll,
    /// The key store file.
    pub keys_path: PathBuf,
    /// Server heartbeat interval, and the default client interval (ms).
    pub heartbeat_ms: u32,
    /// A session with no inbound traffic for this many client heartbeat
    /// intervals is disconnected.
    pub heartbeat_misses: u32,
    /// Time a connection has to log in (ms).
    pub login_timeout_ms: u32,
    /// Per-session rate limit: sustained messages/s and burst.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Bytes a session's outbound queue may hold before it is disconnected.
    pub outbound_queue_bytes: usize,
    /// Slots in each ring.
    pub ring_slots: usize,
    /// Connections per I/O shard.
    pub max_connections: usize,
    /// Run the I/O shard and the engine shard in one thread (needs exactly
    /// one I/O shard). Chosen automatically when both are pinned to the
    /// same core.
    pub colocate: bool,
}

impl GatewayConfig {
    /// Unpinned, parking, one I/O shard: what tests and small hosts use.
    pub fn parking(listen: SocketAddr, keys_path: PathBuf) -> GatewayConfig {
        GatewayConfig {
            listen,
            io_cores: vec![None],
            engine_core: None,
            io_poll: Poll::Park,
            engine_poll: Poll::Park,
            keys_path,
            heartbeat_ms: 1000,
            heartbeat_misses: 3,
            login_timeout_ms: 5000,
            rate_per_sec: 1_000_000,
            rate_burst: 100_000,
            outbound_queue_bytes: 4 << 20,
            ring_slots: 1 << 16,
            max_connections: 10_000,
            colocate: false,
        }
    }

    /// Whether one thread runs both roles.
    pub fn colocated(&self) -> bool {
        self.io_cores.len() == 1 && (self.colocate || (self.engine_core.is_some() && self.io_cores[0] == self.engine_core))
    }
}

/// Identifies a connection: its shard, slot, and the slot's generation
/// (so a message for a closed connection never reaches the slot's next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnRef {
    pub shard: u16,
    pub slot: u32,
    pub generation: u32,
}

/// I/O shard → engine shard.
pub(crate) enum ToEngine {
    /// Credentials checked: bind the connection to its session name.
    /// `next_seq` and `flags` as the client sent them in Login.
    Open { conn: ConnRef, binding: Box<Binding>, next_seq: u64, flags: u32 },
    /// The connection is gone.
    Close { conn: ConnRef, name: u32 },
    /// A validated command from a logged-in session.
    Command { conn: ConnRef, name: u32, client_seq: u64, kind: CommandKind },
    /// An admin session asks for the service-time histogram.
    Stats { conn: ConnRef, client_seq: u64, reset: bool },
}

/// Largest outbound frame the engine sends (EngineStats, 100 bytes;
/// Executed is 96).
pub(crate) const OUT_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctl {
    /// Deliver `bytes`.
    Msg,
    /// Deliver `bytes` once the journal is durable through `after` (an
    /// ack-on-durable session).
    MsgDurable { after: u64 },
    /// Login accepted (`bytes` is LoginAccepted); the session is `name`.
    /// `replay_to`: the replayer serves the missed messages up to this
    /// sequence first (0: none); later ones wait behind them.
    LoginOk { name: u32, account: u32, role: Role, replay_to: u64 },
    /// Login refused (`bytes` is LoginRejected); close after sending.
    LoginFail,
}

/// Engine shard → I/O shard: one encoded outbound frame.
#[derive(Clone, Copy)]
pub(crate) struct ToShard {
    pub conn: ConnRef,
    pub ctl: Ctl,
    pub len: u8,
    pub bytes: [u8; OUT_MAX],
}

/// Wakes a parked role after a producer pushed to one of its rings.
///
/// The sleeper sets `sleeping`, fences, re-checks its rings, then blocks;
/// a producer pushes, fences, and wakes only if `sleeping` is set. The two
/// fences make a lost wake-up impossible, and a busy consumer costs its
/// producers one load per push, no syscall.
pub(crate) struct Waker {
    sleeping: AtomicBool,
    how: WakeHow,
}

pub(crate) enum WakeHow {
    /// An eventfd the io_uring of an I/O shard reads.
    EventFd(i32),
    Thread(Thread),
}

impl Waker {
    pub fn eventfd() -> std::io::Result<Waker> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Waker { sleeping: AtomicBool::new(false), how: WakeHow::EventFd(fd) })
    }
    pub fn thread(t: Thread) -> Waker {
        Waker { sleeping: AtomicBool::new(false), how: WakeHow::Thread(t) }
    }
    pub fn fd(&self) -> i32 {
        match self.how {
            WakeHow::EventFd(fd) => fd,
            WakeHow::Thread(_) => -1,
        }
    }
    /// Producer side, after a push.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.wake_now();
        }
    }
    #[cold]
    pub fn wake_now(&self) {
        match &self.how {
            WakeHow::EventFd(fd) => {
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a local to our eventfd.
                unsafe { libc::write(*fd, (&one as *const u64).cast(), 8) };
            }
            WakeHow::Thread(t) => t.unpark(),
        }
    }
    /// Consumer side: announce sleep; the caller must re-check its rings
    /// after this and call [`Waker::awake`] when it wakes or changes its mind.
    #[inline]
    pub fn going_to_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
    #[inline]
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let WakeHow::EventFd(fd) = self.how {
            // SAFETY: we own the fd.
            unsafe { libc::close(fd) };
        }
    }
}

/// Called by the journal's sync thread with each new durable watermark:
/// wakes the I/O shards whose held ack-on-durable messages it now covers.
/// Each shard publishes the lowest journal sequence it waits on (0: none)
/// and re-checks the watermark after publishing; the fence here pairs with
/// that, so a wake-up is never lost.
fn wake_durable(waits: &[Arc<AtomicU64>], wakers: &[Arc<Waker>], durable: u64) {
    fence(Ordering::SeqCst);
    for (i, w) in waits.iter().enumerate() {
        let w = w.load(Ordering::SeqCst);
        if w != 0 && w <= durable {
            wakers[i].wake_now();
        }
    }
}

/// Pins the calling thread if asked to, and puts it in the idle
/// scheduling class (`SCHED_IDLE`, nice 10 where that is refused): for
/// background work that must not take time from the shards. Nice alone
/// was not enough: the snapshotter, waking every 200 ms to follow the
/// journal, held the shard's core for 2.4 ms at a time while the shard
/// was runnable (the scheduler lets a task that slept long run out its
/// slice); an idle-class task yields the core at once when a normal one
/// wakes on it.
pub(crate) fn pin_background(core: Option<usize>, role: &str) {
    pin(core, role);
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            tracing::warn!(role, error = %std::io::Error::last_os_error(), "could not take the idle scheduling class");
        }
    }
}

/// Pins the calling thread, if asked to.
pub(crate) fn pin(core: Option<usize>, role: &str) {
    if let Some(c) = core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: c })
    {
        tracing::warn!(role, core = c, "could not pin; running unpinned");
    }
}

/// Counters the gateway shares (read by tests, benchmarks and logs).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    pub connections_accepted: AtomicU64,
    pub connections_closed: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub slow_readers: AtomicU64,
    pub throttled: AtomicU64,
    pub engine_busy: AtomicU64,
    pub duplicates: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    /// Logins that asked for (and were given) a replay.
    pub replays: AtomicU64,
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    io: Vec<JoinHandle<()>>,
    io_wakers: Vec<Arc<Waker>>,
    engine: Option<JoinHandle<EngineOutcome>>,
    engine_stop: Arc<AtomicBool>,
    engine_waker: Arc<Waker>,
    auth: Option<JoinHandle<()>>,
    auth_stop: Arc<AtomicBool>,
    auth_thread: Thread,
    /// The replayer.
    helpers: Vec<JoinHandle<()>>,
    helpers_stop: Arc<AtomicBool>,
    io_stopped: Arc<AtomicBool>,
    counters: Arc<GatewayCounters>,
}

impl Gateway {
    /// Starts the shards. `state` is the state to serve (recovered by the
    /// caller from `journal`, where commands and events are appended).
    pub fn start(cfg: GatewayConfig, state: EngineState, journal: Journal) -> std::io::Result<Gateway> {
        let shards = cfg.io_cores.len().max(1);
        let listeners = listener::bind_reuseport(cfg.listen, shards)?;
        let addr = listener::local_addr(listeners[0])?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(GatewayCounters::default());

        let mut io_wakers = Vec::new();
        for _ in 0..shards {
            io_wakers.push(Arc::new(Waker::eventfd()?));
        }
        // Rings: shard → engine, engine → shard, shard → auth, auth → shard.
        let mut to_engine_p = Vec::new();
        let mut to_engine_c = Vec::new();
        let mut to_shard_p = Vec::new();
        let mut to_shard_c = Vec::new();
        let mut auth_req_p = Vec::new();
        let mut auth_req_c = Vec::new();
        let mut auth_resp_p = Vec::new();
        let mut auth_resp_c = Vec::new();
        for _ in 0..shards {
            let (p, c) = rtrb::RingBuffer::new(cfg.ring_slots);
            to_engine_p.push(p);
            to_engine_c.push(c);
            let (p, c) = rtrb::RingBuffer::new(cfg.ring_slots);
            to_shard_p.push(p);
            to_shard_c.push(c);
            let (p, c) = rtrb::RingBuffer::new(1024);
            auth_req_p.push(p);
            auth_req_c.push(c);
            let (p, c) = rtrb::RingBuffer::new(1024);
            auth_resp_p.push(p);
            auth_resp_c.push(c);
        }

        let auth_stop = Arc::new(AtomicBool::new(false));
        let (reg_tx, reg_rx) = crossbeam_channel::unbounded();
        let (tx, rx) = std::sync::mpsc::channel();
        let auth = {
            let wakers = io_wakers.clone();
            let keys = cfg.keys_path.clone();
            let auth_stop = auth_stop.clone();
            std::thread::Builder::new().name("auth".into()).spawn(move || {
                let _ = tx.send(std::thread::current());
                auth::run(keys, auth_req_c, auth_resp_p, wakers, reg_tx, auth_stop)
            })?
        };
        let auth_thread = rx.recv().map_err(|_| std::io::Error::other("auth worker did not start"))?;

        // The replayer.
        let helpers_stop = Arc::new(AtomicBool::new(false));
        let io_stopped = Arc::new(AtomicBool::new(false));
        let durable_waits: Vec<Arc<AtomicU64>> = (0..shards).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let mut chunk_tx = Vec::new();
        let mut chunk_rx = Vec::new();
        for _ in 0..shards {
            let (t, r) = crossbeam_channel::unbounded();
            chunk_tx.push(t);
            chunk_rx.push(r);
        }
        let mut helpers = Vec::new();
        let replayer = replayer::Replayer {
            storage: journal.storage(),
            requests: req_rx,
            ctl: ctl_rx,
            chunks: chunk_tx,
            wakers: io_wakers.clone(),
            stop: helpers_stop.clone(),
        };
        let h = std::thread::Builder::new().name("replayer".into()).spawn(move || replayer.run())?;
        let replayer_thread = h.thread().clone();
        helpers.push(h);
        let watch = journal.durability_watch();
        {
            // The thread that syncs the journal wakes the shards holding
            // ack-on-durable messages it just made durable: no thread in
            // between.
            let (waits, wakers) = (durable_waits.clone(), io_wakers.clone());
            journal.on_durable(Box::new(move |durable| wake_durable(&waits, &wakers, durable)));
        }
        let mut links = chunk_rx.into_iter().zip(durable_waits).map(|(replay_chunks, durable_wait)| io_shard::IoLinks {
            durable: watch.clone(),
            durable_wait,
            replay_chunks,
            replay_ctl: ctl_tx.clone(),
            replayer: replayer_thread.clone(),
        });
        let engine_parts = |from_io, to_io, io_wakers, counters, stop| engine_shard::EngineParts {
            from_io,
            to_io,
            io_wakers,
            poll: cfg.engine_poll,
            stop,
            io_stopped: io_stopped.clone(),
            counters,
            heartbeat_ms: cfg.heartbeat_ms,
            replay: req_tx.clone(),
            replayer: replayer_thread.clone(),
            registrations: reg_rx.clone(),
        };

        let engine_stop = Arc::new(AtomicBool::new(false));
        let mut io = Vec::new();
        let mut lists = listeners.into_iter();
        let (mut te, mut ts, mut aq, mut ar) =
            (to_engine_p.into_iter(), to_shard_c.into_iter(), auth_req_p.into_iter(), auth_resp_c.into_iter());
        let (eng, engine_waker) = if cfg.colocated() {
            // One thread turns the I/O shard and the engine shard; the
            // shard's eventfd wakes it for both.
            let waker = io_wakers[0].clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let parts = (
                lists.next().expect("one listener"),
                te.next().expect("ring"),
                ts.next().expect("ring"),
                aq.next().expect("ring"),
                ar.next().expect("ring"),
                auth_thread.clone(),
                stop.clone(),
                counters.clone(),
                links.next().expect("links"),
                engine_parts(to_engine_c, to_shard_p, io_wakers.clone(), counters.clone(), engine_stop.clone()),
            );
            let cfg2 = cfg.clone();
            let h = std::thread::Builder::new().name("shard-0".into()).spawn(move || {
                pin(cfg2.engine_core, "io+engine");
                let (l, te, ts, aq, ar, at, st, co, lk, ep) = parts;
                let w = ep.io_wakers[0].clone();
                let io = match io_shard::IoShard::new(0, cfg2.clone(), l, te, ts, aq, ar, w.clone(), w.clone(), at, st, co, lk) {
                    Ok(io) => io,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = tx.send(Err(e));
                        return Err(msg);
                    }
                };
                let eng = match engine_shard::EngineShard::new(state, journal, ep, w) {
                    Ok(eng) => {
                        let _ = tx.send(Ok(()));
                        eng
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.clone())));
                        return Err(e);
                    }
                };
                engine_shard::run_colocated(io, eng)
            })?;
            rx.recv().map_err(|_| std::io::Error::other("the shard did not start"))??;
            (h, waker)
        } else {
            // The engine shard first: the I/O shards need its waker.
            let (tx, rx) = std::sync::mpsc::channel();
            let eng = {
                let ep = engine_parts(to_engine_c, to_shard_p, io_wakers.clone(), counters.clone(), engine_stop.clone());
                let core = cfg.engine_core;
                std::thread::Builder::new().name("engine-shard".into()).spawn(move || {
                    pin(core, "engine");
                    let waker = Arc::new(Waker::thread(std::thread::current()));
                    match engine_shard::EngineShard::new(state, journal, ep, waker.clone()) {
                        Ok(eng) => {
                            let _ = tx.send(Ok(waker));
                            engine_shard::run(eng)
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.clone()));
                            Err(e)
                        }
                    }
                })?
            };
            let engine_waker: Arc<Waker> = match rx.recv() {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::Error::other("engine shard did not start")),
            };
            let (tx, rx) = std::sync::mpsc::channel();
            for (i, core) in (0..shards).map(|i| (i, cfg.io_cores.get(i).copied().flatten())) {
                let parts = (
                    cfg.clone(),
                    lists.next().expect("one listener per shard"),
                    te.next().expect("ring"),
                    ts.next().expect("ring"),
                    aq.next().expect("ring"),
                    ar.next().expect("ring"),
                    io_wakers[i].clone(),
                    engine_waker.clone(),
                    auth_thread.clone(),
                    stop.clone(),
                    counters.clone(),
                    links.next().expect("links"),
                );
                let tx = tx.clone();
                io.push(std::thread::Builder::new().name(format!("io-shard-{i}")).spawn(move || {
                    pin(core, "io");
                    // The ring is made on the thread that uses it: it is set
                    // up single-issuer, owned by its creating thread.
                    let (cfg, l, te, ts, aq, ar, w, ew, at, st, co, lk) = parts;
                    match io_shard::IoShard::new(i as u16, cfg, l, te, ts, aq, ar, w, ew, at, st, co, lk) {
                        Ok(shard) => {
                            let _ = tx.send(Ok(()));
                            shard.run()
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?);
            }
            drop(tx);
            for _ in 0..shards {
                let r = rx.recv().map_err(|_| std::io::Error::other("an I/O shard did not start"));
                if let Err(e) = r.and_then(|r| r) {
                    stop.store(true, Ordering::SeqCst);
                    for w in &io_wakers {
                        w.wake_now();
                    }
                    return Err(e);
                }
            }
            (eng, engine_waker)
        };
        Ok(Gateway {
            addr,
            stop,
            io,
            io_wakers,
            engine: Some(eng),
            engine_stop,
            engine_waker,
            auth: Some(auth),
            auth_stop,
            auth_thread,
            helpers,
            helpers_stop,
            io_stopped,
            counters,
        })
    }

    /// The address the I/O shards listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &GatewayCounters {
        &self.counters
    }

    /// Graceful shutdown: the I/O shards stop accepting, say Goodbye to
    /// every session and flush; then the engine drains its rings, syncs the
    /// journal and hands back the state.
    pub fn shutdown(mut self) -> EngineOutcome {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.io_wakers {
            w.wake_now();
        }
        for h in self.io.drain(..) {
            h.join().map_err(|_| "an I/O shard panicked".to_string())?;
        }
        self.io_stopped.store(true, Ordering::SeqCst);
        self.helpers_stop.store(true, Ordering::SeqCst);
        for h in self.helpers.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
        self.engine_stop.store(true, Ordering::SeqCst);
        self.engine_waker.wake_now();
        let out = self.engine.take().expect("engine joined once").join().map_err(|_| "the engine shard panicked".to_string())?;
        self.auth_stop.store(true, Ordering::SeqCst);
        self.auth_thread.unpark();
        if let Some(a) = self.auth.take() {
            let _ = a.join();
        }
        out
    }

    /// Blocks until the engine shard ends on its own (a fatal journal
    /// error), or `stop` says to shut down.
    pub fn wait(self, stop: &AtomicBool) -> EngineOutcome {
        while !stop.load(Ordering::Relaxed) && !self.engine.as_ref().is_some_and(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shutdown()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn background_threads_run_in_the_idle_class() {
        let policy = std::thread::spawn(|| {
            super::pin_background(None, "test");
            // SAFETY: a query about the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }
}
