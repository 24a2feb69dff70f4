//! The single writer: appends records into the current mapped segment, rolls
//! to segments prepared ahead of time, and makes records durable according
//! to the configured policy.
//!
//! Threads: the caller's thread appends. A *preparer* thread keeps
//! `prepare_ahead` segments allocated, zeroed and pre-faulted, renames
//! segments the writer has rolled into, and recycles released ones. Under
//! `batch` a *flusher* thread syncs the dirty range as soon as the previous
//! sync ends (group commit, never on a timer) and advances `durable_seq`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::JournalError;
use crate::control::{CONTROL_BYTES, CONTROL_NAME, Control, Event};
use crate::format::*;
use crate::recovery::{Damage, scan};
use crate::storage::{FileStorage, Region, Storage};

/// When appended records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Page cache only; synced at close.
    None,
    /// Group commit: a background flusher syncs continuously.
    #[default]
    Batch,
    /// Every append syncs before it returns.
    Always,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Durability::None),
            "batch" => Ok(Durability::Batch),
            "always" => Ok(Durability::Always),
            _ => Err(format!("unknown durability {s:?} (none, batch, always)")),
        }
    }
}

/// Journal settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of each segment file, header included.
    pub segment_bytes: u64,
    pub durability: Durability,
    /// Segments kept allocated and pre-faulted ahead of the writer.
    pub prepare_ahead: usize,
    /// How long the flusher spins for new records before it parks.
    pub flusher_spin: Duration,
    /// Truncate at the first damage even below the durable watermark
    /// (`otedama journal repair`). Off: such damage fails the open.
    pub repair: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            durability: Durability::Batch,
            prepare_ahead: 2,
            flusher_spin: Duration::from_micros(50),
            repair: false,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<(), JournalError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) || self.segment_bytes % 4096 != 0 {
            return Err(JournalError::Config(format!(
                "segment_bytes must be a multiple of 4096 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            )));
        }
        if !(1..=16).contains(&self.prepare_ahead) {
            return Err(JournalError::Config(format!("prepare_ahead must be 1..=16, got {}", self.prepare_ahead)));
        }
        Ok(())
    }
}

/// What opening found and did.
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    pub first_seq: u64,
    pub next_seq: u64,
    pub persisted_watermark: u64,
    pub segments: usize,
    /// Where the valid prefix ended, if a tail was truncated or repaired.
    pub truncated_at: Option<Damage>,
    /// Whether the truncation cut below the watermark (repair only).
    pub repaired_below_watermark: bool,
    /// Segment files removed because they followed the truncation point.
    pub dropped_segments: Vec<String>,
}

/// Counters the writer side keeps (read with [`Journal::stats`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriterStats {
    pub rolls: u64,
    pub syncs: u64,
    pub sync_ns_total: u64,
    pub segments_created: u64,
    pub segments_recycled: u64,
    /// Rolls that found no prepared segment and had to wait.
    pub roll_waits: u64,
}

pub(crate) struct Segment {
    region: Arc<dyn Region>,
    name: Mutex<String>,
    first_seq: AtomicU64,
    /// Bytes in use (records and any end marker), released by the writer.
    written_end: AtomicUsize,
    /// Bytes covered by a completed sync (flusher-owned).
    synced_end: AtomicUsize,
    /// The writer has rolled past this segment; `written_end` is final.
    sealed: AtomicBool,
}

impl Segment {
    fn new(region: Arc<dyn Region>, name: String, first_seq: u64, written_end: usize) -> Arc<Segment> {
        Arc::new(Segment {
            region,
            name: Mutex::new(name),
            first_seq: AtomicU64::new(first_seq),
            written_end: AtomicUsize::new(written_end),
            synced_end: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
        })
    }

    /// Sealed and synced to its final end: the flusher is done with it.
    fn is_fully_synced(&self) -> bool {
        self.sealed.load(Ordering::Acquire) && self.synced_end.load(Ordering::Acquire) >= self.written_end.load(Ordering::Acquire)
    }

    #[allow(clippy::mut_from_ref)]
    fn header_mut(&self) -> &mut [u8] {
        // SAFETY: the header page is written only by the writer (first
        // record fields, at roll, before anyone else sees the segment) and
        // by the flusher (watermark slots), on disjoint bytes.
        unsafe { std::slice::from_raw_parts_mut(self.region.ptr(), SEGMENT_HEADER_BYTES) }
    }
}

struct Shared {
    storage: Arc<dyn Storage>,
    ctl: Control,
    opts: Options,
    journal_id: u64,
    prepared: Mutex<VecDeque<Arc<Segment>>>,
    to_rename: Mutex<Vec<Arc<Segment>>>,
    /// Segments that may hold unsynced bytes, oldest first; the last one is
    /// the writer's current segment.
    active: Mutex<Vec<Arc<Segment>>>,
    /// Wakes the preparer.
    prep_word: AtomicU32,
    /// Signalled when the preparer has made a segment ready.
    ready_word: AtomicU32,
    prep_error: Mutex<Option<std::io::Error>>,
    poisoned: AtomicBool,
    failure: Mutex<Option<String>>,
    release_below: AtomicU64,
    shutdown: AtomicBool,
    watermark_gen: AtomicU64,
    prepared_counter: AtomicU64,
    stats: Mutex<WriterStats>,
    /// Test-only: skip every sync but still advance `durable_seq`.
    skip_syncs: bool,
}

impl Shared {
    fn poison(&self, what: String) {
        tracing::error!(journal = %self.storage.describe(), error = %what, "journal poisoned: no further appends");
        *self.failure.lock().expect("lock") = Some(what);
        self.poisoned.store(true, Ordering::Release);
        self.ctl.durable_event().notify();
    }

    fn poison_error(&self) -> JournalError {
        JournalError::Poisoned(self.failure.lock().expect("lock").clone().unwrap_or_default())
    }

    fn sync_region(&self, region: &dyn Region, offset: usize, len: usize) -> std::io::Result<()> {
        if self.skip_syncs || len == 0 {
            return Ok(());
        }
        let t = Instant::now();
        let r = region.sync(offset, len);
        let mut s = self.stats.lock().expect("lock");
        s.syncs += 1;
        s.sync_ns_total += t.elapsed().as_nanos() as u64;
        r
    }

    /// Syncs every active segment up to what the writer has released, after
    /// persisting `persist_watermark` into the newest header. Everything
    /// committed up to `covers` is durable when this returns `Ok`.
    fn sync_active(&self, persist_watermark: u64) -> std::io::Result<()> {
        let segs: Vec<Arc<Segment>> = self.active.lock().expect("lock").clone();
        let Some(newest) = segs.last() else { return Ok(()) };
        let generation = self.watermark_gen.fetch_add(1, Ordering::Relaxed) + 1;
        write_watermark(newest.header_mut(), generation, persist_watermark);
        for (i, seg) in segs.iter().enumerate() {
            let end = seg.written_end.load(Ordering::Acquire);
            let is_newest = i + 1 == segs.len();
            let from = if is_newest { 0 } else { seg.synced_end.load(Ordering::Relaxed) & !4095 };
            if end > from || is_newest {
                self.sync_region(&*seg.region, from, end - from)?;
            }
            seg.synced_end.store(end, Ordering::Release);
        }
        self.active.lock().expect("lock").retain(|s| !s.is_fully_synced());
        Ok(())
    }
}

/// The journal's single writer.
pub struct Journal {
    shared: Arc<Shared>,
    cur: Arc<Segment>,
    base: *mut u8,
    seg_len: usize,
    offset: usize,
    next_seq: u64,
    durability: Durability,
    max_payload: usize,
    threads: Vec<JoinHandle<()>>,
    report: OpenReport,
    closed: bool,
    _lock: Box<dyn Send + Sync>,
}

// SAFETY: `base` points into `cur`'s mapping, which the Journal owns through
// an Arc; the Journal is used by one thread at a time (&mut self).
unsafe impl Send for Journal {}

/// Current wall-clock time in ns since the Unix epoch (vDSO, no syscall).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Journal {
    /// Opens (or creates) the journal in directory `dir`.
    pub fn open(dir: impl AsRef<std::path::Path>, opts: Options) -> Result<Journal, JournalError> {
        let dir = dir.as_ref();
        let storage = FileStorage::new(dir).map_err(|e| JournalError::io("create directory", dir.display().to_string(), e))?;
        Journal::open_with(Arc::new(storage), opts)
    }

    /// Opens a journal on any storage (tests use [`crate::SimStorage`]).
    pub fn open_with(storage: Arc<dyn Storage>, opts: Options) -> Result<Journal, JournalError> {
        Self::open_inner(storage, opts, false)
    }

    /// Test-only: a journal that never syncs but reports records durable.
    /// The power-loss test shows that this variant loses acknowledged data.
    #[doc(hidden)]
    pub fn open_skipping_syncs(storage: Arc<dyn Storage>, opts: Options) -> Result<Journal, JournalError> {
        Self::open_inner(storage, opts, true)
    }

    fn open_inner(storage: Arc<dyn Storage>, opts: Options, skip_syncs: bool) -> Result<Journal, JournalError> {
        opts.validate()?;
        let desc = storage.describe();
        let lock = storage.lock_writer().map_err(|e| JournalError::Locked(e.to_string()))?;
        let scan = scan(&*storage, true)?;
        if !opts.repair {
            if let Some(err) = scan.corrupt_error() {
                return Err(err);
            }
        }
        let io = |op: &'static str| {
            let desc = desc.clone();
            move |e| JournalError::io(op, desc.clone(), e)
        };

        // Drop what follows the valid prefix and prepared files never used.
        let mut dropped = Vec::new();
        for name in scan.beyond.iter().chain(&scan.unused_prepared) {
            storage.remove(name).map_err(io("remove"))?;
            if !name.starts_with(PREPARED_PREFIX) {
                dropped.push(name.clone());
            }
        }
        let repaired_below = scan.damage_below_watermark();
        let next_seq = scan.next_seq;
        let last_seq = next_seq - 1;
        let journal_id = scan.journal_id.unwrap_or_else(|| now_ns() ^ ((std::process::id() as u64) << 32));

        let mut generation = scan
            .segments
            .iter()
            // SAFETY: headers are mapped for the region's lifetime.
            .filter_map(|s| read_watermark(unsafe { std::slice::from_raw_parts(s.region.ptr(), SEGMENT_HEADER_BYTES) }))
            .map(|(g, _)| g)
            .max()
            .unwrap_or(0);
        // Name rolled prepared segments and clear everything after the end.
        let mut segs: Vec<Arc<Segment>> = Vec::new();
        for s in &scan.segments {
            let final_name = segment_name(s.header.first_seq);
            if s.name != final_name {
                storage.rename(&s.name, &final_name).map_err(io("rename"))?;
            }
            segs.push(Segment::new(s.region.clone(), final_name, s.header.first_seq, s.end_offset));
        }
        let (cur, offset) = match (segs.last(), scan.segments.last()) {
            (Some(seg), Some(s)) => {
                let len = s.region.len();
                // SAFETY: writable mapping of `len` bytes owned by `seg`.
                let bytes = unsafe { std::slice::from_raw_parts_mut(s.region.ptr(), len) };
                let tail = &mut bytes[s.end_offset..];
                if tail.iter().any(|&b| b != 0) {
                    tail.fill(0);
                }
                if repaired_below || scan.watermark > last_seq {
                    // After a repair the promise holds only up to the repair
                    // point; a newer generation in the last header says so.
                    generation += 1;
                    write_watermark(&mut bytes[..SEGMENT_HEADER_BYTES], generation, last_seq);
                }
                s.region.sync(0, len).map_err(io("sync"))?;
                (seg.clone(), s.end_offset)
            }
            _ => {
                // Created under a temporary name and renamed once its header
                // is written, so no reader ever sees a final name without one.
                let tmp = format!("{PREPARED_PREFIX}{journal_id:016x}-initial.seg");
                let region = storage.create(&tmp, opts.segment_bytes as usize).map_err(io("create segment"))?;
                let seg = Segment::new(region, segment_name(next_seq), next_seq, SEGMENT_HEADER_BYTES);
                SegmentHeader { segment_bytes: opts.segment_bytes, first_seq: next_seq, created_ns: now_ns(), journal_id }
                    .write(seg.header_mut());
                seg.region.sync(0, SEGMENT_HEADER_BYTES).map_err(io("sync"))?;
                storage.rename(&tmp, &segment_name(next_seq)).map_err(io("rename"))?;
                (seg, SEGMENT_HEADER_BYTES)
            }
        };
        storage.sync_dir().map_err(io("sync directory"))?;

        let ctl = Control::new(storage.shared_memory(CONTROL_NAME, CONTROL_BYTES).map_err(io("map control block"))?);
        // Everything found on open has just been synced.
        ctl.start_writer(journal_id, last_seq, last_seq);

        let report = OpenReport {
            first_seq: scan.first_seq,
            next_seq,
            persisted_watermark: scan.watermark,
            segments: segs.len().max(1),
            truncated_at: scan.damage.clone(),
            repaired_below_watermark: repaired_below,
            dropped_segments: dropped,
        };
        if report.truncated_at.is_some() || !report.dropped_segments.is_empty() {
            tracing::warn!(journal = %desc, report = ?report, "journal tail truncated on open");
        }

        cur.synced_end.store(offset, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            storage,
            ctl,
            journal_id,
            prepared: Mutex::new(VecDeque::new()),
            to_rename: Mutex::new(Vec::new()),
            active: Mutex::new(vec![cur.clone()]),
            prep_word: AtomicU32::new(0),
            ready_word: AtomicU32::new(0),
            prep_error: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            failure: Mutex::new(None),
            release_below: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            watermark_gen: AtomicU64::new(generation),
            prepared_counter: AtomicU64::new(0),
            stats: Mutex::new(WriterStats::default()),
            skip_syncs,
            opts: opts.clone(),
        });

        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("journal-prepare".into())
                .spawn(move || preparer(s))
                .map_err(|e| JournalError::io("spawn", desc.clone(), e))?,
        );
        if opts.durability == Durability::Batch {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("journal-flush".into())
                    .spawn(move || flusher(s))
                    .map_err(|e| JournalError::io("spawn", desc.clone(), e))?,
            );
        }

        let base = cur.region.ptr();
        let seg_len = cur.region.len();
        Ok(Journal {
            max_payload: max_payload(opts.segment_bytes),
            durability: opts.durability,
            shared,
            cur,
            base,
            seg_len,
            offset,
            next_seq,
            threads,
            report,
            closed: false,
            _lock: lock,
        })
    }

    /// What opening found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Last sequence number covered by a completed sync.
    pub fn durable_seq(&self) -> u64 {
        self.shared.ctl.durable_seq()
    }

    pub fn journal_id(&self) -> u64 {
        self.shared.journal_id
    }

    /// A handle other threads use to wait for durability.
    pub fn durability_watch(&self) -> DurabilityWatch {
        DurabilityWatch { shared: self.shared.clone() }
    }

    pub fn stats(&self) -> WriterStats {
        self.shared.stats.lock().expect("lock").clone()
    }

    /// Segments prepared and waiting for the writer.
    pub fn prepared_segments(&self) -> usize {
        self.shared.prepared.lock().expect("lock").len()
    }

    /// Largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Appends one record; returns its sequence number.
    #[inline]
    pub fn append(&mut self, kind: u16, version: u16, timestamp_ns: u64, payload: &[u8]) -> Result<u64, JournalError> {
        let mut r = self.reserve(payload.len())?;
        r.payload().copy_from_slice(payload);
        r.commit(kind, version, timestamp_ns)
    }

    /// Reserves room for a record of `len` payload bytes, to be written in
    /// place and then committed. Dropping the reservation writes nothing.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<Reservation<'_>, JournalError> {
        if self.shared.poisoned.load(Ordering::Relaxed) {
            return Err(self.shared.poison_error());
        }
        if len > self.max_payload {
            return Err(JournalError::TooLarge { len, max: self.max_payload });
        }
        if self.offset + record_bytes(len) > self.seg_len {
            self.roll()?;
        }
        Ok(Reservation { j: self, len })
    }

    #[cold]
    fn roll(&mut self) -> Result<(), JournalError> {
        let next = self.take_prepared()?;
        // Everything up to here is final; readers go on at the next segment.
        if self.offset + 4 <= self.seg_len {
            // SAFETY: in bounds, 4-aligned; atomic like every `len` word.
            unsafe { (*(self.base.add(self.offset) as *const AtomicU32)).store(END_OF_SEGMENT, Ordering::Release) };
            self.cur.written_end.store(self.offset + RECORD_ALIGN.min(self.seg_len - self.offset), Ordering::Release);
        }
        self.cur.sealed.store(true, Ordering::Release);

        SegmentHeader {
            segment_bytes: next.region.len() as u64,
            first_seq: self.next_seq,
            created_ns: now_ns(),
            journal_id: self.shared.journal_id,
        }
        .write(next.header_mut());
        next.first_seq.store(self.next_seq, Ordering::Release);
        next.written_end.store(SEGMENT_HEADER_BYTES, Ordering::Release);
        self.shared.active.lock().expect("lock").push(next.clone());
        self.shared.to_rename.lock().expect("lock").push(next.clone());
        Event(&self.shared.prep_word).notify();

        self.base = next.region.ptr();
        self.seg_len = next.region.len();
        self.offset = SEGMENT_HEADER_BYTES;
        self.cur = next;
        self.shared.stats.lock().expect("lock").rolls += 1;
        Ok(())
    }

    fn take_prepared(&mut self) -> Result<Arc<Segment>, JournalError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waited = false;
        loop {
            if let Some(seg) = self.shared.prepared.lock().expect("lock").pop_front() {
                if waited {
                    self.shared.stats.lock().expect("lock").roll_waits += 1;
                }
                return Ok(seg);
            }
            if let Some(e) = self.shared.prep_error.lock().expect("lock").take() {
                return Err(JournalError::io("prepare segment", self.shared.storage.describe(), e));
            }
            if Instant::now() > deadline {
                return Err(JournalError::io(
                    "prepare segment",
                    self.shared.storage.describe(),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no segment prepared within 60 s"),
                ));
            }
            waited = true;
            Event(&self.shared.prep_word).notify();
            let shared = &self.shared;
            Event(&shared.ready_word).wait(
                || !shared.prepared.lock().expect("lock").is_empty() || shared.prep_error.lock().expect("lock").is_some(),
                Duration::ZERO,
                Duration::from_millis(100),
            );
        }
    }

    /// Lets segments that hold only records below `seq` be recycled as new
    /// segments (their files are reused in place). Callers pass what every
    /// consumer and the newest snapshot have moved past.
    pub fn release(&self, seq: u64) {
        self.shared.release_below.fetch_max(seq, Ordering::Relaxed);
        Event(&self.shared.prep_word).notify();
    }

    /// Makes everything appended so far durable and waits for it,
    /// whatever the policy.
    pub fn sync(&mut self) -> Result<u64, JournalError> {
        let last = self.next_seq - 1;
        match self.durability {
            Durability::Batch => {
                let watch = self.durability_watch();
                while !watch.wait(last, Duration::from_secs(1))? {}
            }
            Durability::None | Durability::Always => self.sync_inline(last)?,
        }
        Ok(last)
    }

    fn sync_inline(&mut self, last: u64) -> Result<(), JournalError> {
        let prev = self.shared.ctl.durable_seq();
        if let Err(e) = self.shared.sync_active(prev) {
            self.shared.poison(format!("sync failed: {e}"));
            return Err(self.shared.poison_error());
        }
        self.shared.ctl.set_durable_seq(last);
        self.shared.ctl.durable_event().notify();
        Ok(())
    }

    /// Syncs everything, persists the watermark, stops the background
    /// threads and releases the writer lock.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), JournalError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = if self.shared.poisoned.load(Ordering::Acquire) {
            Err(self.shared.poison_error())
        } else {
            // Stop the flusher first so the final syncs run here alone.
            self.stop_threads();
            let last = self.next_seq - 1;
            self.sync_inline(last).and_then(|_| {
                // A second pass persists the watermark that covers the first.
                self.shared.sync_active(last).map_err(|e| JournalError::io("sync", self.shared.storage.describe(), e))
            })
        };
        self.stop_threads();
        for seg in self.shared.prepared.lock().expect("lock").drain(..) {
            let name = seg.name.lock().expect("lock").clone();
            let _ = self.shared.storage.remove(&name);
        }
        let _ = self.shared.storage.sync_dir();
        self.shared.ctl.stop_writer();
        result
    }

    fn stop_threads(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        Event(&self.shared.prep_word).notify();
        self.shared.ctl.data_event().notify();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Simulates a crash: stops the background threads without any final
    /// sync or cleanup (tests only).
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.closed = true;
        self.stop_threads();
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!(error = %e, "journal close failed");
        }
    }
}

/// Room for one record, written in place.
pub struct Reservation<'j> {
    j: &'j mut Journal,
    len: usize,
}

impl Reservation<'_> {
    /// The payload bytes to fill (zeroed).
    #[inline]
    pub fn payload(&mut self) -> &mut [u8] {
        // SAFETY: `reserve` checked the record fits in the current segment;
        // the bytes past the write head are not yet visible to readers.
        unsafe { std::slice::from_raw_parts_mut(self.j.base.add(self.j.offset + RECORD_HEADER_BYTES), self.len) }
    }

    /// Writes the header, publishes the record and returns its sequence.
    #[inline]
    pub fn commit(self, kind: u16, version: u16, timestamp_ns: u64) -> Result<u64, JournalError> {
        let j = self.j;
        let len = self.len;
        let total = record_bytes(len);
        let seq = j.next_seq;
        // SAFETY: as in `payload`.
        let rec = unsafe { std::slice::from_raw_parts_mut(j.base.add(j.offset), total) };
        put_u64(rec, R_SEQ, seq);
        put_u64(rec, R_TIMESTAMP, timestamp_ns);
        put_u16(rec, R_KIND, kind);
        put_u16(rec, R_VERSION, version);
        put_u32(rec, R_PAYLOAD_LEN, len as u32);
        let (head, payload) = rec.split_at_mut(RECORD_HEADER_BYTES);
        let crc = record_crc(total as u32, &head[R_SEQ..], payload);
        put_u32(head, R_CRC, crc);
        // Publication: `size` last, with release ordering (see `read_slot`).
        // SAFETY: 4-aligned word inside the record.
        unsafe { (*(j.base.add(j.offset) as *const AtomicU32)).store(total as u32, Ordering::Release) };
        j.offset += total;
        j.next_seq += 1;
        j.cur.written_end.store(j.offset, Ordering::Release);
        j.shared.ctl.set_published_seq(seq);
        j.shared.ctl.data_event().notify();
        if j.durability == Durability::Always {
            j.sync_inline(seq)?;
        }
        Ok(seq)
    }
}

/// Waits for the durable watermark from any thread.
#[derive(Clone)]
pub struct DurabilityWatch {
    shared: Arc<Shared>,
}

impl DurabilityWatch {
    pub fn durable_seq(&self) -> u64 {
        self.shared.ctl.durable_seq()
    }

    /// Waits until `seq` is durable; `Ok(false)` on timeout, `Err` if the
    /// journal failed a sync (that record may never become durable).
    pub fn wait(&self, seq: u64, timeout: Duration) -> Result<bool, JournalError> {
        let s = &self.shared;
        let ok = s.ctl.durable_event().wait(
            || s.ctl.durable_seq() >= seq || s.poisoned.load(Ordering::Acquire),
            Duration::from_micros(20),
            timeout,
        );
        if s.ctl.durable_seq() >= seq {
            Ok(true)
        } else if s.poisoned.load(Ordering::Acquire) {
            Err(s.poison_error())
        } else {
            debug_assert!(!ok || s.ctl.durable_seq() >= seq);
            Ok(false)
        }
    }
}

fn flusher(s: Arc<Shared>) {
    let mut durable = s.ctl.durable_seq();
    loop {
        let published = s.ctl.published_seq();
        if published > durable {
            if let Err(e) = s.sync_active(durable) {
                s.poison(format!("sync failed: {e}"));
                return;
            }
            durable = published;
            s.ctl.set_durable_seq(durable);
            s.ctl.durable_event().notify();
            continue;
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        s.ctl.data_event().wait(
            || s.ctl.published_seq() > durable || s.shutdown.load(Ordering::Acquire),
            s.opts.flusher_spin,
            Duration::from_millis(500),
        );
    }
}

fn preparer(s: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        // Read before taking the renames, so the last roll before a
        // shutdown is always renamed.
        let stopping = s.shutdown.load(Ordering::Acquire);
        // Give rolled segments their final names.
        let rolled: Vec<Arc<Segment>> = std::mem::take(&mut *s.to_rename.lock().expect("lock"));
        if !rolled.is_empty() {
            for seg in &rolled {
                let final_name = segment_name(seg.first_seq.load(Ordering::Acquire));
                let mut name = seg.name.lock().expect("lock");
                match s.storage.rename(&name, &final_name) {
                    Ok(()) => *name = final_name,
                    Err(e) => tracing::error!(error = %e, from = %name, "segment rename failed; recovery will name it"),
                }
            }
            if let Err(e) = s.storage.sync_dir() {
                tracing::error!(error = %e, "directory sync failed");
            }
            s.ctl.data_event().notify();
            if s.opts.durability == Durability::None {
                sync_sealed(&s);
            }
        }
        if stopping {
            return;
        }
        // Keep `prepare_ahead` segments ready, one per pass so renames of
        // rolled segments are never starved by a fast writer.
        let mut failed = false;
        if s.prepared.lock().expect("lock").len() < s.opts.prepare_ahead {
            match prepare_one(&s) {
                Ok(seg) => {
                    s.prepared.lock().expect("lock").push_back(seg);
                    *s.prep_error.lock().expect("lock") = None;
                    backoff = Duration::from_millis(10);
                    Event(&s.ready_word).notify();
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, journal = %s.storage.describe(), "cannot prepare the next segment");
                    *s.prep_error.lock().expect("lock") = Some(e);
                    Event(&s.ready_word).notify();
                    failed = true;
                }
            }
        }
        let wait = if failed {
            backoff = (backoff * 2).min(Duration::from_secs(1));
            backoff
        } else {
            Duration::from_secs(1)
        };
        let word = &s.prep_word;
        let seen = word.load(Ordering::Acquire) & !1;
        Event(word).wait(
            || {
                word.load(Ordering::Acquire) & !1 != seen
                    || s.shutdown.load(Ordering::Acquire)
                    || !s.to_rename.lock().expect("lock").is_empty()
            },
            Duration::ZERO,
            wait,
        );
    }
}

/// Under `none` nothing syncs while the writer runs, so the preparer syncs
/// each segment the writer has sealed, in the background: the loss window
/// after a power cut is bounded by the current segment, and sealed segments
/// can be recycled.
fn sync_sealed(s: &Shared) {
    let sealed: Vec<Arc<Segment>> = s.active.lock().expect("lock").iter().filter(|a| a.sealed.load(Ordering::Acquire)).cloned().collect();
    for seg in sealed {
        let end = seg.written_end.load(Ordering::Acquire);
        if let Err(e) = s.sync_region(&*seg.region, 0, end) {
            s.poison(format!("sync failed: {e}"));
            return;
        }
        seg.synced_end.store(end, Ordering::Release);
    }
    s.active.lock().expect("lock").retain(|a| !a.is_fully_synced());
}

/// Creates a fresh segment or recycles the oldest released one.
fn prepare_one(s: &Shared) -> std::io::Result<Arc<Segment>> {
    let n = s.prepared_counter.fetch_add(1, Ordering::Relaxed);
    let name = format!("{PREPARED_PREFIX}{:016x}-{n}.seg", s.journal_id);
    let header = SegmentHeader { segment_bytes: s.opts.segment_bytes, first_seq: 0, created_ns: now_ns(), journal_id: s.journal_id };

    if let Some(old) = recyclable(s)? {
        s.storage.rename(&old, &name)?;
        let region = s.storage.open(&name, true)?;
        if region.len() as u64 == s.opts.segment_bytes {
            // SAFETY: the writer no longer uses this file; nothing else writes it.
            let bytes = unsafe { std::slice::from_raw_parts_mut(region.ptr(), region.len()) };
            bytes[..SEGMENT_HEADER_BYTES].fill(0);
            header.write(&mut bytes[..SEGMENT_HEADER_BYTES]);
            // The header must not claim the old first sequence after a crash.
            region.sync(0, SEGMENT_HEADER_BYTES)?;
            // Zero the body: the writer relies on zeros past its head, and
            // this also leaves every page resident and writable.
            bytes[SEGMENT_HEADER_BYTES..].fill(0);
            s.stats.lock().expect("lock").segments_recycled += 1;
            return Ok(Segment::new(region, name, 0, SEGMENT_HEADER_BYTES));
        }
        // Size changed by configuration: drop it and create a fresh one.
        drop(region);
        s.storage.remove(&name)?;
    }

    let region = s.storage.create(&name, s.opts.segment_bytes as usize)?;
    // SAFETY: fresh mapping, not yet shared.
    header.write(unsafe { std::slice::from_raw_parts_mut(region.ptr(), SEGMENT_HEADER_BYTES) });
    region.sync(0, SEGMENT_HEADER_BYTES)?;
    s.storage.sync_dir()?;
    s.stats.lock().expect("lock").segments_created += 1;
    Ok(Segment::new(region, name, 0, SEGMENT_HEADER_BYTES))
}

/// The oldest segment file whose records all lie below the release mark and
/// that the flusher no longer needs.
fn recyclable(s: &Shared) -> std::io::Result<Option<String>> {
    let release = s.release_below.load(Ordering::Relaxed);
    if release == 0 {
        return Ok(None);
    }
    let mut seqs: Vec<u64> = s.storage.list()?.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();
    let active: Vec<u64> = s.active.lock().expect("lock").iter().map(|a| a.first_seq.load(Ordering::Relaxed)).collect();
    if seqs.len() >= 2 && seqs[1] <= release && !active.contains(&seqs[0]) {
        return Ok(Some(segment_name(seqs[0])));
    }
    Ok(None)
}
