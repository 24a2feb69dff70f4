//! `otedama engine` (the hot path: order-entry gateway + engine shard) and
//! `otedama keys` (the API key store).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use serde_json::json;

use otedama_journal::snapshot::Snapshots;
use otedama_journal::{FileStorage, Journal, Reader, ReaderOptions};
use otedama_net::gateway::{EngineState, Gateway};
use otedama_net::keys::{self, KeyStore};
use otedama_net::recovery::{RecoveryReport, Snapshotter, SnapshotterConfig};

use crate::config::Config;

/// The exchange journal's directory inside the data directory.
pub fn exchange_journal_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("exchange")
}

/// Opens the exchange journal and rebuilds the state: the newest snapshot
/// that checks out, then every journaled command after it applied again,
/// each required to reproduce its journaled events (the engine refuses to
/// start on a journal it cannot reproduce).
fn recover(cfg: &Config) -> Result<(EngineState, Journal, RecoveryReport, Snapshots)> {
    let dir = exchange_journal_dir(&cfg.data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // New segments are zero-filled only under a policy that syncs: the fill
    // spares each later fdatasync the conversion of unwritten extents, which
    // a journal that never syncs (`none`) never pays, while the fill itself
    // doubles what the disk writes.
    let syncs = cfg.journal.durability != otedama_journal::Durability::None;
    let storage = Arc::new(FileStorage::new(&dir).with_context(|| format!("opening {}", dir.display()))?.with_prefault(syncs));
    let snaps = Snapshots::open(&dir, cfg.journal.snapshots_keep).with_context(|| format!("snapshots in {}", dir.display()))?;
    let (state, journal, rep) = otedama_net::recovery::recover(storage, cfg.journal.options(), Some(&snaps), cfg.engine.limits())
        .with_context(|| format!("recovering the exchange journal in {}", dir.display()))?;
    if rep.commands > 0 || rep.snapshot_seq.is_some() {
        tracing::info!(
            snapshot = ?rep.snapshot_seq,
            commands = rep.commands,
            events = rep.events,
            through = rep.last_seq,
            snapshot_s = rep.snapshot_load_s,
            replay_s = rep.replay_s,
            sessions = state.sessions.len(),
            state_hash = %hex::encode(state.exchange.state_hash()),
            "state rebuilt: snapshot plus journal replay, every command reproduced its events"
        );
    }
    Ok((state, journal, rep, snaps))
}

/// `otedama engine --snapshot-now`: signals the engine writing this data
/// directory's exchange journal (SIGUSR1) and waits for its snapshot.
pub fn snapshot_now(cfg: &Config) -> Result<i32> {
    let dir = exchange_journal_dir(&cfg.data_dir);
    let r = Reader::open(&dir, 0, ReaderOptions::default()).with_context(|| format!("opening {}", dir.display()))?;
    let pid = r.writer_pid();
    if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        anyhow::bail!("no engine is running on {}", dir.display());
    }
    let snaps = Snapshots::open(&dir, cfg.journal.snapshots_keep)?;
    let before = snaps.list()?.iter().map(|s| (s.seq, s.bytes)).collect::<Vec<_>>();
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid as i32, libc::SIGUSR1) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("signalling engine pid {pid}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::bail!("engine pid {pid} exited before writing a snapshot");
        }
        if let Some(new) = snaps.list()?.into_iter().rev().find(|s| s.valid && !before.contains(&(s.seq, s.bytes))) {
            println!("snapshot at sequence {} ({} bytes): {}", new.seq, new.bytes, new.path.display());
            return Ok(0);
        }
    }
    anyhow::bail!("engine pid {pid} wrote no snapshot within 120 s (its log says why)")
}

pub fn engine(cfg: &Config) -> Result<i32> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let gw_cfg = cfg.gateway.to_net(&cfg.data_dir)?;
    // SIGUSR1 asks for a snapshot; caught from the start, so one that
    // arrives during recovery waits for the snapshotter instead of ending
    // the process (its default action).
    let asked = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, asked.clone()).context("installing the SIGUSR1 handler")?;
    let (state, journal, rep, snaps) = recover(cfg)?;
    println!(
        "otedama engine: recovered {} through journal sequence {}: {} commands ({} events) replayed and verified in {:.3} s, {} session name(s)",
        rep.snapshot_seq.map_or("from the start of the journal".to_string(), |s| format!("from the snapshot at {s}")),
        rep.last_seq,
        rep.commands,
        rep.events,
        rep.snapshot_load_s + rep.replay_s,
        state.sessions.len()
    );
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
    let snap_cfg = SnapshotterConfig { interval: std::time::Duration::from_secs(cfg.engine.snapshot_interval_s), core: None };
    let snapshotter = Snapshotter::start(snap_cfg, journal.storage(), snaps, cfg.engine.limits()).map_err(anyhow::Error::msg)?;
    let admin_key = crate::pool_side::ensure_admin_key(cfg).context("the engine's admin key for miner accounts")?;
    let gw = Gateway::start(gw_cfg.clone(), state, journal).context("starting the gateway")?; // After the gateway: miners' ledger accounts are created through it.
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
    // SIGUSR1 asks the snapshotter for a snapshot now.
    let relay = {
        let (asked, stop, snapshotter) = (asked.clone(), stop.clone(), &snapshotter);
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if asked.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    tracing::info!("SIGUSR1: snapshot requested");
                    snapshotter.request();
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    };
    let (state, journal, stats) = std::thread::scope(|sc| {
        sc.spawn(relay);
        let out = gw.wait(&stop);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    })
    .map_err(anyhow::Error::msg)?;
    snapshotter.stop();
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
        "otedama engine: journal rolled {} segment(s) ({} created, {} recycled; {} roll(s) waited for a prepared segment); {} group commit sync(s), {:.1} µs each on average",
        js.rolls,
        js.segments_created,
        js.segments_recycled,
        js.roll_waits,
        js.syncs,
        js.sync_ns_total as f64 / js.syncs.max(1) as f64 / 1e3
    );
    println!(
        "otedama engine: stopped cleanly after {} commands ({} messages out, {} duplicates ignored); journal synced through {}; state hash {}",
        stats.commands,
        stats.messages_out,
        stats.duplicates,
        published,
        hex::encode(state.exchange.state_hash())
    );
    Ok(0)
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Make a key for a ledger account; prints its id and secret (shown once).
    Add {
        #[arg(long, required_unless_present = "drop_copy")]
        account: Option<u32>,
        /// May send admin commands and act for any account.
        #[arg(long, conflicts_with = "drop_copy")]
        admin: bool,
        /// A read-only drop-copy key receiving every execution of these
        /// accounts: `*` for all, or a list like `7,9,12`.
        #[arg(long, conflicts_with = "account")]
        drop_copy: Option<String>,
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
        KeysCmd::Add { account, admin, drop_copy, label, json } => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
            let mut store = KeyStore::load(&path)?;
            let follow = match &drop_copy {
                Some(f) => Some(keys::Follow::parse(f).context("--drop-copy takes `*` or account numbers separated by commas")?),
                None => None,
            };
            let account = account.unwrap_or(0);
            let k = match &follow {
                Some(f) => store.add_drop_copy(f.clone(), &label)?,
                None => store.add(account, admin, &label)?,
            };
            store.save(&path)?;
            let role = if follow.is_some() {
                "dropcopy"
            } else if admin {
                "admin"
            } else {
                "trader"
            };
            if json {
                println!(
                    "{}",
                    json!({"id": format!("{:016x}", k.id), "secret": hex::encode(k.secret), "account": account, "admin": admin, "role": role, "follows": follow.as_ref().map(|f| f.to_string())})
                );
            } else {
                println!("key id  {:016x}", k.id);
                println!("secret  {}", hex::encode(k.secret));
                match &follow {
                    Some(f) => println!("follows {f} (drop copy: read-only, every execution of these accounts)"),
                    None => println!("account {account}{}", if admin { " (admin)" } else { "" }),
                }
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
                    .map(|k| json!({"id": format!("{:016x}", k.id), "account": k.account, "admin": k.admin, "role": k.role_name(), "follows": k.drop_copy.as_ref().map(|f| f.to_string()), "revoked": k.revoked, "created": k.created, "label": k.label}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for k in &store.keys {
                    println!(
                        "{:016x} account {:<8} {:<6} {:<7} created {} {}",
                        k.id,
                        k.drop_copy.as_ref().map_or(k.account.to_string(), |f| f.to_string()),
                        k.role_name(),
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
