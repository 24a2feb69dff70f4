//! The exchange read model fed from a real journal written by the
//! sequencer: a hand-checked book and tape, then a long random stream where
//! the model's resting orders must match the engine's at every step and no
//! book may ever be crossed.

use otedama_api::exchange_model::{ExchangeModel, Level};
use otedama_engine::workload::{self, Mix, Workload};
use otedama_engine::{
    AccountId, AssetId, Command, CommandKind, Exchange, InstrumentId, InstrumentSpec, Limits, OrderType, Side, Status, TimeInForce,
};
use otedama_journal::{Durability, Journal, Options, Reader, ReaderOptions};
use otedama_net::sequencer::Sequencer;

fn opts() -> Options {
    Options { durability: Durability::None, segment_bytes: 8 << 20, ..Options::default() }
}

fn feed(dir: &std::path::Path, model: &mut ExchangeModel, from: u64) -> u64 {
    let mut r = Reader::open(dir, from, ReaderOptions::default()).unwrap();
    let mut next = from;
    while let Some(rec) = r.try_next().unwrap() {
        model.apply_record(&rec).unwrap();
        next = rec.seq + 1;
    }
    next
}

fn limit(ts: u64, account: u32, side: Side, price: i64, qty: u64, tif: TimeInForce) -> Command {
    Command {
        ts,
        kind: CommandKind::NewOrder {
            account: AccountId(account),
            instrument: InstrumentId(1),
            side,
            qty,
            order: OrderType::Limit { price, tif },
        },
    }
}

#[test]
fn a_hand_checked_book_and_tape() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { accounts_max: 8, assets_max: 4, instruments_max: 4, orders_max: 64, levels_max: 1024, fee_account: AccountId(0) };
    let mut sq = Sequencer::new(Exchange::new(limits), Journal::open(dir.path(), opts()).unwrap());
    let mut symbol = [0u8; 16];
    symbol[..7].copy_from_slice(b"LTC-USD");
    let spec = InstrumentSpec {
        id: InstrumentId(1),
        symbol,
        base: AssetId(1),
        quote: AssetId(2),
        tick: 1,
        lot: 1,
        min_price: 1,
        max_price: 1000,
        min_qty: 1,
        max_qty: 1000,
        quote_per_unit: 1,
        base_per_unit: 1,
        maker_bps: 0,
        taker_bps: 0,
        status: Status::Trading,
    };
    let mut setup = vec![Command { ts: 1, kind: CommandKind::AddInstrument { spec } }];
    for a in 1..=2 {
        setup.push(Command { ts: 1, kind: CommandKind::CreateAccount { account: AccountId(a) } });
        for asset in [1, 2] {
            setup.push(Command { ts: 1, kind: CommandKind::Deposit { account: AccountId(a), asset: AssetId(asset), amount: 1_000_000 } });
        }
    }
    for c in &setup {
        sq.submit(c).unwrap();
    }
    for c in [
        limit(10, 1, Side::Buy, 100, 5, TimeInForce::Gtc),
        limit(11, 1, Side::Buy, 101, 3, TimeInForce::Gtc),
        limit(12, 1, Side::Buy, 101, 2, TimeInForce::Gtc),
        limit(13, 2, Side::Sell, 105, 4, TimeInForce::Gtc),
    ] {
        sq.submit(&c).unwrap();
    }
    sq.journal().sync().unwrap();
    let mut m = ExchangeModel::new();
    let next = feed(dir.path(), &mut m, 1);
    let i = m.instrument_by_symbol("LTC-USD").unwrap().clone();
    assert_eq!((i.id, i.tick, i.trading), (1, 1, true));
    let lv = |price, qty, orders| Level { price, qty, orders };
    assert_eq!(m.l2(1, 10), (vec![lv(101, 5, 2), lv(100, 5, 1)], vec![lv(105, 4, 1)]));
    assert_eq!(m.l2(1, 1).0, vec![lv(101, 5, 2)]);
    // A sell IOC for 6 at 100 takes both orders at 101, then 1 at 100.
    sq.submit(&limit(20_000, 2, Side::Sell, 100, 6, TimeInForce::Ioc)).unwrap();
    sq.submit(&Command { ts: 20_001, kind: CommandKind::SetInstrumentStatus { instrument: InstrumentId(1), status: Status::Halted } })
        .unwrap();
    sq.journal().sync().unwrap();
    feed(dir.path(), &mut m, next);
    assert_eq!(m.l2(1, 10), (vec![lv(100, 4, 1)], vec![lv(105, 4, 1)]));
    let tape = m.trades(1, 10);
    assert_eq!(tape.iter().map(|t| (t.price, t.qty, t.taker_side)).collect::<Vec<_>>(), vec![(100, 1, 1), (101, 2, 1), (101, 3, 1)]);
    let t = m.ticker(1, 20_001);
    assert_eq!((t.open, t.high, t.low, t.last, t.volume, t.trades), (Some(101), Some(101), Some(100), Some(100), 6, 3));
    assert_eq!(t.quote_volume, 101 * 5 + 100);
    assert!(!m.instrument_by_symbol("LTC-USD").unwrap().trading, "halted once its command was Done");
    // A day later the window is empty; the tape is not.
    let t = m.ticker(1, 20_001 + otedama_api::exchange_model::DAY_NS);
    assert_eq!((t.trades, t.volume, t.high), (0, 0, None));
    assert_eq!(m.trades(1, 1).len(), 1);
}

#[test]
fn a_random_stream_keeps_the_model_in_step_with_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut sq = Sequencer::new(Exchange::new(workload::limits()), Journal::open(dir.path(), opts()).unwrap());
    let mut w = Workload::new(Mix::ExchangeCore, 5);
    for c in w.setup() {
        sq.submit(&c).unwrap();
    }
    let mut m = ExchangeModel::new();
    let mut next = 1;
    let mut ev = Vec::new();
    let mut trades = 0;
    for round in 0..40 {
        for _ in 0..2_000 {
            let c = w.next_command();
            let (_, events) = sq.submit(&c).unwrap();
            ev.clear();
            ev.extend_from_slice(events);
            w.observe(&ev);
        }
        // Readers see what the writeback thread has published.
        sq.journal().sync().unwrap();
        next = feed(dir.path(), &mut m, next);
        assert_eq!(m.resting_orders(), sq.exchange().open_orders(), "round {round}");
        for i in m.instruments().map(|i| i.id).collect::<Vec<_>>() {
            let (bids, asks) = m.l2(i, usize::MAX);
            assert!(bids.iter().chain(&asks).all(|l| l.qty > 0 && l.orders > 0));
            assert!(bids.windows(2).all(|w| w[0].price > w[1].price) && asks.windows(2).all(|w| w[0].price < w[1].price));
            if let (Some(b), Some(a)) = (bids.first(), asks.first()) {
                assert!(b.price < a.price, "round {round}: crossed book {b:?} / {a:?}");
            }
            trades = trades.max(m.trades(i, usize::MAX).len());
        }
    }
    assert!(trades > 1000, "the stream traded: {trades}");
    assert!(m.resting_orders() > 100);
}
