//! The journal record of an accepted share (`share`, kind `0x0320`):
//! integers only (targets and work, never Stratum's floating-point
//! difficulty), written by the I/O shard that accepted it into its own
//! journal. Layout byte by byte in `net/STRATUM.md` ("Journal records").

use otedama_hashers::Target;

use super::session::AcceptedShare;

pub const SHARE_RECORD_VERSION: u16 = 1;
/// Bytes before the two strings.
const FIXED: usize = 8 + 4 + 32 + 32 + 16 + 4 + 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadShareRecord(pub &'static str);

impl std::fmt::Display for BadShareRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad share record: {}", self.0)
    }
}

impl std::error::Error for BadShareRecord {}

/// One accepted share as journaled. `work` is `2^256 / (share_target + 1)`
/// (what the share proves, the unit payouts count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRecord {
    pub job: u64,
    pub height: u32,
    pub share_target: Target,
    pub network_target: Target,
    pub work: u128,
    /// Seconds since the epoch when the share was judged.
    pub time: u32,
    pub block: bool,
    /// The payout address (the miner's account), at most 255 bytes.
    pub address: String,
    /// The worker name as authorized (`address.worker`), at most 255 bytes.
    pub worker: String,
}

/// `2^256 / (target + 1)`, saturated to u128 (a share target is never
/// hard enough to exceed it: that needs a difficulty above 2^96).
pub fn work_of(target: Target) -> u128 {
    let w = target.work();
    if w > ethnum::U256::from(u128::MAX) { u128::MAX } else { w.as_u128() }
}

fn clip(s: &str) -> &[u8] {
    let mut n = s.len().min(255);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s.as_bytes()[..n]
}

impl ShareRecord {
    /// The record of an accepted share whose work is `work` (the shard
    /// keeps it per share target rather than dividing per share).
    pub fn from_accepted(s: AcceptedShare, work: u128) -> ShareRecord {
        ShareRecord {
            job: s.job,
            height: s.height,
            share_target: s.share_target,
            network_target: s.network_target,
            work,
            time: s.time,
            block: s.block,
            address: s.address,
            worker: s.worker,
        }
    }

    /// Appends the encoded record to `b` (the shard reuses one buffer).
    pub fn encode_into(&self, b: &mut Vec<u8>) {
        let (a, w) = (clip(&self.address), clip(&self.worker));
        b.reserve(FIXED + 2 + a.len() + w.len());
        b.extend_from_slice(&self.job.to_le_bytes());
        b.extend_from_slice(&self.height.to_le_bytes());
        b.extend_from_slice(&self.share_target.to_le_bytes());
        b.extend_from_slice(&self.network_target.to_le_bytes());
        b.extend_from_slice(&self.work.to_le_bytes());
        b.extend_from_slice(&self.time.to_le_bytes());
        b.push(u8::from(self.block));
        b.push(a.len() as u8);
        b.extend_from_slice(a);
        b.push(w.len() as u8);
        b.extend_from_slice(w);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        self.encode_into(&mut b);
        b
    }

    pub fn decode(p: &[u8]) -> Result<ShareRecord, BadShareRecord> {
        if p.len() < FIXED + 2 {
            return Err(BadShareRecord("truncated"));
        }
        let job = u64::from_le_bytes(p[0..8].try_into().expect("8"));
        let height = u32::from_le_bytes(p[8..12].try_into().expect("4"));
        let share_target = Target::from_le_bytes(p[12..44].try_into().expect("32"));
        let network_target = Target::from_le_bytes(p[44..76].try_into().expect("32"));
        let work = u128::from_le_bytes(p[76..92].try_into().expect("16"));
        let time = u32::from_le_bytes(p[92..96].try_into().expect("4"));
        let block = match p[96] {
            0 => false,
            1 => true,
            _ => return Err(BadShareRecord("block flag is neither 0 nor 1")),
        };
        let text = |at: usize| -> Result<(String, usize), BadShareRecord> {
            let n = *p.get(at).ok_or(BadShareRecord("truncated"))? as usize;
            let s = p.get(at + 1..at + 1 + n).ok_or(BadShareRecord("truncated"))?;
            let s = std::str::from_utf8(s).map_err(|_| BadShareRecord("text is not UTF-8"))?;
            Ok((s.to_string(), at + 1 + n))
        };
        let (address, at) = text(FIXED)?;
        let (worker, at) = text(at)?;
        if at != p.len() {
            return Err(BadShareRecord("trailing bytes"));
        }
        if work != work_of(share_target) {
            return Err(BadShareRecord("work does not match the share target"));
        }
        Ok(ShareRecord { job, height, share_target, network_target, work, time, block, address, worker })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otedama_hashers::Family;

    #[test]
    fn round_trips_and_refuses_damage() {
        let t = Target::from_difficulty(1.0, Family::Sha256d).unwrap();
        let r = ShareRecord {
            job: 7,
            height: 812,
            share_target: t,
            network_target: Target::from_compact(0x207fffff).unwrap(),
            work: work_of(t),
            time: 1_700_000_000,
            block: true,
            address: "bcrt1qexample".into(),
            worker: "bcrt1qexample.rig1".into(),
        };
        // Difficulty 1 is 2^32 hashes (within rounding of the diff-1 target).
        assert_eq!(r.work, 0x1_0001_0001);
        let b = r.encode();
        assert_eq!(b.len(), 97 + 1 + 13 + 1 + 18);
        assert_eq!(ShareRecord::decode(&b).unwrap(), r);
        assert!(ShareRecord::decode(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[96] = 2;
        assert!(ShareRecord::decode(&bad).is_err());
        let mut bad = b.clone();
        bad[76] ^= 1;
        assert!(ShareRecord::decode(&bad).is_err());
        let mut long = b;
        long.push(0);
        assert!(ShareRecord::decode(&long).is_err());
    }
}
