//! Tailing readers: in the writer's process or any other, from any sequence
//! number, through read-only mappings. A reader never returns a record that
//! is partly written, damaged, or after a gap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::JournalError;
use crate::control::{CONTROL_BYTES, CONTROL_NAME, Control};
use crate::format::*;
use crate::record::{Record, Slot, read_slot, read_slot_verified};
use crate::storage::{FileStorage, Region, Storage};

/// Reader settings.
#[derive(Debug, Clone, Default)]
pub struct ReaderOptions {
    /// Where retention moves old segments; searched after the journal
    /// directory.
    pub archive: Option<std::path::PathBuf>,
    /// Return only records covered by a completed sync.
    pub durable_only: bool,
}

/// A tailing reader.
pub struct Reader {
    storage: Arc<dyn Storage>,
    archive: Option<Arc<dyn Storage>>,
    ctl: Control,
    region: Option<Arc<dyn Region>>,
    offset: usize,
    next_seq: u64,
    durable_only: bool,
    writer_generation: u64,
    /// Records below this are passed over (a reader opened ahead of the end).
    skip_below: u64,
    /// Checksums below this sequence are skipped ([`Reader::trust_verified_below`]).
    verified_below: u64,
}

impl Reader {
    /// Opens a reader on directory `dir` that returns records from `from_seq` on.
    pub fn open(dir: impl AsRef<Path>, from_seq: u64, opts: ReaderOptions) -> Result<Reader, JournalError> {
        let dir = dir.as_ref();
        let storage = FileStorage::existing(dir).map_err(|e| JournalError::io("open directory", dir.display().to_string(), e))?;
        let archive = match &opts.archive {
            Some(a) => Some(Arc::new(FileStorage::existing(a).map_err(|e| JournalError::io("open archive", a.display().to_string(), e))?)
                as Arc<dyn Storage>),
            None => None,
        };
        Reader::open_with(Arc::new(storage), archive, from_seq, opts.durable_only)
    }

    pub fn open_with(
        storage: Arc<dyn Storage>,
        archive: Option<Arc<dyn Storage>>,
        from_seq: u64,
        durable_only: bool,
    ) -> Result<Reader, JournalError> {
        let ctl = Control::new(
            storage.shared_memory(CONTROL_NAME, CONTROL_BYTES).map_err(|e| JournalError::io("map control block", storage.describe(), e))?,
        );
        let mut r = Reader {
            writer_generation: ctl.writer_generation(),
            storage,
            archive,
            ctl,
            region: None,
            offset: 0,
            next_seq: from_seq.max(1),
            durable_only,
            skip_below: from_seq.max(1),
            verified_below: 0,
        };
        r.locate()?;
        Ok(r)
    }

    /// Sequence number of the next record this reader returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Last sequence number the writer has committed, as the control block says.
    pub fn published_seq(&self) -> u64 {
        self.ctl.published_seq()
    }

    /// Last sequence number the writer has made durable.
    pub fn durable_seq(&self) -> u64 {
        self.ctl.durable_seq()
    }

    /// The process id the writer recorded (0: none; a writer killed
    /// without closing leaves its id behind).
    pub fn writer_pid(&self) -> u64 {
        self.ctl.writer_pid()
    }

    /// Whether a writer currently holds the journal.
    pub fn writer_alive(&self) -> bool {
        self.ctl.writer_pid() != 0
    }

    fn segments(&self) -> Result<Vec<(u64, bool)>, JournalError> {
        let mut v: Vec<(u64, bool)> = Vec::new();
        let list = |s: &dyn Storage, archived: bool, v: &mut Vec<(u64, bool)>| -> Result<(), JournalError> {
            for n in s.list().map_err(|e| JournalError::io("list", s.describe(), e))? {
                if let Some(seq) = parse_segment_name(&n) {
                    v.push((seq, archived));
                }
            }
            Ok(())
        };
        list(&*self.storage, false, &mut v)?;
        if let Some(a) = &self.archive {
            list(&**a, true, &mut v)?;
        }
        v.sort_unstable();
        v.dedup_by_key(|x| x.0);
        Ok(v)
    }

    fn open_segment(&self, first_seq: u64) -> Result<Option<Arc<dyn Region>>, JournalError> {
        match self.open_named_segment(first_seq)? {
            Some(r) => Ok(Some(r)),
            None => self.open_rolled_prepared(first_seq),
        }
    }

    /// The writer has rolled into a prepared segment whose rename has not
    /// happened yet (the preparer may be busy creating the next one): find
    /// it by its header instead of waiting.
    fn open_rolled_prepared(&self, first_seq: u64) -> Result<Option<Arc<dyn Region>>, JournalError> {
        let names = self.storage.list().map_err(|e| JournalError::io("list", self.storage.describe(), e))?;
        for name in names.iter().filter(|n| n.starts_with(PREPARED_PREFIX)) {
            // Renamed or removed since the listing: the next try finds it.
            let Ok(r) = self.storage.open(name, false) else { continue };
            // SAFETY: the mapping lives as long as `r`.
            let page = unsafe { std::slice::from_raw_parts(r.ptr(), r.len().min(SEGMENT_HEADER_BYTES)) };
            if SegmentHeader::read(page).is_ok_and(|h| h.first_seq == first_seq) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn open_named_segment(&self, first_seq: u64) -> Result<Option<Arc<dyn Region>>, JournalError> {
        let name = segment_name(first_seq);
        let stores = std::iter::once(&self.storage).chain(self.archive.as_ref());
        for s in stores {
            match s.open(&name, false) {
                Ok(r) => {
                    // SAFETY: the mapping lives as long as `r`.
                    let page = unsafe { std::slice::from_raw_parts(r.ptr(), r.len().min(SEGMENT_HEADER_BYTES)) };
                    return match SegmentHeader::read(page) {
                        Ok(h) if h.first_seq == first_seq => Ok(Some(r)),
                        // Renamed before its header reached the file: not yet.
                        Ok(h) if h.first_seq == 0 => Ok(None),
                        Ok(_) => Err(self.corrupt(&name, 0, first_seq, "segment header names another sequence")),
                        Err(reason) => Err(self.corrupt(&name, 0, first_seq, reason)),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(JournalError::io("open segment", format!("{}/{name}", s.describe()), e)),
            }
        }
        Ok(None)
    }

    fn corrupt(&self, segment: &str, offset: usize, seq: u64, reason: &str) -> JournalError {
        JournalError::Corrupt {
            segment: segment.to_owned(),
            offset: offset as u64,
            seq,
            watermark: self.ctl.durable_seq(),
            reason: reason.to_owned(),
        }
    }

    /// Positions the reader at the first record at or after `next_seq`:
    /// the segment that holds it, then a scan within it. Records before
    /// `skip_below` are passed over by `try_next` as they arrive.
    fn locate(&mut self) -> Result<(), JournalError> {
        self.writer_generation = self.ctl.writer_generation();
        let want = self.next_seq.max(self.skip_below);
        let segs = self.segments()?;
        let Some(&(first, _)) = segs.iter().rev().find(|(s, _)| *s <= want) else {
            if let Some(&(oldest, _)) = segs.first() {
                return Err(JournalError::NotAvailable { seq: want, oldest });
            }
            self.region = None;
            self.skip_below = want;
            return Ok(());
        };
        let Some(region) = self.open_segment(first)? else {
            self.region = None;
            return Ok(());
        };
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut seq = first;
        while seq < want {
            // SAFETY: `region` maps `len()` bytes.
            match unsafe { read_slot(region.ptr(), region.len(), offset, seq) } {
                Slot::Record(_, next) => {
                    offset = next;
                    seq += 1;
                }
                Slot::Empty | Slot::EndOfSegment => break,
                Slot::Bad(reason) => return Err(self.corrupt(&segment_name(first), offset, seq, reason)),
            }
        }
        self.region = Some(region);
        self.offset = offset;
        self.next_seq = seq;
        self.skip_below = want;
        Ok(())
    }

    /// Records below `seq` were verified by this process (the writer's
    /// open scan checks every record's checksum): their checksums are not
    /// computed again. Recovery's replay reads about twice as fast for it.
    pub fn trust_verified_below(&mut self, seq: u64) {
        self.verified_below = seq;
    }

    /// The next record if one is available now.
    pub fn try_next(&mut self) -> Result<Option<Record<'_>>, JournalError> {
        self.poll(true)
    }

    /// Moves to the next returnable record; consumes it when `consume`.
    fn poll(&mut self, consume: bool) -> Result<Option<Record<'_>>, JournalError> {
        loop {
            let Some(region) = &self.region else {
                self.locate()?;
                if self.region.is_none() {
                    return Ok(None);
                }
                continue;
            };
            if self.beyond_visible() {
                return Ok(None);
            }
            let (base, len) = (region.ptr() as *const u8, region.len());
            // SAFETY: `base` maps `len` bytes and is kept alive by
            // `self.region` for as long as the returned borrow of `self`.
            let slot = if self.next_seq < self.verified_below {
                // SAFETY: as above.
                unsafe { read_slot_verified(base, len, self.offset, self.next_seq) }
            } else {
                // SAFETY: as above.
                unsafe { read_slot(base, len, self.offset, self.next_seq) }
            };
            match slot {
                Slot::Record(rec, next) => {
                    if rec.seq >= self.skip_below && !consume {
                        return Ok(Some(rec));
                    }
                    self.offset = next;
                    self.next_seq += 1;
                    if rec.seq < self.skip_below {
                        continue;
                    }
                    return Ok(Some(rec));
                }
                Slot::EndOfSegment => match self.open_segment(self.next_seq)? {
                    Some(r) => {
                        self.region = Some(r);
                        self.offset = SEGMENT_HEADER_BYTES;
                    }
                    // Not renamed into place yet.
                    None => return Ok(None),
                },
                Slot::Empty => {
                    if self.writer_restarted() {
                        self.relocate_after_restart()?;
                        continue;
                    }
                    // An end-of-segment marker lost to a power cut: the
                    // journal goes on in the segment named by our sequence
                    // (recovery reads it the same way).
                    // (At the first slot the segment named so is this one.)
                    if self.offset == SEGMENT_HEADER_BYTES {
                        return Ok(None);
                    }
                    if let Some(r) = self.open_segment(self.next_seq)? {
                        self.region = Some(r);
                        self.offset = SEGMENT_HEADER_BYTES;
                        continue;
                    }
                    return Ok(None);
                }
                Slot::Bad(reason) => {
                    if self.writer_restarted() {
                        self.relocate_after_restart()?;
                        continue;
                    }
                    // Past everything a writer ever published lies only
                    // what recycled or torn space holds: the end, not damage.
                    if !self.writer_running() && self.next_seq > self.ctl.published_seq().max(self.ctl.durable_seq()) {
                        return Ok(None);
                    }
                    return Err(self.corrupt("current segment", self.offset, self.next_seq, reason));
                }
            }
        }
    }

    /// Whether the next record is past what a live writer has published
    /// (or made durable, for a durable-only reader). A writer copies records
    /// into the files before it publishes them, so a reader never looks at
    /// bytes still being copied. With no live writer, every valid record is
    /// readable.
    fn beyond_visible(&self) -> bool {
        let limit = if self.durable_only { self.ctl.durable_seq() } else { self.ctl.published_seq() };
        self.next_seq > limit && self.writer_running()
    }

    fn writer_running(&self) -> bool {
        let pid = self.ctl.writer_pid();
        if pid == 0 {
            return false;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }

    fn writer_restarted(&self) -> bool {
        self.ctl.writer_generation() != self.writer_generation
    }

    /// A new writer recovered the journal: records this reader has not yet
    /// read may have been truncated. Find our place again; if the journal now
    /// ends before what we already returned, say so.
    fn relocate_after_restart(&mut self) -> Result<(), JournalError> {
        let published = self.ctl.published_seq();
        if self.next_seq > published + 1 {
            return Err(JournalError::Truncated { reader_at: self.next_seq, journal_end: published });
        }
        self.locate()
    }

    /// Whether `try_next` would return a record now (without consuming it).
    fn ready(&self) -> bool {
        if self.beyond_visible() {
            return false;
        }
        match &self.region {
            // Nothing to read until a writer starts, which signals the event.
            None => false,
            Some(r) => {
                // SAFETY: in bounds of the mapping.
                !matches!(unsafe { read_slot(r.ptr(), r.len(), self.offset, self.next_seq) }, Slot::Empty) || self.writer_restarted()
            }
        }
    }

    /// Parks (futex, no busy-waiting) until the writer publishes something
    /// new or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> bool {
        let event = if self.durable_only { self.ctl.durable_event() } else { self.ctl.data_event() };
        let seen = event.0.load(std::sync::atomic::Ordering::Acquire) & !1;
        event.wait(|| self.ready() || event.0.load(std::sync::atomic::Ordering::Acquire) & !1 != seen, Duration::ZERO, timeout)
    }

    /// The next record, waiting up to `timeout` for it.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record<'_>>, JournalError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.poll(false)?.is_some() {
                return self.poll(true);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.wait(deadline - now);
        }
    }
}
