//! Appending performs no heap allocation in steady state, proven with a
//! counting allocator (counts only the calling thread's allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use otedama_journal::{Durability, Journal, Options, SimStorage, kinds};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn appends_allocate_nothing() {
    for durability in [Durability::None, Durability::Batch] {
        let storage = std::sync::Arc::new(SimStorage::new());
        // Small segments: the measured appends include several rolls.
        let opts = Options { segment_bytes: 8 << 20, durability, prepare_ahead: 4, ..Options::default() };
        let mut j = Journal::open_with(storage, opts).unwrap();
        let payload = [7u8; 64];
        // Warm up past the first rolls, then measure 1M appends (about
        // 72 MiB: nine rolls).
        for i in 0..200_000u64 {
            j.append(kinds::TEST, 1, i, &payload).unwrap();
        }
        assert!(j.stats().rolls >= 2);
        let before = allocations();
        for i in 0..500_000u64 {
            j.append(kinds::TEST, 1, i, &payload).unwrap();
            let mut r = j.reserve(16).unwrap();
            r.payload().copy_from_slice(&[1; 16]);
            r.commit(kinds::TEST, 1, i).unwrap();
        }
        assert_eq!(allocations() - before, 0, "{durability:?}: appends allocated");
        assert!(j.stats().rolls >= 10, "{:?}", j.stats());
        j.close().unwrap();
    }
}
