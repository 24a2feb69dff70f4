//! The embedded devnet's chain state machine: a small chain for sha256d or
//! scrypt that hands out templates in `getblocktemplate`'s shape and
//! accepts a block only after full checks (previous block, proof of work,
//! merkle root, BIP 34 coinbase height, coinbase value), with a precise
//! reason for every refusal. Deterministic: time arrives as an argument.
//!
//! Everything here is pure; `otedama_net::devnet_rpc` serves it over the
//! bitcoind-dialect JSON-RPC and journals its blocks.

use super::block::{self, Malformed};
use super::encode::bip34_height;
use super::merkle;
use super::template::Template;
use super::{sha256d, to_display_hex};
use otedama_hashers::{Algorithm, Target};
use std::collections::BTreeMap;
use std::fmt;

/// Regtest's easy target: about one hash in two meets it.
pub const DEVNET_BITS: u32 = 0x207f_ffff;
/// The block subsidy (no halving on the devnet).
pub const SUBSIDY: u64 = 50 * 100_000_000;
/// The genesis time of the devnet the engine serves (fixed, so a chain
/// replayed from its journal is the same chain).
pub const GENESIS_TIME: u32 = 1_700_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    Malformed(&'static str),
    /// The header's previous block is not the tip.
    PrevMismatch {
        expected: String,
        got: String,
    },
    /// The header's bits are not the devnet's.
    BadBits {
        expected: u32,
        got: u32,
    },
    /// The proof-of-work hash does not meet the target.
    HighHash,
    /// The header's merkle root is not the root of the block's transactions.
    BadMerkleRoot,
    /// The first transaction is not a coinbase (one input, null prevout).
    NotCoinbase,
    /// The coinbase scriptSig does not begin with the BIP 34 height push.
    BadCoinbaseHeight {
        height: u32,
    },
    /// The coinbase pays more than the subsidy (the devnet has no fees).
    CoinbaseValueTooHigh {
        paid: u64,
        allowed: u64,
    },
    /// A second coinbase-shaped or otherwise unknown transaction.
    UnexpectedTransactions,
    /// The block is known already.
    Duplicate,
    /// Time not after the previous block's.
    TimeTooOld,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::Malformed(w) => write!(f, "malformed block: {w}"),
            Reject::PrevMismatch { expected, got } => write!(f, "bad-prevblk: builds on {got}, tip is {expected}"),
            Reject::BadBits { expected, got } => write!(f, "bad-diffbits: {got:08x}, expected {expected:08x}"),
            Reject::HighHash => write!(f, "high-hash: proof of work does not meet the target"),
            Reject::BadMerkleRoot => write!(f, "bad-txnmrklroot: merkle root does not match the transactions"),
            Reject::NotCoinbase => write!(f, "bad-cb-missing: first transaction is not a coinbase"),
            Reject::BadCoinbaseHeight { height } => write!(f, "bad-cb-height: coinbase does not start with height {height}"),
            Reject::CoinbaseValueTooHigh { paid, allowed } => write!(f, "bad-cb-amount: pays {paid}, at most {allowed}"),
            Reject::UnexpectedTransactions => write!(f, "bad-txns: the devnet takes coinbase-only blocks"),
            Reject::Duplicate => write!(f, "duplicate"),
            Reject::TimeTooOld => write!(f, "time-too-old"),
        }
    }
}

impl From<Malformed> for Reject {
    fn from(m: Malformed) -> Reject {
        Reject::Malformed(m.0)
    }
}

/// One block of the chain, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: [u8; 32],
    pub height: u32,
    pub time: u32,
    pub header: [u8; 80],
    /// The whole block as submitted (the genesis block: header, one empty
    /// coinbase-less transaction count of 0).
    pub block: Vec<u8>,
}

pub struct Devnet {
    algorithm: Algorithm,
    chain: Vec<Entry>,
    index: BTreeMap<[u8; 32], u32>,
}

impl Devnet {
    /// A chain with only its genesis block (fixed contents, time `genesis_time`).
    ///
    /// # Panics
    /// For RandomX, which the devnet does not run (Monero's format differs).
    pub fn new(algorithm: Algorithm, genesis_time: u32) -> Devnet {
        assert!(algorithm != Algorithm::RandomX, "the devnet runs sha256d and scrypt chains");
        let mut header = [0u8; 80];
        header[0..4].copy_from_slice(&1u32.to_le_bytes());
        header[36..68].copy_from_slice(&sha256d(b"otedama devnet genesis"));
        header[68..72].copy_from_slice(&genesis_time.to_le_bytes());
        header[72..76].copy_from_slice(&DEVNET_BITS.to_le_bytes());
        let id = sha256d(&header);
        let mut index = BTreeMap::new();
        index.insert(id, 0);
        let mut block = header.to_vec();
        block.push(0);
        Devnet { algorithm, chain: vec![Entry { id, height: 0, time: genesis_time, header, block }], index }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn tip(&self) -> &Entry {
        self.chain.last().expect("genesis")
    }

    pub fn height(&self) -> u32 {
        self.tip().height
    }

    pub fn block(&self, height: u32) -> Option<&Entry> {
        self.chain.get(height as usize)
    }

    pub fn height_of(&self, id: &[u8; 32]) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The next block's template, as `getblocktemplate` would answer
    /// (coinbase-only: the devnet has no mempool).
    pub fn template(&self, now: u32) -> Template<'static> {
        let tip = self.tip();
        Template {
            version: 0x2000_0000,
            rules: vec![],
            previousblockhash: to_display_hex(&tip.id),
            transactions: vec![],
            coinbasevalue: SUBSIDY,
            longpollid: Some(format!("{}{}", to_display_hex(&tip.id), tip.height)),
            target: format!("{:064x}", Target::from_compact(DEVNET_BITS).expect("valid").0),
            mintime: u64::from(tip.time) + 1,
            curtime: u64::from(now.max(tip.time + 1)),
            bits: format!("{DEVNET_BITS:08x}"),
            height: tip.height + 1,
            default_witness_commitment: None,
            mweb: None,
            hex_checked: false,
        }
    }

    /// Checks `bytes` as the next block and, if valid, makes it the tip.
    pub fn submit(&mut self, bytes: &[u8]) -> Result<Entry, Reject> {
        let b = block::parse(bytes)?;
        let id = sha256d(&b.header);
        if self.index.contains_key(&id) {
            return Err(Reject::Duplicate);
        }
        let tip = self.tip();
        let (tip_id, tip_time, tip_height) = (tip.id, tip.time, tip.height);
        let prev: [u8; 32] = b.header[4..36].try_into().unwrap();
        if prev != tip_id {
            return Err(Reject::PrevMismatch { expected: to_display_hex(&tip_id), got: to_display_hex(&prev) });
        }
        let bits = u32::from_le_bytes(b.header[72..76].try_into().unwrap());
        if bits != DEVNET_BITS {
            return Err(Reject::BadBits { expected: DEVNET_BITS, got: bits });
        }
        let time = u32::from_le_bytes(b.header[68..72].try_into().unwrap());
        if time <= tip_time {
            return Err(Reject::TimeTooOld);
        }
        let pow = match self.algorithm {
            Algorithm::Sha256d => id,
            Algorithm::Scrypt => otedama_hashers::scrypt::scrypt_1024_1_1(&b.header),
            Algorithm::RandomX => unreachable!("checked in new"),
        };
        if !Target::from_compact(bits).expect("devnet bits").is_met_by(&pow) {
            return Err(Reject::HighHash);
        }
        let ids: Vec<[u8; 32]> = b.txs.iter().map(|t| t.txid).collect();
        if merkle::root(&ids)[..] != b.header[36..68] {
            return Err(Reject::BadMerkleRoot);
        }
        let cb = &b.txs[0];
        if cb.inputs != 1 || cb.first_prevout != ([0u8; 32], u32::MAX) {
            return Err(Reject::NotCoinbase);
        }
        let height = tip_height + 1;
        if !cb.first_script_sig.starts_with(&bip34_height(height)) {
            return Err(Reject::BadCoinbaseHeight { height });
        }
        let paid = cb.outputs.iter().map(|(v, _)| *v).fold(0u64, u64::saturating_add);
        if paid > SUBSIDY {
            return Err(Reject::CoinbaseValueTooHigh { paid, allowed: SUBSIDY });
        }
        if b.txs.len() > 1 || b.trailer != 0 {
            return Err(Reject::UnexpectedTransactions);
        }
        let e = Entry { id, height, time, header: b.header, block: bytes.to_vec() };
        self.index.insert(id, height);
        self.chain.push(e.clone());
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::address::{Coin, Network};
    use crate::chain::job::{CoinbaseConfig, Job};

    const EN1: [u8; 4] = [1; 4];
    const EN2: [u8; 8] = [2; 8];

    /// A block for `t` built by the pool's own job code (after `tweak`),
    /// with the first nonce whose PoW meets the devnet target (or, with
    /// `meets = false`, the first that misses it).
    fn grind(t: &Template<'_>, algo: Algorithm, meets: bool, tweak: impl Fn(&mut Job)) -> Vec<u8> {
        let cfg = CoinbaseConfig::new(Coin::Litecoin, Network::Regtest);
        let mut job = Job::new(1, t, &cfg, &[0x51]).unwrap();
        tweak(&mut job);
        let target = Target::from_compact(DEVNET_BITS).unwrap();
        (0..)
            .map(|n| job.header(&EN1, &EN2, t.curtime as u32, n, t.version))
            .find(|h| {
                let pow = match algo {
                    Algorithm::Scrypt => otedama_hashers::scrypt::scrypt_1024_1_1(h),
                    _ => sha256d(h),
                };
                target.is_met_by(&pow) == meets
            })
            .map(|h| job.block(&h, &EN1, &EN2))
            .unwrap()
    }

    /// The next valid block.
    fn mine(d: &Devnet, algo: Algorithm, now: u32) -> Vec<u8> {
        grind(&d.template(now), algo, true, |_| {})
    }

    #[test]
    fn accepts_blocks_built_by_the_job_code_on_both_algorithms() {
        for algo in [Algorithm::Sha256d, Algorithm::Scrypt] {
            let mut d = Devnet::new(algo, 1_700_000_000);
            for i in 1..=20u32 {
                let b = mine(&d, algo, 1_700_000_000 + i * 10);
                let e = d.submit(&b).unwrap();
                assert_eq!(e.height, i);
                assert_eq!(d.submit(&b), Err(Reject::Duplicate));
            }
            assert_eq!(d.height(), 20);
        }
    }

    #[test]
    fn every_malformed_block_is_refused_with_its_reason() {
        let algo = Algorithm::Sha256d;
        let mut d = Devnet::new(algo, 1_700_000_000);
        let now = 1_700_000_100;
        let good = mine(&d, algo, now);

        // Wrong previous block.
        let mut b = good.clone();
        b[4] ^= 1;
        assert!(matches!(d.submit(&b), Err(Reject::PrevMismatch { .. })));
        // Bad merkle root (the PoW is ground for the bad root, so the
        // root is the reason).
        let bad_root = grind(&d.template(now), algo, true, |j| j.branch.push([9; 32]));
        assert_eq!(d.submit(&bad_root), Err(Reject::BadMerkleRoot));
        // Bad PoW: a nonce whose hash misses the target.
        let miss = grind(&d.template(now), algo, false, |_| {});
        assert_eq!(d.submit(&miss), Err(Reject::HighHash));
        // Bad coinbase height: a template for the wrong height.
        let mut t = d.template(now);
        t.height += 5;
        assert_eq!(d.submit(&grind(&t, algo, true, |_| {})), Err(Reject::BadCoinbaseHeight { height: 1 }));
        // Too much value.
        let mut t = d.template(now);
        t.coinbasevalue = SUBSIDY + 1;
        assert_eq!(d.submit(&grind(&t, algo, true, |_| {})), Err(Reject::CoinbaseValueTooHigh { paid: SUBSIDY + 1, allowed: SUBSIDY }));
        // Truncated and garbage bytes.
        assert!(matches!(d.submit(&good[..good.len() - 1]), Err(Reject::Malformed(_))));
        assert!(matches!(d.submit(&good[..79]), Err(Reject::Malformed(_))));
        assert!(matches!(d.submit(&[0xff; 200]), Err(Reject::Malformed(_))));
        // None of that moved the tip; the good block still lands.
        assert_eq!(d.height(), 0);
        assert_eq!(d.submit(&good).unwrap().height, 1);
    }
}
