//! Double SHA-256 of block headers (Bitcoin, Litecoin block ids, every
//! sha256d coin).
//!
//! One-off hashing goes through `sha2` (SHA-NI when the CPU has it, detected
//! at run time). Nonce scanning is hand-written, because no crate offers it
//! and it is the miner's and the benchmark's inner loop: the first 64 header
//! bytes are hashed once per job (the midstate), and the kernels below hash
//! many nonces at once:
//!
//! - `ShaNi`: the SHA extensions, four independent nonces interleaved so the
//!   `sha256rnds2` latency is hidden; the first two rounds of the second
//!   block are job constants and are computed once.
//! - `Avx512` / `Avx2`: 16 / 8 nonces in the lanes of a vector register,
//!   with the job-constant rounds (0–2) and schedule words (16, 17) hoisted.
//! - `Generic`: `sha2`'s compression function from the midstate, per nonce.
//!
//! Every kernel stops the second hash as soon as the top word of the result
//! is known (the last rounds only move words that cannot change it) and
//! compares that word with the target's top 32 bits; the few candidates
//! that pass are re-hashed in full and compared exactly, so a kernel can only
//! ever be slow, not wrong. The tests check every kernel against a plain loop.

use crate::target::Target;
use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

/// SHA-256's initial state.
pub const IV: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// `SHA256(SHA256(data))`.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// `SHA256(SHA256(m))` of every 64-byte message in `messages` (a multiple
/// of 64 bytes), into `out`: one merkle tree level, `m = left ‖ right`.
///
/// Hand-written because merkle levels are where job building spends its
/// hashing and `sha2` hashes one message at a time: with the SHA
/// extensions, four messages are interleaved (hiding `sha256rnds2`'s
/// latency), and the second block of every message (padding only) uses
/// precomputed `W + K` values instead of a message schedule. Without them,
/// `sha2` per message.
///
/// # Panics
/// If `messages.len() != 64 * out.len()`.
pub fn sha256d_64(messages: &[u8], out: &mut [[u8; 32]]) {
    assert_eq!(messages.len(), 64 * out.len(), "64 bytes per output");
    #[cfg(target_arch = "x86_64")]
    if Kernel::ShaNi.is_available() {
        // SAFETY: the SHA extensions and SSE4.1 were detected above.
        unsafe { shani::sha256d_64(messages, out) };
        return;
    }
    for (m, o) in messages.chunks_exact(64).zip(out.iter_mut()) {
        *o = sha256d(m);
    }
}

/// An 80-byte block header prepared for hashing many nonces: the state after
/// its first 64 bytes (the midstate) and the three words after them.
#[derive(Clone, Debug)]
pub struct HeaderJob {
    header: [u8; 80],
    midstate: [u32; 8],
    /// Bytes 64..76 (end of the merkle root, time, bits) as big-endian words.
    tail: [u32; 3],
}

impl HeaderJob {
    pub fn new(header: &[u8; 80]) -> HeaderJob {
        let mut midstate = IV;
        compress256(&mut midstate, &[header[..64].try_into().unwrap()]);
        let tail = [0, 1, 2].map(|i| u32::from_be_bytes(header[64 + 4 * i..68 + 4 * i].try_into().unwrap()));
        HeaderJob { header: *header, midstate, tail }
    }

    /// The header with `nonce` in bytes 76..80 (little-endian, as in blocks).
    pub fn header_with_nonce(&self, nonce: u32) -> [u8; 80] {
        let mut h = self.header;
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// sha256d of the header with this nonce, from the midstate.
    pub fn hash(&self, nonce: u32) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..12].copy_from_slice(&self.header[64..76]);
        block[12..16].copy_from_slice(&nonce.to_le_bytes());
        block[16] = 0x80;
        block[62..64].copy_from_slice(&640u16.to_be_bytes());
        let mut s = self.midstate;
        compress256(&mut s, &[block]);
        second_hash(&s)
    }
}

/// The second SHA-256 over a first hash given as its state words.
fn second_hash(first: &[u32; 8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    for (i, w) in first.iter().enumerate() {
        block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    block[32] = 0x80;
    block[62..64].copy_from_slice(&256u16.to_be_bytes());
    let mut s = IV;
    compress256(&mut s, &[block]);
    let mut out = [0u8; 32];
    for (i, w) in s.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// A nonce-scanning kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    ShaNi,
    Avx512,
    Avx2,
    Generic,
}

impl Kernel {
    /// The kernels this CPU can run, fastest first (the order measured by
    /// `otedama bench hashers`, see BENCHMARKS.md).
    pub fn available() -> Vec<Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
                v.push(Kernel::Avx512);
            }
            if std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1") {
                v.push(Kernel::ShaNi);
            }
            if std::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
        }
        v.push(Kernel::Generic);
        v
    }

    pub fn best() -> Kernel {
        Kernel::available()[0]
    }

    /// Whether this CPU can run the kernel (detected once).
    pub fn is_available(self) -> bool {
        static AVAILABLE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        AVAILABLE.get_or_init(Kernel::available).contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::ShaNi => "sha-ni",
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Generic => "generic",
        }
    }

    /// Nonces per kernel call.
    fn lanes(self) -> u32 {
        match self {
            Kernel::ShaNi => 4,
            Kernel::Avx512 => 16,
            Kernel::Avx2 => 8,
            Kernel::Generic => 1,
        }
    }
}

/// Hashes nonces `start .. start + count` (wrapping at 2^32 is not done: the
/// range must fit) and appends to `found` every nonce whose hash meets
/// `target`, in increasing order.
///
/// # Panics
/// If `kernel` is not in [`Kernel::available`], or the range passes 2^32.
pub fn scan(job: &HeaderJob, start: u32, count: u32, target: Target, kernel: Kernel, found: &mut Vec<u32>) {
    assert!(kernel.is_available(), "{kernel:?} is not available on this CPU");
    assert!(u64::from(start) + u64::from(count) <= 1 << 32, "nonce range passes 2^32");
    let top = target.top_u32();
    let lanes = kernel.lanes();
    let whole = count - count % lanes;
    let mut check = |nonce: u32| {
        if target.is_met_by(&job.hash(nonce)) {
            found.push(nonce);
        }
    };
    // Nonces whose top word passes; each is then checked exactly.
    let mut candidates = Vec::new();
    let groups = whole / lanes;
    // SAFETY: the kernel's CPU features were checked above.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::ShaNi => shani::candidates(job, start, groups, top, &mut candidates),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::candidates(job, start, groups, top, &mut candidates),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::candidates(job, start, groups, top, &mut candidates),
            _ => candidates.extend((start..start + whole).filter(|&n| top_word_of(&job.hash(n)) <= top)),
        }
    }
    for nonce in candidates {
        check(nonce);
    }
    for nonce in start + whole..start + count {
        check(nonce);
    }
}

/// The most significant 32 bits of a hash read as a little-endian integer.
#[inline]
fn top_word_of(hash: &[u8; 32]) -> u32 {
    u32::from_le_bytes(hash[28..32].try_into().unwrap())
}

/// Job constants shared by the vector kernels.
#[cfg(target_arch = "x86_64")]
struct Precomputed {
    /// State after rounds 0..=2 of the second block (they use only W0..W2).
    state3: [u32; 8],
    /// W16 and W17 of the second block (independent of the nonce).
    w16: u32,
    w17: u32,
}

#[cfg(target_arch = "x86_64")]
impl Precomputed {
    fn new(job: &HeaderJob) -> Precomputed {
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = job.midstate;
        for (t, &k) in K.iter().enumerate().take(3) {
            let t1 = h
                .wrapping_add(e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25))
                .wrapping_add((e & f) ^ (!e & g))
                .wrapping_add(k)
                .wrapping_add(job.tail[t]);
            let t2 = (a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22)).wrapping_add((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        let s0 = |x: u32| x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3);
        let s1 = |x: u32| x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10);
        let [w0, w1, w2] = job.tail;
        Precomputed { state3: [a, b, c, d, e, f, g, h], w16: s0(w1).wrapping_add(w0), w17: s1(640).wrapping_add(s0(w2)).wrapping_add(w1) }
    }
}

/// The lane-parallel kernels, written once over a small set of vector
/// operations and instantiated per instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! lane_kernel {
    ($modname:ident, $feat:literal, $lanes:literal, $v:ty, { $($ops:item)* }) => {
        mod $modname {
            use super::{HeaderJob, Precomputed, IV, K};
            use core::arch::x86_64::*;
            $($ops)*

            #[inline]
            #[target_feature(enable = $feat)]
            fn bsig0(x: $v) -> $v { xor3(ror::<2>(x), ror::<13>(x), ror::<22>(x)) }
            #[inline]
            #[target_feature(enable = $feat)]
            fn bsig1(x: $v) -> $v { xor3(ror::<6>(x), ror::<11>(x), ror::<25>(x)) }
            #[inline]
            #[target_feature(enable = $feat)]
            fn ssig0(x: $v) -> $v { xor3(ror::<7>(x), ror::<18>(x), shr::<3>(x)) }
            #[inline]
            #[target_feature(enable = $feat)]
            fn ssig1(x: $v) -> $v { xor3(ror::<17>(x), ror::<19>(x), shr::<10>(x)) }

            /// One round; `kw` is K[t] + W[t].
            #[inline]
            #[target_feature(enable = $feat)]
            fn round(s: &mut [$v; 8], kw: $v) {
                let [a, b, c, d, e, f, g, h] = *s;
                let t1 = add(add(h, bsig1(e)), add(ch(e, f, g), kw));
                let t2 = add(bsig0(a), maj(a, b, c));
                *s = [add(t1, t2), a, b, c, add(d, t1), e, f, g];
            }

            /// W[t] from the 16-word window.
            #[inline]
            #[target_feature(enable = $feat)]
            fn sched(w: &mut [$v; 16], t: usize) -> $v {
                let x = add(
                    add(ssig1(w[(t - 2) & 15]), w[(t - 7) & 15]),
                    add(ssig0(w[(t - 15) & 15]), w[(t - 16) & 15]),
                );
                w[t & 15] = x;
                x
            }

            /// Top words (as a little-endian 256-bit integer) of the hashes
            /// of nonces `base .. base + LANES` (one group, for tests).
            #[target_feature(enable = $feat)]
            #[cfg_attr(not(test), allow(dead_code))]
            pub(super) fn top_words(job: &HeaderJob, base: u32, out: &mut [u32; 16]) {
                group(job, &Precomputed::new(job), base, out)
            }

            /// Appends to `out` every nonce of `groups` groups from `start`
            /// whose top word is at most `top`: the job constants are
            /// computed once for the whole range.
            #[target_feature(enable = $feat)]
            pub(super) fn candidates(job: &HeaderJob, start: u32, groups: u32, top: u32, out: &mut Vec<u32>) {
                let pre = Precomputed::new(job);
                let mut tops = [0u32; 16];
                for g in 0..groups {
                    let base = start + g * $lanes;
                    group(job, &pre, base, &mut tops);
                    for (i, &t) in tops[..$lanes].iter().enumerate() {
                        if t <= top {
                            out.push(base + i as u32);
                        }
                    }
                }
            }

            #[inline]
            #[target_feature(enable = $feat)]
            fn group(job: &HeaderJob, pre: &Precomputed, base: u32, out: &mut [u32; 16]) {
                let nonce_be = bswap(add(splat(base), iota()));
                // First hash, second block: rounds 3..64 from the job's
                // state after round 2.
                let mut s = pre.state3.map(|x| splat(x));
                let mut w = [splat(0); 16];
                w[0] = splat(job.tail[0]);
                w[1] = splat(job.tail[1]);
                w[2] = splat(job.tail[2]);
                w[3] = nonce_be;
                w[4] = splat(0x8000_0000);
                w[15] = splat(640);
                round(&mut s, add(nonce_be, splat(K[3])));
                // Rounds 4..15 have constant message words.
                const PAD: [u32; 16] = [0, 0, 0, 0, 0x8000_0000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 640];
                for t in 4..16 {
                    round(&mut s, splat(K[t].wrapping_add(PAD[t])));
                }
                w[0] = splat(pre.w16);
                round(&mut s, splat(K[16].wrapping_add(pre.w16)));
                w[1] = splat(pre.w17);
                round(&mut s, splat(K[17].wrapping_add(pre.w17)));
                for t in 18..64 {
                    let x = sched(&mut w, t);
                    round(&mut s, add(x, splat(K[t])));
                }
                let mid = job.midstate;
                let mut h1 = [splat(0); 8];
                for i in 0..8 {
                    h1[i] = add(s[i], splat(mid[i]));
                }
                // Second hash: W0..7 = first hash, then padding for 256 bits.
                let mut s = IV.map(|x| splat(x));
                let mut w = [splat(0); 16];
                w[..8].copy_from_slice(&h1);
                w[8] = splat(0x8000_0000);
                w[15] = splat(256);
                for t in 0..16 {
                    round(&mut s, add(w[t], splat(K[t])));
                }
                // H7 = IV7 + h after round 63 = IV7 + e after round 60.
                for t in 16..61 {
                    let x = sched(&mut w, t);
                    round(&mut s, add(x, splat(K[t])));
                }
                let h7 = bswap(add(s[4], splat(IV[7])));
                store(h7, out);
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
lane_kernel!(avx512, "avx512f,avx512bw", 16, __m512i, {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        _mm512_ternarylogic_epi32::<0x96>(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ch(e: __m512i, f: __m512i, g: __m512i) -> __m512i {
        _mm512_ternarylogic_epi32::<0xca>(e, f, g)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn maj(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
        _mm512_ternarylogic_epi32::<0xe8>(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn ror<const N: i32>(x: __m512i) -> __m512i {
        _mm512_ror_epi32::<N>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn shr<const N: u32>(x: __m512i) -> __m512i {
        _mm512_srli_epi32::<N>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn splat(x: u32) -> __m512i {
        _mm512_set1_epi32(x as i32)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn iota() -> __m512i {
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn bswap(x: __m512i) -> __m512i {
        let m = _mm512_broadcast_i32x4(_mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12));
        _mm512_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn store(x: __m512i, out: &mut [u32; 16]) {
        // SAFETY: `out` holds 16 u32s; unaligned store.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), x) }
    }
});

#[cfg(target_arch = "x86_64")]
lane_kernel!(avx2, "avx2", 8, __m256i, {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor3(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(a, b), c)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ch(e: __m256i, f: __m256i, g: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_and_si256(e, _mm256_xor_si256(f, g)), g)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn maj(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, _mm256_or_si256(a, b)))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn ror<const N: u32>(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srl_epi32(x, _mm_cvtsi32_si128(N as i32)), _mm256_sll_epi32(x, _mm_cvtsi32_si128(32 - N as i32)))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shr<const N: u32>(x: __m256i) -> __m256i {
        _mm256_srl_epi32(x, _mm_cvtsi32_si128(N as i32))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn splat(x: u32) -> __m256i {
        _mm256_set1_epi32(x as i32)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn iota() -> __m256i {
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bswap(x: __m256i) -> __m256i {
        let m =
            _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
        _mm256_shuffle_epi8(x, m)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(x: __m256i, out: &mut [u32; 16]) {
        // SAFETY: `out` holds at least 8 u32s; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), x) }
    }
});

/// The SHA-extensions kernel: four nonces interleaved.
#[cfg(target_arch = "x86_64")]
mod shani {
    use super::{HeaderJob, IV, K};
    use core::arch::x86_64::*;

    const L: usize = 4;

    /// Packs a state `[a..h]` into the (ABEF, CDGH) registers `sha256rnds2`
    /// works on.
    fn pack(s: &[u32; 8]) -> [__m128i; 2] {
        // SAFETY: SSE2 is part of x86_64.
        unsafe {
            [
                _mm_set_epi32(s[0] as i32, s[1] as i32, s[4] as i32, s[5] as i32),
                _mm_set_epi32(s[2] as i32, s[3] as i32, s[6] as i32, s[7] as i32),
            ]
        }
    }

    fn kv(g: usize) -> __m128i {
        // SAFETY: SSE2 is part of x86_64.
        unsafe { _mm_set_epi32(K[4 * g + 3] as i32, K[4 * g + 2] as i32, K[4 * g + 1] as i32, K[4 * g] as i32) }
    }

    /// W[4g..4g+4] from the four previous groups.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn sched(w: &[__m128i; 16], g: usize) -> __m128i {
        _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32(w[(g - 4) & 15], w[(g - 3) & 15]), _mm_alignr_epi8::<4>(w[(g - 1) & 15], w[(g - 2) & 15])),
            w[(g - 1) & 15],
        )
    }

    /// Job constants, computed once per scanned range.
    struct Setup {
        mid: [__m128i; 2],
        kvs: [__m128i; 16],
        /// ABEF after rounds 0 and 1, which use only W0, W1: the same for
        /// every nonce.
        abef1: __m128i,
        iv2: [__m128i; 2],
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn setup(job: &HeaderJob) -> Setup {
        let mid = pack(&job.midstate);
        let kvs: [__m128i; 16] = core::array::from_fn(kv);
        let w0k_lo = _mm_add_epi32(_mm_set_epi32(0, 0, job.tail[1] as i32, job.tail[0] as i32), kvs[0]);
        let abef1 = _mm_sha256rnds2_epu32(mid[1], mid[0], w0k_lo);
        Setup { mid, kvs, abef1, iv2: pack(&IV) }
    }

    /// Top words of the hashes of nonces `base .. base + 4` (one group,
    /// for tests).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn top_words(job: &HeaderJob, base: u32, out: &mut [u32; 16]) {
        group(job, &setup(job), base, out)
    }

    /// Appends to `out` every nonce of `groups` groups of 4 from `start`
    /// whose top word is at most `top`.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn candidates(job: &HeaderJob, start: u32, groups: u32, top: u32, out: &mut Vec<u32>) {
        let su = setup(job);
        let mut tops = [0u32; 16];
        for g in 0..groups {
            let base = start + g * L as u32;
            group(job, &su, base, &mut tops);
            for (i, &t) in tops[..L].iter().enumerate() {
                if t <= top {
                    out.push(base + i as u32);
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn group(job: &HeaderJob, su: &Setup, base: u32, out: &mut [u32; 16]) {
        let (mid, kvs, abef1) = (su.mid, &su.kvs, su.abef1);

        // First hash, second block.
        let mut w = [[_mm_setzero_si128(); 16]; L];
        let s0 = [abef1; L];
        let mut s1 = [mid[0]; L];
        for l in 0..L {
            let nonce = (base + l as u32).swap_bytes();
            w[l][0] = _mm_set_epi32(nonce as i32, job.tail[2] as i32, job.tail[1] as i32, job.tail[0] as i32);
            w[l][1] = _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32);
            w[l][3] = _mm_set_epi32(640, 0, 0, 0);
            // Rounds 2, 3.
            let m = _mm_shuffle_epi32::<0x0e>(_mm_add_epi32(w[l][0], kvs[0]));
            s1[l] = _mm_sha256rnds2_epu32(s1[l], s0[l], m);
        }
        // After each pair of rounds the registers swap roles; track them as
        // (abef, cdgh) = (s1, s0) here.
        let mut abef = s1;
        let mut cdgh = s0;
        for g in 1..16 {
            for l in 0..L {
                if g >= 4 {
                    w[l][g] = sched(&w[l], g);
                }
                let m = _mm_add_epi32(w[l][g], kvs[g]);
                cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], m);
                abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], _mm_shuffle_epi32::<0x0e>(m));
            }
        }
        // Add the midstate and unpack to W0..3 = (a,b,c,d), W4..7 = (e,f,g,h).
        let iv2 = su.iv2;
        let mut abef2 = [iv2[0]; L];
        let mut cdgh2 = [iv2[1]; L];
        let mut w2 = [[_mm_setzero_si128(); 16]; L];
        for l in 0..L {
            [w2[l][0], w2[l][1]] = unpack(_mm_add_epi32(abef[l], mid[0]), _mm_add_epi32(cdgh[l], mid[1]));
            w2[l][2] = _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32);
            w2[l][3] = _mm_set_epi32(256, 0, 0, 0);
        }
        // Second hash: 62 of the 64 rounds (the last two cannot change H7).
        for g in 0..16 {
            for l in 0..L {
                if g >= 4 {
                    w2[l][g] = sched(&w2[l], g);
                }
                let m = _mm_add_epi32(w2[l][g], kvs[g]);
                cdgh2[l] = _mm_sha256rnds2_epu32(cdgh2[l], abef2[l], m);
                if g < 15 {
                    abef2[l] = _mm_sha256rnds2_epu32(abef2[l], cdgh2[l], _mm_shuffle_epi32::<0x0e>(m));
                }
            }
        }
        // After 62 rounds `cdgh2` holds the new ABEF; f is lane 0, and
        // H7 = IV7 + f.
        for l in 0..L {
            let f = _mm_cvtsi128_si32(cdgh2[l]) as u32;
            out[l] = f.wrapping_add(IV[7]).swap_bytes();
        }
    }

    /// W + K of the padding block of a 64-byte message (`80 00 … 00`,
    /// length 512 bits), all 64 rounds in groups of four.
    fn padding_kw() -> [__m128i; 16] {
        let mut w = [0u32; 64];
        w[0] = 0x8000_0000;
        w[15] = 512;
        for t in 16..64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16].wrapping_add(s0).wrapping_add(w[t - 7]).wrapping_add(s1);
        }
        core::array::from_fn(|g| {
            let k = |i: usize| w[4 * g + i].wrapping_add(K[4 * g + i]) as i32;
            // SAFETY: SSE2 is part of x86_64.
            unsafe { _mm_set_epi32(k(3), k(2), k(1), k(0)) }
        })
    }

    /// 64 rounds over `L` interleaved states from their message words.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds(abef: &mut [__m128i; L], cdgh: &mut [__m128i; L], w: &mut [[__m128i; 16]; L], kvs: &[__m128i; 16]) {
        for g in 0..16 {
            for l in 0..L {
                if g >= 4 {
                    w[l][g] = sched(&w[l], g);
                }
                let m = _mm_add_epi32(w[l][g], kvs[g]);
                cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], m);
                abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], _mm_shuffle_epi32::<0x0e>(m));
            }
        }
    }

    /// (abef, cdgh) → the state words (a, b, c, d), (e, f, g, h) in lane
    /// order.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn unpack(abef: __m128i, cdgh: __m128i) -> [__m128i; 2] {
        let feba = _mm_shuffle_epi32::<0x1b>(abef);
        let dchg = _mm_shuffle_epi32::<0xb1>(cdgh);
        [_mm_blend_epi16::<0xf0>(feba, dchg), _mm_alignr_epi8::<8>(dchg, feba)]
    }

    /// See [`super::sha256d_64`].
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn sha256d_64(messages: &[u8], out: &mut [[u8; 32]]) {
        let kvs: [__m128i; 16] = core::array::from_fn(kv);
        let pad = padding_kw();
        let iv = pack(&IV);
        // Big-endian words: reverse the bytes of each 32-bit lane.
        let bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
        let n = out.len();
        let mut i = 0;
        while i < n {
            let lanes = (n - i).min(L);
            let mut w = [[_mm_setzero_si128(); 16]; L];
            for (l, wl) in w.iter_mut().enumerate() {
                // Short last group: repeat a real message (its result is
                // not stored).
                let m = &messages[64 * (i + l.min(lanes - 1))..][..64];
                for (q, wq) in wl[..4].iter_mut().enumerate() {
                    // SAFETY: `m` has 64 bytes; unaligned loads.
                    let v = unsafe { _mm_loadu_si128(m.as_ptr().add(16 * q).cast()) };
                    *wq = _mm_shuffle_epi8(v, bswap);
                }
            }
            // First hash, block 1: the message.
            let mut abef = [iv[0]; L];
            let mut cdgh = [iv[1]; L];
            rounds(&mut abef, &mut cdgh, &mut w, &kvs);
            for l in 0..L {
                abef[l] = _mm_add_epi32(abef[l], iv[0]);
                cdgh[l] = _mm_add_epi32(cdgh[l], iv[1]);
            }
            // Block 2: padding only, W + K precomputed.
            let (s_abef, s_cdgh) = (abef, cdgh);
            for kw in pad {
                for l in 0..L {
                    cdgh[l] = _mm_sha256rnds2_epu32(cdgh[l], abef[l], kw);
                    abef[l] = _mm_sha256rnds2_epu32(abef[l], cdgh[l], _mm_shuffle_epi32::<0x0e>(kw));
                }
            }
            // Second hash: the 32-byte digest, padded.
            let mut w2 = [[_mm_setzero_si128(); 16]; L];
            for l in 0..L {
                [w2[l][0], w2[l][1]] = unpack(_mm_add_epi32(abef[l], s_abef[l]), _mm_add_epi32(cdgh[l], s_cdgh[l]));
                w2[l][2] = _mm_set_epi32(0, 0, 0, 0x8000_0000u32 as i32);
                w2[l][3] = _mm_set_epi32(256, 0, 0, 0);
            }
            let mut abef2 = [iv[0]; L];
            let mut cdgh2 = [iv[1]; L];
            rounds(&mut abef2, &mut cdgh2, &mut w2, &kvs);
            for l in 0..lanes {
                let [lo, hi] = unpack(_mm_add_epi32(abef2[l], iv[0]), _mm_add_epi32(cdgh2[l], iv[1]));
                let o = &mut out[i + l];
                // SAFETY: `o` has 32 bytes; unaligned stores.
                unsafe {
                    _mm_storeu_si128(o.as_mut_ptr().cast(), _mm_shuffle_epi8(lo, bswap));
                    _mm_storeu_si128(o.as_mut_ptr().add(16).cast(), _mm_shuffle_epi8(hi, bswap));
                }
            }
            i += lanes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_scan(job: &HeaderJob, start: u32, count: u32, target: Target) -> Vec<u32> {
        (start..start + count).filter(|&n| target.is_met_by(&sha256d(&job.header_with_nonce(n)))).collect()
    }

    #[test]
    fn sha256d_64_matches_sha2_for_every_count() {
        let msgs: Vec<u8> = (0..64 * 11).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..=11 {
            let mut out = vec![[0u8; 32]; n];
            sha256d_64(&msgs[..64 * n], &mut out);
            for (k, o) in out.iter().enumerate() {
                assert_eq!(*o, sha256d(&msgs[64 * k..64 * (k + 1)]), "message {k} of {n}");
            }
        }
    }

    #[test]
    fn midstate_hash_matches_plain_sha256d() {
        let mut header = [0u8; 80];
        for (i, b) in header.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let job = HeaderJob::new(&header);
        for nonce in [0u32, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(job.hash(nonce), sha256d(&job.header_with_nonce(nonce)));
        }
    }

    #[test]
    fn every_kernel_finds_exactly_the_reference_nonces() {
        let mut header = [0u8; 80];
        for (i, b) in header.iter_mut().enumerate() {
            *b = (i * 13 + 5) as u8;
        }
        let job = HeaderJob::new(&header);
        // About 1 in 256 hashes meets this target: plenty of hits, and the
        // top-word filter lets many non-hits through to the exact check.
        let target = Target(ethnum::U256::MAX >> 8);
        let (start, count) = (1_000_003, 5_000);
        let want = reference_scan(&job, start, count, target);
        assert!(want.len() > 5, "{}", want.len());
        for kernel in Kernel::available() {
            let mut got = Vec::new();
            scan(&job, start, count, target, kernel, &mut got);
            assert_eq!(got, want, "{kernel:?}");
        }
        // A hard target: the filter itself must pass only what it should.
        let hard = Target(ethnum::U256::MAX >> 20);
        let want = reference_scan(&job, 0, 20_000, hard);
        for kernel in Kernel::available() {
            let mut got = Vec::new();
            scan(&job, 0, 20_000, hard, kernel, &mut got);
            assert_eq!(got, want, "{kernel:?}");
        }
    }

    #[test]
    fn top_words_of_every_kernel_are_exact() {
        let header = [0x5au8; 80];
        let job = HeaderJob::new(&header);
        for kernel in Kernel::available() {
            if kernel == Kernel::Generic {
                continue;
            }
            for base in [0u32, 77, 0xffff_fff0 - 16] {
                let mut tops = [0u32; 16];
                unsafe {
                    match kernel {
                        Kernel::ShaNi => shani::top_words(&job, base, &mut tops),
                        Kernel::Avx512 => avx512::top_words(&job, base, &mut tops),
                        Kernel::Avx2 => avx2::top_words(&job, base, &mut tops),
                        Kernel::Generic => unreachable!(),
                    }
                }
                for i in 0..kernel.lanes() {
                    let want = top_word_of(&job.hash(base + i));
                    assert_eq!(tops[i as usize], want, "{kernel:?} base {base} lane {i}");
                }
            }
        }
    }
}
