//! `otedama api` beside `otedama engine` on one data directory: what the
//! engine journals shows up in the API's read model over HTTP, and bad
//! requests get clean JSON errors.

use otedama_tests::{Spawned, add_key as key, http_get, otedama};
use serde_json::Value;

fn trade(addr: &str, key: &str, args: &[&str]) {
    let (ok, out) = otedama_tests::trade(addr, key, args);
    assert!(ok, "{args:?}: {out}");
}

fn get_json(api: &str, path: &str) -> (u16, Value) {
    let (code, body) = http_get(api, path);
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}")))
}

#[test]
fn the_api_serves_what_the_engine_journals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let admin = key(data, "0", true);
    let alice = key(data, "1", false);
    let bob = key(data, "2", false);
    // The API first: it waits for the journal to appear.
    let mut c = otedama();
    c.args(["--data-dir", data, "--api-listen", "127.0.0.1:0", "api"]);
    let mut api = Spawned::start(c);
    let line = api.wait_for_line("otedama api: http://");
    let api_addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let mut c = otedama();
    c.args(["--data-dir", data, "--gateway-listen", "127.0.0.1:0", "--pool-enabled=false", "--journal-durability", "batch", "engine"]);
    let mut engine = Spawned::start(c);
    let line = engine.wait_for_line("order entry on");
    let addr = line.split("order entry on ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    for args in [
        &["create-account", "1"][..],
        &["create-account", "2"],
        &["deposit", "1", "2", "1000000"],
        &["deposit", "2", "1", "1000"],
        &["add-instrument", "--id", "1", "--symbol", "LTC-USD", "--base", "1", "--quote", "2"],
    ] {
        trade(&addr, &admin, args);
    }
    trade(&addr, &alice, &["buy", "1", "10", "--price", "100"]);
    trade(&addr, &alice, &["buy", "1", "5", "--price", "99"]);
    trade(&addr, &bob, &["sell", "1", "7", "--price", "105"]);
    trade(&addr, &bob, &["sell", "1", "4", "--price", "100", "--tif", "ioc"]);

    // The tailer follows the journal within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let book = loop {
        let (code, v) = get_json(&api_addr, "/api/v1/dex/orderbook/LTC-USD?depth=5");
        if code == 200 && v["bids"][0] == serde_json::json!([100, 6, 1]) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "the API never caught up: {code} {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(book["bids"], serde_json::json!([[100, 6, 1], [99, 5, 1]]), "{book}");
    assert_eq!(book["asks"], serde_json::json!([[105, 7, 1]]), "{book}");
    let (code, depth1) = get_json(&api_addr, "/api/v1/dex/orderbook/LTC-USD?depth=1");
    assert_eq!((code, depth1["bids"].as_array().unwrap().len()), (200, 1));
    let (_, trades) = get_json(&api_addr, "/api/v1/dex/trades/LTC-USD");
    assert_eq!(trades.as_array().unwrap().len(), 1, "{trades}");
    assert_eq!(
        (trades[0]["price"].as_i64(), trades[0]["qty"].as_u64(), trades[0]["taker_side"].as_str()),
        (Some(100), Some(4), Some("sell"))
    );
    let (_, t) = get_json(&api_addr, "/api/v1/dex/ticker/LTC-USD");
    assert_eq!((t["last"].as_i64(), t["volume"].as_u64(), t["trades"].as_u64()), (Some(100), Some(4), Some(1)), "{t}");
    let (_, ins) = get_json(&api_addr, "/api/v1/dex/instruments");
    assert_eq!(ins[0]["symbol"], "LTC-USD");
    assert_eq!(ins[0]["status"], "trading");
    let (_, st) = get_json(&api_addr, "/api/v1/status");
    assert!(st["applied_seq"].as_u64().unwrap() > 10, "{st}");
    assert!(st["journal_error"].is_null(), "{st}");

    // Bad requests: clean JSON errors, and the API keeps serving.
    let (code, e) = get_json(&api_addr, "/api/v1/dex/orderbook/NOPE");
    assert_eq!((code, e["code"].as_str()), (404, Some("unknown_symbol")));
    let (code, e) = get_json(&api_addr, "/api/v1/dex/orderbook/LTC-USD?depth=0");
    assert_eq!((code, e["code"].as_str()), (400, Some("bad_parameter")));
    let (code, e) = get_json(&api_addr, "/api/v1/dex/trades/LTC-USD?limit=abc");
    assert_eq!((code, e["code"].as_str()), (400, Some("bad_parameter")));
    let (code, e) = get_json(&api_addr, "/api/v1/nothing");
    assert_eq!((code, e["code"].as_str()), (404, Some("not_found")));
    let (code, _) = get_json(&api_addr, "/api/v1/dex/instruments");
    assert_eq!(code, 200);
    let (code, doc) = get_json(&api_addr, "/api/v1/openapi.json");
    assert_eq!((code, doc["openapi"].as_str()), (200, Some("3.1.0")));
    assert!(doc["paths"]["/api/v1/dex/orderbook/{symbol}"].is_object());

    engine.signal(libc::SIGTERM);
    assert!(engine.finish().0.success());
    api.signal(libc::SIGTERM);
    let (status, out) = api.finish();
    assert!(status.success() && out.contains("otedama api: stopped cleanly"), "{out}");
}
