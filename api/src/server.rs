//! `otedama api`: the read models served over HTTP (axum on a
//! current-thread tokio runtime), fed by threads that tail the exchange
//! journal and the pool's journals read-only, and the database projection
//! beside them. The engine is never asked and never slowed: every tailer
//! is one more journal reader.
//!
//! Routes (JSON; prices in ticks and quantities in lots, as the engine
//! holds them):
//! - `GET /api/v1/status`: journal position applied, the journal's end, lag.
//! - `GET /api/v1/openapi.json`: the OpenAPI document of these routes.
//! - `GET /api/v1/dex/instruments`
//! - `GET /api/v1/dex/orderbook/{symbol}?depth=N` (1..=1000, default 50)
//! - `GET /api/v1/dex/ticker/{symbol}` (24 h)
//! - `GET /api/v1/dex/trades/{symbol}?limit=N&before=M` (1..=1000, default 100; `before`: a match id, the page cursor)
//! - `GET /api/v1/mining/stats`, `GET /api/v1/mining/miner/{address}`
//! - `GET /api/v1/mining/blocks?limit=N&before=M` (`before`: a blocks-journal sequence)
//!
//! Errors: `{"code": "...", "message": "..."}` with 400 (a parameter out of
//! its limits), 404 (unknown symbol, address or route), 429 with `Retry-After` (over
//! the per-IP rate limit, a token bucket per client address).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use otedama_journal::{Reader, ReaderOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use otedama_engine::chain::record::BlockRecord;
use otedama_engine::stratum::record::ShareRecord;
use otedama_journal::kinds;

use crate::engine_link::{EngineLink, EngineLinkConfig, EngineLinkStatus};
use crate::exchange_model::ExchangeModel;
use crate::pool_model::{Block, PoolModel};
use crate::projection::{Projection, ProjectionConfig, ProjectionStatus};
use crate::share_merge::ShareMerger;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The exchange journal (`<data_dir>/exchange`).
    pub exchange_journal: PathBuf,
    /// The pool's journals (`<data_dir>/pool`: `shares-<i>`, `blocks`).
    pub pool_dir: PathBuf,
    /// The database the journals are projected into (`sqlite://…` or
    /// `postgres://…`); `None`: no database.
    pub database_url: Option<String>,
    /// Empty the database and project the journals from their start.
    pub rebuild: bool,
    /// Requests per second each client IP may make, sustained, and its
    /// burst; beyond them: 429 with `Retry-After`.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    /// Pin the HTTP thread and the tailers to this core (benchmarks;
    /// `None`: unpinned).
    pub core: Option<usize>,
    /// The admin session with the engine (`None`: none).
    pub engine: Option<EngineLinkConfig>,
    /// Trades kept in memory per instrument (0: [`crate::exchange_model::TAPE_MAX`]);
    /// older pages come from the database.
    pub tape_max: usize,
}

/// Per-IP token buckets.
struct RateLimit {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Buckets kept before idle ones are dropped.
const BUCKETS_MAX: usize = 100_000;

impl RateLimit {
    /// `Ok` to serve, or `Err(seconds to wait)`.
    fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut b = self.buckets.lock().expect("lock");
        if b.len() >= BUCKETS_MAX && !b.contains_key(&ip) {
            // A full bucket is the same as none: drop those that refilled.
            let (per_sec, burst) = (self.per_sec, self.burst);
            b.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst);
        }
        let (tokens, at) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

async fn rate_limit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match s.limit.take(peer.ip(), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("over the per-IP rate limit; retry in {wait} s"));
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(wait));
            r
        }
    }
}

/// What the tailer reports.
#[derive(Default)]
struct Tail {
    /// The journal's published end, as last seen.
    journal_seq: AtomicU64,
    /// Why the journal could not be read, if it could not.
    error: Mutex<Option<String>>,
}

/// What the pool tailer reports.
#[derive(Default)]
struct PoolTail {
    /// Records the pool's journals hold beyond what the model applied.
    lag: AtomicU64,
    error: Mutex<Option<String>>,
}

#[derive(Clone)]
struct AppState {
    model: Arc<RwLock<ExchangeModel>>,
    tail: Arc<Tail>,
    pool: Arc<RwLock<PoolModel>>,
    pool_tail: Arc<PoolTail>,
    limit: Arc<RateLimit>,
    db: Option<Arc<Mutex<ProjectionStatus>>>,
    engine: Option<Arc<Mutex<EngineLinkStatus>>>,
    books: Arc<Mutex<BookCache>>,
    /// The database, read for trades older than the memory holds
    /// (connected on first use).
    db_read: Option<Arc<(String, tokio::sync::OnceCell<sqlx::AnyPool>)>>,
}

/// (instrument, depth) → (book version, answer).
type BookCache = HashMap<(u16, usize), (u64, axum::body::Bytes)>;

/// Answers cached at most (emptied when full: depths are 1..=1000 per
/// instrument, so a flood of odd depths cannot grow it).
const BOOK_CACHE_MAX: usize = 4096;

/// A running API.
pub struct Api {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tailer: Option<JoinHandle<()>>,
    pool_tailer: Option<JoinHandle<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    projection: Option<Projection>,
    link: Option<EngineLink>,
}

impl Api {
    pub fn start(cfg: ApiConfig) -> std::io::Result<Api> {
        let model = Arc::new(RwLock::new(ExchangeModel::with_tape(cfg.tape_max)));
        let tail = Arc::new(Tail::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tailer = {
            let (model, tail, stop, dir) = (model.clone(), tail.clone(), stop.clone(), cfg.exchange_journal.clone());
            let core = cfg.core;
            std::thread::Builder::new().name("journal-tailer".into()).spawn(move || {
                pin_to(core);
                run_tailer(dir, model, tail, stop)
            })?
        };
        let pool = Arc::new(RwLock::new(PoolModel::new()));
        let pool_tail = Arc::new(PoolTail::default());
        let pool_tailer = {
            let (pool, tail, stop, dir) = (pool.clone(), pool_tail.clone(), stop.clone(), cfg.pool_dir.clone());
            let core = cfg.core;
            std::thread::Builder::new().name("pool-tailer".into()).spawn(move || {
                pin_to(core);
                run_pool_tailer(dir, pool, tail, stop)
            })?
        };
        let std_listener = std::net::TcpListener::bind(cfg.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limit = Arc::new(RateLimit {
            per_sec: cfg.rate_per_sec.max(0.001),
            burst: cfg.rate_burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        });
        let projection = match &cfg.database_url {
            Some(url) => Some(Projection::start(ProjectionConfig {
                database_url: url.clone(),
                exchange_journal: cfg.exchange_journal.clone(),
                pool_dir: cfg.pool_dir.clone(),
                rebuild: cfg.rebuild,
                batch_rows: 20_000,
            })?),
            None => None,
        };
        let db = projection.as_ref().map(Projection::status_handle);
        let link = match cfg.engine.clone() {
            Some(c) => Some(EngineLink::start(c)?),
            None => None,
        };
        let engine = link.as_ref().map(EngineLink::status_handle);
        let db_read = cfg.database_url.clone().map(|u| Arc::new((u, tokio::sync::OnceCell::new())));
        let state = AppState { model, tail, pool, pool_tail, limit, db, engine, books: Arc::default(), db_read };
        let core = cfg.core;
        let server = std::thread::Builder::new().name("api-http".into()).spawn(move || {
            pin_to(core);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
            })
        })?;
        Ok(Api {
            addr,
            stop,
            tailer: Some(tailer),
            pool_tailer: Some(pool_tailer),
            server: Some(server),
            shutdown: Some(tx),
            projection,
            link,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (requests in flight finish) and the tailer.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut out = Ok(());
        if let Some(h) = self.server.take() {
            out = h.join().unwrap_or_else(|_| Err(std::io::Error::other("the HTTP thread panicked")));
        }
        for h in [self.tailer.take(), self.pool_tailer.take()].into_iter().flatten() {
            let _ = h.join();
        }
        if let Some(p) = self.projection.take() {
            p.stop();
        }
        if let Some(l) = self.link.take() {
            l.stop();
        }
        out
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Pins the calling thread when a core is configured.
fn pin_to(core: Option<usize>) {
    if let Some(c) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
}

/// Follows the journal into the model, a batch of records per write lock;
/// waits for the journal to appear, and reopens after errors.
fn run_tailer(dir: PathBuf, model: Arc<RwLock<ExchangeModel>>, tail: Arc<Tail>, stop: Arc<AtomicBool>) {
    let mut reader: Option<Reader> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(r) = reader.as_mut() else {
            let from = model.read().expect("model lock").last_seq() + 1;
            match Reader::open(&dir, from, ReaderOptions::default()) {
                Ok(r) => {
                    *tail.error.lock().expect("lock") = None;
                    reader = Some(r);
                }
                Err(e) => {
                    let msg = e.to_string();
                    let mut err = tail.error.lock().expect("lock");
                    if err.as_deref() != Some(&msg) {
                        tracing::warn!(journal = %dir.display(), error = %msg, "cannot read the exchange journal yet; retrying");
                        *err = Some(msg);
                    }
                    drop(err);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            continue;
        };
        tail.journal_seq.store(r.published_seq(), Ordering::Relaxed);
        let mut n = 0;
        let result = {
            let mut m = model.write().expect("model lock");
            loop {
                match r.try_next() {
                    Ok(Some(rec)) => {
                        if let Err(e) = m.apply_record(&rec) {
                            break Err(e.to_string());
                        }
                        n += 1;
                        if n == 4096 {
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e.to_string()),
                }
            }
        };
        match result {
            Ok(()) if n == 0 => {
                r.wait(Duration::from_millis(200));
            }
            Ok(()) => {}
            Err(e) => {
                // The model keeps serving what it has; the reason is in
                // /api/v1/status and the log.
                tracing::error!(error = %e, "journal tailer stopped at a record it cannot read; retrying in 1 s");
                *tail.error.lock().expect("lock") = Some(e);
                reader = None;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Follows the merged share journals and the blocks journal into the pool
/// model; after an error, resumes after the last record applied.
fn run_pool_tailer(dir: PathBuf, pool: Arc<RwLock<PoolModel>>, tail: Arc<PoolTail>, stop: Arc<AtomicBool>) {
    let mut merger = ShareMerger::new(&dir, &Default::default(), 0);
    let mut blocks: Option<Reader> = None;
    let mut blocks_next = 1;
    let mut last_rescan = Instant::now();
    let blocks_dir = dir.join("blocks");
    while !stop.load(Ordering::Relaxed) {
        let result = (|| -> Result<usize, String> {
            let mut n = 0;
            if blocks.is_none() && blocks_dir.join("journal.ctl").exists() {
                blocks =
                    Some(Reader::open(&blocks_dir, blocks_next, ReaderOptions::default()).map_err(|e| format!("blocks journal: {e}"))?);
            }
            let mut m = pool.write().expect("pool lock");
            if let Some(r) = blocks.as_mut() {
                while let Some(rec) = r.try_next().map_err(|e| format!("blocks journal: {e}"))? {
                    if rec.kind == kinds::BLOCK_FOUND {
                        let b = BlockRecord::decode(rec.payload).map_err(|e| format!("blocks journal record {}: {e}", rec.seq))?;
                        m.apply_block(rec.seq, rec.timestamp_ns, b);
                    }
                    blocks_next = rec.seq + 1;
                    n += 1;
                }
            }
            while n < 4096 {
                let Some(s) = merger.next_share()? else { break };
                let rec = ShareRecord::decode(&s.payload).map_err(|e| format!("shares-{} record {}: {e}", s.shard, s.seq))?;
                m.apply_share(s.ts, &rec);
                n += 1;
            }
            Ok(n)
        })();
        tail.lag.store(merger.lag() + blocks.as_ref().map_or(0, |r| r.published_seq().saturating_sub(blocks_next - 1)), Ordering::Relaxed);
        match result {
            Ok(n) => {
                *tail.error.lock().expect("lock") = None;
                if n == 0 {
                    if last_rescan.elapsed() > Duration::from_secs(2) {
                        merger.rescan();
                        last_rescan = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "pool tailer stopped at a record it cannot read; retrying in 1 s");
                *tail.error.lock().expect("lock") = Some(e);
                merger = ShareMerger::new(&dir, &merger.positions(), merger.last_ts());
                blocks = None;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Every route, as served: the router and the OpenAPI document are both
/// built from this table, and a test holds the document to it.
fn routes() -> Vec<(&'static str, axum::routing::MethodRouter<AppState>)> {
    vec![
        ("/api/v1/status", get(status)),
        ("/api/v1/openapi.json", get(openapi_json)),
        ("/api/v1/dex/instruments", get(instruments)),
        ("/api/v1/dex/orderbook/{symbol}", get(orderbook)),
        ("/api/v1/dex/ticker/{symbol}", get(ticker)),
        ("/api/v1/dex/trades/{symbol}", get(trades)),
        ("/api/v1/mining/stats", get(mining_stats)),
        ("/api/v1/mining/miner/{address}", get(mining_miner)),
        ("/api/v1/mining/blocks", get(mining_blocks)),
    ]
}

/// The paths the server answers (all `GET`).
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(p, _)| p).collect()
}

fn router(state: AppState) -> axum::Router {
    let mut r = axum::Router::new();
    for (path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit))
        .with_state(state)
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

/// The OpenAPI 3.1 description of the routes above.
pub fn openapi() -> Value {
    let symbol = json!({"name": "symbol", "in": "path", "required": true, "schema": {"type": "string"}, "description": "instrument symbol, e.g. LTC-USD"});
    let count = |name: &str, default: u32, what: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": default}, "description": what});
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let ok = |what: &str| json!({"description": what, "content": {"application/json": {}}});
    let before = json!({"name": "before", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "only items with a cursor below this one (the page after the one that ended there)"});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Otedama API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The cold path's read API. Prices are in ticks of the instrument, quantities in lots, timestamps in ns since the Unix epoch."},
        "paths": {
            "/api/v1/status": {"get": {"summary": "journal position applied, the journal's end, lag", "responses": {"200": ok("status")}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": ok("OpenAPI document")}}},
            "/api/v1/dex/instruments": {"get": {"summary": "every instrument", "responses": {"200": ok("instruments")}}},
            "/api/v1/dex/orderbook/{symbol}": {"get": {"summary": "L2 book: [price, quantity, orders] per level, best first; seq: the journal record of the book's last change",
                "parameters": [symbol, count("depth", 50, "levels per side")], "responses": {"200": ok("book"), "400": err, "404": err}}},
            "/api/v1/dex/ticker/{symbol}": {"get": {"summary": "24-hour ticker", "parameters": [symbol], "responses": {"200": ok("ticker"), "404": err}}},
            "/api/v1/dex/trades/{symbol}": {"get": {"summary": "trades newest first; for the next page pass the last match_id as before",
                "parameters": [symbol, count("limit", 100, "trades"), before], "responses": {"200": ok("trades"), "400": err, "404": err, "503": err}}},
            "/api/v1/mining/stats": {"get": {"summary": "pool hashrate (H/s, from accepted work), miners, workers, shares, network difficulty, last blocks",
                "responses": {"200": ok("pool statistics")}}},
            "/api/v1/mining/miner/{address}": {"get": {"summary": "one payout address: hashrate over 10 min, 1 h, 24 h, 300-s history, workers, shares",
                "parameters": [{"name": "address", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 255}, "description": "payout address"}],
                "responses": {"200": ok("miner"), "400": err, "404": err}}},
            "/api/v1/mining/blocks": {"get": {"summary": "blocks newest first; for the next page pass the last seq as before",
                "parameters": [count("limit", 50, "blocks"), before], "responses": {"200": ok("blocks"), "400": err}}},
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "description": "stable: bad_parameter, unknown_symbol, unknown_address, not_found, rate_limited, database_unavailable"}, "message": {"type": "string"}}}}},
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn over_the_per_ip_rate_the_answer_is_429_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let api = super::Api::start(super::ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            exchange_journal: dir.path().join("none"),
            pool_dir: dir.path().join("none"),
            database_url: None,
            rebuild: false,
            core: None,
            engine: None,
            tape_max: 0,
            rate_per_sec: 0.5,
            rate_burst: 3.0,
        })
        .unwrap();
        let answers: Vec<String> = (0..5).map(|_| get(api.local_addr(), "/api/v1/status")).collect();
        for a in &answers[..3] {
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        }
        for a in &answers[3..] {
            assert!(a.starts_with("HTTP/1.1 429"), "{a}");
            assert!(a.to_ascii_lowercase().contains("retry-after: 2"), "{a}");
            assert!(a.contains("\"code\":\"rate_limited\""), "{a}");
        }
        // Without a journal the status says why, and the API keeps serving.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let a = get(api.local_addr(), "/api/v1/status");
        assert!(a.starts_with("HTTP/1.1 200") && a.contains("journal_error"), "{a}");
        api.stop().unwrap();
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc = super::openapi();
        let mut documented: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut served = super::route_paths();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
        for (path, item) in doc["paths"].as_object().unwrap() {
            // Every path parameter in the template is declared.
            for p in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                let params = item["get"]["parameters"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                assert!(params.iter().any(|x| x["name"] == p && x["in"] == "path"), "{path}: {p}");
            }
        }
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

fn unknown_symbol(s: &str) -> Response {
    error(StatusCode::NOT_FOUND, "unknown_symbol", format!("no instrument {s:?}"))
}

/// `limit` (1..=1000, `default` when absent) and the `before` cursor of a
/// paginated listing.
fn page(q: Result<Query<PageQ>, axum::extract::rejection::QueryRejection>, default: u32) -> Result<(usize, Option<u64>), String> {
    let q = q.map(|Query(q)| q);
    let before = q.as_ref().ok().and_then(|q| q.before);
    Ok((bounded(q.map(|q| q.limit), default, 1000, "limit")?, before))
}

/// A count parameter (as the query parsed, or why it did not) within
/// `1..=max`, `default` when absent; the refusal's message otherwise.
fn bounded(v: Result<Option<u32>, axum::extract::rejection::QueryRejection>, default: u32, max: u32, name: &str) -> Result<usize, String> {
    match v.map_err(|e| e.body_text())?.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n as usize),
        n => Err(format!("{name} must be 1..={max}, got {n}")),
    }
}

async fn status(State(s): State<AppState>) -> Json<Value> {
    let applied = s.model.read().expect("model lock").last_seq();
    let end = s.tail.journal_seq.load(Ordering::Relaxed).max(applied);
    let err = s.tail.error.lock().expect("lock").clone();
    let database = s.db.as_ref().map(|d| {
        let d = d.lock().expect("lock").clone();
        json!({"connected": d.connected, "positions": d.positions, "lag_records": d.lag_records, "rows": d.rows, "batches": d.batches, "error": d.error})
    });
    let pool = json!({
        "shares_applied": s.pool.read().expect("pool lock").shares(),
        "lag_records": s.pool_tail.lag.load(Ordering::Relaxed),
        "error": s.pool_tail.error.lock().expect("lock").clone(),
    });
    let engine = s.engine.as_ref().map(|e| {
        let e = e.lock().expect("lock").clone();
        let stats = e.stats.map(|m| {
            json!({"commands": m.commands, "count": m.count, "since_ns": m.since_ns, "p50_ns": m.p50_ns, "p90_ns": m.p90_ns,
                   "p99_ns": m.p99_ns, "p999_ns": m.p999_ns, "max_ns": m.max_ns, "busy_ns": m.busy_ns})
        });
        json!({"connected": e.connected, "error": e.error, "logins": e.logins, "service_time": stats})
    });
    Json(json!({
        "journal_seq": end, "applied_seq": applied, "lag_records": end - applied, "journal_error": err,
        "pool": pool, "database": database, "engine": engine,
    }))
}

async fn instruments(State(s): State<AppState>) -> Json<Value> {
    let m = s.model.read().expect("model lock");
    Json(Value::Array(
        m.instruments()
            .map(|i| {
                json!({
                    "id": i.id, "symbol": i.symbol, "base": i.base, "quote": i.quote, "tick": i.tick, "lot": i.lot,
                    "min_price": i.min_price, "max_price": i.max_price, "min_qty": i.min_qty, "max_qty": i.max_qty,
                    "maker_bps": i.maker_bps, "taker_bps": i.taker_bps, "status": if i.trading { "trading" } else { "halted" },
                })
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct DepthQ {
    depth: Option<u32>,
}

async fn orderbook(
    State(s): State<AppState>,
    Path(symbol): Path<String>,
    q: Result<Query<DepthQ>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let depth = match bounded(q.map(|Query(q)| q.depth), 50, 1000, "depth") {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_parameter", m),
    };
    let m = s.model.read().expect("model lock");
    let Some(i) = m.instrument_by_symbol(&symbol) else { return unknown_symbol(&symbol) };
    let (id, seq) = (i.id, m.book_seq(i.id));
    // Many GETs see the same version of a book: its answer is built once
    // per (book version, depth) and shared.
    if let Some((at, body)) = s.books.lock().expect("cache lock").get(&(id, depth))
        && *at == seq
    {
        return ([(axum::http::header::CONTENT_TYPE, "application/json")], body.clone()).into_response();
    }
    let (bids, asks) = m.l2(id, depth);
    drop(m);
    // Written straight into its buffer: building a serde_json::Value per
    // level first cost about half the handler's time (measured with
    // `otedama bench api`).
    let mut out = String::with_capacity(64 + 24 * (bids.len() + asks.len()));
    out.push_str("{\"symbol\":");
    out.push_str(&serde_json::to_string(&symbol).unwrap_or_default());
    out.push_str(",\"seq\":");
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(seq));
    for (name, side) in [(",\"bids\":[", &bids), ("],\"asks\":[", &asks)] {
        out.push_str(name);
        for (k, l) in side.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push('[');
            out.push_str(n.format(l.price));
            out.push(',');
            out.push_str(n.format(l.qty));
            out.push(',');
            out.push_str(n.format(l.orders));
            out.push(']');
        }
    }
    out.push_str("]}");
    let body = axum::body::Bytes::from(out);
    let mut cache = s.books.lock().expect("cache lock");
    if cache.len() >= BOOK_CACHE_MAX {
        cache.clear();
    }
    cache.insert((id, depth), (seq, body.clone()));
    drop(cache);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn ticker(State(s): State<AppState>, Path(symbol): Path<String>) -> Response {
    let now = otedama_journal::now_ns();
    let mut m = s.model.write().expect("model lock");
    let Some(id) = m.instrument_by_symbol(&symbol).map(|i| i.id) else { return unknown_symbol(&symbol) };
    let t = m.ticker(id, now);
    Json(json!({
        "symbol": symbol, "window_s": 86_400, "open": t.open, "high": t.high, "low": t.low, "last": t.last,
        "volume": t.volume, "quote_volume": t.quote_volume.to_string(), "trades": t.trades,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PageQ {
    limit: Option<u32>,
    before: Option<u64>,
}

async fn trades(
    State(s): State<AppState>,
    Path(symbol): Path<String>,
    q: Result<Query<PageQ>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (limit, before) = match page(q, 100) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_parameter", m),
    };
    let (id, mut page, cut) = {
        let m = s.model.read().expect("model lock");
        let Some(i) = m.instrument_by_symbol(&symbol) else { return unknown_symbol(&symbol) };
        (i.id, m.trades_before(i.id, before, limit), m.tape_cut(i.id))
    };
    // Older than the memory holds: the rest of the page from the database.
    if page.len() < limit
        && let (Some(cut), Some(db)) = (cut, &s.db_read)
    {
        let below = page.last().map_or(before.unwrap_or(u64::MAX).min(cut), |t| t.match_id);
        let more = async {
            let pool = db.1.get_or_try_init(|| crate::projection::connect_read(&db.0, 2)).await?;
            crate::projection::trades_below(pool, id, below, limit - page.len()).await
        };
        match more.await {
            Ok(more) => page.extend(more),
            Err(e) => {
                tracing::warn!(error = %e, "older trades: the database cannot be read");
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    format!("older trades are in the database, which cannot be read now: {e}"),
                );
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(5));
                return r;
            }
        }
    }
    let v: Vec<Value> = page
        .into_iter()
        .map(|t| json!({"match_id": t.match_id, "ts": t.ts, "price": t.price, "qty": t.qty, "taker_side": if t.taker_side == 0 { "buy" } else { "sell" }}))
        .collect();
    Json(Value::Array(v)).into_response()
}

fn hashrates(b: &crate::pool_model::Buckets, now_s: u64) -> Value {
    json!({"10m": b.hashrate(now_s, 600), "1h": b.hashrate(now_s, 3600)})
}

fn block_json(b: &Block) -> Value {
    let r = &b.rec;
    json!({
        "seq": b.seq, "height": r.height, "hash": b.id_hex(), "time": r.time, "recorded_ns": b.recorded_ns,
        "subsidy": r.subsidy, "fees": r.fees, "reward": r.subsidy + r.fees, "outcome": b.outcome(),
        "on_chain_mask": r.on_chain_mask, "finder": r.finder, "worker": r.worker, "reason": r.reason,
    })
}

async fn mining_stats(State(s): State<AppState>) -> Json<Value> {
    let now_ns = otedama_journal::now_ns();
    let now_s = now_ns / 1_000_000_000;
    let m = s.pool.read().expect("pool lock");
    let (active_miners, active_workers) = m.active(now_ns);
    let (difficulty, work) = m.network().map_or((None, None), |(d, w)| (Some(d), Some(w.to_string())));
    let last: Vec<Value> = m.blocks(None, 5).map(block_json).collect();
    Json(json!({
        "hashrate": {"10m": m.hashrate(now_s, 600), "1h": m.hashrate(now_s, 3600)},
        "miners": m.miners(), "workers": m.workers(), "active_miners": active_miners, "active_workers": active_workers,
        "shares": m.shares(), "work": m.work().to_string(), "last_share_ns": m.last_share_ns(),
        "network": {"height": m.height(), "difficulty": difficulty, "hashes_per_block": work},
        "blocks": m.blocks_total(), "last_blocks": last,
    }))
}

async fn mining_miner(State(s): State<AppState>, Path(address): Path<String>) -> Response {
    if address.len() > 255 {
        return error(StatusCode::BAD_REQUEST, "bad_parameter", "an address is at most 255 bytes".into());
    }
    let now_s = otedama_journal::now_ns() / 1_000_000_000;
    let m = s.pool.read().expect("pool lock");
    let Some(x) = m.miner(&address) else {
        return error(StatusCode::NOT_FOUND, "unknown_address", format!("no shares from {address:?}"));
    };
    let history: Vec<Value> = x
        .history
        .iter()
        .map(|&(start, shares, work)| json!({"start": start, "shares": shares, "work": work.to_string(), "hashrate": work as f64 / crate::pool_model::MINER_HISTORY_S as f64}))
        .collect();
    let workers: Vec<Value> = x
        .workers
        .iter()
        .map(|(name, w)| {
            json!({"name": name, "shares": w.shares, "work": w.work.to_string(), "first_share_ns": w.first_share_ns,
                   "last_share_ns": w.last_share_ns, "hashrate": hashrates(&w.recent, now_s)})
        })
        .collect();
    Json(json!({
        "address": address, "shares": x.shares, "work": x.work.to_string(), "blocks": x.blocks,
        "first_share_ns": x.first_share_ns, "last_share_ns": x.last_share_ns,
        "hashrate": {"10m": x.recent.hashrate(now_s, 600), "1h": x.history.hashrate(now_s, 3600), "24h": x.history.hashrate(now_s, 86_400)},
        "history": history, "workers": workers,
    }))
    .into_response()
}

async fn mining_blocks(State(s): State<AppState>, q: Result<Query<PageQ>, axum::extract::rejection::QueryRejection>) -> Response {
    let (limit, before) = match page(q, 50) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, "bad_parameter", m),
    };
    let m = s.pool.read().expect("pool lock");
    Json(Value::Array(m.blocks(before, limit).map(block_json).collect())).into_response()
}
