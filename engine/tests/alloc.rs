//! Zero heap allocations per command in steady state, proven with a
//! counting allocator over a mixed stream (limits of every kind, markets,
//! cancels, amends, replaces, mass cancels, rejects).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use otedama_engine::*;
use rand::{Rng, SeedableRng};

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
    let fee = AccountId(15);
    let mut ex = Exchange::new(Limits { accounts_max: 16, assets_max: 2, instruments_max: 1, orders_max: 10_000, levels_max: 4096, fee_account: fee });
    let mut out = Vec::with_capacity(4096);
    let spec = InstrumentSpec {
        id: InstrumentId(0),
        symbol: [0; 16],
        base: AssetId(0),
        quote: AssetId(1),
        tick: 1,
        lot: 1,
        min_price: 1,
        max_price: 4000,
        min_qty: 1,
        max_qty: 1000,
        quote_per_unit: 1,
        base_per_unit: 1,
        maker_bps: -1,
        taker_bps: 5,
        status: Status::Trading,
    };
    ex.apply(&Command { ts: 0, kind: CommandKind::AddInstrument { spec } }, &mut out);
    for a in 0..15 {
        ex.apply(&Command { ts: 0, kind: CommandKind::CreateAccount { account: AccountId(a) } }, &mut out);
        for asset in 0..2 {
            ex.apply(&Command { ts: 0, kind: CommandKind::Deposit { account: AccountId(a), asset: AssetId(asset), amount: 1 << 50 } }, &mut out);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut live: Vec<(OrderId, AccountId)> = Vec::with_capacity(20_000);
    let mut step = |rng: &mut rand_chacha::ChaCha8Rng, live: &mut Vec<(OrderId, AccountId)>, out: &mut Vec<Event>| {
        let account = AccountId(rng.random_range(0..15));
        let side = if rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
        let kind = match rng.random_range(0..10) {
            0..=4 => {
                let tif = [TimeInForce::Gtc, TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][rng.random_range(0..4)];
                CommandKind::NewOrder { account, instrument: InstrumentId(0), side, qty: rng.random_range(1..50), order: OrderType::Limit { price: 2000 + rng.random_range(-30..30), tif } }
            }
            5 => CommandKind::NewOrder { account, instrument: InstrumentId(0), side, qty: rng.random_range(1..50), order: OrderType::Market { protection: Some(2000), budget: (side == Side::Buy).then_some(100_000) } },
            6 | 7 if !live.is_empty() => {
                let (order, account) = live[rng.random_range(0..live.len())];
                CommandKind::Cancel { account, order, qty: 0 }
            }
            8 if !live.is_empty() => {
                let (order, account) = live[rng.random_range(0..live.len())];
                CommandKind::Replace { account, order, price: 2000 + rng.random_range(-30..30), qty: rng.random_range(1..50) }
            }
            _ => CommandKind::MassCancel { account, instrument: None, side: Some(side) },
        };
        out.clear();
        ex.apply(&Command { ts: 1, kind }, out);
        for e in out.iter() {
            match e {
                Event::BookAdd { order, .. } => {
                    if live.len() < live.capacity() {
                        live.push((*order, account));
                    }
                }
                Event::BookDelete { order } => {
                    if let Some(i) = live.iter().position(|(o, _)| o == order) {
                        live.swap_remove(i);
                    }
                }
                _ => {}
            }
        }
    };
    for _ in 0..50_000 {
        step(&mut rng, &mut live, &mut out);
    }
    let before = ALLOCS.with(|c| c.get());
    for _ in 0..200_000 {
        step(&mut rng, &mut live, &mut out);
    }
    assert_eq!(ALLOCS.with(|c| c.get()) - before, 0, "commands allocated");
    assert!(ex.open_orders() > 0);
}
