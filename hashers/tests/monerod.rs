//! RandomX and Monero targets against monerod on a regtest chain: blocks
//! whose nonce we find with our scan loop are accepted, monerod's own record
//! of each block's PoW hash (`fill_pow_hash`) equals ours, and a nonce our
//! target math rejects is rejected by monerod too.
//!
//! (monerod 0.18.0.0's `calc_pow` RPC is not used: on regtest it answers a
//! hash that differs from the PoW hash the same node computes and stores for
//! the same block, which plain RandomX reproduces.)
//!
//! Starts `monerod --regtest` (package `monero`) on free loopback ports.
//! Without monerod the test says so and passes, except under `CI=true`,
//! where a missing peer is a failure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otedama_hashers::Target;
use otedama_hashers::randomx::{self, Cache, Vm};
use serde_json::{Value, json};

/// The Monero General Fund's published address: any valid mainnet address
/// works for templates on regtest.
const ADDRESS: &str = "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A";

/// Hard enough that the scan has to search, easy enough for light mode.
const DIFFICULTY: u64 = 24;

struct Monerod {
    child: Child,
    rpc: String,
    _dir: tempfile::TempDir,
}

impl Drop for Monerod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start() -> Option<Monerod> {
    if Command::new("monerod").arg("--version").stdout(Stdio::null()).status().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "monerod is missing (Debian package `monero`); CI must install it (.ci/setup)"
        );
        eprintln!("skipping: monerod not installed (apt-get install monero)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rpc, p2p) = (free_port(), free_port());
    let child = Command::new("monerod")
        .args(["--regtest", "--offline", "--fixed-difficulty", &DIFFICULTY.to_string(), "--data-dir"])
        .arg(dir.path())
        .args(["--rpc-bind-ip", "127.0.0.1", "--rpc-bind-port", &rpc.to_string()])
        .args(["--p2p-bind-ip", "127.0.0.1", "--p2p-bind-port", &p2p.to_string()])
        .args(["--no-zmq", "--no-igd", "--disable-dns-checkpoints", "--check-updates", "disabled"])
        .args(["--out-peers", "0", "--in-peers", "0", "--non-interactive", "--log-level", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn monerod");
    let node = Monerod { child, rpc: format!("http://127.0.0.1:{rpc}/json_rpc"), _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if call(&node, "get_info", json!({})).is_ok() {
            return Some(node);
        }
        assert!(Instant::now() < deadline, "monerod did not answer RPC within 90 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn call(node: &Monerod, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": "0", "method": method, "params": params});
    let reply: Value = ureq::post(&node.rpc)
        .timeout(Duration::from_secs(30))
        .send_json(body)
        .map_err(|e| e.to_string())?
        .into_json()
        .map_err(|e| e.to_string())?;
    if let Some(err) = reply.get("error") {
        return Err(format!("{method}: {err}"));
    }
    Ok(reply["result"].clone())
}

fn hexb(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn monerod_accepts_blocks_we_mine_and_stores_our_pow_hash() {
    let Some(node) = start() else { return };
    let mut vm: Option<Vm> = None;
    let mut rejected_checked = false;
    for round in 0..4u32 {
        let t = call(&node, "get_block_template", json!({"wallet_address": ADDRESS, "reserve_size": 8})).unwrap();
        let height = t["height"].as_u64().unwrap();
        let seed = hexb(&t["seed_hash"]);
        let mut block = hexb(&t["blocktemplate_blob"]);
        let mut hashing = hexb(&t["blockhashing_blob"]);
        assert_eq!(t["difficulty"].as_u64().unwrap(), DIFFICULTY);
        if vm.as_ref().is_none_or(|v| v.key() != seed.as_slice()) {
            vm = Some(Vm::light(Cache::new(&seed, randomx::recommended_flags()).unwrap()).unwrap());
        }
        let vm = vm.as_mut().unwrap();
        let target = Target::from_monero_difficulty(u128::from(DIFFICULTY));
        // Every nonce of a range, so we also hold one that misses.
        let start = 1000 * round;
        let mut found = Vec::new();
        let mut next = start;
        while found.is_empty() && next < start + 400 {
            vm.scan(&hashing, 39, next, 16, target, &mut found);
            next += 16;
        }
        let nonce = *found.first().expect("about 1 in 24 nonces meets difficulty 24");
        // Both blobs carry the nonce at bytes 39..43.
        if !rejected_checked && nonce > start {
            // A nonce below it missed the target: monerod must refuse it.
            block[39..43].copy_from_slice(&start.to_le_bytes());
            let err = call(&node, "submit_block", json!([hex::encode(&block)])).unwrap_err();
            assert!(err.contains("-7") || err.contains("not accepted"), "{err}");
            let tip = call(&node, "get_last_block_header", json!({})).unwrap();
            assert_eq!(tip["block_header"]["height"].as_u64().unwrap(), height - 1, "a block below target landed");
            rejected_checked = true;
        }
        block[39..43].copy_from_slice(&nonce.to_le_bytes());
        hashing[39..43].copy_from_slice(&nonce.to_le_bytes());
        call(&node, "submit_block", json!([hex::encode(&block)])).unwrap();
        let tip = call(&node, "get_last_block_header", json!({"fill_pow_hash": true})).unwrap();
        let header = &tip["block_header"];
        assert_eq!(header["height"].as_u64().unwrap(), height, "our block did not land");
        assert_eq!(header["nonce"].as_u64().unwrap(), u64::from(nonce));
        let ours = vm.hash(&hashing);
        assert_eq!(header["pow_hash"].as_str().unwrap(), hex::encode(ours), "height {height}");
        assert!(target.is_met_by(&ours));
    }
    assert!(rejected_checked, "no round had a nonce below the target to submit");
}
