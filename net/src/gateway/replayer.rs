//! The replayer: serves a session's missed sequenced messages from the
//! exchange journal, off the engine shard and the I/O shards.
//!
//! The engine shard hands it a request when a login asks for `next_seq`
//! at or below the name's last numbered message: the range `from..=to` and
//! where in the journal the name's numbering can be picked up
//! ([`ResumePoint`]). The replayer reads forward from there, applies the
//! same routing rule as the live router (`crate::sessions::receives`) to
//! number the name's messages, and encodes those in range with the same
//! encoder, so a replayed message is byte for byte what was sent live.
//!
//! Flow control: one chunk (up to [`CHUNK_BYTES`]) in flight per session;
//! the I/O shard asks for the next when the connection's queue has
//! drained, so a slow reader holds the replay, not memory. Messages the
//! engine emits meanwhile wait behind the replay in the shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use otedama_engine::codec::decode_events;
use otedama_journal::{JournalError, Reader, Storage, kinds};

use super::{ConnRef, Waker};
use crate::sessions::{self, Binding, ResumePoint};
use crate::wire;

/// Bytes of frames per chunk handed to an I/O shard.
pub(crate) const CHUNK_BYTES: usize = 64 << 10;

pub(crate) struct ReplayReq {
    pub conn: ConnRef,
    pub binding: Binding,
    pub from: u64,
    pub to: u64,
    pub start: ResumePoint,
    /// Serve only records the journal has synced (ack-on-durable sessions).
    pub durable_only: bool,
}

/// I/O shard → replayer.
pub(crate) enum ReplayCtl {
    /// The connection took the last chunk and has room for another.
    More(ConnRef),
    /// The connection is gone: drop its replay.
    Stop(ConnRef),
}

/// Replayer → I/O shard.
pub(crate) struct ReplayChunk {
    pub conn: ConnRef,
    pub bytes: Vec<u8>,
    /// The last chunk: the range is served.
    pub done: bool,
    /// The replay cannot be served (the reason is logged).
    pub failed: bool,
}

struct Job {
    req: ReplayReq,
    reader: Option<Reader>,
    /// The name's numbering so far.
    counter: u64,
    /// Origin of the command whose events come next.
    origin: (u64, u64),
    /// The chunk may be produced (the shard took the previous one).
    credit: bool,
    events: Vec<otedama_engine::Event>,
}

pub(crate) struct Replayer {
    pub storage: Arc<dyn Storage>,
    pub requests: Receiver<ReplayReq>,
    pub ctl: Receiver<ReplayCtl>,
    pub chunks: Vec<Sender<ReplayChunk>>,
    pub wakers: Vec<Arc<Waker>>,
    pub stop: Arc<AtomicBool>,
}

impl Replayer {
    pub fn run(self) {
        let mut jobs: Vec<Job> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let mut did = false;
            while let Ok(req) = self.requests.try_recv() {
                did = true;
                jobs.retain(|j| j.req.conn != req.conn);
                jobs.push(Job {
                    counter: req.start.out_seq_before,
                    req,
                    reader: None,
                    origin: (0, 0),
                    credit: true,
                    events: Vec::with_capacity(256),
                });
            }
            while let Ok(c) = self.ctl.try_recv() {
                did = true;
                match c {
                    ReplayCtl::More(conn) => {
                        if let Some(j) = jobs.iter_mut().find(|j| j.req.conn == conn) {
                            j.credit = true;
                        }
                    }
                    ReplayCtl::Stop(conn) => jobs.retain(|j| j.req.conn != conn),
                }
            }
            let mut waiting_for_journal = false;
            let mut i = 0;
            while i < jobs.len() {
                if !jobs[i].credit {
                    i += 1;
                    continue;
                }
                let mut bytes = Vec::with_capacity(CHUNK_BYTES + 128);
                let r = self.fill(&mut jobs[i], &mut bytes);
                let conn = jobs[i].req.conn;
                let (done, failed) = match r {
                    Ok(done) => (done, false),
                    Err(e) => {
                        tracing::warn!(key = format_args!("{:016x}", jobs[i].req.binding.key_id), error = %e, "replay cannot be served");
                        (false, true)
                    }
                };
                if bytes.is_empty() && !done && !failed {
                    // The journal has not published the records yet.
                    waiting_for_journal = true;
                    i += 1;
                    continue;
                }
                did = true;
                let shard = conn.shard as usize;
                jobs[i].credit = false;
                let _ = self.chunks[shard].send(ReplayChunk { conn, bytes, done, failed });
                self.wakers[shard].wake_now();
                if done || failed {
                    jobs.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            if !did {
                let t = if waiting_for_journal { Duration::from_micros(200) } else { Duration::from_millis(100) };
                std::thread::park_timeout(t);
            }
        }
    }

    /// Appends the job's next frames to `out`, up to [`CHUNK_BYTES`].
    /// Returns whether the range is complete.
    fn fill(&self, j: &mut Job, out: &mut Vec<u8>) -> Result<bool, JournalError> {
        if j.reader.is_none() {
            j.reader = Some(Reader::open_with(self.storage.clone(), None, j.req.start.journal_seq, j.req.durable_only)?);
        }
        let reader = j.reader.as_mut().expect("opened above");
        let mut frame = [0u8; 128];
        while out.len() < CHUNK_BYTES {
            let Some(rec) = reader.try_next()? else { return Ok(false) };
            match rec.kind {
                kinds::EXCHANGE_COMMAND => {
                    let (k, cs, _) = sessions::split_envelope(rec.version, rec.payload).map_err(|e| bad(rec.seq, e.to_string()))?;
                    j.origin = (k, cs);
                }
                kinds::EXCHANGE_EVENTS => {
                    decode_events(rec.payload, &mut j.events).map_err(|e| bad(rec.seq, e.to_string()))?;
                    let ts = rec.timestamp_ns;
                    for ev in &j.events {
                        let Some(cs) = sessions::receives(&j.req.binding, j.origin.0, j.origin.1, ev) else { continue };
                        j.counter += 1;
                        if j.counter >= j.req.from {
                            let n = wire::encode_event(j.counter, ts, cs, ev, &mut frame);
                            out.extend_from_slice(&frame[..n]);
                        }
                        if j.counter == j.req.to {
                            return Ok(true);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(false)
    }
}

fn bad(seq: u64, why: String) -> JournalError {
    JournalError::Corrupt { segment: String::new(), offset: 0, seq, watermark: 0, reason: why }
}
