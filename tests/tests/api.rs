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
    // One session per key: the API has an admin key of its own.
    let api_admin = key(data, "0", true);
    let alice = key(data, "1", false);
    let bob = key(data, "2", false);
    // The API first: it waits for the journal to appear, and logs in to the
    // engine as admin once the engine is up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gateway = format!("127.0.0.1:{port}");
    let mut c = otedama();
    c.args(["--data-dir", data, "--api-listen", "127.0.0.1:0", "--api-engine-addr", &gateway, "--api-engine-key", &api_admin, "api"]);
    let mut api = Spawned::start(c);
    let line = api.wait_for_line("otedama api: http://");
    let api_addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let mut c = otedama();
    c.args(["--data-dir", data, "--gateway-listen", &gateway, "--pool-enabled=false", "--journal-durability", "batch", "engine"]);
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
    // The admin session reads the engine's service-time histogram.
    let st = wait_json(&api_addr, "/api/v1/status", "engine link", |v| {
        v["engine"]["connected"] == true && v["engine"]["service_time"]["count"].as_u64() >= Some(9)
    });
    let t = &st["engine"]["service_time"];
    assert!(t["p50_ns"].as_u64() > Some(0) && t["p99_ns"].as_u64() >= t["p50_ns"].as_u64(), "{st}");

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

    // The engine restarts: the API keeps serving meanwhile, follows the
    // journal on, and its admin session logs in again.
    engine.signal(libc::SIGTERM);
    assert!(engine.finish().0.success());
    let (code, _) = get_json(&api_addr, "/api/v1/dex/orderbook/LTC-USD");
    assert_eq!(code, 200);
    let mut c = otedama();
    c.args(["--data-dir", data, "--gateway-listen", &gateway, "--pool-enabled=false", "--journal-durability", "batch", "engine"]);
    let mut engine = Spawned::start(c);
    engine.wait_for_line("order entry on");
    trade(&addr, &bob, &["sell", "1", "2", "--price", "99", "--tif", "ioc"]);
    let t = wait_json(&api_addr, "/api/v1/dex/trades/LTC-USD", "a trade after the restart", |v| v.as_array().map(Vec::len) == Some(2));
    assert_eq!((t[0]["price"].as_i64(), t[0]["qty"].as_u64()), (Some(100), Some(2)), "{t}");
    // Paginated: the page after the newest trade holds the older one.
    let (_, older) = get_json(&api_addr, &format!("/api/v1/dex/trades/LTC-USD?limit=1&before={}", t[0]["match_id"]));
    assert_eq!(older.as_array().map(|v| v[0]["match_id"].clone()), Some(t[1]["match_id"].clone()), "{older}");
    wait_json(&api_addr, "/api/v1/status", "a second admin login", |v| {
        v["engine"]["logins"].as_u64() >= Some(2) && v["engine"]["connected"] == true
    });

    engine.signal(libc::SIGTERM);
    assert!(engine.finish().0.success());
    api.signal(libc::SIGTERM);
    let (status, out) = api.finish();
    assert!(status.success() && out.contains("otedama api: stopped cleanly"), "{out}");
}

/// Rows of the API's database: (table, count) and Σ shares.
fn db_counts(url: &str) -> Vec<i64> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = otedama_api::projection::connect(url).await.unwrap();
        let mut v = Vec::new();
        for q in [
            "SELECT COUNT(*) FROM trades",
            "SELECT COUNT(*) FROM orders",
            "SELECT COUNT(*) FROM blocks",
            "SELECT CAST(COALESCE(SUM(shares), 0) AS BIGINT) FROM share_intervals",
            "SELECT COUNT(*) FROM workers",
        ] {
            let r = sqlx::query(q).fetch_one(&pool).await.unwrap();
            v.push(sqlx::Row::get::<i64, _>(&r, 0));
        }
        pool.close().await;
        v
    })
}

fn wait_json(api: &str, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, v) = get_json(api, path);
        if code == 200 && ok(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {code} {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn start_api(data: &str, extra: &[&str]) -> (Spawned, String) {
    let mut c = otedama();
    c.args(["--data-dir", data, "--api-listen", "127.0.0.1:0", "api"]).args(extra);
    let mut api = Spawned::start(c);
    let line = api.wait_for_line("otedama api: http://");
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    (api, addr)
}

#[test]
fn a_real_pool_s_shares_and_blocks_reach_the_mining_routes_and_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (api, api_addr) = start_api(data, &[]);
    let mut c = otedama();
    c.args(["--data-dir", data, "--gateway-listen", "127.0.0.1:0", "--pool-devnet-rpc", "127.0.0.1:0"]);
    // Every share is a devnet block here; most go stale at once: do not
    // wait long for the node to confirm them.
    c.args(["--stratum-host", "127.0.0.1", "--stratum-port", "0", "--stratum-confirm-wait-ms", "50", "engine"]);
    let mut engine = Spawned::start(c);
    let line = engine.wait_for_line("pool chain side");
    let stratum = line.split("Stratum V1 on ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    let payout = bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[5u8; 20]).unwrap();
    let mut m = otedama();
    m.args(["mine", "--url", &format!("stratum+tcp://{stratum}"), "--user", &format!("{payout}.rig1"), "--password", "d=0.0002"]);
    m.args(["--threads", "1", "--seconds", "2"]);
    let (out, stdout, stderr) = otedama_tests::run(m);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let accepted = summary["accepted"].as_u64().unwrap();
    assert!(accepted >= 1, "{summary}");
    // Every share at this difficulty is a devnet block; the engine submits
    // them one by one and records each; at its stop all are recorded.
    engine.signal(libc::SIGTERM);
    assert!(engine.finish().0.success());
    let mut r = otedama_journal::Reader::open(std::path::Path::new(data).join("pool/blocks"), 1, Default::default()).unwrap();
    let mut blocks = 0u64;
    while let Some(rec) = r.try_next().unwrap() {
        blocks += (rec.kind == otedama_journal::kinds::BLOCK_FOUND) as u64;
    }
    assert!(blocks >= 1);

    // Pool statistics from the merged share journals.
    let stats = wait_json(&api_addr, "/api/v1/mining/stats", "stats", |v| v["shares"].as_u64() == Some(accepted));
    assert_eq!(
        (stats["miners"].as_u64(), stats["workers"].as_u64(), stats["active_workers"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{stats}"
    );
    assert!(stats["hashrate"]["10m"].as_f64().unwrap() > 0.0, "{stats}");
    assert!(stats["network"]["difficulty"].as_f64().unwrap() > 0.0, "{stats}");
    let stats = wait_json(&api_addr, "/api/v1/mining/stats", "blocks", |v| v["blocks"].as_u64() == Some(blocks));
    assert_eq!(stats["last_blocks"][0]["finder"].as_str(), Some(payout.as_str()), "{stats}");
    let (_, first) = get_json(&api_addr, "/api/v1/mining/blocks?limit=1&before=2");
    assert_eq!((first[0]["seq"].as_u64(), first[0]["outcome"].as_str()), (Some(1), Some("landed")), "{first}");
    let (code, miner) = get_json(&api_addr, &format!("/api/v1/mining/miner/{payout}"));
    assert_eq!(code, 200, "{miner}");
    assert_eq!(miner["shares"].as_u64(), Some(accepted));
    assert_eq!(miner["workers"][0]["name"].as_str(), Some(format!("{payout}.rig1").as_str()), "{miner}");
    assert!(miner["hashrate"]["10m"].as_f64().unwrap() > 0.0);
    let (code, e) = get_json(&api_addr, "/api/v1/mining/miner/bcrt1qnobody");
    assert_eq!((code, e["code"].as_str()), (404, Some("unknown_address")));
    // Blocks page by page, newest first.
    let mut seen = Vec::new();
    let mut path = "/api/v1/mining/blocks?limit=2".to_string();
    loop {
        let (code, page) = get_json(&api_addr, &path);
        assert_eq!(code, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap()["seq"].as_u64().unwrap();
        seen.extend(page.iter().map(|b| b["seq"].as_u64().unwrap()));
        path = format!("/api/v1/mining/blocks?limit=2&before={last}");
    }
    assert_eq!(seen.len() as u64, blocks);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let (code, e) = get_json(&api_addr, "/api/v1/mining/blocks?before=x");
    assert_eq!((code, e["code"].as_str()), (400, Some("bad_parameter")));

    // The database (SQLite in the data directory by default) caught up.
    let st = wait_json(&api_addr, "/api/v1/status", "database", |v| {
        v["database"]["connected"] == true && v["database"]["lag_records"] == 0 && v["database"]["rows"].as_u64() > Some(0)
    });
    assert!(st["database"]["error"].is_null(), "{st}");
    api.signal(libc::SIGTERM);
    assert!(api.finish().0.success());
    let url = otedama_api::projection::sqlite_url(&std::path::Path::new(data).join("api.db"));
    let before = db_counts(&url);
    assert_eq!(before[2] as u64, blocks, "{before:?}");
    assert_eq!(before[3] as u64, accepted, "{before:?}");
    assert_eq!(before[4], 1, "{before:?}");

    // A rebuild from the journals gives the same rows.
    let (api, api_addr) = start_api(data, &["--rebuild"]);
    wait_json(&api_addr, "/api/v1/status", "rebuild", |v| v["database"]["lag_records"] == 0 && v["database"]["batches"].as_u64() > Some(0));
    api.signal(libc::SIGTERM);
    assert!(api.finish().0.success());
    assert_eq!(db_counts(&url), before);
}
