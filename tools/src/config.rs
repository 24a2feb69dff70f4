//! Configuration: one typed tree, layered as flag > environment > file >
//! default.
//!
//! - File: TOML, given with `--config FILE` (see `tools/otedama.example.toml`).
//! - Environment: `OTEDAMA_` + the key path in capitals, nesting joined by
//!   `__`, e.g. `OTEDAMA_JOURNAL__SEGMENT_BYTES=1048576`.
//! - Flags: the key path with `.` and `_` turned into `-`, e.g.
//!   `--journal-segment-bytes 1048576`.
//!
//! `otedama config show` prints the effective result.

use std::path::PathBuf;

use anyhow::{Context, Result};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use otedama_journal::Durability;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where every role keeps its state (journals, keys, database).
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub journal: JournalConfig,
    pub engine: EngineConfig,
    pub gateway: GatewayConfig,
    pub pool: PoolConfig,
    pub stratum: StratumConfig,
    pub supervisor: SupervisorConfig,
    pub api: ApiConfig,
}

/// `otedama api`, the cold path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the HTTP API listens.
    pub listen: String,
    /// Requests per second each client IP may make, sustained.
    pub rate_per_sec: f64,
    /// Requests each client IP may make at once.
    pub rate_burst: f64,
    /// The database the journals are projected into: `postgres://…`,
    /// `sqlite://…`, empty for SQLite at `<data_dir>/api.db`, `none` for
    /// no database.
    pub database_url: String,
    /// The engine's order-entry address for the API's admin session; empty:
    /// `gateway.listen`.
    pub engine_addr: String,
    /// `KEYID:SECRET` of an admin key for that session; empty: the file
    /// `<data_dir>/api-admin.key` if it exists (`standalone` creates it);
    /// `none`: no admin session.
    pub engine_key: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            rate_per_sec: 100.0,
            rate_burst: 200.0,
            database_url: String::new(),
            engine_addr: String::new(),
            engine_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `otedama_journal=trace,info`, ...
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Bytes per segment file (multiple of 4096, 64 KiB to 2 GiB).
    pub segment_bytes: u64,
    /// `none`, `batch` (group commit) or `always`.
    pub durability: Durability,
    /// Segments kept allocated and pre-faulted ahead of the writer.
    pub prepare_ahead: usize,
    /// How long the flusher spins for new records before parking (µs).
    pub flusher_spin_us: u64,
    /// 0: each record wakes the parked writeback thread at once; above 0:
    /// it wakes itself this often instead (µs), saving a syscall per
    /// record at the cost of readers seeing records up to that much later.
    pub writeback_delay_us: u64,
    /// Snapshots kept per journal.
    pub snapshots_keep: usize,
    /// Records retention keeps before the newest snapshot.
    pub retention_margin_records: u64,
    /// Where retention moves old segments; empty: delete them.
    pub archive_dir: PathBuf,
}

/// Sizes of the exchange state machine, fixed at start-up (everything is
/// allocated then). A journal must be replayed with the sizes it was
/// written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    pub accounts_max: u32,
    pub assets_max: u16,
    pub instruments_max: u16,
    /// Resting orders the order store holds.
    pub orders_max: u32,
    /// Most price levels one instrument's band may span.
    pub levels_max: u32,
    /// The account that collects fees and pays rebates.
    pub fee_account: u32,
    /// Seconds between snapshots of the engine state, written off the hot
    /// path when the journal has grown (0: only on SIGUSR1 or
    /// `otedama engine --snapshot-now`).
    pub snapshot_interval_s: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            accounts_max: 100_000,
            assets_max: 64,
            instruments_max: 256,
            orders_max: 1 << 20,
            levels_max: 1 << 20,
            fee_account: 0,
            snapshot_interval_s: 300,
        }
    }
}

impl EngineConfig {
    pub fn limits(&self) -> otedama_engine::Limits {
        otedama_engine::Limits {
            accounts_max: self.accounts_max,
            assets_max: self.assets_max,
            instruments_max: self.instruments_max,
            orders_max: self.orders_max,
            levels_max: self.levels_max,
            fee_account: otedama_engine::AccountId(self.fee_account),
        }
    }
}

/// How a role waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Sleep in the kernel when idle (shared hosts, tests).
    Park,
    /// Busy-poll a dedicated core (lowest latency).
    Spin,
}

impl PollMode {
    pub fn poll(self) -> otedama_net::gateway::Poll {
        match self {
            PollMode::Park => otedama_net::gateway::Poll::Park,
            PollMode::Spin => otedama_net::gateway::Poll::Spin,
        }
    }
}

/// The order-entry gateway of `otedama engine` (`net/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address the binary order-entry protocol listens on.
    pub listen: String,
    /// I/O shards when `io_cores` is empty (unpinned).
    pub io_shards: usize,
    /// Cores to pin I/O shards to, comma-separated, one shard each ("0" or
    /// "0,2,3"); empty: `io_shards` unpinned shards.
    pub io_cores: String,
    /// Core to pin the engine shard to; empty: unpinned.
    pub engine_core: String,
    pub io_poll: PollMode,
    pub engine_poll: PollMode,
    /// Server heartbeat interval and the default client interval (ms).
    pub heartbeat_ms: u32,
    /// Client heartbeat intervals without traffic before a disconnect.
    pub heartbeat_misses: u32,
    /// Time a new connection has to log in (ms).
    pub login_timeout_ms: u32,
    /// Messages per second a session may send, sustained.
    pub rate_per_sec: u32,
    /// Messages a session may send in a burst.
    pub rate_burst: u32,
    /// Bytes queued for a session before it is cut off as a slow reader.
    pub outbound_queue_bytes: usize,
    /// Slots in each ring between shards.
    pub ring_slots: usize,
    /// Connections per I/O shard.
    pub max_connections: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:7400".into(),
            io_shards: 1,
            io_cores: String::new(),
            engine_core: String::new(),
            io_poll: PollMode::Park,
            engine_poll: PollMode::Park,
            heartbeat_ms: 1000,
            heartbeat_misses: 3,
            login_timeout_ms: 5000,
            rate_per_sec: 100_000,
            rate_burst: 10_000,
            outbound_queue_bytes: 4 << 20,
            ring_slots: 1 << 16,
            max_connections: 10_000,
        }
    }
}

impl GatewayConfig {
    /// The gateway's settings, with the key store in `data_dir`.
    pub fn to_net(&self, data_dir: &std::path::Path) -> Result<otedama_net::gateway::GatewayConfig> {
        let listen = self.listen.parse().with_context(|| format!("gateway.listen {:?} is not an address:port", self.listen))?;
        let cores = |s: &str, what: &str| -> Result<Vec<usize>> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().with_context(|| format!("{what}: {p:?} is not a core number")))
                .collect()
        };
        let io = cores(&self.io_cores, "gateway.io_cores")?;
        let io_cores = if io.is_empty() { vec![None; self.io_shards.max(1)] } else { io.into_iter().map(Some).collect() };
        let engine = cores(&self.engine_core, "gateway.engine_core")?;
        anyhow::ensure!(engine.len() <= 1, "gateway.engine_core names one core");
        anyhow::ensure!(self.ring_slots >= 1024, "gateway.ring_slots must be at least 1024");
        anyhow::ensure!(self.heartbeat_ms >= 10, "gateway.heartbeat_ms must be at least 10");
        Ok(otedama_net::gateway::GatewayConfig {
            listen,
            io_cores,
            engine_core: engine.first().copied(),
            io_poll: self.io_poll.poll(),
            engine_poll: self.engine_poll.poll(),
            keys_path: otedama_net::keys::path_in(data_dir),
            heartbeat_ms: self.heartbeat_ms,
            heartbeat_misses: self.heartbeat_misses,
            login_timeout_ms: self.login_timeout_ms,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            outbound_queue_bytes: self.outbound_queue_bytes,
            ring_slots: self.ring_slots,
            max_connections: self.max_connections,
            colocate: false,
        })
    }
}

/// The chain a pool mines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum CoinChoice {
    /// The embedded devnet, sha256d.
    #[serde(rename = "devnet-sha256d")]
    #[value(name = "devnet-sha256d")]
    DevnetSha256d,
    /// The embedded devnet, scrypt.
    #[serde(rename = "devnet-scrypt")]
    #[value(name = "devnet-scrypt")]
    DevnetScrypt,
    #[serde(rename = "ltc-regtest")]
    #[value(name = "ltc-regtest")]
    LtcRegtest,
    #[serde(rename = "ltc-testnet")]
    #[value(name = "ltc-testnet")]
    LtcTestnet,
    #[serde(rename = "ltc")]
    #[value(name = "ltc")]
    Ltc,
    #[serde(rename = "btc-regtest")]
    #[value(name = "btc-regtest")]
    BtcRegtest,
    #[serde(rename = "btc-testnet")]
    #[value(name = "btc-testnet")]
    BtcTestnet,
    #[serde(rename = "btc")]
    #[value(name = "btc")]
    Btc,
}

impl CoinChoice {
    /// (coin, network for addresses, proof of work, embedded devnet).
    pub fn chain(
        self,
    ) -> (otedama_engine::chain::address::Coin, otedama_engine::chain::address::Network, otedama_hashers::Algorithm, bool) {
        use otedama_engine::chain::address::{Coin, Network};
        use otedama_hashers::Algorithm;
        match self {
            CoinChoice::DevnetSha256d => (Coin::Bitcoin, Network::Regtest, Algorithm::Sha256d, true),
            CoinChoice::DevnetScrypt => (Coin::Litecoin, Network::Regtest, Algorithm::Scrypt, true),
            CoinChoice::LtcRegtest => (Coin::Litecoin, Network::Regtest, Algorithm::Scrypt, false),
            CoinChoice::LtcTestnet => (Coin::Litecoin, Network::Testnet, Algorithm::Scrypt, false),
            CoinChoice::Ltc => (Coin::Litecoin, Network::Mainnet, Algorithm::Scrypt, false),
            CoinChoice::BtcRegtest => (Coin::Bitcoin, Network::Regtest, Algorithm::Sha256d, false),
            CoinChoice::BtcTestnet => (Coin::Bitcoin, Network::Testnet, Algorithm::Sha256d, false),
            CoinChoice::Btc => (Coin::Bitcoin, Network::Mainnet, Algorithm::Sha256d, false),
        }
    }
}

/// The pool's chain side in `otedama engine`: which chain, which nodes,
/// where the coinbase pays, and how templates are followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Run the chain side at all.
    pub enabled: bool,
    pub coin: CoinChoice,
    /// `http://USER:PASS@HOST:PORT`, in failover order. Empty with a
    /// devnet coin: the embedded devnet.
    pub nodes: Vec<String>,
    /// Where the coinbase pays (pool mode). Empty on the devnet: an
    /// anyone-can-spend output (`OP_TRUE`).
    pub payout_address: String,
    /// Solo mining: each miner's coinbase pays the miner's own address
    /// (the username); `payout_address` is then not needed.
    pub solo: bool,
    /// Ledger accounts of miners are numbered from here up (below
    /// `engine.accounts_max`): a payout address's first authorize takes
    /// the next one.
    pub first_miner_account: u32,
    /// New miner accounts per second at most.
    pub miner_accounts_per_sec: u32,
    /// Pool tag after the extranonce in the coinbase scriptSig.
    pub coinbase_tag: String,
    pub extranonce1_size: usize,
    pub extranonce2_size: usize,
    /// The embedded devnet's JSON-RPC address (loopback).
    pub devnet_rpc: String,
    /// A devnet long poll with no new block is answered after this (ms).
    pub devnet_longpoll_ms: u64,
    /// Longest one long poll to a node stays open before it is asked again (ms).
    pub longpoll_timeout_ms: u64,
    /// How often a node that does not long poll is asked for its tip (ms).
    pub poll_interval_ms: u64,
    /// A polled node's full template is fetched at least this often (ms).
    pub refresh_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            coin: CoinChoice::DevnetSha256d,
            nodes: vec![],
            payout_address: String::new(),
            solo: false,
            first_miner_account: 10_000,
            miner_accounts_per_sec: 100,
            coinbase_tag: "/otedama/".into(),
            extranonce1_size: 4,
            extranonce2_size: 8,
            devnet_rpc: "127.0.0.1:18460".into(),
            devnet_longpoll_ms: 60_000,
            longpoll_timeout_ms: 90_000,
            poll_interval_ms: 500,
            refresh_ms: 30_000,
        }
    }
}

/// The pool's Stratum V1 server in `otedama engine` (`net/STRATUM.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StratumConfig {
    /// Address miners connect to.
    pub host: String,
    pub port: u16,
    /// Stratum shards when `cores` is empty (unpinned).
    pub shards: usize,
    /// Cores to pin Stratum shards to, comma-separated, one shard each.
    pub cores: String,
    /// Core for the threads around the shards (share journal writeback,
    /// job fan-out, block submission, scrypt verification); empty: unpinned.
    pub housekeeping_core: String,
    pub poll: PollMode,
    /// The port's share difficulty; 0: by chain (devnet 0.01, regtest
    /// 0.001, scrypt mainnet/testnet 512, sha256d mainnet/testnet 16,384).
    pub difficulty: f64,
    /// Bounds for `d=` in the password and `mining.suggest_difficulty`.
    pub min_difficulty: f64,
    pub max_difficulty: f64,
    /// Version bits miners may roll (BIP 320: 1fffe000).
    pub version_mask: String,
    /// Seconds a share's ntime may run ahead of the later of the job's time and now.
    pub ntime_future_s: u32,
    /// Longest request line (bytes).
    pub max_line: usize,
    /// Connections per shard, and from one IP address across shards.
    pub max_connections: usize,
    pub per_ip_limit: u32,
    /// Time to subscribe and authorize, idle time, and time to finish a begun line (ms).
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub line_timeout_ms: u64,
    /// Bytes queued for a miner before it is cut off as a slow reader.
    pub outbound_queue_bytes: usize,
    /// Threads checking scrypt shares.
    pub verify_workers: usize,
    /// Receive buffers per shard (a power of two) and their size (bytes).
    pub recv_buffers: u16,
    pub recv_buffer_size: usize,
    /// How long block submission waits for the nodes' tips to show a block (ms).
    pub confirm_wait_ms: u64,
    /// Segment size of each shard's share journal (bytes; the writer keeps
    /// the current and the prepared segments resident).
    pub journal_segment_bytes: u64,
    /// Least time between two syncs of a share journal (ms; 0: the next
    /// sync starts as soon as the previous one ends). Shares are answered
    /// without waiting for the disk; a power loss costs at most this long's
    /// shares plus one sync.
    pub journal_sync_interval_ms: u64,
    /// How often a share journal's writeback thread wakes to copy new
    /// records into the files (µs; 0: woken by every record). Shares never
    /// wait for it; readers (the cold path) see records up to this late.
    pub journal_writeback_delay_us: u64,
    /// Port for Stratum over TLS on `host` (0: none).
    pub tls_port: u16,
    /// PEM certificate chain and private key for TLS; both empty: a
    /// self-signed certificate generated once into `<data_dir>/pool/tls`.
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for StratumConfig {
    fn default() -> Self {
        StratumConfig {
            host: "0.0.0.0".into(),
            port: 3333,
            shards: 1,
            cores: String::new(),
            housekeeping_core: String::new(),
            poll: PollMode::Park,
            difficulty: 0.0,
            min_difficulty: 1e-6,
            max_difficulty: 1e15,
            version_mask: "1fffe000".into(),
            ntime_future_s: 7200,
            max_line: 8 << 10,
            max_connections: 65_536,
            per_ip_limit: 4096,
            handshake_timeout_ms: 60_000,
            idle_timeout_ms: 900_000,
            line_timeout_ms: 15_000,
            outbound_queue_bytes: 256 << 10,
            verify_workers: 1,
            recv_buffers: 4096,
            recv_buffer_size: 2048,
            confirm_wait_ms: 2000,
            journal_segment_bytes: 16 << 20,
            journal_sync_interval_ms: 100,
            journal_writeback_delay_us: 1000,
            tls_port: 0,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl StratumConfig {
    /// The server's settings for the pool's chain, its journals under
    /// `journal_dir`.
    pub fn to_net(
        &self,
        pool: &PoolConfig,
        journal: otedama_journal::Options,
        journal_dir: PathBuf,
    ) -> Result<otedama_net::stratum_server::StratumConfig> {
        use otedama_engine::chain::address::Network;
        use otedama_hashers::{Algorithm, Family};
        let (coin, network, algorithm, devnet) = pool.coin.chain();
        let family = match algorithm {
            Algorithm::Sha256d => Family::Sha256d,
            Algorithm::Scrypt => Family::Scrypt,
            other => anyhow::bail!("Stratum V1 serves sha256d and scrypt chains, not {other:?}"),
        };
        let host: std::net::IpAddr = self.host.parse().with_context(|| format!("stratum.host {:?} is not an IP address", self.host))?;
        let difficulty = if self.difficulty > 0.0 {
            self.difficulty
        } else if devnet {
            0.01
        } else if network == Network::Regtest {
            0.001
        } else if family == Family::Scrypt {
            512.0
        } else {
            16_384.0
        };
        anyhow::ensure!(
            self.min_difficulty > 0.0 && self.min_difficulty <= difficulty && difficulty <= self.max_difficulty,
            "stratum: need 0 < min_difficulty <= difficulty ({difficulty}) <= max_difficulty"
        );
        let version_mask = u32::from_str_radix(self.version_mask.trim_start_matches("0x"), 16)
            .with_context(|| format!("stratum.version_mask {:?} is not hex", self.version_mask))?;
        anyhow::ensure!(
            self.recv_buffers.is_power_of_two() && self.recv_buffers <= 1 << 15,
            "stratum.recv_buffers: a power of two up to 32768"
        );
        anyhow::ensure!(self.recv_buffer_size >= 256, "stratum.recv_buffer_size: at least 256 bytes");
        anyhow::ensure!(self.max_line >= 512, "stratum.max_line: at least 512 bytes");
        let cores: Vec<usize> = self
            .cores
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().with_context(|| format!("stratum.cores: {p:?} is not a core number")))
            .collect::<Result<_>>()?;
        let cores = if cores.is_empty() { vec![None; self.shards.max(1)] } else { cores.into_iter().map(Some).collect() };
        let housekeeping_core = match self.housekeeping_core.trim() {
            "" => None,
            c => Some(c.parse().with_context(|| format!("stratum.housekeeping_core: {c:?} is not a core number"))?),
        };
        let rules = otedama_engine::stratum::session::PortRules {
            family,
            coin,
            network,
            extranonce2_size: pool.extranonce2_size,
            version_mask,
            difficulty,
            min_difficulty: self.min_difficulty,
            max_difficulty: self.max_difficulty,
            ntime_future: self.ntime_future_s,
            solo: pool.solo,
        };
        let ms = std::time::Duration::from_millis;
        let mut c = otedama_net::stratum_server::StratumConfig::parking(std::net::SocketAddr::new(host, self.port), rules, journal_dir);
        c.cores = cores;
        c.housekeeping_core = housekeeping_core;
        c.poll = self.poll.poll();
        c.extranonce1_size = pool.extranonce1_size;
        c.max_line = self.max_line;
        c.max_connections = self.max_connections;
        c.per_ip_limit = self.per_ip_limit;
        c.handshake_timeout = ms(self.handshake_timeout_ms);
        c.idle_timeout = ms(self.idle_timeout_ms);
        c.line_timeout = ms(self.line_timeout_ms);
        c.outbound_queue_bytes = self.outbound_queue_bytes;
        c.verify_workers = self.verify_workers;
        c.recv_buffers = self.recv_buffers;
        c.recv_buffer_size = self.recv_buffer_size;
        if self.tls_port != 0 || !self.tls_cert.is_empty() {
            use otedama_net::stratum_server::tls;
            let (cert, key) = match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
                (true, true) => {
                    let mut names = vec!["localhost".to_string()];
                    if !host.is_unspecified() {
                        names.push(host.to_string());
                    }
                    tls::self_signed(&c.journal_dir.join("tls"), &names)?
                }
                (false, false) => (PathBuf::from(&self.tls_cert), PathBuf::from(&self.tls_key)),
                _ => anyhow::bail!("stratum.tls_cert and stratum.tls_key go together"),
            };
            let config = tls::server_config(&cert, &key)?;
            c.tls = Some(otedama_net::stratum_server::TlsListen { listen: std::net::SocketAddr::new(host, self.tls_port), config });
            c.tls_cert = Some(cert);
        }
        c.journal = otedama_journal::Options {
            segment_bytes: self.journal_segment_bytes,
            sync_interval: ms(self.journal_sync_interval_ms),
            // Its own timer, never a spin: the `[journal]` defaults (spin
            // 50 µs, then a wake-up per record) suit the exchange journal,
            // whose acknowledgements wait for it; at 50,000 shares/s they
            // would keep a share journal's writeback thread spinning, a
            // core's worth of CPU for nothing anyone waits on.
            flusher_spin: std::time::Duration::ZERO,
            writeback_delay: std::time::Duration::from_micros(self.journal_writeback_delay_us),
            ..journal
        };
        c.journal.validate()?;
        c.confirm_wait = ms(self.confirm_wait_ms);
        Ok(c)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// First restart delay after a child exits unexpectedly (ms).
    pub restart_backoff_initial_ms: u64,
    /// Largest restart delay; the delay doubles per consecutive crash (ms).
    pub restart_backoff_max_ms: u64,
    /// A child that ran this long resets the backoff (ms).
    pub healthy_after_ms: u64,
    /// Time children get to exit after a forwarded signal before SIGKILL (ms).
    pub shutdown_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            log: LogConfig::default(),
            journal: JournalConfig::default(),
            engine: EngineConfig::default(),
            gateway: GatewayConfig::default(),
            pool: PoolConfig::default(),
            stratum: StratumConfig::default(),
            supervisor: SupervisorConfig::default(),
            api: ApiConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, level: "info".into() }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        let o = otedama_journal::Options::default();
        JournalConfig {
            segment_bytes: o.segment_bytes,
            durability: o.durability,
            prepare_ahead: o.prepare_ahead,
            flusher_spin_us: o.flusher_spin.as_micros() as u64,
            writeback_delay_us: o.writeback_delay.as_micros() as u64,
            snapshots_keep: 3,
            retention_margin_records: 0,
            archive_dir: PathBuf::new(),
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restart_backoff_initial_ms: 200,
            restart_backoff_max_ms: 30_000,
            healthy_after_ms: 10_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl JournalConfig {
    pub fn options(&self) -> otedama_journal::Options {
        otedama_journal::Options {
            segment_bytes: self.segment_bytes,
            durability: self.durability,
            prepare_ahead: self.prepare_ahead,
            flusher_spin: std::time::Duration::from_micros(self.flusher_spin_us),
            writeback_delay: std::time::Duration::from_micros(self.writeback_delay_us),
            sync_interval: std::time::Duration::ZERO,
            repair: false,
            hold_preparation: false,
        }
    }
}

/// One flag per configuration key; unset flags leave lower layers alone.
/// Keep in step with [`Config`]: a test checks every key has its flag.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct Overrides {
    #[arg(long, global = true, value_name = "DIR", help = "data directory [env: OTEDAMA_DATA_DIR]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "LogOverrides::is_empty")]
    pub log: LogOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "JournalOverrides::is_empty")]
    pub journal: JournalOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "EngineOverrides::is_empty")]
    pub engine: EngineOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "GatewayOverrides::is_empty")]
    pub gateway: GatewayOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "PoolOverrides::is_empty")]
    pub pool: PoolOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "StratumOverrides::is_empty")]
    pub stratum: StratumOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "SupervisorOverrides::is_empty")]
    pub supervisor: SupervisorOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "ApiOverrides::is_empty")]
    pub api: ApiOverrides,
}

/// The pool's flags, with the short names the pool's users expect
/// (`--coin`, `--node`, `--payout-address`) beside the key-path names.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct PoolOverrides {
    #[arg(long = "pool-enabled", global = true, help = "run the chain side [env: OTEDAMA_POOL__ENABLED]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[arg(long = "pool-coin", visible_alias = "coin", global = true, value_enum, help = "chain to mine [env: OTEDAMA_POOL__COIN]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coin: Option<CoinChoice>,
    #[arg(
        long = "pool-nodes",
        visible_alias = "node",
        global = true,
        value_name = "URL",
        num_args = 1,
        action = clap::ArgAction::Append,
        help = "node http://USER:PASS@HOST:PORT, repeatable, failover order [env: OTEDAMA_POOL__NODES]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    #[arg(
        long = "pool-payout-address",
        visible_alias = "payout-address",
        global = true,
        help = "coinbase payout address [env: OTEDAMA_POOL__PAYOUT_ADDRESS]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_address: Option<String>,
    #[arg(
        long = "pool-solo",
        visible_alias = "solo",
        global = true,
        num_args = 0..=1,
        default_missing_value = "true",
        help = "solo mining: each miner's coinbase pays its own address [env: OTEDAMA_POOL__SOLO]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solo: Option<bool>,
    #[arg(
        long = "pool-first-miner-account",
        global = true,
        help = "first ledger account for miners [env: OTEDAMA_POOL__FIRST_MINER_ACCOUNT]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_miner_account: Option<u32>,
    #[arg(
        long = "pool-miner-accounts-per-sec",
        global = true,
        help = "new miner accounts per second at most [env: OTEDAMA_POOL__MINER_ACCOUNTS_PER_SEC]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miner_accounts_per_sec: Option<u32>,
    #[arg(long = "pool-coinbase-tag", global = true, help = "pool tag in the coinbase [env: OTEDAMA_POOL__COINBASE_TAG]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coinbase_tag: Option<String>,
    #[arg(long = "pool-extranonce1-size", global = true, help = "extranonce1 bytes [env: OTEDAMA_POOL__EXTRANONCE1_SIZE]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extranonce1_size: Option<usize>,
    #[arg(long = "pool-extranonce2-size", global = true, help = "extranonce2 bytes [env: OTEDAMA_POOL__EXTRANONCE2_SIZE]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extranonce2_size: Option<usize>,
    #[arg(long = "pool-devnet-rpc", global = true, help = "embedded devnet JSON-RPC address [env: OTEDAMA_POOL__DEVNET_RPC]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devnet_rpc: Option<String>,
    #[arg(
        long = "pool-devnet-longpoll-ms",
        global = true,
        help = "devnet long-poll answer time, ms [env: OTEDAMA_POOL__DEVNET_LONGPOLL_MS]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devnet_longpoll_ms: Option<u64>,
    #[arg(
        long = "pool-longpoll-timeout-ms",
        global = true,
        help = "longest long poll to a node, ms [env: OTEDAMA_POOL__LONGPOLL_TIMEOUT_MS]"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longpoll_timeout_ms: Option<u64>,
    #[arg(long = "pool-poll-interval-ms", global = true, help = "tip polling interval, ms [env: OTEDAMA_POOL__POLL_INTERVAL_MS]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    #[arg(long = "pool-refresh-ms", global = true, help = "full template refresh when polling, ms [env: OTEDAMA_POOL__REFRESH_MS]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
}

impl PoolOverrides {
    fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.coin.is_none()
            && self.nodes.is_none()
            && self.payout_address.is_none()
            && self.solo.is_none()
            && self.first_miner_account.is_none()
            && self.miner_accounts_per_sec.is_none()
            && self.coinbase_tag.is_none()
            && self.extranonce1_size.is_none()
            && self.extranonce2_size.is_none()
            && self.devnet_rpc.is_none()
            && self.devnet_longpoll_ms.is_none()
            && self.longpoll_timeout_ms.is_none()
            && self.poll_interval_ms.is_none()
            && self.refresh_ms.is_none()
    }
}

macro_rules! overrides {
    ($name:ident { $($field:ident : $ty:ty = $flag:literal, $help:literal;)* }) => {
        #[derive(Debug, Clone, Default, clap::Args, Serialize)]
        pub struct $name {
            $(
                #[arg(long = $flag, id = $flag, global = true, help = $help)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }
        impl $name {
            fn is_empty(&self) -> bool {
                true $(&& self.$field.is_none())*
            }
        }
    };
}

overrides!(LogOverrides {
    format: LogFormat = "log-format", "log output: human or json [env: OTEDAMA_LOG__FORMAT]";
    level: String = "log-level", "tracing filter, e.g. info or debug [env: OTEDAMA_LOG__LEVEL]";
});

overrides!(JournalOverrides {
    segment_bytes: u64 = "journal-segment-bytes", "bytes per journal segment [env: OTEDAMA_JOURNAL__SEGMENT_BYTES]";
    durability: Durability = "journal-durability", "none, batch or always [env: OTEDAMA_JOURNAL__DURABILITY]";
    prepare_ahead: usize = "journal-prepare-ahead", "segments prepared ahead [env: OTEDAMA_JOURNAL__PREPARE_AHEAD]";
    flusher_spin_us: u64 = "journal-flusher-spin-us", "flusher spin before parking, µs [env: OTEDAMA_JOURNAL__FLUSHER_SPIN_US]";
    writeback_delay_us: u64 = "journal-writeback-delay-us", "0: wake writeback per record; else its timer, µs [env: OTEDAMA_JOURNAL__WRITEBACK_DELAY_US]";
    snapshots_keep: usize = "journal-snapshots-keep", "snapshots kept [env: OTEDAMA_JOURNAL__SNAPSHOTS_KEEP]";
    retention_margin_records: u64 = "journal-retention-margin-records", "records kept before the newest snapshot [env: OTEDAMA_JOURNAL__RETENTION_MARGIN_RECORDS]";
    archive_dir: PathBuf = "journal-archive-dir", "archive for retired segments [env: OTEDAMA_JOURNAL__ARCHIVE_DIR]";
});

overrides!(EngineOverrides {
    accounts_max: u32 = "engine-accounts-max", "ledger accounts [env: OTEDAMA_ENGINE__ACCOUNTS_MAX]";
    assets_max: u16 = "engine-assets-max", "assets [env: OTEDAMA_ENGINE__ASSETS_MAX]";
    instruments_max: u16 = "engine-instruments-max", "instruments [env: OTEDAMA_ENGINE__INSTRUMENTS_MAX]";
    orders_max: u32 = "engine-orders-max", "resting orders [env: OTEDAMA_ENGINE__ORDERS_MAX]";
    snapshot_interval_s: u64 = "engine-snapshot-interval-s", "seconds between state snapshots, 0: on request only [env: OTEDAMA_ENGINE__SNAPSHOT_INTERVAL_S]";
    levels_max: u32 = "engine-levels-max", "price levels per instrument band [env: OTEDAMA_ENGINE__LEVELS_MAX]";
    fee_account: u32 = "engine-fee-account", "fee account [env: OTEDAMA_ENGINE__FEE_ACCOUNT]";
});

overrides!(GatewayOverrides {
    listen: String = "gateway-listen", "order-entry address [env: OTEDAMA_GATEWAY__LISTEN]";
    io_shards: usize = "gateway-io-shards", "unpinned I/O shards [env: OTEDAMA_GATEWAY__IO_SHARDS]";
    io_cores: String = "gateway-io-cores", "cores for I/O shards, e.g. 0 or 0,2 [env: OTEDAMA_GATEWAY__IO_CORES]";
    engine_core: String = "gateway-engine-core", "core for the engine shard [env: OTEDAMA_GATEWAY__ENGINE_CORE]";
    io_poll: PollMode = "gateway-io-poll", "park or spin [env: OTEDAMA_GATEWAY__IO_POLL]";
    engine_poll: PollMode = "gateway-engine-poll", "park or spin [env: OTEDAMA_GATEWAY__ENGINE_POLL]";
    heartbeat_ms: u32 = "gateway-heartbeat-ms", "heartbeat interval, ms [env: OTEDAMA_GATEWAY__HEARTBEAT_MS]";
    heartbeat_misses: u32 = "gateway-heartbeat-misses", "missed intervals before disconnect [env: OTEDAMA_GATEWAY__HEARTBEAT_MISSES]";
    login_timeout_ms: u32 = "gateway-login-timeout-ms", "login deadline, ms [env: OTEDAMA_GATEWAY__LOGIN_TIMEOUT_MS]";
    rate_per_sec: u32 = "gateway-rate-per-sec", "messages/s per session [env: OTEDAMA_GATEWAY__RATE_PER_SEC]";
    rate_burst: u32 = "gateway-rate-burst", "burst per session [env: OTEDAMA_GATEWAY__RATE_BURST]";
    outbound_queue_bytes: usize = "gateway-outbound-queue-bytes", "per-session outbound bound [env: OTEDAMA_GATEWAY__OUTBOUND_QUEUE_BYTES]";
    ring_slots: usize = "gateway-ring-slots", "slots per ring [env: OTEDAMA_GATEWAY__RING_SLOTS]";
    max_connections: usize = "gateway-max-connections", "connections per I/O shard [env: OTEDAMA_GATEWAY__MAX_CONNECTIONS]";
});

overrides!(StratumOverrides {
    host: String = "stratum-host", "address miners connect to [env: OTEDAMA_STRATUM__HOST]";
    port: u16 = "stratum-port", "Stratum port [env: OTEDAMA_STRATUM__PORT]";
    shards: usize = "stratum-shards", "unpinned Stratum shards [env: OTEDAMA_STRATUM__SHARDS]";
    cores: String = "stratum-cores", "cores for Stratum shards, e.g. 1 or 1,3 [env: OTEDAMA_STRATUM__CORES]";
    housekeeping_core: String = "stratum-housekeeping-core", "core for the Stratum helper threads [env: OTEDAMA_STRATUM__HOUSEKEEPING_CORE]";
    poll: PollMode = "stratum-poll", "park or spin [env: OTEDAMA_STRATUM__POLL]";
    difficulty: f64 = "stratum-difficulty", "share difficulty, 0: by chain [env: OTEDAMA_STRATUM__DIFFICULTY]";
    min_difficulty: f64 = "stratum-min-difficulty", "lowest d= / suggested difficulty [env: OTEDAMA_STRATUM__MIN_DIFFICULTY]";
    max_difficulty: f64 = "stratum-max-difficulty", "highest d= / suggested difficulty [env: OTEDAMA_STRATUM__MAX_DIFFICULTY]";
    version_mask: String = "stratum-version-mask", "version bits miners may roll, hex [env: OTEDAMA_STRATUM__VERSION_MASK]";
    ntime_future_s: u32 = "stratum-ntime-future-s", "ntime allowed ahead, s [env: OTEDAMA_STRATUM__NTIME_FUTURE_S]";
    max_line: usize = "stratum-max-line", "longest request line, bytes [env: OTEDAMA_STRATUM__MAX_LINE]";
    max_connections: usize = "stratum-max-connections", "connections per shard [env: OTEDAMA_STRATUM__MAX_CONNECTIONS]";
    per_ip_limit: u32 = "stratum-per-ip-limit", "connections per IP address [env: OTEDAMA_STRATUM__PER_IP_LIMIT]";
    handshake_timeout_ms: u64 = "stratum-handshake-timeout-ms", "time to subscribe and authorize, ms [env: OTEDAMA_STRATUM__HANDSHAKE_TIMEOUT_MS]";
    idle_timeout_ms: u64 = "stratum-idle-timeout-ms", "idle time before a disconnect, ms [env: OTEDAMA_STRATUM__IDLE_TIMEOUT_MS]";
    line_timeout_ms: u64 = "stratum-line-timeout-ms", "time to finish a begun line, ms [env: OTEDAMA_STRATUM__LINE_TIMEOUT_MS]";
    outbound_queue_bytes: usize = "stratum-outbound-queue-bytes", "per-miner outbound bound [env: OTEDAMA_STRATUM__OUTBOUND_QUEUE_BYTES]";
    verify_workers: usize = "stratum-verify-workers", "scrypt share checkers [env: OTEDAMA_STRATUM__VERIFY_WORKERS]";
    recv_buffers: u16 = "stratum-recv-buffers", "receive buffers per shard [env: OTEDAMA_STRATUM__RECV_BUFFERS]";
    recv_buffer_size: usize = "stratum-recv-buffer-size", "receive buffer size, bytes [env: OTEDAMA_STRATUM__RECV_BUFFER_SIZE]";
    confirm_wait_ms: u64 = "stratum-confirm-wait-ms", "wait for a block on the nodes' tips, ms [env: OTEDAMA_STRATUM__CONFIRM_WAIT_MS]";
    journal_segment_bytes: u64 = "stratum-journal-segment-bytes", "share journal segment size [env: OTEDAMA_STRATUM__JOURNAL_SEGMENT_BYTES]";
    journal_sync_interval_ms: u64 = "stratum-journal-sync-interval-ms", "least time between share journal syncs, ms [env: OTEDAMA_STRATUM__JOURNAL_SYNC_INTERVAL_MS]";
    journal_writeback_delay_us: u64 = "stratum-journal-writeback-delay-us", "share journal writeback timer, µs; 0: per record [env: OTEDAMA_STRATUM__JOURNAL_WRITEBACK_DELAY_US]";
    tls_port: u16 = "stratum-tls-port", "Stratum over TLS port, 0: none [env: OTEDAMA_STRATUM__TLS_PORT]";
    tls_cert: String = "stratum-tls-cert", "PEM certificate chain for TLS [env: OTEDAMA_STRATUM__TLS_CERT]";
    tls_key: String = "stratum-tls-key", "PEM private key for TLS [env: OTEDAMA_STRATUM__TLS_KEY]";
});

overrides!(ApiOverrides {
    listen: String = "api-listen", "address of the HTTP API [env: OTEDAMA_API__LISTEN]";
    rate_per_sec: f64 = "api-rate-per-sec", "requests per second per client IP [env: OTEDAMA_API__RATE_PER_SEC]";
    rate_burst: f64 = "api-rate-burst", "burst of requests per client IP [env: OTEDAMA_API__RATE_BURST]";
    engine_addr: String = "api-engine-addr", "engine order-entry address for the API's admin session [env: OTEDAMA_API__ENGINE_ADDR]";
    engine_key: String = "api-engine-key", "KEYID:SECRET admin key for that session, none: no session [env: OTEDAMA_API__ENGINE_KEY]";
    database_url: String = "api-database-url", "postgres://… or sqlite://…; empty: SQLite in the data directory; none: no database [env: OTEDAMA_API__DATABASE_URL]";
});

overrides!(SupervisorOverrides {
    restart_backoff_initial_ms: u64 = "supervisor-restart-backoff-initial-ms", "first restart delay, ms [env: OTEDAMA_SUPERVISOR__RESTART_BACKOFF_INITIAL_MS]";
    restart_backoff_max_ms: u64 = "supervisor-restart-backoff-max-ms", "largest restart delay, ms [env: OTEDAMA_SUPERVISOR__RESTART_BACKOFF_MAX_MS]";
    healthy_after_ms: u64 = "supervisor-healthy-after-ms", "uptime that resets the backoff, ms [env: OTEDAMA_SUPERVISOR__HEALTHY_AFTER_MS]";
    shutdown_grace_ms: u64 = "supervisor-shutdown-grace-ms", "grace before SIGKILL at shutdown, ms [env: OTEDAMA_SUPERVISOR__SHUTDOWN_GRACE_MS]";
});

/// Every key path of the configuration (`journal.segment_bytes`, ...).
pub fn key_paths() -> Vec<String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let v = toml::Value::try_from(Config::default()).expect("config serialises");
    let mut out = Vec::new();
    walk("", &v, &mut out);
    out
}

/// Loads the effective configuration from the four layers.
pub fn load(file: Option<&std::path::Path>, overrides: &Overrides) -> Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    // Only known keys come from the environment: other OTEDAMA_* variables
    // (a test harness's, say) must not break the start.
    let known = key_paths();
    let env = Env::prefixed("OTEDAMA_").filter_map(move |k| {
        let path = k.as_str().to_ascii_lowercase().replace("__", ".");
        known.contains(&path).then(|| path.into())
    });
    fig = fig.merge(env).merge(Serialized::defaults(overrides));
    let cfg: Config = fig.extract().context("invalid configuration")?;
    cfg.journal.options().validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_key_has_a_flag() {
        let cmd = crate::Cli::command();
        let flags: Vec<String> = cmd.get_arguments().filter_map(|a| a.get_long().map(str::to_owned)).collect();
        for key in key_paths() {
            let flag = key.replace(['.', '_'], "-");
            assert!(flags.contains(&flag), "configuration key {key} has no --{flag} flag");
        }
    }

    #[test]
    fn example_config_documents_every_key_with_its_default() {
        let text = include_str!("../otedama.example.toml");
        let parsed: Config = toml::from_str(text).expect("example config parses");
        assert_eq!(parsed, Config::default(), "the example shows the defaults");
        let v: toml::Value = toml::from_str(text).unwrap();
        for key in key_paths() {
            let mut cur = &v;
            for part in key.split('.') {
                cur = cur.get(part).unwrap_or_else(|| panic!("example config lacks {key}"));
            }
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the error type
    fn precedence_is_flag_over_env_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[journal]\nsegment_bytes = 131072\nprepare_ahead = 3\nflusher_spin_us = 7\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OTEDAMA_JOURNAL__SEGMENT_BYTES", "262144");
            jail.set_env("OTEDAMA_JOURNAL__PREPARE_AHEAD", "4");
            jail.set_env("OTEDAMA_UNRELATED_TEST_VARIABLE", "ignored");
            let flags = Overrides { journal: JournalOverrides { segment_bytes: Some(524288), ..Default::default() }, ..Default::default() };
            let c = load(Some(&file), &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.journal.segment_bytes, 524288, "flag wins");
            assert_eq!(c.journal.prepare_ahead, 4, "env beats file");
            assert_eq!(c.journal.flusher_spin_us, 7, "file beats default");
            assert_eq!(c.journal.snapshots_keep, 3, "default");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail fixes the error type
    fn bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        // In a Jail: the precedence test sets OTEDAMA_* variables in this
        // process's environment, and Jails run one at a time.
        figment::Jail::expect_with(|_jail| {
            std::fs::write(&file, "[journal]\nsegmnt_bytes = 1\n").unwrap();
            let e = load(Some(&file), &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains("segmnt_bytes"), "{e:#}");
            std::fs::write(&file, "[journal]\nsegment_bytes = 1000\n").unwrap();
            let e = load(Some(&file), &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains("segment_bytes must be a multiple of 4096"), "{e:#}");
            Ok(())
        });
    }
}
