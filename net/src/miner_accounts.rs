//! Ledger accounts for miners: the first valid authorize of a payout
//! address gives it an account in the engine's ledger
//! (`../shared/DESIGN.md`: a miner is its payout address).
//!
//! One thread owns the mapping address → account. A new address gets the
//! next account number, is recorded (`miner_account`, kind `0x0330`,
//! synced) and then created in the engine by an admin command
//! (`CreateAccount`) over the binary order protocol, the way every other
//! admin client reaches the engine; the engine journals and applies it
//! like any command. An account the engine already has
//! (`AccountExists`) counts as created. If the engine cannot be reached,
//! the creations wait and are retried each second. Once the engine has
//! answered for an account (`Done` or `AccountExists`), the registry
//! records that too (`miner_account_created`, kind `0x0331`, not synced:
//! losing it costs one harmless resend). At start every recorded account
//! without that confirmation is sent again, so a crash between the record
//! and the command loses nothing, and a pool with a million miners does
//! not resend a million commands each time it starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otedama_journal::{Journal, Options, Reader, ReaderOptions, kinds};

use crate::client::Client;
use crate::wire::{self, ServerMsg};

pub const MINER_ACCOUNT_VERSION: u16 = 1;
pub const MINER_ACCOUNT_CREATED_VERSION: u16 = 1;
/// `Reject::AccountExists` as the engine sends it.
const ACCOUNT_EXISTS: u16 = otedama_engine::Reject::AccountExists as u16;

#[derive(Debug, Clone)]
pub struct MinerAccountsConfig {
    /// The registry's journal (`miners`).
    pub journal_dir: PathBuf,
    pub journal: Options,
    /// Account numbers handed out from here up, below `last_account`.
    pub first_account: u32,
    pub accounts_max: u32,
    /// The engine's order-entry address and an admin key for it.
    pub gateway: SocketAddr,
    pub key: (u64, [u8; 32]),
    /// New accounts per second at most (valid addresses cost an attacker
    /// nothing; this bounds how fast they can fill the ledger).
    pub max_new_per_sec: u32,
}

/// Encodes a `miner_account` record: account (u32 LE), address length
/// (u8), address (UTF-8).
pub fn encode_record(account: u32, address: &str) -> Vec<u8> {
    let a = &address.as_bytes()[..address.len().min(255)];
    let mut b = Vec::with_capacity(5 + a.len());
    b.extend_from_slice(&account.to_le_bytes());
    b.push(a.len() as u8);
    b.extend_from_slice(a);
    b
}

/// Encodes a `miner_account_created` record: the accounts the engine
/// confirmed, each a u32 LE (at least one).
pub fn encode_created(accounts: &[u32]) -> Vec<u8> {
    accounts.iter().flat_map(|a| a.to_le_bytes()).collect()
}

pub fn decode_created(p: &[u8]) -> Option<Vec<u32>> {
    if p.is_empty() || !p.len().is_multiple_of(4) {
        return None;
    }
    Some(p.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

pub fn decode_record(p: &[u8]) -> Option<(u32, String)> {
    let account = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let n = *p.get(4)? as usize;
    if p.len() != 5 + n {
        return None;
    }
    Some((account, String::from_utf8(p[5..].to_vec()).ok()?))
}

pub struct MinerAccounts {
    tx: mpsc::Sender<String>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl MinerAccounts {
    /// Replays the registry's journal and starts its thread.
    pub fn start(cfg: MinerAccountsConfig) -> Result<MinerAccounts, String> {
        let dir = cfg.journal_dir.clone();
        let mut map: BTreeMap<String, u32> = BTreeMap::new();
        let mut created = std::collections::BTreeSet::new();
        let mut next = cfg.first_account;
        if dir.exists() {
            let mut r = Reader::open(&dir, 0, ReaderOptions::default()).map_err(|e| format!("{}: {e}", dir.display()))?;
            while let Some(rec) = r.try_next().map_err(|e| format!("{}: {e}", dir.display()))? {
                match rec.kind {
                    kinds::MINER_ACCOUNT => {
                        let (account, address) =
                            decode_record(rec.payload).ok_or_else(|| format!("{}: bad miner_account record {}", dir.display(), rec.seq))?;
                        next = next.max(account + 1);
                        map.insert(address, account);
                    }
                    kinds::MINER_ACCOUNT_CREATED => {
                        let accounts = decode_created(rec.payload)
                            .ok_or_else(|| format!("{}: bad miner_account_created record {}", dir.display(), rec.seq))?;
                        created.extend(accounts);
                    }
                    _ => {}
                }
            }
        }
        // Every recorded account the engine has not confirmed is made sure of.
        let pending: Vec<u32> = map.values().copied().filter(|a| !created.contains(a)).collect();
        let journal = Journal::open(&dir, cfg.journal.clone()).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("miner-accounts".into())
            .spawn(move || run(cfg, journal, map, next, pending, rx))
            .map_err(|e| e.to_string())?;
        Ok(MinerAccounts { tx, handle: Some(handle) })
    }

    /// Where the Stratum shards send each newly authorized address.
    pub fn sender(&self) -> mpsc::Sender<String> {
        self.tx.clone()
    }

    /// Stops once every sender is gone (the Stratum server stopped) or
    /// now, if it is; returns the thread's outcome.
    pub fn stop(mut self) -> Result<(), String> {
        drop(self.tx);
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the miner accounts thread panicked".into()),
            None => Ok(()),
        }
    }
}

fn run(
    cfg: MinerAccountsConfig,
    mut journal: Journal,
    mut map: BTreeMap<String, u32>,
    mut next: u32,
    mut pending: Vec<u32>,
    rx: mpsc::Receiver<String>,
) -> Result<(), String> {
    let mut client: Option<Client> = None;
    let mut last_try = Instant::now() - Duration::from_secs(10);
    let (mut window, mut in_window) = (Instant::now(), 0u32);
    tracing::info!(miners = map.len(), unconfirmed = pending.len(), next, "miner accounts loaded");
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(if pending.is_empty() { 1000 } else { 100 })) {
            Ok(a) => Some(a),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for address in first.into_iter().chain(rx.try_iter()) {
            if map.contains_key(&address) {
                continue;
            }
            if window.elapsed() >= Duration::from_secs(1) {
                (window, in_window) = (Instant::now(), 0);
            }
            if in_window >= cfg.max_new_per_sec {
                tracing::warn!(%address, "new miner accounts above the rate limit: this one waits for its next authorize");
                continue;
            }
            if next >= cfg.accounts_max {
                tracing::error!(%address, accounts_max = cfg.accounts_max, "no ledger account left for a new miner");
                continue;
            }
            let account = next;
            journal
                .append(kinds::MINER_ACCOUNT, MINER_ACCOUNT_VERSION, otedama_journal::now_ns(), &encode_record(account, &address))
                .and_then(|_| journal.sync())
                .map_err(|e| format!("miners journal: {e}"))?;
            next += 1;
            in_window += 1;
            tracing::info!(%address, account, "new miner: ledger account assigned");
            map.insert(address, account);
            pending.push(account);
        }
        if !pending.is_empty() && last_try.elapsed() >= Duration::from_secs(1) {
            last_try = Instant::now();
            match create(&cfg, &mut client, &pending) {
                Ok(done) => {
                    pending.clear();
                    confirm(&mut journal, &done)?;
                }
                Err(e) => {
                    client = None;
                    tracing::warn!(error = %e, waiting = pending.len(), "could not create miner accounts in the engine yet; retrying");
                }
            }
        }
    }
    if !pending.is_empty()
        && let Ok(done) = create(&cfg, &mut client, &pending)
    {
        confirm(&mut journal, &done)?;
    }
    journal.close().map_err(|e| format!("closing the miners journal: {e}"))
}

/// Records that the engine has `accounts` (nothing if empty). Not synced:
/// a confirmation lost to a crash only means one more `CreateAccount`,
/// answered `AccountExists`, at the next start.
fn confirm(journal: &mut Journal, accounts: &[u32]) -> Result<(), String> {
    // Bounded records: a journal record holds any size, but a confirmation
    // of a whole backlog stays a few KiB each.
    for chunk in accounts.chunks(1024) {
        journal
            .append(kinds::MINER_ACCOUNT_CREATED, MINER_ACCOUNT_CREATED_VERSION, otedama_journal::now_ns(), &encode_created(chunk))
            .map_err(|e| format!("miners journal: {e}"))?;
    }
    Ok(())
}

/// Sends `CreateAccount` for each account and waits for every answer;
/// returns the accounts the engine has now (created, or there already).
fn create(cfg: &MinerAccountsConfig, client: &mut Option<Client>, accounts: &[u32]) -> Result<Vec<u32>, String> {
    if client.is_none() {
        *client = Some(Client::login(cfg.gateway, cfg.key.0, cfg.key.1).map_err(|e| format!("login to {}: {e}", cfg.gateway))?);
    }
    let c = client.as_mut().expect("just set");
    let mut waiting = BTreeMap::new();
    for &account in accounts {
        let cs = c.take_client_seq();
        c.queue(|b| wire::CreateAccount { client_seq: cs, account }.push(b));
        waiting.insert(cs, account);
    }
    c.flush().map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(10);
    let mut done = Vec::with_capacity(accounts.len());
    while !waiting.is_empty() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{} account creations unanswered", waiting.len()));
        }
        match c.recv_timeout(left).map_err(|e| e.to_string())? {
            Some(ServerMsg::Done(d)) => done.extend(waiting.remove(&d.client_seq)),
            Some(ServerMsg::Rejected(r)) if r.reason == ACCOUNT_EXISTS => done.extend(waiting.remove(&r.client_seq)),
            Some(ServerMsg::Rejected(r)) => {
                if let Some(a) = waiting.remove(&r.client_seq) {
                    tracing::error!(account = a, reason = r.reason, "the engine refused a miner account");
                }
            }
            Some(ServerMsg::Goodbye(g)) => return Err(format!("the engine said goodbye ({:?})", g.reason)),
            _ => {}
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let b = encode_record(10_007, "bcrt1qexample");
        assert_eq!(decode_record(&b), Some((10_007, "bcrt1qexample".to_string())));
        assert_eq!(decode_record(&b[..b.len() - 1]), None);
        let c = encode_created(&[10_000, 10_001, u32::MAX]);
        assert_eq!(c.len(), 12);
        assert_eq!(decode_created(&c), Some(vec![10_000, 10_001, u32::MAX]));
        assert_eq!(decode_created(&c[..11]), None);
        assert_eq!(decode_created(&[]), None);
    }
}
