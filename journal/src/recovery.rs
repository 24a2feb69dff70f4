//! Scanning a journal directory: which segments form the valid prefix, where
//! the first damage is, and how far the persisted durable watermark says the
//! journal must be intact.

use std::sync::Arc;

use serde::Serialize;

use crate::JournalError;
use crate::format::*;
use crate::record::{Slot, read_slot_verified};
use crate::storage::{Region, Storage};

/// One segment file of the valid prefix.
pub struct ScannedSegment {
    /// The file's current name (a rolled `prepared-*` file keeps that name
    /// until the writer renames it).
    pub name: String,
    pub header: SegmentHeader,
    pub region: Arc<dyn Region>,
    /// Sequence of its last valid record (first_seq - 1 if none).
    pub last_seq: u64,
    /// Offset just past its last valid record.
    pub end_offset: usize,
}

/// The first damaged place in a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub segment: String,
    pub offset: u64,
    /// The sequence number that should have been there.
    pub seq: u64,
    pub reason: String,
}

/// Everything a scan learned.
pub struct Scan {
    pub segments: Vec<ScannedSegment>,
    /// The persisted durable watermark: the newest valid watermark slot of
    /// any segment header (0: none).
    pub watermark: u64,
    /// Sequence of the first record of the journal (of the oldest segment).
    pub first_seq: u64,
    /// Sequence the next record gets.
    pub next_seq: u64,
    pub records: u64,
    pub journal_id: Option<u64>,
    /// First damage found, if any.
    pub damage: Option<Damage>,
    /// Segment files after the valid prefix (dropped by a truncation).
    pub beyond: Vec<String>,
    /// Prepared segments that never received a record.
    pub unused_prepared: Vec<String>,
}

impl Scan {
    /// Whether the damage lies at or below the persisted watermark, i.e. a
    /// record the journal promised was durable is missing or wrong.
    pub fn damage_below_watermark(&self) -> bool {
        self.damage.as_ref().is_some_and(|d| d.seq <= self.watermark)
    }

    /// The error `open` reports for damage below the watermark.
    pub fn corrupt_error(&self) -> Option<JournalError> {
        if !self.damage_below_watermark() {
            return None;
        }
        let d = self.damage.clone().expect("damage");
        Some(JournalError::Corrupt { segment: d.segment, offset: d.offset, seq: d.seq, watermark: self.watermark, reason: d.reason })
    }
}

/// The index of the first record in `found` (offset, sequence) whose
/// checksum is wrong.
///
/// # Safety
/// Each offset must start a structurally valid record inside the mapping
/// at `base`.
unsafe fn first_bad_checksum(base: *const u8, found: &[(usize, u64)]) -> Option<usize> {
    let rec = |i: usize| -> (&[u8], u32) {
        let at = found[i].0;
        // SAFETY: the caller's contract: a whole record lies at `at`.
        unsafe {
            let size = get_u32(std::slice::from_raw_parts(base.add(at), 4), R_SIZE) as usize;
            let r = std::slice::from_raw_parts(base.add(at), size);
            (&r[R_SEQ..], get_u32(r, R_CRC))
        }
    };
    let mut i = 0;
    while i + 3 <= found.len() {
        let (a, b, c) = (rec(i), rec(i + 1), rec(i + 2));
        let got = record_crc3(a.0, b.0, c.0);
        for (k, want) in [a.1, b.1, c.1].into_iter().enumerate() {
            if got[k] != want {
                return Some(i + k);
            }
        }
        i += 3;
    }
    (i..found.len()).find(|&k| {
        let (bytes, want) = rec(k);
        record_crc(bytes) != want
    })
}

/// How a segment's own walk ended (before any decision that needs the
/// other segments).
enum Stop {
    /// An end-of-segment marker or the end of the file.
    End,
    /// An empty slot: the writer's position, or a marker that never reached
    /// the disk when the next segment carries on.
    Empty,
    /// A record that is structurally wrong.
    Bad(&'static str),
}

/// One segment walked on its own, from its header's first sequence.
struct Walk {
    /// Offset and sequence of the first record whose checksum is wrong.
    bad_checksum: Option<(usize, u64)>,
    /// Where the structural walk stopped, and the sequence expected there.
    offset: usize,
    expected: u64,
    stop: Stop,
}

/// Walks one segment: the records' structure first (sizes, sequence
/// numbers), then their checksums three at a time; the first bad record
/// of either kind ends the valid prefix, as one pass would.
///
/// # Safety
/// `base` maps `len` bytes for the duration of the call.
unsafe fn walk_segment(base: *const u8, len: usize, first_seq: u64) -> Walk {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_seq;
    let mut found: Vec<(usize, u64)> = Vec::new();
    let stop = loop {
        // SAFETY: the caller's contract.
        match unsafe { read_slot_verified(base, len, offset, expected) } {
            Slot::Record(_, next) => {
                found.push((offset, expected));
                expected += 1;
                offset = next;
            }
            Slot::EndOfSegment => break Stop::End,
            Slot::Empty => break Stop::Empty,
            Slot::Bad(reason) => break Stop::Bad(reason),
        }
    };
    // SAFETY: every offset in `found` starts a record that lies inside the
    // mapping (checked by the structural walk).
    let bad_checksum = unsafe { first_bad_checksum(base, &found) }.map(|k| found[k]);
    Walk { bad_checksum, offset, expected, stop }
}

/// [`walk_segment`] for every segment, on up to four threads, free to run
/// on every core even when the caller is pinned to one: a restarting
/// engine waits for this pass with nothing else running yet, and each
/// segment's walk needs nothing from the others (its header gives its
/// first sequence).
fn walk_all(regions: &[(u64, &Arc<dyn Region>)]) -> Vec<Walk> {
    let threads = crate::cpus::online().min(4).min(regions.len());
    // SAFETY (both walks below): each region maps `len()` bytes and lives
    // as long as `regions`, which outlives the calls.
    let walk = |(first, r): &(u64, &Arc<dyn Region>)| unsafe { walk_segment(r.ptr(), r.len(), *first) };
    if threads <= 1 {
        return regions.iter().map(walk).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<Walk>> = (0..regions.len()).map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut out);
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                crate::cpus::unpin_current_thread();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(r) = regions.get(i) else { break };
                    let w = walk(r);
                    done.lock().expect("walk results")[i] = Some(w);
                }
            });
        }
    });
    out.into_iter().map(|w| w.expect("every segment walked")).collect()
}

/// Scans every segment of `storage` in order of first sequence number.
pub fn scan(storage: &dyn Storage, writable: bool) -> Result<Scan, JournalError> {
    let names = storage.list().map_err(|e| JournalError::io("list", storage.describe(), e))?;
    let mut files: Vec<(u64, String, SegmentHeader, Arc<dyn Region>)> = Vec::new();
    let mut unused_prepared = Vec::new();
    let mut damage: Option<Damage> = None;
    let mut watermark = 0u64;
    let mut bad_headers: Vec<(u64, String, &'static str)> = Vec::new();

    for name in names {
        let named_seq = parse_segment_name(&name);
        let prepared = name.starts_with(PREPARED_PREFIX);
        if named_seq.is_none() && !prepared {
            continue;
        }
        let region = storage.open(&name, writable).map_err(|e| JournalError::io("open", format!("{}/{name}", storage.describe()), e))?;
        // SAFETY: the mapping lives as long as `region`.
        let bytes = unsafe { std::slice::from_raw_parts(region.ptr(), region.len()) };
        match SegmentHeader::read(bytes) {
            Ok(h) => {
                // A prepared segment that never received a record; under a
                // final name it is a released segment being recycled whose
                // rename reached the disk before the crash.
                if h.first_seq == 0 {
                    unused_prepared.push(name);
                    continue;
                }
                // A name that disagrees with a valid header is a recycled
                // segment whose rename did not reach the disk before the
                // crash: the header is the truth, and open renames the file.
                if h.segment_bytes != region.len() as u64 {
                    bad_headers.push((named_seq.unwrap_or(h.first_seq), name, "segment header disagrees with its file"));
                    continue;
                }
                if let Some((_, w)) = read_watermark(bytes) {
                    watermark = watermark.max(w);
                }
                files.push((h.first_seq, name, h, region));
            }
            Err(reason) => match named_seq {
                Some(s) => bad_headers.push((s, name, reason)),
                // A prepared file whose header never became valid never held a record.
                None => unused_prepared.push(name),
            },
        }
    }
    files.sort_by_key(|f| f.0);

    // The oldest segment fixes the journal identity; foreign files are damage.
    let journal_id = files.first().map(|f| f.2.journal_id);
    let first_seq = files.first().map(|f| f.0).unwrap_or(1);
    let mut expected = first_seq;
    let mut segments: Vec<ScannedSegment> = Vec::new();
    let mut beyond = Vec::new();
    let walks = walk_all(&files.iter().map(|f| (f.0, &f.3)).collect::<Vec<_>>());
    let mut iter = files.into_iter().zip(walks).peekable();

    while let Some(((seq, name, header, region), walk)) = iter.next() {
        if damage.is_some() {
            beyond.push(name);
            continue;
        }
        if Some(header.journal_id) != journal_id {
            damage = Some(Damage { segment: name.clone(), offset: 0, seq: expected, reason: "segment belongs to another journal".into() });
            beyond.push(name);
            continue;
        }
        if seq != expected {
            damage = Some(Damage {
                segment: name.clone(),
                offset: 0,
                seq: expected,
                reason: format!("segment starts at sequence {seq}, expected {expected}"),
            });
            beyond.push(name);
            continue;
        }
        let mut offset = walk.offset;
        expected = walk.expected;
        match walk.stop {
            Stop::End => {}
            Stop::Empty => {
                // An end-of-segment marker that never reached the disk is
                // fine when the next segment carries on the sequence.
                let next_first = iter.peek().map(|n| n.0.0);
                if next_first.is_some_and(|f| f != expected) {
                    damage = Some(Damage {
                        segment: name.clone(),
                        offset: offset as u64,
                        seq: expected,
                        reason: "record missing before later segments".into(),
                    });
                }
            }
            Stop::Bad(reason) => {
                damage = Some(Damage { segment: name.clone(), offset: offset as u64, seq: expected, reason: reason.into() });
            }
        }
        if let Some((at, seq)) = walk.bad_checksum {
            damage = Some(Damage { segment: name.clone(), offset: at as u64, seq, reason: "record checksum mismatch".into() });
            offset = at;
            expected = seq;
        }
        segments.push(ScannedSegment { name, header, region, last_seq: expected - 1, end_offset: offset });
    }

    // Damaged headers: those that sit inside or right after the valid prefix
    // are damage at their first sequence; the rest are past a gap anyway.
    for (seq, name, reason) in bad_headers {
        if damage.is_none() && seq <= expected {
            damage = Some(Damage { segment: name.clone(), offset: 0, seq, reason: reason.into() });
        }
        beyond.push(name);
    }
    // Records the watermark promised but that are simply absent.
    if damage.is_none() && expected <= watermark {
        let (segment, offset) = segments.last().map(|s| (s.name.clone(), s.end_offset as u64)).unwrap_or_default();
        damage = Some(Damage { segment, offset, seq: expected, reason: "journal ends before its durable watermark".into() });
    }

    Ok(Scan {
        records: expected - first_seq,
        segments,
        watermark,
        first_seq,
        next_seq: expected,
        journal_id,
        damage,
        beyond,
        unused_prepared,
    })
}
