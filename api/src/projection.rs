//! The database: a projection of the journals (sqlx, SQLite by default,
//! PostgreSQL with a `postgres://` URL; one set of migrations for both,
//! `api/migrations/`, layout in `api/DATABASE.md`).
//!
//! One thread reads the exchange journal, the merged share journals and
//! the blocks journal, turns a batch of records into rows, and writes the
//! rows and the journal positions they came from in one transaction. So
//! the database is always exactly the projection of a prefix of each
//! journal: after a crash, a lost connection or a restart it resumes from
//! the positions it stored, and nothing is written twice or skipped. A
//! database outage only delays it: the thread reconnects with backoff,
//! reloads its positions and the state it keeps between batches (the share
//! intervals still open) from the database, and catches up in large
//! batches. `rebuild` empties every table first and projects the journals
//! from their beginning.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use otedama_engine::chain::record::{BlockRecord, Outcome};
use otedama_engine::codec::decode_events;
use otedama_engine::stratum::record::ShareRecord;
use otedama_engine::{CancelReason, Event, Side};
use otedama_journal::{Reader, ReaderOptions, kinds};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::share_merge::ShareMerger;
use crate::worker::{Worker, sleep_unless_stopped};

/// Shares are aggregated per (address, worker) over intervals this long.
pub const INTERVAL_S: u64 = 300;

#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// `sqlite://<path>?mode=rwc` or `postgres://user@host:port/db`.
    pub database_url: String,
    /// `<data_dir>/exchange`.
    pub exchange_journal: PathBuf,
    /// `<data_dir>/pool`: `shares-<i>` and `blocks`.
    pub pool_dir: PathBuf,
    /// Empty every table first and project the journals from the start.
    pub rebuild: bool,
    /// Rows gathered before a batch is written (more when catching up is
    /// not needed: a batch is written as soon as the journals are drained).
    pub batch_rows: usize,
}

/// What the projection reports to `/api/v1/status` and to tests.
#[derive(Debug, Clone, Default)]
pub struct ProjectionStatus {
    pub connected: bool,
    /// The last error (database or journal), if the last attempt failed.
    pub error: Option<String>,
    /// Journal → last record applied, as committed.
    pub positions: BTreeMap<String, u64>,
    /// Records the journals hold beyond the committed positions.
    pub lag_records: u64,
    /// Rows written since start.
    pub rows: u64,
    /// Transactions committed since start.
    pub batches: u64,
}

/// The running projection.
pub struct Projection(Worker<ProjectionStatus>);

impl Projection {
    pub fn start(cfg: ProjectionConfig) -> std::io::Result<Projection> {
        Worker::spawn("db-projection", move |status, stop| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(run(cfg, status, stop));
        })
        .map(Projection)
    }

    pub fn status(&self) -> ProjectionStatus {
        self.0.status()
    }

    pub fn status_handle(&self) -> Arc<Mutex<ProjectionStatus>> {
        self.0.status_handle()
    }

    /// Stops after the batch in flight (committed or not).
    pub fn stop(self) {
        self.0.stop();
    }
}

/// The default database: SQLite in the data directory.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Connects (one connection: the projection is one writer) and applies the
/// migrations.
pub async fn connect(url: &str) -> Result<AnyPool, String> {
    let pool = open(url, 1).await?;
    migrator().run(&pool).await.map_err(|e| format!("migrations: {e}"))?;
    Ok(pool)
}

/// A pool of `n` connections to read with (the migrations are the
/// projection's business).
pub async fn connect_read(url: &str, n: u32) -> Result<AnyPool, String> {
    open(url, n).await
}

async fn open(url: &str, n: u32) -> Result<AnyPool, String> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(install_default_drivers);
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(n)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // WAL: readers never block the writer; NORMAL: a commit
                    // is durable at the next checkpoint, and a lost tail is
                    // re-projected from the journals (positions commit with
                    // the rows).
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|e| format!("connect {}: {e}", redact(url)))
}

/// Trades of `instrument` with a match id below `below`, newest first, at
/// most `limit`: the pages older than the read model's memory.
pub async fn trades_below(pool: &AnyPool, instrument: u16, below: u64, limit: usize) -> Result<Vec<crate::exchange_model::Trade>, String> {
    let rows = sqlx::query(
        "SELECT match_id, ts, price, qty, taker_side FROM trades WHERE instrument = $1 AND match_id < $2 ORDER BY match_id DESC LIMIT $3",
    )
    .bind(instrument as i64)
    .bind(below.min(i64::MAX as u64) as i64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(crate::exchange_model::Trade {
                match_id: r.try_get::<i64, _>(0).map_err(db)? as u64,
                ts: r.try_get::<i64, _>(1).map_err(db)? as u64,
                price: r.try_get(2).map_err(db)?,
                qty: r.try_get::<i64, _>(3).map_err(db)? as u64,
                taker_side: r.try_get::<i64, _>(4).map_err(db)? as u8,
            })
        })
        .collect()
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The migrations, compiled into the binary.
pub fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let m = [("initial", include_str!("../migrations/0001_initial.sql"))];
    let migrations: Vec<Migration> = m
        .iter()
        .enumerate()
        .map(|(i, (name, sql))| Migration::new(i as i64 + 1, (*name).into(), MigrationType::Simple, SqlStr::from_static(sql), false))
        .collect();
    Migrator { migrations: migrations.into(), ..Migrator::DEFAULT }
}

/// Every projected table, emptied by a rebuild.
pub const TABLES: &[&str] = &["projection_positions", "trades", "orders", "share_intervals", "miners", "workers", "blocks"];

async fn run(cfg: ProjectionConfig, status: Arc<Mutex<ProjectionStatus>>, stop: Arc<AtomicBool>) {
    let mut rebuild = cfg.rebuild;
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::Relaxed) {
        match session(&cfg, &mut rebuild, &status, &stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "database projection paused; resuming from the committed positions");
                {
                    let mut s = status.lock().expect("status lock");
                    s.connected = false;
                    s.error = Some(e);
                }
                // (Blocking is fine: this runtime serves the projection alone.)
                sleep_unless_stopped(backoff, &stop);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection's worth of projecting: from the committed positions until
/// stopped (`Ok`) or an error (the caller starts a new session).
async fn session(cfg: &ProjectionConfig, rebuild: &mut bool, status: &Mutex<ProjectionStatus>, stop: &AtomicBool) -> Result<(), String> {
    let pool = connect(&cfg.database_url).await?;
    if *rebuild {
        let mut tx = pool.begin().await.map_err(db)?;
        for t in TABLES {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {t}"))).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        *rebuild = false;
        tracing::info!("database emptied for a rebuild from the journals");
    }
    let mut p = Projector::load(cfg, &pool).await?;
    {
        let mut s = status.lock().expect("status lock");
        s.connected = true;
        s.error = None;
        s.positions = p.positions();
    }
    let mut last_rescan = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Batch::default();
        p.gather(&mut batch, cfg.batch_rows)?;
        if let Some(e) = batch.unreadable.take() {
            // What came before the bad record is committed; then the
            // session ends with the reason (status, log) and is retried.
            if !batch.is_empty() {
                let rows = batch.rows();
                p.write(&pool, &batch).await?;
                let mut s = status.lock().expect("status lock");
                s.positions = p.positions();
                s.rows += rows as u64;
                s.batches += 1;
            }
            return Err(e);
        }
        if batch.is_empty() {
            let lag = p.lag();
            status.lock().expect("status lock").lag_records = lag;
            if last_rescan.elapsed() > Duration::from_secs(2) {
                p.shares.rescan();
                p.open_missing();
                last_rescan = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let rows = batch.rows();
        p.write(&pool, &batch).await?;
        p.close_intervals();
        let mut s = status.lock().expect("status lock");
        s.positions = p.positions();
        s.rows += rows as u64;
        s.batches += 1;
        s.lag_records = p.lag();
    }
    pool.close().await;
    Ok(())
}

fn db(e: sqlx::Error) -> String {
    format!("database: {e}")
}

/// What a share interval has accumulated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Agg {
    shares: i64,
    work: u128,
    blocks: i64,
}

/// (interval start, address, worker)
type IntervalKey = (i64, String, String);

struct OrderRow {
    /// Accepted in this batch: inserted; otherwise an update of a row
    /// the database holds.
    new: bool,
    account: i64,
    instrument: i64,
    side: i64,
    price: i64,
    qty: i64,
    /// New fills in this batch.
    filled: i64,
    leaves: i64,
    status: &'static str,
    reason: &'static str,
    accepted_ts: i64,
    final_ts: i64,
    last_seq: i64,
}

struct TradeHalf {
    order: i64,
    account: i64,
    fee: i64,
    price: i64,
    qty: i64,
}

/// Both executions of one match.
struct Match {
    id: u64,
    taker: Option<TradeHalf>,
    maker: Option<TradeHalf>,
}

struct TradeRow {
    match_id: i64,
    instrument: i64,
    ts: i64,
    price: i64,
    qty: i64,
    taker_side: i64,
    taker: TradeHalf,
    maker: TradeHalf,
    seq: i64,
}

#[derive(Default)]
struct Seen {
    first: i64,
    last: i64,
    shares: i64,
}

struct BlockRow {
    seq: i64,
    rec: BlockRecord,
}

#[derive(Default)]
struct Batch {
    trades: Vec<TradeRow>,
    orders: BTreeMap<u64, OrderRow>,
    intervals: BTreeMap<IntervalKey, ()>,
    miners: BTreeMap<String, Seen>,
    workers: BTreeMap<(String, String), Seen>,
    blocks: Vec<BlockRow>,
    /// Any journal position moved (records that produce no rows still
    /// move positions).
    moved: bool,
    /// Gathering stopped at a record that cannot be read: why.
    unreadable: Option<String>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.trades.len() + self.orders.len() + self.intervals.len() + self.miners.len() + self.workers.len() + self.blocks.len()
    }
    fn is_empty(&self) -> bool {
        !self.moved
    }
}

/// Converts a journal integer to the database's BIGINT, or says why not.
fn big(v: u64, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("{what} {v} does not fit the database's BIGINT"))
}

fn reason_name(r: CancelReason) -> &'static str {
    match r {
        CancelReason::Requested => "requested",
        CancelReason::Unfilled => "unfilled",
        CancelReason::BudgetExhausted => "budget_exhausted",
        CancelReason::MassCancel => "mass_cancel",
        CancelReason::Replaced => "replaced",
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Landed => "landed",
        Outcome::NotOnChain => "not_on_chain",
        Outcome::Rejected => "rejected",
        Outcome::Unreachable => "unreachable",
    }
}

fn side_num(s: Side) -> i64 {
    match s {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

fn interval_of(ts_ns: u64) -> i64 {
    let s = ts_ns / 1_000_000_000;
    (s - s % INTERVAL_S) as i64
}

/// The projection's readers and the state it keeps between batches.
struct Projector {
    exchange_dir: PathBuf,
    blocks_dir: PathBuf,
    exchange: Option<Reader>,
    exchange_seq: u64,
    exchange_ts: u64,
    blocks: Option<Reader>,
    blocks_seq: u64,
    shares: ShareMerger,
    /// Intervals that can still receive shares (at or after the merged
    /// stream's current interval), as committed plus this batch.
    intervals: BTreeMap<IntervalKey, Agg>,
    events: Vec<Event>,
    sqlite: bool,
}

impl Projector {
    /// Positions and open intervals from the database.
    async fn load(cfg: &ProjectionConfig, pool: &AnyPool) -> Result<Projector, String> {
        let rows = sqlx::query("SELECT journal, seq, ts FROM projection_positions").fetch_all(pool).await.map_err(db)?;
        let mut pos: HashMap<String, (u64, u64)> = HashMap::new();
        for r in rows {
            let j: String = r.try_get(0).map_err(db)?;
            let seq: i64 = r.try_get(1).map_err(db)?;
            let ts: i64 = r.try_get(2).map_err(db)?;
            pos.insert(j, (seq as u64, ts as u64));
        }
        let mut shard_pos = BTreeMap::new();
        for (j, &(seq, _)) in &pos {
            if let Some(i) = j.strip_prefix("shares-").and_then(|i| i.parse::<u32>().ok()) {
                shard_pos.insert(i, seq);
            }
        }
        let shares_ts = pos.get("shares").map_or(0, |p| p.1);
        let mut intervals = BTreeMap::new();
        let open_from = interval_of(shares_ts);
        let rows =
            sqlx::query("SELECT interval_start, address, worker, shares, work, blocks FROM share_intervals WHERE interval_start >= $1")
                .bind(open_from)
                .fetch_all(pool)
                .await
                .map_err(db)?;
        for r in rows {
            let work: String = r.try_get(4).map_err(db)?;
            let agg = Agg {
                shares: r.try_get(3).map_err(db)?,
                work: work.parse().map_err(|e| format!("share_intervals.work {work:?}: {e}"))?,
                blocks: r.try_get(5).map_err(db)?,
            };
            intervals.insert((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?), agg);
        }
        let (exchange_seq, exchange_ts) = pos.get("exchange").copied().unwrap_or((0, 0));
        let mut p = Projector {
            exchange_dir: cfg.exchange_journal.clone(),
            blocks_dir: cfg.pool_dir.join("blocks"),
            exchange: None,
            exchange_seq,
            exchange_ts,
            blocks: None,
            blocks_seq: pos.get("blocks").map_or(0, |p| p.0),
            shares: ShareMerger::new(&cfg.pool_dir, &shard_pos, shares_ts),
            intervals,
            events: Vec::new(),
            sqlite: cfg.database_url.starts_with("sqlite:"),
        };
        p.open_missing();
        p.check_not_ahead()?;
        Ok(p)
    }

    /// Opens the journals that exist now.
    fn open_missing(&mut self) {
        let open = |dir: &PathBuf, from: u64| {
            if dir.join("journal.ctl").exists() { Reader::open(dir, from + 1, ReaderOptions::default()).ok() } else { None }
        };
        if self.exchange.is_none() {
            self.exchange = open(&self.exchange_dir, self.exchange_seq);
        }
        if self.blocks.is_none() {
            self.blocks = open(&self.blocks_dir, self.blocks_seq);
        }
    }

    /// A database ahead of its journal was projected from other journals
    /// (a data directory replaced): refuse rather than mix the two.
    fn check_not_ahead(&self) -> Result<(), String> {
        for (name, r, at) in [("exchange", &self.exchange, self.exchange_seq), ("blocks", &self.blocks, self.blocks_seq)] {
            if let Some(r) = r
                && r.published_seq() < at
            {
                return Err(format!(
                    "the database has {name} records up to {at} but the journal ends at {}: it was projected from other journals; run `otedama api --rebuild`",
                    r.published_seq()
                ));
            }
        }
        Ok(())
    }

    fn positions(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        m.insert("exchange".to_string(), self.exchange_seq);
        m.insert("blocks".to_string(), self.blocks_seq);
        for (i, s) in self.shares.positions() {
            m.insert(format!("shares-{i}"), s);
        }
        m
    }

    fn lag(&self) -> u64 {
        let e = self.exchange.as_ref().map_or(0, |r| r.published_seq().saturating_sub(self.exchange_seq));
        let b = self.blocks.as_ref().map_or(0, |r| r.published_seq().saturating_sub(self.blocks_seq));
        e + b + self.shares.lag()
    }

    /// Reads records into `b` until it holds `limit` rows or every journal
    /// is drained. A record that cannot be read or decoded ends the
    /// gathering before it changed anything: `b.unreadable` says why, and
    /// what came before it is still written. An `Err` (a record that
    /// decoded but cannot be projected) discards the whole batch.
    fn gather(&mut self, b: &mut Batch, limit: usize) -> Result<(), String> {
        self.open_missing();
        if let Some(r) = self.exchange.as_mut() {
            while b.rows() < limit {
                let rec = match r.try_next() {
                    Ok(Some(rec)) => rec,
                    Ok(None) => break,
                    Err(e) => {
                        b.unreadable = Some(format!("exchange journal after record {}: {e}", self.exchange_seq));
                        return Ok(());
                    }
                };
                if rec.kind == kinds::EXCHANGE_EVENTS {
                    if let Err(e) = decode_events(rec.payload, &mut self.events) {
                        b.unreadable = Some(format!("exchange journal record {}: {e}", rec.seq));
                        return Ok(());
                    }
                    exchange_events(b, &self.events, rec.seq, rec.timestamp_ns)?;
                }
                self.exchange_seq = rec.seq;
                self.exchange_ts = rec.timestamp_ns;
                b.moved = true;
            }
        }
        if let Some(r) = self.blocks.as_mut() {
            loop {
                let rec = match r.try_next() {
                    Ok(Some(rec)) => rec,
                    Ok(None) => break,
                    Err(e) => {
                        b.unreadable = Some(format!("blocks journal after record {}: {e}", self.blocks_seq));
                        return Ok(());
                    }
                };
                if rec.kind == kinds::BLOCK_FOUND {
                    match BlockRecord::decode(rec.payload) {
                        Ok(block) => b.blocks.push(BlockRow { seq: big(rec.seq, "sequence")?, rec: block }),
                        Err(e) => {
                            b.unreadable = Some(format!("blocks journal record {}: {e}", rec.seq));
                            return Ok(());
                        }
                    }
                }
                self.blocks_seq = rec.seq;
                b.moved = true;
            }
        }
        while b.rows() < limit {
            // A share the merger could not read is not consumed.
            let s = match self.shares.next_share() {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    b.unreadable = Some(e);
                    return Ok(());
                }
            };
            let rec = ShareRecord::decode(&s.payload).map_err(|e| format!("shares-{} record {}: {e}", s.shard, s.seq))?;
            let ts = big(s.ts, "timestamp")?;
            let key = (interval_of(s.ts), rec.address.clone(), rec.worker.clone());
            let agg = self.intervals.entry(key.clone()).or_default();
            agg.shares += 1;
            agg.work += rec.work;
            agg.blocks += rec.block as i64;
            b.intervals.insert(key, ());
            for seen in [b.miners.entry(rec.address.clone()).or_default(), b.workers.entry((rec.address, rec.worker)).or_default()] {
                if seen.shares == 0 {
                    seen.first = ts;
                }
                seen.last = ts;
                seen.shares += 1;
            }
            b.moved = true;
        }
        Ok(())
    }

    /// Intervals before the merged stream's current one are final: drop
    /// them from memory (they are committed).
    fn close_intervals(&mut self) {
        let open_from = interval_of(self.shares.last_ts());
        self.intervals = self.intervals.split_off(&(open_from, String::new(), String::new()));
    }

    /// Writes the batch and the positions in one transaction.
    async fn write(&self, pool: &AnyPool, b: &Batch) -> Result<(), String> {
        let mut tx = pool.begin().await.map_err(db)?;
        let mut ins = Inserter { buf: Vec::new(), numbered: !self.sqlite };

        ins.rows(
            &mut tx,
            "INSERT INTO trades (match_id, instrument, ts, price, qty, taker_side, taker_order, taker_account, taker_fee, maker_order, maker_account, maker_fee, seq) VALUES ",
            13,
            "",
            b.trades.iter().map(|t| {
                vec![
                    V::I(t.match_id),
                    V::I(t.instrument),
                    V::I(t.ts),
                    V::I(t.price),
                    V::I(t.qty),
                    V::I(t.taker_side),
                    V::I(t.taker.order),
                    V::I(t.taker.account),
                    V::I(t.taker.fee),
                    V::I(t.maker.order),
                    V::I(t.maker.account),
                    V::I(t.maker.fee),
                    V::I(t.seq),
                ]
            }),
        )
        .await?;

        ins.rows(
            &mut tx,
            "INSERT INTO orders (order_id, account, instrument, side, price, qty, filled, leaves, status, cancel_reason, accepted_ts, final_ts, last_seq) VALUES ",
            13,
            "",
            b.orders.iter().filter(|(_, o)| o.new).map(|(&id, o)| {
                vec![
                    V::I(id as i64),
                    V::I(o.account),
                    V::I(o.instrument),
                    V::I(o.side),
                    V::I(o.price),
                    V::I(o.qty),
                    V::I(o.filled),
                    V::I(o.leaves),
                    V::S(o.status.into()),
                    V::S(o.reason.into()),
                    V::I(o.accepted_ts),
                    V::I(o.final_ts),
                    V::I(o.last_seq),
                ]
            }),
        )
        .await?;

        // Orders accepted in earlier batches: one UPDATE ... FROM (VALUES)
        // per chunk; each must find its row.
        let updates: Vec<Vec<V>> = b
            .orders
            .iter()
            .filter(|(_, o)| !o.new)
            .map(|(&id, o)| {
                vec![
                    V::I(id as i64),
                    V::I(o.filled),
                    V::I(o.leaves),
                    V::S(o.status.into()),
                    V::S(o.reason.into()),
                    V::I(o.final_ts),
                    V::I(o.last_seq),
                ]
            })
            .collect();
        for chunk in updates.chunks(CHUNK_BINDS / 7) {
            let sql = format!(
                "UPDATE orders SET filled = orders.filled + v.column2, leaves = v.column3, status = v.column4, cancel_reason = v.column5, final_ts = v.column6, last_seq = v.column7 FROM (VALUES {}) AS v WHERE orders.order_id = v.column1",
                placeholders(7, chunk.len(), !self.sqlite)
            );
            let n = bind_all(sqlx::query(AssertSqlSafe(sql)), chunk).execute(&mut *tx).await.map_err(db)?.rows_affected();
            if n != chunk.len() as u64 {
                return Err(format!(
                    "{} of {} orders updated by the exchange journal are missing from the database (projected from another journal?): run `otedama api --rebuild`",
                    chunk.len() as u64 - n,
                    chunk.len()
                ));
            }
        }

        ins.rows(
            &mut tx,
            "INSERT INTO share_intervals (interval_start, address, worker, shares, work, work_f64, blocks) VALUES ",
            7,
            " ON CONFLICT (address, worker, interval_start) DO UPDATE SET shares = excluded.shares, work = excluded.work, work_f64 = excluded.work_f64, blocks = excluded.blocks",
            b.intervals.keys().map(|k| {
                let a = &self.intervals[k];
                vec![V::I(k.0), V::S(k.1.clone()), V::S(k.2.clone()), V::I(a.shares), V::S(a.work.to_string()), V::F(a.work as f64), V::I(a.blocks)]
            }),
        )
        .await?;

        ins.rows(
            &mut tx,
            "INSERT INTO miners (address, first_share, last_share, shares) VALUES ",
            4,
            " ON CONFLICT (address) DO UPDATE SET last_share = excluded.last_share, shares = miners.shares + excluded.shares",
            b.miners.iter().map(|(a, s)| vec![V::S(a.clone()), V::I(s.first), V::I(s.last), V::I(s.shares)]),
        )
        .await?;
        ins.rows(
            &mut tx,
            "INSERT INTO workers (address, worker, first_share, last_share, shares) VALUES ",
            5,
            " ON CONFLICT (address, worker) DO UPDATE SET last_share = excluded.last_share, shares = workers.shares + excluded.shares",
            b.workers.iter().map(|((a, w), s)| vec![V::S(a.clone()), V::S(w.clone()), V::I(s.first), V::I(s.last), V::I(s.shares)]),
        )
        .await?;

        let mut blocks = Vec::new();
        for r in &b.blocks {
            let k = &r.rec;
            let mut id = k.id;
            id.reverse();
            blocks.push(vec![
                V::I(r.seq),
                V::I(k.height as i64),
                V::S(hex(&id)),
                V::I(k.time as i64),
                V::I(big(k.subsidy, "subsidy")?),
                V::I(big(k.fees, "fees")?),
                V::S(k.job.to_string()),
                V::S(outcome_name(k.outcome).into()),
                V::S(k.on_chain_mask.to_string()),
                V::S(k.finder.clone()),
                V::S(k.worker.clone()),
                V::S(k.reason.clone()),
            ]);
        }
        ins.rows(
            &mut tx,
            "INSERT INTO blocks (seq, height, block_id, time, subsidy, fees, job, outcome, on_chain_mask, finder, worker, reason) VALUES ",
            12,
            "",
            blocks.into_iter(),
        )
        .await?;

        let mut pos = vec![
            vec![V::S("exchange".into()), V::I(big(self.exchange_seq, "sequence")?), V::I(big(self.exchange_ts, "timestamp")?)],
            vec![V::S("blocks".into()), V::I(big(self.blocks_seq, "sequence")?), V::I(0)],
            vec![V::S("shares".into()), V::I(0), V::I(big(self.shares.last_ts(), "timestamp")?)],
        ];
        for (i, s) in self.shares.positions() {
            pos.push(vec![V::S(format!("shares-{i}")), V::I(big(s, "sequence")?), V::I(0)]);
        }
        ins.rows(
            &mut tx,
            "INSERT INTO projection_positions (journal, seq, ts) VALUES ",
            3,
            " ON CONFLICT (journal) DO UPDATE SET seq = excluded.seq, ts = excluded.ts",
            pos.into_iter(),
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}

/// Turns one events record into order and trade rows.
fn exchange_events(b: &mut Batch, events: &[Event], seq: u64, ts: u64) -> Result<(), String> {
    let (seq_i, ts_i) = (big(seq, "sequence")?, big(ts, "timestamp")?);
    // The two sides of each match in this record, in match order.
    let mut halves: Vec<Match> = Vec::new();
    for ev in events {
        match *ev {
            Event::Accepted { order, account, instrument, side, price, qty } => {
                b.orders.insert(
                    order.0,
                    OrderRow {
                        new: true,
                        account: account.0 as i64,
                        instrument: instrument.0 as i64,
                        side: side_num(side),
                        price,
                        qty: big(qty, "quantity")?,
                        filled: 0,
                        leaves: big(qty, "quantity")?,
                        status: "open",
                        reason: "",
                        accepted_ts: ts_i,
                        final_ts: 0,
                        last_seq: seq_i,
                    },
                );
            }
            Event::Executed { match_id, order, account, maker, price, qty, fee, leaves } => {
                let o = order_row(b, order.0, seq_i);
                o.filled += big(qty, "quantity")?;
                o.leaves = big(leaves, "quantity")?;
                if leaves == 0 {
                    o.status = "filled";
                    o.final_ts = ts_i;
                }
                let half = TradeHalf { order: order.0 as i64, account: account.0 as i64, fee, price, qty: big(qty, "quantity")? };
                let i = match halves.iter().position(|h| h.id == match_id) {
                    Some(i) => i,
                    None => {
                        halves.push(Match { id: match_id, taker: None, maker: None });
                        halves.len() - 1
                    }
                };
                if maker {
                    halves[i].maker = Some(half);
                } else {
                    halves[i].taker = Some(half);
                }
            }
            Event::Canceled { order, leaves, reason, .. } => {
                let o = order_row(b, order.0, seq_i);
                o.leaves = big(leaves, "quantity")?;
                if leaves == 0 {
                    o.status = "canceled";
                    o.reason = reason_name(reason);
                    o.final_ts = ts_i;
                }
            }
            Event::Amended { order, leaves, .. } => {
                order_row(b, order.0, seq_i).leaves = big(leaves, "quantity")?;
            }
            _ => {}
        }
    }
    for Match { id: match_id, taker, maker } in halves {
        let (Some(taker), Some(maker)) = (taker, maker) else {
            return Err(format!("exchange journal record {seq}: match {match_id} lacks its taker or maker execution"));
        };
        // The taker's order was accepted by the same command.
        let taker_order = taker.order as u64;
        let Some(o) = b.orders.get(&taker_order).filter(|o| o.new) else {
            return Err(format!("exchange journal record {seq}: the taker order {taker_order} of match {match_id} was not accepted in it"));
        };
        b.trades.push(TradeRow {
            match_id: big(match_id, "match id")?,
            instrument: o.instrument,
            ts: ts_i,
            price: maker.price,
            qty: maker.qty,
            taker_side: o.side,
            taker,
            maker,
            seq: seq_i,
        });
    }
    Ok(())
}

/// The batch's row for an order, an update of the stored row when the
/// batch did not accept it.
fn order_row(b: &mut Batch, id: u64, seq: i64) -> &mut OrderRow {
    let o = b.orders.entry(id).or_insert(OrderRow {
        new: false,
        account: 0,
        instrument: 0,
        side: 0,
        price: 0,
        qty: 0,
        filled: 0,
        leaves: 0,
        status: "open",
        reason: "",
        accepted_ts: 0,
        final_ts: 0,
        last_seq: seq,
    });
    o.last_seq = seq;
    o
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A bound value.
enum V {
    I(i64),
    S(String),
    F(f64),
}

/// Binds per statement: below SQLite's limit (32,766) and PostgreSQL's
/// (65,535).
const CHUNK_BINDS: usize = 8_000;

/// `($1,$2),($3,$4)...` for PostgreSQL, `(?,?),(?,?)...` for SQLite:
/// SQLite looks numbered parameters up by name, linearly, at parse and at
/// bind time, so thousands of `$N` in one statement cost O(n²) (most of the
/// projection's time, measured); anonymous `?` cost nothing.
fn placeholders(cols: usize, rows: usize, numbered: bool) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            if numbered {
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            } else {
                s.push('?');
            }
        }
        s.push(')');
    }
    s
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    rows: &[Vec<V>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for row in rows {
        for v in row {
            q = match v {
                V::I(i) => q.bind(*i),
                V::S(s) => q.bind(s.clone()),
                V::F(f) => q.bind(*f),
            };
        }
    }
    q
}

/// Multi-row INSERTs in chunks.
struct Inserter {
    buf: Vec<Vec<V>>,
    /// `$N` placeholders (PostgreSQL) rather than `?` (SQLite).
    numbered: bool,
}

impl Inserter {
    async fn rows(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        head: &str,
        cols: usize,
        tail: &str,
        rows: impl Iterator<Item = Vec<V>>,
    ) -> Result<(), String> {
        let per = CHUNK_BINDS / cols;
        let mut rows = rows.peekable();
        while rows.peek().is_some() {
            self.buf.clear();
            self.buf.extend(rows.by_ref().take(per));
            let sql = format!("{head}{}{tail}", placeholders(cols, self.buf.len(), self.numbered));
            bind_all(sqlx::query(AssertSqlSafe(sql)), &self.buf).execute(&mut **tx).await.map_err(db)?;
        }
        Ok(())
    }
}
