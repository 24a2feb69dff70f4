//! Bitcoin serialization pieces.

/// Appends a CompactSize ("varint").
pub fn push_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Reads a CompactSize: the value and the bytes it took.
pub fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = b.split_first()?;
    Some(match first {
        0xfd => (u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)), 3),
        0xfe => (u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)), 5),
        0xff => (u64::from_le_bytes(rest.get(..8)?.try_into().ok()?), 9),
        n => (u64::from(n), 1),
    })
}

/// A script push of `data` (direct push or PUSHDATA1/2).
pub fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    match data.len() {
        0..=75 => out.push(data.len() as u8),
        76..=255 => {
            out.push(0x4c);
            out.push(data.len() as u8);
        }
        _ => {
            out.push(0x4d);
            out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        }
    }
    out.extend_from_slice(data);
}

/// The minimal little-endian sign-magnitude encoding of a script number
/// (`CScriptNum::serialize`).
pub fn script_num(n: i64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let neg = n < 0;
    let mut abs = n.unsigned_abs();
    let mut out = Vec::new();
    while abs > 0 {
        out.push((abs & 0xff) as u8);
        abs >>= 8;
    }
    if out.last().unwrap() & 0x80 != 0 {
        out.push(if neg { 0x80 } else { 0 });
    } else if neg {
        *out.last_mut().unwrap() |= 0x80;
    }
    out
}

/// The BIP 34 height push that must begin a coinbase scriptSig, exactly as
/// `CScript() << nHeight` writes it: OP_0 for 0, OP_1..OP_16 for 1..16, a
/// minimal script-number push above.
pub fn bip34_height(height: u32) -> Vec<u8> {
    match height {
        0 => vec![0x00],
        1..=16 => vec![0x50 + height as u8],
        _ => {
            let mut v = Vec::new();
            push_data(&mut v, &script_num(i64::from(height)));
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_boundary() {
        for n in [0u64, 0xfc, 0xfd, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut v = Vec::new();
            push_varint(&mut v, n);
            assert_eq!(read_varint(&v), Some((n, v.len())), "{n}");
        }
        assert_eq!(read_varint(&[0xfd, 1]), None);
    }

    #[test]
    fn heights_encode_as_bitcoin_core_does() {
        assert_eq!(bip34_height(1), vec![0x51]);
        assert_eq!(bip34_height(16), vec![0x60]);
        assert_eq!(bip34_height(17), vec![0x01, 0x11]);
        assert_eq!(bip34_height(128), vec![0x02, 0x80, 0x00]);
        // Bitcoin block 227,836 (the first BIP 34 block): 03 fc 79 03.
        assert_eq!(bip34_height(227_836), vec![0x03, 0xfc, 0x79, 0x03]);
        assert_eq!(script_num(-1), vec![0x81]);
        assert_eq!(script_num(255), vec![0xff, 0x00]);
    }
}
