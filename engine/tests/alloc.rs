//! Zero heap allocations per command in steady state, proven with a
//! counting allocator over a mixed stream (limits of every kind, markets,
//! cancels, amends, replaces, mass cancels, rejects).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

use otedama_engine::*;

struct Counting;
thread_local! { static ALLOCS: Cell<u64> = const { Cell::new(0) }; }
// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn commands_allocate_nothing_in_steady_state() {
    let (mut ex, setup) = common::exchange();
    let mut out = Vec::with_capacity(4096);
    for c in &setup {
        ex.apply(c, &mut out);
    }
    let mut s = common::Stream::new(1);
    let step = |ex: &mut Exchange, s: &mut common::Stream, out: &mut Vec<Event>| {
        let c = s.next();
        out.clear();
        ex.apply(&c, out);
        s.observe(out);
    };
    for _ in 0..50_000 {
        step(&mut ex, &mut s, &mut out);
    }
    let before = ALLOCS.with(|c| c.get());
    for _ in 0..200_000 {
        step(&mut ex, &mut s, &mut out);
    }
    assert_eq!(ALLOCS.with(|c| c.get()) - before, 0, "commands allocated");
    assert!(ex.open_orders() > 20, "the stream keeps a book: {}", ex.open_orders());
}
