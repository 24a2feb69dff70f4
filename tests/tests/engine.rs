//! `otedama keys`, `otedama engine` and `otedama trade` as a user runs
//! them: separate processes, the data directory between them.

use otedama_tests::{Spawned, add_key as key, otedama, run, trade};
use serde_json::Value;

fn start_engine(data: &str) -> (Spawned, String) {
    let (e, addr, _) = start_engine_full(data);
    (e, addr)
}

/// Also returns the engine's line saying how it recovered.
fn start_engine_full(data: &str) -> (Spawned, String, String) {
    let mut c = otedama();
    c.args([
        "--data-dir",
        data,
        "--gateway-listen",
        "127.0.0.1:0",
        "--pool-devnet-rpc",
        "127.0.0.1:0",
        "--stratum-host",
        "127.0.0.1",
        "--stratum-port",
        "0",
        "--journal-durability",
        "batch",
        "engine",
    ]);
    let mut e = Spawned::start(c);
    let recovered = e.wait_for_line("otedama engine: recovered");
    let line = e.wait_for_line("order entry on");
    let addr = line.split("order entry on ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    (e, addr, recovered)
}

#[test]
fn keys_engine_trade_restart_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let admin = key(data, "0", true);
    let alice = key(data, "1", false);
    let bob = key(data, "2", false);

    let mut c = otedama();
    c.args(["--data-dir", data, "keys", "list", "--json"]);
    let (_, stdout, _) = run(c);
    let keys: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(keys.len(), 3);
    assert!(!stdout.contains(alice.split(':').nth(1).unwrap()), "secrets are never listed");

    let (engine, addr) = start_engine(data);
    for args in [
        &["create-account", "1"][..],
        &["create-account", "2"],
        &["deposit", "1", "1", "1000"],
        &["deposit", "1", "2", "1000000"],
        &["deposit", "2", "1", "1000"],
        &["add-instrument", "--id", "1", "--symbol", "LTC-USD", "--base", "1", "--quote", "2", "--taker-bps", "10"],
    ] {
        let (ok, out) = trade(&addr, &admin, args);
        assert!(ok && out.contains("Done"), "{args:?}: {out}");
    }
    let (ok, out) = trade(&addr, &alice, &["buy", "1", "10", "--price", "100"]);
    assert!(ok && out.contains("Accepted"), "{out}");
    let order: u64 = out.split("order: ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let (ok, out) = trade(&addr, &bob, &["sell", "1", "4", "--price", "100", "--tif", "ioc"]);
    assert!(ok && out.contains("Executed") && out.contains("maker: 0"), "{out}");
    let (ok, out) = trade(&addr, &alice, &["cancel", &order.to_string()]);
    assert!(ok && out.contains("Canceled") && out.contains("leaves: 0"), "{out}");
    // Refusals exit non-zero with the reason.
    let (ok, out) = trade(&addr, &alice, &["buy", "1", "10", "--price", "100", "--account", "2"]);
    assert!(!ok && out.contains("reason: 1002"), "{out}");
    let (ok, out) = trade(&addr, &bob, &["sell", "9", "1", "--price", "100"]);
    assert!(!ok && out.contains("Rejected"), "{out}");
    // A wrong secret is refused.
    let wrong = format!("{}:{}", alice.split(':').next().unwrap(), "00".repeat(32));
    let (ok, out) = trade(&addr, &wrong, &["listen", "--seconds", "1"]);
    assert!(!ok && out.contains("login rejected"), "{out}");

    engine.signal(libc::SIGTERM);
    let (status, stdout) = engine.finish();
    assert!(status.success(), "{stdout}");
    let hash1 = stdout.split("state hash ").nth(1).unwrap().trim().to_owned();

    // Restart: the state is rebuilt from the journal.
    let (engine, addr) = start_engine(data);
    let (ok, out) = trade(&addr, &bob, &["sell", "1", "1", "--price", "100", "--tif", "ioc"]);
    assert!(ok && out.contains("Canceled"), "nothing rests after the cancel: {out}");
    engine.signal(libc::SIGTERM);
    let (status, stdout) = engine.finish();
    assert!(status.success());
    let hash2 = stdout.split("state hash ").nth(1).unwrap().trim().to_owned();
    assert_ne!(hash1, hash2, "the IOC order moved holds and sequence counters");

    // The journal replays to the same state.
    let mut c = otedama();
    c.args(["--data-dir", data, "journal", "replay", &format!("{data}/exchange"), "--json"]);
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["state_hash"].as_str().unwrap(), hash2);
}

/// One trading client's run against an engine that gets killed.
struct Run {
    client: otedama_net::client::Client,
    acked: Vec<u64>,
    received: u64,
}

fn trade_until_cut(addr: std::net::SocketAddr, key: &str, durable: bool, side: u8) -> Run {
    use otedama_net::client::{Client, LoginOptions};
    use otedama_net::wire::{self, ServerMsg};
    let (id, secret) = key.split_once(':').unwrap();
    let id = otedama_net::keys::parse_id(id).unwrap();
    let secret = otedama_net::keys::parse_secret(secret).unwrap();
    let flags = if durable { otedama_net::sessions::FLAG_ACK_ON_DURABLE } else { 0 };
    let mut client = Client::login_with(addr, id, secret, LoginOptions { flags, ..Default::default() }).unwrap();
    let (mut acked, mut received) = (Vec::new(), 0u64);
    'run: loop {
        for _ in 0..8 {
            let cs = client.take_client_seq();
            let o = wire::NewOrder {
                client_seq: cs,
                account: 0,
                instrument: 1,
                side,
                ord_type: 0,
                tif: 0,
                flags: 0,
                reserved: 0,
                price: 100,
                qty: 1,
                budget: 0,
            };
            if client.send(|b| o.push(b)).is_err() {
                break 'run;
            }
        }
        loop {
            match client.recv_timeout(std::time::Duration::from_millis(1)) {
                Ok(Some(m)) => {
                    received += (m.seq() != 0) as u64;
                    if let ServerMsg::Accepted(a) = m {
                        acked.push(a.order);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'run,
            }
        }
    }
    Run { client, acked, received }
}

#[test]
fn sigkill_under_load_then_every_client_resumes_without_gap_or_duplicate() {
    use otedama_net::wire;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let admin = key(data, "0", true);
    let keys: Vec<String> = (1..=3).map(|a| key(data, &a.to_string(), false)).collect();
    let (engine, addr) = start_engine(data);
    for a in 1..=3 {
        for args in [
            vec!["create-account".to_string(), a.to_string()],
            vec!["deposit".into(), a.to_string(), "1".into(), "1000000000".into()],
            vec!["deposit".into(), a.to_string(), "2".into(), "1000000000000".into()],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert!(trade(&addr, &admin, &args).0);
        }
    }
    assert!(trade(&addr, &admin, &["add-instrument", "--id", "1", "--symbol", "LTC-USD", "--base", "1", "--quote", "2"]).0);
    // A snapshot mid-way, asked for by an operator: the restart below
    // starts from it.
    let mut c = otedama();
    c.args(["--data-dir", data, "engine", "--snapshot-now"]);
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success() && stdout.contains("snapshot at sequence"), "{stdout}{stderr}");

    // Three clients trade against each other (one ack-on-durable) until
    // the engine is killed without warning.
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let runs: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let k = k.clone();
            std::thread::spawn(move || trade_until_cut(sock, &k, i == 2, (i % 2) as u8))
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    engine.signal(libc::SIGKILL);
    let _ = engine.finish();
    let mut runs: Vec<Run> = runs.into_iter().map(|h| h.join().unwrap()).collect();

    let (engine, addr, line) = start_engine_full(data);
    assert!(line.contains("from the snapshot at"), "{line}");
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    for (i, r) in runs.iter_mut().enumerate() {
        assert!(r.received > 100, "client {i} traded: {}", r.received);
        r.client.set_addr(sock);
        let resumed = r.client.reconnect().unwrap();
        if i == 2 {
            assert_eq!(resumed.lost, 0, "ack-on-durable: nothing this client saw was lost");
        }
        // Under ack-on-match a SIGKILL loses at most what the writeback
        // thread had not yet copied into the file: a handful of records.
        assert!(resumed.lost <= 64, "client {i} lost {} of {} messages", resumed.lost, r.received);
        println!("client {i}: {} messages, {} lost to the kill", r.received, resumed.lost);
        // Its stream continues with the next number, no gap, no repeat.
        let cs = r.client.take_client_seq();
        r.client
            .send(|b| {
                wire::NewOrder {
                    client_seq: cs,
                    account: 0,
                    instrument: 1,
                    side: 0,
                    ord_type: 0,
                    tif: 1,
                    flags: 0,
                    reserved: 0,
                    price: 1,
                    qty: 1,
                    budget: 0,
                }
                .push(b)
            })
            .unwrap();
        let expected = r.client.next_seq;
        let m = r.client.next_app().unwrap();
        assert_eq!(m.seq(), expected);
    }
    engine.signal(libc::SIGTERM);
    let (status, stdout) = engine.finish();
    assert!(status.success(), "{stdout}");
    let hash = stdout.split("state hash ").nth(1).unwrap().trim().to_owned();
    let mut c = otedama();
    c.args(["--data-dir", data, "journal", "replay", &format!("{data}/exchange"), "--json"]);
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["state_hash"].as_str().unwrap(), hash, "the restarted engine's state is a fresh replay's");
    // Every order the durable client saw accepted is in the journal.
    let mut r = otedama_journal::Reader::open(format!("{data}/exchange"), 0, otedama_journal::ReaderOptions::default()).unwrap();
    let (mut ids, mut ev) = (std::collections::BTreeSet::new(), Vec::new());
    while let Some(rec) = r.try_next().unwrap() {
        if rec.kind == otedama_journal::kinds::EXCHANGE_EVENTS {
            otedama_engine::codec::decode_events(rec.payload, &mut ev).unwrap();
            ids.extend(ev.iter().filter_map(|e| match e {
                otedama_engine::Event::Accepted { order, .. } => Some(order.0),
                _ => None,
            }));
        }
    }
    assert!(runs[2].acked.iter().all(|o| ids.contains(o)), "an acknowledged durable order is missing");
}
