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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use otedama_net::client::Client;
use otedama_net::wire::EngineStats;

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

pub struct EngineLink {
    status: Arc<Mutex<EngineLinkStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the histogram is read.
const EVERY: Duration = Duration::from_secs(1);

impl EngineLink {
    pub fn start(cfg: EngineLinkConfig) -> std::io::Result<EngineLink> {
        let status = Arc::new(Mutex::new(EngineLinkStatus::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (status, stop) = (status.clone(), stop.clone());
            std::thread::Builder::new().name("engine-link".into()).spawn(move || run(cfg, status, stop))?
        };
        Ok(EngineLink { status, stop, thread: Some(thread) })
    }

    pub fn status_handle(&self) -> Arc<Mutex<EngineLinkStatus>> {
        self.status.clone()
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EngineLink {
    fn drop(&mut self) {
        self.halt();
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
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
