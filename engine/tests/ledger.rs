//! The ledger against an obviously correct model (a BTreeMap of balances),
//! on seeded random operations, with the conservation invariant checked
//! after every one. A failing seed is printed and replays alone.

use std::collections::BTreeMap;

use otedama_engine::*;
use rand::{Rng, SeedableRng};

#[derive(Default)]
struct Model {
    open: BTreeMap<u32, ()>,
    bal: BTreeMap<(u32, u16), (u64, u64)>,
}

const LIMITS: LedgerLimits = LedgerLimits { accounts_max: 16, assets_max: 3 };

impl Model {
    fn get(&self, a: u32, s: u16) -> Result<(u64, u64), Reject> {
        if !self.open.contains_key(&a) {
            return Err(Reject::UnknownAccount);
        }
        if s >= LIMITS.assets_max {
            return Err(Reject::UnknownAsset);
        }
        Ok(self.bal.get(&(a, s)).copied().unwrap_or((0, 0)))
    }
    fn fits(avail: u64, held: u64) -> bool {
        avail.checked_add(held).is_some()
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create(u32),
    Deposit(u32, u16, u64),
    Withdraw(u32, u16, u64),
    Transfer(u32, u32, u16, u64),
    Hold(u32, u16, u64),
    Release(u32, u16, u64),
    Settle(u32, u32, u16, u64),
}

fn model_apply(m: &mut Model, op: Op) -> Result<(), Reject> {
    match op {
        Op::Create(a) => {
            if a >= LIMITS.accounts_max {
                return Err(Reject::AccountLimit);
            }
            if m.open.insert(a, ()).is_some() {
                return Err(Reject::AccountExists);
            }
            Ok(())
        }
        Op::Deposit(a, s, x) => {
            let (av, h) = m.get(a, s)?;
            if x == 0 {
                return Err(Reject::ZeroAmount);
            }
            let nav = av.checked_add(x).ok_or(Reject::Overflow)?;
            if !Model::fits(nav, h) {
                return Err(Reject::Overflow);
            }
            m.bal.insert((a, s), (nav, h));
            Ok(())
        }
        Op::Withdraw(a, s, x) => {
            let (av, h) = m.get(a, s)?;
            if x == 0 {
                return Err(Reject::ZeroAmount);
            }
            let nav = av.checked_sub(x).ok_or(Reject::InsufficientBalance)?;
            m.bal.insert((a, s), (nav, h));
            Ok(())
        }
        Op::Transfer(f, t, s, x) => {
            let (fa, fh) = m.get(f, s)?;
            let (ta, th) = m.get(t, s)?;
            if f == t {
                return Err(Reject::SameAccount);
            }
            if x == 0 {
                return Err(Reject::ZeroAmount);
            }
            let nfa = fa.checked_sub(x).ok_or(Reject::InsufficientBalance)?;
            let nta = ta.checked_add(x).ok_or(Reject::Overflow)?;
            if !Model::fits(nta, th) {
                return Err(Reject::Overflow);
            }
            m.bal.insert((f, s), (nfa, fh));
            m.bal.insert((t, s), (nta, th));
            Ok(())
        }
        Op::Hold(a, s, x) => {
            let (av, h) = m.get(a, s)?;
            let nav = av.checked_sub(x).ok_or(Reject::InsufficientBalance)?;
            m.bal.insert((a, s), (nav, h + x));
            Ok(())
        }
        Op::Release(a, s, x) => {
            let (av, h) = m.get(a, s)?;
            let nh = h.checked_sub(x).ok_or(Reject::InsufficientHeld)?;
            m.bal.insert((a, s), (av + x, nh));
            Ok(())
        }
        Op::Settle(f, t, s, x) => {
            let (fa, fh) = m.get(f, s)?;
            let (ta, th) = m.get(t, s)?;
            let nfh = fh.checked_sub(x).ok_or(Reject::InsufficientHeld)?;
            if f == t {
                m.bal.insert((f, s), (fa + x, nfh));
                return Ok(());
            }
            let nta = ta.checked_add(x).ok_or(Reject::Overflow)?;
            if !Model::fits(nta, th) {
                return Err(Reject::Overflow);
            }
            m.bal.insert((f, s), (fa, nfh));
            m.bal.insert((t, s), (nta, th));
            Ok(())
        }
    }
}

fn apply(l: &mut Ledger, op: Op) -> Result<(), Reject> {
    let (a, s) = (|x: u32| AccountId(x), |x: u16| AssetId(x));
    match op {
        Op::Create(x) => l.create_account(a(x)),
        Op::Deposit(x, y, z) => l.deposit(a(x), s(y), z),
        Op::Withdraw(x, y, z) => l.withdraw(a(x), s(y), z),
        Op::Transfer(x, w, y, z) => l.transfer(a(x), a(w), s(y), z),
        Op::Hold(x, y, z) => l.hold(a(x), s(y), z),
        Op::Release(x, y, z) => l.release(a(x), s(y), z),
        Op::Settle(x, w, y, z) => l.settle(a(x), a(w), s(y), z),
    }
}

fn amount(rng: &mut impl Rng) -> u64 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => u64::MAX - rng.random_range(0..1000),
        2 => rng.random(),
        _ => rng.random_range(1..10_000),
    }
}

fn random_op(rng: &mut impl Rng) -> Op {
    let acct = |rng: &mut dyn rand::RngCore| rng.random_range(0..LIMITS.accounts_max + 2);
    let asset = |rng: &mut dyn rand::RngCore| rng.random_range(0..LIMITS.assets_max + 1);
    match rng.random_range(0..12) {
        0 => Op::Create(acct(rng)),
        1 | 2 => Op::Deposit(acct(rng), asset(rng), amount(rng)),
        3 => Op::Withdraw(acct(rng), asset(rng), amount(rng)),
        4 | 5 => Op::Transfer(acct(rng), acct(rng), asset(rng), amount(rng)),
        6 | 7 => Op::Hold(acct(rng), asset(rng), amount(rng)),
        8 | 9 => Op::Release(acct(rng), asset(rng), amount(rng)),
        _ => Op::Settle(acct(rng), acct(rng), asset(rng), amount(rng)),
    }
}

#[test]
fn ledger_matches_the_model_and_conserves_every_asset() {
    let seeds: u64 = std::env::var("OTEDAMA_LEDGER_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut outcomes: BTreeMap<Result<(), Reject>, u64> = BTreeMap::new();
    for seed in 0..seeds {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut l = Ledger::new(LIMITS);
        let mut m = Model::default();
        for step in 0..5_000 {
            let op = random_op(&mut rng);
            let got = apply(&mut l, op);
            let want = model_apply(&mut m, op);
            assert_eq!(got, want, "seed {seed} step {step}: {op:?}");
            *outcomes.entry(got).or_default() += 1;
            assert_eq!(l.check_invariants(), Ok(()), "seed {seed} step {step}: {op:?}");
            if let Op::Deposit(a, s, _) | Op::Withdraw(a, s, _) | Op::Hold(a, s, _) | Op::Release(a, s, _) = op {
                let b = l.balance(AccountId(a), AssetId(s)).map(|b| (b.available, b.held));
                assert_eq!(b, m.get(a, s), "seed {seed} step {step}");
            }
        }
    }
    // The stream exercised every outcome, so it cannot pass on easy traffic.
    for r in [
        Ok(()),
        Err(Reject::UnknownAccount),
        Err(Reject::AccountExists),
        Err(Reject::AccountLimit),
        Err(Reject::UnknownAsset),
        Err(Reject::ZeroAmount),
        Err(Reject::InsufficientBalance),
        Err(Reject::InsufficientHeld),
        Err(Reject::Overflow),
        Err(Reject::SameAccount),
    ] {
        assert!(outcomes.get(&r).copied().unwrap_or(0) >= 100, "{r:?} seen {} times: {outcomes:?}", outcomes.get(&r).copied().unwrap_or(0));
    }
}

#[test]
fn worked_example_trade_settlement() {
    // A buyer holds quote, a seller holds base; a fill settles both and
    // pays a fee, and the leftover hold is released exactly.
    let mut l = Ledger::new(LedgerLimits { accounts_max: 3, assets_max: 2 });
    let (buyer, seller, fees) = (AccountId(0), AccountId(1), AccountId(2));
    let (base, quote) = (AssetId(0), AssetId(1));
    for a in [buyer, seller, fees] {
        l.create_account(a).unwrap();
    }
    l.deposit(buyer, quote, 10_000).unwrap();
    l.deposit(seller, base, 50).unwrap();
    l.hold(buyer, quote, 1_010).unwrap(); // 10 lots at 100 + max fee 10
    l.hold(seller, base, 10).unwrap();
    // Fill 10 at 99, taker fee 10: seller gets 990, fee account 10, base to buyer.
    l.settle(buyer, seller, quote, 990).unwrap();
    l.settle(buyer, fees, quote, 10).unwrap();
    l.settle(seller, buyer, base, 10).unwrap();
    l.release(buyer, quote, 10).unwrap();
    // 10,000 deposited − 990 to the seller − 10 fee = 9,000.
    assert_eq!(l.balance(buyer, quote).unwrap(), Balance { available: 9_000, held: 0 });
    assert_eq!(l.balance(seller, quote).unwrap(), Balance { available: 990, held: 0 });
    assert_eq!(l.balance(fees, quote).unwrap(), Balance { available: 10, held: 0 });
    assert_eq!(l.balance(buyer, base).unwrap(), Balance { available: 10, held: 0 });
    assert_eq!(l.balance(seller, base).unwrap(), Balance { available: 40, held: 0 });
    assert_eq!(l.check_invariants(), Ok(()));
    assert_eq!((l.supply(base), l.supply(quote)), (50, 10_000));
}
