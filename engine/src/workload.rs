//! Seeded, deterministic command streams for benchmarks and tests.
//!
//! - [`Mix::ExchangeCore`]: exchange-core's benchmark mix: 9 % GTC, 3 % IOC,
//!   6 % cancel, 82 % move (here: cancel/replace at a new price), holding
//!   about 1,000 resting orders over about 750 price levels.
//! - [`Mix::Sweep`]: 70 % passive submits, 20 % cancels, 10 % aggressive
//!   orders large enough to sweep several levels.
//!
//! The generator learns which orders rest from the events it is fed
//! ([`Workload::observe`]), so it only cancels and moves live orders.
//! Its random numbers come from a xorshift generator written here: the
//! stream must be identical on every platform and every version, which a
//! general-purpose RNG crate does not promise.

use crate::exchange::*;
use crate::types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    ExchangeCore,
    Sweep,
}

pub const MID: i64 = 100_000;
pub const HALF_SPREAD_LEVELS: i64 = 375;
pub const ACCOUNTS: u32 = 1_000;
pub const FEE: AccountId = AccountId(ACCOUNTS);

/// Engine limits that fit the workload.
pub fn limits() -> Limits {
    Limits { accounts_max: ACCOUNTS + 1, assets_max: 2, instruments_max: 1, orders_max: 1 << 16, levels_max: 1 << 16, fee_account: FEE }
}

pub struct Workload {
    mix: Mix,
    state: u64,
    ts: u64,
    /// Live resting orders: (id, owner, side, qty).
    live: Vec<(OrderId, AccountId, Side, u64)>,
    /// Position in `live` by order slot (low 32 bits of the id).
    pos: Vec<u32>,
    target: usize,
}

impl Workload {
    pub fn new(mix: Mix, seed: u64) -> Workload {
        Workload {
            mix,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ts: 0,
            live: Vec::with_capacity(1 << 16),
            pos: vec![u32::MAX; 1 << 16],
            target: 1_000,
        }
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rand() % n
    }

    /// Instrument and funded accounts.
    pub fn setup(&self) -> Vec<Command> {
        let spec = InstrumentSpec {
            id: InstrumentId(0),
            symbol: *b"BENCH/USD\0\0\0\0\0\0\0",
            base: AssetId(0),
            quote: AssetId(1),
            tick: 1,
            lot: 1,
            min_price: MID - 20_000,
            max_price: MID + 20_000,
            min_qty: 1,
            max_qty: 1_000_000,
            quote_per_unit: 1,
            base_per_unit: 1,
            maker_bps: -1,
            taker_bps: 5,
            status: Status::Trading,
        };
        let mut v = vec![Command { ts: 0, kind: CommandKind::AddInstrument { spec } }];
        for a in 0..ACCOUNTS {
            v.push(Command { ts: 0, kind: CommandKind::CreateAccount { account: AccountId(a) } });
            for asset in 0..2 {
                v.push(Command { ts: 0, kind: CommandKind::Deposit { account: AccountId(a), asset: AssetId(asset), amount: 1 << 55 } });
            }
        }
        v
    }

    fn passive_price(&mut self, side: Side) -> i64 {
        let away = 1 + self.below(HALF_SPREAD_LEVELS as u64) as i64;
        if side == Side::Buy { MID - away } else { MID + away }
    }

    fn side(&mut self) -> Side {
        if self.rand() & 1 == 0 { Side::Buy } else { Side::Sell }
    }

    fn account(&mut self) -> AccountId {
        AccountId(self.below(ACCOUNTS as u64) as u32)
    }

    fn gtc(&mut self) -> CommandKind {
        let side = self.side();
        let price = self.passive_price(side);
        let qty = 1 + self.below(100);
        CommandKind::NewOrder {
            account: self.account(),
            instrument: InstrumentId(0),
            side,
            qty,
            order: OrderType::Limit { price, tif: TimeInForce::Gtc },
        }
    }

    fn aggressive(&mut self, qty: u64) -> CommandKind {
        let side = self.side();
        let price = if side == Side::Buy { MID + HALF_SPREAD_LEVELS + 10 } else { MID - HALF_SPREAD_LEVELS - 10 };
        CommandKind::NewOrder {
            account: self.account(),
            instrument: InstrumentId(0),
            side,
            qty,
            order: OrderType::Limit { price, tif: TimeInForce::Ioc },
        }
    }

    fn pick(&mut self) -> Option<(OrderId, AccountId, Side, u64)> {
        if self.live.is_empty() {
            return None;
        }
        let i = self.below(self.live.len() as u64) as usize;
        Some(self.live[i])
    }

    /// The next command.
    pub fn next_command(&mut self) -> Command {
        self.ts += 1;
        let r = self.below(100);
        let kind = match self.mix {
            Mix::ExchangeCore => {
                let n = self.live.len();
                // Book size control: above 1.2× the target a submit becomes
                // a cancel, below the target a move becomes a submit.
                match r {
                    0..=8 if n > self.target * 6 / 5 => self.cancel(),
                    0..=8 => self.gtc(),
                    9..=11 => {
                        let q = 1 + self.below(50);
                        self.aggressive(q)
                    }
                    12..=17 => self.cancel(),
                    _ if n < self.target => self.gtc(),
                    _ => self.replace(),
                }
            }
            Mix::Sweep => match r {
                0..=69 => self.gtc(),
                70..=89 if !self.live.is_empty() => self.cancel(),
                70..=89 => self.gtc(),
                _ => {
                    let q = 200 + self.below(800);
                    self.aggressive(q)
                }
            },
        };
        Command { ts: self.ts, kind }
    }

    fn cancel(&mut self) -> CommandKind {
        match self.pick() {
            Some((order, account, ..)) => CommandKind::Cancel { account, order, qty: 0 },
            None => self.gtc(),
        }
    }

    fn replace(&mut self) -> CommandKind {
        match self.pick() {
            Some((order, account, side, qty)) => {
                let price = self.passive_price(side);
                CommandKind::Replace { account, order, price, qty }
            }
            None => self.gtc(),
        }
    }

    /// Learns resting orders from the events of the last command.
    pub fn observe(&mut self, events: &[Event]) {
        let mut owner = AccountId(0);
        for e in events {
            match *e {
                Event::Accepted { account, .. } => owner = account,
                Event::BookAdd { order, side, qty, .. } => {
                    let slot = (order.0 & 0xffff_ffff) as usize;
                    if slot < self.pos.len() {
                        self.pos[slot] = self.live.len() as u32;
                        self.live.push((order, owner, side, qty));
                    }
                }
                Event::BookDelete { order } => {
                    let slot = (order.0 & 0xffff_ffff) as usize;
                    let Some(&p) = self.pos.get(slot) else { continue };
                    if p == u32::MAX {
                        continue;
                    }
                    self.pos[slot] = u32::MAX;
                    let last = self.live.len() - 1;
                    self.live.swap(p as usize, last);
                    self.live.pop();
                    if (p as usize) < self.live.len() {
                        let moved = (self.live[p as usize].0.0 & 0xffff_ffff) as usize;
                        self.pos[moved] = p;
                    }
                }
                Event::BookExecute { order, qty } | Event::BookReduce { order, qty } => {
                    let slot = (order.0 & 0xffff_ffff) as usize;
                    if let Some(&p) = self.pos.get(slot)
                        && p != u32::MAX
                    {
                        let e = &mut self.live[p as usize];
                        e.3 = e.3.saturating_sub(qty);
                    }
                }
                _ => {}
            }
        }
    }

    /// Resting orders the generator knows of.
    pub fn resting(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_core_mix_keeps_about_a_thousand_orders_and_trades() {
        let mut ex = Exchange::new(limits());
        let mut w = Workload::new(Mix::ExchangeCore, 1);
        let mut out = Vec::new();
        for c in w.setup() {
            out.clear();
            ex.apply(&c, &mut out);
            assert_eq!(out, vec![Event::Done]);
        }
        let (mut execs, mut rejects) = (0, 0);
        for _ in 0..200_000 {
            let c = w.next_command();
            out.clear();
            ex.apply(&c, &mut out);
            w.observe(&out);
            execs += out.iter().filter(|e| matches!(e, Event::Executed { maker: false, .. })).count();
            rejects += out.iter().filter(|e| matches!(e, Event::Rejected { .. })).count();
        }
        assert_eq!(w.resting(), ex.open_orders());
        assert!((700..=1300).contains(&ex.open_orders()), "{}", ex.open_orders());
        assert!(execs > 1_000, "{execs}");
        assert_eq!(rejects, 0, "the stream only sends valid commands");
    }
}
