//! Reading one record slot out of a mapped segment, shared by recovery, the
//! writer's reopen and the tailing readers.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::format::*;

/// A record as stored: header fields and a borrowed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub kind: u16,
    pub version: u16,
    pub payload: &'a [u8],
}

/// What a slot holds.
#[derive(Debug)]
pub enum Slot<'a> {
    /// Nothing written here (yet).
    Empty,
    /// The writer moved on to the next segment.
    EndOfSegment,
    /// A complete, checked record and the offset of the next slot.
    Record(Record<'a>, usize),
    /// Damage: what is wrong.
    Bad(&'static str),
}

/// Reads the slot at `offset` of a segment mapped at `base` with `seg_len`
/// bytes, expecting sequence `expected_seq`.
///
/// Callers decide how far it is safe to read: a live writer copies records
/// into the files with `pwrite` and only then advances the control block's
/// `published_seq`, so a reader reads up to that sequence (the kernel's copy
/// gives no ordering between the bytes of one record). Without a live
/// writer, every byte in the files is final, and this function's checks
/// (size, payload length, sequence, CRC) decide what is a record.
///
/// # Safety
/// `base` must be valid for reads of `seg_len` bytes for `'a`, 8-aligned.
pub unsafe fn read_slot<'a>(base: *const u8, seg_len: usize, offset: usize, expected_seq: u64) -> Slot<'a> {
    // SAFETY: the caller's contract.
    unsafe { read_slot_checked::<true>(base, seg_len, offset, expected_seq) }
}

/// [`read_slot`] without the checksum, for records this process has just
/// verified (recovery's scan checks every record before a replay reads
/// them again). Every other check stays.
///
/// # Safety
/// As [`read_slot`].
pub unsafe fn read_slot_verified<'a>(base: *const u8, seg_len: usize, offset: usize, expected_seq: u64) -> Slot<'a> {
    // SAFETY: the caller's contract.
    unsafe { read_slot_checked::<false>(base, seg_len, offset, expected_seq) }
}

unsafe fn read_slot_checked<'a, const CRC: bool>(base: *const u8, seg_len: usize, offset: usize, expected_seq: u64) -> Slot<'a> {
    if offset + RECORD_HEADER_BYTES > seg_len {
        return Slot::EndOfSegment;
    }
    debug_assert_eq!(offset % RECORD_ALIGN, 0);
    // SAFETY: in bounds and 4-aligned (offsets are 8-aligned).
    let size = unsafe { (*(base.add(offset + R_SIZE) as *const AtomicU32)).load(Ordering::Acquire) };
    if size == 0 {
        return Slot::Empty;
    }
    if size == END_OF_SEGMENT {
        return Slot::EndOfSegment;
    }
    let total = size as usize;
    if total < RECORD_HEADER_BYTES || !total.is_multiple_of(RECORD_ALIGN) || total > seg_len - offset {
        return Slot::Bad("record size out of bounds");
    }
    // SAFETY: bounds checked just above.
    let rec = unsafe { std::slice::from_raw_parts(base.add(offset), total) };
    let len = get_u32(rec, R_PAYLOAD_LEN) as usize;
    if record_bytes(len) != total {
        return Slot::Bad("payload length disagrees with record size");
    }
    let seq = get_u64(rec, R_SEQ);
    if seq != expected_seq {
        return Slot::Bad("sequence number out of order");
    }
    let payload = &rec[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
    if CRC && get_u32(rec, R_CRC) != record_crc(&rec[R_SEQ..]) {
        return Slot::Bad("record checksum mismatch");
    }
    Slot::Record(
        Record { seq, timestamp_ns: get_u64(rec, R_TIMESTAMP), kind: get_u16(rec, R_KIND), version: get_u16(rec, R_VERSION), payload },
        offset + total,
    )
}
