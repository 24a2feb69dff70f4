//! RandomX (rx/0, Monero) through RandomX's own C library.
//!
//! `randomx-rs` builds and links the library (with `cmake`); its safe types
//! are not `Send` and it initialises the 2 GiB dataset on one thread, so the
//! types here call RandomX's C API directly (declared below, linked from the
//! library `randomx-rs` builds): a cache and a dataset are shared read-only
//! by any number of threads, each thread owns its VM, the dataset is
//! initialised on all cores, and nonce scanning uses RandomX's pipelined
//! `randomx_calculate_hash_first/next`.
//!
//! [`Epochs`] keeps the cache (light mode) or dataset (fast mode) of the
//! current and the next seed, so a seed change costs no stall when the next
//! seed was announced (Monero announces it 64 blocks ahead).

use crate::target::Target;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

// Keeps `randomx-rs` (and so the static library it builds) linked.
use randomx_rs as _;

mod ffi {
    use std::ffi::{c_uint, c_ulong, c_void};
    #[repr(C)]
    pub struct randomx_cache {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct randomx_dataset {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct randomx_vm {
        _private: [u8; 0],
    }
    unsafe extern "C" {
        pub fn randomx_get_flags() -> c_uint;
        pub fn randomx_alloc_cache(flags: c_uint) -> *mut randomx_cache;
        pub fn randomx_init_cache(cache: *mut randomx_cache, key: *const c_void, key_size: usize);
        pub fn randomx_release_cache(cache: *mut randomx_cache);
        pub fn randomx_alloc_dataset(flags: c_uint) -> *mut randomx_dataset;
        pub fn randomx_dataset_item_count() -> c_ulong;
        pub fn randomx_init_dataset(dataset: *mut randomx_dataset, cache: *mut randomx_cache, start_item: c_ulong, item_count: c_ulong);
        pub fn randomx_release_dataset(dataset: *mut randomx_dataset);
        pub fn randomx_get_dataset_memory(dataset: *mut randomx_dataset) -> *mut c_void;
        pub fn randomx_create_vm(flags: c_uint, cache: *mut randomx_cache, dataset: *mut randomx_dataset) -> *mut randomx_vm;
        pub fn randomx_destroy_vm(machine: *mut randomx_vm);
        pub fn randomx_calculate_hash(machine: *mut randomx_vm, input: *const c_void, input_size: usize, output: *mut c_void);
        pub fn randomx_calculate_hash_first(machine: *mut randomx_vm, input: *const c_void, input_size: usize);
        pub fn randomx_calculate_hash_next(
            machine: *mut randomx_vm,
            input_next: *const c_void,
            input_size_next: usize,
            output: *mut c_void,
        );
        pub fn randomx_calculate_hash_last(machine: *mut randomx_vm, output: *mut c_void);
    }
}

/// RandomX flags (randomx.h).
pub mod flags {
    pub const LARGE_PAGES: u32 = 1;
    pub const HARD_AES: u32 = 2;
    pub const FULL_MEM: u32 = 4;
    pub const JIT: u32 = 8;
    pub const SECURE: u32 = 16;
}

#[derive(Debug, thiserror::Error)]
pub enum RandomxError {
    #[error("RandomX could not allocate {0} (out of memory?)")]
    Alloc(&'static str),
    #[error("no cache or dataset for seed {0}: it was not announced or was evicted")]
    UnknownSeed(String),
}

/// Light mode (256 MiB cache, about 10x slower hashing, for verification on
/// small hosts and for tests) or fast mode (2 GiB dataset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Light,
    Fast,
}

/// The flags RandomX recommends for this CPU (JIT, hardware AES, Argon2
/// SIMD), without large pages.
pub fn recommended_flags() -> u32 {
    // SAFETY: no arguments; reads CPUID.
    unsafe { ffi::randomx_get_flags() }
}

/// Whether this host has huge pages reserved (`vm.nr_hugepages`).
pub fn huge_pages_reserved() -> bool {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages").ok().and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
}

/// 2 MiB pages that hold one dataset and one cache (2,080 + 256 MiB), with
/// a few to spare for VM scratchpads.
pub const HUGE_PAGES_FOR_FAST_MODE: u64 = 1280;

/// Makes sure at least `pages` huge pages are reserved (`vm.nr_hugepages`),
/// as dedicated RandomX miners do when run as root. Returns the previous
/// value so a caller can restore it, or an error (not root, or the kernel
/// could not find the memory: it reserves what it can, and the count read
/// back is reported).
pub fn reserve_huge_pages(pages: u64) -> std::io::Result<u64> {
    const PATH: &str = "/proc/sys/vm/nr_hugepages";
    let before: u64 = std::fs::read_to_string(PATH)?.trim().parse().unwrap_or(0);
    if before >= pages {
        return Ok(before);
    }
    std::fs::write(PATH, pages.to_string())?;
    let now: u64 = std::fs::read_to_string(PATH)?.trim().parse().unwrap_or(0);
    if now < pages {
        return Err(std::io::Error::other(format!("asked for {pages} huge pages, the kernel reserved {now}")));
    }
    Ok(before)
}

/// A RandomX cache for one key (seed hash). Read-only once initialised.
pub struct Cache {
    ptr: *mut ffi::randomx_cache,
    flags: u32,
    key: Vec<u8>,
}

// SAFETY: RandomX's cache is read-only after `randomx_init_cache`; its
// documentation allows one cache to back VMs on many threads.
unsafe impl Send for Cache {}
unsafe impl Sync for Cache {}

impl Cache {
    /// Allocates and initialises the cache for `key` (about 0.3 s), with
    /// large pages when `flags` asks and the host has them.
    pub fn new(key: &[u8], flags: u32) -> Result<Arc<Cache>, RandomxError> {
        let (ptr, flags) = alloc_with_fallback("cache", flags, |f| {
            // SAFETY: plain allocation call.
            unsafe { ffi::randomx_alloc_cache(f) }
        })?;
        if flags & flags::LARGE_PAGES == 0 {
            advise_cache_huge_pages(ptr);
        }
        // SAFETY: `ptr` is a fresh cache; `key` is valid for its length.
        unsafe { ffi::randomx_init_cache(ptr, key.as_ptr().cast(), key.len()) };
        Ok(Arc::new(Cache { ptr, flags, key: key.to_vec() }))
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: allocated by randomx_alloc_cache; no VM outlives it (VMs
        // hold an Arc).
        unsafe { ffi::randomx_release_cache(self.ptr) }
    }
}

/// A RandomX dataset (2 GiB), initialised from a cache on several threads.
pub struct Dataset {
    ptr: *mut ffi::randomx_dataset,
    flags: u32,
    cache: Arc<Cache>,
}

// SAFETY: read-only after initialisation, shared by VMs on many threads
// (RandomX's documented use).
unsafe impl Send for Dataset {}
unsafe impl Sync for Dataset {}

impl Dataset {
    /// Allocates the dataset and fills it from `cache` on `threads` threads
    /// (each computes a contiguous range of items). Returns it and the
    /// seconds the initialisation took.
    pub fn new(cache: Arc<Cache>, threads: usize, flags: u32) -> Result<(Arc<Dataset>, f64), RandomxError> {
        let (ptr, flags) = alloc_with_fallback("dataset", flags | flags::FULL_MEM, |f| {
            // SAFETY: plain allocation call.
            unsafe { ffi::randomx_alloc_dataset(f) }
        })?;
        let t0 = Instant::now();
        if flags & flags::LARGE_PAGES == 0 {
            advise_huge_pages(ptr);
        }
        // SAFETY: no arguments.
        let items = unsafe { ffi::randomx_dataset_item_count() } as u64;
        let threads = threads.max(1) as u64;
        let per = items.div_ceil(threads);
        struct Ptrs(*mut ffi::randomx_dataset, *mut ffi::randomx_cache);
        // SAFETY: each thread writes a disjoint range of items.
        unsafe impl Sync for Ptrs {}
        let ptrs = Ptrs(ptr, cache.ptr);
        std::thread::scope(|s| {
            for t in 0..threads {
                let start = t * per;
                let count = per.min(items.saturating_sub(start));
                let ptrs = &ptrs;
                if count > 0 {
                    s.spawn(move || {
                        // Threads inherit the caller's CPU affinity; a
                        // caller pinned to one core would otherwise build
                        // the dataset on that core alone.
                        allow_all_cpus();
                        // SAFETY: disjoint item range of a live dataset; the
                        // cache is initialised and read-only.
                        unsafe { ffi::randomx_init_dataset(ptrs.0, ptrs.1, start as _, count as _) }
                    });
                }
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        Ok((Arc::new(Dataset { ptr, flags, cache }), secs))
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Whether the dataset sits in reserved huge pages (`LARGE_PAGES`
    /// asked for and granted).
    pub fn uses_large_pages(&self) -> bool {
        self.flags & flags::LARGE_PAGES != 0
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: allocated by randomx_alloc_dataset; VMs hold an Arc.
        unsafe { ffi::randomx_release_dataset(self.ptr) }
    }
}

/// Asks the kernel to back the (not yet touched) dataset with transparent
/// huge pages: no root reservation needed where THP is `madvise` or
/// `always`. Fewer TLB misses make fast-mode hashing faster
/// and the dataset's first touch cheaper. A refusal is harmless.
fn advise_huge_pages(dataset: *mut ffi::randomx_dataset) {
    // SAFETY: a live dataset; the call only returns its buffer.
    let mem = unsafe { ffi::randomx_get_dataset_memory(dataset) } as usize;
    // SAFETY: no arguments.
    let len = unsafe { ffi::randomx_dataset_item_count() } as usize * randomx_rs::RANDOMX_DATASET_ITEM_SIZE;
    if !advise_range(mem, len) {
        tracing::info!("RandomX dataset: transparent huge pages not available; using 4 KiB pages");
    }
}

/// `madvise(MADV_HUGEPAGE)` on the whole pages inside `[mem, mem + len)`.
fn advise_range(mem: usize, len: usize) -> bool {
    let page = 4096;
    let start = mem.next_multiple_of(page);
    let end = (mem + len) & !(page - 1);
    if end <= start {
        return false;
    }
    // SAFETY: the range lies inside one live allocation of RandomX's;
    // MADV_HUGEPAGE changes only how it is backed, never its contents.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
}

/// The cache's 256 MiB, the same advice as the dataset's. Every dataset
/// item reads it at random, so its TLB misses slow the dataset build and
/// light-mode hashing.
///
/// RandomX's API does not expose the cache memory; `struct randomx_cache`
/// (RandomX `src/dataset.hpp`, the version `randomx-rs` pins) begins with
/// `uint8_t* memory`, allocated by `randomx_alloc_cache` and untouched until
/// `randomx_init_cache`. The pointer is used only if it looks like that
/// allocation (non-null, page-aligned as RandomX's allocators return it).
fn advise_cache_huge_pages(cache: *mut ffi::randomx_cache) {
    const CACHE_SIZE: usize = 256 << 20;
    // SAFETY: `cache` is a live randomx_cache whose first field is a pointer.
    let mem = unsafe { *(cache as *const usize) };
    if mem == 0 || mem % 64 != 0 {
        return;
    }
    advise_range(mem, CACHE_SIZE);
}

/// Lets the calling thread run on every online CPU.
fn allow_all_cpus() {
    // SAFETY: sysconf has no preconditions; the cpu_set_t is ours and
    // CPU_SET stays within its size (checked against CPU_SETSIZE).
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..n.min(libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Allocates with large pages when asked and possible, otherwise without,
/// saying so once in the log.
fn alloc_with_fallback<T>(what: &'static str, flags: u32, alloc: impl Fn(u32) -> *mut T) -> Result<(*mut T, u32), RandomxError> {
    if flags & flags::LARGE_PAGES != 0 {
        let p = alloc(flags);
        if !p.is_null() {
            return Ok((p, flags));
        }
        tracing::warn!(
            "RandomX {what}: large pages requested but not available \
             (reserve them as root: sysctl vm.nr_hugepages=1280); using normal pages, \
             which hash about 20 % slower"
        );
    }
    let f = flags & !flags::LARGE_PAGES;
    let p = alloc(f);
    if p.is_null() {
        return Err(RandomxError::Alloc(what));
    }
    Ok((p, f))
}

/// A RandomX virtual machine: one per thread, over a cache or a dataset.
pub struct Vm {
    ptr: *mut ffi::randomx_vm,
    _cache: Option<Arc<Cache>>,
    _dataset: Option<Arc<Dataset>>,
    key: Vec<u8>,
}

// SAFETY: a VM may move between threads; it is not Sync (one user at a time,
// enforced by &mut self on every hashing method).
unsafe impl Send for Vm {}

impl Vm {
    /// A light-mode VM over `cache`.
    pub fn light(cache: Arc<Cache>) -> Result<Vm, RandomxError> {
        let f = cache.flags & !flags::FULL_MEM;
        // SAFETY: a live cache; no dataset in light mode.
        let ptr = unsafe { ffi::randomx_create_vm(f, cache.ptr, std::ptr::null_mut()) };
        if ptr.is_null() {
            return Err(RandomxError::Alloc("vm"));
        }
        Ok(Vm { ptr, key: cache.key.clone(), _cache: Some(cache), _dataset: None })
    }

    /// A fast-mode VM over `dataset`.
    pub fn fast(dataset: Arc<Dataset>) -> Result<Vm, RandomxError> {
        let f = dataset.flags | flags::FULL_MEM;
        // SAFETY: a live dataset; no cache needed in fast mode.
        let ptr = unsafe { ffi::randomx_create_vm(f, std::ptr::null_mut(), dataset.ptr) };
        if ptr.is_null() {
            return Err(RandomxError::Alloc("vm"));
        }
        Ok(Vm { ptr, key: dataset.cache.key.clone(), _cache: None, _dataset: Some(dataset) })
    }

    /// The key (seed hash) this VM hashes under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The RandomX hash of `input`.
    pub fn hash(&mut self, input: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: live VM; input and output valid for their sizes.
        unsafe { ffi::randomx_calculate_hash(self.ptr, input.as_ptr().cast(), input.len(), out.as_mut_ptr().cast()) };
        out
    }

    /// Hashes `blob` with nonces `start .. start + count` written
    /// little-endian at `nonce_offset` (39 in Monero hashing blobs) and
    /// appends every nonce whose hash meets `target`. Pipelined: RandomX
    /// begins the next hash while finishing the current one.
    pub fn scan(&mut self, blob: &[u8], nonce_offset: usize, start: u32, count: u32, target: Target, found: &mut Vec<u32>) {
        assert!(nonce_offset + 4 <= blob.len(), "nonce outside the blob");
        assert!(u64::from(start) + u64::from(count) <= 1 << 32, "nonce range passes 2^32");
        if count == 0 {
            return;
        }
        let mut input = blob.to_vec();
        let mut out = [0u8; 32];
        let put = |buf: &mut [u8], n: u32| buf[nonce_offset..nonce_offset + 4].copy_from_slice(&n.to_le_bytes());
        put(&mut input, start);
        // SAFETY: live VM; RandomX copies the input before returning.
        unsafe { ffi::randomx_calculate_hash_first(self.ptr, input.as_ptr().cast(), input.len()) };
        for i in 1..count {
            put(&mut input, start + i);
            // SAFETY: as above; `out` receives the previous input's hash.
            unsafe { ffi::randomx_calculate_hash_next(self.ptr, input.as_ptr().cast(), input.len(), out.as_mut_ptr().cast()) };
            if target.is_met_by(&out) {
                found.push(start + i - 1);
            }
        }
        // SAFETY: finishes the pipeline started above.
        unsafe { ffi::randomx_calculate_hash_last(self.ptr, out.as_mut_ptr().cast()) };
        if target.is_met_by(&out) {
            found.push(start + count - 1);
        }
    }

    /// RandomX's own pipelined loop as a bare miner runs it: the nonce
    /// bytes written straight into the input, no target checks, no results
    /// kept. The benchmark's reference for what [`Vm::scan`] adds. (The
    /// nonce must vary: hashing one input over and over keeps its dataset
    /// reads in the CPU caches and runs about twice as fast as real work.)
    pub fn raw_hash_loop(&mut self, blob: &mut [u8], nonce_offset: usize, start: u32, count: u32) -> u8 {
        let mut out = [0u8; 32];
        let mut acc = 0u8;
        let at = nonce_offset;
        blob[at..at + 4].copy_from_slice(&start.to_le_bytes());
        // SAFETY: live VM; inputs valid; the pipeline is finished below.
        unsafe {
            ffi::randomx_calculate_hash_first(self.ptr, blob.as_ptr().cast(), blob.len());
            for i in 1..count {
                blob[at..at + 4].copy_from_slice(&start.wrapping_add(i).to_le_bytes());
                ffi::randomx_calculate_hash_next(self.ptr, blob.as_ptr().cast(), blob.len(), out.as_mut_ptr().cast());
                acc ^= out[31];
            }
            ffi::randomx_calculate_hash_last(self.ptr, out.as_mut_ptr().cast());
        }
        acc ^ out[31]
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: created by randomx_create_vm; its cache/dataset outlive it.
        unsafe { ffi::randomx_destroy_vm(self.ptr) }
    }
}

/// What an epoch has ready.
#[derive(Clone)]
enum Ready {
    Light(Arc<Cache>),
    Fast(Arc<Dataset>),
}

struct Slot {
    seed: Vec<u8>,
    ready: Option<Ready>,
}

/// The caches or datasets of the current and next seeds.
///
/// `prepare(seed)` starts building in the background and returns at once;
/// `vm(seed)` waits for that seed's build (normally long finished) and makes
/// a VM. At most two seeds are kept: announcing a third drops the oldest
/// (VMs still using it keep it alive until they are dropped).
pub struct Epochs {
    mode: Mode,
    flags: u32,
    init_threads: usize,
    state: Arc<(Mutex<VecDeque<Slot>>, Condvar)>,
}

impl Epochs {
    /// `flags` are RandomX flags (usually [`recommended_flags`], plus
    /// [`flags::LARGE_PAGES`] to try huge pages); `init_threads` builds
    /// datasets.
    pub fn new(mode: Mode, flags: u32, init_threads: usize) -> Epochs {
        Epochs { mode, flags, init_threads, state: Arc::new((Mutex::new(VecDeque::new()), Condvar::new())) }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts building `seed` in the background unless it is kept already.
    pub fn prepare(&self, seed: &[u8]) {
        let (lock, _) = &*self.state;
        let mut slots = lock.lock().unwrap();
        if slots.iter().any(|s| s.seed == seed) {
            return;
        }
        if slots.len() == 2 {
            slots.pop_front();
        }
        slots.push_back(Slot { seed: seed.to_vec(), ready: None });
        drop(slots);
        let state = self.state.clone();
        let (mode, flags, threads, seed) = (self.mode, self.flags, self.init_threads, seed.to_vec());
        std::thread::Builder::new()
            .name("randomx-init".into())
            .spawn(move || {
                let t0 = Instant::now();
                let built = Cache::new(&seed, flags).and_then(|cache| match mode {
                    Mode::Light => Ok(Ready::Light(cache)),
                    Mode::Fast => Dataset::new(cache, threads, flags).map(|(d, _)| Ready::Fast(d)),
                });
                let (lock, cv) = &*state;
                let mut slots = lock.lock().unwrap();
                match built {
                    Ok(r) => {
                        if let Some(s) = slots.iter_mut().find(|s| s.seed == seed) {
                            s.ready = Some(r);
                        }
                        tracing::info!(
                            mode = ?mode,
                            seconds = t0.elapsed().as_secs_f64(),
                            "RandomX seed {} ready",
                            hex_short(&seed)
                        );
                    }
                    Err(e) => {
                        tracing::error!("RandomX seed {}: {e}", hex_short(&seed));
                        slots.retain(|s| s.seed != seed);
                    }
                }
                cv.notify_all();
            })
            .expect("spawn randomx-init");
    }

    /// Whether `seed` is built.
    pub fn is_ready(&self, seed: &[u8]) -> bool {
        let slots = self.state.0.lock().unwrap();
        slots.iter().any(|s| s.seed == seed && s.ready.is_some())
    }

    /// A VM for `seed`, waiting for its build if it is still running.
    pub fn vm(&self, seed: &[u8]) -> Result<Vm, RandomxError> {
        let (lock, cv) = &*self.state;
        let mut slots = lock.lock().unwrap();
        loop {
            match slots.iter().find(|s| s.seed == seed) {
                None => return Err(RandomxError::UnknownSeed(hex_short(seed))),
                Some(Slot { ready: Some(r), .. }) => {
                    let r = r.clone();
                    drop(slots);
                    return match r {
                        Ready::Light(c) => Vm::light(c),
                        Ready::Fast(d) => Vm::fast(d),
                    };
                }
                Some(_) => slots = cv.wait(slots).unwrap(),
            }
        }
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect::<String>() + "…"
}

/// Hashes `input` once under `key` in light mode (building a cache: about
/// 0.3 s). For tests and tools; long-running code keeps an [`Epochs`].
pub fn hash_light(key: &[u8], input: &[u8]) -> Result<[u8; 32], RandomxError> {
    let cache = Cache::new(key, recommended_flags())?;
    Ok(Vm::light(cache)?.hash(input))
}
