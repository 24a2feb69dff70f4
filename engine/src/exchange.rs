//! The exchange state machine: instruments, ledger and order books.
//!
//! `apply(&mut self, &Command, &mut Vec<Event>)` is deterministic: no
//! clock, no randomness, no unordered iteration; time arrives in the
//! command. Every invalid command is `Rejected` with a precise reason and
//! changes nothing. Events go into a caller-owned vector (cleared by the
//! caller), so steady-state commands allocate nothing.
//!
//! Units (per instrument):
//! - price: integer *price units*, a multiple of `tick`, inside the band
//!   `min_price..=max_price` (positive);
//! - quantity: integer *quantity units*, a multiple of `lot`, inside
//!   `min_qty..=max_qty`;
//! - notional of `qty` at `price` = `price × qty × quote_per_unit` quote
//!   minor units; base amount = `qty × base_per_unit` base minor units.
//!
//! Fees, in basis points of notional, in quote: a taker pays
//! `ceil(notional × taker_bps / 10⁴)`; a maker pays
//! `ceil(notional × maker_bps / 10⁴)` or, with negative `maker_bps`, receives
//! a rebate of `floor(notional × |maker_bps| / 10⁴)`. `taker_bps ≥
//! −maker_bps` is enforced, so each trade's taker fee covers its rebate and
//! the fee account never goes negative.
//!
//! Holds: a sell holds `qty × base_per_unit` base. A buy holds
//! `reserve(qty) = notional(limit, qty) + ceil(notional × max_bps / 10⁴) +
//! qty / lot` quote, where `max_bps = max(taker, maker, 0)`; the last term
//! covers per-fill fee rounding (each fill is at least one lot). After every
//! fill an order's hold still covers `reserve(leaves)`; a reduction releases
//! `held − reserve(leaves)`; the end of an order releases what is left.

use crate::book::{Ladder, NIL, Order, OrderStore};
use crate::ledger::{Ledger, LedgerLimits};
use crate::types::*;
use std::hint::select_unpredictable;

/// Bounds fixed at start-up.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy)]
pub struct Limits {
    pub accounts_max: u32,
    pub assets_max: u16,
    pub instruments_max: u16,
    pub orders_max: u32,
    /// Most price levels one instrument's band may span.
    pub levels_max: u32,
    /// Receives fees, pays rebates. Created with the engine.
    pub fee_account: AccountId,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Trading,
    Halted,
}

/// An instrument's definition.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstrumentSpec {
    pub id: InstrumentId,
    pub symbol: [u8; 16],
    pub base: AssetId,
    pub quote: AssetId,
    pub tick: i64,
    pub lot: u64,
    pub min_price: i64,
    pub max_price: i64,
    pub min_qty: u64,
    pub max_qty: u64,
    pub quote_per_unit: u64,
    pub base_per_unit: u64,
    pub maker_bps: i32,
    pub taker_bps: i32,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderType {
    Limit {
        price: i64,
        tif: TimeInForce,
    },
    /// Executes immediately against the book, never rests. `protection`:
    /// the worst price accepted; `budget`: for buys, the most quote to
    /// spend, fees included.
    Market {
        protection: Option<i64>,
        budget: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    CreateAccount {
        account: AccountId,
    },
    Deposit {
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    Withdraw {
        account: AccountId,
        asset: AssetId,
        amount: u64,
    },
    Transfer {
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: u64,
    },
    AddInstrument {
        spec: InstrumentSpec,
    },
    SetInstrumentStatus {
        instrument: InstrumentId,
        status: Status,
    },
    SetFees {
        instrument: InstrumentId,
        maker_bps: i32,
        taker_bps: i32,
    },
    NewOrder {
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        qty: u64,
        order: OrderType,
    },
    /// Reduces the order's remaining quantity to `qty` (0 cancels it):
    /// OUCH semantics, so a cancel racing a fill never over-cancels.
    Cancel {
        account: AccountId,
        order: OrderId,
        qty: u64,
    },
    /// Cancel and replace: a new order (new id, new priority) at `price` for `qty`.
    Replace {
        account: AccountId,
        order: OrderId,
        price: i64,
        qty: u64,
    },
    /// Reduce quantity, keep priority.
    Amend {
        account: AccountId,
        order: OrderId,
        qty: u64,
    },
    MassCancel {
        account: AccountId,
        instrument: Option<InstrumentId>,
        side: Option<Side>,
    },
}

/// A command with the time it carries (ns; the engine never reads a clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub ts: u64,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CancelReason {
    /// Asked for by the owner.
    Requested,
    /// IOC/market remainder, or a FOK that could not fill completely.
    Unfilled,
    /// A quote budget ran out.
    BudgetExhausted,
    /// Removed by a mass cancel.
    MassCancel,
    /// Removed by cancel/replace.
    Replaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Rejected {
        reason: Reject,
    },
    /// An admin command or ledger operation took effect.
    Done,
    Accepted {
        order: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        price: i64,
        qty: u64,
    },
    Executed {
        match_id: u64,
        order: OrderId,
        account: AccountId,
        maker: bool,
        price: i64,
        qty: u64,
        fee: i64,
        leaves: u64,
    },
    Canceled {
        order: OrderId,
        account: AccountId,
        qty: u64,
        leaves: u64,
        reason: CancelReason,
    },
    Replaced {
        old: OrderId,
        new: OrderId,
        account: AccountId,
    },
    Amended {
        order: OrderId,
        account: AccountId,
        leaves: u64,
    },
    BookAdd {
        order: OrderId,
        instrument: InstrumentId,
        side: Side,
        price: i64,
        qty: u64,
    },
    BookExecute {
        order: OrderId,
        qty: u64,
    },
    BookReduce {
        order: OrderId,
        qty: u64,
    },
    BookDelete {
        order: OrderId,
    },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Instrument {
    spec: InstrumentSpec,
    bids: Ladder,
    asks: Ladder,
}

impl Instrument {
    #[inline(always)]
    fn level_index(&self, price: i64) -> usize {
        let off = price - self.spec.min_price;
        // Most instruments trade on every price unit: skip the division.
        if self.spec.tick == 1 { off as usize } else { (off / self.spec.tick) as usize }
    }
    #[inline]
    fn price_at(&self, idx: usize) -> i64 {
        self.spec.min_price + idx as i64 * self.spec.tick
    }
    fn ladder(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    /// Best level index of a side: highest bid, lowest ask.
    fn best(&self, side: Side) -> Option<usize> {
        match side {
            Side::Buy => self.bids.present.max(),
            Side::Sell => self.asks.present.min(),
        }
    }
    #[inline]
    fn notional(&self, price: i64, qty: u64) -> Option<u64> {
        // Prices are positive (the band starts above zero).
        (price as u64).checked_mul(qty)?.checked_mul(self.spec.quote_per_unit)
    }
    fn max_bps(&self) -> u64 {
        self.spec.taker_bps.max(self.spec.maker_bps).max(0) as u64
    }
    /// Quote a buy of `qty` at `price` must hold (see the module docs).
    #[inline(always)]
    fn buy_reserve(&self, price: i64, qty: u64) -> Option<u64> {
        let n = self.notional(price, qty)?;
        let fee = ceil_bps(n, self.max_bps());
        n.checked_add(fee)?.checked_add(lots(qty, self.spec.lot))
    }
}

// Most instruments trade in lots of one unit: skip the divisions then
// (a 64-bit division costs tens of cycles; these run on every order).
#[inline]
fn lots(qty: u64, lot: u64) -> u64 {
    if lot == 1 { qty } else { qty / lot }
}

#[inline]
fn off_lot(qty: u64, lot: u64) -> bool {
    lot != 1 && !qty.is_multiple_of(lot)
}

// Fee math: u64 when the product fits (a multiply-by-reciprocal division),
// u128 only when it does not (a library division, ten times slower).
#[inline]
fn ceil_bps(n: u64, bps: u64) -> u64 {
    match n.checked_mul(bps) {
        Some(p) => p.div_ceil(10_000),
        None => ((n as u128 * bps as u128).div_ceil(10_000)) as u64,
    }
}

#[inline]
fn floor_bps(n: u64, bps: u64) -> u64 {
    match n.checked_mul(bps) {
        Some(p) => p / 10_000,
        None => (n as u128 * bps as u128 / 10_000) as u64,
    }
}

/// The exchange.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Exchange {
    limits: Limits,
    ledger: Ledger,
    instruments: Vec<Option<Instrument>>,
    orders: OrderStore,
    /// Head of each account's list of resting orders.
    account_orders: Vec<u32>,
    next_match_id: u64,
    next_seq: u64,
}

impl Exchange {
    pub fn new(limits: Limits) -> Exchange {
        let mut ledger = Ledger::new(LedgerLimits { accounts_max: limits.accounts_max, assets_max: limits.assets_max });
        ledger.create_account(limits.fee_account).expect("fee account within accounts_max");
        Exchange {
            limits,
            ledger,
            instruments: (0..limits.instruments_max).map(|_| None).collect(),
            orders: OrderStore::new(limits.orders_max),
            account_orders: vec![NIL; limits.accounts_max as usize],
            next_match_id: 1,
            next_seq: 1,
        }
    }

    /// The whole state, serialised with rkyv: the payload of a snapshot.
    /// Equal states give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("serialising in-memory state cannot fail").to_vec()
    }

    /// Rebuilds an exchange from [`Exchange::snapshot`] bytes, validating them
    /// first: damaged bytes are an error, never a panic.
    pub fn restore(bytes: &[u8]) -> Result<Exchange, String> {
        // rkyv wants its input aligned; copy into an aligned buffer.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let ex = rkyv::from_bytes::<Exchange, rkyv::rancor::Error>(&aligned).map_err(|e| format!("invalid exchange snapshot: {e}"))?;
        ex.check_consistent()?;
        Ok(ex)
    }

    /// SHA-256 of the canonical serialised state.
    pub fn state_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.snapshot()).into()
    }

    /// Structural checks a restored state must pass before it is trusted:
    /// sizes agree with the limits, every book's level index agrees with
    /// its levels, and every resting order sits on a valid level of a known
    /// instrument.
    fn check_consistent(&self) -> Result<(), String> {
        let l = &self.limits;
        let ok = self.instruments.len() == l.instruments_max as usize
            && self.orders.orders.len() == l.orders_max as usize
            && self.account_orders.len() == l.accounts_max as usize
            && self.ledger.limits() == LedgerLimits { accounts_max: l.accounts_max, assets_max: l.assets_max };
        if !ok {
            return Err("snapshot sizes disagree with its limits".into());
        }
        for inst in self.instruments.iter().flatten() {
            let s = &inst.spec;
            let n = if s.tick > 0 && s.max_price >= s.min_price { ((s.max_price - s.min_price) / s.tick) as usize + 1 } else { 0 };
            for ladder in [&inst.bids, &inst.asks] {
                if n == 0 || ladder.levels.len() != n || !ladder.present.consistent(n) {
                    return Err("an order book's levels disagree with its instrument".into());
                }
            }
        }
        for o in self.orders.orders.iter().filter(|o| o.live) {
            let inst = self.instrument(o.instrument).map_err(|_| "resting order on an unknown instrument".to_string())?;
            if Self::check_price(&inst.spec, o.price).is_err() || o.account.0 >= l.accounts_max {
                return Err("resting order outside its instrument's band".into());
            }
        }
        self.ledger.check_invariants().map_err(|a| format!("ledger does not add up for asset {}", a.0))
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn open_orders(&self) -> usize {
        self.orders.in_use()
    }

    /// Applies one command, appending its events to `out`.
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        let r = match cmd.kind {
            CommandKind::CreateAccount { account } => self.ledger.create_account(account).map(|_| out.push(Event::Done)),
            CommandKind::Deposit { account, asset, amount } => self.ledger.deposit(account, asset, amount).map(|_| out.push(Event::Done)),
            CommandKind::Withdraw { account, asset, amount } => self.ledger.withdraw(account, asset, amount).map(|_| out.push(Event::Done)),
            CommandKind::Transfer { from, to, asset, amount } => {
                self.ledger.transfer(from, to, asset, amount).map(|_| out.push(Event::Done))
            }
            CommandKind::AddInstrument { spec } => self.add_instrument(spec).map(|_| out.push(Event::Done)),
            CommandKind::SetInstrumentStatus { instrument, status } => {
                self.instrument_mut(instrument).map(|i| i.spec.status = status).map(|_| out.push(Event::Done))
            }
            CommandKind::SetFees { instrument, maker_bps, taker_bps } => {
                self.set_fees(instrument, maker_bps, taker_bps).map(|_| out.push(Event::Done))
            }
            CommandKind::NewOrder { account, instrument, side, qty, order } => self.new_order(account, instrument, side, qty, order, out),
            CommandKind::Cancel { account, order, qty } => self.reduce(account, order, qty, false, out),
            CommandKind::Amend { account, order, qty } => {
                if qty == 0 {
                    Err(Reject::QtyOutOfBounds)
                } else {
                    self.reduce(account, order, qty, true, out)
                }
            }
            CommandKind::Replace { account, order, price, qty } => self.replace(account, order, price, qty, out),
            CommandKind::MassCancel { account, instrument, side } => self.mass_cancel(account, instrument, side, out),
        };
        if let Err(reason) = r {
            out.push(Event::Rejected { reason });
        }
    }

    fn instrument(&self, id: InstrumentId) -> Result<&Instrument, Reject> {
        self.instruments.get(id.0 as usize).and_then(|i| i.as_ref()).ok_or(Reject::UnknownInstrument)
    }

    fn instrument_mut(&mut self, id: InstrumentId) -> Result<&mut Instrument, Reject> {
        self.instruments.get_mut(id.0 as usize).and_then(|i| i.as_mut()).ok_or(Reject::UnknownInstrument)
    }

    fn valid_fees(maker_bps: i32, taker_bps: i32) -> bool {
        (0..=10_000).contains(&taker_bps) && (-10_000..=10_000).contains(&maker_bps) && taker_bps >= -maker_bps
    }

    fn add_instrument(&mut self, spec: InstrumentSpec) -> Result<(), Reject> {
        let slot = self.instruments.get(spec.id.0 as usize).ok_or(Reject::InstrumentLimit)?;
        if slot.is_some() {
            return Err(Reject::InstrumentExists);
        }
        let s = &spec;
        let ok = s.base != s.quote
            && s.base.0 < self.limits.assets_max
            && s.quote.0 < self.limits.assets_max
            && s.tick > 0
            && s.lot > 0
            && s.min_price > 0
            && s.max_price >= s.min_price
            && (s.max_price - s.min_price) % s.tick == 0
            && s.min_price % s.tick == 0
            && s.min_qty > 0
            && s.max_qty >= s.min_qty
            && s.min_qty.is_multiple_of(s.lot)
            && s.max_qty.is_multiple_of(s.lot)
            && s.quote_per_unit > 0
            && s.base_per_unit > 0
            && Self::valid_fees(s.maker_bps, s.taker_bps);
        if !ok {
            return Err(Reject::InvalidInstrument);
        }
        let levels = ((s.max_price - s.min_price) / s.tick) as u64 + 1;
        if levels > self.limits.levels_max as u64 {
            return Err(Reject::InvalidInstrument);
        }
        let n = levels as usize;
        self.instruments[spec.id.0 as usize] = Some(Instrument { spec, bids: Ladder::new(n), asks: Ladder::new(n) });
        Ok(())
    }

    fn set_fees(&mut self, id: InstrumentId, maker_bps: i32, taker_bps: i32) -> Result<(), Reject> {
        let inst = self.instrument_mut(id)?;
        if !Self::valid_fees(maker_bps, taker_bps) {
            return Err(Reject::InvalidInstrument);
        }
        // Resting buys hold for the fee at the old rates; only allow
        // changes that do not raise the buy reserve while orders rest.
        let new_max = taker_bps.max(maker_bps).max(0);
        let old_max = inst.spec.taker_bps.max(inst.spec.maker_bps).max(0);
        if new_max > old_max && (inst.bids.present.min().is_some()) {
            return Err(Reject::InvalidInstrument);
        }
        inst.spec.maker_bps = maker_bps;
        inst.spec.taker_bps = taker_bps;
        Ok(())
    }

    fn check_qty(spec: &InstrumentSpec, qty: u64) -> Result<(), Reject> {
        if off_lot(qty, spec.lot) {
            return Err(Reject::QtyOffLot);
        }
        if !(spec.min_qty..=spec.max_qty).contains(&qty) {
            return Err(Reject::QtyOutOfBounds);
        }
        Ok(())
    }

    fn check_price(spec: &InstrumentSpec, price: i64) -> Result<(), Reject> {
        if !(spec.min_price..=spec.max_price).contains(&price) {
            return Err(Reject::PriceOutOfBand);
        }
        if spec.tick != 1 && (price - spec.min_price) % spec.tick != 0 {
            return Err(Reject::PriceOffTick);
        }
        Ok(())
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
        let inst = self.instrument(instrument)?;
        if inst.spec.status == Status::Halted {
            return Err(Reject::InstrumentHalted);
        }
        if !self.ledger.is_open(account) {
            return Err(Reject::UnknownAccount);
        }
        Self::check_qty(&inst.spec, qty)?;
        // The price limit the order may trade at, and what it holds.
        let (limit, hold) = match (order, side) {
            (OrderType::Limit { price, .. }, _) => {
                Self::check_price(&inst.spec, price)?;
                let hold = match side {
                    Side::Buy => inst.buy_reserve(price, qty).ok_or(Reject::Overflow)?,
                    Side::Sell => qty.checked_mul(inst.spec.base_per_unit).ok_or(Reject::Overflow)?,
                };
                (Some(price), hold)
            }
            (OrderType::Market { budget: Some(_), .. }, Side::Sell) => return Err(Reject::BudgetOnSell),
            (OrderType::Market { protection, budget }, Side::Buy) => {
                if let Some(p) = protection {
                    Self::check_price(&inst.spec, p)?;
                }
                let by_price = match protection {
                    Some(p) => Some(inst.buy_reserve(p, qty).ok_or(Reject::Overflow)?),
                    None => None,
                };
                let hold = match (by_price, budget) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => return Err(Reject::MarketBuyUnbounded),
                };
                if hold == 0 {
                    return Err(Reject::ZeroAmount);
                }
                (protection, hold)
            }
            (OrderType::Market { protection, budget: None }, Side::Sell) => {
                if let Some(p) = protection {
                    Self::check_price(&inst.spec, p)?;
                }
                (protection, qty.checked_mul(inst.spec.base_per_unit).ok_or(Reject::Overflow)?)
            }
        };
        let held_asset = match side {
            Side::Buy => inst.spec.quote,
            Side::Sell => inst.spec.base,
        };
        if self.orders.in_use() == self.orders.orders.len() {
            return Err(Reject::OrderLimit);
        }
        self.ledger.hold(account, held_asset, hold)?;

        let (slot, id) = self.orders.alloc().ok_or(Reject::OrderLimit)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let price = match order {
            OrderType::Limit { price, .. } => price,
            OrderType::Market { .. } => limit.unwrap_or(0),
        };
        {
            let o = &mut self.orders.orders[slot as usize];
            o.id = id;
            o.account = account;
            o.instrument = instrument;
            o.side = side;
            o.price = price;
            o.leaves = qty;
            o.held = hold;
            o.seq = seq;
            o.live = true;
        }
        out.push(Event::Accepted { order: id, account, instrument, side, price, qty });
        // FOK: the whole quantity must be available at acceptable prices,
        // or nothing executes.
        if let OrderType::Limit { tif: TimeInForce::Fok, price } = order
            && self.fillable(instrument, side, price, qty) < qty
        {
            out.push(Event::Canceled { order: id, account, qty, leaves: 0, reason: CancelReason::Unfilled });
            self.finish(slot);
            return Ok(());
        }
        let budget = match order {
            OrderType::Market { budget, .. } => budget,
            _ => None,
        };
        let stop = self.match_order(slot, limit, budget, out);
        let o = self.orders.orders[slot as usize];
        let rests = matches!(order, OrderType::Limit { tif: TimeInForce::Gtc, .. });
        if o.leaves > 0 && rests {
            self.rest(slot, out);
        } else {
            if o.leaves > 0 {
                let reason = if stop == Stop::Budget { CancelReason::BudgetExhausted } else { CancelReason::Unfilled };
                out.push(Event::Canceled { order: id, account, qty: o.leaves, leaves: 0, reason });
            }
            self.finish(slot);
        }
        Ok(())
    }

    /// Quantity available against `side` at prices no worse than `price`.
    fn fillable(&self, instrument: InstrumentId, side: Side, price: i64, want: u64) -> u64 {
        let Ok(inst) = self.instrument(instrument) else { return 0 };
        let book = match side {
            Side::Buy => &inst.asks,
            Side::Sell => &inst.bids,
        };
        let mut got = 0u64;
        let levels = book.levels.len();
        // Walk from the best level toward the limit.
        let limit_idx = inst.level_index(price);
        match side {
            Side::Buy => {
                let Some(start) = book.present.min() else { return 0 };
                for idx in start..=limit_idx.min(levels - 1) {
                    got += book.levels[idx].qty;
                    if got >= want {
                        break;
                    }
                }
            }
            Side::Sell => {
                let Some(start) = book.present.max() else { return 0 };
                let mut idx = start;
                while idx >= limit_idx {
                    got += book.levels[idx].qty;
                    if got >= want || idx == 0 {
                        break;
                    }
                    idx -= 1;
                }
            }
        }
        got
    }

    /// Matches the taker in `slot` against the opposite side.
    fn match_order(&mut self, slot: u32, limit: Option<i64>, budget: Option<u64>, out: &mut Vec<Event>) -> Stop {
        let taker = self.orders.orders[slot as usize];
        let instrument = taker.instrument;
        let opp = taker.side.opposite();
        loop {
            let t = self.orders.orders[slot as usize];
            if t.leaves == 0 {
                return Stop::Filled;
            }
            let inst = self.instruments[instrument.0 as usize].as_ref().expect("live instrument");
            let Some(idx) = inst.best(opp) else { return Stop::NoLiquidity };
            let price = inst.price_at(idx);
            if let Some(l) = limit {
                let acceptable = match t.side {
                    Side::Buy => price <= l,
                    Side::Sell => price >= l,
                };
                if !acceptable {
                    return Stop::NoLiquidity;
                }
            }
            let level = match opp {
                Side::Buy => inst.bids.levels[idx],
                Side::Sell => inst.asks.levels[idx],
            };
            let maker_slot = level.head;
            let maker = self.orders.orders[maker_slot as usize];
            let mut qty = t.leaves.min(maker.leaves);
            if let (Some(_), Side::Buy) = (budget, t.side) {
                // Largest whole-lot quantity the remaining hold pays for.
                let lot = inst.spec.lot;
                let per_unit = price as u128 * inst.spec.quote_per_unit as u128;
                let cost = |q: u64| -> u128 {
                    let n = per_unit * q as u128;
                    n + (n * inst.spec.taker_bps as u128).div_ceil(10_000)
                };
                let held = t.held as u128;
                let mut q = (held * 10_000 / (per_unit * (10_000 + inst.spec.taker_bps as u128))).min(qty as u128) as u64;
                q -= q % lot;
                while q > 0 && cost(q) > held {
                    q -= lot;
                }
                if q == 0 {
                    return Stop::Budget;
                }
                qty = q;
            }
            self.fill(slot, maker_slot, idx, price, qty, out);
        }
    }

    /// One execution between taker `t` and the maker at the head of level `idx`.
    fn fill(&mut self, t: u32, m: u32, idx: usize, price: i64, qty: u64, out: &mut Vec<Event>) {
        let taker = self.orders.orders[t as usize];
        let maker = self.orders.orders[m as usize];
        let inst = self.instruments[taker.instrument.0 as usize].as_ref().expect("live instrument");
        let spec = inst.spec;
        let n = inst.notional(price, qty).expect("notional within the hold that was checked");
        let base_amt = qty * spec.base_per_unit;
        let taker_fee = ceil_bps(n, spec.taker_bps as u64);
        let maker_fee: i64 =
            if spec.maker_bps >= 0 { ceil_bps(n, spec.maker_bps as u64) as i64 } else { -(floor_bps(n, (-spec.maker_bps) as u64) as i64) };
        let fee_acct = self.limits.fee_account;
        let (buyer, seller) = if taker.side == Side::Buy { (t, m) } else { (m, t) };
        let (b, s) = (self.orders.orders[buyer as usize], self.orders.orders[seller as usize]);
        let buyer_fee = if buyer == t { taker_fee as i64 } else { maker_fee };
        let seller_fee = if seller == t { taker_fee as i64 } else { maker_fee };
        let l = &mut self.ledger;
        let fail = "settlement within holds checked at entry";
        // Quote: the buyer's hold pays the notional to the seller; base: the
        // seller's hold delivers to the buyer.
        l.settle(b.account, s.account, spec.quote, n).expect(fail);
        l.settle(s.account, b.account, spec.base, base_amt).expect(fail);
        // Fees first (buyer's from its hold, seller's from its proceeds),
        // then rebates, so the fee account is paid before it pays.
        let mut buyer_spent = n;
        if buyer_fee > 0 {
            l.settle(b.account, fee_acct, spec.quote, buyer_fee as u64).expect(fail);
            buyer_spent += buyer_fee as u64;
        }
        if seller_fee > 0 {
            l.transfer_or_same(s.account, fee_acct, spec.quote, seller_fee as u64).expect(fail);
        }
        if buyer_fee < 0 {
            l.transfer_or_same(fee_acct, b.account, spec.quote, (-buyer_fee) as u64).expect(fail);
        }
        if seller_fee < 0 {
            l.transfer_or_same(fee_acct, s.account, spec.quote, (-seller_fee) as u64).expect(fail);
        }
        {
            let o = &mut self.orders.orders[buyer as usize];
            o.held -= buyer_spent;
            o.leaves -= qty;
        }
        {
            let o = &mut self.orders.orders[seller as usize];
            o.held -= base_amt;
            o.leaves -= qty;
        }
        let match_id = self.next_match_id;
        self.next_match_id += 1;
        let (tl, ml) = (self.orders.orders[t as usize].leaves, self.orders.orders[m as usize].leaves);
        let (tfee, mfee) = if t == buyer { (buyer_fee, seller_fee) } else { (seller_fee, buyer_fee) };
        out.push(Event::Executed { match_id, order: maker.id, account: maker.account, maker: true, price, qty, fee: mfee, leaves: ml });
        out.push(Event::Executed { match_id, order: taker.id, account: taker.account, maker: false, price, qty, fee: tfee, leaves: tl });
        out.push(Event::BookExecute { order: maker.id, qty });
        let inst = self.instruments[taker.instrument.0 as usize].as_mut().expect("live instrument");
        let level = &mut inst.ladder(maker.side).levels[idx];
        level.qty -= qty;
        if ml == 0 {
            out.push(Event::BookDelete { order: maker.id });
            self.unlink(m);
            self.finish(m);
        }
    }

    /// Puts the order in `slot` on its book (after matching).
    fn rest(&mut self, slot: u32, out: &mut Vec<Event>) {
        let o = self.orders.orders[slot as usize];
        self.link_level(slot, &o);
        self.link_account(slot, o.account);
        out.push(Event::BookAdd { order: o.id, instrument: o.instrument, side: o.side, price: o.price, qty: o.leaves });
    }

    /// Takes a resting order off its level and its account list.
    fn unlink(&mut self, slot: u32) {
        let o = self.orders.orders[slot as usize];
        self.unlink_level(slot, &o);
        self.unlink_account(slot, &o);
    }

    // The four link helpers below are written without branches on whether
    // a neighbour exists (about one order per level in exchange-core's mix,
    // so such a branch is a coin toss the CPU mispredicts half the time):
    // the level's head and tail are chosen with `select_unpredictable`
    // (a conditional move, not a branch), and a write to a
    // missing neighbour goes to the order's own slot instead, whose links
    // are dead at that moment (an order being unlinked is relinked or
    // freed next; one being linked has its own links written last).

    /// Appends the order in `slot` (`o` is a copy of it) to the tail of its
    /// price level.
    #[inline(always)]
    fn link_level(&mut self, slot: u32, o: &Order) {
        let inst = self.instruments[o.instrument.0 as usize].as_mut().expect("live instrument");
        let idx = inst.level_index(o.price);
        let ladder = inst.ladder(o.side);
        let level = &mut ladder.levels[idx];
        let tail = level.tail;
        level.head = select_unpredictable(tail == NIL, slot, level.head);
        level.tail = slot;
        level.qty += o.leaves;
        // Idempotent and branch-free when the level is already present.
        ladder.present.insert(idx);
        self.orders.orders[select_unpredictable(tail == NIL, slot, tail) as usize].next = slot;
        let e = &mut self.orders.orders[slot as usize];
        e.prev = tail;
        e.next = NIL;
    }

    /// Puts the order in `slot` at the head of its account's list.
    #[inline(always)]
    fn link_account(&mut self, slot: u32, account: AccountId) {
        let head = self.account_orders[account.0 as usize];
        self.orders.orders[select_unpredictable(head == NIL, slot, head) as usize].acct_prev = slot;
        let e = &mut self.orders.orders[slot as usize];
        e.acct_prev = NIL;
        e.acct_next = head;
        self.account_orders[account.0 as usize] = slot;
    }

    /// Takes the order `o` (a copy of the resting order in `slot`) off its
    /// price level.
    #[inline(always)]
    fn unlink_level(&mut self, slot: u32, o: &Order) {
        let inst = self.instruments[o.instrument.0 as usize].as_mut().expect("live instrument");
        let idx = inst.level_index(o.price);
        let ladder = inst.ladder(o.side);
        let level = &mut ladder.levels[idx];
        let (prev, next) = (o.prev, o.next);
        level.head = select_unpredictable(prev == NIL, next, level.head);
        level.tail = select_unpredictable(next == NIL, prev, level.tail);
        level.qty -= o.leaves;
        if level.head == NIL {
            ladder.present.remove(idx);
        }
        self.orders.orders[select_unpredictable(prev == NIL, slot, prev) as usize].next = next;
        self.orders.orders[select_unpredictable(next == NIL, slot, next) as usize].prev = prev;
    }

    /// Takes the order `o` (a copy of the resting order in `slot`) off its
    /// account's list.
    #[inline(always)]
    fn unlink_account(&mut self, slot: u32, o: &Order) {
        let (prev, next) = (o.acct_prev, o.acct_next);
        let head = &mut self.account_orders[o.account.0 as usize];
        *head = select_unpredictable(prev == NIL, next, *head);
        self.orders.orders[select_unpredictable(prev == NIL, slot, prev) as usize].acct_next = next;
        self.orders.orders[select_unpredictable(next == NIL, slot, next) as usize].acct_prev = prev;
    }

    /// Releases what an order still holds and frees its slot.
    fn finish(&mut self, slot: u32) {
        let o = self.orders.orders[slot as usize];
        if o.held > 0 {
            let spec = self.instruments[o.instrument.0 as usize].as_ref().expect("live instrument").spec;
            let asset = if o.side == Side::Buy { spec.quote } else { spec.base };
            self.ledger.release(o.account, asset, o.held).expect("an order's hold is in the ledger");
        }
        self.orders.release(slot);
    }

    fn owned(&self, account: AccountId, order: OrderId) -> Result<u32, Reject> {
        let slot = self.orders.find(order).ok_or(Reject::UnknownOrder)?;
        if self.orders.orders[slot as usize].account != account {
            return Err(Reject::NotOwner);
        }
        Ok(slot)
    }

    /// Reduces a resting order's remaining quantity to `qty` (0 removes it).
    fn reduce(&mut self, account: AccountId, order: OrderId, qty: u64, amend: bool, out: &mut Vec<Event>) -> Result<(), Reject> {
        let slot = self.owned(account, order)?;
        let o = self.orders.orders[slot as usize];
        if qty >= o.leaves {
            return Err(Reject::NotReduced);
        }
        let inst = self.instruments[o.instrument.0 as usize].as_ref().expect("live instrument");
        if off_lot(qty, inst.spec.lot) {
            return Err(Reject::QtyOffLot);
        }
        let cut = o.leaves - qty;
        if qty == 0 {
            out.push(Event::Canceled { order, account, qty: cut, leaves: 0, reason: CancelReason::Requested });
            out.push(Event::BookDelete { order });
            self.unlink(slot);
            self.finish(slot);
            return Ok(());
        }
        let (asset, keep) = match o.side {
            Side::Buy => (inst.spec.quote, inst.buy_reserve(o.price, qty).expect("smaller than the entry reserve")),
            Side::Sell => (inst.spec.base, qty * inst.spec.base_per_unit),
        };
        let release = o.held - keep;
        let idx = inst.level_index(o.price);
        if release > 0 {
            self.ledger.release(account, asset, release).expect("an order's hold is in the ledger");
        }
        let inst = self.instruments[o.instrument.0 as usize].as_mut().expect("live instrument");
        inst.ladder(o.side).levels[idx].qty -= cut;
        let e = &mut self.orders.orders[slot as usize];
        e.leaves = qty;
        e.held = keep;
        if amend {
            out.push(Event::Amended { order, account, leaves: qty });
        } else {
            out.push(Event::Canceled { order, account, qty: cut, leaves: qty, reason: CancelReason::Requested });
        }
        out.push(Event::BookReduce { order, qty: cut });
        Ok(())
    }

    fn replace(&mut self, account: AccountId, order: OrderId, price: i64, qty: u64, out: &mut Vec<Event>) -> Result<(), Reject> {
        let slot = self.owned(account, order)?;
        let o = self.orders.orders[slot as usize];
        let inst = self.instrument(o.instrument)?;
        if inst.spec.status == Status::Halted {
            return Err(Reject::InstrumentHalted);
        }
        Self::check_qty(&inst.spec, qty)?;
        Self::check_price(&inst.spec, price)?;
        let (asset, need) = match o.side {
            Side::Buy => (inst.spec.quote, inst.buy_reserve(price, qty).ok_or(Reject::Overflow)?),
            Side::Sell => (inst.spec.base, qty.checked_mul(inst.spec.base_per_unit).ok_or(Reject::Overflow)?),
        };
        let (instrument, side) = (o.instrument, o.side);
        // Fast path when the new price does not cross: the same events,
        // balances and ids as cancel + new order (the slot comes back with
        // the next generation either way), without freeing and re-taking
        // the slot or releasing and re-taking the whole hold.
        let crosses = match side {
            Side::Buy => inst.best(Side::Sell).is_some_and(|i| inst.price_at(i) <= price),
            Side::Sell => inst.best(Side::Buy).is_some_and(|i| inst.price_at(i) >= price),
        };
        if !crosses {
            // The old order's hold counts toward the new one; one ledger
            // step checks and moves the difference.
            self.ledger.rehold(account, asset, o.held, need)?;
            out.push(Event::Canceled { order, account, qty: o.leaves, leaves: 0, reason: CancelReason::Replaced });
            out.push(Event::BookDelete { order });
            self.unlink_level(slot, &o);
            // A new order goes to the head of its account's list; when the
            // old one is already there, the list stays as it is.
            if o.acct_prev != NIL {
                self.unlink_account(slot, &o);
                self.link_account(slot, account);
            }
            let new = self.orders.renew(slot);
            let seq = self.next_seq;
            self.next_seq += 1;
            let e = &mut self.orders.orders[slot as usize];
            e.id = new;
            e.price = price;
            e.leaves = qty;
            e.held = need;
            e.seq = seq;
            let moved = *e;
            out.push(Event::Replaced { old: order, new, account });
            out.push(Event::Accepted { order: new, account, instrument, side, price, qty });
            self.link_level(slot, &moved);
            out.push(Event::BookAdd { order: new, instrument, side, price, qty });
            return Ok(());
        }
        // The old order's hold counts toward the new one.
        let available = self.ledger.balance(account, asset)?.available;
        if (available as u128) + (o.held as u128) < need as u128 {
            return Err(Reject::InsufficientBalance);
        }
        out.push(Event::Canceled { order, account, qty: o.leaves, leaves: 0, reason: CancelReason::Replaced });
        out.push(Event::BookDelete { order });
        self.unlink(slot);
        self.finish(slot);
        let before = out.len();
        let r = self.new_order(account, instrument, side, qty, OrderType::Limit { price, tif: TimeInForce::Gtc }, out);
        debug_assert!(r.is_ok(), "replacement validated above: {r:?}");
        if let Some(Event::Accepted { order: new, .. }) = out.get(before).copied() {
            out.insert(before, Event::Replaced { old: order, new, account });
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
        if let Some(i) = instrument {
            self.instrument(i)?;
        }
        let mut slot = self.account_orders[account.0 as usize];
        while slot != NIL {
            let o = self.orders.orders[slot as usize];
            let next = o.acct_next;
            if instrument.is_none_or(|i| i == o.instrument) && side.is_none_or(|s| s == o.side) {
                out.push(Event::Canceled { order: o.id, account, qty: o.leaves, leaves: 0, reason: CancelReason::MassCancel });
                out.push(Event::BookDelete { order: o.id });
                self.unlink(slot);
                self.finish(slot);
            }
            slot = next;
        }
        out.push(Event::Done);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Filled,
    NoLiquidity,
    Budget,
}
