//! Journal records of the chain side: what became of every block the pool
//! solved (`block_found`, kind `0x0300`) and the devnet's own chain
//! (`devnet_block`, kind `0x0310`). Integers only; the layouts are in
//! `engine/CHAIN.md` ("Journal records") byte by byte.

/// What the nodes made of a submitted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// On at least one node's active chain when the pool stopped waiting.
    Landed = 0,
    /// Answered but on no node's active chain (stale parent, lost a race).
    NotOnChain = 1,
    /// Every node refused it (the reason is in the record).
    Rejected = 2,
    /// No node could be reached.
    Unreachable = 3,
}

impl Outcome {
    fn from_u8(b: u8) -> Option<Outcome> {
        Some(match b {
            0 => Outcome::Landed,
            1 => Outcome::NotOnChain,
            2 => Outcome::Rejected,
            3 => Outcome::Unreachable,
            _ => return None,
        })
    }
}

/// One solved block, recorded after submission (the nodes are the source
/// of truth; the record is what the pool promises to account for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub height: u32,
    /// Block id, internal byte order.
    pub id: [u8; 32],
    /// The header's ntime.
    pub time: u32,
    /// Subsidy and fees, in the coin's minor units; their sum is what the
    /// coinbase paid.
    pub subsidy: u64,
    pub fees: u64,
    /// The job the share was for.
    pub job: u64,
    pub outcome: Outcome,
    /// Bit i set: node i (in configuration order, up to 64) holds the
    /// block on its active chain.
    pub on_chain_mask: u64,
    /// Who found it: the payout address (at most 255 bytes).
    pub finder: String,
    /// The worker name after the address's `.` (at most 255 bytes).
    pub worker: String,
    /// The first refusal or error, when there was one (at most 1,024 bytes).
    pub reason: String,
}

pub const BLOCK_RECORD_VERSION: u16 = 1;
const FIXED: usize = 4 + 32 + 4 + 8 + 8 + 8 + 1 + 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord(pub &'static str);

impl std::error::Error for BadRecord {}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad block record: {}", self.0)
    }
}

fn clip(s: &str, max: usize) -> &[u8] {
    // Cut at a character boundary so the stored text stays UTF-8.
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s.as_bytes()[..n]
}

impl BlockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let (finder, worker, reason) = (clip(&self.finder, 255), clip(&self.worker, 255), clip(&self.reason, 1024));
        let mut b = Vec::with_capacity(FIXED + 4 + finder.len() + worker.len() + reason.len());
        b.extend_from_slice(&self.height.to_le_bytes());
        b.extend_from_slice(&self.id);
        b.extend_from_slice(&self.time.to_le_bytes());
        b.extend_from_slice(&self.subsidy.to_le_bytes());
        b.extend_from_slice(&self.fees.to_le_bytes());
        b.extend_from_slice(&self.job.to_le_bytes());
        b.push(self.outcome as u8);
        b.extend_from_slice(&self.on_chain_mask.to_le_bytes());
        b.push(finder.len() as u8);
        b.extend_from_slice(finder);
        b.push(worker.len() as u8);
        b.extend_from_slice(worker);
        b.extend_from_slice(&(reason.len() as u16).to_le_bytes());
        b.extend_from_slice(reason);
        b
    }

    pub fn decode(p: &[u8]) -> Result<BlockRecord, BadRecord> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], BadRecord> {
            let s = p.get(at..at + n).ok_or(BadRecord("truncated"))?;
            at += n;
            Ok(s)
        };
        let u32_ = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap());
        let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap());
        let height = u32_(take(4)?);
        let id: [u8; 32] = take(32)?.try_into().unwrap();
        let time = u32_(take(4)?);
        let subsidy = u64_(take(8)?);
        let fees = u64_(take(8)?);
        let job = u64_(take(8)?);
        let outcome = Outcome::from_u8(take(1)?[0]).ok_or(BadRecord("unknown outcome"))?;
        let on_chain_mask = u64_(take(8)?);
        let text = |s: &[u8]| String::from_utf8(s.to_vec()).map_err(|_| BadRecord("text is not UTF-8"));
        let n = take(1)?[0] as usize;
        let finder = text(take(n)?)?;
        let n = take(1)?[0] as usize;
        let worker = text(take(n)?)?;
        let n = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
        if n > 1024 {
            return Err(BadRecord("reason longer than 1,024 bytes"));
        }
        let reason = text(take(n)?)?;
        if at != p.len() {
            return Err(BadRecord("trailing bytes"));
        }
        Ok(BlockRecord { height, id, time, subsidy, fees, job, outcome, on_chain_mask, finder, worker, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockRecord {
        BlockRecord {
            height: 433,
            id: [7; 32],
            time: 1_700_000_000,
            subsidy: 625_000_000,
            fees: 12_345,
            job: 99,
            outcome: Outcome::Landed,
            on_chain_mask: 0b11,
            finder: "rltc1qexample".into(),
            worker: "rig-7".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_size() {
        let r = sample();
        let b = r.encode();
        assert_eq!(b.len(), FIXED + 1 + 13 + 1 + 5 + 2);
        assert_eq!(&b[0..4], &433u32.to_le_bytes());
        assert_eq!(b[64], 0, "outcome at offset 64");
        assert_eq!(BlockRecord::decode(&b).unwrap(), r);
    }

    #[test]
    fn long_text_is_clipped_at_a_character_boundary() {
        let mut r = sample();
        r.finder = "é".repeat(200); // 400 bytes
        r.reason = "x".repeat(5000);
        let d = BlockRecord::decode(&r.encode()).unwrap();
        assert_eq!(d.finder.len(), 254);
        assert_eq!(d.reason.len(), 1024);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(BlockRecord::decode(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(BlockRecord::decode(&extra), Err(BadRecord("trailing bytes")));
        let mut bad = b.clone();
        bad[64] = 9;
        assert_eq!(BlockRecord::decode(&bad), Err(BadRecord("unknown outcome")));
    }
}
