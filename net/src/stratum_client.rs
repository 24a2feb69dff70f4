//! The miner's side of Stratum V1: what a miner makes of `mining.notify`
//! and `mining.set_difficulty`, and a blocking client that speaks the
//! protocol over TCP. `otedama mine`, the Stratum load generator and the
//! end-to-end tests use it; it rebuilds headers only from what the wire
//! carries, so it checks the pool's notify encoding as a real miner does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use otedama_engine::chain::{decode_hex, sha256d};
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
        let id = self.next_id;
        self.next_id += 1;
        let mut line = json!({"id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        Ok(id)
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
