//! The single writer: appends records into the current segment, rolls to
//! segments prepared ahead of time, and makes records visible and durable
//! according to the configured policy.
//!
//! Each segment is a preallocated file plus a *stage*: anonymous memory of
//! the same size, pre-faulted (transparent huge pages where available),
//! that mirrors the file byte for byte. The writer builds records in place
//! in the stage: no syscall, no page fault, no allocation. A *writeback*
//! thread copies each committed range into the file (`pwrite`), publishes
//! it to readers (who map the files read-only) and, under `batch`, syncs as
//! soon as the previous sync ends (group commit, never on a timer).
//!
//! Why not write through a shared writable mapping: measured here, syncing
//! pages that the writer has mapped writable costs a write-protect and a TLB
//! shootdown IPI to the writer's core for every page (`folio_mkclean`), which
//! capped group commit at about 0.3x of a plain `pwrite` + `fdatasync`
//! baseline and put interrupts on the writer's core (see BENCHMARKS.md).
//!
//! A *preparer* thread keeps `prepare_ahead` segments ready, renames
//! segments the writer has rolled into, and recycles released ones.

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
    /// Group commit: the writeback thread syncs as soon as the previous
    /// sync ends.
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
    /// How long the writeback thread spins for new records before it parks.
    pub flusher_spin: Duration,
    /// Zero: each append wakes a parked writeback thread (one FUTEX_WAKE).
    /// Above zero: appends never wake it; once parked it wakes itself
    /// after this long, so records reach readers (and a `batch` sync)
    /// up to this much later, and a writer that appends now and then
    /// makes no syscall at all. `sync()` and `close()` still wake it.
    pub writeback_delay: Duration,
    /// Under `batch`: the least time between the starts of two group
    /// commits. Zero (the default): the next sync starts as soon as the
    /// previous one ends, for writers whose acknowledgements wait for
    /// durability. Above zero: records still reach the files (and readers)
    /// at once, but are synced at most this often, so a power loss costs at
    /// most the records of the last interval and one sync; for writers that
    /// acknowledge without waiting for the disk (share journals), where a
    /// sync after every millisecond's records would cost the CPU and the
    /// device far more than that window is worth. `sync()` and `close()`
    /// sync at once whatever the interval.
    pub sync_interval: Duration,
    /// Truncate at the first damage even below the durable watermark
    /// (`otedama journal repair`). Off: such damage fails the open.
    pub repair: bool,
    /// Open with segment preparation held: the preparer prepares nothing
    /// until [`Journal::release_preparation`] (or a roll that needs a
    /// segment). Recovery opens this way: preparing a segment faults in a
    /// 64 MiB stage and may zero-fill a file, work that would take the
    /// second core from the replay running right after the open.
    pub hold_preparation: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            durability: Durability::Batch,
            prepare_ahead: 2,
            flusher_spin: Duration::from_micros(50),
            writeback_delay: Duration::ZERO,
            sync_interval: Duration::ZERO,
            repair: false,
            hold_preparation: false,
        }
    }
}

impl Options {
    pub fn validate(&self) -> Result<(), JournalError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) || !self.segment_bytes.is_multiple_of(4096) {
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

/// Anonymous memory mirroring one segment file, where the writer builds
/// records.
struct Stage {
    map: memmap2::MmapMut,
    /// Pages in `faulted.0..faulted.1` are faulted in; the others may not be.
    faulted: (usize, usize),
}

/// How much of a resumed segment's stage an open with preparation held
/// faults in at once, from the write position; the preparer faults in the
/// rest once preparation is released ([`Stage::populate_rest`]).
const RESUME_WINDOW: usize = 1 << 20;

/// What a paced preparation faults in at once (one transparent huge page),
/// and how long it then leaves the core to others.
const PACE_CHUNK: usize = 2 << 20;
const PACE_PAUSE: Duration = Duration::from_micros(200);

impl Stage {
    fn new(len: usize) -> std::io::Result<Stage> {
        Stage::new_from(len, 0, len)
    }

    /// A stage faulted in a huge page at a time, calling `pause` between
    /// them. Faulted in at one go, a fresh stage held a core for 3.8 ms at
    /// a stretch while the engine shard on that core was runnable and
    /// waiting (a scheduler trace): the scheduler let the preparer run out
    /// its slice. A pause that sleeps (a yield does not give the core up to
    /// a task the scheduler does not deem eligible) bounds each hold to one
    /// huge page: the kernel zeroing 2 MiB, about 1 ms on the reference
    /// machine.
    fn new_paced(len: usize, pause: &mut dyn FnMut()) -> std::io::Result<Stage> {
        let mut stage = Stage::new_from(len, 0, 0)?;
        let mut at = 0;
        while at < len {
            let end = (at + PACE_CHUNK).min(len);
            stage.touch(at, end);
            stage.faulted.1 = end;
            at = end;
            if at < len {
                pause();
            }
        }
        Ok(stage)
    }

    /// A stage whose pages are faulted in from offset `from` up to `upto`:
    /// the writer never touches the bytes below `from` (an open resuming a
    /// segment there), so they need no memory; the pages from `upto` on
    /// are faulted in later ([`Stage::populate_rest`]) or by the writer's
    /// own first touch.
    fn new_from(len: usize, from: usize, upto: usize) -> std::io::Result<Stage> {
        let map = memmap2::MmapOptions::new().len(len).map_anon()?;
        // Fewer TLB misses for a writer sweeping hundreds of MiB; advisory.
        let _ = map.advise(memmap2::Advice::HugePage);
        let from = from & !4095;
        let mut stage = Stage { map, faulted: (from, from) };
        stage.touch(from, upto.min(len));
        stage.faulted.1 = upto.min(len).max(from);
        Ok(stage)
    }

    /// Writes a zero into each page of `from..to`.
    fn touch(&mut self, from: usize, to: usize) {
        for off in (from..to).step_by(4096) {
            // SAFETY: in bounds; the caller owns the stage (nobody writes
            // it meanwhile). What the stage held there is past any write
            // head (a fresh stage, or a reused one whose bytes mean
            // nothing any more).
            unsafe { self.map.as_mut_ptr().add(off).write_volatile(0) };
        }
    }

    /// Faults in every page that is not yet, so the writer never takes a
    /// page fault. The caller owns the stage.
    fn fault_in_all(&mut self) {
        let (lo, hi) = self.faulted;
        self.touch(0, lo);
        self.touch(hi, self.len());
        self.faulted = (0, self.len());
    }

    /// Faults in the pages above the faulted range without writing them
    /// (`MADV_POPULATE_WRITE`), so a writer may be using the stage
    /// meanwhile. A kernel without it (before 5.14) leaves those pages to
    /// fault in at the writer's first touch.
    fn populate_rest(&mut self) {
        let (hi, len) = (self.faulted.1, self.len());
        if hi < len {
            // SAFETY: a range inside our own mapping; populating never
            // changes what the memory holds.
            let rc = unsafe { libc::madvise(self.map.as_mut_ptr().add(hi).cast(), len - hi, libc::MADV_POPULATE_WRITE) };
            if rc == 0 {
                self.faulted.1 = len;
            }
        }
    }

    fn ptr(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

pub(crate) struct Segment {
    file: Arc<dyn Region>,
    /// Owned here until the segment retires; `stage_ptr` stays valid as
    /// long as it is `Some`.
    stage: Mutex<Option<Stage>>,
    stage_ptr: *mut u8,
    stage_len: usize,
    name: Mutex<String>,
    first_seq: AtomicU64,
    /// Bytes committed in the stage (records and any end marker),
    /// released by the writer.
    written_end: AtomicUsize,
    /// Bytes copied into the file (writeback-owned).
    written_back: AtomicUsize,
    /// Bytes covered by a completed sync.
    synced_end: AtomicUsize,
    /// The writer has rolled past this segment; `written_end` is final.
    sealed: AtomicBool,
    /// The header page in the stage changed and must be written back.
    header_dirty: AtomicBool,
    /// The header page as the file holds it (with this segment's first
    /// sequence) has been synced. Until then every sync of the segment
    /// starts at offset 0: records past a header the disk does not have
    /// would be lost at a power cut (recovery takes a header without a
    /// first sequence for an unused prepared file).
    header_synced: AtomicBool,
}

// SAFETY: `stage_ptr` points into `stage`, which lives as long as the
// Segment (until retirement takes it, after which nobody dereferences it).
// The writer writes only past `written_end`; others read only below it.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    fn new(file: Arc<dyn Region>, stage: Stage, name: String, first_seq: u64, written_end: usize) -> Arc<Segment> {
        Arc::new(Segment {
            stage_ptr: stage.ptr(),
            stage_len: stage.len(),
            file,
            stage: Mutex::new(Some(stage)),
            name: Mutex::new(name),
            first_seq: AtomicU64::new(first_seq),
            written_end: AtomicUsize::new(written_end),
            written_back: AtomicUsize::new(written_end),
            synced_end: AtomicUsize::new(0),
            sealed: AtomicBool::new(false),
            header_dirty: AtomicBool::new(false),
            header_synced: AtomicBool::new(false),
        })
    }

    /// The stage bytes `from..to`, which the writer has committed.
    fn staged(&self, from: usize, to: usize) -> &[u8] {
        debug_assert!(from <= to && to <= self.stage_len);
        // SAFETY: committed bytes are no longer written by the writer.
        unsafe { std::slice::from_raw_parts(self.stage_ptr.add(from), to - from) }
    }

    #[allow(clippy::mut_from_ref)]
    fn stage_header_mut(&self) -> &mut [u8] {
        // SAFETY: the header page is written by the writer at roll (before
        // the segment is shared) and by the writeback thread (watermark
        // slots) under the I/O lock, on disjoint bytes.
        unsafe { std::slice::from_raw_parts_mut(self.stage_ptr, SEGMENT_HEADER_BYTES) }
    }

    /// Done with: sealed, in the file, and synced when the policy syncs.
    fn can_retire(&self, durability: Durability) -> bool {
        let end = self.written_end.load(Ordering::Acquire);
        self.sealed.load(Ordering::Acquire)
            && self.written_back.load(Ordering::Acquire) >= end
            && (durability == Durability::None || self.synced_end.load(Ordering::Acquire) >= end)
    }
}

/// The persisted watermark is refreshed on one sync in this many (see
/// `Shared::sync_active`).
const WATERMARK_EVERY_SYNCS: u64 = 8;

/// Most files kept for the final sync under `none` before the oldest is
/// synced in the background (a bound on the list, not on durability).
const UNSYNCED_FILES_MAX: usize = 64;

struct Shared {
    storage: Arc<dyn Storage>,
    ctl: Control,
    opts: Options,
    journal_id: u64,
    prepared: Mutex<VecDeque<Arc<Segment>>>,
    to_rename: Mutex<Vec<Arc<Segment>>>,
    /// Segments whose stage may hold bytes not yet in the file or not yet
    /// synced, oldest first; the last one is the writer's current segment.
    active: Mutex<Vec<Arc<Segment>>>,
    /// Retired segment files not yet synced (`none` only), for close.
    unsynced_files: Mutex<VecDeque<Arc<dyn Region>>>,
    /// Stages of retired segments, reused by the preparer.
    stage_pool: Mutex<Vec<Stage>>,
    /// Held by whoever copies stages into files or syncs.
    io_lock: Mutex<()>,
    /// Last sequence the writer committed to a stage.
    committed: AtomicU64,
    /// Wakes the writeback thread.
    wb_word: AtomicU32,
    /// `Journal::sync` asks the writeback thread for a sync now (batch).
    sync_asked: AtomicBool,
    /// Wakes the preparer.
    prep_word: AtomicU32,
    /// The writer is waiting at a roll for a prepared segment: the
    /// preparer stops pacing itself.
    writer_waiting: AtomicBool,
    /// Segment preparation held (`Options::hold_preparation`).
    prep_held: AtomicBool,
    /// The segment an open with preparation held resumed in: the preparer
    /// faults in the rest of its stage once released.
    populate: Mutex<Option<Arc<Segment>>>,
    /// Signalled when the preparer has made a segment ready.
    ready_word: AtomicU32,
    prep_error: Mutex<Option<std::io::Error>>,
    poisoned: AtomicBool,
    /// Called with the new durable watermark each time it advances.
    on_durable: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    failure: Mutex<Option<String>>,
    release_below: AtomicU64,
    shutdown: AtomicBool,
    /// Stop without finishing pending writeback (crash simulation).
    abandon: AtomicBool,
    watermark_gen: AtomicU64,
    sync_calls: AtomicU64,
    prepared_counter: AtomicU64,
    stats: Mutex<WriterStats>,
    /// Test-only: skip every sync but still advance `durable_seq`.
    skip_syncs: bool,
}

impl Shared {
    /// Publishes a new durable watermark: the control block, the futex
    /// waiters, and the hook, if one is set.
    fn mark_durable(&self, seq: u64) {
        self.ctl.set_durable_seq(seq);
        self.ctl.durable_event().notify();
        if let Some(hook) = self.on_durable.get() {
            hook(seq);
        }
    }

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

    /// Copies every committed byte into the files, then publishes up to
    /// `committed` to readers. Caller holds `io_lock`.
    fn write_back(&self, committed: u64) -> std::io::Result<()> {
        let segs: Vec<Arc<Segment>> = self.active.lock().expect("lock").clone();
        for seg in &segs {
            if seg.header_dirty.swap(false, Ordering::AcqRel) {
                seg.file.write_at(0, seg.staged(0, H_FIXED_END))?;
            }
            let end = seg.written_end.load(Ordering::Acquire);
            let back = seg.written_back.load(Ordering::Relaxed);
            if end > back {
                seg.file.write_at(back, seg.staged(back, end))?;
                seg.written_back.store(end, Ordering::Release);
            }
        }
        if committed > self.ctl.published_seq() {
            self.ctl.set_published_seq(committed);
            self.ctl.data_event().notify();
        }
        Ok(())
    }

    /// Syncs every active segment up to what was written back. On every
    /// `WATERMARK_EVERY_SYNCS`-th call, or when `force`d, it first persists
    /// `persist_watermark` into the newest header, so that sync also makes
    /// the watermark durable. Caller holds `io_lock` and has just called
    /// `write_back`.
    ///
    /// Why not every sync: the header page sits apart from the records, so
    /// persisting it costs the device a second write per sync; measured,
    /// that kept group commit a few per cent below the plain baseline. The
    /// persisted watermark is only a lower bound used to tell damage from a
    /// torn tail, so lagging it by a few syncs loses no promise.
    fn sync_active(&self, persist_watermark: u64, force: bool) -> std::io::Result<()> {
        let segs: Vec<Arc<Segment>> = self.active.lock().expect("lock").clone();
        let Some(newest) = segs.last() else { return Ok(()) };
        let calls = self.sync_calls.fetch_add(1, Ordering::Relaxed);
        let persist = force || calls.is_multiple_of(WATERMARK_EVERY_SYNCS);
        if persist {
            let generation = self.watermark_gen.fetch_add(1, Ordering::Relaxed) + 1;
            write_watermark(newest.stage_header_mut(), generation, persist_watermark);
            let slots = H_WATERMARK_SLOTS[0]..H_WATERMARK_SLOTS[1] + WATERMARK_SLOT_BYTES;
            newest.file.write_at(slots.start, newest.staged(slots.start, slots.end))?;
        }
        for (i, seg) in segs.iter().enumerate() {
            // Read before `end`: a segment is in `active` only after its
            // roll set `header_dirty`, and only `write_back` (under the
            // caller's io_lock, like this) clears it, so `false` here means
            // the file already holds the header with the first sequence.
            let header_in_file = !seg.header_dirty.load(Ordering::Acquire);
            let end = seg.written_back.load(Ordering::Acquire);
            let is_newest = i + 1 == segs.len();
            let from = if (is_newest && persist) || !seg.header_synced.load(Ordering::Relaxed) {
                0
            } else {
                seg.synced_end.load(Ordering::Relaxed) & !4095
            };
            if end > from {
                self.sync_region(&*seg.file, from, end - from)?;
            }
            if header_in_file {
                seg.header_synced.store(true, Ordering::Relaxed);
            }
            seg.synced_end.store(end, Ordering::Release);
        }
        Ok(())
    }

    /// Drops segments nobody needs any more and returns their stages.
    fn retire(&self) {
        let mut retired = Vec::new();
        self.active.lock().expect("lock").retain(|seg| {
            let done = seg.can_retire(self.opts.durability);
            if done {
                retired.push(seg.clone());
            }
            !done
        });
        for seg in retired {
            if let Some(stage) = seg.stage.lock().expect("lock").take() {
                self.stage_pool.lock().expect("lock").push(stage);
            }
            if self.opts.durability == Durability::None {
                let mut files = self.unsynced_files.lock().expect("lock");
                files.push_back(seg.file.clone());
                if files.len() > UNSYNCED_FILES_MAX {
                    let oldest = files.pop_front().expect("non-empty");
                    drop(files);
                    if let Err(e) = self.sync_region(&*oldest, 0, oldest.len()) {
                        self.poison(format!("sync failed: {e}"));
                    }
                }
            }
        }
    }

    /// Everything committed: in the files, synced, watermark persisted.
    fn sync_everything(&self, committed: u64) -> std::io::Result<()> {
        let _io = self.io_lock.lock().expect("lock");
        self.write_back(committed)?;
        for f in self.unsynced_files.lock().expect("lock").drain(..) {
            self.sync_region(&*f, 0, f.len())?;
        }
        let prev = self.ctl.durable_seq();
        self.sync_active(prev, true)?;
        self.mark_durable(committed);
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

// SAFETY: `base` points into `cur`'s stage, which the Journal keeps alive
// through its Arc; the Journal is used by one thread at a time (&mut self).
unsafe impl Send for Journal {}

/// The index of the first non-zero byte. Compares a page at a time (a
/// memcmp against zeros, vectorised), since the tail of a 64 MiB segment is
/// checked at every open.
fn first_nonzero(b: &[u8]) -> Option<usize> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut at = 0;
    for chunk in b.chunks(4096) {
        if chunk != &ZEROS[..chunk.len()] {
            return chunk.iter().position(|&x| x != 0).map(|i| at + i);
        }
        at += chunk.len();
    }
    None
}

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
        if !opts.repair
            && let Some(err) = scan.corrupt_error()
        {
            return Err(err);
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

        // Name rolled prepared segments; sync every file, since an earlier
        // writer that crashed may have left records only in the page cache,
        // and everything found here is reported durable.
        for s in &scan.segments {
            let final_name = segment_name(s.header.first_seq);
            if s.name != final_name {
                storage.rename(&s.name, &final_name).map_err(io("rename"))?;
            }
            s.region.sync(0, s.region.len()).map_err(io("sync"))?;
        }
        let (cur, offset) = match scan.segments.last() {
            Some(s) => {
                let len = s.region.len();
                // SAFETY: the mapping lives as long as `s.region`.
                let bytes = unsafe { std::slice::from_raw_parts(s.region.ptr(), len) };
                // Clear whatever a torn or unsynced tail left after the end.
                if let Some(first_dirty) = first_nonzero(&bytes[s.end_offset..]) {
                    let zeros = vec![0u8; 1 << 20];
                    let mut at = s.end_offset + first_dirty;
                    while at < len {
                        let n = (len - at).min(zeros.len());
                        s.region.write_at(at, &zeros[..n]).map_err(io("truncate"))?;
                        at += n;
                    }
                }
                // The writer reads back only the header from its stage
                // (write-back starts at `end_offset`), so only the header is
                // copied and only the pages from `end_offset` on are faulted in.
                // With preparation held (recovery), only a window from
                // there: the preparer faults in the rest once released,
                // after the replay that wants both cores.
                let upto = if opts.hold_preparation { s.end_offset.saturating_add(RESUME_WINDOW) } else { len };
                let stage = Stage::new_from(len, s.end_offset, upto).map_err(io("allocate stage"))?;
                // SAFETY: fresh stage of `len` bytes; the header lies below `end_offset`.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), stage.ptr(), SEGMENT_HEADER_BYTES.min(s.end_offset)) };
                let seg = Segment::new(s.region.clone(), stage, segment_name(s.header.first_seq), s.header.first_seq, s.end_offset);
                if repaired_below || scan.watermark > last_seq {
                    // After a repair the promise holds only up to the repair
                    // point; a newer generation in the last header says so.
                    generation += 1;
                    write_watermark(seg.stage_header_mut(), generation, last_seq);
                    seg.file.write_at(0, seg.staged(0, SEGMENT_HEADER_BYTES)).map_err(io("write header"))?;
                }
                s.region.sync(0, len).map_err(io("sync"))?;
                (seg, s.end_offset)
            }
            None => {
                // Created under a temporary name and renamed once its header
                // is written, so no reader ever sees a final name without one.
                let tmp = format!("{PREPARED_PREFIX}{journal_id:016x}-initial.seg");
                let len = opts.segment_bytes as usize;
                let file = storage.create(&tmp, len).map_err(io("create segment"))?;
                let seg = Segment::new(
                    file,
                    Stage::new(len).map_err(io("allocate stage"))?,
                    segment_name(next_seq),
                    next_seq,
                    SEGMENT_HEADER_BYTES,
                );
                SegmentHeader { segment_bytes: opts.segment_bytes, first_seq: next_seq, created_ns: now_ns(), journal_id }
                    .write(seg.stage_header_mut());
                seg.file.write_at(0, seg.staged(0, SEGMENT_HEADER_BYTES)).map_err(io("write header"))?;
                seg.file.sync(0, SEGMENT_HEADER_BYTES).map_err(io("sync"))?;
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
            segments: scan.segments.len().max(1),
            truncated_at: scan.damage.clone(),
            repaired_below_watermark: repaired_below,
            dropped_segments: dropped,
        };
        if report.truncated_at.is_some() || !report.dropped_segments.is_empty() {
            tracing::warn!(journal = %desc, report = ?report, "journal tail truncated on open");
        }

        cur.synced_end.store(offset, Ordering::Relaxed);
        // The segment open resumes in was found (or made) on disk with its header.
        cur.header_synced.store(true, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            storage,
            ctl,
            journal_id,
            prepared: Mutex::new(VecDeque::with_capacity(17)),
            // Capacities so that a roll (which pushes to both) allocates
            // nothing in steady state.
            to_rename: Mutex::new(Vec::with_capacity(16)),
            active: Mutex::new({
                let mut v = Vec::with_capacity(64);
                v.push(cur.clone());
                v
            }),
            unsynced_files: Mutex::new(VecDeque::new()),
            stage_pool: Mutex::new(Vec::new()),
            io_lock: Mutex::new(()),
            committed: AtomicU64::new(last_seq),
            wb_word: AtomicU32::new(0),
            sync_asked: AtomicBool::new(false),
            prep_word: AtomicU32::new(0),
            writer_waiting: AtomicBool::new(false),
            prep_held: AtomicBool::new(opts.hold_preparation),
            populate: Mutex::new(opts.hold_preparation.then(|| cur.clone())),
            ready_word: AtomicU32::new(0),
            prep_error: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            on_durable: std::sync::OnceLock::new(),
            failure: Mutex::new(None),
            release_below: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            watermark_gen: AtomicU64::new(generation),
            sync_calls: AtomicU64::new(0),
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
        if opts.durability != Durability::Always {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("journal-flush".into())
                    .spawn(move || writeback(s))
                    .map_err(|e| JournalError::io("spawn", desc.clone(), e))?,
            );
        }

        Ok(Journal {
            max_payload: max_payload(opts.segment_bytes),
            durability: opts.durability,
            base: cur.stage_ptr,
            seg_len: cur.stage_len,
            shared,
            cur,
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

    /// Last sequence number copied into the files and visible to readers.
    pub fn published_seq(&self) -> u64 {
        self.shared.ctl.published_seq()
    }

    /// Last sequence number covered by a completed sync.
    pub fn durable_seq(&self) -> u64 {
        self.shared.ctl.durable_seq()
    }

    pub fn journal_id(&self) -> u64 {
        self.shared.journal_id
    }

    /// A handle other threads use to wait for durability.
    /// The storage the journal writes to (readers in this process open it
    /// with [`crate::Reader::open_with`]).
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.shared.storage.clone()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Sets a function the thread that syncs calls with each new durable
    /// watermark, right after publishing it (once per journal; later calls
    /// are ignored). It runs on the sync path: it must be short and never
    /// block (waking another thread is what it is for). Returns whether it
    /// was set.
    pub fn on_durable(&self, hook: Box<dyn Fn(u64) + Send + Sync>) -> bool {
        self.shared.on_durable.set(hook).is_ok()
    }

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

    /// Appends a heartbeat record (kind `heartbeat`, empty payload): an idle
    /// writer's way to tell a merging reader how far it has got.
    pub fn append_heartbeat(&mut self, timestamp_ns: u64) -> Result<u64, JournalError> {
        self.append(crate::kinds::HEARTBEAT, 1, timestamp_ns, &[])
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
        if self.offset + RECORD_ALIGN <= self.seg_len {
            put_u32(self.stage_mut(self.offset, RECORD_ALIGN), R_SIZE, END_OF_SEGMENT);
            self.cur.written_end.store(self.offset + RECORD_ALIGN, Ordering::Release);
        }
        self.cur.sealed.store(true, Ordering::Release);

        // The preparer zeroed the stage's header page.
        SegmentHeader {
            segment_bytes: next.stage_len as u64,
            first_seq: self.next_seq,
            created_ns: now_ns(),
            journal_id: self.shared.journal_id,
        }
        .write(next.stage_header_mut());
        next.first_seq.store(self.next_seq, Ordering::Release);
        next.header_dirty.store(true, Ordering::Release);
        self.shared.active.lock().expect("lock").push(next.clone());
        self.shared.to_rename.lock().expect("lock").push(next.clone());
        Event(&self.shared.prep_word).notify();

        self.base = next.stage_ptr;
        self.seg_len = next.stage_len;
        self.offset = SEGMENT_HEADER_BYTES;
        self.cur = next;
        self.shared.stats.lock().expect("lock").rolls += 1;
        Ok(())
    }

    #[inline]
    #[allow(clippy::mut_from_ref)]
    fn stage_mut(&self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= self.seg_len);
        // SAFETY: bytes at or past the write head of the current stage are
        // touched by nobody but the writer (&mut self at every caller).
        unsafe { std::slice::from_raw_parts_mut(self.base.add(at), len) }
    }

    fn take_prepared(&mut self) -> Result<Arc<Segment>, JournalError> {
        // A roll needs a segment whatever was held.
        self.shared.prep_held.store(false, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waited = false;
        loop {
            if let Some(seg) = self.shared.prepared.lock().expect("lock").pop_front() {
                self.shared.writer_waiting.store(false, Ordering::Release);
                if waited {
                    self.shared.stats.lock().expect("lock").roll_waits += 1;
                }
                return Ok(seg);
            }
            if let Some(e) = self.shared.prep_error.lock().expect("lock").take() {
                self.shared.writer_waiting.store(false, Ordering::Release);
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
            self.shared.writer_waiting.store(true, Ordering::Release);
            Event(&self.shared.prep_word).notify();
            let shared = &self.shared;
            Event(&shared.ready_word).wait(
                || !shared.prepared.lock().expect("lock").is_empty() || shared.prep_error.lock().expect("lock").is_some(),
                Duration::ZERO,
                Duration::from_millis(100),
            );
        }
    }

    /// Lets the preparer prepare segments again after an open with
    /// `Options::hold_preparation`.
    pub fn release_preparation(&self) {
        if self.shared.prep_held.swap(false, Ordering::AcqRel) {
            Event(&self.shared.prep_word).notify();
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
                self.shared.sync_asked.store(true, Ordering::Release);
                Event(&self.shared.wb_word).notify();
                let watch = self.durability_watch();
                while !watch.wait(last, Duration::from_secs(1))? {}
            }
            Durability::None | Durability::Always => self.sync_everything(last)?,
        }
        Ok(last)
    }

    fn sync_everything(&mut self, last: u64) -> Result<(), JournalError> {
        if let Err(e) = self.shared.sync_everything(last) {
            self.shared.poison(format!("sync failed: {e}"));
            return Err(self.shared.poison_error());
        }
        self.shared.retire();
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
        // The writeback thread finishes what is committed, then stops.
        self.stop_threads();
        let result = if self.shared.poisoned.load(Ordering::Acquire) {
            Err(self.shared.poison_error())
        } else {
            let last = self.next_seq - 1;
            // Two passes: the second persists the watermark the first earned.
            self.sync_everything(last).and_then(|_| self.sync_everything(last))
        };
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
        Event(&self.shared.wb_word).notify();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Simulates a crash: stops the background threads at once, without
    /// finishing writeback, syncing or cleaning up (tests only).
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.closed = true;
        self.shared.abandon.store(true, Ordering::Release);
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

    /// Writes the header and commits the record; returns its sequence.
    #[inline]
    pub fn commit(self, kind: u16, version: u16, timestamp_ns: u64) -> Result<u64, JournalError> {
        let j = self.j;
        let len = self.len;
        let total = record_bytes(len);
        let seq = j.next_seq;
        let rec = j.stage_mut(j.offset, total);
        put_u64(rec, R_SEQ, seq);
        put_u64(rec, R_TIMESTAMP, timestamp_ns);
        put_u16(rec, R_KIND, kind);
        put_u16(rec, R_VERSION, version);
        put_u32(rec, R_PAYLOAD_LEN, len as u32);
        // A reused stage may hold old bytes where the padding goes.
        rec[RECORD_HEADER_BYTES + len..].fill(0);
        put_u32(rec, R_SIZE, total as u32);
        let crc = record_crc(&rec[R_SEQ..]);
        put_u32(rec, R_CRC, crc);
        j.offset += total;
        j.next_seq += 1;
        // Release: the writeback thread copies bytes below `written_end`.
        j.cur.written_end.store(j.offset, Ordering::Release);
        j.shared.committed.store(seq, Ordering::Release);
        if j.durability == Durability::Always {
            j.sync_everything(seq)?;
        } else if j.shared.opts.writeback_delay.is_zero() {
            Event(&j.shared.wb_word).notify();
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

/// Copies committed records into the files, publishes them, and under
/// `batch` syncs as soon as the previous sync ends.
fn writeback(s: Arc<Shared>) {
    let batch = s.opts.durability == Durability::Batch;
    let interval = s.opts.sync_interval;
    let mut visible = s.ctl.published_seq();
    // When the last group commit started, and whether records were written
    // back since without a sync (batch with a sync interval).
    let mut last_sync: Option<Instant> = None;
    let mut unsynced = false;
    loop {
        let stopping = s.shutdown.load(Ordering::Acquire);
        if s.abandon.load(Ordering::Acquire) {
            return;
        }
        let committed = s.committed.load(Ordering::Acquire);
        let asked = s.sync_asked.swap(false, Ordering::AcqRel);
        let due = batch && (interval.is_zero() || asked || stopping || last_sync.is_none_or(|t| t.elapsed() >= interval));
        if committed > visible || (unsynced && due) {
            let io = s.io_lock.lock().expect("lock");
            // The clock is read only when syncs are spaced.
            let started = (due && !interval.is_zero()).then(Instant::now);
            let result = s.write_back(committed).and_then(|_| {
                if due {
                    let prev = s.ctl.durable_seq();
                    s.sync_active(prev, false)?;
                    s.mark_durable(committed);
                }
                Ok(())
            });
            drop(io);
            if let Err(e) = result {
                s.poison(format!("writeback failed: {e}"));
                return;
            }
            if due {
                last_sync = started;
                unsynced = false;
            } else if batch {
                unsynced = true;
            }
            visible = committed;
            s.retire();
            continue;
        }
        if stopping {
            return;
        }
        let mut timeout = if s.opts.writeback_delay.is_zero() { Duration::from_millis(500) } else { s.opts.writeback_delay };
        if unsynced && let Some(t) = last_sync {
            timeout = timeout.min(interval.saturating_sub(t.elapsed()).max(Duration::from_micros(1)));
        }
        Event(&s.wb_word).wait(
            || {
                s.committed.load(Ordering::Acquire) > visible
                    || s.shutdown.load(Ordering::Acquire)
                    || (unsynced && s.sync_asked.load(Ordering::Acquire))
            },
            s.opts.flusher_spin,
            timeout,
        );
    }
}

fn preparer(s: Arc<Shared>) {
    let mut backoff = Duration::from_millis(10);
    let mut rolled: Vec<Arc<Segment>> = Vec::with_capacity(16);
    loop {
        // Read before taking the renames, so the last roll before a
        // shutdown is always renamed.
        let stopping = s.shutdown.load(Ordering::Acquire);
        // Give rolled segments their final names.
        // Drained, not taken, so the writer's pushes at roll never allocate.
        rolled.extend(s.to_rename.lock().expect("lock").drain(..));
        if !rolled.is_empty() {
            for seg in &rolled {
                let final_name = segment_name(seg.first_seq.load(Ordering::Acquire));
                // The header first, so a file under its final name always
                // says which sequence it starts at (the writeback thread
                // writes the same bytes; the fixed header never changes).
                if let Err(e) = seg.file.write_at(0, seg.staged(0, H_FIXED_END)) {
                    tracing::error!(error = %e, "segment header write failed; recovery will name it");
                    continue;
                }
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
            rolled.clear();
        }
        if stopping {
            return;
        }
        if !s.prep_held.load(Ordering::Acquire)
            && let Some(seg) = s.populate.lock().expect("lock").take()
            && let Some(st) = seg.stage.lock().expect("lock").as_mut()
        {
            st.populate_rest();
        }
        // Keep `prepare_ahead` segments ready, one per pass so renames of
        // rolled segments are never starved by a fast writer.
        let mut failed = false;
        if !s.prep_held.load(Ordering::Acquire) && s.prepared.lock().expect("lock").len() < s.opts.prepare_ahead {
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

/// A stage for a new segment: a retired one reused, or fresh memory.
fn take_stage(s: &Shared, pause: &mut dyn FnMut()) -> std::io::Result<Stage> {
    let len = s.opts.segment_bytes as usize;
    let reused = {
        let mut pool = s.stage_pool.lock().expect("lock");
        pool.retain(|st| st.len() == len);
        pool.pop()
    };
    match reused {
        Some(mut st) => {
            // A stage an open resumed in holds unfaulted pages below where
            // it resumed (and maybe above); the next writer starts at the front.
            st.fault_in_all();
            // Only the header page must start zeroed: the writer lays every
            // record byte it commits (padding included), and nothing past
            // the write head is ever copied to the file.
            // SAFETY: the stage is owned here.
            unsafe { std::ptr::write_bytes(st.ptr(), 0, SEGMENT_HEADER_BYTES) };
            Ok(st)
        }
        None => Stage::new_paced(len, pause),
    }
}

/// Creates a fresh segment or recycles the oldest released one.
fn prepare_one(s: &Shared) -> std::io::Result<Arc<Segment>> {
    // Preparation is background work: between huge pages of the stage and
    // MiBs of the file's fill it leaves the core to others for a moment,
    // unless the writer is waiting for it at a roll. The pauses add 6 ms
    // to a fresh 64 MiB stage and 13 ms to a zero-filled file (32 and 63
    // sleeps of 200 µs); at 100 MB/s of records the writer needs a new
    // segment every 0.67 s.
    let mut pause = || {
        if !s.writer_waiting.load(Ordering::Acquire) {
            std::thread::sleep(PACE_PAUSE);
        }
    };
    let n = s.prepared_counter.fetch_add(1, Ordering::Relaxed);
    let name = format!("{PREPARED_PREFIX}{:016x}-{n}.seg", s.journal_id);
    let header = SegmentHeader { segment_bytes: s.opts.segment_bytes, first_seq: 0, created_ns: now_ns(), journal_id: s.journal_id };
    let mut page = vec![0u8; SEGMENT_HEADER_BYTES];
    header.write(&mut page);

    if let Some(old) = recyclable(s)? {
        s.storage.rename(&old, &name)?;
        let file = s.storage.open(&name, true)?;
        if file.len() as u64 == s.opts.segment_bytes {
            // The header must not claim the old first sequence after a
            // crash. The old records behind it need no erasing: their
            // sequence numbers can never follow the new ones, so recovery
            // and readers stop at them.
            file.write_at(0, &page)?;
            file.sync(0, SEGMENT_HEADER_BYTES)?;
            s.stats.lock().expect("lock").segments_recycled += 1;
            return Ok(Segment::new(file, take_stage(s, &mut pause)?, name, 0, SEGMENT_HEADER_BYTES));
        }
        // Size changed by configuration: drop it and create a fresh one.
        drop(file);
        s.storage.remove(&name)?;
    }

    let file = s.storage.create_with(&name, s.opts.segment_bytes as usize, &mut pause)?;
    file.write_at(0, &page)?;
    file.sync(0, SEGMENT_HEADER_BYTES)?;
    s.storage.sync_dir()?;
    s.stats.lock().expect("lock").segments_created += 1;
    Ok(Segment::new(file, take_stage(s, &mut pause)?, name, 0, SEGMENT_HEADER_BYTES))
}

/// The oldest segment file whose records all lie below the release mark and
/// that the writeback thread no longer needs.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_stage_is_faulted_in_whole_and_reads_zero() {
        let len = 3 * PACE_CHUNK + 4096;
        for pace in [false, true] {
            let mut pauses = 0;
            let st = Stage::new_paced(len, &mut || {
                if pace {
                    pauses += 1;
                }
            })
            .unwrap();
            assert_eq!(pauses, if pace { 3 } else { 0 });
            assert_eq!(st.faulted, (0, len));
            assert_eq!(st.len(), len);
            // SAFETY: the whole mapping, owned here.
            let bytes = unsafe { std::slice::from_raw_parts(st.ptr(), len) };
            assert!(bytes.iter().all(|&b| b == 0));
        }
    }
}
