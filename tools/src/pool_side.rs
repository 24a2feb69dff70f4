//! The pool's chain side inside `otedama engine`: the embedded devnet
//! (when the coin is a devnet and no node is configured), served over
//! JSON-RPC on loopback, and the template task following the nodes.
//!
//! The Stratum server that hands these jobs to miners is not built yet;
//! until then each new job is logged (height, transactions, build time).

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use otedama_engine::chain::address;
use otedama_engine::chain::job::CoinbaseConfig;
use otedama_net::devnet_rpc::{DevnetRpc, DevnetRpcConfig};
use otedama_net::node::Node;
use otedama_net::template_task::{TemplateTask, TemplateTaskConfig};

use crate::config::Config;

pub struct PoolSide {
    devnet: Option<DevnetRpc>,
    task: Option<TemplateTask>,
    logger: Option<std::thread::JoinHandle<()>>,
    /// What to print at start.
    pub summary: String,
}

pub fn start(cfg: &Config) -> Result<Option<PoolSide>> {
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
        if !devnet {
            bail!("pool.payout_address (--payout-address) is required for {coin_name}");
        }
        vec![0x51] // OP_TRUE: anyone can spend; a devnet coin has no value
    } else {
        address::script_for(&p.payout_address, coin, network)
            .with_context(|| format!("pool.payout_address {:?} is not a {coin_name} address", p.payout_address))?
    };
    let mut coinbase = CoinbaseConfig::new(coin, network);
    coinbase.tag = p.coinbase_tag.as_bytes().to_vec();
    coinbase.extranonce1_size = p.extranonce1_size;
    coinbase.extranonce2_size = p.extranonce2_size;
    if p.extranonce1_size < 2 || p.extranonce2_size < 2 || coinbase.extranonce_size() > 32 {
        bail!("pool.extranonce1_size and extranonce2_size: at least 2 bytes each, at most 32 together");
    }
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
    let task = TemplateTask::start(nodes, tcfg, tx);
    let logger = std::thread::Builder::new().name("pool-jobs".into()).spawn(move || {
        for w in rx {
            tracing::info!(
                job = w.job.id,
                height = w.job.height,
                clean = w.clean,
                node = w.node,
                fees = w.job.fees,
                coinbase_value = w.job.coinbase_value,
                build_us = w.build.as_micros() as u64,
                "new mining job (no Stratum server yet: the job is not served)"
            );
        }
    })?;
    Ok(Some(PoolSide { devnet: rpc, task: Some(task), logger: Some(logger), summary }))
}

impl PoolSide {
    pub fn stop(mut self) -> Result<()> {
        if let Some(t) = self.task.take() {
            t.stop();
        }
        if let Some(l) = self.logger.take() {
            let _ = l.join();
        }
        if let Some(d) = self.devnet.take() {
            d.stop().context("closing the devnet journal")?;
        }
        Ok(())
    }
}
