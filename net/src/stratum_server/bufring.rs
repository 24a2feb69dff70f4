//! A provided-buffer ring (io_uring `IORING_REGISTER_PBUF_RING`): one pool
//! of receive buffers a shard's multishot receives draw from, so an idle
//! connection holds no receive buffer at all. That is what lets one shard
//! hold tens of thousands of miners in a few KiB each: a per-connection
//! buffer of even 2 KiB would be most of the budget.
//!
//! Hand-written because no crate wraps this for the `io-uring` crate; it
//! is a page-aligned array of 16-byte entries whose tail the application
//! publishes with a release store.

use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    buf_size: usize,
    bufs: Box<[u8]>,
    /// Next tail value (published to the kernel in `publish`).
    tail: u16,
}

impl BufRing {
    /// Registers `entries` (a power of two, at most 32,768) buffers of
    /// `buf_size` bytes with `uring` as buffer group `group`, all free.
    pub fn new(uring: &IoUring, group: u16, entries: u16, buf_size: usize) -> std::io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 1 << 15);
        let ring_bytes = (entries as usize * size_of::<BufRingEntry>()).next_multiple_of(4096);
        // SAFETY: an anonymous private mapping; checked below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), ring_bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut r = BufRing {
            ring: p.cast(),
            ring_bytes,
            entries,
            buf_size,
            bufs: vec![0u8; entries as usize * buf_size].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the mapping lives until `Drop`, after the ring that uses
        // it is gone (the shard drops its IoUring first).
        unsafe { uring.submitter().register_buf_ring_with_flags(p as u64, entries, group, 0)? };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: idx < entries, inside the mapping.
        let e = unsafe { &mut *self.ring.add(idx) };
        // SAFETY: bid < entries: inside `bufs`.
        e.set_addr(unsafe { self.bufs.as_ptr().add(bid as usize * self.buf_size) } as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of entry 0, which the kernel reads
        // atomically; a u16 at a 2-aligned address.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let at = bid as usize * self.buf_size;
        &self.bufs[at..at + len.min(self.buf_size)]
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    /// A ring with no buffers (what a shard keeps after leaking its real
    /// one at a shutdown that could not reap every receive).
    pub fn empty() -> BufRing {
        BufRing { ring: std::ptr::null_mut(), ring_bytes: 0, entries: 0, buf_size: 0, bufs: Box::new([]), tail: 0 }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if !self.ring.is_null() {
            // SAFETY: our mapping; the ring that used it is gone.
            unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
        }
    }
}
