//! Arbitrary bytes as journal segment files: scanning, reading, opening
//! (with and without repair) must never panic, hang or return a record that
//! does not check out.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use otedama_journal::format::*;
use otedama_journal::{Journal, Options, Reader, SimStorage, Storage, scan};

const SEG: usize = 64 * 1024;

/// Recomputes the CRC of every well-framed record, so the fuzzer explores
/// sequence gaps, end markers and lengths instead of stopping at checksums.
fn fix_record_crcs(seg: &mut [u8]) {
    let mut off = SEGMENT_HEADER_BYTES;
    while off + RECORD_HEADER_BYTES <= seg.len() {
        let size = get_u32(seg, off + R_SIZE) as usize;
        let len = get_u32(seg, off + R_PAYLOAD_LEN) as usize;
        if size < RECORD_HEADER_BYTES || size > seg.len() - off || record_bytes(len) != size {
            return;
        }
        let crc = record_crc(&seg[off + R_SEQ..off + size]);
        put_u32(seg, off + R_CRC, crc);
        off += size;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let storage = Arc::new(SimStorage::new());
    let files = 1 + (data[0] as usize % 3);
    let fix = data[1];
    let body = &data[2..];
    let chunk = body.len() / files + 1;
    let mut first = 1u64;
    for (i, part) in body.chunks(chunk).enumerate().take(files) {
        let mut bytes = vec![0u8; SEG];
        let n = part.len().min(SEG);
        bytes[..n].copy_from_slice(&part[..n]);
        // Often give the file a valid header so the fuzzer reaches records.
        if fix & (1 << i) != 0 {
            let h = SegmentHeader { segment_bytes: SEG as u64, first_seq: first, created_ns: 0, journal_id: 7 };
            h.write(&mut bytes[..SEGMENT_HEADER_BYTES]);
            if fix & 0x10 != 0 {
                fix_record_crcs(&mut bytes);
            }
            if fix & 0x80 != 0 {
                write_watermark(&mut bytes[..SEGMENT_HEADER_BYTES], 1, u64::from(part.first().copied().unwrap_or(0)));
            }
        }
        let name = if fix & 0x40 != 0 && i == files - 1 { format!("{PREPARED_PREFIX}x-{i}.seg") } else { segment_name(first) };
        let r = storage.create(&name, SEG).expect("create");
        r.write_at(0, &bytes).expect("write");
        first += 1 + u64::from(part.get(1).copied().unwrap_or(0));
    }
    let storage_dyn: Arc<dyn Storage> = storage.clone();
    if let Ok(sc) = scan(&*storage_dyn, false) {
        if let Ok(mut r) = Reader::open_with(storage_dyn.clone(), None, sc.first_seq, false) {
            let mut expect = sc.first_seq;
            for _ in 0..10_000 {
                match r.try_next() {
                    Ok(Some(rec)) => {
                        assert_eq!(rec.seq, expect, "records come in order");
                        expect += 1;
                    }
                    _ => break,
                }
            }
        }
    }
    let opts = Options { segment_bytes: SEG as u64, repair: fix & 0x20 != 0, ..Options::default() };
    if let Ok(j) = Journal::open_with(storage_dyn, opts) {
        j.abandon();
    }
});
