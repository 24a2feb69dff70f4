//! End to end over loopback: a real gateway (io_uring I/O shards, engine
//! shard, journal, key store) and clients speaking the binary protocol.

use std::time::{Duration, Instant};

use otedama_engine::Exchange;
use otedama_journal::{Reader, ReaderOptions};
use otedama_net::client::{Client, ClientError};
use otedama_net::keys::{KeyStore, path_in};
use otedama_net::wire::{self, ServerMsg};
use rand::{Rng, SeedableRng};

mod common;
use common::*;

#[test]
fn every_message_type_end_to_end() {
    let env = Env::start(|_| {});
    env.setup_market();
    let mut a = env.admin();
    // Admin commands not covered by the setup.
    admin_ok(&mut a, |cs, b| wire::Withdraw { client_seq: cs, account: 3, asset: 1, reserved: 0, amount: 5 }.push(b));
    admin_ok(&mut a, |cs, b| wire::Transfer { client_seq: cs, from: 3, to: 4, asset: 2, reserved: [0; 6], amount: 7 }.push(b));
    admin_ok(&mut a, |cs, b| wire::SetFees { client_seq: cs, instrument: 1, reserved: 0, maker_bps: 0, taker_bps: 10 }.push(b));
    admin_ok(&mut a, |cs, b| wire::SetInstrumentStatus { client_seq: cs, instrument: 1, status: 1, reserved: 0 }.push(b));
    admin_ok(&mut a, |cs, b| wire::SetInstrumentStatus { client_seq: cs, instrument: 1, status: 0, reserved: 0 }.push(b));
    // An engine rejection comes back sequenced with the engine's code.
    let cs = a.take_client_seq();
    a.send(|b| wire::Withdraw { client_seq: cs, account: 3, asset: 1, reserved: 0, amount: u64::MAX }.push(b)).unwrap();
    match a.next_app().unwrap() {
        ServerMsg::Rejected(r) => {
            assert_eq!((r.client_seq, r.reason), (cs, otedama_engine::Reject::InsufficientBalance as u16));
            assert!(r.seq > 0, "engine answers are sequenced");
        }
        m => panic!("{m:?}"),
    }

    let mut maker = env.trader(0); // account 1
    let mut taker = env.trader(1); // account 2
    // Resting bid.
    let cs1 = maker.take_client_seq();
    maker.send(|b| order(cs1, 0, 100, 10, 0).push(b)).unwrap();
    let bid = match maker.next_app().unwrap() {
        ServerMsg::Accepted(m) => {
            assert_eq!((m.client_seq, m.account, m.price, m.qty, m.side), (cs1, 1, 100, 10, 0));
            assert!(m.ts > 0);
            m.order
        }
        m => panic!("{m:?}"),
    };
    // Amend keeps priority, quantity down.
    let cs = maker.take_client_seq();
    maker.send(|b| wire::Amend { client_seq: cs, account: 0, reserved: 0, order: bid, qty: 8 }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Amended(m) if m.leaves == 8 && m.client_seq == cs), "{got:?}");
    // Cancel reduces to 6 (OUCH semantics).
    let cs = maker.take_client_seq();
    maker.send(|b| wire::Cancel { client_seq: cs, account: 0, reserved: 0, order: bid, qty: 6 }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Canceled(m) if m.leaves == 6 && m.qty == 2), "{got:?}");
    // Replace: new id at 101.
    let cs = maker.take_client_seq();
    maker.send(|b| wire::Replace { client_seq: cs, account: 0, reserved: 0, order: bid, price: 101, qty: 6 }.push(b)).unwrap();
    // Canceled (reason replaced), Replaced, then the new order's Accepted.
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Canceled(m) if m.order == bid && m.reason == 4 && m.client_seq == cs), "{got:?}");
    let bid = match maker.next_app().unwrap() {
        ServerMsg::Replaced(m) => {
            assert_eq!(m.old_order, bid);
            m.new_order
        }
        m => panic!("{m:?}"),
    };
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.order == bid && m.price == 101), "{got:?}");
    // Taker sells 4 at market-able limit: taker gets Accepted + Executed,
    // the maker gets Executed unprompted (client_seq 0).
    let cs = taker.take_client_seq();
    taker.send(|b| order(cs, 1, 101, 4, 1).push(b)).unwrap();
    let mut got_exec = false;
    let mut got_cancel = false;
    while !(got_exec && got_cancel) {
        match taker.next_app().unwrap() {
            ServerMsg::Accepted(m) => assert_eq!(m.client_seq, cs),
            ServerMsg::Executed(m) => {
                assert_eq!((m.client_seq, m.maker, m.qty, m.price), (cs, 0, 4, 101));
                assert_eq!(m.fee, 1, "taker fee: 10 bps of 404 = 0.404, rounded up to 1");
                got_exec = true;
                got_cancel = true; // filled completely: no IOC remainder
            }
            m => panic!("{m:?}"),
        }
    }
    match maker.next_app().unwrap() {
        ServerMsg::Executed(m) => {
            assert_eq!((m.client_seq, m.order, m.maker, m.qty, m.leaves), (0, bid, 1, 4, 2));
        }
        m => panic!("{m:?}"),
    }
    // Market buy with a budget against no asks: canceled unfilled.
    let cs = taker.take_client_seq();
    taker
        .send(|b| {
            wire::NewOrder {
                client_seq: cs,
                account: 0,
                instrument: 1,
                side: 0,
                ord_type: 1,
                tif: 0,
                flags: 2,
                reserved: 0,
                price: 0,
                qty: 5,
                budget: 10_000,
            }
            .push(b)
        })
        .unwrap();
    loop {
        match taker.next_app().unwrap() {
            ServerMsg::Accepted(_) => {}
            ServerMsg::Canceled(m) => {
                assert_eq!(m.client_seq, cs);
                break;
            }
            m => panic!("{m:?}"),
        }
    }
    // Mass cancel removes the maker's remaining bid.
    let cs = maker.take_client_seq();
    maker.send(|b| wire::MassCancel { client_seq: cs, account: 0, instrument: 1, side: 0, flags: 1 }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Canceled(m) if m.order == bid && m.leaves == 0), "{got:?}");
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Done(m) if m.client_seq == cs), "a mass cancel ends with Done: {got:?}");
    // A trader may not act for another account nor send admin messages:
    // refused at the gateway, unsequenced.
    let cs = maker.take_client_seq();
    maker.send(|b| wire::NewOrder { account: 2, ..order(cs, 0, 100, 1, 0) }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Rejected(r) if r.seq == 0 && r.reason == wire::GatewayReject::NotAdmin as u16), "{got:?}");
    let cs = maker.take_client_seq();
    maker.send(|b| wire::CreateAccount { client_seq: cs, account: 9 }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Rejected(r) if r.reason == wire::GatewayReject::NotAdmin as u16), "{got:?}");
    // Bad enumerations are refused with BadField.
    let cs = maker.take_client_seq();
    maker.send(|b| wire::NewOrder { side: 7, ..order(cs, 0, 100, 1, 0) }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Rejected(r) if r.reason == wire::GatewayReject::BadField as u16), "{got:?}");
    // The admin acts on behalf of account 3.
    let cs = a.take_client_seq();
    a.send(|b| wire::NewOrder { account: 3, ..order(cs, 1, 200, 1, 0) }.push(b)).unwrap();
    let got = a.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.account == 3 && m.client_seq == cs), "{got:?}");
    // The engine's service-time histogram: admins only, unsequenced, a
    // window that resets on request.
    let st = a.engine_stats(true).unwrap();
    assert!(st.seq == 0 && st.count >= 10 && st.commands >= st.count, "{st:?}");
    assert!(0 < st.p50_ns && st.p50_ns <= st.p99_ns && st.p99_ns <= st.max_ns, "{st:?}");
    // The shard's busy time covers at least the commands' service times and
    // at most the window's wall time.
    assert!(st.busy_ns >= st.p50_ns && st.busy_ns <= st.ts - st.since_ns, "{st:?}");
    let again = a.engine_stats(false).unwrap();
    assert!(again.count == 0 && again.since_ns > st.since_ns && again.commands == st.commands, "{again:?}");
    let cs = maker.take_client_seq();
    maker.send(|b| wire::EngineStatsRequest { client_seq: cs, flags: 0, reserved: 0 }.push(b)).unwrap();
    let got = maker.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Rejected(r) if r.client_seq == cs && r.reason == wire::GatewayReject::NotAdmin as u16), "{got:?}");
    let cs = a.take_client_seq();
    a.send(|b| wire::EngineStatsRequest { client_seq: cs, flags: 2, reserved: 0 }.push(b)).unwrap();
    let got = a.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Rejected(r) if r.reason == wire::GatewayReject::BadField as u16), "{got:?}");
    // Logout: Goodbye(Logout), then the server closes.
    maker.send(|b| wire::Logout {}.push(b)).unwrap();
    match maker.recv() {
        Ok(ServerMsg::Goodbye(g)) => assert_eq!(g.reason, wire::GoodbyeReason::Logout as u16),
        other => panic!("{other:?}"),
    }
    assert!(matches!(maker.recv(), Err(ClientError::Closed) | Err(ClientError::Io(_))));
}

#[test]
fn logins_bad_secret_already_logged_in_and_reconnect_keeps_sequence() {
    let env = Env::start(|_| {});
    env.setup_market();
    let k = env.traders[0];
    let mut wrong = k.secret;
    wrong[5] ^= 0x40;
    assert!(matches!(Client::login(env.addr(), k.id, wrong), Err(ClientError::LoginRejected(1))));
    assert!(matches!(Client::login(env.addr(), 12345, k.secret), Err(ClientError::LoginRejected(1))));
    let mut c = env.trader(0);
    assert!(matches!(Client::login(env.addr(), k.id, k.secret), Err(ClientError::LoginRejected(2))), "one live session per key");
    let cs = c.take_client_seq();
    c.send(|b| order(cs, 0, 50, 1, 0).push(b)).unwrap();
    let got = c.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.seq == 1), "{got:?}");
    let next_cs = c.take_client_seq();
    drop(c);
    // Reconnect: the session name's sequence carries on.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        match Client::login(env.addr(), k.id, k.secret) {
            Ok(c) => break c,
            Err(ClientError::LoginRejected(2)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(c.next_seq, 2);
    assert_eq!(c.take_client_seq(), next_cs, "LoginAccepted says where client_seq continues");
    c.set_next_client_seq(next_cs);
    let cs = c.take_client_seq();
    c.send(|b| order(cs, 0, 50, 1, 0).push(b)).unwrap();
    let got = c.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.seq == 2), "{got:?}");
}

#[test]
fn revoked_keys_fail_on_the_next_login() {
    let env = Env::start(|_| {});
    let kp = path_in(env.dir.path());
    let mut ks = KeyStore::load(&kp).unwrap();
    ks.revoke(env.traders[2].id).unwrap();
    // A different size or mtime makes the checker reload.
    std::thread::sleep(Duration::from_millis(20));
    ks.save(&kp).unwrap();
    assert!(matches!(Client::login(env.addr(), env.traders[2].id, env.traders[2].secret), Err(ClientError::LoginRejected(1))));
    let _ok = env.trader(3);
}

#[test]
fn duplicate_client_seq_is_ignored() {
    let env = Env::start(|_| {});
    env.setup_market();
    let mut c = env.trader(0);
    c.send(|b| {
        order(10, 0, 60, 1, 0).push(b);
        order(10, 0, 61, 1, 0).push(b); // duplicate: ignored
        order(9, 0, 62, 1, 0).push(b); // lower: ignored
        order(11, 0, 63, 1, 0).push(b);
    })
    .unwrap();
    let a = c.next_app().unwrap();
    let b = c.next_app().unwrap();
    assert!(matches!(a, ServerMsg::Accepted(m) if m.client_seq == 10 && m.price == 60), "{a:?}");
    assert!(matches!(b, ServerMsg::Accepted(m) if m.client_seq == 11 && m.price == 63), "{b:?}");
    assert!(c.recv_timeout(Duration::from_millis(200)).unwrap().is_none_or(|m| matches!(m, ServerMsg::Heartbeat(_))));
    assert_eq!(env.gw.as_ref().unwrap().counters().duplicates.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn throttling_answers_throttled() {
    let env = Env::start(|c| {
        c.rate_per_sec = 10;
        c.rate_burst = 20;
    });
    env.setup_market();
    let mut c = env.trader(0);
    c.send(|b| {
        for cs in 1..=40 {
            order(cs, 0, 70, 1, 0).push(b);
        }
    })
    .unwrap();
    let (mut acc, mut thr) = (0, 0);
    while acc + thr < 40 {
        match c.next_app().unwrap() {
            ServerMsg::Accepted(_) => acc += 1,
            ServerMsg::Throttled(t) => {
                assert_eq!(t.seq, 0, "unsequenced");
                thr += 1
            }
            m => panic!("{m:?}"),
        }
    }
    assert!((20..=23).contains(&acc), "burst of 20 (plus refill), got {acc}");
    assert_eq!(acc + thr, 40);
}

#[test]
fn slow_reader_is_cut_off_and_others_are_served() {
    let env = Env::start(|c| c.outbound_queue_bytes = 64 << 10);
    env.setup_market();
    let slow = env.trader(0);
    let mut stream = slow.stream().try_clone().unwrap();
    // Floods orders for an unknown instrument (cheap rejections), never reads.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut buf = Vec::new();
        let mut cs = 1;
        for _ in 0..2000 {
            buf.clear();
            for _ in 0..200 {
                wire::NewOrder { instrument: 7, ..order(cs, 0, 1, 1, 0) }.push(&mut buf);
                cs += 1;
            }
            if stream.write_all(&buf).is_err() {
                return true;
            }
        }
        false
    });
    // Meanwhile another session trades normally.
    let mut other = env.trader(1);
    for _ in 0..50 {
        let cs = other.take_client_seq();
        other.send(|b| order(cs, 0, 10, 1, 0).push(b)).unwrap();
        let got = other.next_app().unwrap();
        assert!(matches!(got, ServerMsg::Accepted(m) if m.client_seq == cs), "{got:?}");
    }
    let cut = writer.join().unwrap();
    assert!(cut, "the flooding session was disconnected");
    assert!(env.gw.as_ref().unwrap().counters().slow_readers.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let cs = other.take_client_seq();
    other.send(|b| order(cs, 0, 10, 1, 0).push(b)).unwrap();
    let got = other.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(_)), "{got:?}");
    drop(slow);
}

#[test]
fn garbage_and_hostile_frames_disconnect_only_the_sender() {
    let env = Env::start(|_| {});
    env.setup_market();
    let mut good = env.trader(0);
    // Unknown type before login.
    let mut c = Client::connect(env.addr()).unwrap();
    c.send_raw(&[2, 0, 0x99, 0x99]).unwrap();
    assert!(matches!(c.recv(), Ok(ServerMsg::Goodbye(g)) if g.reason == wire::GoodbyeReason::ProtocolError as u16));
    // Oversized length after login.
    let mut c = env.trader(1);
    c.send_raw(&[0xff, 0x7f, 0x01, 0x01]).unwrap();
    assert!(matches!(c.next_app(), Err(ClientError::Goodbye(2))));
    // Orders before login.
    let mut c = Client::connect(env.addr()).unwrap();
    c.send(|b| order(1, 0, 1, 1, 0).push(b)).unwrap();
    assert!(matches!(c.recv(), Ok(ServerMsg::Goodbye(g)) if g.reason == wire::GoodbyeReason::NotLoggedIn as u16));
    // Random bytes from many connections (bounded, seeded).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut conns = Vec::new();
    for _ in 0..64 {
        let mut c = Client::connect(env.addr()).unwrap();
        let n = rng.random_range(1..2000);
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let _ = c.send_raw(&bytes);
        conns.push(c);
    }
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Every one either got a Goodbye and a close, or (an incomplete
        // frame) is still waiting: none may crash the server.
        loop {
            match c.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(ServerMsg::Goodbye(_))) | Err(_) | Ok(None) => break,
                Ok(Some(_)) => {}
            }
        }
    }
    let cs = good.take_client_seq();
    good.send(|b| order(cs, 0, 20, 1, 0).push(b)).unwrap();
    let got = good.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.client_seq == cs), "{got:?}");
}

#[test]
fn heartbeat_timeout_and_login_timeout() {
    let env = Env::start(|c| {
        c.login_timeout_ms = 200;
    });
    // Login with a 100 ms heartbeat, then silence: cut after 3 intervals.
    let k = env.traders[0];
    let mut c = Client::connect(env.addr()).unwrap();
    c.send(|b| wire::Login { key_id: k.id, secret: k.secret, next_seq: 0, heartbeat_ms: 100, flags: 0 }.push(b)).unwrap();
    assert!(matches!(c.recv().unwrap(), ServerMsg::LoginAccepted(_)));
    let t0 = Instant::now();
    let reason = loop {
        match c.recv().unwrap() {
            ServerMsg::Heartbeat(_) => {}
            ServerMsg::Goodbye(g) => break g.reason,
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(reason, wire::GoodbyeReason::HeartbeatTimeout as u16);
    assert!(t0.elapsed() >= Duration::from_millis(250), "{:?}", t0.elapsed());
    // A client that heartbeats (every ~50 ms, promising 500 ms, so a busy
    // test host has 1.5 s of slack) stays; server heartbeats arrive meanwhile.
    let mut c = Client::connect(env.addr()).unwrap();
    c.send(|b| wire::Login { key_id: k.id, secret: k.secret, next_seq: 0, heartbeat_ms: 500, flags: 0 }.push(b)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.recv().unwrap() {
            ServerMsg::LoginAccepted(_) => break,
            ServerMsg::LoginRejected(r) if r.reason == 2 && Instant::now() < deadline => {
                // The previous session's close is still on its way to the engine.
                std::thread::sleep(Duration::from_millis(20));
                c = Client::connect(env.addr()).unwrap();
                c.send(|b| wire::Login { key_id: k.id, secret: k.secret, next_seq: 0, heartbeat_ms: 500, flags: 0 }.push(b)).unwrap();
            }
            m => panic!("{m:?}"),
        }
    }
    let mut heartbeats = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        c.send(|b| wire::ClientHeartbeat {}.push(b)).unwrap();
        while let Some(m) = c.recv_timeout(Duration::from_millis(50)).unwrap() {
            match m {
                ServerMsg::Heartbeat(_) => heartbeats += 1,
                m => panic!("{m:?}"),
            }
        }
    }
    assert!(heartbeats >= 1, "server heartbeats arrive on an idle session");
    // Never logging in: LoginTimeout.
    let mut c = Client::connect(env.addr()).unwrap();
    assert!(matches!(c.recv(), Ok(ServerMsg::Goodbye(g)) if g.reason == wire::GoodbyeReason::LoginTimeout as u16));
}

#[test]
fn many_sessions_at_once_then_shutdown_and_replay() {
    many_sessions(Env::start_with(2, |_| {}));
}

#[test]
fn colocated_io_and_engine_in_one_thread() {
    let env = Env::start_with(1, |c| c.colocate = true);
    assert!(env.gw.as_ref().unwrap().local_addr().port() > 0);
    many_sessions(env);
}

fn many_sessions(mut env: Env) {
    env.setup_market();
    let addr = env.addr();
    let keys = env.traders.clone();
    let handles: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            std::thread::spawn(move || {
                let mut c = Client::login(addr, k.id, k.secret).unwrap();
                let side = (i % 2) as u8;
                let mut answers = 0;
                for round in 0..500u64 {
                    let cs = c.take_client_seq();
                    let price = if side == 0 { 100 + (round % 5) as i64 } else { 103 + (round % 5) as i64 };
                    c.send(|b| order(cs, side, price, 1 + round % 3, 0).push(b)).unwrap();
                    // Every order is answered (Accepted first).
                    loop {
                        match c.next_app().unwrap() {
                            ServerMsg::Accepted(m) if m.client_seq == cs => {
                                answers += 1;
                                break;
                            }
                            ServerMsg::Executed(_) | ServerMsg::Canceled(_) => {}
                            m => panic!("{m:?}"),
                        }
                    }
                }
                answers
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 500);
    }
    let gw = env.gw.take().unwrap();
    let (exchange, journal, stats) = gw.shutdown().unwrap();
    assert!(stats.commands >= 2000);
    let hash = exchange.exchange.state_hash();
    journal.close().unwrap();
    // The journal replays into a fresh engine with the same events and state.
    let mut r = Reader::open(env.dir.path().join("j"), 1, ReaderOptions::default()).unwrap();
    let mut fresh = Exchange::new(limits());
    let rep = otedama_net::sequencer::replay(&mut r, &mut fresh).unwrap();
    assert_eq!(rep.commands, stats.commands);
    assert_eq!(fresh.state_hash(), hash);
}

#[test]
fn spinning_roles_serve_too() {
    let env = Env::start_with(1, |c| {
        c.io_poll = otedama_net::gateway::Poll::Spin;
        c.engine_poll = otedama_net::gateway::Poll::Spin;
    });
    env.setup_market();
    let mut c = env.trader(0);
    for _ in 0..100 {
        let cs = c.take_client_seq();
        c.send(|b| order(cs, 0, 30, 1, 1).push(b)).unwrap();
        let got = c.next_app().unwrap();
        assert!(matches!(got, ServerMsg::Accepted(m) if m.client_seq == cs), "{got:?}");
        let got = c.next_app().unwrap();
        assert!(matches!(got, ServerMsg::Canceled(m) if m.client_seq == cs && m.reason == 1), "IOC remainder: {got:?}");
    }
}

#[test]
fn floods_fill_the_engine_ring_without_deadlock_colocated() {
    // A small ring, one thread for both roles: a flood fills the ring to
    // the engine within one turn; orders beyond it are refused with
    // EngineBusy, sessions that close meanwhile are still told to the
    // engine, and the shard keeps serving.
    let env = Env::start_with(1, |c| {
        c.colocate = true;
        c.ring_slots = 1024;
    });
    env.setup_market();
    let addr = env.addr();
    let keys = env.traders.clone();
    let floods: Vec<_> = keys[..3]
        .iter()
        .copied()
        .map(|k| {
            std::thread::spawn(move || {
                use std::io::Write;
                let c = Client::login(addr, k.id, k.secret).unwrap();
                let mut s = c.stream().try_clone().unwrap();
                let mut buf = Vec::new();
                for cs in 1..=20_000u64 {
                    order(cs, 0, 5, 1, 1).push(&mut buf);
                }
                let _ = s.write_all(&buf);
                // Close without reading: the close races the flood.
                drop(s);
                drop(c);
            })
        })
        .collect();
    for f in floods {
        f.join().unwrap();
    }
    let busy = env.gw.as_ref().unwrap().counters().engine_busy.load(std::sync::atomic::Ordering::Relaxed);
    assert!(busy > 0, "the flood filled the ring (EngineBusy answers: {busy})");
    // Every flooding session's end reaches the engine: the same keys log in again.
    for k in &keys[..3] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Client::login(addr, k.id, k.secret) {
                Ok(_) => break,
                Err(ClientError::LoginRejected(2)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut c = env.trader(3);
    let cs = c.take_client_seq();
    c.send(|b| order(cs, 0, 5, 1, 0).push(b)).unwrap();
    let got = c.next_app().unwrap();
    assert!(matches!(got, ServerMsg::Accepted(m) if m.client_seq == cs), "{got:?}");
}
