//! The credential checker: argon2id costs about 13 ms a key, so it runs on
//! its own thread, fed by one bounded ring per I/O shard. The key store is
//! reloaded when its file changes (`otedama keys add|revoke` take effect
//! without a restart; a revoked key's live session is not cut).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;
use rtrb::{Consumer, Producer};

use super::{ConnRef, Waker};
use crate::keys::{Follow, KeyStore};
use crate::sessions::{Binding, Role};

pub(crate) struct AuthReq {
    pub conn: ConnRef,
    pub key_id: u64,
    pub secret: [u8; 32],
}

pub(crate) struct AuthResp {
    pub conn: ConnRef,
    pub key_id: u64,
    /// The key's binding when the credentials are good.
    pub ok: Option<Box<Binding>>,
}

struct Store {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    keys: KeyStore,
}

impl Store {
    /// Reloads the store if its file changed; returns whether it did.
    fn refresh(&mut self) -> bool {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == self.seen && self.seen.is_some() {
            return false;
        }
        match KeyStore::load(&self.path) {
            Ok(k) => {
                tracing::info!(path = %self.path.display(), keys = k.keys.len(), "key store loaded");
                self.keys = k;
                self.seen = stamp;
                true
            }
            // Keep the keys we had: a half-edited file must not lock everyone out.
            Err(e) => {
                tracing::error!(error = %e, "key store unreadable; keeping the previous keys");
                false
            }
        }
    }
}

/// Every active key's binding.
fn bindings(keys: &KeyStore) -> impl Iterator<Item = Binding> + '_ {
    keys.keys.iter().filter(|k| !k.revoked).map(binding)
}

fn binding(k: &crate::keys::KeyEntry) -> Binding {
    let (role, follow) = match (&k.drop_copy, k.admin) {
        (Some(f), _) => (Role::DropCopy, f.clone()),
        (None, true) => (Role::Admin, Follow::All),
        (None, false) => (Role::Trader, Follow::All),
    };
    Binding { key_id: k.id, role, account: k.account, follow }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    path: PathBuf,
    mut reqs: Vec<Consumer<AuthReq>>,
    mut resps: Vec<Producer<AuthResp>>,
    wakers: Vec<Arc<Waker>>,
    registrations: Sender<Binding>,
    stop: Arc<AtomicBool>,
) {
    let mut store = Store { path, seen: None, keys: KeyStore::default() };
    // Keys handed to the engine so far: it numbers events for a key from
    // when it learns of it (start-up, or a reload that adds it). The engine
    // reads the channel before its rings on every pass, so a key is
    // registered before any login with it reaches the engine.
    let mut told = std::collections::BTreeSet::new();
    let mut tell = |keys: &KeyStore| {
        for b in bindings(keys) {
            if told.insert(b.key_id) {
                let _ = registrations.send(b);
            }
        }
    };
    store.refresh();
    tell(&store.keys);
    while !stop.load(Ordering::Relaxed) {
        let mut did = false;
        for (i, q) in reqs.iter_mut().enumerate() {
            while let Ok(req) = q.pop() {
                did = true;
                if store.refresh() {
                    tell(&store.keys);
                }
                let ok = store.keys.verify(req.key_id, &req.secret).map(|k| Box::new(binding(k)));
                // The shard keeps at most one check in flight per
                // connection and sizes this ring like the request ring,
                // so a push cannot fail; if it ever did, the connection's
                // login timeout closes it.
                let _ = resps[i].push(AuthResp { conn: req.conn, key_id: req.key_id, ok });
                wakers[i].wake_now();
            }
        }
        if !did {
            std::thread::park_timeout(Duration::from_millis(200));
            // Keys added while nobody logs in are registered too.
            if store.refresh() {
                tell(&store.keys);
            }
        }
    }
}
