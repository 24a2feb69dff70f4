//! The pool's chain side of `otedama engine` as a user runs it: the
//! embedded devnet over JSON-RPC, mined through by an outside client with
//! the cookie the engine wrote, and still there after a restart; clear
//! errors for a real chain without a node or a payout address.

use std::time::Duration;

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::chain::{encode_hex, sha256d};
use otedama_net::node::Node;
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
        "--coin",
        "devnet-sha256d",
        "engine",
    ]);
    let mut e = Spawned::start(c);
    let line = e.wait_for_line("pool chain side");
    let addr = line.split("JSON-RPC on ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let cookie_path = line.split("the cookie in ").nth(1).unwrap().trim_end_matches(')').trim().to_string();
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
        c.args(["--data-dir", data, "--gateway-listen", "127.0.0.1:0"]).args(args).arg("engine");
        let (out, stdout, stderr) = run(c);
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
