//! The pool inside `otedama engine`: the embedded devnet (when the coin is
//! a devnet and no node is configured), served over JSON-RPC on loopback;
//! the template task following the nodes; and the Stratum server handing
//! its jobs to miners, journaling their shares and submitting blocks.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use otedama_engine::chain::address;
use otedama_engine::chain::job::CoinbaseConfig;
use otedama_net::devnet_rpc::{DevnetRpc, DevnetRpcConfig};
use otedama_net::miner_accounts::{MinerAccounts, MinerAccountsConfig};
use otedama_net::node::Node;
use otedama_net::stratum_server::StratumServer;
use otedama_net::template_task::{TemplateTask, TemplateTaskConfig};

use crate::config::Config;

pub struct PoolSide {
    devnet: Option<DevnetRpc>,
    task: Option<TemplateTask>,
    stratum: Option<StratumServer>,
    accounts: Option<MinerAccounts>,
    /// What to print at start.
    pub summary: String,
}

pub const ADMIN_KEY_LABEL: &str = "engine: miner accounts";

/// The engine's own admin key for creating miners' ledger accounts: made
/// once (the secret kept in `<data_dir>/pool/engine-admin.key`, mode 0600)
/// and kept in the key store, which must happen before the gateway loads it.
pub fn ensure_admin_key(cfg: &Config) -> Result<Option<(u64, [u8; 32])>> {
    if !cfg.pool.enabled {
        return Ok(None);
    }
    let dir = cfg.data_dir.join("pool");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("engine-admin.key");
    let store_path = otedama_net::keys::path_in(&cfg.data_dir);
    let mut store = otedama_net::keys::KeyStore::load(&store_path)?;
    if let Ok(text) = std::fs::read_to_string(&file) {
        let parsed =
            text.trim().split_once(':').and_then(|(i, s)| Some((otedama_net::keys::parse_id(i)?, otedama_net::keys::parse_secret(s)?)));
        if let Some((id, secret)) = parsed
            && store.verify(id, &secret).is_some()
        {
            return Ok(Some((id, secret)));
        }
    }
    let k = store.add(0, true, ADMIN_KEY_LABEL)?;
    store.save(&store_path)?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&file)?;
    writeln!(f, "{:016x}:{}", k.id, hex::encode(k.secret))?;
    Ok(Some((k.id, k.secret)))
}

pub fn start(cfg: &Config, gateway: std::net::SocketAddr, admin_key: Option<(u64, [u8; 32])>) -> Result<Option<PoolSide>> {
    let p = &cfg.pool;
    if !p.enabled {
        return Ok(None);
    }
    let (coin, network, algorithm, devnet) = p.coin.chain();
    let coin_name = serde_json::to_value(p.coin)?.as_str().unwrap_or_default().to_string();
    if p.nodes.is_empty() && !devnet {
        bail!("pool.nodes (--node http://USER:PASS@HOST:PORT) is required for {coin_name}");
    }
    let script = if p.payout_address.is_empty() {
        if !devnet && !p.solo {
            bail!("pool.payout_address (--payout-address) is required for {coin_name}");
        }
        // OP_TRUE: anyone can spend. A devnet coin has no value; in solo
        // mode no miner is ever given this job, only its variant paying
        // the miner.
        vec![0x51]
    } else {
        address::script_for(&p.payout_address, coin, network)
            .with_context(|| format!("pool.payout_address {:?} is not a {coin_name} address", p.payout_address))?
    };
    let mut coinbase = CoinbaseConfig::new(coin, network);
    coinbase.tag = p.coinbase_tag.as_bytes().to_vec();
    coinbase.extranonce1_size = p.extranonce1_size;
    coinbase.extranonce2_size = p.extranonce2_size;
    if !(2..=8).contains(&p.extranonce1_size) || p.extranonce2_size < 2 || coinbase.extranonce_size() > 32 {
        bail!("pool.extranonce1_size: 2 to 8 bytes; extranonce2_size: at least 2; at most 32 together");
    }
    let mut scfg = cfg.stratum.to_net(p, cfg.journal.options(), cfg.data_dir.join("pool"))?;
    anyhow::ensure!(
        p.first_miner_account < cfg.engine.accounts_max,
        "pool.first_miner_account ({}) must be below engine.accounts_max ({})",
        p.first_miner_account,
        cfg.engine.accounts_max
    );
    let accounts = match admin_key {
        Some(key) => Some(
            MinerAccounts::start(MinerAccountsConfig {
                journal_dir: cfg.data_dir.join("pool").join("miners"),
                journal: otedama_journal::Options { segment_bytes: 1 << 20, ..cfg.journal.options() },
                first_account: p.first_miner_account,
                accounts_max: cfg.engine.accounts_max,
                gateway,
                key,
                max_new_per_sec: p.miner_accounts_per_sec.max(1),
            })
            .map_err(anyhow::Error::msg)
            .context("starting the miner accounts registry")?,
        ),
        None => None,
    };
    scfg.authorized = accounts.as_ref().map(MinerAccounts::sender);
    let mut rpc = None;
    let nodes: Vec<Node> = if p.nodes.is_empty() {
        if !devnet {
            bail!("pool.nodes (--node http://USER:PASS@HOST:PORT) is required for {coin_name}");
        }
        let listen = p.devnet_rpc.parse().with_context(|| format!("pool.devnet_rpc {:?} is not an address:port", p.devnet_rpc))?;
        let server = DevnetRpc::start(DevnetRpcConfig {
            listen,
            algorithm,
            dir: cfg.data_dir.join("devnet").join(&coin_name),
            journal: otedama_journal::Options { segment_bytes: 1 << 20, ..cfg.journal.options() },
            longpoll_max: Duration::from_millis(p.devnet_longpoll_ms),
            longpoll: true,
        })?;
        let node = Node::new(&server.url()).map_err(anyhow::Error::msg)?;
        rpc = Some(server);
        vec![node]
    } else {
        p.nodes.iter().map(|u| Node::new(u).map_err(anyhow::Error::msg)).collect::<Result<_>>()?
    };
    let summary = match &rpc {
        Some(r) => format!(
            "{coin_name} (embedded devnet at height {}, JSON-RPC on {} with the cookie in {})",
            r.height(),
            r.local_addr(),
            otedama_net::devnet_rpc::cookie_path(&cfg.data_dir.join("devnet").join(&coin_name)).display()
        ),
        None => format!("{coin_name} following {}", nodes.iter().map(|n| n.url().to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut tcfg = TemplateTaskConfig::new(coinbase, script);
    tcfg.longpoll_timeout = Duration::from_millis(p.longpoll_timeout_ms.max(1000));
    tcfg.poll_interval = Duration::from_millis(p.poll_interval_ms.max(10));
    tcfg.refresh = Duration::from_millis(p.refresh_ms.max(100));
    let (tx, rx) = mpsc::channel();
    let difficulty = scfg.rules.difficulty;
    let cert = scfg.tls_cert.clone();
    let stratum = StratumServer::start(scfg, nodes.clone(), rx).context("starting the Stratum server")?;
    let mut summary = format!("{summary}; Stratum V1 on {} (difficulty {difficulty})", stratum.local_addr());
    if let (Some(a), Some(cert)) = (stratum.tls_addr(), cert) {
        let fp = otedama_net::stratum_server::tls::fingerprint(&cert)?;
        summary.push_str(&format!("; Stratum over TLS on {a} (certificate {}, SHA-256 {fp})", cert.display()));
    }
    let task = TemplateTask::start(nodes, tcfg, tx);
    Ok(Some(PoolSide { devnet: rpc, task: Some(task), stratum: Some(stratum), accounts, summary }))
}

impl PoolSide {
    pub fn stop(mut self) -> Result<()> {
        // Miners first (asked to reconnect, their shares journaled and
        // synced, a block being submitted finished), then the templates.
        let stratum = self.stratum.take().map(StratumServer::shutdown);
        // The shards are gone: the registry finishes what they sent.
        let accounts = self.accounts.take().map(MinerAccounts::stop);
        if let Some(t) = self.task.take() {
            t.stop();
        }
        if let Some(d) = self.devnet.take() {
            d.stop().context("closing the devnet journal")?;
        }
        if let Some(Err(e)) = stratum {
            bail!("stopping the Stratum server: {e}");
        }
        if let Some(Err(e)) = accounts {
            bail!("stopping the miner accounts registry: {e}");
        }
        Ok(())
    }
}
