//! `otedama`: one binary for the hot path, the cold path, the supervisor
//! that runs them, and the tools around them.

mod config;
mod engine_cmd;
mod journal_cmd;
mod mine_cmd;
mod pool_side;
mod supervisor;
mod trade_cmd;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use config::{Config, LogFormat, Overrides};

/// Counts heap allocations per thread, so benchmarks can report them.
#[global_allocator]
static ALLOCATOR: otedama_benches::alloc::Counting = otedama_benches::alloc::Counting;

#[derive(Debug, Parser)]
#[command(name = "otedama", version, about = "Otedama: an engine for mining pools and exchanges")]
pub struct Cli {
    /// TOML configuration file (see tools/otedama.example.toml).
    #[arg(long, global = true, value_name = "FILE", env = "OTEDAMA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every built role as a supervised child process, with embedded
    /// defaults.
    Standalone,
    /// The hot path: order-entry gateway and Stratum V1 pool (io_uring I/O
    /// shards), the matching engine shard, journaled.
    Engine {
        /// Ask the engine running on this data directory for a snapshot of
        /// its state now (SIGUSR1), wait for it and print where it is.
        #[arg(long)]
        snapshot_now: bool,
    },
    /// The cold path: the REST API over read models of the journals, and
    /// the database they are projected into.
    Api {
        /// Empty the database and project the journals again from their
        /// start.
        #[arg(long)]
        rebuild: bool,
        /// The database: `postgres://user@host:port/db` or `sqlite://path`
        /// (`api.database_url`; default: SQLite at `<data_dir>/api.db`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Inspect, follow and repair journals.
    #[command(subcommand)]
    Journal(journal_cmd::JournalCmd),
    /// Benchmarks: open-loop workloads with their baselines in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Manage API keys for the binary order-entry protocol.
    #[command(subcommand)]
    Keys(engine_cmd::KeysCmd),
    /// CPU miner: a Stratum V1 client (sha256d, scrypt) for any pool.
    Mine(mine_cmd::MineArgs),
    /// Load generators: open-loop order floods (farms come with Stratum).
    #[command(subcommand)]
    Loadgen(LoadgenCmd),
    /// Check this host against the tuning guide (not built yet).
    Tune,
    /// Terminal client for the binary order protocol: admin commands,
    /// orders, cancels, listening.
    Trade(trade_cmd::TradeArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (all four layers applied).
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Journal append, group commit and scan, against pwrite baselines.
    Journal(otedama_benches::journal::Args),
    /// The cold path: order book GETs against a constant axum handler, and
    /// the database projection's rows per second (SQLite, PostgreSQL).
    Api(otedama_benches::api::Args),
    /// The exchange state machine against a BTreeMap book, throughput and open-loop latency.
    Matching(otedama_benches::matching::Args),
    /// Order entry round trips through `otedama engine` against a plain TCP echo.
    Gateway(otedama_benches::gateway::Args),
    /// sha256d, scrypt and RandomX hashing against their baselines.
    Hashers(otedama_benches::hashers::Args),
    /// Job building, block assembly and submission with a 3,000-transaction template from litecoind.
    Chain(otedama_benches::chain::Args),
    /// The Stratum server under a simulated farm against the same shard echoing lines.
    Stratum(otedama_benches::stratum::Args),
    /// The server process `bench stratum` drives (internal).
    #[command(hide = true)]
    StratumServer(otedama_benches::stratum::ServerArgs),
}

#[derive(Debug, Subcommand)]
enum LoadgenCmd {
    /// A simulated farm: many Stratum connections, open-loop shares with
    /// known rates of duplicate, stale and low-difficulty shares; prints
    /// answers by kind and share → answer latency.
    Stratum(otedama_benches::stratum_load::LoadArgs),
    /// Open-loop NewOrder load from many sessions at a set rate; prints
    /// NewOrder → Accepted round trips corrected for coordinated omission.
    Orders {
        /// The engine's order-entry address.
        #[arg(long, default_value = "127.0.0.1:7400")]
        addr: std::net::SocketAddr,
        /// `KEYID:SECRET` (hex, as `otedama keys add` prints them), once per
        /// session; every session needs its own key.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// Orders per second offered, all sessions together.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, value_enum, default_value_t = otedama_benches::loadgen::Mix::Ioc)]
        mix: otedama_benches::loadgen::Mix,
        #[arg(long, default_value_t = 1)]
        instrument: u16,
        /// Pin the load generator to this core.
        #[arg(long)]
        core: Option<usize>,
        /// Log in ack-on-durable (answers wait for the journal's sync).
        #[arg(long)]
        durable: bool,
    },
}

fn loadgen_cmd(cmd: LoadgenCmd) -> Result<i32> {
    let (addr, keys, rate, seconds, mix, instrument, core, durable) = match cmd {
        LoadgenCmd::Stratum(a) => {
            let r = otedama_benches::stratum_load::run(&a)?;
            // The benchmark that started this process may be gone: no panic on a closed pipe.
            let _ = writeln!(std::io::stdout(), "{r}");
            let ok = r["wrong_answers"].as_u64().unwrap_or(0) == 0 && r["unanswered"].as_u64().unwrap_or(0) == 0;
            return Ok(if ok { 0 } else { 1 });
        }
        LoadgenCmd::Orders { addr, keys, rate, seconds, mix, instrument, core, durable } => {
            (addr, keys, rate, seconds, mix, instrument, core, durable)
        }
    };
    let keys = keys
        .iter()
        .map(|k| {
            let (id, secret) = k.split_once(':').context("--key is KEYID:SECRET")?;
            Ok((
                otedama_net::keys::parse_id(id).context("key id: 16 hex digits")?,
                otedama_net::keys::parse_secret(secret).context("secret: 64 hex digits")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = otedama_benches::loadgen::LoadSpec {
        addr,
        keys,
        raw_sessions: 0,
        rate,
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_millis(200),
        mix,
        instrument,
        core,
        flags: if durable { otedama_net::sessions::FLAG_ACK_ON_DURABLE } else { 0 },
    };
    let r = otedama_benches::loadgen::run(&spec)?;
    otedama_benches::harness::print_histogram("NewOrder→Accepted", &r.rtt, 1e3, "µs");
    let q = |p: f64| r.rtt.value_at_quantile(p) as f64 / 1e3;
    println!(
        "{}",
        serde_json::json!({
            "sent": r.sent, "accepted": r.accepted, "throttled": r.throttled, "rejected": r.rejected, "missing": r.missing,
            "seconds": r.seconds, "offered_rate": rate, "answered_per_sec": r.accepted as f64 / r.seconds,
            "rtt_p50_us": q(0.5), "rtt_p99_us": q(0.99), "rtt_p9999_us": q(0.9999), "rtt_max_us": r.rtt.max() as f64 / 1e3,
            "sender_lag_max_us": r.sender_lag_max_us,
        })
    );
    Ok(if r.missing == 0 { 0 } else { 1 })
}

/// A role or tool that a later piece of work builds.
/// `otedama api`: serves the exchange's read model over HTTP until SIGINT
/// or SIGTERM.
fn api_cmd(cfg: &Config, rebuild: bool) -> Result<i32> {
    let listen: std::net::SocketAddr =
        cfg.api.listen.parse().with_context(|| format!("api.listen: {:?} is not an address", cfg.api.listen))?;
    let exchange_journal = engine_cmd::exchange_journal_dir(&cfg.data_dir);
    // The database file lives there, even before the engine first runs.
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    let api_cfg = otedama_api::server::ApiConfig {
        listen,
        exchange_journal: exchange_journal.clone(),
        pool_dir: cfg.data_dir.join("pool"),
        database_url: match cfg.api.database_url.as_str() {
            "" => Some(otedama_api::projection::sqlite_url(&cfg.data_dir.join("api.db"))),
            "none" => None,
            url => Some(url.to_string()),
        },
        rebuild,
        rate_per_sec: cfg.api.rate_per_sec,
        rate_burst: cfg.api.rate_burst,
        core: None,
        engine: engine_link(cfg)?,
        tape_max: 0,
    };
    anyhow::ensure!(!rebuild || api_cfg.database_url.is_some(), "--rebuild needs a database (api.database_url is none)");
    let db = api_cfg.database_url.as_deref().map_or("none".to_string(), otedama_api::projection::redact);
    let link = api_cfg.engine.as_ref().map_or("none".to_string(), |e| format!("{} as key {:016x}", e.addr, e.key_id));
    let api = otedama_api::server::Api::start(api_cfg).with_context(|| format!("starting the API on {listen}"))?;
    println!(
        "otedama api: http://{}/api/v1/ (exchange journal {}, database {db}, engine admin session {link})",
        api.local_addr(),
        exchange_journal.display()
    );
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    api.stop().context("stopping the API")?;
    println!("otedama api: stopped cleanly");
    Ok(0)
}

/// The file `standalone` keeps the API's admin key in.
fn api_key_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api-admin.key")
}

/// The API's admin session with the engine: `api.engine_key` (or the key
/// file `standalone` writes) and `api.engine_addr` (or `gateway.listen`).
fn engine_link(cfg: &Config) -> Result<Option<otedama_api::engine_link::EngineLinkConfig>> {
    let key = match cfg.api.engine_key.as_str() {
        "none" => return Ok(None),
        "" => match std::fs::read_to_string(api_key_file(&cfg.data_dir)) {
            Ok(k) => k.trim().to_string(),
            Err(_) => return Ok(None),
        },
        k => k.to_string(),
    };
    let (id, secret) = key.split_once(':').context("api.engine_key is KEYID:SECRET")?;
    let key_id = otedama_net::keys::parse_id(id).context("api.engine_key: the key id is 16 hex digits")?;
    let secret = otedama_net::keys::parse_secret(secret).context("api.engine_key: the secret is 64 hex digits")?;
    let addr = if cfg.api.engine_addr.is_empty() { &cfg.gateway.listen } else { &cfg.api.engine_addr };
    let addr: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("engine address {addr:?}"))?
        .next()
        .with_context(|| format!("engine address {addr:?} resolves to nothing"))?;
    if addr.port() == 0 {
        tracing::warn!(%addr, "the engine's address has port 0 (chosen at its start): no admin session; set api.engine_addr");
        return Ok(None);
    }
    Ok(Some(otedama_api::engine_link::EngineLinkConfig { addr, key_id, secret }))
}

/// Gives the API an admin key of its own on first start (a key in the key
/// store labelled `api`, its credentials in `<data_dir>/api-admin.key`,
/// mode 0600).
fn ensure_api_key(data_dir: &std::path::Path) -> Result<()> {
    let file = api_key_file(data_dir);
    if file.exists() {
        return Ok(());
    }
    let path = otedama_net::keys::path_in(data_dir);
    let mut store = otedama_net::keys::KeyStore::load(&path)?;
    let k = store.add(0, true, "api")?;
    store.save(&path)?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).with_context(|| format!("{}", file.display()))?;
    writeln!(f, "{:016x}:{}", k.id, hex::encode(k.secret))?;
    f.sync_all()?;
    println!("otedama standalone: created the API's admin key {:016x} ({})", k.id, file.display());
    Ok(())
}

fn not_built(what: &str, issue: &str) -> Result<i32> {
    eprintln!("otedama {what}: not built yet ({issue}). Nothing was started.");
    Ok(2)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// The roles `standalone` supervises, in start order, with whether each is
/// built. A role that is not built is reported, never faked.
const ROLES: &[(&str, bool, &str)] = &[("engine", true, ""), ("api", true, "")];

/// The command-line overrides as flags for a child role (`--data-dir`
/// aside, which the supervisor passes itself): every configuration key's
/// flag is its key path with `.` and `_` as `-`, arrays repeat the flag.
fn override_flags(o: &Overrides) -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}-{k}") };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(prefix, v, out)),
            serde_json::Value::String(s) => out.push(format!("--{}={s}", prefix.replace('_', "-"))),
            other => out.push(format!("--{}={other}", prefix.replace('_', "-"))),
        }
    }
    let mut v = serde_json::to_value(o).expect("overrides serialise");
    if let Some(m) = v.as_object_mut() {
        m.remove("data_dir");
    }
    let mut out = Vec::new();
    walk("", &v, &mut out);
    out
}

fn standalone(cfg: &Config, cli_config: Option<&PathBuf>, overrides: &Overrides) -> Result<i32> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.canonicalize()?;
    let exe = std::env::current_exe().context("locating the otedama binary")?;
    println!("otedama standalone: data directory {}", data_dir.display());
    ensure_api_key(&data_dir)?;
    let mut specs = Vec::new();
    for (name, built, why) in ROLES {
        if *built {
            let mut args = Vec::new();
            if let Some(c) = cli_config {
                args.push(format!("--config={}", c.display()));
            }
            args.push(format!("--data-dir={}", data_dir.display()));
            args.extend(override_flags(overrides));
            args.push((*name).to_owned());
            specs.push(supervisor::RoleSpec { name: (*name).to_owned(), program: exe.clone(), args });
        } else {
            println!("  role {name:<8} not built yet: {why}");
        }
    }
    if specs.is_empty() {
        println!("No role is built yet, so there is nothing to supervise; exiting.");
        println!("What works today: `otedama journal ...` and `otedama bench journal` (see README.md).");
        return Ok(0);
    }
    let signals = supervisor::SignalFlag::install()?;
    let s = &cfg.supervisor;
    let policy = supervisor::Policy {
        backoff_initial: Duration::from_millis(s.restart_backoff_initial_ms),
        backoff_max: Duration::from_millis(s.restart_backoff_max_ms),
        healthy_after: Duration::from_millis(s.healthy_after_ms),
        shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
    };
    for spec in &specs {
        println!("  role {:<8} starting: {} {}", spec.name, spec.program.display(), spec.args.join(" "));
    }
    for r in supervisor::run(specs, &policy, &signals)? {
        println!("  role {:<8} started {} times, last exit: {}", r.name, r.starts, r.last_exit.as_deref().unwrap_or("-"));
    }
    println!("otedama standalone: stopped cleanly");
    Ok(0)
}

/// Keeps large buffers in the heap: glibc serves allocations above its
/// mmap threshold (128 KiB at first) with fresh mappings, so every job's
/// 0.5–4 MB transaction buffer and every assembled block would page-fault
/// its way in (the profile of `otedama bench chain` showed the faults and
/// page clearing costing more than validating the template's hex). With a
/// fixed 32 MiB threshold and a high trim threshold, freed memory is reused
/// already mapped.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    tune_allocator();
    let cli = Cli::parse();
    let cfg = match config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("otedama: {e:#}");
            std::process::exit(2);
        }
    };
    init_logging(&cfg);
    let result = match cli.command {
        Cmd::Standalone => standalone(&cfg, cli.config.as_ref(), &cli.overrides),
        Cmd::Engine { snapshot_now: false } => engine_cmd::engine(&cfg),
        Cmd::Engine { snapshot_now: true } => engine_cmd::snapshot_now(&cfg),
        Cmd::Api { rebuild, database_url } => {
            let mut cfg = cfg;
            if let Some(u) = database_url {
                cfg.api.database_url = u;
            }
            api_cmd(&cfg, rebuild)
        }
        Cmd::Config(ConfigCmd::Show { json }) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&cfg).expect("config serialises"));
            } else {
                print!("{}", toml::to_string_pretty(&cfg).expect("config serialises"));
            }
            Ok(0)
        }
        Cmd::Journal(j) => journal_cmd::run(j, &cfg.journal, &cfg.engine),
        Cmd::Bench { which: BenchCmd::Journal(args) } => otedama_benches::journal::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Api(args) } => otedama_benches::api::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Matching(args) } => otedama_benches::matching::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Gateway(args) } => otedama_benches::gateway::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Hashers(args) } => otedama_benches::hashers::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Chain(args) } => otedama_benches::chain::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::Stratum(args) } => otedama_benches::stratum::run(&args).map(|_| 0),
        Cmd::Bench { which: BenchCmd::StratumServer(args) } => otedama_benches::stratum::server_main(&args).map(|_| 0),
        Cmd::Keys(k) => engine_cmd::keys_cmd(k, &cfg.data_dir),
        Cmd::Mine(args) => mine_cmd::mine(args),
        Cmd::Loadgen(l) => loadgen_cmd(l),
        Cmd::Tune => not_built("tune", "a later issue builds the host checks"),
        Cmd::Trade(t) => trade_cmd::run(t),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed");
            eprintln!("otedama: {e:#}");
            std::process::exit(1);
        }
    }
}
