//! Worked examples, one per order type, with every number checked by hand
//! in the comments.
//!
//! Instrument: price unit = 1 quote minor unit per quantity unit
//! (quote_per_unit 1), base_per_unit 1, tick 1, lot 1; maker −2 bps
//! (a rebate), taker 10 bps. Fee account 9.

use otedama_engine::*;

const FEE: AccountId = AccountId(9);
const A: AccountId = AccountId(0);
const B: AccountId = AccountId(1);
const C: AccountId = AccountId(2);
const BASE: AssetId = AssetId(0);
const QUOTE: AssetId = AssetId(1);
const I: InstrumentId = InstrumentId(0);

fn setup() -> (Exchange, Vec<Event>) {
    let mut ex = Exchange::new(Limits {
        accounts_max: 10,
        assets_max: 2,
        instruments_max: 1,
        orders_max: 64,
        levels_max: 100_000,
        fee_account: FEE,
    });
    let mut out = Vec::new();
    let spec = InstrumentSpec {
        id: I,
        symbol: *b"BTC/USD\0\0\0\0\0\0\0\0\0",
        base: BASE,
        quote: QUOTE,
        tick: 1,
        lot: 1,
        min_price: 1,
        max_price: 100_000,
        min_qty: 1,
        max_qty: 1_000_000,
        quote_per_unit: 1,
        base_per_unit: 1,
        maker_bps: -2,
        taker_bps: 10,
        status: Status::Trading,
    };
    let mut cmds = vec![CommandKind::AddInstrument { spec }];
    for a in [A, B, C] {
        cmds.push(CommandKind::CreateAccount { account: a });
        cmds.push(CommandKind::Deposit { account: a, asset: BASE, amount: 1_000 });
        cmds.push(CommandKind::Deposit { account: a, asset: QUOTE, amount: 10_000_000 });
    }
    for k in cmds {
        ex.apply(&Command { ts: 0, kind: k }, &mut out);
    }
    assert!(out.iter().all(|e| *e == Event::Done));
    out.clear();
    (ex, out)
}

fn limit(account: AccountId, side: Side, price: i64, qty: u64, tif: TimeInForce) -> Command {
    Command { ts: 1, kind: CommandKind::NewOrder { account, instrument: I, side, qty, order: OrderType::Limit { price, tif } } }
}

fn bal(ex: &Exchange, a: AccountId, asset: AssetId) -> (u64, u64) {
    let b = ex.ledger().balance(a, asset).unwrap();
    (b.available, b.held)
}

fn accepted(out: &[Event]) -> OrderId {
    out.iter().find_map(|e| if let Event::Accepted { order, .. } = e { Some(*order) } else { None }).unwrap()
}

#[test]
fn gtc_limit_rests_then_fills_as_maker_with_rebate() {
    let (mut ex, mut out) = setup();
    // A sells 100 at 20,000: holds 100 base.
    ex.apply(&limit(A, Side::Sell, 20_000, 100, TimeInForce::Gtc), &mut out);
    let a_id = accepted(&out);
    assert_eq!(bal(&ex, A, BASE), (900, 100));
    out.clear();
    // B buys 40 at 20,100 (taker). Reserve = 20,100×40 = 804,000 notional
    // + ceil(804,000×10/10⁴) = 804 fee + 40 (rounding slack) = 804,844.
    // Fills 40 at the maker's 20,000: notional 800,000, taker fee 800,
    // maker rebate floor(800,000×2/10⁴) = 160.
    ex.apply(&limit(B, Side::Buy, 20_100, 40, TimeInForce::Gtc), &mut out);
    let b_id = accepted(&out);
    assert!(out.contains(&Event::Executed {
        match_id: 1,
        order: a_id,
        account: A,
        maker: true,
        price: 20_000,
        qty: 40,
        fee: -160,
        leaves: 60
    }));
    assert!(out.contains(&Event::Executed {
        match_id: 1,
        order: b_id,
        account: B,
        maker: false,
        price: 20_000,
        qty: 40,
        fee: 800,
        leaves: 0
    }));
    // B: 10,000,000 − 800,000 − 800 = 9,199,200 quote, nothing held; +40 base.
    assert_eq!(bal(&ex, B, QUOTE), (9_199_200, 0));
    assert_eq!(bal(&ex, B, BASE), (1_040, 0));
    // A: +800,000 + 160 rebate; 60 base still held.
    assert_eq!(bal(&ex, A, QUOTE), (10_800_160, 0));
    assert_eq!(bal(&ex, A, BASE), (900, 60));
    // Fee account: 800 − 160 = 640.
    assert_eq!(bal(&ex, FEE, QUOTE), (640, 0));
    assert_eq!(ex.ledger().check_invariants(), Ok(()));
}

#[test]
fn ioc_fills_what_it_can_and_cancels_the_rest() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Sell, 100, 30, TimeInForce::Gtc), &mut out);
    ex.apply(&limit(A, Side::Sell, 101, 30, TimeInForce::Gtc), &mut out);
    out.clear();
    // B buys 100 IOC at 100: fills 30 at 100, the other 70 are canceled.
    ex.apply(&limit(B, Side::Buy, 100, 100, TimeInForce::Ioc), &mut out);
    let b_id = accepted(&out);
    assert!(out.contains(&Event::Canceled { order: b_id, account: B, qty: 70, leaves: 0, reason: CancelReason::Unfilled }));
    // Paid 3,000 + ceil(3,000×10/10⁴) = 3 fee; the rest of the hold came back.
    assert_eq!(bal(&ex, B, QUOTE), (10_000_000 - 3_003, 0));
    assert_eq!(bal(&ex, B, BASE), (1_030, 0));
}

#[test]
fn fok_fills_completely_or_not_at_all() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Sell, 100, 30, TimeInForce::Gtc), &mut out);
    ex.apply(&limit(C, Side::Sell, 102, 30, TimeInForce::Gtc), &mut out);
    out.clear();
    // 50 at ≤ 101: only 30 available, so nothing executes.
    ex.apply(&limit(B, Side::Buy, 101, 50, TimeInForce::Fok), &mut out);
    assert!(!out.iter().any(|e| matches!(e, Event::Executed { .. })));
    assert!(out.iter().any(|e| matches!(e, Event::Canceled { qty: 50, reason: CancelReason::Unfilled, .. })));
    assert_eq!(bal(&ex, B, QUOTE), (10_000_000, 0));
    out.clear();
    // 50 at ≤ 102: 30 at 100 and 20 at 102 = 3,000 + 2,040 = 5,040 notional;
    // fees ceil(3.0) + ceil(2.04) = 3 + 3 = 6.
    ex.apply(&limit(B, Side::Buy, 102, 50, TimeInForce::Fok), &mut out);
    assert_eq!(out.iter().filter(|e| matches!(e, Event::Executed { maker: false, .. })).count(), 2);
    assert_eq!(bal(&ex, B, QUOTE), (10_000_000 - 5_046, 0));
}

#[test]
fn market_buy_with_protection_stops_at_the_worst_price() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Sell, 100, 10, TimeInForce::Gtc), &mut out);
    ex.apply(&limit(A, Side::Sell, 110, 10, TimeInForce::Gtc), &mut out);
    out.clear();
    let cmd = Command {
        ts: 2,
        kind: CommandKind::NewOrder {
            account: B,
            instrument: I,
            side: Side::Buy,
            qty: 20,
            order: OrderType::Market { protection: Some(105), budget: None },
        },
    };
    ex.apply(&cmd, &mut out);
    // Takes the 10 at 100, refuses 110 > 105, cancels 10.
    assert_eq!(out.iter().filter(|e| matches!(e, Event::Executed { maker: false, qty: 10, price: 100, .. })).count(), 1);
    assert!(out.iter().any(|e| matches!(e, Event::Canceled { qty: 10, reason: CancelReason::Unfilled, .. })));
    // 1,000 + ceil(1.0) = 1,001.
    assert_eq!(bal(&ex, B, QUOTE), (10_000_000 - 1_001, 0));
}

#[test]
fn market_buy_with_a_quote_budget_spends_at_most_the_budget() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Sell, 1_000, 100, TimeInForce::Gtc), &mut out);
    out.clear();
    // Budget 5,500 at price 1,000 and 10 bps: 5 units cost 5,000 + 5 = 5,005;
    // 6 would cost 6,006 > 5,500. So 5 fill and the budget stops it.
    let cmd = Command {
        ts: 2,
        kind: CommandKind::NewOrder {
            account: B,
            instrument: I,
            side: Side::Buy,
            qty: 100,
            order: OrderType::Market { protection: None, budget: Some(5_500) },
        },
    };
    ex.apply(&cmd, &mut out);
    assert!(out.iter().any(|e| matches!(e, Event::Executed { maker: false, qty: 5, price: 1_000, fee: 5, .. })));
    assert!(out.iter().any(|e| matches!(e, Event::Canceled { qty: 95, reason: CancelReason::BudgetExhausted, .. })));
    assert_eq!(bal(&ex, B, QUOTE), (10_000_000 - 5_005, 0));
}

#[test]
fn cancel_reduces_to_the_given_quantity_and_races_safely() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Buy, 100, 50, TimeInForce::Gtc), &mut out);
    let id = accepted(&out);
    // Reserve for 50 at 100: 5,000 + ceil(5,000×10/10⁴) = 5 + 50 = 5,055.
    assert_eq!(bal(&ex, A, QUOTE), (10_000_000 - 5_055, 5_055));
    out.clear();
    // Reduce to 20: keep 2,000 + 2 + 20 = 2,022 held.
    ex.apply(&Command { ts: 2, kind: CommandKind::Cancel { account: A, order: id, qty: 20 } }, &mut out);
    assert_eq!(out[0], Event::Canceled { order: id, account: A, qty: 30, leaves: 20, reason: CancelReason::Requested });
    assert_eq!(bal(&ex, A, QUOTE), (10_000_000 - 2_022, 2_022));
    out.clear();
    // A fill of 15 arrives first; a "reduce to 10" sent before it saw the
    // fill leaves 5 → it reduces to... nothing more: 5 < 10, NotReduced.
    ex.apply(&limit(B, Side::Sell, 100, 15, TimeInForce::Gtc), &mut out);
    out.clear();
    ex.apply(&Command { ts: 3, kind: CommandKind::Cancel { account: A, order: id, qty: 10 } }, &mut out);
    assert_eq!(out, vec![Event::Rejected { reason: Reject::NotReduced }]);
    out.clear();
    // Cancel all.
    ex.apply(&Command { ts: 4, kind: CommandKind::Cancel { account: A, order: id, qty: 0 } }, &mut out);
    assert_eq!(out[0], Event::Canceled { order: id, account: A, qty: 5, leaves: 0, reason: CancelReason::Requested });
    // Spent 1,500 + rebate floor(1,500×2/10⁴) = 0; nothing held.
    assert_eq!(bal(&ex, A, QUOTE), (10_000_000 - 1_500, 0));
}

#[test]
fn replace_loses_priority_and_amend_keeps_it() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Sell, 100, 10, TimeInForce::Gtc), &mut out);
    let a = accepted(&out);
    out.clear();
    ex.apply(&limit(C, Side::Sell, 100, 10, TimeInForce::Gtc), &mut out);
    let c = accepted(&out);
    out.clear();
    // Amend A down to 5: A stays first.
    ex.apply(&Command { ts: 2, kind: CommandKind::Amend { account: A, order: a, qty: 5 } }, &mut out);
    assert_eq!(out[0], Event::Amended { order: a, account: A, leaves: 5 });
    out.clear();
    ex.apply(&limit(B, Side::Buy, 100, 5, TimeInForce::Ioc), &mut out);
    assert!(out.iter().any(|e| matches!(e, Event::Executed { maker: true, order, .. } if *order == a)));
    out.clear();
    // Replace C (same price): it loses its place behind a new order from A.
    ex.apply(&limit(A, Side::Sell, 100, 10, TimeInForce::Gtc), &mut out);
    let a2 = accepted(&out);
    out.clear();
    ex.apply(&Command { ts: 3, kind: CommandKind::Replace { account: C, order: c, price: 100, qty: 10 } }, &mut out);
    let c2 = match out[2] {
        Event::Replaced { old, new, .. } => {
            assert_eq!(old, c);
            new
        }
        e => panic!("expected Replaced, got {e:?}"),
    };
    out.clear();
    ex.apply(&limit(B, Side::Buy, 100, 10, TimeInForce::Ioc), &mut out);
    assert!(out.iter().any(|e| matches!(e, Event::Executed { maker: true, order, .. } if *order == a2)));
    assert!(!out.iter().any(|e| matches!(e, Event::Executed { order, .. } if *order == c2)));
}

#[test]
fn mass_cancel_by_side() {
    let (mut ex, mut out) = setup();
    ex.apply(&limit(A, Side::Buy, 90, 10, TimeInForce::Gtc), &mut out);
    ex.apply(&limit(A, Side::Buy, 91, 10, TimeInForce::Gtc), &mut out);
    ex.apply(&limit(A, Side::Sell, 120, 10, TimeInForce::Gtc), &mut out);
    out.clear();
    ex.apply(&Command { ts: 2, kind: CommandKind::MassCancel { account: A, instrument: Some(I), side: Some(Side::Buy) } }, &mut out);
    assert_eq!(out.iter().filter(|e| matches!(e, Event::Canceled { reason: CancelReason::MassCancel, .. })).count(), 2);
    assert_eq!(bal(&ex, A, QUOTE), (10_000_000, 0));
    assert_eq!(bal(&ex, A, BASE), (990, 10), "the sell stays");
}
