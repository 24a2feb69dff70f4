//! Nothing acknowledged is lost and every client gets exactly what it
//! missed: replay by sequence across reconnects and restarts, ack-on-durable
//! through simulated power cuts, cancel-on-disconnect, drop copy, and
//! reconnect storms. Real gateways over loopback; the journal on files or
//! on the power-loss simulator (which keeps only synced bytes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use otedama_engine::Exchange;
use otedama_engine::codec::decode_events;
use otedama_journal::{Durability, FileStorage, Options, PowerLoss, Reader, SimStorage, Storage, kinds};
use otedama_net::client::{Client, LoginOptions};
use otedama_net::keys::{KeyStore, NewKey, path_in};
use otedama_net::sessions::{FLAG_ACK_ON_DURABLE, FLAG_CANCEL_ON_DISCONNECT};
use otedama_net::wire::{self, ServerMsg};
use rand::{Rng, SeedableRng};

mod common;
use common::*;

fn batch() -> Options {
    Options { durability: Durability::Batch, segment_bytes: 4 << 20, ..Options::default() }
}

fn file_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path().join("j")).unwrap());
    Env::start_on(dir, storage, batch(), 1, |_| {})
}

/// Every sequenced message until none arrives for `quiet`.
fn drain(c: &mut Client, quiet: Duration, into: &mut Vec<ServerMsg>) {
    while let Some(m) = c.recv_timeout(quiet).unwrap() {
        if m.seq() != 0 {
            into.push(m);
        }
    }
}

/// Reads sequenced messages until `n` have arrived (panics after 10 s).
fn expect_n(c: &mut Client, n: usize, into: &mut Vec<ServerMsg>) {
    let t = Instant::now();
    let start = into.len();
    while into.len() - start < n {
        assert!(t.elapsed() < Duration::from_secs(10), "only {} of {n} messages arrived", into.len() - start);
        if let Some(m) = c.recv_timeout(Duration::from_millis(100)).unwrap()
            && m.seq() != 0
        {
            into.push(m);
        }
    }
}

/// Logs in, retrying while the engine still holds the session that was
/// just dropped (LoginRejected 2: its close is on the way).
fn relogin(env: &Env, k: &NewKey, opts: LoginOptions) -> Client {
    let t = Instant::now();
    loop {
        match Client::login_with(env.addr(), k.id, k.secret, opts) {
            Ok(c) => return c,
            Err(otedama_net::client::ClientError::LoginRejected(2)) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("login: {e}"),
        }
    }
}

/// Logs in with a replay of everything from sequence 1 and returns the
/// whole stream as the journal holds it.
fn full_replay(env: &Env, k: &NewKey, upto: u64) -> Vec<ServerMsg> {
    let mut c = relogin(env, k, LoginOptions { next_seq: 1, ..Default::default() });
    assert_eq!(c.next_seq, 1);
    let mut v = Vec::new();
    expect_n(&mut c, upto as usize, &mut v);
    v
}

fn fill_count(stream: &[ServerMsg]) -> usize {
    stream.iter().filter(|m| matches!(m, ServerMsg::Executed(_))).count()
}

#[test]
fn missed_messages_are_replayed_after_a_reconnect_and_a_restart() {
    let mut env = file_env();
    env.setup_market();
    let mut alice = env.trader(0);
    let mut seen = Vec::new();
    for i in 0..20 {
        let cs = alice.take_client_seq();
        alice.send(|b| order(cs, 0, 100 + i, 5, 0).push(b)).unwrap();
    }
    expect_n(&mut alice, 20, &mut seen);
    drop(alice);
    // Bob sells into every bid while Alice is away: her fills are
    // numbered for her and wait in the journal.
    let mut bob = env.trader(1);
    let mut bob_seen = Vec::new();
    for _ in 0..10 {
        let cs = bob.take_client_seq();
        bob.send(|b| order(cs, 1, 1, 10, 1).push(b)).unwrap();
    }
    drain(&mut bob, Duration::from_millis(300), &mut bob_seen);
    assert_eq!(fill_count(&bob_seen), 20);

    let alice = env.trader(0);
    let first = alice.next_seq;
    assert_eq!(first, 21 + 20, "twenty answers, twenty fills numbered while away: the live stream goes on after them");
    drop(alice);
    let mut alice = relogin(&env, &env.traders[0], LoginOptions { next_seq: 21, ..Default::default() });
    assert_eq!(alice.next_seq, 21);
    expect_n(&mut alice, 20, &mut seen);
    assert!(seen[20..].iter().all(|m| matches!(m, ServerMsg::Executed(e) if e.maker == 1 && e.client_seq == 0 && e.account == 1)));
    assert_eq!(seen.last().unwrap().seq(), 40);

    // Drop copies: the one following everything sees both sides of every
    // fill; the one following accounts 2 and 3 only Bob's side.
    let all = full_replay(&env, &env.copy_all, 40);
    assert!(all.iter().all(|m| matches!(m, ServerMsg::Executed(_))));
    let copy23 = full_replay(&env, &env.copy_23, 20);
    assert!(copy23.iter().all(|m| matches!(m, ServerMsg::Executed(e) if e.account == 2)));
    // Read-only: a drop copy's order is refused by the gateway.
    let mut dc = relogin(&env, &env.copy_all, LoginOptions::default());
    let cs = dc.take_client_seq();
    dc.send(|b| order(cs, 0, 100, 1, 0).push(b)).unwrap();
    match dc.next_app().unwrap() {
        ServerMsg::Rejected(r) => assert_eq!(r.reason, wire::GatewayReject::ReadOnly as u16),
        other => panic!("{other:?}"),
    }
    drop(dc);

    // Restart: the numbering and the client_seq high-water marks are
    // rebuilt from the journal; Alice resumes where she was, with nothing
    // lost and nothing repeated, and later fills continue her stream.
    drop(alice);
    let before = env.stop();
    let rep = env.boot();
    assert!(rep.commands > 40);
    alice = relogin(&env, &env.traders[0], LoginOptions::default());
    assert_eq!(alice.next_seq, 41);
    assert_eq!(alice.take_client_seq(), 21, "client_seq continues above the highest the engine took");
    let cs = 21;
    alice.send(|b| order(cs, 0, 50, 1, 0).push(b)).unwrap();
    let mut more = Vec::new();
    expect_n(&mut alice, 1, &mut more);
    assert!(matches!(more[0], ServerMsg::Accepted(a) if a.seq == 41 && a.client_seq == 21));
    seen.extend(more);
    // The whole stream replayed from 1 equals, message for message, what
    // Alice received live across three connections and a restart.
    drop(alice);
    assert_eq!(full_replay(&env, &env.traders[0], 41), seen);
    let after = env.stop();
    assert_eq!(after.sessions.names().len(), before.sessions.names().len());
}

#[test]
fn cancel_on_disconnect_by_close_by_heartbeat_and_across_a_crash() {
    let sim = SimStorage::new();
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::start_on(dir, Arc::new(sim.clone()), batch(), 1, |_| {});
    env.setup_market();
    let cod = LoginOptions { flags: FLAG_CANCEL_ON_DISCONNECT | FLAG_ACK_ON_DURABLE, ..Default::default() };
    let rest = |c: &mut Client, n: i64| {
        let mut v = Vec::new();
        for i in 0..n {
            let cs = c.take_client_seq();
            c.send(|b| order(cs, 0, 200 + i, 3, 0).push(b)).unwrap();
        }
        expect_n(c, n as usize, &mut v);
        assert!(v.iter().all(|m| matches!(m, ServerMsg::Accepted(_))));
    };
    // 1. Logout.
    let mut alice = env.trader_with(0, cod);
    rest(&mut alice, 3);
    alice.send(|b| wire::Logout {}.push(b)).unwrap();
    drop(alice);
    // 2. Heartbeat timeout (100 ms promised, three misses).
    let mut carol = env.trader_with(2, LoginOptions { heartbeat_ms: 100, ..cod });
    rest(&mut carol, 2);
    std::thread::sleep(Duration::from_millis(600));
    // Nothing rests any more: a sell that would cross any of those bids
    // finds nothing.
    let mut bob = env.trader(1);
    let cs = bob.take_client_seq();
    bob.send(|b| order(cs, 1, 1, 100, 1).push(b)).unwrap();
    let mut got = Vec::new();
    expect_n(&mut bob, 2, &mut got);
    assert!(matches!(got[1], ServerMsg::Canceled(c) if c.reason == 1 && c.leaves == 0 && c.qty == 100), "{got:?}");
    // Each reconnecting session is told: Canceled(mass cancel) per order,
    // then Done, all with client_seq 0.
    for (i, n) in [(0usize, 3usize), (2, 2)] {
        let c = relogin(&env, &env.traders[i], LoginOptions::default());
        let next = c.next_seq;
        drop(c);
        let mut c = relogin(&env, &env.traders[i], LoginOptions { next_seq: next - n as u64 - 1, ..Default::default() });
        let mut v = Vec::new();
        expect_n(&mut c, n + 1, &mut v);
        assert!(v[..n].iter().all(|m| matches!(m, ServerMsg::Canceled(x) if x.reason == 3 && x.client_seq == 0)), "{v:?}");
        assert!(matches!(v[n], ServerMsg::Done(d) if d.client_seq == 0));
    }
    // 3. A crash with the session still open: the restarted engine cancels
    // before it serves anyone.
    let mut alice = env.trader_with(0, cod);
    rest(&mut alice, 4);
    let cut = sim.power_cut(PowerLoss { seed: 7, tear: true });
    let _ = env.gw.take().unwrap().shutdown();
    env.storage = Arc::new(cut);
    env.boot();
    let mut bob = env.trader(1);
    let cs = bob.take_client_seq();
    bob.send(|b| order(cs, 1, 1, 100, 1).push(b)).unwrap();
    let mut got = Vec::new();
    expect_n(&mut bob, 2, &mut got);
    assert!(matches!(got[1], ServerMsg::Canceled(c) if c.reason == 1 && c.qty == 100), "nothing rests after the restart: {got:?}");
    alice.set_addr(env.addr());
    let r = alice.reconnect().unwrap();
    assert_eq!(r.lost, 0, "ack-on-durable: everything Alice saw survived the power cut");
    let mut v = Vec::new();
    expect_n(&mut alice, 5, &mut v);
    assert!(v[..4].iter().all(|m| matches!(m, ServerMsg::Canceled(x) if x.reason == 3)), "{v:?}");
}

/// Every order id the events records hold as Accepted.
fn accepted_in_journal(storage: Arc<dyn Storage>) -> BTreeSet<u64> {
    let mut r = Reader::open_with(storage, None, 1, false).unwrap();
    let mut ev = Vec::new();
    let mut ids = BTreeSet::new();
    while let Some(rec) = r.try_next().unwrap() {
        if rec.kind == kinds::EXCHANGE_EVENTS {
            decode_events(rec.payload, &mut ev).unwrap();
            for e in &ev {
                if let otedama_engine::Event::Accepted { order, .. } = e {
                    ids.insert(order.0);
                }
            }
        }
    }
    ids
}

#[test]
fn power_cuts_under_ack_on_durable_lose_nothing_acknowledged() {
    let mut sim = SimStorage::new();
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::start_on(dir, Arc::new(sim.clone()), batch(), 1, |_| {});
    env.setup_market();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let durable = LoginOptions { flags: FLAG_ACK_ON_DURABLE, ..Default::default() };
    let mut clients: Vec<Client> = (0..3).map(|i| env.trader_with(i, durable)).collect();
    let mut acked = BTreeSet::new();
    let mut total_seen = 0usize;
    for round in 0..8u64 {
        let cut_after = rng.random_range(10..200);
        let mut seen = 0;
        while seen < cut_after {
            for c in clients.iter_mut() {
                let cs = c.take_client_seq();
                let side = rng.random_range(0..2u8);
                let price = rng.random_range(95..105);
                let tif = rng.random_range(0..2u8);
                c.send(|b| order(cs, side, price, rng.random_range(1..20), tif).push(b)).unwrap();
            }
            for c in clients.iter_mut() {
                while let Some(m) = c.recv_timeout(Duration::from_millis(2)).unwrap() {
                    if let ServerMsg::Accepted(a) = m {
                        acked.insert(a.order);
                    }
                    seen += (m.seq() != 0) as usize;
                }
            }
        }
        total_seen += seen;
        // The power goes: what the clients read so far is all they saw.
        let cut = sim.power_cut(PowerLoss { seed: round, tear: true });
        let _ = env.gw.take().unwrap().shutdown();
        sim = cut;
        env.storage = Arc::new(sim.clone());
        env.boot();
        let present = accepted_in_journal(env.storage.clone());
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(missing.is_empty(), "round {round}: acknowledged orders lost: {missing:?}");
        for c in clients.iter_mut() {
            c.set_addr(env.addr());
            let r = c.reconnect().unwrap();
            assert_eq!(r.lost, 0, "round {round}");
        }
    }
    assert!(total_seen > 500, "{total_seen}");
    // The state the restarted engines built equals a fresh replay of the
    // surviving journal.
    drop(clients);
    let state = env.stop();
    let mut fresh = Exchange::new(limits());
    let mut r = Reader::open_with(env.storage.clone(), None, 1, false).unwrap();
    otedama_net::sequencer::replay(&mut r, &mut fresh).unwrap();
    assert_eq!(fresh.state_hash(), state.exchange.state_hash());
}

#[test]
fn reconnect_storms_while_others_trade() {
    let env = file_env();
    env.setup_market();
    // Sixteen more trader keys on accounts 1 and 2: their sessions drop
    // and come back asking for replay, again and again.
    let kp = path_in(env.dir.path());
    let mut ks = KeyStore::load(&kp).unwrap();
    let storm: Vec<NewKey> = (0..16).map(|i| ks.add(1 + (i % 2), false, "storm").unwrap()).collect();
    ks.save(&kp).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let addr = env.addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Two steady traders cross each other on accounts 1 and 2.
    let traders: Vec<_> = (0..2)
        .map(|i| {
            let (k, stop) = (env.traders[i], stop.clone());
            std::thread::spawn(move || {
                let mut c = Client::login(addr, k.id, k.secret).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let cs = c.take_client_seq();
                    c.send(|b| order(cs, i as u8, 100, 1, 0).push(b)).unwrap();
                    while c.recv_timeout(Duration::from_micros(200)).unwrap().is_some() {}
                    n += 1;
                }
                n
            })
        })
        .collect();
    let storms: Vec<_> = storm
        .iter()
        .map(|k| {
            let k = (k.id, k.secret);
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(k.0);
                // From the first message numbered for this key (the
                // engine learnt of it when the key store changed).
                let mut c = Client::login_with(addr, k.0, k.1, LoginOptions { next_seq: 1, ..Default::default() }).unwrap();
                assert_eq!(c.next_seq, 1);
                let mut got = Vec::new();
                for _ in 0..15 {
                    let until = Instant::now() + Duration::from_millis(rng.random_range(5..40));
                    while Instant::now() < until {
                        if let Some(m) = c.recv_timeout(Duration::from_millis(2)).unwrap()
                            && m.seq() != 0
                        {
                            got.push(m);
                        }
                    }
                    // Drop the connection abruptly and come back for
                    // everything after the last message read. The engine may
                    // still see the old session for a moment.
                    loop {
                        match c.reconnect() {
                            Ok(r) => {
                                assert_eq!(r.lost, 0);
                                break;
                            }
                            Err(otedama_net::client::ClientError::LoginRejected(2)) => std::thread::sleep(Duration::from_millis(5)),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                (k, got)
            })
        })
        .collect();
    let results: Vec<_> = storms.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let orders: u64 = traders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(orders > 200, "{orders}");
    let mut total = 0;
    for ((id, secret), got) in results {
        // Contiguous from 1 (the client checks every arrival against the
        // next expected number) and equal to a full replay.
        assert!(got.iter().enumerate().all(|(i, m)| m.seq() == i as u64 + 1));
        total += got.len();
        let k = NewKey { id, secret };
        assert_eq!(full_replay(&env, &k, got.len() as u64), got);
    }
    assert!(total > 1000, "the storm sessions received {total} messages");
}
