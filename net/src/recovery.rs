//! Starting from disk and staying restartable: the engine state's snapshot
//! form, recovery (newest valid snapshot + verified replay of the journal
//! after it), and the snapshotter that writes snapshots off the hot path.
//!
//! The snapshotter never touches the engine shard: it keeps a replica of
//! the state, follows the journal as a reader (replaying each command and
//! checking it reproduces the journaled events, exactly as recovery does),
//! and serialises the replica on its own thread, at a lower scheduling
//! priority, every `interval` or when asked (SIGUSR1 to the engine,
//! `otedama engine --snapshot-now`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otedama_engine::{Exchange, Limits};
use otedama_journal::snapshot::Snapshots;
use otedama_journal::{Journal, Options, Reader, Storage};

use crate::gateway::EngineState;
use crate::sequencer::{ReplayError, replay_pipelined, replay_with};
use crate::sessions::SessionBook;

/// First bytes of an engine state snapshot's data (inside the journal's
/// snapshot file framing, `journal/FORMAT.md`).
pub const STATE_MAGIC: [u8; 8] = *b"OTDSTAT1";

/// The snapshot data of `state`: magic (8), exchange length (u64 LE), the
/// exchange's rkyv archive, then the session book (`net/PROTOCOL.md`).
pub fn encode_state(state: &EngineState) -> Vec<u8> {
    let ex = state.exchange.snapshot();
    let mut out = Vec::with_capacity(16 + ex.len() + 64 * state.sessions.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&(ex.len() as u64).to_le_bytes());
    out.extend_from_slice(&ex);
    state.sessions.encode(&mut out);
    out
}

pub fn decode_state(b: &[u8]) -> Result<EngineState, String> {
    if b.len() < 16 || b[..8] != STATE_MAGIC {
        return Err("not an engine state snapshot".into());
    }
    let n = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    let rest = &b[16..];
    if n > rest.len() as u64 {
        return Err("exchange length beyond the data".into());
    }
    let (ex, book) = rest.split_at(n as usize);
    let exchange = Exchange::restore(ex)?;
    let sessions = SessionBook::decode(book).map_err(|e| format!("session book: {e}"))?;
    Ok(EngineState { exchange, sessions })
}

/// What recovery did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryReport {
    /// The snapshot recovery started from, if any.
    pub snapshot_seq: Option<u64>,
    /// Snapshots skipped because they could not be used.
    pub snapshots_skipped: usize,
    pub commands: u64,
    pub events: u64,
    /// Last journal record applied (0: none).
    pub last_seq: u64,
    /// Opening the journal: scanning it (every record's checksum) and
    /// preparing the writer.
    pub open_s: f64,
    pub snapshot_load_s: f64,
    pub replay_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] otedama_journal::JournalError),
    #[error("replaying the journal: {0}")]
    Replay(#[from] ReplayError),
    #[error("snapshots: {0}")]
    Snapshots(#[from] std::io::Error),
}

/// Opens the journal on `storage` and rebuilds the state: from the newest
/// snapshot that checks out and lies inside the journal (a damaged or
/// unreadable one is skipped for the one before it), then replaying every
/// record after it, each command required to reproduce its journaled
/// events. Only then may the caller serve.
pub fn recover(
    storage: Arc<dyn Storage>,
    opts: Options,
    snapshots: Option<&Snapshots>,
    limits: Limits,
) -> Result<(EngineState, Journal, RecoveryReport), RecoveryError> {
    let t = Instant::now();
    // Segments are prepared after the replay, which wants both cores.
    let journal = Journal::open_with(storage.clone(), Options { hold_preparation: true, ..opts })?;
    let rep = journal.open_report().clone();
    let mut report = RecoveryReport { open_s: t.elapsed().as_secs_f64(), ..Default::default() };
    let t0 = Instant::now();
    let mut start = None;
    if let Some(snaps) = snapshots {
        for info in snaps.list()?.into_iter().rev() {
            // A snapshot must continue the journal: what follows it must
            // still be there, and it must not be ahead of what survived.
            let usable = info.valid && info.seq + 1 >= rep.first_seq && info.seq < rep.next_seq;
            if usable {
                match snaps.read(info.seq)?.map(|s| decode_state(&s.data)) {
                    Ok(Ok(state)) => {
                        start = Some((info.seq, state));
                        break;
                    }
                    Ok(Err(e)) => tracing::warn!(seq = info.seq, error = %e, "skipping a snapshot that does not restore"),
                    Err(e) => tracing::warn!(seq = info.seq, error = e, "skipping a damaged snapshot"),
                }
            } else {
                tracing::warn!(
                    seq = info.seq,
                    valid = info.valid,
                    journal_first = rep.first_seq,
                    journal_next = rep.next_seq,
                    "skipping a snapshot outside the journal"
                );
            }
            report.snapshots_skipped += 1;
        }
    }
    let (from, mut state) = match start {
        Some((seq, state)) => {
            report.snapshot_seq = Some(seq);
            (seq + 1, state)
        }
        None => (rep.first_seq, EngineState::fresh(Exchange::new(limits))),
    };
    report.snapshot_load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if rep.next_seq > from {
        let mut r = Reader::open_with(storage, None, from, false)?;
        // Opening the journal just checked every record's checksum.
        r.trust_verified_below(rep.next_seq);
        let done = replay_pipelined(r, &mut state.exchange, Some(&mut state.sessions))?;
        report.commands = done.commands;
        report.events = done.events;
        report.last_seq = done.last_seq;
    } else {
        report.last_seq = report.snapshot_seq.unwrap_or(0);
    }
    report.replay_s = t1.elapsed().as_secs_f64();
    journal.release_preparation();
    Ok((state, journal, report))
}

/// Settings of the snapshotter.
#[derive(Debug, Clone)]
pub struct SnapshotterConfig {
    /// Write a snapshot this often when the journal has grown (zero: only
    /// when asked).
    pub interval: Duration,
    /// Core to pin the thread to; it also puts itself in the idle
    /// scheduling class.
    pub core: Option<usize>,
}

/// A running snapshotter.
pub struct Snapshotter {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Snapshotter {
    /// Starts the thread. It builds its replica itself, off the start path:
    /// the newest snapshot it can use plus the journal after it (read-only),
    /// then follows the journal.
    pub fn start(cfg: SnapshotterConfig, storage: Arc<dyn Storage>, snapshots: Snapshots, limits: Limits) -> Result<Snapshotter, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (s, r, w) = (stop.clone(), requests.clone(), written.clone());
        let handle = std::thread::Builder::new()
            .name("snapshotter".into())
            .spawn(move || {
                crate::gateway::pin_background(cfg.core, "snapshotter");
                match load_replica(&storage, &snapshots, limits) {
                    Ok((replica, last_seq)) => follow(cfg, storage, snapshots, replica, last_seq, s, r, w),
                    Err(e) => tracing::error!(error = %e, "snapshotter cannot build its replica; no snapshots will be written"),
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Snapshotter { handle: Some(handle), stop, requests, written })
    }

    /// Asks for a snapshot now (what SIGUSR1 does).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = &self.handle {
            h.thread().unpark();
        }
    }

    /// A counter SIGUSR1 increments (`signal_hook::flag` style).
    pub fn request_counter(&self) -> Arc<AtomicU64> {
        self.requests.clone()
    }

    /// The journal sequence of the last snapshot written (0: none yet).
    pub fn last_written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// The state as of the newest usable snapshot (or an empty one), and the
/// journal sequence it covers; `follow` replays the rest.
fn load_replica(storage: &Arc<dyn Storage>, snaps: &Snapshots, limits: Limits) -> Result<(EngineState, u64), String> {
    for info in snaps.list().map_err(|e| e.to_string())?.into_iter().rev().filter(|i| i.valid) {
        let Ok(Ok(snap)) = snaps.read(info.seq) else { continue };
        let Ok(state) = decode_state(&snap.data) else { continue };
        // Usable only if the journal still holds what follows it.
        if Reader::open_with(storage.clone(), None, snap.seq + 1, false).is_ok() {
            return Ok((state, snap.seq));
        }
    }
    Ok((EngineState::fresh(Exchange::new(limits)), 0))
}

#[allow(clippy::too_many_arguments)]
fn follow(
    cfg: SnapshotterConfig,
    storage: Arc<dyn Storage>,
    snapshots: Snapshots,
    mut replica: EngineState,
    mut last_seq: u64,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    let mut reader = match Reader::open_with(storage, None, last_seq + 1, false) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "snapshotter cannot read the journal; no snapshots will be written");
            return;
        }
    };
    let mut last_snapshot = last_seq;
    let mut seen_requests = requests.load(Ordering::SeqCst);
    let mut due = Instant::now() + cfg.interval;
    while !stop.load(Ordering::Relaxed) {
        // Follow the journal as it grows, so a snapshot never waits on a
        // long replay.
        match replay_with(&mut reader, &mut replica.exchange, Some(&mut replica.sessions), true) {
            Ok(rep) if rep.last_seq > 0 => last_seq = last_seq.max(rep.last_seq),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "snapshotter: the journal does not replay; no more snapshots");
                return;
            }
        }
        let r = requests.load(Ordering::SeqCst);
        let asked = r != seen_requests;
        let timed = !cfg.interval.is_zero() && Instant::now() >= due;
        if asked || (timed && last_seq > last_snapshot) {
            seen_requests = r;
            let t = Instant::now();
            let data = encode_state(&replica);
            match snapshots.write(last_seq, &data) {
                Ok(path) => {
                    last_snapshot = last_seq;
                    written.store(last_seq, Ordering::SeqCst);
                    tracing::info!(seq = last_seq, bytes = data.len(), seconds = t.elapsed().as_secs_f64(), path = %path.display(), "snapshot written");
                }
                Err(e) => tracing::error!(error = %e, "writing a snapshot failed"),
            }
        }
        if timed || asked {
            due = Instant::now() + cfg.interval;
        }
        // Woken early by a request; otherwise look at the journal again soon.
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let limits = Limits {
            accounts_max: 8,
            assets_max: 2,
            instruments_max: 2,
            orders_max: 16,
            levels_max: 16,
            fee_account: otedama_engine::AccountId(0),
        };
        let state = EngineState::fresh(Exchange::new(limits));
        let b = encode_state(&state);
        let back = decode_state(&b).unwrap();
        assert_eq!(back.exchange.state_hash(), state.exchange.state_hash());
        assert!(decode_state(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_state(&bad).is_err());
        assert!(decode_state(b"OTDSTAT1").is_err());
    }
}
