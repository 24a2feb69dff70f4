//! Byte layouts of segment files and records. `journal/FORMAT.md` is the
//! normative description; the constants here are the single source of truth
//! the code uses, and a test checks the two agree.

/// Magic at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"OTDMJSEG";
/// Version of the segment and record layout.
pub const FORMAT_VERSION: u32 = 1;
/// The segment header occupies the first page, so records start page-aligned.
pub const SEGMENT_HEADER_BYTES: usize = 4096;
/// Bytes of the fixed record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Record payloads are padded to this alignment.
pub const RECORD_ALIGN: usize = 8;
/// `size` value of the end-of-segment marker: the rest of the segment is
/// unused and the next record is at the start of the segment named by the
/// next sequence number.
pub const END_OF_SEGMENT: u32 = u32::MAX;
/// Smallest segment accepted: a header page plus room for a few records.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest segment accepted (the record length is a u32).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

// Segment header offsets.
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8;
pub const H_CRC: usize = 12;
pub const H_SEGMENT_BYTES: usize = 16;
pub const H_FIRST_SEQ: usize = 24;
pub const H_CREATED_NS: usize = 32;
pub const H_JOURNAL_ID: usize = 40;
/// Bytes 0..H_FIXED_END are covered by the header CRC (with the CRC field
/// itself read as zero).
pub const H_FIXED_END: usize = 64;
/// Two watermark slots (A/B), each 32 bytes: u64 generation, u64 durable_seq,
/// u32 crc32c over the first 16 bytes, u32 zero, 8 bytes zero.
pub const H_WATERMARK_SLOTS: [usize; 2] = [64, 96];
pub const WATERMARK_SLOT_BYTES: usize = 32;

// Record header offsets.
/// Total bytes of the record (header + padded payload); the commit word.
pub const R_SIZE: usize = 0;
pub const R_CRC: usize = 4;
pub const R_SEQ: usize = 8;
pub const R_TIMESTAMP: usize = 16;
pub const R_KIND: usize = 24;
pub const R_VERSION: usize = 26;
/// Exact payload length in bytes.
pub const R_PAYLOAD_LEN: usize = 28;

/// Total bytes a record with a payload of `len` bytes takes in a segment.
#[inline]
pub const fn record_bytes(len: usize) -> usize {
    RECORD_HEADER_BYTES + padded(len)
}

/// `len` rounded up to the record alignment.
#[inline]
pub const fn padded(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Largest payload a segment of `segment_bytes` can hold.
#[inline]
pub const fn max_payload(segment_bytes: u64) -> usize {
    segment_bytes as usize - SEGMENT_HEADER_BYTES - RECORD_HEADER_BYTES
}

/// CRC32C of a record: bytes 8..size, i.e. the header after the CRC field
/// and the padded payload. `size` itself is checked against `payload_len`,
/// which the CRC covers, so no byte of a record goes unchecked.
#[inline]
pub fn record_crc(from_seq: &[u8]) -> u32 {
    crc32c::crc32c(from_seq)
}

/// [`record_crc`] of three records at once. Written by hand because the
/// `crc32c` crate runs inputs shorter than 768 bytes (every usual record) as
/// one chain of `crc32` instructions, each waiting three cycles for the
/// last; three records' chains interleaved keep the unit busy, so opening a
/// journal (which checks every record) checks them about three times as
/// fast. Records differ in length: past the shortest one the two longer
/// chains go on interleaved, then the longest alone, all inline (a call
/// into the crate per tail cost more than the interleaved part).
pub fn record_crc3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2, checked just above.
        return unsafe { crc3_sse42(a, b, c) };
    }
    [record_crc(a), record_crc(b), record_crc(c)]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc3_sse42(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    // Sort the three by length (remembering where each came from), so the
    // interleaved loops below run over the shortest, then the middle one.
    let mut v = [(a, 0usize), (b, 1), (c, 2)];
    v.sort_by_key(|(s, _)| s.len());
    let [(s0, i0), (s1, i1), (s2, i2)] = v;
    // The state a fresh CRC32C starts from (the complement of 0).
    let (mut x, mut y, mut z) = (0xFFFF_FFFFu64, 0xFFFF_FFFFu64, 0xFFFF_FFFFu64);
    let (n0, n1, n2) = (s0.len() / 8 * 8, s1.len() / 8 * 8, s2.len() / 8 * 8);
    let mut i = 0;
    while i < n0 {
        x = _mm_crc32_u64(x, word(s0, i));
        y = _mm_crc32_u64(y, word(s1, i));
        z = _mm_crc32_u64(z, word(s2, i));
        i += 8;
    }
    while i < n1 {
        y = _mm_crc32_u64(y, word(s1, i));
        z = _mm_crc32_u64(z, word(s2, i));
        i += 8;
    }
    while i < n2 {
        z = _mm_crc32_u64(z, word(s2, i));
        i += 8;
    }
    let tail = |mut crc: u64, s: &[u8], from: usize| {
        for &byte in &s[from..] {
            crc = _mm_crc32_u8(crc as u32, byte) as u64;
        }
        !(crc as u32)
    };
    let mut out = [0u32; 3];
    out[i0] = tail(x, s0, n0);
    out[i1] = tail(y, s1, n1);
    out[i2] = tail(z, s2, n2);
    out
}

/// CRC32C of a segment header: bytes 0..64 with the CRC field read as zero.
pub fn header_crc(header: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[..H_CRC]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &header[H_CRC + 4..H_FIXED_END])
}

/// CRC32C of a watermark slot's generation and sequence.
pub fn watermark_crc(generation: u64, durable_seq: u64) -> u32 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&generation.to_le_bytes());
    b[8..].copy_from_slice(&durable_seq.to_le_bytes());
    crc32c::crc32c(&b)
}

#[inline]
pub fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
pub fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
#[inline]
pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// File name of the segment whose first record has sequence `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// Parses a segment file name back into its first sequence number.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Prefix of a segment prepared ahead of time, before it receives its first
/// record and its final name.
pub const PREPARED_PREFIX: &str = "prepared-";

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_bytes: u64,
    /// 0 while the segment is prepared but unused.
    pub first_seq: u64,
    pub created_ns: u64,
    pub journal_id: u64,
}

impl SegmentHeader {
    pub fn write(&self, page: &mut [u8]) {
        page[H_MAGIC..H_MAGIC + 8].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(page, H_VERSION, FORMAT_VERSION);
        put_u64(page, H_SEGMENT_BYTES, self.segment_bytes);
        put_u64(page, H_FIRST_SEQ, self.first_seq);
        put_u64(page, H_CREATED_NS, self.created_ns);
        put_u64(page, H_JOURNAL_ID, self.journal_id);
        let crc = header_crc(page);
        put_u32(page, H_CRC, crc);
    }

    /// Decodes and checks a header; `Err` names what is wrong.
    pub fn read(page: &[u8]) -> Result<SegmentHeader, &'static str> {
        if page.len() < SEGMENT_HEADER_BYTES {
            return Err("file shorter than a segment header");
        }
        if page[H_MAGIC..H_MAGIC + 8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if get_u32(page, H_VERSION) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if get_u32(page, H_CRC) != header_crc(page) {
            return Err("segment header checksum mismatch");
        }
        Ok(SegmentHeader {
            segment_bytes: get_u64(page, H_SEGMENT_BYTES),
            first_seq: get_u64(page, H_FIRST_SEQ),
            created_ns: get_u64(page, H_CREATED_NS),
            journal_id: get_u64(page, H_JOURNAL_ID),
        })
    }
}

/// Reads the newest valid watermark slot of a header page: `(generation, durable_seq)`.
pub fn read_watermark(page: &[u8]) -> Option<(u64, u64)> {
    H_WATERMARK_SLOTS
        .iter()
        .filter_map(|&at| {
            let generation = get_u64(page, at);
            let seq = get_u64(page, at + 8);
            let crc = get_u32(page, at + 16);
            (generation != 0 && crc == watermark_crc(generation, seq)).then_some((generation, seq))
        })
        .max()
}

/// Writes watermark `generation` into the slot it alternates to.
pub fn write_watermark(page: &mut [u8], generation: u64, durable_seq: u64) {
    let at = H_WATERMARK_SLOTS[(generation % 2) as usize];
    put_u64(page, at, generation);
    put_u64(page, at + 8, durable_seq);
    put_u32(page, at + 16, watermark_crc(generation, durable_seq));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
    }

    #[test]
    fn header_round_trip_and_crc() {
        let mut page = vec![0u8; SEGMENT_HEADER_BYTES];
        let h = SegmentHeader { segment_bytes: 1 << 20, first_seq: 7, created_ns: 9, journal_id: 11 };
        h.write(&mut page);
        assert_eq!(SegmentHeader::read(&page), Ok(h));
        page[H_FIRST_SEQ] ^= 1;
        assert!(SegmentHeader::read(&page).is_err());
    }

    #[test]
    fn watermark_slots_alternate_and_survive_one_torn_slot() {
        let mut page = vec![0u8; SEGMENT_HEADER_BYTES];
        assert_eq!(read_watermark(&page), None);
        write_watermark(&mut page, 1, 10);
        write_watermark(&mut page, 2, 20);
        assert_eq!(read_watermark(&page), Some((2, 20)));
        // Tear the newest slot: the older one still answers.
        page[H_WATERMARK_SLOTS[0] + 8] ^= 0xff;
        assert_eq!(read_watermark(&page), Some((1, 10)));
    }

    #[test]
    fn three_way_crc_equals_the_crate() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for (la, lb, lc) in [
            (0, 0, 0),
            (8, 16, 24),
            (1, 7, 9),
            (100, 33, 250),
            (777, 768, 1500),
            (64, 64, 64),
            (5, 300, 17),
            (300, 5, 17),
            (17, 300, 5),
            (9, 9, 1003),
            (1003, 9, 9),
            (250, 250, 3),
            (0, 13, 13),
        ] {
            let (a, b, c) = (&data[..la], &data[5..5 + lb], &data[100..100 + lc]);
            assert_eq!(record_crc3(a, b, c), [record_crc(a), record_crc(b), record_crc(c)], "{la} {lb} {lc}");
        }
    }

    #[test]
    fn record_sizes() {
        assert_eq!(record_bytes(0), 32);
        assert_eq!(record_bytes(1), 40);
        assert_eq!(record_bytes(64), 96);
    }
}
