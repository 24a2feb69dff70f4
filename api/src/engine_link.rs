//! The API's admin session with the engine, over the binary order-entry
//! protocol (`net/PROTOCOL.md`, the same Rust client the tools use).
//!
//! Today it reads the engine shard's service-time histogram every
//! second (which also keeps the session inside its heartbeat interval) for `/api/v1/status`; the commands later features send
//! (accounts, deposits, withdrawals on behalf of users) go over this same
//! session. It logs in again after any failure (1 s backoff) and reports
//! why it is not connected.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otedama_net::client::Client;
use otedama_net::wire::EngineStats;

use crate::worker::{Worker, sleep_unless_stopped};

/// Where the engine is and the admin key to log in with.
#[derive(Debug, Clone)]
pub struct EngineLinkConfig {
    pub addr: SocketAddr,
    pub key_id: u64,
    pub secret: [u8; 32],
}

#[derive(Debug, Clone, Default)]
pub struct EngineLinkStatus {
    pub connected: bool,
    pub error: Option<String>,
    /// The newest reading of the engine's service-time histogram (the
    /// window since the engine started).
    pub stats: Option<EngineStats>,
    pub logins: u64,
}

pub struct EngineLink(Worker<EngineLinkStatus>);

/// How often the histogram is read.
const EVERY: Duration = Duration::from_secs(1);

impl EngineLink {
    pub fn start(cfg: EngineLinkConfig) -> std::io::Result<EngineLink> {
        Worker::spawn("engine-link", move |status, stop| run(cfg, status, stop)).map(EngineLink)
    }

    pub fn status_handle(&self) -> Arc<Mutex<EngineLinkStatus>> {
        self.0.status_handle()
    }

    pub fn stop(self) {
        self.0.stop();
    }
}

fn run(cfg: EngineLinkConfig, status: Arc<Mutex<EngineLinkStatus>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let session = (|| -> Result<(), String> {
            let mut c = Client::login(cfg.addr, cfg.key_id, cfg.secret).map_err(|e| format!("login to {}: {e}", cfg.addr))?;
            c.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
            {
                let mut s = status.lock().expect("status lock");
                s.connected = true;
                s.error = None;
                s.logins += 1;
            }
            while !stop.load(Ordering::Relaxed) {
                let st = c.engine_stats(false).map_err(|e| format!("engine stats: {e}"))?;
                status.lock().expect("status lock").stats = Some(st);
                sleep_unless_stopped(EVERY, &stop);
            }
            Ok(())
        })();
        if let Err(e) = session {
            let mut s = status.lock().expect("status lock");
            if s.error.as_deref() != Some(&e) {
                tracing::warn!(error = %e, "admin session with the engine down; retrying every second");
            }
            s.connected = false;
            s.error = Some(e);
            drop(s);
            sleep_unless_stopped(Duration::from_secs(1), &stop);
        }
    }
}
