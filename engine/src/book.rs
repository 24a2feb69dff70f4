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

/// A set of level indices with fast min/max, 64-ary levels of bits.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct LevelSet {
    /// `layers[0]` has one bit per level; each next layer one bit per word
    /// of the layer below.
    layers: Vec<Vec<u64>>,
}

impl LevelSet {
    pub fn new(n: usize) -> LevelSet {
        let mut layers = Vec::new();
        let mut words = n.div_ceil(64).max(1);
        loop {
            layers.push(vec![0u64; words]);
            if words == 1 {
                break;
            }
            words = words.div_ceil(64);
        }
        LevelSet { layers }
    }

    pub fn insert(&mut self, mut i: usize) {
        for layer in &mut self.layers {
            let w = &mut layer[i >> 6];
            let was = *w;
            *w |= 1 << (i & 63);
            if was != 0 {
                return;
            }
            i >>= 6;
        }
    }

    pub fn remove(&mut self, mut i: usize) {
        for layer in &mut self.layers {
            let w = &mut layer[i >> 6];
            *w &= !(1 << (i & 63));
            if *w != 0 {
                return;
            }
            i >>= 6;
        }
    }

    /// Lowest index present.
    pub fn min(&self) -> Option<usize> {
        let top = self.layers.len() - 1;
        if self.layers[top][0] == 0 {
            return None;
        }
        let mut i = 0usize;
        for layer in self.layers.iter().rev() {
            let w = layer[i];
            i = (i << 6) | w.trailing_zeros() as usize;
        }
        Some(i)
    }

    /// Highest index present.
    pub fn max(&self) -> Option<usize> {
        let top = self.layers.len() - 1;
        if self.layers[top][0] == 0 {
            return None;
        }
        let mut i = 0usize;
        for layer in self.layers.iter().rev() {
            let w = layer[i];
            i = (i << 6) | (63 - w.leading_zeros() as usize);
        }
        Some(i)
    }
}

/// One price level: a FIFO of resting orders.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
pub struct Level {
    pub head: u32,
    pub tail: u32,
    pub qty: u64,
    pub count: u32,
}

impl Default for Level {
    fn default() -> Self {
        Level { head: NIL, tail: NIL, qty: 0, count: 0 }
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

/// A resting or in-flight order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
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
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct OrderStore {
    pub orders: Vec<Order>,
    generations: Vec<u32>,
    free: Vec<u32>,
}

impl OrderStore {
    pub fn new(capacity: u32) -> OrderStore {
        OrderStore {
            orders: vec![Order::EMPTY; capacity as usize],
            generations: vec![0; capacity as usize],
            free: (0..capacity).rev().collect(),
        }
    }

    pub fn in_use(&self) -> usize {
        self.orders.len() - self.free.len()
    }

    /// Takes a slot; returns its index and the id the order will carry.
    pub fn alloc(&mut self) -> Option<(u32, OrderId)> {
        let slot = self.free.pop()?;
        let g = &mut self.generations[slot as usize];
        *g = g.wrapping_add(1);
        Some((slot, OrderId(((*g as u64) << 32) | slot as u64)))
    }

    /// A new id for a live slot: exactly what `release` followed by
    /// `alloc` would hand out (the LIFO free list returns the same slot
    /// with the next generation), without touching the free list.
    pub fn renew(&mut self, slot: u32) -> OrderId {
        let g = &mut self.generations[slot as usize];
        *g = g.wrapping_add(1);
        OrderId(((*g as u64) << 32) | slot as u64)
    }

    pub fn release(&mut self, slot: u32) {
        self.orders[slot as usize] = Order::EMPTY;
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
