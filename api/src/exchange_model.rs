//! The exchange's read model: what the cold path serves about instruments,
//! order books, trades and tickers, rebuilt from the exchange journal alone
//! (read-only; the engine is never asked).
//!
//! Fed one journal record at a time ([`ExchangeModel::apply_record`]):
//! command records (for instrument definitions: an `AddInstrument`,
//! `SetInstrumentStatus` or `SetFees` counts once its events say Done) and
//! events records. Books are rebuilt from the market-by-order events
//! (`BookAdd`, `BookExecute`, `BookReduce`, `BookDelete`): each resting
//! order is tracked by id and aggregated into price levels, so the L2 view
//! is exact at every journal position. Trades come from `Executed` pairs
//! (maker and taker share a match id); the taker's side and the instrument
//! come from the taker order's `Accepted`.
//!
//! Not served over HTTP yet: `otedama api` (the cold-path issue) builds on
//! this.

use std::collections::{BTreeMap, HashMap, VecDeque};

use otedama_engine::codec::{decode_command, decode_events};
use otedama_engine::{CommandKind, Event, Side, Status};
use otedama_journal::{Record, kinds};

/// A 24-hour window, in ns.
pub const DAY_NS: u64 = 86_400 * 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    pub id: u16,
    pub symbol: String,
    pub base: u16,
    pub quote: u16,
    pub tick: i64,
    pub lot: u64,
    pub min_price: i64,
    pub max_price: i64,
    pub min_qty: u64,
    pub max_qty: u64,
    pub maker_bps: i32,
    pub taker_bps: i32,
    pub trading: bool,
}

/// One price level: total quantity and number of orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: i64,
    pub qty: u64,
    pub orders: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    pub match_id: u64,
    /// Journal timestamp of the command that traded (ns since the epoch).
    pub ts: u64,
    pub price: i64,
    pub qty: u64,
    /// The taker's side: 0 buy, 1 sell.
    pub taker_side: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ticker {
    pub open: Option<i64>,
    pub high: Option<i64>,
    pub low: Option<i64>,
    pub last: Option<i64>,
    /// Base lots traded in the window.
    pub volume: u64,
    /// Σ price × qty over the window, in ticks × lots.
    pub quote_volume: u128,
    pub trades: u64,
}

#[derive(Debug, Clone, Copy)]
struct Resting {
    instrument: u16,
    side: Side,
    price: i64,
    qty: u64,
}

#[derive(Default)]
struct Book {
    /// price → (qty, orders)
    bids: BTreeMap<i64, (u64, u32)>,
    asks: BTreeMap<i64, (u64, u32)>,
    /// Journal sequence of the last record that changed this book.
    changed_seq: u64,
}

impl Book {
    fn side(&mut self, s: Side) -> &mut BTreeMap<i64, (u64, u32)> {
        match s {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}

/// Trades of one instrument: all of them (newest last) up to a cap, and
/// the 24-hour window's aggregates kept incrementally.
#[derive(Default)]
struct Tape {
    recent: VecDeque<Trade>,
    /// Older trades were dropped from `recent` (they are in the database).
    dropped: bool,
    /// Trades inside the ticker window, oldest first.
    window: VecDeque<Trade>,
    /// price → trades at that price in the window (for high and low).
    prices: BTreeMap<i64, u32>,
    volume: u64,
    quote_volume: u128,
}

/// Trades kept per instrument for `trades()` (older ones live in the
/// database the cold path projects into).
pub const TAPE_MAX: usize = 100_000;

impl Tape {
    /// Keeps the newest `max` trades (0: [`TAPE_MAX`]).
    fn push(&mut self, t: Trade, max: usize) {
        let max = if max == 0 { TAPE_MAX } else { max };
        if self.recent.len() >= max {
            self.recent.pop_front();
            self.dropped = true;
        }
        self.recent.push_back(t);
        self.window.push_back(t);
        *self.prices.entry(t.price).or_default() += 1;
        self.volume += t.qty;
        self.quote_volume += t.price as i128 as u128 * t.qty as u128;
    }

    fn evict_before(&mut self, from_ns: u64) {
        while let Some(t) = self.window.front().copied() {
            if t.ts >= from_ns {
                break;
            }
            self.window.pop_front();
            if let Some(n) = self.prices.get_mut(&t.price) {
                *n -= 1;
                if *n == 0 {
                    self.prices.remove(&t.price);
                }
            }
            self.volume -= t.qty;
            self.quote_volume -= t.price as i128 as u128 * t.qty as u128;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("record {seq}: {why}")]
    Decode { seq: u64, why: String },
}

/// The read model. Deterministic: the same records give the same state.
#[derive(Default)]
pub struct ExchangeModel {
    instruments: BTreeMap<u16, Instrument>,
    by_symbol: BTreeMap<String, u16>,
    books: BTreeMap<u16, Book>,
    resting: HashMap<u64, Resting>,
    /// order id → (instrument, side), from Accepted, for trades.
    orders: HashMap<u64, (u16, Side)>,
    tapes: BTreeMap<u16, Tape>,
    /// The instrument command waiting for its events record.
    pending: Option<CommandKind>,
    last_seq: u64,
    last_ts: u64,
    events: Vec<Event>,
    /// Trades kept per instrument ([`TAPE_MAX`] unless set).
    tape_max: usize,
}

fn symbol(b: &[u8; 16]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\0').to_string()
}

impl ExchangeModel {
    pub fn new() -> ExchangeModel {
        ExchangeModel::with_tape(TAPE_MAX)
    }

    /// A model keeping the newest `tape_max` trades per instrument.
    pub fn with_tape(tape_max: usize) -> ExchangeModel {
        ExchangeModel { tape_max: tape_max.max(1), ..ExchangeModel::default() }
    }

    /// The last journal sequence applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Applies one exchange-journal record (other kinds are skipped).
    pub fn apply_record(&mut self, rec: &Record<'_>) -> Result<(), ModelError> {
        self.last_seq = rec.seq;
        self.last_ts = self.last_ts.max(rec.timestamp_ns);
        let bad = |why: String| ModelError::Decode { seq: rec.seq, why };
        match rec.kind {
            kinds::EXCHANGE_COMMAND => {
                let (_, _, body) = otedama_net::sessions::split_envelope(rec.version, rec.payload).map_err(|e| bad(e.to_string()))?;
                let cmd = decode_command(body).map_err(|e| bad(e.to_string()))?;
                self.pending = match cmd.kind {
                    k @ (CommandKind::AddInstrument { .. } | CommandKind::SetInstrumentStatus { .. } | CommandKind::SetFees { .. }) => {
                        Some(k)
                    }
                    _ => None,
                };
            }
            kinds::EXCHANGE_EVENTS => {
                let mut events = std::mem::take(&mut self.events);
                decode_events(rec.payload, &mut events).map_err(|e| bad(e.to_string()))?;
                if let Some(k) = self.pending.take()
                    && events.first() == Some(&Event::Done)
                {
                    self.instrument_command(k);
                }
                for ev in &events {
                    self.event(ev, rec.timestamp_ns);
                }
                self.events = events;
            }
            _ => {}
        }
        Ok(())
    }

    fn instrument_command(&mut self, k: CommandKind) {
        match k {
            CommandKind::AddInstrument { spec } => {
                let i = Instrument {
                    id: spec.id.0,
                    symbol: symbol(&spec.symbol),
                    base: spec.base.0,
                    quote: spec.quote.0,
                    tick: spec.tick,
                    lot: spec.lot,
                    min_price: spec.min_price,
                    max_price: spec.max_price,
                    min_qty: spec.min_qty,
                    max_qty: spec.max_qty,
                    maker_bps: spec.maker_bps,
                    taker_bps: spec.taker_bps,
                    trading: spec.status == Status::Trading,
                };
                self.by_symbol.insert(i.symbol.clone(), i.id);
                self.instruments.insert(i.id, i);
            }
            CommandKind::SetInstrumentStatus { instrument, status } => {
                if let Some(i) = self.instruments.get_mut(&instrument.0) {
                    i.trading = status == Status::Trading;
                }
            }
            CommandKind::SetFees { instrument, maker_bps, taker_bps } => {
                if let Some(i) = self.instruments.get_mut(&instrument.0) {
                    i.maker_bps = maker_bps;
                    i.taker_bps = taker_bps;
                }
            }
            _ => {}
        }
    }

    fn level_change(&mut self, r: &Resting, qty: u64, removed: bool) {
        let b = self.books.entry(r.instrument).or_default();
        b.changed_seq = self.last_seq;
        let book = b.side(r.side);
        if let Some(l) = book.get_mut(&r.price) {
            l.0 -= qty;
            if removed {
                l.1 -= 1;
            }
            if l.1 == 0 {
                book.remove(&r.price);
            }
        }
    }

    fn event(&mut self, ev: &Event, ts: u64) {
        match *ev {
            Event::Accepted { order, instrument, side, .. } => {
                self.orders.insert(order.0, (instrument.0, side));
            }
            Event::BookAdd { order, instrument, side, price, qty } => {
                let r = Resting { instrument: instrument.0, side, price, qty };
                let b = self.books.entry(r.instrument).or_default();
                b.changed_seq = self.last_seq;
                let l = b.side(side).entry(price).or_default();
                l.0 += qty;
                l.1 += 1;
                self.resting.insert(order.0, r);
            }
            Event::BookExecute { order, qty } | Event::BookReduce { order, qty } => {
                if let Some(mut r) = self.resting.get(&order.0).copied() {
                    let q = qty.min(r.qty);
                    r.qty -= q;
                    self.level_change(&r, q, r.qty == 0);
                    if r.qty == 0 {
                        self.resting.remove(&order.0);
                    } else {
                        self.resting.insert(order.0, r);
                    }
                }
            }
            Event::BookDelete { order } => {
                if let Some(r) = self.resting.remove(&order.0) {
                    self.level_change(&r, r.qty, true);
                }
            }
            Event::Executed { match_id, order, maker, price, qty, leaves, .. } => {
                // Each match is reported once per side; the taker's event
                // names the instrument and the side that crossed.
                if !maker && let Some(&(instrument, side)) = self.orders.get(&order.0) {
                    let t = Trade { match_id, ts, price, qty, taker_side: side as u8 };
                    self.tapes.entry(instrument).or_default().push(t, self.tape_max);
                }
                if leaves == 0 {
                    self.orders.remove(&order.0);
                }
            }
            Event::Canceled { order, leaves: 0, .. } => {
                self.orders.remove(&order.0);
            }
            _ => {}
        }
    }

    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.instruments.values()
    }

    pub fn instrument_by_symbol(&self, s: &str) -> Option<&Instrument> {
        self.by_symbol.get(s).and_then(|id| self.instruments.get(id))
    }

    /// The best `depth` levels each side: bids best (highest) first, asks
    /// best (lowest) first.
    pub fn l2(&self, instrument: u16, depth: usize) -> (Vec<Level>, Vec<Level>) {
        let Some(b) = self.books.get(&instrument) else { return (Vec::new(), Vec::new()) };
        let level = |(&price, &(qty, orders)): (&i64, &(u64, u32))| Level { price, qty, orders };
        (b.bids.iter().rev().take(depth).map(level).collect(), b.asks.iter().take(depth).map(level).collect())
    }

    /// The journal sequence of the last record that changed the
    /// instrument's book (0: never): an L2 answer built at that version
    /// stays exact until it changes.
    pub fn book_seq(&self, instrument: u16) -> u64 {
        self.books.get(&instrument).map_or(0, |b| b.changed_seq)
    }

    /// Resting orders the model tracks (all instruments).
    pub fn resting_orders(&self) -> usize {
        self.resting.len()
    }

    /// The newest `limit` trades, newest first.
    pub fn trades(&self, instrument: u16, limit: usize) -> Vec<Trade> {
        self.tapes.get(&instrument).map(|t| t.recent.iter().rev().take(limit).copied().collect()).unwrap_or_default()
    }

    /// The newest `limit` trades with a match id below `before` (all when
    /// `None`), newest first: a page of the listing.
    pub fn trades_before(&self, instrument: u16, before: Option<u64>, limit: usize) -> Vec<Trade> {
        let Some(t) = self.tapes.get(&instrument) else { return Vec::new() };
        let end = before.map_or(t.recent.len(), |b| t.recent.partition_point(|x| x.match_id < b));
        t.recent.range(..end).rev().take(limit).copied().collect()
    }

    /// The oldest trade kept in memory, when older ones were dropped (the
    /// database has them).
    pub fn tape_cut(&self, instrument: u16) -> Option<u64> {
        self.tapes.get(&instrument).filter(|t| t.dropped).and_then(|t| t.recent.front().map(|x| x.match_id))
    }

    /// The 24-hour ticker as of `now_ns` (evicting older trades from the
    /// window).
    pub fn ticker(&mut self, instrument: u16, now_ns: u64) -> Ticker {
        let Some(t) = self.tapes.get_mut(&instrument) else { return Ticker::default() };
        t.evict_before(now_ns.saturating_sub(DAY_NS));
        Ticker {
            open: t.window.front().map(|x| x.price),
            high: t.prices.keys().next_back().copied(),
            low: t.prices.keys().next().copied(),
            last: t.window.back().map(|x| x.price),
            volume: t.volume,
            quote_volume: t.quote_volume,
            trades: t.window.len() as u64,
        }
    }

    /// The newest journal timestamp seen (ns).
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }
}
