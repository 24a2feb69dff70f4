//! scrypt with N = 1024, r = 1, p = 1 and a 32-byte output: Litecoin's
//! proof of work, `scrypt(password = header, salt = header)`.
//!
//! [`scrypt_1024_1_1`] is the `scrypt` crate, one hash at a time: the
//! reference the tests compare against and the benchmark's baseline.
//! [`Scrypt`] hashes many inputs at once, which is what nonce scanning and
//! share verification need. Its ROMix is hand-written because no crate
//! offers a multi-buffer scrypt: Salsa20/8 runs on the rows of the block
//! in the classic SIMD ("diagonal") arrangement, and each 128-bit lane of a
//! vector register carries a different hash: four per AVX-512 register, two
//! per AVX2 register, with several registers' worth in flight so the
//! dependent chain of each Salsa round overlaps with the others. PBKDF2 at
//! either end (about 1 % of the work) stays on `pbkdf2` + `sha2`.

use crate::target::Target;

/// Litecoin's parameters.
pub const N: usize = 1024;

/// The reference: `scrypt(data, data, N=1024, r=1, p=1, 32)` from the
/// `scrypt` crate.
pub fn scrypt_1024_1_1(data: &[u8]) -> [u8; 32] {
    let params = scrypt::Params::new(10, 1, 1).expect("valid scrypt parameters");
    let mut out = [0u8; 32];
    scrypt::scrypt(data, data, &params, &mut out).expect("32-byte output is valid");
    out
}

/// A multi-buffer kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F: `groups` registers of four hashes each.
    Avx512 { groups: usize },
    /// AVX2: `groups` registers of two hashes each.
    Avx2 { groups: usize },
    /// The `scrypt` crate, one hash at a time.
    Generic,
}

impl Kernel {
    /// Kernels this CPU can run, the measured fastest first (BENCHMARKS.md).
    pub fn available() -> Vec<Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                v.extend([3, 2, 4, 1].map(|groups| Kernel::Avx512 { groups }));
            }
            if std::is_x86_feature_detected!("avx2") {
                v.extend([2, 4, 1].map(|groups| Kernel::Avx2 { groups }));
            }
        }
        v.push(Kernel::Generic);
        v
    }

    pub fn best() -> Kernel {
        Kernel::available()[0]
    }

    /// Hashes per batch.
    pub fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 { groups } => 4 * groups,
            Kernel::Avx2 { groups } => 2 * groups,
            Kernel::Generic => 1,
        }
    }

    pub fn name(self) -> String {
        match self {
            Kernel::Avx512 { groups } => format!("avx512x{}", 4 * groups),
            Kernel::Avx2 { groups } => format!("avx2x{}", 2 * groups),
            Kernel::Generic => "generic".into(),
        }
    }
}

/// A multi-buffer hasher with its scratch memory (128 KiB per lane), so
/// batches allocate nothing. One per thread.
pub struct Scrypt {
    kernel: Kernel,
    /// The ROMix table: `N` entries of 128 bytes per lane, as u32 words,
    /// 64-byte aligned through the `Align64` element type.
    v: Vec<Align64>,
    /// Per-lane 32-word blocks in and out of ROMix.
    b: Vec<[u32; 32]>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Align64([u32; 16]);

impl Scrypt {
    /// # Panics
    /// If the kernel is not available on this CPU or has zero groups.
    pub fn new(kernel: Kernel) -> Scrypt {
        assert!(Kernel::available().contains(&kernel), "{kernel:?} is not available on this CPU");
        let lanes = kernel.lanes();
        // 128 bytes = two 64-byte rows per lane per entry.
        let v = if kernel == Kernel::Generic { Vec::new() } else { vec![Align64([0; 16]); N * 2 * lanes] };
        Scrypt { kernel, v, b: vec![[0; 32]; lanes] }
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Hashes per batch; [`Scrypt::hash_many`] takes any number of inputs
    /// but runs in batches of this size.
    pub fn lanes(&self) -> usize {
        self.kernel.lanes()
    }

    /// Hashes every 80-byte header in `inputs` into `out` (same length).
    pub fn hash_many(&mut self, inputs: &[[u8; 80]], out: &mut [[u8; 32]]) {
        assert_eq!(inputs.len(), out.len());
        let lanes = self.lanes();
        for (ins, outs) in inputs.chunks(lanes).zip(out.chunks_mut(lanes)) {
            self.batch(ins, outs);
        }
    }

    /// Hashes `header` with nonces `start .. start + count` (bytes 76..80,
    /// little-endian) and appends every nonce whose hash meets `target`.
    pub fn scan(&mut self, header: &[u8; 80], start: u32, count: u32, target: Target, found: &mut Vec<u32>) {
        assert!(u64::from(start) + u64::from(count) <= 1 << 32, "nonce range passes 2^32");
        let lanes = self.lanes();
        let mut ins = vec![*header; lanes];
        let mut outs = vec![[0u8; 32]; lanes];
        let mut n = 0u32;
        while n < count {
            let k = (count - n).min(lanes as u32) as usize;
            for (i, h) in ins[..k].iter_mut().enumerate() {
                h[76..80].copy_from_slice(&(start + n + i as u32).to_le_bytes());
            }
            self.batch(&ins[..k], &mut outs[..k]);
            for (i, hash) in outs[..k].iter().enumerate() {
                if target.is_met_by(hash) {
                    found.push(start + n + i as u32);
                }
            }
            n += k as u32;
        }
    }

    /// One batch of at most `lanes` inputs (unused lanes hash garbage).
    fn batch(&mut self, ins: &[[u8; 80]], outs: &mut [[u8; 32]]) {
        if self.kernel == Kernel::Generic {
            for (i, o) in ins.iter().zip(outs.iter_mut()) {
                *o = scrypt_1024_1_1(i);
            }
            return;
        }
        for (i, input) in ins.iter().enumerate() {
            let mut bytes = [0u8; 128];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(input, input, 1, &mut bytes);
            for (w, c) in self.b[i].iter_mut().zip(bytes.chunks_exact(4)) {
                *w = u32::from_le_bytes(c.try_into().unwrap());
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` checked the kernel's features; `v` holds
        // N * 2 * lanes rows and `b` holds `lanes` blocks.
        unsafe {
            match self.kernel {
                Kernel::Avx512 { groups: 1 } => avx512::romix::<1>(&mut self.b, &mut self.v),
                Kernel::Avx512 { groups: 2 } => avx512::romix::<2>(&mut self.b, &mut self.v),
                Kernel::Avx512 { groups: 3 } => avx512::romix::<3>(&mut self.b, &mut self.v),
                Kernel::Avx512 { groups: 4 } => avx512::romix::<4>(&mut self.b, &mut self.v),
                Kernel::Avx2 { groups: 1 } => avx2::romix::<1>(&mut self.b, &mut self.v),
                Kernel::Avx2 { groups: 2 } => avx2::romix::<2>(&mut self.b, &mut self.v),
                Kernel::Avx2 { groups: 4 } => avx2::romix::<4>(&mut self.b, &mut self.v),
                k => unreachable!("{k:?} has no instantiation"),
            }
        }
        for (i, (input, out)) in ins.iter().zip(outs.iter_mut()).enumerate() {
            let mut bytes = [0u8; 128];
            for (c, w) in bytes.chunks_exact_mut(4).zip(self.b[i].iter()) {
                c.copy_from_slice(&w.to_le_bytes());
            }
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(input, &bytes, 1, out);
        }
    }
}

/// Where word `x[i]` of a Salsa20 block sits in the SIMD arrangement: row
/// `r` holds `(x[4r], x[4r+5], x[4r+10], x[4r+15])` mod 16, so position `p`
/// holds `x[5p mod 16]` and every column and row step is a whole-register
/// operation plus a lane rotation.
const SHUFFLE: [usize; 16] = {
    let mut s = [0; 16];
    let mut p = 0;
    while p < 16 {
        s[p] = (5 * p) % 16;
        p += 1;
    }
    s
};

/// Salsa20/8 of `G` registers' worth of blocks in `$x: [[V; 4]; G]`, in
/// place: x = x + 4 double rounds(x). A macro rather than a function so it
/// is always inlined into the `#[target_feature]` kernel (a separate
/// function kept the state in memory and ran at half speed).
#[cfg(target_arch = "x86_64")]
macro_rules! salsa8 {
    ($x:ident) => {{
        let input = $x;
        for _ in 0..4 {
            for r in $x.iter_mut() {
                let [mut x0, mut x1, mut x2, mut x3] = *r;
                x1 = xor(x1, rol7(add(x0, x3)));
                x2 = xor(x2, rol9(add(x1, x0)));
                x3 = xor(x3, rol13(add(x2, x1)));
                x0 = xor(x0, rol18(add(x3, x2)));
                *r = [x0, x1, x2, x3];
            }
            for r in $x.iter_mut() {
                let [mut x0, mut x1, mut x2, mut x3] = *r;
                x1 = shuf93(x1);
                x2 = shuf4e(x2);
                x3 = shuf39(x3);
                x3 = xor(x3, rol7(add(x0, x1)));
                x2 = xor(x2, rol9(add(x3, x0)));
                x1 = xor(x1, rol13(add(x2, x3)));
                x0 = xor(x0, rol18(add(x1, x2)));
                *r = [x0, shuf39(x1), shuf4e(x2), shuf93(x3)];
            }
        }
        for (r, i) in $x.iter_mut().zip(input.iter()) {
            for k in 0..4 {
                r[k] = add(r[k], i[k]);
            }
        }
    }};
}

/// BlockMix with r = 1 on `$x: [[V; 8]; G]`: rows 0..4 are B0, rows 4..8
/// are B1.
#[cfg(target_arch = "x86_64")]
macro_rules! blockmix {
    ($x:ident, $g:ident) => {{
        let mut t = [[zero(); 4]; $g];
        for g in 0..$g {
            for k in 0..4 {
                t[g][k] = xor($x[g][k], $x[g][4 + k]);
            }
        }
        salsa8!(t);
        for g in 0..$g {
            for k in 0..4 {
                $x[g][k] = t[g][k];
                t[g][k] = xor(t[g][k], $x[g][4 + k]);
            }
        }
        salsa8!(t);
        for g in 0..$g {
            for k in 0..4 {
                $x[g][4 + k] = t[g][k];
            }
        }
    }};
}

/// ROMix over `LANES_PER_REG * G` blocks, written once over a few vector
/// operations and instantiated per instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! romix_kernel {
    ($modname:ident, $feat:literal, $per_reg:literal, $v:ty, { $($ops:item)* }) => {
        pub(crate) mod $modname {
            use super::{Align64, N, SHUFFLE};
            use core::arch::x86_64::*;
            $($ops)*

            /// ROMix of `b.len() == PER_REG * G` blocks; `v` is the table.
            ///
            /// # Safety
            /// The CPU has the module's features; `v.len() >= N * 2 * b.len()`.
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn romix<const G: usize>(b: &mut [[u32; 32]], v: &mut [Align64]) {
                const P: usize = $per_reg;
                assert!(b.len() >= P * G && v.len() >= N * 2 * P * G);
                // Pack: register (g, k) holds row k of blocks g*P .. g*P+P,
                // one per 128-bit lane, in the SIMD arrangement.
                let mut x: [[$v; 8]; G] = [[zero(); 8]; G];
                for g in 0..G {
                    for k in 0..8 {
                        let mut words = [0u32; 16];
                        for l in 0..P {
                            let blk = &b[g * P + l];
                            let half = (k / 4) * 16;
                            for c in 0..4 {
                                words[4 * l + c] = blk[half + SHUFFLE[(k % 4) * 4 + c]];
                            }
                        }
                        x[g][k] = load_words(&words);
                    }
                }
                // Each table entry is 8 registers per group: G * 8 vectors.
                let vp = v.as_mut_ptr() as *mut $v;
                let entry = G * 8;
                for i in 0..N {
                    for g in 0..G {
                        for k in 0..8 {
                            // SAFETY: i * entry + g * 8 + k < N * G * 8
                            // registers, inside `v` (aligned to 64 bytes).
                            unsafe { vp.add(i * entry + g * 8 + k).write(x[g][k]) };
                        }
                    }
                    blockmix!(x, G);
                }
                for _ in 0..N {
                    for g in 0..G {
                        let js = lane_indices(x[g][4]);
                        for k in 0..8 {
                            let mut ptrs = [core::ptr::null::<u32>(); P];
                            for l in 0..P {
                                let j = js[l] as usize & (N - 1);
                                // SAFETY: as above, j < N.
                                ptrs[l] = unsafe { vp.add(j * entry + g * 8 + k) } as *const u32;
                            }
                            // SAFETY: each pointer is a whole register inside `v`.
                            x[g][k] = xor(x[g][k], unsafe { gather_lanes(&ptrs) });
                        }
                    }
                    blockmix!(x, G);
                }
                for g in 0..G {
                    for k in 0..8 {
                        let words = store_words(x[g][k]);
                        for l in 0..P {
                            let blk = &mut b[g * P + l];
                            let half = (k / 4) * 16;
                            for c in 0..4 {
                                blk[half + SHUFFLE[(k % 4) * 4 + c]] = words[4 * l + c];
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
romix_kernel!(avx512, "avx512f", 4, __m512i, {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn xor(a: __m512i, b: __m512i) -> __m512i {
        _mm512_xor_si512(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol7(x: __m512i) -> __m512i {
        _mm512_rol_epi32::<7>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol9(x: __m512i) -> __m512i {
        _mm512_rol_epi32::<9>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol13(x: __m512i) -> __m512i {
        _mm512_rol_epi32::<13>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn rol18(x: __m512i) -> __m512i {
        _mm512_rol_epi32::<18>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn shuf93(x: __m512i) -> __m512i {
        _mm512_shuffle_epi32::<0x93>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn shuf4e(x: __m512i) -> __m512i {
        _mm512_shuffle_epi32::<0x4e>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn shuf39(x: __m512i) -> __m512i {
        _mm512_shuffle_epi32::<0x39>(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_words(w: &[u32; 16]) -> __m512i {
        // SAFETY: 16 u32s, unaligned load.
        unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store_words(x: __m512i) -> [u32; 16] {
        let mut w = [0u32; 16];
        // SAFETY: 16 u32s, unaligned store.
        unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), x) };
        w
    }
    /// Word 0 of each 128-bit lane (Integerify of each block).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lane_indices(x: __m512i) -> [u32; 4] {
        let w = store_words(x);
        [w[0], w[4], w[8], w[12]]
    }
    /// Lane l from the register at `ptrs[l]`.
    ///
    /// # Safety
    /// Each pointer addresses 64 readable bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather_lanes(ptrs: &[*const u32; 4]) -> __m512i {
        unsafe {
            let mut t = _mm512_setzero_si512();
            t = _mm512_mask_loadu_epi32(t, 0x000f, ptrs[0].cast());
            t = _mm512_mask_loadu_epi32(t, 0x00f0, ptrs[1].cast());
            t = _mm512_mask_loadu_epi32(t, 0x0f00, ptrs[2].cast());
            _mm512_mask_loadu_epi32(t, 0xf000, ptrs[3].cast())
        }
    }
});

#[cfg(target_arch = "x86_64")]
romix_kernel!(avx2, "avx2", 2, __m256i, {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<7>(x), _mm256_srli_epi32::<25>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol9(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<9>(x), _mm256_srli_epi32::<23>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol13(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<13>(x), _mm256_srli_epi32::<19>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn rol18(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<18>(x), _mm256_srli_epi32::<14>(x))
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shuf93(x: __m256i) -> __m256i {
        _mm256_shuffle_epi32::<0x93>(x)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shuf4e(x: __m256i) -> __m256i {
        _mm256_shuffle_epi32::<0x4e>(x)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shuf39(x: __m256i) -> __m256i {
        _mm256_shuffle_epi32::<0x39>(x)
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn load_words(w: &[u32; 16]) -> __m256i {
        // SAFETY: at least 8 u32s, unaligned load.
        unsafe { _mm256_loadu_si256(w.as_ptr().cast()) }
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn store_words(x: __m256i) -> [u32; 16] {
        let mut w = [0u32; 16];
        // SAFETY: at least 8 u32s, unaligned store.
        unsafe { _mm256_storeu_si256(w.as_mut_ptr().cast(), x) };
        w
    }
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lane_indices(x: __m256i) -> [u32; 2] {
        [_mm256_extract_epi32::<0>(x) as u32, _mm256_extract_epi32::<4>(x) as u32]
    }
    /// # Safety
    /// Each pointer addresses 32 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn gather_lanes(ptrs: &[*const u32; 2]) -> __m256i {
        unsafe { _mm256_loadu2_m128i(ptrs[1].add(4).cast(), ptrs[0].cast()) }
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_kernel_matches_the_scrypt_crate_on_random_inputs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for kernel in Kernel::available() {
            let mut s = Scrypt::new(kernel);
            // Not a multiple of the lane count, so the last batch is partial.
            let n = s.lanes() * 2 + 1;
            let inputs: Vec<[u8; 80]> = (0..n).map(|_| rng.random()).collect();
            let mut out = vec![[0u8; 32]; n];
            s.hash_many(&inputs, &mut out);
            for (i, o) in inputs.iter().zip(&out) {
                assert_eq!(*o, scrypt_1024_1_1(i), "{kernel:?}");
            }
        }
    }

    #[test]
    fn scan_finds_exactly_the_reference_nonces() {
        let header = [0x33u8; 80];
        let target = Target(ethnum::U256::MAX >> 5);
        let want: Vec<u32> = (100u32..260)
            .filter(|&n| {
                let mut h = header;
                h[76..80].copy_from_slice(&n.to_le_bytes());
                target.is_met_by(&scrypt_1024_1_1(&h))
            })
            .collect();
        assert!(!want.is_empty());
        for kernel in Kernel::available() {
            let mut found = Vec::new();
            Scrypt::new(kernel).scan(&header, 100, 160, target, &mut found);
            assert_eq!(found, want, "{kernel:?}");
        }
    }
}
