//! The pool's chain side of `otedama engine` as a user runs it: the
//! embedded devnet over JSON-RPC, mined through by an outside client with
//! the cookie the engine wrote, and still there after a restart; clear
//! errors for a real chain without a node or a payout address.

use std::time::Duration;

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::chain::record::{BlockRecord, Outcome};
use otedama_engine::chain::{encode_hex, sha256d};
use otedama_engine::stratum::record::ShareRecord;
use otedama_hashers::{Family, Target};
use otedama_net::node::Node;
use otedama_net::regtest::{self, Litecoind};
use otedama_net::stratum_client::{Message, MinerSession, grind};
use otedama_tests::{Spawned, otedama, run};
use serde_json::{Value, json};

/// Starts the engine on the sha256d devnet; returns it and a node client
/// for its devnet (address from its start line, cookie from the file it
/// names).
fn start(data: &str) -> (Spawned, Node) {
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
        "--coin",
        "devnet-sha256d",
        "engine",
    ]);
    let mut e = Spawned::start(c);
    let line = e.wait_for_line("pool chain side");
    let addr = line.split("JSON-RPC on ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let cookie_path = line.split("the cookie in ").nth(1).unwrap().split(')').next().unwrap().trim().to_string();
    let cookie = std::fs::read_to_string(cookie_path).unwrap();
    (e, Node::new(&format!("http://{cookie}@{addr}")).unwrap())
}

fn mine(node: &Node) {
    let t = node.block_template(None, Duration::from_secs(5)).unwrap();
    let job = Job::new(1, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap();
    let h = (0..).map(|n| job.header(&[0; 4], &[0; 8], job.curtime, n, job.version)).find(|h| job.target.is_met_by(&sha256d(h))).unwrap();
    let answer = node.call("submitblock", json!([encode_hex(&job.block(&h, &[0; 4], &[0; 8]))]), Duration::from_secs(5)).unwrap();
    assert_eq!(answer, Value::Null);
}

#[test]
fn the_engine_serves_the_devnet_and_keeps_its_chain_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (e, node) = start(data);
    for _ in 0..3 {
        mine(&node);
    }
    let info = node.call("getblockchaininfo", json!([]), Duration::from_secs(5)).unwrap();
    assert_eq!((info["chain"].as_str(), info["blocks"].as_u64()), (Some("devnet"), Some(3)));
    let best = node.best_block_hash().unwrap();
    e.signal(libc::SIGTERM);
    let (status, out) = e.finish();
    assert!(status.success(), "{out}");

    let (e, node) = start(data);
    assert_eq!(node.best_block_hash().unwrap(), best, "the devnet chain comes back from its journal");
    mine(&node);
    assert_eq!(node.call("getblockcount", json!([]), Duration::from_secs(5)).unwrap(), json!(4));
    e.signal(libc::SIGTERM);
    assert!(e.finish().0.success());
}

#[test]
fn real_chains_need_a_node_and_a_valid_payout_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--coin", "ltc-regtest", "--node", "http://u:p@127.0.0.1:1"], "payout_address (--payout-address) is required"),
        (
            &["--coin", "ltc-regtest", "--node", "http://u:p@127.0.0.1:1", "--payout-address", "bc1qnotlitecoin"],
            "is not a ltc-regtest address",
        ),
        (&["--coin", "ltc"], "pool.nodes (--node"),
    ];
    for (args, want) in cases {
        let mut c = otedama();
        c.args(["--data-dir", data, "--gateway-listen", "127.0.0.1:0", "--stratum-host", "127.0.0.1", "--stratum-port", "0"])
            .args(args)
            .arg("engine");
        let (out, stdout, stderr) = run(c);
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// The Stratum address from the engine's start line.
fn stratum_addr(line: &str) -> std::net::SocketAddr {
    line.split("Stratum V1 on ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
}

/// Mines one block: waits for a job on a previous block other than
/// `last` (the one the miner's last block was mined on), grinds a share at
/// the session's difficulty that also meets the chain's easy target,
/// submits it and checks it is accepted. Returns the block id.
fn mine_block_through_stratum(m: &mut MinerSession, worker: &str, family: Family, en2: &mut u64, last: &mut [u8; 32]) -> serde_json::Value {
    let t = Duration::from_secs(30);
    let until = std::time::Instant::now() + t;
    while m.job.as_ref().is_none_or(|j| j.prev == *last) {
        assert!(std::time::Instant::now() < until, "no job on a new block");
        m.next_message(Duration::from_millis(200)).unwrap();
    }
    assert!(m.job.as_ref().unwrap().clean, "a new block makes a clean job");
    let mut scrypt = otedama_hashers::scrypt::Scrypt::new(otedama_hashers::scrypt::Kernel::best());
    loop {
        let job = m.job.clone().unwrap();
        let network = job.network_target().unwrap();
        let share = Target::from_difficulty(m.difficulty, family).unwrap();
        *en2 += 1;
        let en2b = en2.to_be_bytes()[8 - m.extranonce2_size..].to_vec();
        // Small ranges: scrypt shares at this difficulty take ~64 hashes.
        let range = if family == Family::Scrypt { 1 << 10 } else { 1 << 20 };
        let found = grind(&job, family, (&m.extranonce1, &en2b), None, (0, range), share, Some(&mut scrypt));
        let Some(s) = found.into_iter().find(|s| network.is_met_by(&s.hash)) else { continue };
        let id = m.submit(worker, &s).unwrap();
        assert_eq!(m.answer(id, t).unwrap(), Ok(json!(true)), "a block-solving share is accepted");
        *last = job.prev;
        return json!(otedama_engine::chain::to_display_hex(&sha256d(&s.header)));
    }
}

fn journal_records(dir: &std::path::Path, kind: u16) -> Vec<Vec<u8>> {
    let mut r = otedama_journal::Reader::open(dir, 0, otedama_journal::ReaderOptions::default()).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.try_next().unwrap() {
        if rec.kind == kind {
            out.push(rec.payload.to_vec());
        }
    }
    out
}

#[test]
fn a_stratum_miner_finds_devnet_blocks_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = otedama();
    c.args(["--data-dir", data.to_str().unwrap(), "--gateway-listen", "127.0.0.1:0", "--pool-devnet-rpc", "127.0.0.1:0"]);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    c.args(["--stratum-host", "127.0.0.1", "--stratum-port", "0", "--stratum-tls-port", &tls_port, "engine"]);
    let mut e = Spawned::start(c);
    let line = e.wait_for_line("pool chain side");
    let addr = stratum_addr(&line);
    // TLS beside it, with a certificate generated into the data directory.
    assert!(line.contains(&format!("Stratum over TLS on 127.0.0.1:{tls_port}")), "{line}");
    assert!(data.join("pool/tls/cert.pem").is_file() && data.join("pool/tls/key.pem").is_file());
    let rpc = line.split("JSON-RPC on ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let cookie = std::fs::read_to_string(data.join("devnet/devnet-sha256d/.cookie")).unwrap();
    let node = Node::new(&format!("http://{cookie}@{rpc}")).unwrap();

    let payout = bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[9u8; 20]).unwrap();
    let worker = format!("{payout}.rig1");
    let mut m = MinerSession::connect(addr, &worker, "d=0.0001", true, Duration::from_secs(10)).unwrap();
    let (mut en2, mut last) = (0, [0u8; 32]);
    for h in 1..=3u64 {
        let id = mine_block_through_stratum(&mut m, &worker, Family::Sha256d, &mut en2, &mut last);
        // The answer may reach the miner before the node has the block:
        // submission runs beside it.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while node.call("getblockcount", json!([]), Duration::from_secs(5)).unwrap() != json!(h) {
            assert!(std::time::Instant::now() < until, "block {h} never reached the devnet");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(node.call("getbestblockhash", json!([]), Duration::from_secs(5)).unwrap(), id);
    }
    let miners = journal_records(&data.join("pool/miners"), otedama_journal::kinds::MINER_ACCOUNT);
    assert_eq!(
        miners.iter().map(|p| otedama_net::miner_accounts::decode_record(p).unwrap()).collect::<Vec<_>>(),
        vec![(10_000, payout.clone())]
    );
    e.signal(libc::SIGTERM);
    // Miners are asked to reconnect at shutdown.
    let mut asked = false;
    while let Ok(Some(msg)) = m.next_message(Duration::from_secs(10)) {
        if matches!(msg, Message::Reconnect(_)) {
            asked = true;
            break;
        }
    }
    assert!(asked, "client.reconnect at shutdown");
    let (status, out) = e.finish();
    assert!(status.success(), "{out}");

    // Each block: a share record with the block flag, and a block record
    // that says it landed, found by this miner.
    let shares: Vec<ShareRecord> = journal_records(&data.join("pool/shares-0"), otedama_journal::kinds::SHARE)
        .iter()
        .map(|p| ShareRecord::decode(p).unwrap())
        .collect();
    assert_eq!(shares.len(), 3);
    assert!(shares.iter().all(|s| s.block && s.address == payout && s.worker == worker), "{shares:?}");
    let blocks: Vec<BlockRecord> = journal_records(&data.join("pool/blocks"), otedama_journal::kinds::BLOCK_FOUND)
        .iter()
        .map(|p| BlockRecord::decode(p).unwrap())
        .collect();
    assert_eq!(blocks.iter().map(|b| b.height).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(blocks.iter().all(|b| b.outcome == Outcome::Landed && b.finder == payout && b.worker == worker), "{blocks:?}");
    // The payout address's first authorize gave it a ledger account (the
    // first miner account, 10,000): recorded by the registry, then created
    // in the engine by its admin command, journaled and applied there.
    let mut r = otedama_journal::Reader::open(data.join("exchange"), 0, otedama_journal::ReaderOptions::default()).unwrap();
    let mut created = false;
    let mut after_create = false;
    while let Some(rec) = r.try_next().unwrap() {
        if rec.kind == otedama_journal::kinds::EXCHANGE_COMMAND {
            let (_, _, body) = otedama_net::sessions::split_envelope(rec.version, rec.payload).unwrap();
            let c = otedama_engine::codec::decode_command(body).unwrap();
            after_create = matches!(c.kind, otedama_engine::CommandKind::CreateAccount { account } if account.0 == 10_000);
        } else if rec.kind == otedama_journal::kinds::EXCHANGE_EVENTS && after_create {
            let mut ev = Vec::new();
            otedama_engine::codec::decode_events(rec.payload, &mut ev).unwrap();
            created |= matches!(ev.as_slice(), [otedama_engine::Event::Done]);
            after_create = false;
        }
    }
    assert!(created, "the engine created account 10,000 for the miner");
    // The registry recorded that the engine has it...
    let confirmed: Vec<u32> = journal_records(&data.join("pool/miners"), otedama_journal::kinds::MINER_ACCOUNT_CREATED)
        .iter()
        .flat_map(|p| otedama_net::miner_accounts::decode_created(p).unwrap())
        .collect();
    assert_eq!(confirmed, vec![10_000]);
    // ...so a restart does not send it again.
    let mut c = otedama();
    c.args(["--data-dir", data.to_str().unwrap(), "--gateway-listen", "127.0.0.1:0", "--pool-devnet-rpc", "127.0.0.1:0"]);
    c.args(["--stratum-host", "127.0.0.1", "--stratum-port", "0", "engine"]);
    let mut e = Spawned::start(c);
    e.wait_for_line("pool chain side");
    // The registry sends its unconfirmed accounts within 100 ms of starting;
    // given well over that, a resend would be in the exchange journal.
    std::thread::sleep(Duration::from_millis(1500));
    e.signal(libc::SIGTERM);
    let (status, out) = e.finish();
    assert!(status.success(), "{out}");
    let mut r = otedama_journal::Reader::open(data.join("exchange"), 0, otedama_journal::ReaderOptions::default()).unwrap();
    let mut creates = 0;
    while let Some(rec) = r.try_next().unwrap() {
        if rec.kind == otedama_journal::kinds::EXCHANGE_COMMAND {
            let (_, _, body) = otedama_net::sessions::split_envelope(rec.version, rec.payload).unwrap();
            let c = otedama_engine::codec::decode_command(body).unwrap();
            creates += matches!(c.kind, otedama_engine::CommandKind::CreateAccount { account } if account.0 == 10_000) as u32;
        }
    }
    assert_eq!(creates, 1, "CreateAccount 10,000 sent once over two runs");
}

#[test]
fn a_stratum_miner_mines_scrypt_on_two_litecoind_nodes_past_mweb() {
    if !regtest::litecoind_installed() {
        eprintln!("skipping: litecoind not installed (apt-get install litecoind)");
        return;
    }
    let a = Litecoind::start(None).unwrap();
    let b = Litecoind::start(Some(a.p2p)).unwrap();
    let (na, nb) = (a.node(), b.node());
    let rpc = |n: &Node, m: &str, p| n.call(m, p, Duration::from_secs(60)).unwrap();
    rpc(&na, "createwallet", json!(["w"]));
    let wallet = rpc(&na, "getnewaddress", json!([])).as_str().unwrap().to_string();
    rpc(&na, "generatetoaddress", json!([428, wallet]));
    let payout = rpc(&na, "getnewaddress", json!(["pool", "bech32"])).as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = otedama();
    c.args(["--data-dir", data.to_str().unwrap(), "--gateway-listen", "127.0.0.1:0", "--coin", "ltc-regtest"]);
    c.args(["--node", &format!("http://u:p@127.0.0.1:{}", a.rpc), "--node", &format!("http://u:p@127.0.0.1:{}", b.rpc)]);
    c.args(["--payout-address", &payout, "--stratum-host", "127.0.0.1", "--stratum-port", "0", "engine"]);
    let mut e = Spawned::start(c);
    let addr = stratum_addr(&e.wait_for_line("pool chain side"));

    // A miner whose own address is not the pool's: in pool mode the
    // coinbase pays the pool.
    let miner_addr = rpc(&na, "getnewaddress", json!(["miner", "bech32"])).as_str().unwrap().to_string();
    let worker = format!("{miner_addr}.l3");
    let mut m = MinerSession::connect(addr, &worker, "x", true, Duration::from_secs(10)).unwrap();
    let (mut en2, mut last) = (0, [0u8; 32]);
    let mut pegged = None;
    for h in 429..=437u64 {
        if h == 432 {
            // A peg-in waiting when MWEB activates (at 432; litecoind
            // refuses to build a template with one before).
            let mweb = rpc(&na, "getnewaddress", json!(["", "mweb"])).as_str().unwrap().to_string();
            pegged = Some(rpc(&na, "sendtoaddress", json!([mweb, 5])).as_str().unwrap().to_string());
        }
        let id = mine_block_through_stratum(&mut m, &worker, Family::Scrypt, &mut en2, &mut last);
        for n in [&na, &nb] {
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while rpc(n, "getblockcount", json!([])) != json!(h) {
                assert!(std::time::Instant::now() < until, "node at {} not {h}", rpc(n, "getblockcount", json!([])));
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(rpc(n, "getbestblockhash", json!([])), id);
        }
        let block = rpc(&na, "getblock", json!([id, 2]));
        let cb = &block["tx"][0];
        // (`address`, or `addresses` on older nodes; the witness commitment has neither.)
        let paid: Vec<&str> = cb["vout"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["scriptPubKey"]["address"].as_str().or(o["scriptPubKey"]["addresses"][0].as_str()))
            .collect();
        assert_eq!(paid, vec![payout.as_str()], "block {h}'s coinbase pays the pool: {cb}");
    }
    let tx = rpc(&na, "gettransaction", json!([pegged.unwrap()]));
    assert!(tx["confirmations"].as_i64().unwrap() >= 1, "the peg-in confirmed in our MWEB blocks: {tx}");
    e.signal(libc::SIGTERM);
    let (status, out) = e.finish();
    assert!(status.success(), "{out}");
    let blocks: Vec<BlockRecord> = journal_records(&data.join("pool/blocks"), otedama_journal::kinds::BLOCK_FOUND)
        .iter()
        .map(|p| BlockRecord::decode(p).unwrap())
        .collect();
    assert_eq!(blocks.len(), 9);
    assert!(blocks.iter().all(|b| b.outcome == Outcome::Landed && b.on_chain_mask == 0b11), "{blocks:?}");
}

#[test]
fn otedama_mine_mines_devnet_blocks_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = otedama();
    c.args(["--data-dir", data.to_str().unwrap(), "--gateway-listen", "127.0.0.1:0", "--pool-devnet-rpc", "127.0.0.1:0"]);
    c.args(["--stratum-host", "127.0.0.1", "--stratum-port", "0", "engine"]);
    let mut e = Spawned::start(c);
    let addr = stratum_addr(&e.wait_for_line("pool chain side"));
    let payout = bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[5u8; 20]).unwrap();
    let mut m = otedama();
    m.args(["mine", "--url", &format!("stratum+tcp://{addr}"), "--user", &format!("{payout}.cpu"), "--password", "d=0.0002"]);
    m.args(["--threads", "1", "--seconds", "3"]);
    let (out, stdout, stderr) = run(m);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let accepted = summary["accepted"].as_u64().unwrap();
    assert!(accepted >= 1 && summary["rejected"] == 0, "{summary}");
    e.signal(libc::SIGTERM);
    assert!(e.finish().0.success());
    // On the devnet every share at this difficulty is a block.
    let blocks = journal_records(&data.join("pool/blocks"), otedama_journal::kinds::BLOCK_FOUND);
    assert_eq!(blocks.len() as u64, accepted);
}

#[test]
fn solo_mode_pays_each_block_to_the_miner_who_found_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = otedama();
    c.args(["--data-dir", data.to_str().unwrap(), "--gateway-listen", "127.0.0.1:0", "--pool-devnet-rpc", "127.0.0.1:0", "--solo"]);
    c.args(["--stratum-host", "127.0.0.1", "--stratum-port", "0", "engine"]);
    let mut e = Spawned::start(c);
    let line = e.wait_for_line("pool chain side");
    let addr = stratum_addr(&line);
    let rpc = line.split("JSON-RPC on ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let cookie = std::fs::read_to_string(data.join("devnet/devnet-sha256d/.cookie")).unwrap();
    let node = Node::new(&format!("http://{cookie}@{rpc}")).unwrap();
    let (mut en2, mut last) = (0, [0u8; 32]);
    let mut miners = Vec::new();
    // Two miners, two addresses: each block pays whoever found it.
    for (i, key) in [[3u8; 20], [4u8; 20]].iter().enumerate() {
        let payout = bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, key).unwrap();
        let worker = format!("{payout}.solo{i}");
        let mut m = MinerSession::connect(addr, &worker, "d=0.0001", false, Duration::from_secs(10)).unwrap();
        let id = mine_block_through_stratum(&mut m, &worker, Family::Sha256d, &mut en2, &mut last);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let hex = loop {
            match node.call("getblock", json!([id, 0]), Duration::from_secs(5)) {
                Ok(Value::String(h)) => break h,
                _ => {
                    assert!(std::time::Instant::now() < until, "block {id} never reached the devnet");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let script = format!("0014{}", encode_hex(key));
        assert!(hex.contains(&script), "block {i}'s coinbase pays its finder {payout}");
        miners.push((m, script));
    }
    // The first miner stayed connected: the job the second miner's block
    // brought reached it as its own variant, paying its own address.
    let (m, script) = &mut miners[0];
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while m.job.as_ref().is_none_or(|j| j.prev == [0u8; 32] || encode_hex(&j.prev) == encode_hex(&last)) {
        assert!(std::time::Instant::now() < until, "no new job for the first miner");
        let _ = m.next_message(Duration::from_millis(200));
    }
    assert!(encode_hex(&m.job.as_ref().unwrap().coinb2).contains(script.as_str()), "the first miner's new job pays its own address");
    e.signal(libc::SIGTERM);
    assert!(e.finish().0.success());
}
