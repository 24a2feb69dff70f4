//! Proof-of-work functions and the integer target math around them.
//!
//! - [`sha256d`]: double SHA-256 of block headers, with midstate and
//!   multi-lane nonce-scanning kernels (SHA-NI, AVX-512, AVX2, generic).
//! - [`scrypt`]: Litecoin's scrypt (N=1024, r=1, p=1), multi-buffer SIMD.
//! - [`randomx`]: Monero's RandomX through RandomX's C library: light and
//!   fast modes, datasets built on all cores, per-seed epochs.
//! - [`target`]: compact `nBits`, Stratum difficulty and work, in integers.
//! - [`verify`]: a bounded pool of verification threads for the costly
//!   algorithms, answering over SPSC rings.
//!
//! Byte orders and worked examples: `hashers/TARGETS.md`.

pub mod randomx;
pub mod scrypt;
pub mod sha256d;
pub mod target;
pub mod verify;

pub use target::{Family, MoneroShareTarget, Target};

/// A proof-of-work algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256d,
    Scrypt,
    RandomX,
}

impl Algorithm {
    /// The Stratum difficulty convention of this algorithm's coins.
    pub fn family(self) -> Family {
        match self {
            Algorithm::Sha256d => Family::Sha256d,
            Algorithm::Scrypt => Family::Scrypt,
            Algorithm::RandomX => Family::RandomX,
        }
    }
}

/// One interface over the three algorithms: hash an input (an 80-byte
/// header, or a Monero hashing blob), check it against a target, hash many
/// at once, and scan a nonce range. Each variant owns its per-thread state
/// (scrypt scratch memory, a RandomX VM), so a `Hasher` belongs to one
/// thread.
pub enum Hasher {
    Sha256d { kernel: sha256d::Kernel },
    Scrypt(scrypt::Scrypt),
    RandomX(randomx::Vm),
}

impl Hasher {
    /// sha256d with the fastest scanning kernel this CPU has.
    pub fn sha256d() -> Hasher {
        Hasher::Sha256d { kernel: sha256d::Kernel::best() }
    }

    /// scrypt with the fastest multi-buffer kernel this CPU has.
    pub fn scrypt() -> Hasher {
        Hasher::Scrypt(scrypt::Scrypt::new(scrypt::Kernel::best()))
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256d { .. } => Algorithm::Sha256d,
            Hasher::Scrypt(_) => Algorithm::Scrypt,
            Hasher::RandomX(_) => Algorithm::RandomX,
        }
    }

    /// The proof-of-work hash of `input`.
    pub fn hash(&mut self, input: &[u8]) -> [u8; 32] {
        match self {
            Hasher::Sha256d { .. } => sha256d::sha256d(input),
            Hasher::Scrypt(_) => scrypt::scrypt_1024_1_1(input),
            Hasher::RandomX(vm) => vm.hash(input),
        }
    }

    /// The hash of `input` and whether it meets `target`.
    pub fn check(&mut self, input: &[u8], target: Target) -> (bool, [u8; 32]) {
        let h = self.hash(input);
        (target.is_met_by(&h), h)
    }

    /// Hashes every input into `out` (same length): scrypt headers go
    /// through the multi-buffer kernel in batches.
    pub fn hash_many(&mut self, inputs: &[&[u8]], out: &mut [[u8; 32]]) {
        assert_eq!(inputs.len(), out.len());
        if let Hasher::Scrypt(s) = self
            && inputs.iter().all(|i| i.len() == 80)
        {
            let headers: Vec<[u8; 80]> = inputs.iter().map(|i| (*i).try_into().unwrap()).collect();
            s.hash_many(&headers, out);
            return;
        }
        for (i, o) in inputs.iter().zip(out.iter_mut()) {
            *o = self.hash(i);
        }
    }

    /// Hashes `input` with nonces `start .. start + count` (u32 LE at
    /// `nonce_offset`: 76 in block headers, 39 in Monero blobs) and appends
    /// every nonce whose hash meets `target`, in increasing order. Block
    /// headers with the nonce at 76 use the scanning kernels.
    pub fn scan(&mut self, input: &[u8], nonce_offset: usize, start: u32, count: u32, target: Target, found: &mut Vec<u32>) {
        assert!(nonce_offset + 4 <= input.len(), "nonce outside the input");
        let header: Option<[u8; 80]> = (nonce_offset == 76).then(|| input.try_into().ok()).flatten();
        match (self, header) {
            (Hasher::Sha256d { kernel }, Some(h)) => sha256d::scan(&sha256d::HeaderJob::new(&h), start, count, target, *kernel, found),
            (Hasher::Scrypt(s), Some(h)) => s.scan(&h, start, count, target, found),
            (Hasher::RandomX(vm), _) => vm.scan(input, nonce_offset, start, count, target, found),
            (this, None) => {
                let mut buf = input.to_vec();
                for n in (0..count).map(|i| start + i) {
                    buf[nonce_offset..nonce_offset + 4].copy_from_slice(&n.to_le_bytes());
                    if this.check(&buf, target).0 {
                        found.push(n);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_interface_agrees_with_each_algorithm() {
        let cache = randomx::Cache::new(b"interface", randomx::recommended_flags()).unwrap();
        let mut hashers = [Hasher::sha256d(), Hasher::scrypt(), Hasher::RandomX(randomx::Vm::light(cache).unwrap())];
        let header = [0x42u8; 80];
        let target = Target(ethnum::U256::MAX >> 2);
        for h in hashers.iter_mut() {
            let algo = h.algorithm();
            // scan == a plain loop over check, for the header and for an
            // input where the nonce is elsewhere.
            for (input, off) in [(&header[..], 76usize), (&header[..60], 10)] {
                let mut found = Vec::new();
                h.scan(input, off, 5, 12, target, &mut found);
                let mut want = Vec::new();
                let mut buf = input.to_vec();
                for n in 5..17u32 {
                    buf[off..off + 4].copy_from_slice(&n.to_le_bytes());
                    if h.check(&buf, target).0 {
                        want.push(n);
                    }
                }
                assert_eq!(found, want, "{algo:?} offset {off}");
            }
            let inputs: Vec<[u8; 80]> = (0..5u8).map(|i| [i; 80]).collect();
            let refs: Vec<&[u8]> = inputs.iter().map(|i| &i[..]).collect();
            let mut out = vec![[0u8; 32]; 5];
            h.hash_many(&refs, &mut out);
            for (i, o) in refs.iter().zip(&out) {
                assert_eq!(*o, h.hash(i), "{algo:?}");
            }
        }
        assert_eq!(hashers[0].hash(&header), sha256d::sha256d(&header));
        assert_eq!(hashers[1].hash(&header), scrypt::scrypt_1024_1_1(&header));
    }

    #[test]
    fn epochs_keep_the_current_and_next_seed() {
        let e = randomx::Epochs::new(randomx::Mode::Light, randomx::recommended_flags(), 1);
        for seed in [b"a", b"b", b"c"] {
            e.prepare(seed);
        }
        // Announcing a third seed dropped the first.
        assert!(matches!(e.vm(b"a"), Err(randomx::RandomxError::UnknownSeed(_))));
        let mut vb = e.vm(b"b").unwrap();
        let vc = e.vm(b"c").unwrap();
        assert_eq!(vb.hash(b"x"), randomx::hash_light(b"b", b"x").unwrap());
        assert_eq!(vc.key(), b"c");
        assert!(e.is_ready(b"b") && e.is_ready(b"c"));
        // Announcing a kept seed again changes nothing.
        e.prepare(b"c");
        assert!(e.is_ready(b"b"));
    }
}
