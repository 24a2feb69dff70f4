//! The embedded devnet, served the way a real node is reached: a
//! bitcoind-dialect JSON-RPC over HTTP on loopback, with a cookie for
//! basic auth (`<dir>/.cookie`, `__cookie__:<hex>`, mode 0600, as bitcoind
//! writes it). The template task, the cold path and outside tools
//! (`curl`, `litecoin-cli -rpcport`) use it exactly as they use litecoind.
//!
//! Methods: `getblocktemplate` (with `longpollid`: answered when the tip
//! changes, or after `longpoll_max` with the same work), `submitblock`,
//! `getblockcount`, `getbestblockhash`, `getblockhash`, `getblockheader`,
//! `getblock`, `getblockchaininfo`, `getmininginfo`. Requests may be
//! batched (a JSON array).
//!
//! Every accepted block is appended to the devnet's journal (kind
//! `devnet_block`, the block's bytes) and synced before `submitblock`
//! answers; at start the chain is rebuilt by submitting the journaled
//! blocks again, each of which must pass every check a second time.
//!
//! One thread serves everything: a devnet is one chain advancing a few
//! times a minute, and a long poll waits without holding a thread (the
//! request is parked and answered from the same loop).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiny_http::{Header, Request, Response, Server};

use otedama_engine::chain::devnet::{self, Devnet, Reject};
use otedama_engine::chain::{decode_hex, encode_hex, from_display_hex, to_display_hex};
use otedama_hashers::{Algorithm, Target};
use otedama_journal::{Journal, JournalError, Reader, ReaderOptions, kinds};

use crate::node::base64;

/// Largest request body accepted (a devnet block is a few hundred bytes;
/// anything near this is hostile).
pub const MAX_BODY: usize = 1 << 20;
/// Requests in one batch.
pub const MAX_BATCH: usize = 100;
/// Long polls parked at once; more are answered at once.
pub const MAX_WAITERS: usize = 1024;

#[derive(Clone, Debug)]
pub struct DevnetRpcConfig {
    pub listen: std::net::SocketAddr,
    pub algorithm: Algorithm,
    /// Holds the devnet's journal and its cookie.
    pub dir: PathBuf,
    pub journal: otedama_journal::Options,
    /// A long poll whose tip does not change is answered after this long
    /// (with the same `longpollid`, so the client asks again).
    pub longpoll_max: Duration,
    /// Offer long polling (`longpollid` in templates). Off, the devnet
    /// behaves like a node without it: clients must poll.
    pub longpoll: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DevnetRpcError {
    #[error("devnet RPC: cannot listen on {addr}: {reason}")]
    Bind { addr: std::net::SocketAddr, reason: String },
    #[error("devnet journal in {dir}: {source}")]
    Journal { dir: PathBuf, source: JournalError },
    #[error("devnet journal record {seq} does not replay: {reason}")]
    Replay { seq: u64, reason: String },
    #[error("devnet cookie {path}: {source}")]
    Cookie { path: PathBuf, source: std::io::Error },
}

/// The running server.
pub struct DevnetRpc {
    addr: std::net::SocketAddr,
    credentials: String,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    height: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<Result<(), JournalError>>>,
}

/// The cookie file inside `dir`.
pub fn cookie_path(dir: &Path) -> PathBuf {
    dir.join(".cookie")
}

struct Waiter {
    request: Request,
    id: Value,
    deadline: Instant,
}

struct State {
    devnet: Devnet,
    journal: Journal,
    waiters: Vec<Waiter>,
    longpoll_max: Duration,
    longpoll: bool,
    authorization: String,
}

enum Answer {
    Now(Result<Value, (i64, String)>),
    /// A long poll on the current tip: park it.
    Wait,
}

fn unix_now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

impl DevnetRpc {
    /// Opens (or creates) the devnet in `cfg.dir`, replays its blocks and
    /// starts serving.
    pub fn start(cfg: DevnetRpcConfig) -> Result<DevnetRpc, DevnetRpcError> {
        let jerr = |source| DevnetRpcError::Journal { dir: cfg.dir.clone(), source };
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| jerr(JournalError::Io { op: "create_dir_all", path: cfg.dir.display().to_string(), source: e }))?;
        let journal = Journal::open(&cfg.dir, cfg.journal.clone()).map_err(jerr)?;
        let mut devnet = Devnet::new(cfg.algorithm, devnet::GENESIS_TIME);
        let rep = journal.open_report().clone();
        if rep.next_seq > rep.first_seq {
            let mut r = Reader::open(&cfg.dir, rep.first_seq, ReaderOptions::default()).map_err(jerr)?;
            while let Some(rec) = r.try_next().map_err(jerr)? {
                if rec.kind != kinds::DEVNET_BLOCK {
                    continue;
                }
                devnet.submit(rec.payload).map_err(|e| DevnetRpcError::Replay { seq: rec.seq, reason: e.to_string() })?;
            }
        }
        let secret: [u8; 32] = rand::random();
        let credentials = format!("__cookie__:{}", hex::encode(secret));
        let path = cookie_path(&cfg.dir);
        write_private(&path, &credentials).map_err(|source| DevnetRpcError::Cookie { path: path.clone(), source })?;

        let server = Server::http(cfg.listen).map_err(|e| DevnetRpcError::Bind { addr: cfg.listen, reason: e.to_string() })?;
        let addr = server.server_addr().to_ip().ok_or(DevnetRpcError::Bind { addr: cfg.listen, reason: "not an IP socket".into() })?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let height = Arc::new(AtomicU32::new(devnet.height()));
        tracing::info!(
            chain = "devnet",
            algorithm = ?cfg.algorithm,
            height = devnet.height(),
            tip = %to_display_hex(&devnet.tip().id),
            %addr,
            cookie = %path.display(),
            "devnet serving JSON-RPC"
        );
        let mut state = State {
            devnet,
            journal,
            waiters: Vec::new(),
            longpoll_max: cfg.longpoll_max,
            longpoll: cfg.longpoll,
            authorization: format!("Basic {}", base64(credentials.as_bytes())),
        };
        let thread = {
            let (server, stop, height) = (server.clone(), stop.clone(), height.clone());
            std::thread::Builder::new()
                .name("devnet-rpc".into())
                .spawn(move || state.serve(&server, &stop, &height))
                .expect("spawning the devnet thread")
        };
        Ok(DevnetRpc { addr, credentials, server, stop, height, thread: Some(thread) })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://__cookie__:SECRET@ADDR`, for [`crate::node::Node::new`].
    pub fn url(&self) -> String {
        format!("http://{}@{}", self.credentials, self.addr)
    }

    pub fn height(&self) -> u32 {
        self.height.load(Ordering::Acquire)
    }

    /// Stops serving and closes the journal (everything accepted was
    /// synced already).
    pub fn stop(mut self) -> Result<(), JournalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), JournalError> {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        match self.thread.take() {
            Some(t) => t.join().expect("devnet thread"),
            None => Ok(()),
        }
    }
}

impl Drop for DevnetRpc {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the devnet journal");
        }
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn json_header() -> Header {
    Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("static header")
}

fn reply(request: Request, status: u16, body: &Value) {
    let r = Response::from_string(body.to_string()).with_status_code(status).with_header(json_header());
    // The client may have gone; nothing else depends on this answer.
    let _ = request.respond(r);
}

fn rpc_body(id: &Value, result: Result<Value, (i64, String)>) -> (u16, Value) {
    match result {
        Ok(v) => (200, json!({"result": v, "error": null, "id": id})),
        // bitcoind: 404 for an unknown method, 500 for every other error.
        Err((code, message)) => {
            (if code == -32601 { 404 } else { 500 }, json!({"result": null, "error": {"code": code, "message": message}, "id": id}))
        }
    }
}

impl State {
    fn serve(&mut self, server: &Server, stop: &AtomicBool, height: &AtomicU32) -> Result<(), JournalError> {
        while !stop.load(Ordering::Acquire) {
            let wait = self
                .waiters
                .iter()
                .map(|w| w.deadline)
                .min()
                .map_or(Duration::from_millis(200), |d| d.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
            match server.recv_timeout(wait) {
                Ok(Some(req)) => {
                    let before = self.devnet.height();
                    self.handle(req)?;
                    if self.devnet.height() != before {
                        height.store(self.devnet.height(), Ordering::Release);
                        self.answer_waiters(|_| true);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "devnet RPC: accept failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let now = Instant::now();
            self.answer_waiters(|w| w.deadline <= now);
        }
        // Parked long polls see their connection close.
        self.waiters.clear();
        self.journal.sync()?;
        Ok(())
    }

    fn answer_waiters(&mut self, due: impl Fn(&Waiter) -> bool) {
        if self.waiters.is_empty() {
            return;
        }
        let template = self.template();
        let (due, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters).into_iter().partition(due);
        self.waiters = keep;
        for w in due {
            let (status, body) = rpc_body(&w.id, Ok(template.clone()));
            reply(w.request, status, &body);
        }
    }

    fn template(&self) -> Value {
        let mut v = serde_json::to_value(self.devnet.template(unix_now())).expect("template serialises");
        v["mutable"] = json!(["time", "transactions", "prevblock"]);
        v["noncerange"] = json!("00000000ffffffff");
        v["capabilities"] = json!(["proposal"]);
        if !self.longpoll
            && let Some(o) = v.as_object_mut()
        {
            o.remove("longpollid");
        }
        v
    }

    fn handle(&mut self, mut req: Request) -> Result<(), JournalError> {
        let authorized = req.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str() == self.authorization.as_str());
        if !authorized {
            let r = Response::from_string("")
                .with_status_code(401)
                .with_header(Header::from_bytes(&b"WWW-Authenticate"[..], &b"Basic realm=\"jsonrpc\""[..]).expect("static header"));
            let _ = req.respond(r);
            return Ok(());
        }
        if *req.method() != tiny_http::Method::Post {
            let _ = req.respond(Response::from_string("JSONRPC server handles only POST requests").with_status_code(405));
            return Ok(());
        }
        if req.body_length().is_some_and(|n| n > MAX_BODY) {
            let _ = req.respond(Response::from_string("request body too large").with_status_code(413));
            return Ok(());
        }
        let mut body = Vec::new();
        let read = std::io::Read::read_to_end(&mut std::io::Read::take(req.as_reader(), MAX_BODY as u64 + 1), &mut body);
        if read.is_err() || body.len() > MAX_BODY {
            let _ = req.respond(Response::from_string("request body too large or unreadable").with_status_code(413));
            return Ok(());
        }
        let parsed: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let (status, b) = rpc_body(&Value::Null, Err((-32700, format!("Parse error: {e}"))));
                reply(req, status, &b);
                return Ok(());
            }
        };
        match parsed {
            Value::Array(calls) => {
                if calls.len() > MAX_BATCH {
                    let (status, b) = rpc_body(&Value::Null, Err((-32600, format!("batch of {} calls; at most {MAX_BATCH}", calls.len()))));
                    reply(req, status, &b);
                    return Ok(());
                }
                // A batch is answered at once (a long poll inside one is
                // answered without waiting).
                let mut out = Vec::with_capacity(calls.len());
                for c in &calls {
                    let id = c.get("id").cloned().unwrap_or(Value::Null);
                    let r = match self.call(c)? {
                        Answer::Now(r) => r,
                        Answer::Wait => Ok(self.template()),
                    };
                    out.push(rpc_body(&id, r).1);
                }
                reply(req, 200, &Value::Array(out));
            }
            call => {
                let id = call.get("id").cloned().unwrap_or(Value::Null);
                match self.call(&call)? {
                    Answer::Now(r) => {
                        let (status, b) = rpc_body(&id, r);
                        reply(req, status, &b);
                    }
                    Answer::Wait if self.waiters.len() < MAX_WAITERS => {
                        self.waiters.push(Waiter { request: req, id, deadline: Instant::now() + self.longpoll_max });
                    }
                    Answer::Wait => {
                        let (status, b) = rpc_body(&id, Ok(self.template()));
                        reply(req, status, &b);
                    }
                }
            }
        }
        Ok(())
    }

    fn call(&mut self, call: &Value) -> Result<Answer, JournalError> {
        let Some(method) = call.get("method").and_then(Value::as_str) else {
            return Ok(Answer::Now(Err((-32600, "Invalid Request: no method".into()))));
        };
        let params = call.get("params").cloned().unwrap_or(json!([]));
        let params = match params {
            Value::Array(a) => a,
            Value::Null => vec![],
            _ => return Ok(Answer::Now(Err((-32602, "params must be an array".into())))),
        };
        let p = |i: usize| params.get(i).unwrap_or(&Value::Null);
        let d = &self.devnet;
        let not_found = || Err((-5, "Block not found".to_string()));
        let by_hash = |v: &Value| v.as_str().and_then(from_display_hex).and_then(|id| d.height_of(&id));
        let r = match method {
            "getblocktemplate" => {
                let current = d.template(0).longpollid.unwrap_or_default();
                if self.longpoll && p(0).get("longpollid").and_then(Value::as_str) == Some(current.as_str()) {
                    return Ok(Answer::Wait);
                }
                Ok(self.template())
            }
            "submitblock" => {
                let Some(bytes) = p(0).as_str().and_then(decode_hex) else {
                    return Ok(Answer::Now(Err((-22, "Block decode failed".into()))));
                };
                match self.devnet.submit(&bytes) {
                    Ok(e) => {
                        // Durable before the node says yes.
                        self.journal.append(kinds::DEVNET_BLOCK, 1, otedama_journal::now_ns(), &bytes)?;
                        self.journal.sync()?;
                        tracing::info!(chain = "devnet", height = e.height, hash = %to_display_hex(&e.id), "devnet block accepted");
                        Ok(Value::Null)
                    }
                    Err(Reject::Duplicate) => Ok(json!("duplicate")),
                    Err(reason) => {
                        tracing::info!(chain = "devnet", %reason, "devnet block refused");
                        Ok(json!(reason.to_string()))
                    }
                }
            }
            "getblockcount" => Ok(json!(d.height())),
            "getbestblockhash" => Ok(json!(to_display_hex(&d.tip().id))),
            "getblockhash" => match p(0).as_u64().and_then(|h| u32::try_from(h).ok()).and_then(|h| d.block(h)) {
                Some(e) => Ok(json!(to_display_hex(&e.id))),
                None => Err((-8, "Block height out of range".into())),
            },
            "getblockheader" => match by_hash(p(0)) {
                None => not_found(),
                Some(h) => {
                    let e = d.block(h).expect("indexed");
                    if p(1).as_bool() == Some(false) { Ok(json!(encode_hex(&e.header))) } else { Ok(self.header_json(h)) }
                }
            },
            "getblock" => match by_hash(p(0)) {
                None => not_found(),
                Some(h) => {
                    let e = d.block(h).expect("indexed");
                    if p(1).as_u64() == Some(0) {
                        Ok(json!(encode_hex(&e.block)))
                    } else {
                        let mut v = self.header_json(h);
                        let txs: Vec<String> = otedama_engine::chain::block::parse(&e.block)
                            .map(|b| b.txs.iter().map(|t| to_display_hex(&t.txid)).collect())
                            .unwrap_or_default();
                        v["size"] = json!(e.block.len());
                        v["tx"] = json!(txs);
                        Ok(v)
                    }
                }
            },
            "getblockchaininfo" => Ok(json!({
                "chain": "devnet",
                "blocks": d.height(),
                "headers": d.height(),
                "bestblockhash": to_display_hex(&d.tip().id),
                "difficulty": self.difficulty(),
                "initialblockdownload": false,
                "verificationprogress": 1.0,
                "pow_algorithm": format!("{:?}", self.algorithm()).to_lowercase(),
            })),
            "getmininginfo" => Ok(json!({
                "blocks": d.height(),
                "difficulty": self.difficulty(),
                "chain": "devnet",
                "pooledtx": 0,
            })),
            other => Err((-32601, format!("Method not found: {other}"))),
        };
        Ok(Answer::Now(r))
    }

    fn algorithm(&self) -> Algorithm {
        self.devnet.algorithm()
    }

    fn difficulty(&self) -> f64 {
        let t = Target::from_compact(devnet::DEVNET_BITS).expect("devnet bits");
        t.difficulty(self.algorithm().family())
    }

    fn header_json(&self, h: u32) -> Value {
        let d = &self.devnet;
        let e = d.block(h).expect("indexed");
        let u32_at = |o: usize| u32::from_le_bytes(e.header[o..o + 4].try_into().unwrap());
        let mut prev = [0u8; 32];
        prev.copy_from_slice(&e.header[4..36]);
        let mut root = [0u8; 32];
        root.copy_from_slice(&e.header[36..68]);
        let mut v = json!({
            "hash": to_display_hex(&e.id),
            "confirmations": d.height() - h + 1,
            "height": h,
            "version": u32_at(0),
            "versionHex": format!("{:08x}", u32_at(0)),
            "merkleroot": to_display_hex(&root),
            "time": u32_at(68),
            "nonce": u32_at(76),
            "bits": format!("{:08x}", u32_at(72)),
            "difficulty": self.difficulty(),
            "chain": "devnet",
        });
        if h > 0 {
            v["previousblockhash"] = json!(to_display_hex(&prev));
        }
        if let Some(n) = d.block(h + 1) {
            v["nextblockhash"] = json!(to_display_hex(&n.id));
        }
        v
    }
}
