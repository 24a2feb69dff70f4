//! The chain side of the pool, as pure code: block templates become mining
//! jobs, and block-solving work becomes block bytes. No I/O: the node
//! clients live in `net`.
//!
//! - [`encode`]: CompactSize, script numbers, the BIP 34 height push.
//! - [`address`]: payout addresses per coin and network (bech32/bech32m and
//!   base58check) to output scripts.
//! - [`merkle`]: merkle roots and the coinbase's merkle branch.
//! - [`template`]: the `getblocktemplate` answer, parsed.
//! - [`job`]: the coinbase builder (BIP 34 height, extranonce space, pool
//!   tag, payout and witness-commitment outputs), Stratum `mining.notify`
//!   fields, header rebuilding, and block assembly (Litecoin MWEB included).
//! - [`block`]: blocks parsed back (transaction ids, coinbase parts).
//! - [`devnet`]: the embedded devnet's chain state machine.
//!
//! Byte layouts: `engine/CHAIN.md`.

pub mod address;
pub mod block;
pub mod devnet;
pub mod encode;
mod gbt;
pub mod job;
pub mod merkle;
pub mod record;
pub mod template;

/// sha256d, the transaction and block id hash.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    otedama_hashers::sha256d::sha256d(data)
}

/// 32 bytes from display-order hex (most significant byte first, as nodes
/// print ids), in internal (little-endian) order.
pub fn from_display_hex(hex: &str) -> Option<[u8; 32]> {
    let mut b: [u8; 32] = decode_hex(hex)?.try_into().ok()?;
    b.reverse();
    Some(b)
}

/// Display-order hex of an internal-order id.
pub fn to_display_hex(id: &[u8; 32]) -> String {
    let mut b = *id;
    b.reverse();
    encode_hex(&b)
}

pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    faster_hex::hex_decode(s.as_bytes(), &mut out).ok()?;
    Some(out)
}

pub fn encode_hex(b: &[u8]) -> String {
    faster_hex::hex_string(b)
}
