//! Order book storage: a price ladder per side and a shared order store.
//!
//! Hand-written because no crate gives this combination: every price of an
//! instrument's band has a fixed slot (an index, no search, no allocation
//! when a level appears), a hierarchical bitmap finds the best level in a
//! few word scans, and each level is an intrusive FIFO of orders living in
//! a preallocated slab, so cancel by id is O(1) and nothing allocates in
//! steady state.

use crate::types::{AccountId, InstrumentId, OrderId, Side};

pub const NIL: u32 = u32::MAX;

/// Most layers a [`LevelSet`] needs: 64^6 = 2^36 levels, above any `u32` count.
const MAX_LAYERS: usize = 6;

/// A set of level indices with O(1) min/max, 64-ary layers of bits.
///
/// The layers live in one flat vector (no per-layer vector to load and
/// bounds-check) and the lowest and highest members are cached: `min` and
/// `max` are a load, and only removing the current extreme walks the
/// layers again (a few word scans).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct LevelSet {
    /// All layers, lowest first: layer 0 has one bit per level, each next
    /// layer one bit per word of the layer below; the top layer is one word.
    words: Vec<u64>,
    /// Where each layer starts in `words`.
    start: [u32; MAX_LAYERS],
    /// How many layers there are (1..=MAX_LAYERS).
    depth: u32,
    /// Lowest member (`NIL`, the largest u32, when empty) and one past the
    /// highest (0 when empty): both extremes then update with a plain
    /// min and max on insert, no branch.
    lo: u32,
    hi_end: u32,
}

impl LevelSet {
    pub fn new(n: usize) -> LevelSet {
        assert!(n <= u32::MAX as usize, "at most u32::MAX levels");
        let mut start = [0u32; MAX_LAYERS];
        let mut total = 0usize;
        let mut depth = 0usize;
        let mut words = n.div_ceil(64).max(1);
        loop {
            start[depth] = total as u32;
            total += words;
            depth += 1;
            if words == 1 {
                break;
            }
            words = words.div_ceil(64);
        }
        LevelSet { words: vec![0u64; total], start, depth: depth as u32, lo: NIL, hi_end: 0 }
    }

    #[inline(always)]
    pub fn insert(&mut self, i: usize) {
        self.lo = self.lo.min(i as u32);
        self.hi_end = self.hi_end.max(i as u32 + 1);
        // Layer 0 starts at word 0. Most inserts land in a word that already
        // has a member (levels near the touch are dense): one word, done.
        let w = &mut self.words[i >> 6];
        let was = *w;
        *w |= 1 << (i & 63);
        if was != 0 {
            return;
        }
        self.insert_upper(i >> 6);
    }

    /// Marks word `i` of layer 0 non-empty in the layers above it.
    fn insert_upper(&mut self, mut i: usize) {
        for layer in 1..self.depth as usize {
            let w = &mut self.words[self.start[layer] as usize + (i >> 6)];
            let was = *w;
            *w |= 1 << (i & 63);
            if was != 0 {
                return;
            }
            i >>= 6;
        }
    }

    pub fn remove(&mut self, i: usize) {
        let i32 = i as u32;
        let mut j = i;
        for layer in 0..self.depth as usize {
            let w = &mut self.words[self.start[layer] as usize + (j >> 6)];
            *w &= !(1 << (j & 63));
            if *w != 0 {
                break;
            }
            j >>= 6;
        }
        if self.words[self.start[self.depth as usize - 1] as usize] == 0 {
            (self.lo, self.hi_end) = (NIL, 0);
        } else if self.lo == i32 {
            self.lo = self.scan_min();
        } else if self.hi_end == i32 + 1 {
            self.hi_end = self.scan_max() + 1;
        }
    }

    /// Lowest index present.
    #[inline]
    pub fn min(&self) -> Option<usize> {
        (self.lo != NIL).then_some(self.lo as usize)
    }

    /// Highest index present.
    #[inline]
    pub fn max(&self) -> Option<usize> {
        // Not `then_some`: its argument is evaluated even when empty.
        self.hi_end.checked_sub(1).map(|h| h as usize)
    }

    /// Walks the layers down to the lowest member (the set is not empty).
    fn scan_min(&self) -> u32 {
        let mut i = 0usize;
        for layer in (0..self.depth as usize).rev() {
            let w = self.words[self.start[layer] as usize + i];
            i = (i << 6) | w.trailing_zeros() as usize;
        }
        i as u32
    }

    /// Walks the layers down to the highest member (the set is not empty).
    fn scan_max(&self) -> u32 {
        let mut i = 0usize;
        for layer in (0..self.depth as usize).rev() {
            let w = self.words[self.start[layer] as usize + i];
            i = (i << 6) | (63 - w.leading_zeros() as usize);
        }
        i as u32
    }

    /// The set has the shape `LevelSet::new(n)` gives, every upper bit
    /// says exactly whether the word below it is non-zero, no bit lies past
    /// `n`, and the cached extremes agree with the bits. A restored
    /// snapshot is checked with this before it is trusted, so the walks
    /// above cannot index out of bounds on damaged state.
    pub fn consistent(&self, n: usize) -> bool {
        let shape = LevelSet::new(n);
        if (shape.start, shape.depth, shape.words.len()) != (self.start, self.depth, self.words.len()) {
            return false;
        }
        let depth = self.depth as usize;
        let layer_len = |l: usize| if l + 1 < depth { self.start[l + 1] - self.start[l] } else { 1 } as usize;
        // Bits past the last level of layer 0.
        let last = self.words[layer_len(0) - 1];
        if !n.is_multiple_of(64) && last >> (n % 64) != 0 {
            return false;
        }
        for l in 1..depth {
            let (below, here) = (self.start[l - 1] as usize, self.start[l] as usize);
            for k in 0..layer_len(l) * 64 {
                let bit = self.words[here + k / 64] >> (k % 64) & 1 == 1;
                let nonzero = k < layer_len(l - 1) && self.words[below + k] != 0;
                if bit != nonzero {
                    return false;
                }
            }
        }
        if self.words[self.start[depth - 1] as usize] == 0 {
            return self.lo == NIL && self.hi_end == 0;
        }
        self.lo == self.scan_min() && self.hi_end == self.scan_max() + 1
    }
}

/// One price level: a FIFO of resting orders (empty when `head` is `NIL`).
/// 16 bytes, four to a cache line: the levels near the touch are what the
/// matching loop reads most.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
pub struct Level {
    pub head: u32,
    pub tail: u32,
    pub qty: u64,
}

impl Default for Level {
    fn default() -> Self {
        Level { head: NIL, tail: NIL, qty: 0 }
    }
}

/// One side of one instrument's book.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Ladder {
    pub levels: Vec<Level>,
    pub present: LevelSet,
}

impl Ladder {
    pub fn new(n: usize) -> Ladder {
        Ladder { levels: vec![Level::default(); n], present: LevelSet::new(n) }
    }
}

/// A resting or in-flight order: exactly one cache line (the store is
/// indexed at random by cancels and replaces, and an order straddling two
/// lines costs two misses).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
#[repr(align(64))]
pub struct Order {
    pub id: OrderId,
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub price: i64,
    /// Remaining quantity.
    pub leaves: u64,
    /// Amount still held for this order (quote for buys, base for sells).
    pub held: u64,
    /// Links within its price level.
    pub prev: u32,
    pub next: u32,
    /// Links within its account's list of resting orders.
    pub acct_prev: u32,
    pub acct_next: u32,
    /// Arrival sequence, for the state hash and diagnostics.
    pub seq: u64,
    pub live: bool,
}

const _: () = assert!(std::mem::size_of::<Order>() == 64);

impl Order {
    const EMPTY: Order = Order {
        id: OrderId(0),
        account: AccountId(0),
        instrument: InstrumentId(0),
        side: Side::Buy,
        price: 0,
        leaves: 0,
        held: 0,
        prev: NIL,
        next: NIL,
        acct_prev: NIL,
        acct_next: NIL,
        seq: 0,
        live: false,
    };
}

/// The preallocated order store with a LIFO free list (deterministic reuse).
///
/// A slot's generation (the high half of the ids it hands out) lives in the
/// slot's own `id`, kept when the slot is freed: taking or renewing a slot
/// touches only that slot's cache line, not a separate table.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct OrderStore {
    pub orders: Vec<Order>,
    free: Vec<u32>,
}

impl OrderStore {
    pub fn new(capacity: u32) -> OrderStore {
        OrderStore { orders: vec![Order::EMPTY; capacity as usize], free: (0..capacity).rev().collect() }
    }

    pub fn in_use(&self) -> usize {
        self.orders.len() - self.free.len()
    }

    /// The id after `id` in its slot: the next generation.
    #[inline]
    fn next_id(slot: u32, id: OrderId) -> OrderId {
        let g = ((id.0 >> 32) as u32).wrapping_add(1);
        OrderId(((g as u64) << 32) | slot as u64)
    }

    /// Takes a slot; returns its index and the id the order will carry.
    pub fn alloc(&mut self) -> Option<(u32, OrderId)> {
        let slot = self.free.pop()?;
        Some((slot, Self::next_id(slot, self.orders[slot as usize].id)))
    }

    /// A new id for a live slot: exactly what `release` followed by
    /// `alloc` would hand out (the LIFO free list returns the same slot
    /// with the next generation), without touching the free list.
    pub fn renew(&self, slot: u32) -> OrderId {
        Self::next_id(slot, self.orders[slot as usize].id)
    }

    pub fn release(&mut self, slot: u32) {
        let o = &mut self.orders[slot as usize];
        *o = Order { id: o.id, ..Order::EMPTY };
        self.free.push(slot);
    }

    /// The slot of a live order with this id.
    pub fn find(&self, id: OrderId) -> Option<u32> {
        let slot = (id.0 & 0xffff_ffff) as u32;
        let o = self.orders.get(slot as usize)?;
        (o.live && o.id == id).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_set_min_max_across_layers() {
        for n in [1usize, 63, 64, 65, 4096, 4097, 300_000] {
            let mut s = LevelSet::new(n);
            assert_eq!((s.min(), s.max()), (None, None));
            let picks: Vec<usize> = [0, n / 3, n / 2, n - 1].into_iter().collect();
            for &p in &picks {
                s.insert(p);
            }
            assert_eq!((s.min(), s.max()), (Some(0), Some(n - 1)), "n={n}");
            s.remove(0);
            s.remove(n - 1);
            if n > 3 {
                assert_eq!((s.min(), s.max()), (Some(n / 3), Some(n / 2)), "n={n}");
            }
            for &p in &picks {
                s.remove(p);
            }
            assert_eq!(s.min(), None);
        }
    }

    #[test]
    fn level_set_agrees_with_a_sorted_set() {
        // Seeded random inserts and removes against BTreeSet, checking the
        // cached extremes and the full consistency check along the way.
        for n in [1usize, 64, 65, 4_097, 40_001] {
            let mut s = LevelSet::new(n);
            let mut model = std::collections::BTreeSet::new();
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
            for step in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Cluster around a few points so extremes get removed often.
                let i = ((x >> 8) as usize % 300 + (x as usize % 3) * n / 3) % n;
                if model.contains(&i) {
                    s.remove(i);
                    model.remove(&i);
                } else {
                    s.insert(i);
                    model.insert(i);
                }
                assert_eq!(s.min(), model.first().copied(), "n={n} step={step}");
                assert_eq!(s.max(), model.last().copied(), "n={n} step={step}");
                if step % 997 == 0 {
                    assert!(s.consistent(n));
                }
            }
            assert!(s.consistent(n));
            assert!(!s.consistent(n + 64 * 64), "another shape is refused");
        }
    }

    #[test]
    fn level_set_damage_is_detected() {
        let mut s = LevelSet::new(4_097);
        s.insert(5);
        s.insert(4_000);
        assert!(s.consistent(4_097));
        let mut d = s.clone();
        d.hi_end = 4_002;
        assert!(!d.consistent(4_097), "a wrong cached maximum");
        let mut d = s.clone();
        d.words[0] = 0;
        assert!(!d.consistent(4_097), "an upper bit over an empty word");
        let mut d = s.clone();
        let top = d.start[d.depth as usize - 1] as usize;
        d.words[top] |= 1 << 40;
        assert!(!d.consistent(4_097), "a top bit past the last word below");
        let mut d = s.clone();
        d.words[64] |= 1 << 63;
        assert!(!d.consistent(4_097), "a level past the band");
        let mut d = s.clone();
        d.start[1] = 1_000;
        assert!(!d.consistent(4_097), "a damaged layer offset");
    }

    #[test]
    fn order_ids_are_not_reused() {
        let mut st = OrderStore::new(2);
        let (a, ida) = st.alloc().unwrap();
        st.orders[a as usize].live = true;
        st.orders[a as usize].id = ida;
        assert_eq!(st.find(ida), Some(a));
        st.release(a);
        assert_eq!(st.find(ida), None);
        let (b, idb) = st.alloc().unwrap();
        assert_eq!(a, b, "LIFO reuse");
        assert_ne!(ida, idb, "a new generation");
        st.orders[b as usize].live = true;
        st.orders[b as usize].id = idb;
        assert_eq!(st.find(ida), None, "the stale id finds nothing");
    }
}
