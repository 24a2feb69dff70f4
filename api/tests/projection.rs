//! Journals → database: exact rows on SQLite and on a real PostgreSQL,
//! identical whatever the batch size, identical after a rebuild, and
//! exactly once through a PostgreSQL outage.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use otedama_api::projection::{Projection, ProjectionConfig, ProjectionStatus, connect, sqlite_url};
use otedama_api::scratch_pg::Pg;
use sqlx::Row;

struct Fixture {
    dir: tempfile::TempDir,
    counts: ExchangeCounts,
    work: std::collections::BTreeMap<String, u128>,
}

const T0: u64 = 1_700_000_000_000_000_000;
const STEP: u64 = 7_000_000_000; // 7 s between shares: many 300 s intervals

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut counts = ExchangeCounts::default();
        let mut w = new_workload(11);
        exchange_journal(&dir.path().join("exchange"), &mut w, 6_000, true, &mut counts, None);
        std::fs::create_dir_all(dir.path().join("pool")).unwrap();
        let work = share_journals(&dir.path().join("pool"), 3, 900, T0, STEP, 0);
        blocks_journal(&dir.path().join("pool"), 100..105);
        Fixture { dir, counts, work }
    }
    fn cfg(&self, url: &str, batch_rows: usize, rebuild: bool) -> ProjectionConfig {
        ProjectionConfig {
            database_url: url.to_string(),
            exchange_journal: self.dir.path().join("exchange"),
            pool_dir: self.dir.path().join("pool"),
            rebuild,
            batch_rows,
        }
    }
}

fn ends(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    let end = |p: &Path| otedama_journal::Reader::open(p, 1, Default::default()).map(|r| r.published_seq()).unwrap_or(0);
    m.insert("exchange".to_string(), end(&dir.join("exchange")));
    m.insert("blocks".to_string(), end(&dir.join("pool/blocks")));
    for i in 0..3 {
        m.insert(format!("shares-{i}"), end(&dir.join(format!("pool/shares-{i}"))));
    }
    m
}

/// Runs a projection until it has applied every journal to its end.
fn project(f: &Fixture, cfg: ProjectionConfig) -> ProjectionStatus {
    let p = Projection::start(cfg).unwrap();
    let want = ends(f.dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = p.status();
        if s.positions == want {
            p.stop();
            return s;
        }
        assert!(Instant::now() < deadline, "projection stuck: {s:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Every row of every table as text, in key order (work_f64 left out: the
/// two databases print doubles differently; `work` is the exact value).
fn dump(url: &str) -> Vec<String> {
    rt().block_on(async {
        let pool = connect(url).await.unwrap();
        let q = [
            "SELECT journal || ',' || seq || ',' || ts FROM projection_positions ORDER BY journal",
            "SELECT match_id || ',' || instrument || ',' || ts || ',' || price || ',' || qty || ',' || taker_side || ',' || taker_order || ',' || taker_account || ',' || taker_fee || ',' || maker_order || ',' || maker_account || ',' || maker_fee || ',' || seq FROM trades ORDER BY match_id",
            "SELECT order_id || ',' || account || ',' || instrument || ',' || side || ',' || price || ',' || qty || ',' || filled || ',' || leaves || ',' || status || ',' || cancel_reason || ',' || accepted_ts || ',' || final_ts || ',' || last_seq FROM orders ORDER BY order_id",
            "SELECT address || ',' || worker || ',' || interval_start || ',' || shares || ',' || work || ',' || blocks FROM share_intervals ORDER BY address, worker, interval_start",
            "SELECT address || ',' || first_share || ',' || last_share || ',' || shares FROM miners ORDER BY address",
            "SELECT address || ',' || worker || ',' || first_share || ',' || last_share || ',' || shares FROM workers ORDER BY address, worker",
            "SELECT seq || ',' || height || ',' || block_id || ',' || time || ',' || subsidy || ',' || fees || ',' || job || ',' || outcome || ',' || on_chain_mask || ',' || finder || ',' || worker || ',' || reason FROM blocks ORDER BY seq",
        ];
        let mut out = Vec::new();
        for (t, sql) in q.iter().enumerate() {
            for r in sqlx::query(*sql).fetch_all(&pool).await.unwrap() {
                out.push(format!("{t}:{}", r.get::<String, _>(0)));
            }
        }
        pool.close().await;
        out
    })
}

fn scalar(url: &str, sql: &'static str) -> i64 {
    rt().block_on(async {
        let pool = connect(url).await.unwrap();
        let v: i64 = sqlx::query(sql).fetch_one(&pool).await.unwrap().get(0);
        pool.close().await;
        v
    })
}

fn check_rows(f: &Fixture, url: &str) {
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM trades") as u64, f.counts.trades);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM orders") as u64, f.counts.orders);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM orders WHERE status = 'open'") as u64, f.counts.open);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM orders WHERE status <> 'open' AND leaves <> 0"), 0);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM orders WHERE filled + leaves > qty"), 0);
    // Every fill in the orders table is a trade side.
    let fills = scalar(url, "SELECT CAST(SUM(filled) AS BIGINT) FROM orders");
    let traded = scalar(url, "SELECT CAST(SUM(qty) AS BIGINT) FROM trades");
    assert_eq!(fills, 2 * traded);
    assert_eq!(scalar(url, "SELECT CAST(SUM(shares) AS BIGINT) FROM share_intervals"), 900);
    assert_eq!(scalar(url, "SELECT CAST(SUM(shares) AS BIGINT) FROM miners"), 900);
    assert_eq!(scalar(url, "SELECT CAST(SUM(shares) AS BIGINT) FROM workers"), 900);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM miners"), 7);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM workers"), 21);
    assert_eq!(scalar(url, "SELECT CAST(SUM(blocks) AS BIGINT) FROM share_intervals"), 10);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM blocks"), 5);
    // Exact work per address, summed from the u128 column.
    let rows = dump(url);
    let mut work = std::collections::BTreeMap::<String, u128>::new();
    for r in rows.iter().filter_map(|r| r.strip_prefix("3:")) {
        let v: Vec<&str> = r.split(',').collect();
        *work.entry(v[0].to_string()).or_default() += v[4].parse::<u128>().unwrap();
    }
    assert_eq!(work, f.work);
    // 900 shares 7 s apart over 300 s intervals.
    let intervals = scalar(url, "SELECT COUNT(DISTINCT interval_start) FROM share_intervals");
    assert!((21..=23).contains(&intervals), "{intervals}");
}

#[test]
fn sqlite_rows_are_exact_whatever_the_batch_and_a_rebuild_gives_the_same_rows() {
    let f = Fixture::new();
    let db = f.dir.path().join("a.db");
    let url = sqlite_url(&db);
    let s = project(&f, f.cfg(&url, 50_000, false));
    assert!(s.rows > 0 && s.error.is_none(), "{s:?}");
    check_rows(&f, &url);
    let big = dump(&url);
    // Small batches: orders span many transactions (updates of rows
    // committed earlier, intervals reopened).
    let url2 = sqlite_url(&f.dir.path().join("b.db"));
    let s2 = project(&f, f.cfg(&url2, 97, false));
    assert!(s2.batches > 50, "{s2:?}");
    assert_eq!(dump(&url2), big);
    // Rebuild in place: the same rows.
    project(&f, f.cfg(&url, 1000, true));
    assert_eq!(dump(&url), big);
    // Restarting on a projected database writes nothing new.
    let s3 = project(&f, f.cfg(&url, 1000, false));
    assert_eq!(s3.rows, 0);
    assert_eq!(dump(&url), big);
}

#[test]
fn more_records_after_a_restart_continue_the_same_rows() {
    let f = Fixture::new();
    let url = sqlite_url(&f.dir.path().join("a.db"));
    project(&f, f.cfg(&url, 500, false));
    // The pool runs on: more shares (the last interval reopens), more blocks.
    share_journals(&f.dir.path().join("pool"), 3, 300, T0, STEP, 900);
    blocks_journal(&f.dir.path().join("pool"), 105..107);
    project(&f, f.cfg(&url, 500, false));
    let url2 = sqlite_url(&f.dir.path().join("b.db"));
    project(&f, f.cfg(&url2, 500, false));
    assert_eq!(dump(&url), dump(&url2));
    assert_eq!(scalar(&url, "SELECT CAST(SUM(shares) AS BIGINT) FROM share_intervals"), 1200);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM blocks"), 7);
}

#[test]
fn postgresql_gives_the_sqlite_rows_and_survives_an_outage() {
    let Some(pg) = Pg::start() else { return };
    let f = Fixture::new();
    let lite = sqlite_url(&f.dir.path().join("a.db"));
    project(&f, f.cfg(&lite, 5_000, false));
    let want = dump(&lite);

    // An outage in the middle: the server is stopped while the projection
    // runs, and started again; the rows are exact (none lost or doubled).
    let p = Projection::start(f.cfg(&pg.url(), 53, false)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.status().batches < 5 {
        assert!(Instant::now() < deadline, "{:?}", p.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.down();
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.status().error.is_none() {
        assert!(Instant::now() < deadline, "the outage was never noticed: {:?}", p.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.status().connected);
    std::thread::sleep(Duration::from_millis(500));
    pg.up();
    let want_pos = ends(f.dir.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    while p.status().positions != want_pos {
        assert!(Instant::now() < deadline, "no catch-up: {:?}", p.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = p.status();
    assert!(s.connected && s.error.is_none(), "{s:?}");
    p.stop();
    check_rows(&f, &pg.url());
    assert_eq!(dump(&pg.url()), want);

    // Rebuild on PostgreSQL: the same rows again.
    project(&f, f.cfg(&pg.url(), 10_000, true));
    assert_eq!(dump(&pg.url()), want);
}

#[test]
fn a_database_ahead_of_its_journal_is_refused_and_reported() {
    let f = Fixture::new();
    let url = sqlite_url(&f.dir.path().join("a.db"));
    project(&f, f.cfg(&url, 5_000, false));
    // The data directory is replaced by a shorter one.
    let g = tempfile::tempdir().unwrap();
    let mut c = ExchangeCounts::default();
    exchange_journal(&g.path().join("exchange"), &mut new_workload(3), 10, true, &mut c, None);
    let cfg =
        ProjectionConfig { exchange_journal: g.path().join("exchange"), pool_dir: g.path().join("pool"), ..f.cfg(&url, 5_000, false) };
    let p = Projection::start(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(e) = p.status().error {
            assert!(e.contains("--rebuild"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    p.stop();
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM trades") as u64, f.counts.trades, "nothing was changed");
}

/// Flips one payload byte of record `seq` of the journal in `dir` (its
/// checksum no longer matches).
fn corrupt(dir: &Path, seq: u64) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.len() < 4096 || &bytes[..8] != b"OTDMJSEG" {
            continue;
        }
        let mut off = 4096;
        while off + 32 <= bytes.len() {
            let size = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            if size == 0 || size == 0xFFFF_FFFF {
                break;
            }
            let s = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
            if s == seq {
                bytes[off + 32] ^= 0x5a;
                std::fs::write(&path, &bytes).unwrap();
                return;
            }
            off += size;
        }
    }
    panic!("record {seq} not found in {}", dir.display());
}

#[test]
fn a_corrupted_record_stops_the_projection_just_before_it_and_is_reported() {
    let f = Fixture::new();
    let bad = ends(f.dir.path())["exchange"] * 3 / 4;
    corrupt(&f.dir.path().join("exchange"), bad);
    let url = sqlite_url(&f.dir.path().join("a.db"));
    let p = Projection::start(f.cfg(&url, 1_000_000, false)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = p.status();
        if s.error.is_some() && s.positions.get("exchange") == Some(&(bad - 1)) {
            break s;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(s.error.as_deref().unwrap().contains("exchange journal"), "{s:?}");
    // It keeps retrying and never passes the bad record; the shares and
    // blocks journals, read in the same batch, are committed too.
    std::thread::sleep(Duration::from_millis(1500));
    let s = p.status();
    p.stop();
    assert_eq!(s.positions.get("exchange"), Some(&(bad - 1)), "{s:?}");
    assert!(s.error.is_some());
    let trades = scalar(&url, "SELECT COUNT(*) FROM trades");
    assert!(trades > 0 && (trades as u64) < f.counts.trades, "{trades}");
    assert!(scalar(&url, "SELECT MAX(seq) FROM trades") < bad as i64);

    // The API's own read model stops there too, says why, and serves what
    // it has.
    let api = otedama_api::server::Api::start(otedama_api::server::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exchange_journal: f.dir.path().join("exchange"),
        pool_dir: f.dir.path().join("pool"),
        database_url: None,
        rebuild: false,
        rate_per_sec: 1000.0,
        rate_burst: 1000.0,
        core: None,
        engine: None,
        tape_max: 0,
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let v: serde_json::Value = serde_json::from_str(&http_get(api.local_addr(), "/api/v1/status")).unwrap();
        if v["journal_error"].is_string() {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["applied_seq"].as_u64(), Some(bad - 1), "{status}");
    assert!(status["lag_records"].as_u64() > Some(0), "{status}");
    let book: serde_json::Value = serde_json::from_str(&http_get(api.local_addr(), "/api/v1/dex/orderbook/BENCH%2FUSD")).unwrap();
    assert!(book["seq"].as_u64() <= Some(bad - 1) && !book["bids"].as_array().unwrap().is_empty(), "{book}");
    // The pool's journals are fine: its routes are whole.
    let stats: serde_json::Value = serde_json::from_str(&http_get(api.local_addr(), "/api/v1/mining/stats")).unwrap();
    assert_eq!((stats["shares"].as_u64(), stats["blocks"].as_u64()), (Some(900), Some(5)), "{stats}");
    api.stop().unwrap();
}

/// The body of a GET (HTTP/1.1, connection closed after it).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn trades_older_than_the_memory_holds_are_paged_from_the_database() {
    let f = Fixture::new();
    let url = sqlite_url(&f.dir.path().join("a.db"));
    project(&f, f.cfg(&url, 5_000, false));
    let api = otedama_api::server::Api::start(otedama_api::server::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        exchange_journal: f.dir.path().join("exchange"),
        pool_dir: f.dir.path().join("pool"),
        database_url: Some(url.clone()),
        rebuild: false,
        rate_per_sec: 1e9,
        rate_burst: 1e9,
        core: None,
        engine: None,
        tape_max: 50,
    })
    .unwrap();
    let end = ends(f.dir.path())["exchange"];
    let deadline = Instant::now() + Duration::from_secs(30);
    while serde_json::from_str::<serde_json::Value>(&http_get(api.local_addr(), "/api/v1/status")).unwrap()["applied_seq"].as_u64()
        != Some(end)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every trade, page by page (37 at a time: pages straddle the memory's
    // 50 and the database), newest first, none twice.
    let mut ids = Vec::new();
    let mut path = "/api/v1/dex/trades/BENCH%2FUSD?limit=37".to_string();
    loop {
        let page: serde_json::Value = serde_json::from_str(&http_get(api.local_addr(), &path)).unwrap();
        let page = page.as_array().unwrap_or_else(|| panic!("{page}"));
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 37);
        ids.extend(page.iter().map(|t| t["match_id"].as_u64().unwrap()));
        path = format!("/api/v1/dex/trades/BENCH%2FUSD?limit=37&before={}", ids.last().unwrap());
    }
    assert_eq!(ids.len() as u64, f.counts.trades);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    api.stop().unwrap();
}
