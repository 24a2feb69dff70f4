//! Mining jobs: a template turned into Stratum work, and work turned back
//! into a header and a block.
//!
//! The coinbase is kept in two pre-serialised halves around the extranonce
//! space (Stratum's `coinb1` and `coinb2`, the transaction without its
//! witness, which is what its id covers); every other transaction is kept
//! as the bytes the node sent, already concatenated, so a block-solving
//! share becomes a block with a few copies. Layouts: `engine/CHAIN.md`.

use super::address::{Coin, Network};
use super::encode::{bip34_height, push_varint, read_varint};
use super::{decode_hex, encode_hex, from_display_hex, merkle, sha256d};
use crate::chain::template::Template;
use otedama_hashers::Target;
use std::fmt;

/// How coinbases are built.
#[derive(Clone, Debug)]
pub struct CoinbaseConfig {
    pub coin: Coin,
    pub network: Network,
    /// Bytes after the extranonce in the scriptSig (e.g. `/otedama/`).
    pub tag: Vec<u8>,
    pub extranonce1_size: usize,
    pub extranonce2_size: usize,
}

impl CoinbaseConfig {
    /// The defaults: tag `/otedama/`, a 4-byte extranonce1 (per connection)
    /// and an 8-byte extranonce2 (the miner's).
    pub fn new(coin: Coin, network: Network) -> CoinbaseConfig {
        CoinbaseConfig { coin, network, tag: b"/otedama/".to_vec(), extranonce1_size: 4, extranonce2_size: 8 }
    }

    pub fn extranonce_size(&self) -> usize {
        self.extranonce1_size + self.extranonce2_size
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// A template field is missing or malformed.
    Template(&'static str),
    /// The scriptSig would pass 100 bytes (consensus limit).
    ScriptSigTooLong(usize),
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Template(what) => write!(f, "bad block template: {what}"),
            JobError::ScriptSigTooLong(n) => {
                write!(f, "coinbase scriptSig would be {n} bytes (at most 100): shorten the pool tag or the extranonce")
            }
        }
    }
}

impl std::error::Error for JobError {}

/// One unit of mining work.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: u64,
    pub height: u32,
    pub version: u32,
    /// The previous block's id, internal byte order (as in the header).
    pub prev: [u8; 32],
    pub bits: u32,
    pub curtime: u32,
    pub mintime: u32,
    /// The network target (from `bits`).
    pub target: Target,
    /// Subsidy plus fees, paid by the coinbase.
    pub coinbase_value: u64,
    /// Fees of the template's transactions (the subsidy is the rest).
    pub fees: u64,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    extranonce_size: (usize, usize),
    /// Where the payout output's script length starts in `coinb2`, and
    /// the script's length (what [`Job::with_payout`] replaces).
    payout_at: usize,
    payout_len: usize,
    /// Transactions after the coinbase, serialized as the node sent them
    /// (shared by the job's payout variants).
    txs: std::sync::Arc<[u8]>,
    tx_count: usize,
    /// Litecoin's MWEB extension block.
    mweb: Option<std::sync::Arc<[u8]>>,
    /// The coinbase carries the witness reserved value (segwit commitment).
    witness: bool,
}

impl Job {
    /// Builds the job for `template`, paying the whole coinbase value to
    /// `payout_script` (the pool's address in pool mode, the miner's in
    /// solo mode).
    pub fn new(id: u64, template: &Template<'_>, config: &CoinbaseConfig, payout_script: &[u8]) -> Result<Job, JobError> {
        let t = template;
        let prev = from_display_hex(&t.previousblockhash).ok_or(JobError::Template("previousblockhash"))?;
        let bits = u32::from_str_radix(&t.bits, 16).map_err(|_| JobError::Template("bits"))?;
        let target = Target::from_compact(bits).map_err(|_| JobError::Template("bits"))?;
        let mut ids = Vec::with_capacity(t.transactions.len());
        let mut fees = 0u64;
        let total: usize = t.transactions.iter().map(|tx| tx.data.len() / 2).sum();
        let mut txs = vec![0u8; total];
        let mut at = 0;
        for tx in &t.transactions {
            let id = if t.hex_checked && tx.txid.len() == 64 {
                // Checked while parsing: decode only.
                let mut id = [0u8; 32];
                faster_hex::hex_decode_unchecked(tx.txid.as_bytes(), &mut id);
                id.reverse();
                Some(id)
            } else {
                from_display_hex(&tx.txid)
            };
            ids.push(id.ok_or(JobError::Template("transactions[].txid"))?);
            let n = tx.data.len() / 2;
            if tx.data.len() % 2 != 0 {
                return Err(JobError::Template("transactions[].data"));
            }
            if t.hex_checked {
                faster_hex::hex_decode_unchecked(tx.data.as_bytes(), &mut txs[at..at + n]);
            } else {
                faster_hex::hex_decode(tx.data.as_bytes(), &mut txs[at..at + n]).map_err(|_| JobError::Template("transactions[].data"))?;
            }
            at += n;
            fees += tx.fee.unwrap_or(0).max(0) as u64;
        }
        let commitment = match &t.default_witness_commitment {
            Some(h) => Some(decode_hex(h).ok_or(JobError::Template("default_witness_commitment"))?),
            None => None,
        };
        let mweb = match &t.mweb {
            Some(h) => Some(decode_hex(h).ok_or(JobError::Template("mweb"))?),
            None => None,
        };

        let height_push = bip34_height(t.height);
        let script_len = height_push.len() + config.extranonce_size() + config.tag.len();
        if script_len > 100 {
            return Err(JobError::ScriptSigTooLong(script_len));
        }
        let mut coinb1 = Vec::with_capacity(64);
        coinb1.extend_from_slice(&1u32.to_le_bytes()); // version
        coinb1.push(1); // one input
        coinb1.extend_from_slice(&[0u8; 32]); // null prevout
        coinb1.extend_from_slice(&u32::MAX.to_le_bytes());
        push_varint(&mut coinb1, script_len as u64);
        coinb1.extend_from_slice(&height_push);
        let mut coinb2 = Vec::with_capacity(96);
        coinb2.extend_from_slice(&config.tag);
        coinb2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
        push_varint(&mut coinb2, 1 + u64::from(commitment.is_some()));
        coinb2.extend_from_slice(&t.coinbasevalue.to_le_bytes());
        let payout_at = coinb2.len();
        push_varint(&mut coinb2, payout_script.len() as u64);
        coinb2.extend_from_slice(payout_script);
        if let Some(c) = &commitment {
            coinb2.extend_from_slice(&0u64.to_le_bytes());
            push_varint(&mut coinb2, c.len() as u64);
            coinb2.extend_from_slice(c);
        }
        coinb2.extend_from_slice(&0u32.to_le_bytes()); // lock time

        Ok(Job {
            id,
            height: t.height,
            version: t.version,
            prev,
            bits,
            curtime: t.curtime as u32,
            mintime: t.mintime as u32,
            target,
            coinbase_value: t.coinbasevalue,
            fees,
            coinb1,
            coinb2,
            branch: merkle::coinbase_branch(&ids),
            extranonce_size: (config.extranonce1_size, config.extranonce2_size),
            payout_at,
            payout_len: payout_script.len(),
            txs: txs.into(),
            tx_count: 1 + t.transactions.len(),
            mweb: mweb.map(Into::into),
            witness: commitment.is_some(),
        })
    }

    /// The same work with the whole coinbase value paid to `payout_script`
    /// instead (solo mining: the miner's own address). Only `coinb2`
    /// changes: the merkle branch and the witness commitment do not cover
    /// the coinbase. The transactions are shared, not copied.
    pub fn with_payout(&self, payout_script: &[u8]) -> Job {
        let mut coinb2 = Vec::with_capacity(self.coinb2.len() + payout_script.len());
        coinb2.extend_from_slice(&self.coinb2[..self.payout_at]);
        push_varint(&mut coinb2, payout_script.len() as u64);
        coinb2.extend_from_slice(payout_script);
        let (_, n) = read_varint(&self.coinb2[self.payout_at..]).expect("written by Job::new");
        let old_end = self.payout_at + n + self.payout_len;
        coinb2.extend_from_slice(&self.coinb2[old_end..]);
        Job { coinb2, payout_len: payout_script.len(), ..self.clone() }
    }

    /// The coinbase without its witness (what its id covers).
    pub fn coinbase(&self, en1: &[u8], en2: &[u8]) -> Vec<u8> {
        assert_eq!((en1.len(), en2.len()), self.extranonce_size, "extranonce sizes");
        let mut c = Vec::with_capacity(self.coinb1.len() + en1.len() + en2.len() + self.coinb2.len());
        c.extend_from_slice(&self.coinb1);
        c.extend_from_slice(en1);
        c.extend_from_slice(en2);
        c.extend_from_slice(&self.coinb2);
        c
    }

    pub fn merkle_root(&self, en1: &[u8], en2: &[u8]) -> [u8; 32] {
        merkle::root_from_branch(&sha256d(&self.coinbase(en1, en2)), &self.branch)
    }

    /// The 80-byte header for this work.
    pub fn header(&self, en1: &[u8], en2: &[u8], ntime: u32, nonce: u32, version: u32) -> [u8; 80] {
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prev);
        h[36..68].copy_from_slice(&self.merkle_root(en1, en2));
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.bits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// The whole block for a header built from this job:
    /// `header ‖ varint(ntx) ‖ coinbase (with witness) ‖ txs [‖ 0x01 ‖ mweb]`.
    pub fn block(&self, header: &[u8; 80], en1: &[u8], en2: &[u8]) -> Vec<u8> {
        let cb = self.coinbase(en1, en2);
        let mut b = Vec::with_capacity(80 + 9 + cb.len() + 40 + self.txs.len() + self.mweb.as_ref().map_or(0, |m| m.len() + 1));
        b.extend_from_slice(header);
        push_varint(&mut b, self.tx_count as u64);
        if self.witness {
            // version ‖ marker 0 ‖ flag 1 ‖ inputs and outputs ‖ witness:
            // one item of 32 zero bytes (the reserved value) ‖ lock time.
            b.extend_from_slice(&cb[..4]);
            b.extend_from_slice(&[0x00, 0x01]);
            b.extend_from_slice(&cb[4..cb.len() - 4]);
            b.extend_from_slice(&[0x01, 0x20]);
            b.extend_from_slice(&[0u8; 32]);
            b.extend_from_slice(&cb[cb.len() - 4..]);
        } else {
            b.extend_from_slice(&cb);
        }
        b.extend_from_slice(&self.txs);
        if let Some(m) = &self.mweb {
            b.push(0x01);
            b.extend_from_slice(m);
        }
        b
    }

    /// `mining.notify` fields: job id, previous hash (each 4-byte word of
    /// the header-order hash byte-reversed, the Stratum quirk), coinb1,
    /// coinb2, merkle branch, version, nbits, ntime (big-endian hex).
    pub fn notify_fields(&self) -> NotifyFields {
        let mut prev = [0u8; 32];
        for (o, i) in prev.chunks_mut(4).zip(self.prev.chunks(4)) {
            o.copy_from_slice(&[i[3], i[2], i[1], i[0]]);
        }
        NotifyFields {
            job_id: format!("{:x}", self.id),
            prevhash: encode_hex(&prev),
            coinb1: encode_hex(&self.coinb1),
            coinb2: encode_hex(&self.coinb2),
            merkle_branch: self.branch.iter().map(|h| encode_hex(h)).collect(),
            version: format!("{:08x}", self.version),
            nbits: format!("{:08x}", self.bits),
            ntime: format!("{:08x}", self.curtime),
        }
    }
}

/// The string fields of `mining.notify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyFields {
    pub job_id: String,
    pub prevhash: String,
    pub coinb1: String,
    pub coinb2: String,
    pub merkle_branch: Vec<String>,
    pub version: String,
    pub nbits: String,
    pub ntime: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::encode::read_varint;
    use crate::chain::template::TemplateTx;

    fn template(txs: usize, segwit: bool, mweb: bool) -> Template<'static> {
        Template {
            version: 0x2000_0000,
            rules: vec![],
            previousblockhash: "00000000000000000001d1b5d1ba4e0a6c1d4b7a4a0d7ef1a1c7a3d5b6e7f801".into(),
            transactions: (0..txs)
                .map(|i| {
                    let data = vec![i as u8 + 1; 60];
                    TemplateTx {
                        txid: crate::chain::to_display_hex(&sha256d(&data)).into(),
                        data: encode_hex(&data).into(),
                        hash: None,
                        fee: Some(1000),
                        weight: None,
                    }
                })
                .collect(),
            coinbasevalue: 625_000_000 + 1000 * txs as u64,
            longpollid: None,
            target: "0".repeat(64),
            mintime: 1_700_000_000,
            curtime: 1_700_000_100,
            bits: "207fffff".into(),
            height: 500,
            default_witness_commitment: segwit.then(|| "6a24aa21a9ed".to_string() + &"11".repeat(32)),
            mweb: mweb.then(|| "abcdef".into()),
            hex_checked: false,
        }
    }

    fn config() -> CoinbaseConfig {
        CoinbaseConfig::new(Coin::Litecoin, Network::Regtest)
    }

    #[test]
    fn the_fast_template_reader_and_serde_json_build_the_same_job() {
        for (txs, segwit, mweb) in [(0, false, false), (3, true, false), (40, true, true)] {
            let text = serde_json::to_string(&template(txs, segwit, mweb)).unwrap();
            let fast = Template::from_json(&text).unwrap();
            assert!(fast.hex_checked, "the fast reader took it");
            let slow: Template<'_> = serde_json::from_str(&text).unwrap();
            assert!(!slow.hex_checked);
            let (a, b) = (Job::new(1, &fast, &config(), &[0x51]).unwrap(), Job::new(1, &slow, &config(), &[0x51]).unwrap());
            let h = a.header(&[1; 4], &[2; 8], 1_700_000_200, 7, 0x2000_0000);
            assert_eq!((&a.coinb1, &a.coinb2, &a.branch), (&b.coinb1, &b.coinb2, &b.branch));
            assert_eq!(a.block(&h, &[1; 4], &[2; 8]), b.block(&h, &[1; 4], &[2; 8]));
        }
    }

    #[test]
    fn a_payout_variant_equals_the_job_built_for_that_script() {
        for (txs, segwit, mweb) in [(0, false, false), (5, true, true)] {
            let t = template(txs, segwit, mweb);
            let pool = Job::new(3, &t, &config(), &[0x51]).unwrap();
            for script in [vec![0x00, 0x14].into_iter().chain([7u8; 20]).collect::<Vec<u8>>(), vec![0x6a; 300]] {
                let direct = Job::new(3, &t, &config(), &script).unwrap();
                let variant = pool.with_payout(&script);
                assert_eq!((&variant.coinb1, &variant.coinb2, &variant.branch), (&direct.coinb1, &direct.coinb2, &direct.branch));
                let h = variant.header(&[1; 4], &[2; 8], 1_700_000_200, 7, 0x2000_0000);
                assert_eq!(variant.block(&h, &[1; 4], &[2; 8]), direct.block(&h, &[1; 4], &[2; 8]));
                // And back again.
                assert_eq!(variant.with_payout(&[0x51]).coinb2, pool.coinb2);
            }
        }
    }

    #[test]
    fn header_and_block_agree_with_a_full_tree() {
        for (txs, segwit, mweb) in [(0, false, false), (1, true, false), (7, true, true), (20, true, false)] {
            let t = template(txs, segwit, mweb);
            let job = Job::new(9, &t, &config(), &[0x51]).unwrap();
            let (en1, en2) = ([1, 2, 3, 4], [9u8; 8]);
            let cb = job.coinbase(&en1, &en2);
            let mut ids = vec![sha256d(&cb)];
            ids.extend(t.transactions.iter().map(|x| from_display_hex(&x.txid).unwrap()));
            let h = job.header(&en1, &en2, 1_700_000_200, 42, 0x2000_0000);
            assert_eq!(h[36..68], merkle::root(&ids));
            // The scriptSig starts with the BIP 34 height, then the extranonce.
            assert_eq!(cb[41] as usize, 3 + 12 + 9);
            assert_eq!(&cb[42..45], &bip34_height(500)[..]);
            assert_eq!(&cb[45..49], &en1);
            let block = job.block(&h, &en1, &en2);
            assert_eq!(&block[..80], &h);
            let (n, used) = read_varint(&block[80..]).unwrap();
            assert_eq!(n as usize, txs + 1);
            let rest = &block[80 + used..];
            if segwit {
                assert_eq!(&rest[4..6], &[0, 1], "witness marker and flag");
                // Stripping marker, flag and witness gives the coinbase back.
                let wlen = cb.len() + 2 + 34;
                let mut stripped = rest[..4].to_vec();
                stripped.extend_from_slice(&rest[6..wlen - 38]);
                stripped.extend_from_slice(&rest[wlen - 4..wlen]);
                assert_eq!(stripped, cb);
                assert_eq!(&rest[wlen - 38..wlen - 4], &[&[1u8, 32][..], &[0u8; 32][..]].concat()[..]);
            } else {
                assert_eq!(&rest[..cb.len()], &cb[..]);
            }
            if mweb {
                assert_eq!(&block[block.len() - 4..], &[0x01, 0xab, 0xcd, 0xef]);
            }
            assert_eq!(job.fees, 1000 * txs as u64);
        }
    }

    #[test]
    fn notify_fields_follow_stratum_conventions() {
        let t = template(3, true, false);
        let job = Job::new(0x1f, &t, &config(), &[0x51]).unwrap();
        let n = job.notify_fields();
        assert_eq!(n.job_id, "1f");
        assert_eq!(n.version, "20000000");
        assert_eq!(n.nbits, "207fffff");
        assert_eq!(n.ntime, format!("{:08x}", 1_700_000_100u32));
        assert_eq!(n.merkle_branch.len(), 2);
        // A miner reverses each word of prevhash back into header order.
        let p = decode_hex(&n.prevhash).unwrap();
        let back: Vec<u8> = p.chunks(4).flat_map(|w| w.iter().rev().copied()).collect();
        assert_eq!(back, job.prev);
        assert_eq!(n.coinb1, encode_hex(&job.coinb1));
    }

    #[test]
    fn refuses_bad_templates_and_long_script_sigs() {
        let mut t = template(1, true, false);
        t.bits = "zz".into();
        assert_eq!(Job::new(1, &t, &config(), &[0x51]).unwrap_err(), JobError::Template("bits"));
        let t = template(1, true, false);
        let mut c = config();
        c.tag = vec![b'x'; 90];
        assert!(matches!(Job::new(1, &t, &c, &[0x51]), Err(JobError::ScriptSigTooLong(_))));
        let mut t = template(1, true, false);
        t.transactions[0].data = "0g".into();
        assert!(Job::new(1, &t, &config(), &[0x51]).is_err());
    }
}
