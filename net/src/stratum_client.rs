//! The miner's side of Stratum V1: what a miner makes of `mining.notify`
//! and `mining.set_difficulty`, and a blocking client that speaks the
//! protocol over TCP. `otedama mine`, the Stratum load generator and the
//! end-to-end tests use it; it rebuilds headers only from what the wire
//! carries, so it checks the pool's notify encoding as a real miner does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use otedama_engine::chain::{decode_hex, encode_hex, sha256d};
use otedama_hashers::{Family, Target};

/// A job as a miner holds it, from `mining.notify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinerJob {
    pub job_id: String,
    /// The previous block id in header order (the notify's words reversed back).
    pub prev: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

fn be_word(v: &Value, what: &str) -> Result<u32, String> {
    let s = v.as_str().ok_or_else(|| format!("{what} is not a string"))?;
    if s.len() != 8 {
        return Err(format!("{what} is not 8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| format!("{what} is not hex"))
}

fn hex(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    v.as_str().and_then(decode_hex).ok_or_else(|| format!("{what} is not hex"))
}

impl MinerJob {
    /// From the `params` of a `mining.notify`.
    pub fn from_notify(params: &Value) -> Result<MinerJob, String> {
        let p = params.as_array().filter(|p| p.len() >= 9).ok_or("mining.notify needs 9 parameters")?;
        let words = hex(&p[1], "prevhash")?;
        let prev: [u8; 32] = words.as_slice().try_into().map_err(|_| "prevhash is not 32 bytes")?;
        let mut header_order = [0u8; 32];
        for (o, w) in header_order.chunks_mut(4).zip(prev.chunks(4)) {
            o.copy_from_slice(&[w[3], w[2], w[1], w[0]]);
        }
        let branch = p[4]
            .as_array()
            .ok_or("merkle branch is not a list")?
            .iter()
            .map(|b| hex(b, "branch")?.as_slice().try_into().map_err(|_| "branch hash is not 32 bytes".to_string()))
            .collect::<Result<Vec<[u8; 32]>, String>>()?;
        Ok(MinerJob {
            job_id: p[0].as_str().ok_or("job id is not a string")?.to_string(),
            prev: header_order,
            coinb1: hex(&p[2], "coinb1")?,
            coinb2: hex(&p[3], "coinb2")?,
            branch,
            version: be_word(&p[5], "version")?,
            nbits: be_word(&p[6], "nbits")?,
            ntime: be_word(&p[7], "ntime")?,
            clean: p[8].as_bool().unwrap_or(false),
        })
    }

    /// The 80-byte header a miner hashes.
    pub fn header(&self, en1: &[u8], en2: &[u8], ntime: u32, nonce: u32, version: u32) -> [u8; 80] {
        let mut cb = Vec::with_capacity(self.coinb1.len() + en1.len() + en2.len() + self.coinb2.len());
        cb.extend_from_slice(&self.coinb1);
        cb.extend_from_slice(en1);
        cb.extend_from_slice(en2);
        cb.extend_from_slice(&self.coinb2);
        let root = self.branch.iter().fold(sha256d(&cb), |acc, h| {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&acc);
            b[32..].copy_from_slice(h);
            sha256d(&b)
        });
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prev);
        h[36..68].copy_from_slice(&root);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// The network target from nbits.
    pub fn network_target(&self) -> Option<Target> {
        Target::from_compact(self.nbits).ok()
    }
}

/// What the server sent.
#[derive(Clone, Debug)]
pub enum Message {
    /// An answer to request `id`: its result, or (code, message).
    Answer {
        id: u64,
        result: Result<Value, (i64, String)>,
    },
    Notify(MinerJob),
    SetDifficulty(f64),
    SetVersionMask(u32),
    SetExtranonce {
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    },
    Reconnect(Value),
    Other(Value),
}

/// Writes one request line with the next id; returns the id.
fn send_request(w: &mut TcpStream, next_id: &mut u64, method: &str, params: Value) -> std::io::Result<u64> {
    let id = *next_id;
    *next_id += 1;
    let mut line = json!({"id": id, "method": method, "params": params}).to_string();
    line.push('\n');
    w.write_all(line.as_bytes())?;
    Ok(id)
}

/// A blocking Stratum V1 client.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_id: u64,
    line: String,
}

impl Client {
    pub fn connect(addr: std::net::SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        Ok(Client { reader: BufReader::new(s.try_clone()?), writer: s, next_id: 1, line: String::new() })
    }

    /// Sends a request; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> std::io::Result<u64> {
        send_request(&mut self.writer, &mut self.next_id, method, params)
    }

    /// Sends raw bytes (tests of bad input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// The next message, waiting up to the read timeout. `Ok(None)`: the
    /// server closed the connection.
    pub fn read_message(&mut self) -> std::io::Result<Option<Message>> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(self.line.trim_end())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}: {:.200}", self.line)))?;
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        Ok(Some(match v.get("method").and_then(Value::as_str) {
            Some("mining.notify") => Message::Notify(MinerJob::from_notify(&v["params"]).map_err(bad)?),
            Some("mining.set_difficulty") => Message::SetDifficulty(v["params"][0].as_f64().ok_or_else(|| bad("difficulty".into()))?),
            Some("mining.set_version_mask") => Message::SetVersionMask(be_word(&v["params"][0], "mask").map_err(bad)?),
            Some("mining.set_extranonce") => Message::SetExtranonce {
                extranonce1: hex(&v["params"][0], "extranonce1").map_err(bad)?,
                extranonce2_size: v["params"][1].as_u64().unwrap_or(0) as usize,
            },
            Some("client.reconnect") => Message::Reconnect(v["params"].clone()),
            Some(_) => Message::Other(v),
            None => {
                let id = v["id"].as_u64().unwrap_or(0);
                let result = match v.get("error").filter(|e| !e.is_null()) {
                    Some(e) => Err((e[0].as_i64().unwrap_or(0), e[1].as_str().unwrap_or("").to_string())),
                    None => Ok(v["result"].clone()),
                };
                Message::Answer { id, result }
            }
        }))
    }
}

/// A miner's session: the handshake real ASICs make (`mining.configure`
/// with version rolling, `mining.subscribe`, `mining.authorize`), then the
/// server's messages read by a thread of their own so the caller can grind
/// between them. Keeps what the server said: extranonce1, extranonce2
/// size, difficulty, version mask and the newest job.
pub struct MinerSession {
    writer: TcpStream,
    rx: std::sync::mpsc::Receiver<std::io::Result<Message>>,
    next_id: u64,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub difficulty: f64,
    pub version_mask: u32,
    pub job: Option<MinerJob>,
    /// Set by `client.reconnect` or when the server closed the connection.
    pub ended: bool,
}

impl MinerSession {
    /// Connects and makes the handshake; `version_rolling` asks for BIP 310
    /// version rolling. Returns once authorized (a job may follow).
    pub fn connect(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        version_rolling: bool,
        timeout: Duration,
    ) -> std::io::Result<MinerSession> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nodelay(true)?;
        let (rs, ws) = (s.try_clone()?, s.try_clone()?);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("stratum-reader".into()).spawn(move || {
            let mut c = Client { reader: BufReader::new(rs), writer: ws, next_id: 0, line: String::new() };
            loop {
                match c.read_message() {
                    Ok(Some(m)) => {
                        if tx.send(Ok(m)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the pool closed the connection")));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
        let mut m = MinerSession {
            writer: s,
            rx,
            next_id: 1,
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            difficulty: 1.0,
            version_mask: 0,
            job: None,
            ended: false,
        };
        if version_rolling {
            let id = m.request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]),
            )?;
            let r = m.answer(id, timeout)?;
            if let Ok(v) = r
                && let Some(mask) = v.get("version-rolling.mask").and_then(Value::as_str).and_then(|h| u32::from_str_radix(h, 16).ok())
            {
                m.version_mask = mask;
            }
        }
        let id = m.request("mining.subscribe", json!(["otedama-mine/1"]))?;
        let sub = m.answer(id, timeout)?.map_err(|(c, e)| std::io::Error::other(format!("subscribe refused: {c} {e}")))?;
        m.extranonce1 = hex(&sub[1], "extranonce1").map_err(std::io::Error::other)?;
        m.extranonce2_size = sub[2].as_u64().unwrap_or(0) as usize;
        // Follow extranonce changes (`mining.set_extranonce`) rather than be
        // disconnected when the pool has to change ours; a pool without the
        // method answers with an error, which changes nothing.
        let id = m.request("mining.extranonce.subscribe", json!([]))?;
        m.answer(id, timeout)?.ok();
        let id = m.request("mining.authorize", json!([user, password]))?;
        match m.answer(id, timeout)? {
            Ok(Value::Bool(true)) => Ok(m),
            Ok(v) => Err(std::io::Error::other(format!("authorize refused: {v}"))),
            Err((c, e)) => Err(std::io::Error::other(format!("authorize refused: {c} {e}"))),
        }
    }

    /// Sends a request; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> std::io::Result<u64> {
        send_request(&mut self.writer, &mut self.next_id, method, params)
    }

    /// Applies what a server message says to the session's state.
    fn absorb(&mut self, m: &Message) {
        match m {
            Message::Notify(j) => self.job = Some(j.clone()),
            Message::SetDifficulty(d) => self.difficulty = *d,
            Message::SetVersionMask(v) => self.version_mask = *v,
            Message::SetExtranonce { extranonce1, extranonce2_size } => {
                self.extranonce1 = extranonce1.clone();
                self.extranonce2_size = *extranonce2_size;
                // Work built on the old extranonce is void.
                self.job = None;
            }
            Message::Reconnect(_) => self.ended = true,
            _ => {}
        }
    }

    /// The next server message within `timeout` (`Ok(None)`: none came).
    pub fn next_message(&mut self, timeout: Duration) -> std::io::Result<Option<Message>> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(m)) => {
                self.absorb(&m);
                Ok(Some(m))
            }
            Ok(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the pool closed the connection"))
            }
        }
    }

    /// Reads messages (keeping their effects) until the answer to `id`.
    pub fn answer(&mut self, id: u64, timeout: Duration) -> std::io::Result<Result<Value, (i64, String)>> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.next_message(left)? {
                Some(Message::Answer { id: got, result }) if got == id => return Ok(result),
                Some(_) => {}
                None => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer to request {id}"))),
            }
        }
    }

    /// Submits a share of the current job; returns the request id.
    pub fn submit(&mut self, worker: &str, share: &Share) -> std::io::Result<u64> {
        let mut params = vec![
            json!(worker),
            json!(share.job_id),
            json!(encode_hex(&share.extranonce2)),
            json!(format!("{:08x}", share.ntime)),
            json!(format!("{:08x}", share.nonce)),
        ];
        if let Some(bits) = share.version_bits {
            params.push(json!(format!("{bits:08x}")));
        }
        self.request("mining.submit", Value::Array(params))
    }
}

impl Drop for MinerSession {
    fn drop(&mut self) {
        // The reader thread holds a clone of the socket: end it for both.
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

/// A share a miner found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// Rolled version bits (`None`: the job's version).
    pub version_bits: Option<u32>,
    /// The header as hashed, and its proof-of-work hash.
    pub header: [u8; 80],
    pub hash: [u8; 32],
}

/// Hashes nonces `start .. start + count` of `job` with `extranonce2`
/// (and `version_bits` rolled in, if any) and returns the shares meeting
/// `target`, with the fastest kernel this CPU has.
pub fn grind(
    job: &MinerJob,
    family: Family,
    (en1, en2): (&[u8], &[u8]),
    version_bits: Option<u32>,
    (start, count): (u32, u32),
    target: Target,
    scrypt: Option<&mut otedama_hashers::scrypt::Scrypt>,
) -> Vec<Share> {
    let version = version_bits.map_or(job.version, |b| job.version | b);
    let header = job.header(en1, en2, job.ntime, 0, version);
    let mut found = Vec::new();
    match family {
        Family::Scrypt => {
            let mut own;
            let s = match scrypt {
                Some(s) => s,
                None => {
                    own = otedama_hashers::scrypt::Scrypt::new(otedama_hashers::scrypt::Kernel::best());
                    &mut own
                }
            };
            s.scan(&header, start, count, target, &mut found);
        }
        _ => {
            let hj = otedama_hashers::sha256d::HeaderJob::new(&header);
            otedama_hashers::sha256d::scan(&hj, start, count, target, otedama_hashers::sha256d::Kernel::best(), &mut found);
        }
    }
    found
        .into_iter()
        .map(|nonce| {
            let mut h = header;
            h[76..80].copy_from_slice(&nonce.to_le_bytes());
            let hash = match family {
                Family::Scrypt => otedama_hashers::scrypt::scrypt_1024_1_1(&h),
                _ => sha256d(&h),
            };
            Share { job_id: job.job_id.clone(), extranonce2: en2.to_vec(), ntime: job.ntime, nonce, version_bits, header: h, hash }
        })
        .collect()
}

/// The share target of difficulty `d` for `family` (what a miner hashes
/// against after `mining.set_difficulty`).
pub fn share_target(d: f64, family: Family) -> Option<Target> {
    Target::from_difficulty(d, family).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use otedama_engine::chain::address::{Coin, Network};
    use otedama_engine::chain::devnet::Devnet;
    use otedama_engine::chain::job::{CoinbaseConfig, Job};
    use otedama_engine::stratum::session::notify_line;
    use otedama_hashers::Algorithm;

    #[test]
    fn a_miner_rebuilds_from_the_notify_line_exactly_the_header_the_pool_checks() {
        let mut t = Devnet::new(Algorithm::Sha256d, 1_700_000_000).template(1_700_000_100);
        // Some transactions, so the branch has levels.
        for i in 0..5u8 {
            let data = vec![i; 61];
            t.transactions.push(otedama_engine::chain::template::TemplateTx {
                txid: otedama_engine::chain::to_display_hex(&sha256d(&data)).into(),
                data: otedama_engine::chain::encode_hex(&data).into(),
                hash: None,
                fee: Some(0),
                weight: None,
            });
        }
        let job = Job::new(0x2a, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap();
        let line = notify_line(&job, true);
        let v: Value = serde_json::from_str(&line).unwrap();
        let m = MinerJob::from_notify(&v["params"]).unwrap();
        assert_eq!((m.job_id.as_str(), m.clean, m.branch.len()), ("2a", true, 3));
        let (en1, en2) = ([0xde, 0xad, 0xbe, 0xef], [1, 2, 3, 4, 5, 6, 7, 8]);
        for (ntime, nonce, version) in [(m.ntime, 0, m.version), (m.ntime + 5, 0xffff_ffff, m.version | 0x0040_0000)] {
            assert_eq!(m.header(&en1, &en2, ntime, nonce, version), job.header(&en1, &en2, ntime, nonce, version));
        }
        assert_eq!(m.network_target(), Some(job.target));
    }
}
