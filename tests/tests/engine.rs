//! `otedama keys`, `otedama engine` and `otedama trade` as a user runs
//! them: separate processes, the data directory between them.

use otedama_tests::{Spawned, otedama, run};
use serde_json::Value;

fn key(data: &str, account: &str, admin: bool) -> String {
    let mut c = otedama();
    c.args(["--data-dir", data, "keys", "add", "--account", account, "--json"]);
    if admin {
        c.arg("--admin");
    }
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    format!("{}:{}", v["id"].as_str().unwrap(), v["secret"].as_str().unwrap())
}

fn trade(addr: &str, key: &str, args: &[&str]) -> (bool, String) {
    let mut c = otedama();
    c.args(["trade", "--addr", addr, "--key", key]).args(args);
    let (out, stdout, stderr) = run(c);
    (out.status.success(), format!("{stdout}{stderr}"))
}

fn start_engine(data: &str) -> (Spawned, String) {
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
    let line = e.wait_for_line("order entry on");
    let addr = line.split("order entry on ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    (e, addr)
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
