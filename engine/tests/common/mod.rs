//! A seeded stream of mixed exchange commands shared by the engine tests.
#![allow(dead_code)]

use otedama_engine::*;
use rand::{Rng, SeedableRng};

pub const FEE: AccountId = AccountId(15);
pub const TRADERS: u32 = 15;

pub fn exchange() -> (Exchange, Vec<Command>) {
    let ex = Exchange::new(Limits {
        accounts_max: 16,
        assets_max: 2,
        instruments_max: 1,
        orders_max: 10_000,
        levels_max: 4096,
        fee_account: FEE,
    });
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
    let mut setup = vec![Command { ts: 0, kind: CommandKind::AddInstrument { spec } }];
    for a in 0..TRADERS {
        setup.push(Command { ts: 0, kind: CommandKind::CreateAccount { account: AccountId(a) } });
        for asset in 0..2 {
            setup.push(Command { ts: 0, kind: CommandKind::Deposit { account: AccountId(a), asset: AssetId(asset), amount: 1 << 50 } });
        }
    }
    (ex, setup)
}

/// Mostly passive prices (buys below 2000, sells above), sometimes
/// crossing, so the book keeps depth and still trades.
fn passive_price(rng: &mut rand_chacha::ChaCha8Rng, side: Side) -> i64 {
    let away = rng.random_range(-15..100);
    if side == Side::Buy { 2000 - away } else { 2000 + away }
}

/// Generates commands, tracking resting orders from the events it is fed.
pub struct Stream {
    rng: rand_chacha::ChaCha8Rng,
    pub live: Vec<(OrderId, AccountId)>,
    ts: u64,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream { rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed), live: Vec::with_capacity(20_000), ts: 0 }
    }

    pub fn next(&mut self) -> Command {
        let rng = &mut self.rng;
        self.ts += 1;
        let account = AccountId(rng.random_range(0..TRADERS));
        let side = if rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, live: &[(OrderId, AccountId)]| live[rng.random_range(0..live.len())];
        let kind = match rng.random_range(0..100) {
            0..=79 => {
                let tif = [TimeInForce::Gtc, TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][rng.random_range(0..4)];
                CommandKind::NewOrder {
                    account,
                    instrument: InstrumentId(0),
                    side,
                    qty: rng.random_range(1..50),
                    order: OrderType::Limit { price: passive_price(rng, side), tif },
                }
            }
            80..=86 => CommandKind::NewOrder {
                account,
                instrument: InstrumentId(0),
                side,
                qty: rng.random_range(1..50),
                order: OrderType::Market { protection: Some(2000), budget: (side == Side::Buy).then_some(100_000) },
            },
            87..=89 if !self.live.is_empty() => {
                let (order, account) = pick(rng, &self.live);
                CommandKind::Cancel { account, order, qty: 0 }
            }
            90..=92 if !self.live.is_empty() => {
                let (order, account) = pick(rng, &self.live);
                CommandKind::Amend { account, order, qty: 1 }
            }
            93..=98 if !self.live.is_empty() => {
                let (order, account) = pick(rng, &self.live);
                CommandKind::Replace { account, order, price: 2000 + rng.random_range(-30..30), qty: rng.random_range(1..50) }
            }
            _ => CommandKind::MassCancel { account, instrument: None, side: Some(side) },
        };
        Command { ts: self.ts, kind }
    }

    /// Learns resting orders from a command's events.
    pub fn observe(&mut self, events: &[Event]) {
        let mut accepted_by = None;
        for e in events {
            match e {
                Event::Accepted { account, .. } => accepted_by = Some(*account),
                Event::BookAdd { order, .. } => {
                    if let Some(a) = accepted_by
                        && self.live.len() < self.live.capacity()
                    {
                        self.live.push((*order, a));
                    }
                }
                Event::BookDelete { order } => {
                    if let Some(i) = self.live.iter().position(|(o, _)| o == order) {
                        self.live.swap_remove(i);
                    }
                }
                _ => {}
            }
        }
    }
}
