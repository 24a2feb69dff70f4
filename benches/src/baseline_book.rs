//! The matching benchmark's baseline: a competent, straightforward order
//! book (a BTreeMap of price levels, each a VecDeque of orders, and a
//! HashMap from order id to its place), written the way a careful engineer
//! would write it without special data structures.
//!
//! It implements what the benchmark streams use (limit GTC and IOC,
//! cancel, cancel/replace) with price-time priority, and numbers orders
//! exactly like the engine (slot + generation, LIFO reuse), so the same
//! stream addresses the same orders. It keeps no ledger: it does strictly
//! less work per command than the engine, which makes the ratio
//! conservative.

use std::collections::{BTreeMap, HashMap, VecDeque};

use otedama_engine::{Command, CommandKind, OrderId, OrderType, Side, TimeInForce};

#[derive(Clone, Copy)]
struct Resting {
    id: u64,
    qty: u64,
}

pub struct BaselineBook {
    bids: BTreeMap<i64, VecDeque<Resting>>,
    asks: BTreeMap<i64, VecDeque<Resting>>,
    index: HashMap<u64, (Side, i64)>,
    free: Vec<u32>,
    generations: Vec<u32>,
    pub trades: u64,
}

impl BaselineBook {
    pub fn new(capacity: u32) -> BaselineBook {
        BaselineBook {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            index: HashMap::with_capacity(capacity as usize),
            free: (0..capacity).rev().collect(),
            generations: vec![0; capacity as usize],
            trades: 0,
        }
    }

    fn alloc(&mut self) -> u64 {
        let slot = self.free.pop().expect("capacity");
        let g = &mut self.generations[slot as usize];
        *g = g.wrapping_add(1);
        ((*g as u64) << 32) | slot as u64
    }

    fn free(&mut self, id: u64) {
        self.free.push((id & 0xffff_ffff) as u32);
    }

    pub fn apply(&mut self, cmd: &Command) {
        match cmd.kind {
            CommandKind::NewOrder { side, qty, order: OrderType::Limit { price, tif }, .. } => {
                let id = self.alloc();
                self.submit(id, side, price, qty, tif == TimeInForce::Gtc);
            }
            CommandKind::Cancel { order, qty: 0, .. } => {
                self.remove(order);
            }
            CommandKind::Replace { order, price, qty, .. } => {
                if let Some(side) = self.remove(order) {
                    let id = self.alloc();
                    self.submit(id, side, price, qty, true);
                }
            }
            _ => {}
        }
    }

    fn remove(&mut self, order: OrderId) -> Option<Side> {
        let (side, price) = self.index.remove(&order.0)?;
        let book = if side == Side::Buy { &mut self.bids } else { &mut self.asks };
        let level = book.get_mut(&price).expect("indexed level");
        let pos = level.iter().position(|r| r.id == order.0).expect("indexed order");
        level.remove(pos);
        if level.is_empty() {
            book.remove(&price);
        }
        self.free(order.0);
        Some(side)
    }

    fn submit(&mut self, id: u64, side: Side, price: i64, mut qty: u64, rest: bool) {
        loop {
            if qty == 0 {
                break;
            }
            let best = match side {
                Side::Buy => self.asks.first_entry().filter(|e| *e.key() <= price),
                Side::Sell => self.bids.last_entry().filter(|e| *e.key() >= price),
            };
            let Some(mut level) = best else { break };
            let q = level.get_mut();
            while qty > 0 {
                let Some(head) = q.front_mut() else { break };
                let fill = qty.min(head.qty);
                head.qty -= fill;
                qty -= fill;
                self.trades += 1;
                if head.qty == 0 {
                    let done = q.pop_front().expect("head");
                    self.index.remove(&done.id);
                    self.free.push((done.id & 0xffff_ffff) as u32);
                }
            }
            if q.is_empty() {
                level.remove();
            }
        }
        if qty > 0 && rest {
            let book = if side == Side::Buy { &mut self.bids } else { &mut self.asks };
            book.entry(price).or_default().push_back(Resting { id, qty });
            self.index.insert(id, (side, price));
        } else {
            self.free(id);
        }
    }

    pub fn resting(&self) -> usize {
        self.index.len()
    }
}
