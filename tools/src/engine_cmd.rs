//! `otedama engine` (the hot path: order-entry gateway + engine shard) and
//! `otedama keys` (the API key store).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde_json::json;

use otedama_engine::Exchange;
use otedama_journal::{Journal, Reader, ReaderOptions};
use otedama_net::gateway::Gateway;
use otedama_net::keys::{self, KeyStore};

use crate::config::Config;

/// The exchange journal's directory inside the data directory.
pub fn exchange_journal_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("exchange")
}

/// Opens the exchange journal and rebuilds the state from it: every
/// journaled command is applied again and must reproduce its journaled
/// events (the engine refuses to start on a journal it cannot reproduce).
fn recover(cfg: &Config) -> Result<(Exchange, Journal)> {
    let dir = exchange_journal_dir(&cfg.data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let journal = Journal::open(&dir, cfg.journal.options()).with_context(|| format!("opening the journal in {}", dir.display()))?;
    let rep = journal.open_report().clone();
    let mut exchange = Exchange::new(cfg.engine.limits());
    if rep.next_seq > rep.first_seq {
        let t0 = std::time::Instant::now();
        let mut r = Reader::open(&dir, rep.first_seq, ReaderOptions::default())?;
        let done = otedama_net::sequencer::replay(&mut r, &mut exchange).context("replaying the exchange journal")?;
        tracing::info!(
            commands = done.commands,
            through = done.last_seq,
            seconds = t0.elapsed().as_secs_f64(),
            state_hash = %hex::encode(exchange.state_hash()),
            "state rebuilt from the journal"
        );
    }
    Ok((exchange, journal))
}

pub fn engine(cfg: &Config) -> Result<i32> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let gw_cfg = cfg.gateway.to_net(&cfg.data_dir)?;
    let (exchange, journal) = recover(cfg)?;
    let keys_path = keys::path_in(&cfg.data_dir);
    // Operators' keys (the engine's own, for miner accounts, aside).
    let n_keys = KeyStore::load(&keys_path)?.keys.iter().filter(|k| k.label != crate::pool_side::ADMIN_KEY_LABEL).count();
    if n_keys == 0 {
        tracing::warn!(path = %keys_path.display(), "no API keys yet: add one with `otedama keys add --account N`");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    let admin_key = crate::pool_side::ensure_admin_key(cfg).context("the engine's admin key for miner accounts")?;
    let gw = Gateway::start(gw_cfg.clone(), exchange, journal).context("starting the gateway")?;
    // After the gateway: miners' ledger accounts are created through it.
    let pool = match crate::pool_side::start(cfg, gw.local_addr(), admin_key) {
        Ok(p) => p,
        Err(e) => {
            let _ = gw.shutdown();
            return Err(e.context("starting the pool's chain side"));
        }
    };
    let core = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("core {c}"));
    let layout = if gw_cfg.colocated() {
        format!("I/O and engine shards in one thread on {} ({:?})", core(gw_cfg.engine_core), gw_cfg.io_poll)
    } else {
        let io: Vec<String> = gw_cfg.io_cores.iter().map(|c| core(*c)).collect();
        format!(
            "I/O shards on [{}] ({:?}), engine shard on {} ({:?})",
            io.join(", "),
            gw_cfg.io_poll,
            core(gw_cfg.engine_core),
            gw_cfg.engine_poll
        )
    };
    println!("otedama engine: order entry on {} ({layout}); {n_keys} key(s) in {}", gw.local_addr(), keys_path.display());
    if let Some(p) = &pool {
        println!("otedama engine: pool chain side: {}", p.summary);
    }
    tracing::info!(addr = %gw.local_addr(), "engine serving");
    let (exchange, journal, stats) = gw.wait(&stop).map_err(anyhow::Error::msg)?;
    if let Some(p) = pool {
        // The exchange journal is closed below whatever happens here.
        if let Err(e) = p.stop() {
            tracing::error!(error = %format!("{e:#}"), "stopping the pool's chain side");
        }
    }
    let published = journal.published_seq();
    let js = journal.stats();
    journal.close().context("closing the journal")?;
    println!(
        "otedama engine: journal rolled {} segment(s) ({} created, {} recycled; {} roll(s) waited for a prepared segment)",
        js.rolls, js.segments_created, js.segments_recycled, js.roll_waits
    );
    println!(
        "otedama engine: stopped cleanly after {} commands ({} messages out, {} duplicates ignored); journal synced through {}; state hash {}",
        stats.commands,
        stats.messages_out,
        stats.duplicates,
        published,
        hex::encode(exchange.state_hash())
    );
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Make a key for a ledger account; prints its id and secret (shown once).
    Add {
        #[arg(long)]
        account: u32,
        /// May send admin commands and act for any account.
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: new logins with it fail (a live session is not cut).
    Revoke { id: String },
}

pub fn keys_cmd(cmd: KeysCmd, data_dir: &Path) -> Result<i32> {
    let path = keys::path_in(data_dir);
    match cmd {
        KeysCmd::Add { account, admin, label, json } => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let mut store = KeyStore::load(&path)?;
            let k = store.add(account, admin, &label)?;
            store.save(&path)?;
            if json {
                println!(
                    "{}",
                    json!({"id": format!("{:016x}", k.id), "secret": hex::encode(k.secret), "account": account, "admin": admin})
                );
            } else {
                println!("key id  {:016x}", k.id);
                println!("secret  {}", hex::encode(k.secret));
                println!("account {account}{}", if admin { " (admin)" } else { "" });
                println!("use as  --key {:016x}:{}", k.id, hex::encode(k.secret));
                println!("The secret is shown only now; {} keeps its argon2id hash.", path.display());
            }
            Ok(0)
        }
        KeysCmd::List { json } => {
            let store = KeyStore::load(&path)?;
            if json {
                let v: Vec<_> = store
                    .keys
                    .iter()
                    .map(|k| json!({"id": format!("{:016x}", k.id), "account": k.account, "admin": k.admin, "revoked": k.revoked, "created": k.created, "label": k.label}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for k in &store.keys {
                    println!(
                        "{:016x} account {:<8} {:<6} {:<7} created {} {}",
                        k.id,
                        k.account,
                        if k.admin { "admin" } else { "trader" },
                        if k.revoked { "revoked" } else { "active" },
                        k.created,
                        k.label
                    );
                }
            }
            Ok(0)
        }
        KeysCmd::Revoke { id } => {
            let id = keys::parse_id(&id).context("a key id is 16 hex digits")?;
            let mut store = KeyStore::load(&path)?;
            store.revoke(id)?;
            store.save(&path)?;
            println!("revoked {id:016x}");
            Ok(0)
        }
    }
}
