//! The control block (`journal.ctl`): a page of shared memory through which a
//! writer tells readers in any process how far it has got and wakes those
//! that park. Its contents are runtime state only; recovery never trusts it.
//!
//! Parking uses an event count on a futex word: a waiter sets bit 0 and
//! sleeps on the word; a notifier bumps the word by 2 (one locked add, no
//! syscall) and only calls `FUTEX_WAKE` when bit 0 was set. So a writer pays
//! a syscall only when someone is actually asleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::storage::Region;

pub const CONTROL_NAME: &str = "journal.ctl";
pub const CONTROL_BYTES: usize = 4096;
pub const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"OTDMJCTL");

// Offsets (see FORMAT.md). Hot words of different owners sit on different
// cache lines.
const C_MAGIC: usize = 0;
const C_JOURNAL_ID: usize = 8;
const C_WRITER_PID: usize = 16;
const C_WRITER_GENERATION: usize = 24;
const C_PUBLISHED_SEQ: usize = 64;
const C_DATA_EVENT: usize = 72;
const C_DURABLE_SEQ: usize = 128;
const C_DURABLE_EVENT: usize = 136;

/// Typed access to a control block mapping.
#[derive(Clone)]
pub struct Control {
    region: Arc<dyn Region>,
}

impl Control {
    pub fn new(region: Arc<dyn Region>) -> Control {
        assert!(region.len() >= CONTROL_BYTES, "control block too small");
        assert_eq!(region.ptr() as usize % 64, 0, "control block must be cache-line aligned");
        Control { region }
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        // SAFETY: in bounds (checked in `new`), 8-aligned, and shared memory
        // is only ever accessed atomically.
        unsafe { &*(self.region.ptr().add(at) as *const AtomicU64) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as above, 4-aligned.
        unsafe { &*(self.region.ptr().add(at) as *const AtomicU32) }
    }

    /// Initialises the block for a writer that is starting.
    pub fn start_writer(&self, journal_id: u64, published: u64, durable: u64) {
        self.u64_at(C_JOURNAL_ID).store(journal_id, Ordering::Relaxed);
        self.u64_at(C_WRITER_PID).store(std::process::id() as u64, Ordering::Relaxed);
        self.u64_at(C_PUBLISHED_SEQ).store(published, Ordering::Relaxed);
        self.u64_at(C_DURABLE_SEQ).store(durable, Ordering::Relaxed);
        self.u64_at(C_MAGIC).store(CONTROL_MAGIC, Ordering::Relaxed);
        self.u64_at(C_WRITER_GENERATION).fetch_add(1, Ordering::Release);
        self.data_event().notify();
        self.durable_event().notify();
    }

    pub fn stop_writer(&self) {
        self.u64_at(C_WRITER_PID).store(0, Ordering::Release);
        self.data_event().notify();
    }

    pub fn is_initialised(&self) -> bool {
        self.u64_at(C_MAGIC).load(Ordering::Acquire) == CONTROL_MAGIC
    }

    pub fn writer_pid(&self) -> u64 {
        self.u64_at(C_WRITER_PID).load(Ordering::Acquire)
    }

    /// Bumped each time a writer opens the journal (after recovery).
    pub fn writer_generation(&self) -> u64 {
        self.u64_at(C_WRITER_GENERATION).load(Ordering::Acquire)
    }

    /// The last sequence number a writer committed (0: none).
    pub fn published_seq(&self) -> u64 {
        self.u64_at(C_PUBLISHED_SEQ).load(Ordering::Acquire)
    }

    #[inline]
    pub fn set_published_seq(&self, seq: u64) {
        self.u64_at(C_PUBLISHED_SEQ).store(seq, Ordering::Release);
    }

    /// The last sequence number covered by a completed sync.
    pub fn durable_seq(&self) -> u64 {
        self.u64_at(C_DURABLE_SEQ).load(Ordering::Acquire)
    }

    pub fn set_durable_seq(&self, seq: u64) {
        self.u64_at(C_DURABLE_SEQ).store(seq, Ordering::Release);
    }

    /// Signalled after every commit.
    pub fn data_event(&self) -> Event<'_> {
        Event(self.u32_at(C_DATA_EVENT))
    }

    /// Signalled after every advance of the durable watermark.
    pub fn durable_event(&self) -> Event<'_> {
        Event(self.u32_at(C_DURABLE_EVENT))
    }
}

/// An event count on a futex word (see the module docs).
#[derive(Clone, Copy)]
pub struct Event<'a>(pub &'a AtomicU32);

impl Event<'_> {
    /// Wakes every parked waiter. One locked add; a syscall only when a
    /// waiter is parked.
    #[inline]
    pub fn notify(&self) {
        let prev = self.0.fetch_add(2, Ordering::AcqRel);
        if prev & 1 != 0 {
            self.0.fetch_and(!1, Ordering::AcqRel);
            futex_wake(self.0);
        }
    }

    /// Waits until `ready()` holds or `timeout` passes; returns `ready()`.
    /// Spins for `spin` first, then parks on the futex.
    pub fn wait(&self, mut ready: impl FnMut() -> bool, spin: Duration, timeout: Duration) -> bool {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            let v = self.0.load(Ordering::Acquire);
            if ready() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if now < start + spin {
                std::hint::spin_loop();
                continue;
            }
            let want = v | 1;
            if v & 1 == 0 && self.0.compare_exchange(v, want, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            if ready() {
                return true;
            }
            futex_wait(self.0, want, deadline - now);
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts =
        libc::timespec { tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: FUTEX_WAIT (shared, not private: the word may be mapped by
    // several processes) on a valid, aligned u32; the kernel only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
