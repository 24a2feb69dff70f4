//! The credential checker: argon2id costs about 13 ms a key, so it runs on
//! its own thread, fed by one bounded ring per I/O shard. The key store is
//! reloaded when its file changes (`otedama keys add|revoke` take effect
//! without a restart; a revoked key's live session is not cut).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

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
    fn refresh(&mut self) {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == self.seen && self.seen.is_some() {
            return;
        }
        match KeyStore::load(&self.path) {
            Ok(k) => {
                tracing::info!(path = %self.path.display(), keys = k.keys.len(), "key store loaded");
                self.keys = k;
                self.seen = stamp;
            }
            // Keep the keys we had: a half-edited file must not lock everyone out.
            Err(e) => tracing::error!(error = %e, "key store unreadable; keeping the previous keys"),
        }
    }
}

pub(crate) fn run(
    path: PathBuf,
    mut reqs: Vec<Consumer<AuthReq>>,
    mut resps: Vec<Producer<AuthResp>>,
    wakers: Vec<Arc<Waker>>,
    stop: Arc<AtomicBool>,
) {
    let mut store = Store { path, seen: None, keys: KeyStore::default() };
    store.refresh();
    while !stop.load(Ordering::Relaxed) {
        let mut did = false;
        for (i, q) in reqs.iter_mut().enumerate() {
            while let Ok(req) = q.pop() {
                did = true;
                store.refresh();
                let ok = store.keys.verify(req.key_id, &req.secret).map(|k| {
                    let (role, follow) = match (&k.drop_copy, k.admin) {
                        (Some(f), _) => (Role::DropCopy, f.clone()),
                        (None, true) => (Role::Admin, Follow::All),
                        (None, false) => (Role::Trader, Follow::All),
                    };
                    Box::new(Binding { key_id: k.id, role, account: k.account, follow })
                });
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
        }
    }
}
