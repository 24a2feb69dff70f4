//! The embedded devnet as the engine serves it: over bitcoind-dialect
//! JSON-RPC on loopback, followed by the template task, mined through our
//! job code and `blocks::submit_block`, journaled and replayed at restart,
//! and unmoved by bad requests.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::chain::record::Outcome;
use otedama_engine::chain::{encode_hex, sha256d};
use otedama_hashers::Algorithm;
use otedama_net::blocks::{self, Finder};
use otedama_net::devnet_rpc::{DevnetRpc, DevnetRpcConfig};
use otedama_net::node::{Node, NodeError};
use otedama_net::template_task::{TemplateTask, TemplateTaskConfig, Work};
use serde_json::{Value, json};

fn start(dir: &std::path::Path, algorithm: Algorithm) -> DevnetRpc {
    start_with(dir, algorithm, true)
}

fn start_with(dir: &std::path::Path, algorithm: Algorithm, longpoll: bool) -> DevnetRpc {
    DevnetRpc::start(DevnetRpcConfig {
        longpoll,
        listen: "127.0.0.1:0".parse().unwrap(),
        algorithm,
        dir: dir.to_path_buf(),
        journal: otedama_journal::Options::default(),
        longpoll_max: Duration::from_secs(30),
    })
    .unwrap()
}

fn pow(algorithm: Algorithm, h: &[u8; 80]) -> [u8; 32] {
    match algorithm {
        Algorithm::Scrypt => otedama_hashers::scrypt::scrypt_1024_1_1(h),
        _ => sha256d(h),
    }
}

/// The first header of `job` whose PoW meets the job's target.
fn solve(job: &Job, algorithm: Algorithm, en1: &[u8], en2: &[u8]) -> [u8; 80] {
    (0..).map(|n| job.header(en1, en2, job.curtime, n, job.version)).find(|h| job.target.is_met_by(&pow(algorithm, h))).unwrap()
}

/// A raw HTTP exchange: (status, body).
fn http(addr: std::net::SocketAddr, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    use base64::Engine;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(a) = auth {
        req += &format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(a));
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    // The server may refuse before reading a hostile body.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn next_work(rx: &mpsc::Receiver<Work>, within: Duration) -> Work {
    rx.recv_timeout(within).expect("new work from the template task")
}

#[test]
fn the_template_task_follows_the_devnet_and_our_blocks_land_on_it() {
    for algorithm in [Algorithm::Sha256d, Algorithm::Scrypt] {
        let dir = tempfile::tempdir().unwrap();
        let rpc = start(dir.path(), algorithm);
        let node = Node::new(&rpc.url()).unwrap();
        let cfg = CoinbaseConfig::new(Coin::Litecoin, Network::Regtest);
        let mut tcfg = TemplateTaskConfig::new(cfg, vec![0x51]);
        // Polling this slow would take seconds: new work arriving in well
        // under that proves the long poll delivered it.
        tcfg.poll_interval = Duration::from_secs(20);
        let (tx, rx) = mpsc::channel();
        let task = TemplateTask::start(vec![node.clone()], tcfg, tx);
        let first = next_work(&rx, Duration::from_secs(10));
        assert!(first.clean);
        assert_eq!(first.job.height, 1);

        let jdir = tempfile::tempdir().unwrap();
        let mut journal = otedama_journal::Journal::open(jdir.path(), otedama_journal::Options::default()).unwrap();
        let mut work = first;
        for height in 1..=3u32 {
            assert_eq!(work.job.height, height);
            let (en1, en2) = ([0, 0, 0, 1], [height as u8; 8]);
            let header = solve(&work.job, algorithm, &en1, &en2);
            let finder = Finder { address: "devnet-miner", worker: "w" };
            let sub = blocks::submit_block(
                std::slice::from_ref(&node),
                &mut journal,
                &work.job,
                &header,
                (&en1, &en2),
                finder,
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(sub.record.outcome, Outcome::Landed, "{sub:?}");
            assert_eq!(sub.record.subsidy, otedama_engine::chain::devnet::SUBSIDY);
            let t = Instant::now();
            work = next_work(&rx, Duration::from_secs(10));
            assert!(work.clean, "a new block makes clean work");
            assert!(t.elapsed() < Duration::from_secs(10), "new work took {:?}: the long poll did not deliver it", t.elapsed());
        }
        assert_eq!(rpc.height(), 3);
        assert_eq!(node.call("getblockcount", json!([]), Duration::from_secs(5)).unwrap(), json!(3));
        let best = node.best_block_hash().unwrap();
        let h = node.call("getblockheader", json!([best]), Duration::from_secs(5)).unwrap();
        assert_eq!((h["height"].as_u64(), h["confirmations"].as_u64()), (Some(3), Some(1)));
        let b = node.call("getblock", json!([best, 1]), Duration::from_secs(5)).unwrap();
        assert_eq!(b["tx"].as_array().map(Vec::len), Some(1));
        let raw = node.call("getblock", json!([best, 0]), Duration::from_secs(5)).unwrap();
        assert_eq!(sha256d(&otedama_engine::chain::decode_hex(raw.as_str().unwrap()).unwrap()[..80]), sha256d(&h_bytes(&node, &best)));
        task.stop();
        drop(rpc);

        // Restart: the chain comes back from the devnet's journal.
        let rpc = start(dir.path(), algorithm);
        let node = Node::new(&rpc.url()).unwrap();
        assert_eq!(rpc.height(), 3);
        assert_eq!(node.best_block_hash().unwrap(), best);
        let t = node.block_template(None, Duration::from_secs(5)).unwrap();
        assert_eq!(t.height, 4);
    }
}

fn h_bytes(node: &Node, hash: &str) -> Vec<u8> {
    let hex = node.call("getblockheader", json!([hash, false]), Duration::from_secs(5)).unwrap();
    otedama_engine::chain::decode_hex(hex.as_str().unwrap()).unwrap()
}

#[test]
fn bad_requests_get_clear_answers_and_move_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rpc = start(dir.path(), Algorithm::Sha256d);
    let addr = rpc.local_addr();
    let cred = rpc.url().trim_start_matches("http://").split('@').next().unwrap().to_string();
    let cookie = std::fs::read_to_string(otedama_net::devnet_rpc::cookie_path(dir.path())).unwrap();
    assert_eq!(cookie, cred, "the cookie file holds the credentials");

    let call = |body: &str| http(addr, Some(&cred), body.as_bytes());
    // Credentials.
    assert_eq!(http(addr, None, br#"{"method":"getblockcount"}"#).0, 401);
    assert_eq!(http(addr, Some("__cookie__:wrong"), br#"{"method":"getblockcount"}"#).0, 401);
    // Not JSON, not a call, unknown method, bad params.
    let (st, b) = call("{{{ not json");
    assert_eq!(st, 500);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["code"], -32700);
    let (st, b) = call(r#"{"id":1,"method":"sendtoaddress","params":[]}"#);
    assert_eq!((st, serde_json::from_str::<Value>(&b).unwrap()["error"]["code"].as_i64()), (404, Some(-32601)));
    let (_, b) = call(r#"{"id":1,"method":"getblockhash","params":[99]}"#);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["code"], -8);
    let (_, b) = call(r#"{"id":1,"method":"getblockheader","params":["zz"]}"#);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["code"], -5);
    let (_, b) = call(r#"{"id":1,"method":"submitblock","params":["not hex"]}"#);
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["error"]["code"], -22);
    // A hostile size is refused before it is read.
    let big = format!(r#"{{"method":"submitblock","params":["{}"]}}"#, "00".repeat(1 << 20));
    assert_eq!(call(&big).0, 413);
    // Batches: answered in order; too many calls refused.
    let (st, b) = call(r#"[{"id":1,"method":"getblockcount"},{"id":2,"method":"getbestblockhash"}]"#);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((st, v[0]["result"].as_u64(), v[1]["id"].as_u64()), (200, Some(0), Some(2)));
    let many = format!("[{}]", vec![r#"{"method":"getblockcount"}"#; 101].join(","));
    assert_eq!(serde_json::from_str::<Value>(&call(&many).1).unwrap()["error"]["code"], -32600);

    // Malformed blocks are refused with their reason and change nothing.
    let node = Node::new(&rpc.url()).unwrap();
    let t = node.block_template(None, Duration::from_secs(5)).unwrap();
    let job = Job::new(1, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap();
    let (en1, en2) = ([1u8; 4], [2u8; 8]);
    let good = solve(&job, Algorithm::Sha256d, &en1, &en2);
    let mut stale = good;
    stale[4] ^= 1;
    let answer = |h: &[u8; 80]| node.call("submitblock", json!([encode_hex(&job.block(h, &en1, &en2))]), Duration::from_secs(5)).unwrap();
    assert!(answer(&stale).as_str().unwrap().starts_with("bad-prevblk"), "{}", answer(&stale));
    let miss = (0..).map(|n| job.header(&en1, &en2, job.curtime, n, job.version)).find(|h| !job.target.is_met_by(&sha256d(h))).unwrap();
    assert!(answer(&miss).as_str().unwrap().starts_with("high-hash"));
    assert_eq!(rpc.height(), 0);
    assert_eq!(answer(&good), Value::Null);
    assert_eq!(answer(&good), json!("duplicate"));
    assert_eq!(rpc.height(), 1);
    // The Node client sees RPC errors as errors with their code.
    match node.call("getblockhash", json!([50]), Duration::from_secs(5)) {
        Err(NodeError::Rpc { code: -8, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_poll_waits_for_the_tip_and_is_answered_when_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let rpc = start(dir.path(), Algorithm::Sha256d);
    let node = Node::new(&rpc.url()).unwrap();
    let t = node.block_template(None, Duration::from_secs(5)).unwrap();
    let id = t.longpollid.clone().unwrap();
    let waiter = {
        let node = node.clone();
        std::thread::spawn(move || {
            let t = node.block_template(Some(&id), Duration::from_secs(20)).unwrap();
            (t.height, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "a long poll on the current tip returned at once");
    // Other calls are served while it waits.
    assert_eq!(node.call("getblockcount", json!([]), Duration::from_secs(5)).unwrap(), json!(0));
    let job = Job::new(1, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap();
    let h = solve(&job, Algorithm::Sha256d, &[0; 4], &[0; 8]);
    let submitted = Instant::now();
    assert_eq!(
        node.call("submitblock", json!([encode_hex(&job.block(&h, &[0; 4], &[0; 8]))]), Duration::from_secs(5)).unwrap(),
        Value::Null
    );
    let (height, answered) = waiter.join().unwrap();
    assert_eq!(height, 2, "the long poll answers with the next block's template");
    // Ordering, not durations: it was answered only once the block was in.
    assert!(answered >= submitted);
}

#[test]
fn a_node_without_long_polling_is_polled_instead() {
    let dir = tempfile::tempdir().unwrap();
    let rpc = start_with(dir.path(), Algorithm::Sha256d, false);
    let node = Node::new(&rpc.url()).unwrap();
    assert!(node.block_template(None, Duration::from_secs(5)).unwrap().longpollid.is_none());
    let mut cfg = TemplateTaskConfig::new(CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), vec![0x51]);
    cfg.poll_interval = Duration::from_millis(100);
    let (tx, rx) = mpsc::channel();
    let task = TemplateTask::start(vec![node.clone()], cfg, tx);
    let first = next_work(&rx, Duration::from_secs(10));
    for height in 1..=3u32 {
        let job = if height == 1 { first.job.clone() } else { next_work(&rx, Duration::from_secs(10)).job };
        assert_eq!(job.height, height);
        let h = solve(&job, Algorithm::Sha256d, &[0; 4], &[height as u8; 8]);
        let answer =
            node.call("submitblock", json!([encode_hex(&job.block(&h, &[0; 4], &[height as u8; 8]))]), Duration::from_secs(5)).unwrap();
        assert_eq!(answer, Value::Null);
    }
    // The tip polled every 100 ms: the last block's work arrives quickly.
    let t = Instant::now();
    let w = next_work(&rx, Duration::from_secs(5));
    assert_eq!(w.job.height, 4);
    assert!(w.clean && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    task.stop();
}
