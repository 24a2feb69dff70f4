//! Clients of bitcoind-dialect nodes (litecoind, bitcoind, the devnet):
//! JSON-RPC over HTTP with basic auth, `getblocktemplate` with the rules
//! Litecoin needs, long polling, and block submission to every node at
//! once.
//!
//! Blocking on purpose: the template task and block submission run on
//! threads of their own, never on an I/O shard.

use otedama_engine::chain::template::{ReplyError, Template};
use serde_json::{Value, json};
use std::time::Duration;

/// Largest reply read from a node: a 4 MB-weight block's template is
/// about 8 MB of hex.
pub const MAX_REPLY: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {url}: unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("node {url}: {method} failed with code {code}: {message}")]
    Rpc { url: String, method: String, code: i64, message: String },
    #[error("node {url}: {method}: unexpected answer: {detail}")]
    Protocol { url: String, method: String, detail: String },
}

impl NodeError {
    /// The node answered but is not ready to give work: no peers
    /// (code -9) or in initial block download (-10).
    pub fn is_not_ready(&self) -> bool {
        matches!(self, NodeError::Rpc { code: -9 | -10, .. })
    }
}

/// One node: `http://USER:PASS@HOST:PORT`.
#[derive(Clone, Debug)]
pub struct Node {
    url: String,
    endpoint: String,
    auth: Option<String>,
    agent: ureq::Agent,
}

/// What `submitblock` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// `null`: accepted.
    Accepted,
    /// `"duplicate"`: the node has it already.
    Duplicate,
    /// `"inconclusive"`: valid but not on the node's best chain (yet).
    Inconclusive,
    /// Any other reason (`"high-hash"`, `"bad-txnmrklroot"`, …).
    Rejected(String),
}

impl Node {
    /// Parses `http://USER:PASS@HOST:PORT[/path]`.
    pub fn new(url: &str) -> Result<Node, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// node URLs are supported"))?;
        let (auth, host) = match rest.rsplit_once('@') {
            Some((cred, host)) => (Some(cred.to_string()), host),
            None => (None, rest),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(3)).build();
        let shown = match &auth {
            Some(a) => url.replacen(a.as_str(), "***", 1),
            None => url.to_string(),
        };
        Ok(Node { url: shown, endpoint: format!("http://{host}"), auth, agent })
    }

    /// The URL with the password hidden, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One JSON-RPC call; `timeout` bounds the whole exchange (long polls
    /// pass minutes).
    pub fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, NodeError> {
        let body = json!({"jsonrpc": "1.0", "id": "otedama", "method": method, "params": params});
        let mut req = self.agent.post(&self.endpoint).timeout(timeout);
        if let Some(a) = &self.auth {
            req = req.set("Authorization", &format!("Basic {}", base64(a.as_bytes())));
        }
        let reply = match req.send_json(body) {
            Ok(r) => r,
            // bitcoind answers RPC errors with HTTP 500 and a JSON body.
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(NodeError::Unreachable { url: self.url.clone(), reason: e.to_string() }),
        };
        let v: Value =
            reply.into_json().map_err(|e| NodeError::Protocol { url: self.url.clone(), method: method.into(), detail: e.to_string() })?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(NodeError::Rpc {
                url: self.url.clone(),
                method: method.into(),
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or("").into(),
            });
        }
        Ok(v["result"].clone())
    }

    /// `getblocktemplate` with the segwit and MWEB rules (Litecoin refuses
    /// `segwit` alone); with `longpollid`, waits until the node has new
    /// work or `timeout` passes.
    pub fn block_template(&self, longpollid: Option<&str>, timeout: Duration) -> Result<Template<'static>, NodeError> {
        let mut req = json!({"rules": ["mweb", "segwit"]});
        if let Some(id) = longpollid {
            req["longpollid"] = json!(id);
        }
        let v = self.call("getblocktemplate", json!([req]), timeout)?;
        // Owned strings (the Value's), so `Template<'static>`; `from_value`
        // wants `DeserializeOwned`, which a borrowing type is not.
        <Template<'static> as serde::Deserialize>::deserialize(v).map_err(|e| NodeError::Protocol {
            url: self.url.clone(),
            method: "getblocktemplate".into(),
            detail: e.to_string(),
        })
    }

    /// `getblocktemplate` as the node's raw reply text (the whole JSON-RPC
    /// envelope), for parsing with [`Template::from_reply`] without an
    /// intermediate `Value` of the template's megabytes.
    pub fn block_template_text(&self, longpollid: Option<&str>, timeout: Duration) -> Result<String, NodeError> {
        let mut req = json!({"rules": ["mweb", "segwit"]});
        if let Some(id) = longpollid {
            req["longpollid"] = json!(id);
        }
        let body = json!({"jsonrpc": "1.0", "id": "otedama", "method": "getblocktemplate", "params": [req]});
        let mut http = self.agent.post(&self.endpoint).timeout(timeout);
        if let Some(a) = &self.auth {
            http = http.set("Authorization", &format!("Basic {}", base64(a.as_bytes())));
        }
        let reply = match http.send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(NodeError::Unreachable { url: self.url.clone(), reason: e.to_string() }),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(reply.into_reader(), MAX_REPLY as u64 + 1), &mut text)
            .map_err(|e| NodeError::Unreachable { url: self.url.clone(), reason: e.to_string() })?;
        if text.len() > MAX_REPLY {
            return Err(NodeError::Protocol {
                url: self.url.clone(),
                method: "getblocktemplate".into(),
                detail: format!("reply larger than {MAX_REPLY} bytes"),
            });
        }
        Ok(text)
    }

    /// Parses a [`Node::block_template_text`] reply.
    pub fn parse_template<'t>(&self, text: &'t str) -> Result<Template<'t>, NodeError> {
        Template::from_reply(text).map_err(|e| match e {
            ReplyError::Rpc { code, message } => NodeError::Rpc { url: self.url.clone(), method: "getblocktemplate".into(), code, message },
            ReplyError::Json(detail) => NodeError::Protocol { url: self.url.clone(), method: "getblocktemplate".into(), detail },
        })
    }

    pub fn submit_block(&self, block_hex: &str) -> Result<Submitted, NodeError> {
        let v = self.call("submitblock", json!([block_hex]), Duration::from_secs(30))?;
        Ok(match v.as_str() {
            None => Submitted::Accepted,
            Some("duplicate") => Submitted::Duplicate,
            Some("inconclusive") => Submitted::Inconclusive,
            Some(other) => Submitted::Rejected(other.to_string()),
        })
    }

    pub fn best_block_hash(&self) -> Result<String, NodeError> {
        let v = self.call("getbestblockhash", json!([]), Duration::from_secs(10))?;
        v.as_str().map(str::to_string).ok_or_else(|| NodeError::Protocol {
            url: self.url.clone(),
            method: "getbestblockhash".into(),
            detail: v.to_string(),
        })
    }
}

impl Node {
    /// `submitblock` for raw block bytes, written straight to a socket:
    /// the hex goes directly into the request buffer (no 2 MB JSON value
    /// through serde for a full block), and the instant the last byte was
    /// written is returned beside the answer, which is what block
    /// submission latency is measured to.
    pub fn submit_block_bytes(&self, block: &[u8]) -> Result<(Submitted, std::time::Instant), NodeError> {
        use std::io::{Read, Write};
        let unreachable = |e: std::io::Error| NodeError::Unreachable { url: self.url.clone(), reason: e.to_string() };
        let host = self.endpoint.trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host);
        let head = br#"{"jsonrpc":"1.0","id":"otedama","method":"submitblock","params":[""#;
        let tail = br#""]}"#;
        let body_len = head.len() + 2 * block.len() + tail.len();
        let mut req = Vec::with_capacity(body_len + 256);
        req.extend_from_slice(
            format!(
                "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {body_len}\r\n"
            )
            .as_bytes(),
        );
        if let Some(a) = &self.auth {
            req.extend_from_slice(format!("Authorization: Basic {}\r\n", base64(a.as_bytes())).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(head);
        let at = req.len();
        req.resize(at + 2 * block.len(), 0);
        faster_hex::hex_encode(block, &mut req[at..]).map_err(|e| unreachable(std::io::Error::other(e.to_string())))?;
        req.extend_from_slice(tail);
        use std::net::ToSocketAddrs;
        // Every address the name resolves to, in order (`localhost` may
        // give ::1 first while the node listens on 127.0.0.1).
        let mut last = std::io::Error::other(format!("{host}: no address"));
        let mut sock = None;
        for addr in host.to_socket_addrs().map_err(unreachable)? {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut sock = sock.ok_or_else(|| unreachable(last))?;
        sock.set_nodelay(true).map_err(unreachable)?;
        sock.write_all(&req).map_err(unreachable)?;
        let written = std::time::Instant::now();
        sock.set_read_timeout(Some(Duration::from_secs(60))).map_err(unreachable)?;
        let mut reply = Vec::new();
        sock.read_to_end(&mut reply).map_err(unreachable)?;
        let text = String::from_utf8_lossy(&reply);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let protocol = |detail: String| NodeError::Protocol { url: self.url.clone(), method: "submitblock".into(), detail };
        let v: Value = serde_json::from_str(body.trim()).map_err(|e| protocol(format!("{e}: {body:.200}")))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(NodeError::Rpc {
                url: self.url.clone(),
                method: "submitblock".into(),
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or("").into(),
            });
        }
        let answer = match v["result"].as_str() {
            None => Submitted::Accepted,
            Some("duplicate") => Submitted::Duplicate,
            Some("inconclusive") => Submitted::Inconclusive,
            Some(other) => Submitted::Rejected(other.to_string()),
        };
        Ok((answer, written))
    }
}

/// Submits `block` to every node at once (one thread each) and returns
/// each node's answer in order. Whether the block landed is decided by the
/// answers together with the nodes' tips.
pub fn submit_everywhere(nodes: &[Node], block: &[u8]) -> Vec<Result<Submitted, NodeError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(|| n.submit_block_bytes(block).map(|(a, _)| a))).collect();
        handles.into_iter().map(|h| h.join().expect("submit thread")).collect()
    })
}

/// What became of a submitted block.
#[derive(Debug)]
pub struct Landing {
    /// Each node's answer to `submitblock`, in order.
    pub answers: Vec<Result<Submitted, NodeError>>,
    /// The nodes whose active chain holds the block when we stopped
    /// waiting.
    pub on_chain: Vec<usize>,
}

impl Landing {
    /// Whether the block is on at least one node's active chain.
    pub fn landed(&self) -> bool {
        !self.on_chain.is_empty()
    }
}

/// Submits `block` (whose id, display order, is `id`) to every node at
/// once, then decides whether it landed: an answer alone is not enough
/// (`inconclusive` is valid-but-not-best, `duplicate` may be a side
/// branch), so each reachable node is asked whether its active chain holds
/// the block (`getblockheader` with confirmations > 0), for up to `wait`.
pub fn submit_and_confirm(nodes: &[Node], block: &[u8], id: &str, wait: Duration) -> Landing {
    let answers = submit_everywhere(nodes, block);
    let deadline = std::time::Instant::now() + wait;
    let mut on_chain = Vec::new();
    loop {
        on_chain.clear();
        let mut reachable = 0;
        for (i, n) in nodes.iter().enumerate() {
            match n.call("getblockheader", json!([id]), Duration::from_secs(5)) {
                Ok(h) => {
                    reachable += 1;
                    if h["confirmations"].as_i64().unwrap_or(-1) > 0 {
                        on_chain.push(i);
                    }
                }
                Err(NodeError::Unreachable { .. }) => {}
                // Not known (yet): -5.
                Err(_) => reachable += 1,
            }
        }
        if on_chain.len() == reachable || std::time::Instant::now() >= deadline {
            return Landing { answers, on_chain };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first node that gives a template, in order (failover).
pub fn template_from_any(nodes: &[Node], timeout: Duration) -> Result<(usize, Template<'static>), Vec<NodeError>> {
    let mut errors = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        match n.block_template(None, timeout) {
            Ok(t) => return Ok((i, t)),
            Err(e) => errors.push(e),
        }
    }
    Err(errors)
}

pub(crate) fn base64(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}
