//! The storage layer under the journal: named files mapped into memory, and
//! the syncs that make them durable.
//!
//! [`FileStorage`] is the real one (a directory, `fallocate`, `mmap`,
//! `msync`). [`SimStorage`] keeps every file in memory twice, as the page
//! cache the journal writes and as the "disk" that only syncs update, so a
//! test can cut power at any instant and reopen what a real disk could hold.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A mapped file.
pub trait Region: Send + Sync {
    /// Start of the mapping. Valid for `len()` bytes while the region lives.
    fn ptr(&self) -> *mut u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes `bytes` at `offset` through the file (pwrite), never through
    /// the mapping: the journal keeps no writable mapping of its files, so
    /// writeback never has to write-protect pages (which costs a TLB
    /// shootdown per page on every other core running the process).
    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()>;
    /// Makes bytes `offset..offset+len` durable.
    fn sync(&self, offset: usize, len: usize) -> io::Result<()>;
}

/// A directory of named files, as the journal sees it.
pub trait Storage: Send + Sync {
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` with `len` bytes allocated on the medium, zero-filled,
    /// synced, and mapped read-write. A full disk fails here, never later
    /// on a write through the mapping.
    fn create(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>>;
    /// [`Storage::create`], calling `pause` between the pieces of long work
    /// (a background caller sleeps there, leaving the core to others).
    fn create_with(&self, name: &str, len: usize, pause: &mut dyn FnMut()) -> io::Result<Arc<dyn Region>> {
        let _ = pause;
        self.create(name, len)
    }
    /// Maps an existing file.
    fn open(&self, name: &str, writable: bool) -> io::Result<Arc<dyn Region>>;
    /// Opens or creates a small file that is only shared memory between
    /// processes (the control block); its contents need no durability.
    fn shared_memory(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes the single-writer lock; held until the returned guard drops.
    fn lock_writer(&self) -> io::Result<Box<dyn Send + Sync>>;
    /// Where this storage lives, for messages.
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------
// Real files

/// A directory on a real file system.
#[derive(Debug, Clone)]
pub struct FileStorage {
    dir: PathBuf,
    /// Write zeros at creation, so later writes and syncs overwrite
    /// already-written extents instead of converting unwritten ones.
    prefault: bool,
}

impl FileStorage {
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FileStorage { dir, prefault: true })
    }

    /// Opens a directory that must exist, without creating anything.
    pub fn existing(dir: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} is not a directory", dir.display())));
        }
        Ok(FileStorage { dir, prefault: true })
    }

    pub fn with_prefault(mut self, prefault: bool) -> FileStorage {
        self.prefault = prefault;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

struct FileRegion {
    map: memmap2::MmapRaw,
    file: File,
}

impl Region for FileRegion {
    fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + bytes.len() > self.map.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write past the end of a segment"));
        }
        self.file.write_all_at(bytes, offset as u64)
    }
    fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
        // msync(MS_SYNC) on a shared mapping is fsync of the file range
        // (datasync semantics), whether or not the mapping is writable.
        self.map.flush_range(offset, len)
    }
}

fn fallocate(file: &File, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an owned descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn create(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>> {
        self.create_with(name, len, &mut || {})
    }

    fn create_with(&self, name: &str, len: usize, pause: &mut dyn FnMut()) -> io::Result<Arc<dyn Region>> {
        let path = self.path(name);
        let mut file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&path)?;
        let result = (|| {
            fallocate(&file, len)?;
            if self.prefault {
                // Written extents: later overwrites and their syncs touch no
                // allocation metadata.
                let zeros = vec![0u8; 1 << 20];
                let mut left = len;
                while left > 0 {
                    let n = left.min(zeros.len());
                    file.write_all(&zeros[..n])?;
                    left -= n;
                    if left > 0 {
                        pause();
                    }
                }
            }
            file.sync_all()?;
            let map = memmap2::MmapOptions::new().len(len).map_raw_read_only(&file)?;
            Ok(Arc::new(FileRegion { map, file }) as Arc<dyn Region>)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&path);
        }
        result
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<Arc<dyn Region>> {
        let file = OpenOptions::new().read(true).write(writable).open(self.path(name))?;
        let map = memmap2::MmapOptions::new().map_raw_read_only(&file)?;
        Ok(Arc::new(FileRegion { map, file }))
    }

    fn shared_memory(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o644).open(self.path(name))?;
        if file.metadata()?.len() < len as u64 {
            file.set_len(len as u64)?;
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Arc::new(FileRegion { map, file }))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn lock_writer(&self) -> io::Result<Box<dyn Send + Sync>> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(self.path("journal.lock"))?;
        // SAFETY: plain syscall on an owned descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(io::ErrorKind::WouldBlock, format!("{} already has a writer ({e})", self.dir.display())));
        }
        Ok(Box::new(file))
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

// ---------------------------------------------------------------------------
// Simulated power loss

/// A heap buffer with a stable address, shared by the journal (through raw
/// pointers, like a mapping) and the simulator.
struct Buf {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the buffer is plain memory; concurrent access follows the same
// rules as a shared file mapping (the journal's publication protocol).
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    const ALIGN: usize = 4096;

    fn zeroed(len: usize) -> Buf {
        let layout = std::alloc::Layout::from_size_align(len.max(1), Self::ALIGN).expect("layout");
        // SAFETY: non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Buf { ptr, len }
    }
    fn from_slice(v: &[u8]) -> Buf {
        let b = Buf::zeroed(v.len());
        // SAFETY: fresh allocation of the same length.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), b.ptr, v.len()) };
        b
    }
    fn copy_out(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: in bounds; a racing writer may change bytes being copied,
        // exactly as a page written back mid-update would.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), v.as_mut_ptr(), len) };
        v
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), Self::ALIGN).expect("layout");
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

struct SimFile {
    cache: Arc<Buf>,
    disk: Vec<u8>,
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<u64, SimFile>,
    next_id: u64,
    /// The directory as processes see it.
    names: BTreeMap<String, u64>,
    /// The directory as the disk holds it (updated by `sync_dir`).
    durable_names: BTreeMap<String, u64>,
    /// Fails every `create` with ENOSPC while set.
    disk_full: bool,
    /// Fails every sync with EIO while set.
    fail_syncs: bool,
}

/// In-memory storage with explicit page cache and disk, for power-loss tests.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

struct SimRegion {
    id: u64,
    cache: Arc<Buf>,
    state: Arc<Mutex<SimState>>,
}

impl Region for SimRegion {
    fn ptr(&self) -> *mut u8 {
        self.cache.ptr
    }
    fn len(&self) -> usize {
        self.cache.len
    }
    fn write_at(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        if offset + bytes.len() > self.cache.len {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write past the end of a segment"));
        }
        // SAFETY: in bounds; the cache is plain memory shared like a page cache.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.cache.ptr.add(offset), bytes.len()) };
        Ok(())
    }
    fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
        let end = (offset + len).min(self.cache.len);
        let bytes = self.cache.copy_out(offset, end - offset);
        let mut st = self.state.lock().expect("sim lock");
        if st.fail_syncs {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some(f) = st.files.get_mut(&self.id) {
            f.disk[offset..end].copy_from_slice(&bytes);
        }
        Ok(())
    }
}

/// How unsynced pages fare when the power goes.
#[derive(Debug, Clone, Copy)]
pub struct PowerLoss {
    /// Seed for the choices below.
    pub seed: u64,
    /// Each unsynced page is independently lost, written back whole, or
    /// torn at 512-byte sector granularity.
    pub tear: bool,
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Makes every later `create` fail with ENOSPC (or succeed again).
    pub fn set_disk_full(&self, full: bool) {
        self.state.lock().expect("sim lock").disk_full = full;
    }

    /// Makes every later sync fail with EIO (or succeed again).
    pub fn set_fail_syncs(&self, fail: bool) {
        self.state.lock().expect("sim lock").fail_syncs = fail;
    }

    /// Cuts the power now: returns the storage a restart would find. Synced
    /// bytes and synced directory entries survive; every other page of the
    /// page cache is, at random, lost, written back, or torn.
    pub fn power_cut(&self, loss: PowerLoss) -> SimStorage {
        let st = self.state.lock().expect("sim lock");
        let mut rng = SplitMix(loss.seed);
        let mut next = SimState { next_id: st.next_id, ..SimState::default() };
        for (name, id) in &st.durable_names {
            let f = &st.files[id];
            let mut image = f.disk.clone();
            let cache = f.cache.copy_out(0, f.cache.len);
            for (page, (disk_page, cache_page)) in image.chunks_mut(4096).zip(cache.chunks(4096)).enumerate() {
                let _ = page;
                if disk_page == cache_page {
                    continue;
                }
                match rng.next() % 3 {
                    0 => {} // never reached the disk
                    1 => disk_page.copy_from_slice(cache_page),
                    _ if loss.tear => {
                        for (d, c) in disk_page.chunks_mut(512).zip(cache_page.chunks(512)) {
                            if rng.next().is_multiple_of(2) {
                                d.copy_from_slice(c);
                            }
                        }
                    }
                    _ => {}
                }
            }
            next.files.insert(*id, SimFile { cache: Arc::new(Buf::from_slice(&image)), disk: image });
            next.names.insert(name.clone(), *id);
            next.durable_names.insert(name.clone(), *id);
        }
        SimStorage { state: Arc::new(Mutex::new(next)) }
    }

    /// Bytes of a file as the page cache holds them now (tests corrupt
    /// files through this).
    pub fn with_file<R>(&self, name: &str, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let st = self.state.lock().expect("sim lock");
        let id = st.names.get(name)?;
        let file = &st.files[id];
        // SAFETY: tests call this while no journal writes the file.
        let bytes = unsafe { std::slice::from_raw_parts_mut(file.cache.ptr, file.cache.len) };
        Some(f(bytes))
    }
}

impl Storage for SimStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().expect("sim lock").names.keys().cloned().collect())
    }

    fn create(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>> {
        let mut st = self.state.lock().expect("sim lock");
        if st.disk_full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if st.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, name.to_owned()));
        }
        st.next_id += 1;
        let id = st.next_id;
        let cache = Arc::new(Buf::zeroed(len));
        st.files.insert(id, SimFile { cache: cache.clone(), disk: vec![0; len] });
        st.names.insert(name.to_owned(), id);
        Ok(Arc::new(SimRegion { id, cache, state: self.state.clone() }))
    }

    fn open(&self, name: &str, _writable: bool) -> io::Result<Arc<dyn Region>> {
        let st = self.state.lock().expect("sim lock");
        let id = *st.names.get(name).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        let cache = st.files[&id].cache.clone();
        Ok(Arc::new(SimRegion { id, cache, state: self.state.clone() }))
    }

    fn shared_memory(&self, name: &str, len: usize) -> io::Result<Arc<dyn Region>> {
        if let Ok(r) = self.open(name, true) {
            return Ok(r);
        }
        self.create(name, len)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock().expect("sim lock");
        let id = st.names.remove(from).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_owned()))?;
        st.names.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock().expect("sim lock");
        st.names.remove(name).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.lock().expect("sim lock");
        st.durable_names = st.names.clone();
        Ok(())
    }

    fn lock_writer(&self) -> io::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(()))
    }

    fn describe(&self) -> String {
        "simulated storage".to_owned()
    }
}

/// A tiny deterministic generator for the simulator's choices.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_file_pauses_between_mibs_and_holds_zeros() {
        let dir = tempfile::tempdir().unwrap();
        for prefault in [true, false] {
            let st = FileStorage::new(dir.path()).unwrap().with_prefault(prefault);
            let mut pauses = 0;
            let name = format!("f-{prefault}");
            let r = st.create_with(&name, 3 << 20, &mut || pauses += 1).unwrap();
            assert_eq!(pauses, if prefault { 2 } else { 0 });
            assert_eq!(r.len(), 3 << 20);
            // SAFETY: the whole mapping, read only.
            let bytes = unsafe { std::slice::from_raw_parts(r.ptr(), r.len()) };
            assert!(bytes.iter().all(|&b| b == 0));
        }
    }
}
