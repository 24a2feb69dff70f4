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
