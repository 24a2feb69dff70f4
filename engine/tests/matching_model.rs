//! The exchange beside a naive, obviously correct reference: the model
//! keeps resting orders in a plain Vec and finds the best one by scanning
//! (best price, then earliest time on the book). Both get the same seeded random
//! commands; every event must match (order ids translated through the
//! Accepted events), balances must match, and the ledger must conserve
//! every asset after every command. A failing seed is printed; run it alone
//! with OTEDAMA_MATCHING_SEED=N.
//!
//! The stream must exercise every reject reason and every order type at
//! least 100 times (asserted), so it cannot pass on easy traffic.

use std::collections::BTreeMap;

use otedama_engine::*;
use rand::{Rng, SeedableRng};

const ACCOUNTS: u32 = 8;
const FEE: AccountId = AccountId(ACCOUNTS - 1);
const ORDERS_MAX: u32 = 12;
const BASE: AssetId = AssetId(0);
const QUOTE: AssetId = AssetId(1);

fn limits() -> Limits {
    Limits { accounts_max: ACCOUNTS, assets_max: 3, instruments_max: 3, orders_max: ORDERS_MAX, levels_max: 1 << 12, fee_account: FEE }
}

fn specs() -> [InstrumentSpec; 2] {
    let mut sym = [0u8; 16];
    sym[..7].copy_from_slice(b"LTC/USD");
    [
        InstrumentSpec {
            id: InstrumentId(0),
            symbol: sym,
            base: BASE,
            quote: QUOTE,
            tick: 5,
            lot: 10,
            min_price: 900,
            max_price: 1100,
            min_qty: 10,
            max_qty: 1000,
            quote_per_unit: 3,
            base_per_unit: 7,
            maker_bps: -2,
            taker_bps: 7,
            status: Status::Trading,
        },
        // Huge units: notional overflows u64 for large orders.
        InstrumentSpec {
            id: InstrumentId(1),
            symbol: sym,
            base: AssetId(2),
            quote: QUOTE,
            tick: 1,
            lot: 1,
            min_price: 1,
            max_price: 60,
            min_qty: 1,
            max_qty: 1 << 40,
            quote_per_unit: 1 << 30,
            base_per_unit: 1,
            maker_bps: 5,
            taker_bps: 10,
            status: Status::Trading,
        },
    ]
}

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, Copy)]
struct MOrder {
    id: u64,
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    price: i64,
    leaves: u64,
    held: u64,
    rested_at: u64,
}

struct Model {
    ledger: Ledger,
    specs: BTreeMap<u16, InstrumentSpec>,
    book: Vec<MOrder>,
    next_id: u64,
    next_match: u64,
    clock: u64,
}

fn notional(s: &InstrumentSpec, price: i64, qty: u64) -> Option<u64> {
    u64::try_from(price as u128 * qty as u128 * s.quote_per_unit as u128).ok()
}
fn ceil_bps(n: u64, bps: i32) -> u64 {
    ((n as u128 * bps as u128).div_ceil(10_000)) as u64
}
fn reserve(s: &InstrumentSpec, price: i64, qty: u64) -> Option<u64> {
    let n = notional(s, price, qty)?;
    let max_bps = s.taker_bps.max(s.maker_bps).max(0);
    n.checked_add(ceil_bps(n, max_bps))?.checked_add(qty / s.lot)
}
fn maker_fee(s: &InstrumentSpec, n: u64) -> i64 {
    if s.maker_bps >= 0 { ceil_bps(n, s.maker_bps) as i64 } else { -((n as u128 * (-s.maker_bps) as u128 / 10_000) as i64) }
}

impl Model {
    fn new() -> Model {
        let mut ledger = Ledger::new(LedgerLimits { accounts_max: ACCOUNTS, assets_max: 3 });
        ledger.create_account(FEE).unwrap();
        Model { ledger, specs: BTreeMap::new(), book: Vec::new(), next_id: 1, next_match: 1, clock: 0 }
    }

    fn check_price(s: &InstrumentSpec, p: i64) -> Result<(), Reject> {
        if p < s.min_price || p > s.max_price {
            return Err(Reject::PriceOutOfBand);
        }
        if (p - s.min_price) % s.tick != 0 {
            return Err(Reject::PriceOffTick);
        }
        Ok(())
    }
    fn check_qty(s: &InstrumentSpec, q: u64) -> Result<(), Reject> {
        if !q.is_multiple_of(s.lot) {
            return Err(Reject::QtyOffLot);
        }
        if q < s.min_qty || q > s.max_qty {
            return Err(Reject::QtyOutOfBounds);
        }
        Ok(())
    }

    fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        let r = match cmd.kind {
            CommandKind::CreateAccount { account } => self.ledger.create_account(account).map(|_| out.push(Event::Done)),
            CommandKind::Deposit { account, asset, amount } => self.ledger.deposit(account, asset, amount).map(|_| out.push(Event::Done)),
            CommandKind::Withdraw { account, asset, amount } => self.ledger.withdraw(account, asset, amount).map(|_| out.push(Event::Done)),
            CommandKind::Transfer { from, to, asset, amount } => {
                self.ledger.transfer(from, to, asset, amount).map(|_| out.push(Event::Done))
            }
            CommandKind::AddInstrument { spec } => {
                self.specs.insert(spec.id.0, spec);
                out.push(Event::Done);
                Ok(())
            }
            CommandKind::SetInstrumentStatus { instrument, status } => match self.specs.get_mut(&instrument.0) {
                Some(s) => {
                    s.status = status;
                    out.push(Event::Done);
                    Ok(())
                }
                None => Err(Reject::UnknownInstrument),
            },
            CommandKind::SetFees { .. } => unreachable!("not generated"),
            CommandKind::NewOrder { account, instrument, side, qty, order } => self.new_order(account, instrument, side, qty, order, out),
            CommandKind::Cancel { account, order, qty } => self.reduce(account, order.0, qty, false, out),
            CommandKind::Amend { account, order, qty } => {
                if qty == 0 {
                    Err(Reject::QtyOutOfBounds)
                } else {
                    self.reduce(account, order.0, qty, true, out)
                }
            }
            CommandKind::Replace { account, order, price, qty } => self.replace(account, order.0, price, qty, out),
            CommandKind::MassCancel { account, instrument, side } => self.mass_cancel(account, instrument, side, out),
        };
        if let Err(reason) = r {
            out.push(Event::Rejected { reason });
        }
    }

    fn new_order(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        qty: u64,
        order: OrderType,
        out: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        let s = *self.specs.get(&instrument.0).ok_or(Reject::UnknownInstrument)?;
        if s.status == Status::Halted {
            return Err(Reject::InstrumentHalted);
        }
        if !self.ledger.is_open(account) {
            return Err(Reject::UnknownAccount);
        }
        Self::check_qty(&s, qty)?;
        let (limit, hold, budget) = match (order, side) {
            (OrderType::Limit { price, .. }, _) => {
                Self::check_price(&s, price)?;
                let h = match side {
                    Side::Buy => reserve(&s, price, qty).ok_or(Reject::Overflow)?,
                    Side::Sell => qty.checked_mul(s.base_per_unit).ok_or(Reject::Overflow)?,
                };
                (Some(price), h, None)
            }
            (OrderType::Market { budget: Some(_), .. }, Side::Sell) => return Err(Reject::BudgetOnSell),
            (OrderType::Market { protection, budget }, Side::Buy) => {
                if let Some(p) = protection {
                    Self::check_price(&s, p)?;
                }
                let by_price = match protection {
                    Some(p) => Some(reserve(&s, p, qty).ok_or(Reject::Overflow)?),
                    None => None,
                };
                let h = match (by_price, budget) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => return Err(Reject::MarketBuyUnbounded),
                };
                if h == 0 {
                    return Err(Reject::ZeroAmount);
                }
                (protection, h, budget)
            }
            (OrderType::Market { protection, budget: None }, Side::Sell) => {
                if let Some(p) = protection {
                    Self::check_price(&s, p)?;
                }
                (protection, qty.checked_mul(s.base_per_unit).ok_or(Reject::Overflow)?, None)
            }
        };
        if self.book.len() as u32 >= ORDERS_MAX {
            return Err(Reject::OrderLimit);
        }
        let asset = if side == Side::Buy { s.quote } else { s.base };
        self.ledger.hold(account, asset, hold)?;
        let id = self.next_id;
        self.next_id += 1;
        self.clock += 1;
        let price = match order {
            OrderType::Limit { price, .. } => price,
            OrderType::Market { .. } => limit.unwrap_or(0),
        };
        let mut t = MOrder { id, account, instrument, side, price, leaves: qty, held: hold, rested_at: 0 };
        out.push(Event::Accepted { order: OrderId(id), account, instrument, side, price, qty });
        if let OrderType::Limit { tif: TimeInForce::Fok, price } = order {
            let avail: u64 = self
                .book
                .iter()
                .filter(|o| {
                    o.instrument == instrument && o.side != side && if side == Side::Buy { o.price <= price } else { o.price >= price }
                })
                .map(|o| o.leaves)
                .sum();
            if avail < qty {
                out.push(Event::Canceled { order: OrderId(id), account, qty, leaves: 0, reason: CancelReason::Unfilled });
                self.ledger.release(account, asset, t.held).unwrap();
                return Ok(());
            }
        }
        let mut budget_stop = false;
        while t.leaves > 0 {
            // The best opposite order: best price, then earliest on the book.
            let best = self
                .book
                .iter()
                .enumerate()
                .filter(|(_, o)| o.instrument == instrument && o.side != side)
                .min_by_key(|(_, o)| (if side == Side::Buy { o.price } else { -o.price }, o.rested_at))
                .map(|(i, _)| i);
            let Some(bi) = best else { break };
            let m = self.book[bi];
            if let Some(l) = limit
                && ((side == Side::Buy && m.price > l) || (side == Side::Sell && m.price < l))
            {
                break;
            }
            let mut q = t.leaves.min(m.leaves);
            if budget.is_some() && side == Side::Buy {
                // Naive: the largest whole-lot count whose cost fits.
                let mut best_q = 0;
                let mut k = s.lot;
                while k <= q {
                    let n = notional(&s, m.price, k).unwrap();
                    if n as u128 + ceil_bps(n, s.taker_bps) as u128 <= t.held as u128 {
                        best_q = k;
                    } else {
                        break;
                    }
                    k += s.lot;
                }
                if best_q == 0 {
                    budget_stop = true;
                    break;
                }
                q = best_q;
            }
            // Settle.
            let n = notional(&s, m.price, q).unwrap();
            let base_amt = q * s.base_per_unit;
            let taker_fee = ceil_bps(n, s.taker_bps) as i64;
            let mfee = maker_fee(&s, n);
            let (buyer_is_taker, b_acct, s_acct) = if side == Side::Buy { (true, account, m.account) } else { (false, m.account, account) };
            let bfee = if buyer_is_taker { taker_fee } else { mfee };
            let sfee = if buyer_is_taker { mfee } else { taker_fee };
            self.ledger.settle(b_acct, s_acct, s.quote, n).unwrap();
            self.ledger.settle(s_acct, b_acct, s.base, base_amt).unwrap();
            if bfee > 0 {
                self.ledger.settle(b_acct, FEE, s.quote, bfee as u64).unwrap();
            }
            if sfee > 0 {
                self.ledger.transfer_or_same(s_acct, FEE, s.quote, sfee as u64).unwrap();
            }
            if bfee < 0 {
                self.ledger.transfer_or_same(FEE, b_acct, s.quote, (-bfee) as u64).unwrap();
            }
            if sfee < 0 {
                self.ledger.transfer_or_same(FEE, s_acct, s.quote, (-sfee) as u64).unwrap();
            }
            let bspent = n + bfee.max(0) as u64;
            t.leaves -= q;
            if buyer_is_taker {
                t.held -= bspent;
                self.book[bi].held -= base_amt;
            } else {
                t.held -= base_amt;
                self.book[bi].held -= bspent;
            }
            self.book[bi].leaves -= q;
            let ml = self.book[bi].leaves;
            let mid = self.next_match;
            self.next_match += 1;
            out.push(Event::Executed {
                match_id: mid,
                order: OrderId(m.id),
                account: m.account,
                maker: true,
                price: m.price,
                qty: q,
                fee: if buyer_is_taker { sfee } else { bfee },
                leaves: ml,
            });
            out.push(Event::Executed {
                match_id: mid,
                order: OrderId(id),
                account,
                maker: false,
                price: m.price,
                qty: q,
                fee: taker_fee,
                leaves: t.leaves,
            });
            out.push(Event::BookExecute { order: OrderId(m.id), qty: q });
            if ml == 0 {
                out.push(Event::BookDelete { order: OrderId(m.id) });
                let gone = self.book.remove(bi);
                let a = if gone.side == Side::Buy { s.quote } else { s.base };
                if gone.held > 0 {
                    self.ledger.release(gone.account, a, gone.held).unwrap();
                }
            }
        }
        let rests = matches!(order, OrderType::Limit { tif: TimeInForce::Gtc, .. });
        if t.leaves > 0 && rests {
            self.clock += 1;
            t.rested_at = self.clock;
            out.push(Event::BookAdd { order: OrderId(id), instrument, side, price: t.price, qty: t.leaves });
            self.book.push(t);
        } else {
            if t.leaves > 0 {
                let reason = if budget_stop { CancelReason::BudgetExhausted } else { CancelReason::Unfilled };
                out.push(Event::Canceled { order: OrderId(id), account, qty: t.leaves, leaves: 0, reason });
            }
            if t.held > 0 {
                self.ledger.release(account, asset, t.held).unwrap();
            }
        }
        Ok(())
    }

    fn find(&self, account: AccountId, id: u64) -> Result<usize, Reject> {
        let i = self.book.iter().position(|o| o.id == id).ok_or(Reject::UnknownOrder)?;
        if self.book[i].account != account {
            return Err(Reject::NotOwner);
        }
        Ok(i)
    }

    fn remove(&mut self, i: usize) {
        let o = self.book.remove(i);
        let s = self.specs[&o.instrument.0];
        let a = if o.side == Side::Buy { s.quote } else { s.base };
        if o.held > 0 {
            self.ledger.release(o.account, a, o.held).unwrap();
        }
    }

    fn reduce(&mut self, account: AccountId, id: u64, qty: u64, amend: bool, out: &mut Vec<Event>) -> Result<(), Reject> {
        let i = self.find(account, id)?;
        let o = self.book[i];
        if qty >= o.leaves {
            return Err(Reject::NotReduced);
        }
        let s = self.specs[&o.instrument.0];
        if !qty.is_multiple_of(s.lot) {
            return Err(Reject::QtyOffLot);
        }
        let cut = o.leaves - qty;
        if qty == 0 {
            out.push(Event::Canceled { order: OrderId(id), account, qty: cut, leaves: 0, reason: CancelReason::Requested });
            out.push(Event::BookDelete { order: OrderId(id) });
            self.remove(i);
            return Ok(());
        }
        let (a, keep) = if o.side == Side::Buy { (s.quote, reserve(&s, o.price, qty).unwrap()) } else { (s.base, qty * s.base_per_unit) };
        if o.held > keep {
            self.ledger.release(account, a, o.held - keep).unwrap();
        }
        self.book[i].leaves = qty;
        self.book[i].held = keep;
        if amend {
            out.push(Event::Amended { order: OrderId(id), account, leaves: qty });
        } else {
            out.push(Event::Canceled { order: OrderId(id), account, qty: cut, leaves: qty, reason: CancelReason::Requested });
        }
        out.push(Event::BookReduce { order: OrderId(id), qty: cut });
        Ok(())
    }

    fn replace(&mut self, account: AccountId, id: u64, price: i64, qty: u64, out: &mut Vec<Event>) -> Result<(), Reject> {
        let i = self.find(account, id)?;
        let o = self.book[i];
        let s = self.specs[&o.instrument.0];
        if s.status == Status::Halted {
            return Err(Reject::InstrumentHalted);
        }
        Self::check_qty(&s, qty)?;
        Self::check_price(&s, price)?;
        let (a, need) = if o.side == Side::Buy {
            (s.quote, reserve(&s, price, qty).ok_or(Reject::Overflow)?)
        } else {
            (s.base, qty.checked_mul(s.base_per_unit).ok_or(Reject::Overflow)?)
        };
        let avail = self.ledger.balance(account, a)?.available;
        if (avail as u128 + o.held as u128) < need as u128 {
            return Err(Reject::InsufficientBalance);
        }
        out.push(Event::Canceled { order: OrderId(id), account, qty: o.leaves, leaves: 0, reason: CancelReason::Replaced });
        out.push(Event::BookDelete { order: OrderId(id) });
        self.remove(i);
        let before = out.len();
        self.new_order(account, o.instrument, o.side, qty, OrderType::Limit { price, tif: TimeInForce::Gtc }, out).unwrap();
        if let Some(Event::Accepted { order: new, .. }) = out.get(before).copied() {
            out.insert(before, Event::Replaced { old: OrderId(id), new, account });
        }
        Ok(())
    }

    fn mass_cancel(
        &mut self,
        account: AccountId,
        instrument: Option<InstrumentId>,
        side: Option<Side>,
        out: &mut Vec<Event>,
    ) -> Result<(), Reject> {
        if !self.ledger.is_open(account) {
            return Err(Reject::UnknownAccount);
        }
        if let Some(i) = instrument
            && !self.specs.contains_key(&i.0)
        {
            return Err(Reject::UnknownInstrument);
        }
        // Most recently rested first.
        let mut mine: Vec<MOrder> = self
            .book
            .iter()
            .filter(|o| o.account == account && instrument.is_none_or(|i| i == o.instrument) && side.is_none_or(|s| s == o.side))
            .copied()
            .collect();
        mine.sort_by_key(|o| std::cmp::Reverse(o.rested_at));
        for o in mine {
            out.push(Event::Canceled { order: OrderId(o.id), account, qty: o.leaves, leaves: 0, reason: CancelReason::MassCancel });
            out.push(Event::BookDelete { order: OrderId(o.id) });
            let i = self.book.iter().position(|x| x.id == o.id).unwrap();
            self.remove(i);
        }
        out.push(Event::Done);
        Ok(())
    }
}

// ----------------------------------------------------------- the generator

struct Gen {
    rng: rand_chacha::ChaCha8Rng,
}

impl Gen {
    fn account(&mut self) -> AccountId {
        if self.rng.random_bool(0.01) { AccountId(ACCOUNTS + 3) } else { AccountId(self.rng.random_range(0..ACCOUNTS - 1)) }
    }
    fn price(&mut self, inst: u16) -> i64 {
        if inst == 1 {
            return self.rng.random_range(1..=61);
        }
        match self.rng.random_range(0..40) {
            0 => 1003,                                     // off tick
            1 => 1200,                                     // out of band
            _ => 1000 + 5 * self.rng.random_range(-8..=8), // near the middle
        }
    }
    fn qty(&mut self, inst: u16) -> u64 {
        if inst == 1 {
            return if self.rng.random_bool(0.3) { self.rng.random_range(1u64 << 35..1 << 40) } else { self.rng.random_range(1..50) };
        }
        match self.rng.random_range(0..40) {
            0 => 15,   // off lot
            1 => 2000, // too large
            _ => 10 * self.rng.random_range(1..=12),
        }
    }
    fn instrument(&mut self) -> InstrumentId {
        match self.rng.random_range(0..50) {
            0 => InstrumentId(2), // unknown
            1..=5 => InstrumentId(1),
            _ => InstrumentId(0),
        }
    }
}

fn command(g: &mut Gen, live: &[(u64, AccountId)]) -> CommandKind {
    let pick = |g: &mut Gen| -> Option<(u64, AccountId)> {
        if live.is_empty() || g.rng.random_bool(0.05) { None } else { Some(live[g.rng.random_range(0..live.len())]) }
    };
    let order_ref = |g: &mut Gen| -> (u64, AccountId) {
        match pick(g) {
            Some((id, acct)) => {
                if g.rng.random_bool(0.05) {
                    (id, AccountId((acct.0 + 1) % (ACCOUNTS - 1)))
                } else {
                    (id, acct)
                }
            }
            None => (999_999, AccountId(0)),
        }
    };
    match g.rng.random_range(0..100) {
        0..=44 => {
            let instrument = g.instrument();
            let side = if g.rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
            let qty = g.qty(instrument.0);
            let order = match g.rng.random_range(0..24) {
                // Passive orders far from the middle build depth, up to the
                // order store's limit.
                20..=23 if instrument.0 == 0 => {
                    let k = g.rng.random_range(0..8);
                    OrderType::Limit { price: if side == Side::Buy { 900 + 5 * k } else { 1100 - 5 * k }, tif: TimeInForce::Gtc }
                }
                0..=10 | 20..=23 => OrderType::Limit { price: g.price(instrument.0), tif: TimeInForce::Gtc },
                11..=13 => OrderType::Limit { price: g.price(instrument.0), tif: TimeInForce::Ioc },
                14..=15 => OrderType::Limit { price: g.price(instrument.0), tif: TimeInForce::Fok },
                16..=17 => OrderType::Market { protection: g.rng.random_bool(0.8).then(|| g.price(instrument.0)), budget: None },
                _ => OrderType::Market {
                    protection: g.rng.random_bool(0.3).then(|| g.price(instrument.0)),
                    budget: g.rng.random_bool(0.9).then(|| g.rng.random_range(0..400_000)),
                },
            };
            CommandKind::NewOrder { account: g.account(), instrument, side, qty, order }
        }
        45..=64 => {
            let (id, account) = order_ref(g);
            let qty = if g.rng.random_bool(0.5) { 0 } else { 10 * g.rng.random_range(0..10) + if g.rng.random_bool(0.05) { 5 } else { 0 } };
            CommandKind::Cancel { account, order: OrderId(id), qty }
        }
        65..=74 => {
            let (id, account) = order_ref(g);
            CommandKind::Amend { account, order: OrderId(id), qty: 10 * g.rng.random_range(0..10) }
        }
        75..=86 => {
            let (id, account) = order_ref(g);
            CommandKind::Replace { account, order: OrderId(id), price: g.price(0), qty: g.qty(0) }
        }
        87..=89 => CommandKind::MassCancel {
            account: g.account(),
            instrument: g.rng.random_bool(0.5).then(|| g.instrument()),
            side: g.rng.random_bool(0.5).then(|| if g.rng.random_bool(0.5) { Side::Buy } else { Side::Sell }),
        },
        90..=94 => {
            CommandKind::Deposit { account: g.account(), asset: AssetId(g.rng.random_range(0..3)), amount: g.rng.random_range(0..200_000) }
        }
        95..=97 => {
            CommandKind::Withdraw { account: g.account(), asset: AssetId(g.rng.random_range(0..3)), amount: g.rng.random_range(0..200_000) }
        }
        _ => CommandKind::SetInstrumentStatus {
            instrument: InstrumentId(g.rng.random_range(0..2)),
            status: if g.rng.random_bool(0.85) { Status::Trading } else { Status::Halted },
        },
    }
}

#[derive(Default)]
struct Coverage {
    rejects: BTreeMap<Reject, u64>,
    kinds: BTreeMap<&'static str, u64>,
}

fn run_seed(seed: u64, steps: usize, cov: &mut Coverage) {
    let mut g = Gen { rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed) };
    let mut ex = Exchange::new(limits());
    let mut model = Model::new();
    let mut ids: BTreeMap<u64, u64> = BTreeMap::new(); // engine id -> model id
    let mut back: BTreeMap<u64, OrderId> = BTreeMap::new(); // model id -> engine id
    let (mut eo, mut mo) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let mut setup = vec![];
    for a in 0..ACCOUNTS - 1 {
        setup.push(CommandKind::CreateAccount { account: AccountId(a) });
        let rich = a % 3 != 2;
        for asset in 0..3 {
            setup.push(CommandKind::Deposit {
                account: AccountId(a),
                asset: AssetId(asset),
                amount: if rich { 5_000_000 } else { 20_000 },
            });
        }
    }
    for s in specs() {
        setup.push(CommandKind::AddInstrument { spec: s });
    }
    for step in 0..steps + setup.len() {
        let ts = step as u64 + 1;
        let kind = if step < setup.len() {
            setup[step]
        } else {
            let live: Vec<(u64, AccountId)> = model.book.iter().map(|o| (o.id, o.account)).collect();
            command(&mut g, &live)
        };
        // The engine sees engine ids; the model its own.
        let to_engine = |k: CommandKind| -> CommandKind {
            let tr = |id: OrderId| back.get(&id.0).copied().unwrap_or(OrderId(u64::MAX));
            match k {
                CommandKind::Cancel { account, order, qty } => CommandKind::Cancel { account, order: tr(order), qty },
                CommandKind::Amend { account, order, qty } => CommandKind::Amend { account, order: tr(order), qty },
                CommandKind::Replace { account, order, price, qty } => CommandKind::Replace { account, order: tr(order), price, qty },
                k => k,
            }
        };
        eo.clear();
        mo.clear();
        ex.apply(&Command { ts, kind: to_engine(kind) }, &mut eo);
        model.apply(&Command { ts, kind }, &mut mo);
        // Learn new ids from Accepted, then compare with ids translated.
        assert_eq!(eo.len(), mo.len(), "seed {seed} step {step}: {kind:?}\nengine {eo:?}\nmodel  {mo:?}");
        for (e, m) in eo.iter().zip(&mo) {
            if let (Event::Accepted { order: a, .. }, Event::Accepted { order: b, .. }) = (e, m) {
                ids.insert(a.0, b.0);
                back.insert(b.0, *a);
            }
        }
        let tr =
            |id: OrderId| OrderId(*ids.get(&id.0).unwrap_or_else(|| panic!("seed {seed} step {step}: engine id {id:?} never accepted")));
        for (i, (e, m)) in eo.iter().zip(&mo).enumerate() {
            let e = match *e {
                Event::Accepted { order, account, instrument, side, price, qty } => {
                    Event::Accepted { order: tr(order), account, instrument, side, price, qty }
                }
                Event::Executed { match_id, order, account, maker, price, qty, fee, leaves } => {
                    Event::Executed { match_id, order: tr(order), account, maker, price, qty, fee, leaves }
                }
                Event::Canceled { order, account, qty, leaves, reason } => {
                    Event::Canceled { order: tr(order), account, qty, leaves, reason }
                }
                Event::Replaced { old, new, account } => Event::Replaced { old: tr(old), new: tr(new), account },
                Event::Amended { order, account, leaves } => Event::Amended { order: tr(order), account, leaves },
                Event::BookAdd { order, instrument, side, price, qty } => Event::BookAdd { order: tr(order), instrument, side, price, qty },
                Event::BookExecute { order, qty } => Event::BookExecute { order: tr(order), qty },
                Event::BookReduce { order, qty } => Event::BookReduce { order: tr(order), qty },
                Event::BookDelete { order } => Event::BookDelete { order: tr(order) },
                e => e,
            };
            assert_eq!(e, *m, "seed {seed} step {step} event {i}: {kind:?}\nengine {eo:?}\nmodel  {mo:?}");
        }
        assert_eq!(ex.ledger().check_invariants(), Ok(()), "seed {seed} step {step}");
        for a in 0..ACCOUNTS {
            for s in 0..3 {
                assert_eq!(
                    ex.ledger().balance(AccountId(a), AssetId(s)),
                    model.ledger.balance(AccountId(a), AssetId(s)),
                    "seed {seed} step {step}: balance of {a} in {s}: {kind:?}"
                );
            }
        }
        if step >= setup.len() {
            for e in &mo {
                if let Event::Rejected { reason } = e {
                    *cov.rejects.entry(*reason).or_default() += 1;
                }
            }
            if let CommandKind::NewOrder { order, .. } = kind {
                let k = match order {
                    OrderType::Limit { tif: TimeInForce::Gtc, .. } => "gtc",
                    OrderType::Limit { tif: TimeInForce::Ioc, .. } => "ioc",
                    OrderType::Limit { tif: TimeInForce::Fok, .. } => "fok",
                    OrderType::Market { budget: None, .. } => "market",
                    OrderType::Market { budget: Some(_), .. } => "market_budget",
                };
                if mo.iter().any(|e| matches!(e, Event::Executed { .. })) {
                    *cov.kinds.entry(k).or_default() += 1;
                }
            }
            for (k, hit) in [
                ("cancel", matches!(kind, CommandKind::Cancel { .. })),
                ("amend", matches!(kind, CommandKind::Amend { .. })),
                ("replace", matches!(kind, CommandKind::Replace { .. })),
                ("mass_cancel", matches!(kind, CommandKind::MassCancel { .. })),
            ] {
                if hit && !mo.iter().any(|e| matches!(e, Event::Rejected { .. })) {
                    *cov.kinds.entry(k).or_default() += 1;
                }
            }
            if mo.iter().any(|e| matches!(e, Event::Executed { fee, maker: true, .. } if *fee < 0)) {
                *cov.kinds.entry("rebate").or_default() += 1;
            }
            if mo.iter().any(|e| matches!(e, Event::Canceled { reason: CancelReason::BudgetExhausted, .. })) {
                *cov.kinds.entry("budget_exhausted").or_default() += 1;
            }
        }
    }
}

#[test]
fn engine_matches_the_naive_model() {
    let mut cov = Coverage::default();
    if let Ok(seed) = std::env::var("OTEDAMA_MATCHING_SEED") {
        run_seed(seed.parse().unwrap(), 50_000, &mut cov);
        return;
    }
    // 40 seeds × 50,000 commands: two million commands per run.
    let seeds: u64 = std::env::var("OTEDAMA_MATCHING_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    for seed in 0..seeds {
        run_seed(seed, 50_000, &mut cov);
    }
    eprintln!("coverage: {:?}\n{:?}", cov.rejects, cov.kinds);
    for r in [
        Reject::UnknownAccount,
        Reject::UnknownInstrument,
        Reject::InstrumentHalted,
        Reject::PriceOffTick,
        Reject::PriceOutOfBand,
        Reject::QtyOffLot,
        Reject::QtyOutOfBounds,
        Reject::UnknownOrder,
        Reject::NotReduced,
        Reject::OrderLimit,
        Reject::MarketBuyUnbounded,
        Reject::BudgetOnSell,
        Reject::NotOwner,
        Reject::InsufficientBalance,
        Reject::Overflow,
    ] {
        let n = cov.rejects.get(&r).copied().unwrap_or(0);
        assert!(n >= 100, "reject {r:?} exercised only {n} times");
    }
    for k in ["gtc", "ioc", "fok", "market", "market_budget", "cancel", "amend", "replace", "mass_cancel", "rebate", "budget_exhausted"] {
        let n = cov.kinds.get(k).copied().unwrap_or(0);
        assert!(n >= 100, "{k} exercised only {n} times");
    }
}
