//! Targets, difficulties and work, in integers.
//!
//! A proof-of-work hash is read as a 256-bit **little-endian** integer (byte 31
//! is the most significant) and meets a target when it is `<=` the target.
//! Everything that decides whether a share or a block is valid is integer
//! arithmetic; floating point appears only where a protocol speaks it
//! (Stratum's share difficulty) and is converted exactly (see
//! [`Target::from_difficulty`]). Worked examples are in `hashers/TARGETS.md`.

use ethnum::U256;

/// A 256-bit proof-of-work target: a hash meets it when `hash <= target`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(pub U256);

/// The chain family, which fixes what "difficulty 1" means in Stratum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Bitcoin's convention: difficulty 1 is `0xffff << 208`
    /// (`0x00000000ffff0000…`, the target of compact `1d00ffff`).
    Sha256d,
    /// The scrypt pools' convention: difficulty 1 is `0xffff << 224`
    /// (`0x0000ffff0000…`), 65,536 times Bitcoin's, so a share of
    /// difficulty 1 is 65,536 times easier than a Bitcoin difficulty-1 share.
    Scrypt,
    /// Monero/RandomX: difficulty `d` is the target `floor((2^256 - 1) / d)`;
    /// difficulty 1 is the maximum target.
    RandomX,
}

impl Family {
    /// The target of difficulty 1.
    pub fn diff1(self) -> U256 {
        match self {
            Family::Sha256d => U256::from(0xffffu32) << 208,
            Family::Scrypt => U256::from(0xffffu32) << 224,
            Family::RandomX => U256::MAX,
        }
    }
}

/// Why a compact `nBits` value is not a usable target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("compact target {0:08x} has the sign bit set")]
    Negative(u32),
    #[error("compact target {0:08x} overflows 256 bits")]
    Overflow(u32),
}

/// Why a difficulty is not usable.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum DifficultyError {
    #[error("difficulty {0} is not a finite number greater than zero")]
    NotPositive(f64),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({:064x})", self.0)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:064x}", self.0)
    }
}

impl Target {
    /// The easiest target: every hash meets it.
    pub const MAX: Target = Target(U256::MAX);

    /// Reads a hash (or target) stored as 32 little-endian bytes.
    pub fn from_le_bytes(bytes: [u8; 32]) -> Target {
        Target(U256::from_le_bytes(bytes))
    }

    pub fn to_le_bytes(self) -> [u8; 32] {
        self.0.to_le_bytes()
    }

    /// Parses 64 hex digits, most significant first (the way block explorers
    /// and `getblocktemplate`'s `target` print it).
    pub fn from_be_hex(hex: &str) -> Option<Target> {
        if hex.len() != 64 {
            return None;
        }
        U256::from_str_radix(hex, 16).ok().map(Target)
    }

    /// Decodes Bitcoin's compact `nBits`: a one-byte size (in bytes) and a
    /// 23-bit mantissa with a sign bit, exactly as `arith_uint256::SetCompact`
    /// does; negative and overflowing values are errors, as the node treats
    /// them as invalid.
    pub fn from_compact(bits: u32) -> Result<Target, CompactError> {
        let size = bits >> 24;
        let mut word = bits & 0x007f_ffff;
        let value = if size <= 3 {
            word >>= 8 * (3 - size);
            U256::from(word)
        } else {
            if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
                return Err(CompactError::Overflow(bits));
            }
            if word == 0 {
                // Any size with a zero mantissa is zero (a shift past 256
                // bits would be out of range, not zero).
                U256::ZERO
            } else {
                U256::from(word) << (8 * (size - 3))
            }
        };
        if word != 0 && bits & 0x0080_0000 != 0 {
            return Err(CompactError::Negative(bits));
        }
        Ok(Target(value))
    }

    /// Encodes as compact `nBits` (`arith_uint256::GetCompact`): rounds down
    /// to a 23-bit mantissa.
    pub fn to_compact(self) -> u32 {
        let size = (256 - self.0.leading_zeros()).div_ceil(8);
        let mut compact: u32 = if size <= 3 { (self.0.as_u32()) << (8 * (3 - size)) } else { (self.0 >> (8 * (size - 3))).as_u32() };
        let mut size = size;
        if compact & 0x0080_0000 != 0 {
            compact >>= 8;
            size += 1;
        }
        compact | (size << 24)
    }

    /// The target of a Stratum share difficulty, `floor(diff1 / difficulty)`,
    /// computed exactly: a finite `f64` is `m * 2^e` with an integer `m` below
    /// 2^53, so the quotient is integer division of `diff1 * 2^-e` by `m`.
    /// Difficulties so small that the target would pass 2^256 give the
    /// maximum target.
    pub fn from_difficulty(difficulty: f64, family: Family) -> Result<Target, DifficultyError> {
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return Err(DifficultyError::NotPositive(difficulty));
        }
        let (mut m, mut e) = decompose(difficulty);
        let tz = m.trailing_zeros();
        m >>= tz;
        e += tz as i32;
        let diff1 = family.diff1();
        let m256 = U256::from(m);
        let target = if e >= 0 {
            // The divisor m * 2^e; past 2^256 the quotient is zero.
            if 64 - m.leading_zeros() as i32 + e > 256 { U256::ZERO } else { diff1 / (m256 << e as u32) }
        } else {
            let s = (-e) as u32;
            let (q, r) = (diff1 / m256, diff1 % m256);
            if s >= 256 || q.leading_zeros() < s {
                U256::MAX
            } else {
                // floor((q*m + r) * 2^s / m) = q * 2^s + floor(r * 2^s / m),
                // and r < m < 2^53, so r * 2^s fits whenever q * 2^s does
                // (q >= 2^171 for every family).
                let low = (r << s) / m256;
                (q << s).checked_add(low).unwrap_or(U256::MAX)
            }
        };
        Ok(Target(target))
    }

    /// The difficulty of this target in the family's convention, as Stratum
    /// and explorers show it. For display and estimates only: validity is
    /// always decided on the integer target.
    pub fn difficulty(self, family: Family) -> f64 {
        if self.0 == U256::ZERO {
            return f64::INFINITY;
        }
        family.diff1().as_f64() / self.0.as_f64()
    }

    /// Expected number of hashes to meet this target: `2^256 / (target + 1)`,
    /// computed as `!target / (target + 1) + 1` so it stays in 256 bits
    /// (Bitcoin's `GetBlockProof`). A zero target (2^256) saturates.
    pub fn work(self) -> U256 {
        if self.0 == U256::MAX {
            return U256::ONE;
        }
        ((!self.0) / (self.0 + 1)).saturating_add(U256::ONE)
    }

    /// Whether a hash (as the 32 bytes the hash function returns) meets this
    /// target, reading the hash as a little-endian integer.
    #[inline]
    pub fn is_met_by(self, hash: &[u8; 32]) -> bool {
        // Compare from the most significant 64-bit word down; nearly every
        // hash is decided by the first word.
        let t = self.to_le_bytes();
        for i in (0..4).rev() {
            let h = u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().unwrap());
            let tw = u64::from_le_bytes(t[i * 8..i * 8 + 8].try_into().unwrap());
            if h != tw {
                return h < tw;
            }
        }
        true
    }

    /// The most significant 32 bits, for scanners' cheap first test: a hash
    /// whose top 32 bits exceed these cannot meet the target.
    #[inline]
    pub fn top_u32(self) -> u32 {
        (self.0 >> 224u32).as_u32()
    }

    /// Monero's target for a difficulty: the largest hash with
    /// `hash * difficulty < 2^256`, i.e. `floor((2^256 - 1) / difficulty)`.
    /// A hash meets it exactly when monerod's `check_hash` accepts it.
    pub fn from_monero_difficulty(difficulty: u128) -> Target {
        if difficulty == 0 {
            return Target::MAX;
        }
        Target(U256::MAX / U256::from(difficulty))
    }
}

/// `x = m * 2^e` with `m` an integer below 2^53 (x finite and positive).
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp == 0 { (frac, -1074) } else { (frac | (1u64 << 52), exp - 1075) }
}

/// The 64-bit share target of Monero-style Stratum (XMRig's `target` field).
///
/// A share is `hash[24..32]` read as a little-endian `u64` compared `<` this
/// value (what XMRig checks before submitting); the pool then checks the full
/// hash against [`Target::from_monero_difficulty`]. On the wire it is hex of
/// its little-endian bytes: 16 digits for the 8-byte form, or 8 digits for the
/// 4-byte form, which carries only the upper 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoneroShareTarget(pub u64);

impl MoneroShareTarget {
    /// `u64::MAX / difficulty`, as pools derive it.
    pub fn from_difficulty(difficulty: u64) -> MoneroShareTarget {
        MoneroShareTarget(u64::MAX / difficulty.max(1))
    }

    /// The difficulty a miner infers from the target: `u64::MAX / target`.
    pub fn difficulty(self) -> u64 {
        u64::MAX / self.0.max(1)
    }

    /// Whether XMRig would submit this hash.
    pub fn is_met_by(self, hash: &[u8; 32]) -> bool {
        u64::from_le_bytes(hash[24..32].try_into().unwrap()) < self.0
    }

    /// The 8-byte form: 16 hex digits of the little-endian bytes.
    pub fn to_hex8(self) -> String {
        hex_lower(&self.0.to_le_bytes())
    }

    /// The 4-byte form: 8 hex digits of the little-endian upper 32 bits
    /// (rounded down, so the miner's target is never easier than ours).
    pub fn to_hex4(self) -> String {
        hex_lower(&((self.0 >> 32) as u32).to_le_bytes())
    }

    /// Reads either form as XMRig does: the 4-byte form `t` becomes
    /// `u64::MAX / (u32::MAX / t)`.
    pub fn parse(hex: &str) -> Option<MoneroShareTarget> {
        let bytes = parse_hex(hex)?;
        match bytes.len() {
            4 => {
                let t = u32::from_le_bytes(bytes[..4].try_into().ok()?);
                if t == 0 {
                    return None;
                }
                Some(MoneroShareTarget(u64::MAX / u64::from(u32::MAX / t)))
            }
            8 => Some(MoneroShareTarget(u64::from_le_bytes(bytes[..8].try_into().ok()?))),
            _ => None,
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trips_and_edge_cases() {
        // Bitcoin's difficulty-1 target.
        let t = Target::from_compact(0x1d00ffff).unwrap();
        assert_eq!(t.0, U256::from(0xffffu32) << 208);
        assert_eq!(t.to_compact(), 0x1d00ffff);
        // Regtest.
        let t = Target::from_compact(0x207fffff).unwrap();
        assert_eq!(t.0, U256::from(0x7fffffu32) << 232);
        assert_eq!(t.to_compact(), 0x207fffff);
        // A mantissa with the top bit set moves a byte up when encoded.
        assert_eq!(Target(U256::from(0x80u32)).to_compact(), 0x02008000);
        // Small sizes shift right.
        assert_eq!(Target::from_compact(0x01123456).unwrap().0, U256::from(0x12u32));
        assert_eq!(Target::from_compact(0x02123456).unwrap().0, U256::from(0x1234u32));
        assert_eq!(Target::from_compact(0).unwrap().0, U256::ZERO);
        // Sign bit and overflow, as the node rejects them.
        assert_eq!(Target::from_compact(0x04923456), Err(CompactError::Negative(0x04923456)));
        assert_eq!(Target::from_compact(0x23000001), Err(CompactError::Overflow(0x23000001)));
        assert_eq!(Target::from_compact(0x22000100), Err(CompactError::Overflow(0x22000100)));
        assert!(Target::from_compact(0x22000001).is_ok());
        // A zero mantissa is zero at any size (found by fuzzing: a shift
        // past 256 bits).
        assert_eq!(Target::from_compact(0x5b000000).unwrap().0, U256::ZERO);
        assert_eq!(Target::from_compact(0xff800000).unwrap().0, U256::ZERO);
        // A sign bit on a zero mantissa is zero, not negative (SetCompact).
        assert_eq!(Target::from_compact(0x01800000).unwrap().0, U256::ZERO);
    }

    #[test]
    fn difficulty_conversions_are_exact() {
        let d1 = Target::from_difficulty(1.0, Family::Sha256d).unwrap();
        assert_eq!(d1.to_compact(), 0x1d00ffff);
        let d1s = Target::from_difficulty(1.0, Family::Scrypt).unwrap();
        assert_eq!(d1s.0, d1.0 << 16);
        // Powers of two divide exactly.
        let d1024 = Target::from_difficulty(1024.0, Family::Sha256d).unwrap();
        assert_eq!(d1024.0, d1.0 >> 10);
        // A fractional difficulty: 0.5 doubles the target.
        let half = Target::from_difficulty(0.5, Family::Sha256d).unwrap();
        assert_eq!(half.0, d1.0 << 1);
        // 3: floor division.
        let d3 = Target::from_difficulty(3.0, Family::Scrypt).unwrap();
        assert_eq!(d3.0, (U256::from(0xffffu32) << 224) / U256::from(3u32));
        // Regtest scrypt: a tiny difficulty saturates at the maximum target.
        let tiny = Target::from_difficulty(1e-30, Family::Scrypt).unwrap();
        assert_eq!(tiny, Target::MAX);
        assert!(Target::from_difficulty(0.0, Family::Scrypt).is_err());
        assert!(Target::from_difficulty(f64::NAN, Family::Scrypt).is_err());
        assert!(Target::from_difficulty(-1.0, Family::Scrypt).is_err());
        // Round trip through difficulty() within f64 precision.
        let t = Target::from_difficulty(65536.5, Family::Sha256d).unwrap();
        assert!((t.difficulty(Family::Sha256d) - 65536.5).abs() < 1e-6);
        // The regtest litecoin target in scrypt stratum units (~3.05e-5).
        let regtest = Target::from_compact(0x207fffff).unwrap();
        let d = regtest.difficulty(Family::Scrypt);
        assert!((d - 3.05e-5).abs() < 0.01e-5, "{d}");
    }

    #[test]
    fn work_matches_bitcoin() {
        // Block work of difficulty 1: 2^256 / (0xffff * 2^208 + 1) = 0x100010001.
        let t = Target::from_compact(0x1d00ffff).unwrap();
        assert_eq!(t.work(), U256::from(0x1_0001_0001u64));
        assert_eq!(Target::MAX.work(), U256::ONE);
        // 2^256 itself does not fit: a zero target saturates.
        assert_eq!(Target(U256::ZERO).work(), U256::MAX);
    }

    #[test]
    fn monero_targets_match_xmrig() {
        let t = MoneroShareTarget::from_difficulty(100_000);
        assert_eq!(t.0, u64::MAX / 100_000);
        assert_eq!(t.difficulty(), 100_000);
        // The 4-byte form a pool sends for difficulty 100,000:
        // (2^64 - 1) / 100000 = 0xa7c5_ac47_1b47, upper 32 bits 0xa7c5,
        // little-endian hex.
        assert_eq!(t.to_hex4(), "c5a70000");
        let back = MoneroShareTarget::parse(&t.to_hex4()).unwrap();
        // XMRig's reading of the 4-byte form loses the low bits but keeps
        // the difficulty within one part in 2^32 / difficulty.
        assert!(back.difficulty().abs_diff(100_000) <= 1, "{}", back.difficulty());
        assert_eq!(MoneroShareTarget::parse(&t.to_hex8()).unwrap(), t);
        assert!(MoneroShareTarget::parse("xyz").is_none());
        assert!(MoneroShareTarget::parse("000000").is_none());
        // The full target agrees with monerod's rule: hash * d < 2^256.
        let full = Target::from_monero_difficulty(100_000);
        assert_eq!(full.0, U256::MAX / U256::from(100_000u32));
    }

    #[test]
    fn is_met_by_reads_little_endian() {
        let t = Target::from_compact(0x1d00ffff).unwrap();
        let mut h = [0u8; 32];
        h[27] = 0xff;
        h[26] = 0xff;
        assert!(t.is_met_by(&h));
        h[25] = 1;
        assert!(!t.is_met_by(&h));
        h = t.to_le_bytes();
        assert!(t.is_met_by(&h));
    }
}
