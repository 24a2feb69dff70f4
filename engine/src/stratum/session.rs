//! One Stratum V1 session as a state machine: lines in, lines and events
//! out, no I/O and no clock (time arrives as an argument). The I/O shard
//! that owns the connection feeds it every line and every new job, sends
//! the lines it produces, and acts on its events (a block to submit at
//! once, a share to journal, a payout address to give a ledger account).
//!
//! Error codes (the de-facto Stratum V1 set): 20 other, 21 job not found
//! (stale), 22 duplicate share, 23 low difficulty share, 24 unauthorized
//! worker, 25 not subscribed. A bad share is answered with its error and
//! never ends the session.

use std::sync::Arc;

use otedama_hashers::{Family, Target};

use super::jobs::{JobBook, Seen};
use super::request::{self, Request, Submit};
use crate::chain::address::{self, Coin, Network};
use crate::chain::job::Job;
use crate::chain::{encode_hex, sha256d};

/// The BIP 320 version bits a miner may roll.
pub const BIP320_MASK: u32 = 0x1fff_e000;
/// Workers one session may authorize.
pub const MAX_WORKERS: usize = 64;
/// Jobs whose difficulty a session remembers (older jobs are stale anyway).
const JOB_DIFFICULTIES: usize = 16;

/// What a port enforces, shared by its sessions.
#[derive(Clone, Debug)]
pub struct PortRules {
    pub family: Family,
    pub coin: Coin,
    pub network: Network,
    pub extranonce2_size: usize,
    /// Version bits the pool lets miners roll.
    pub version_mask: u32,
    /// The port's static difficulty.
    pub difficulty: f64,
    /// Bounds for `d=` and `suggest_difficulty`.
    pub min_difficulty: f64,
    pub max_difficulty: f64,
    /// How far past the later of the job's time and now a share's ntime
    /// may be (s).
    pub ntime_future: u32,
    /// Solo mining: each session's coinbase pays its own payout address
    /// (one address per connection).
    pub solo: bool,
}

/// Hands out extranonce1 values unique across every shard.
pub trait Extranonce1s {
    /// A fresh extranonce1, or `wanted` when the session resumes one that
    /// is free.
    fn claim(&mut self, wanted: Option<&[u8]>) -> Vec<u8>;
}

/// A share that passed every check but proof of work, waiting for its
/// hash (computed inline for sha256d, on a verification worker for
/// scrypt).
#[derive(Clone, Debug)]
pub struct Pending {
    pub id: String,
    pub header: [u8; 80],
    pub job: Arc<Job>,
    pub extranonce2: Vec<u8>,
    pub worker: usize,
    pub share_target: Target,
    /// Which of the session's extranonce1 values built `header` (it may
    /// change while a scrypt share is being verified).
    pub extranonce1_generation: u32,
}

/// An accepted share, as the shard journals it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedShare {
    pub address: String,
    pub worker: String,
    pub job: u64,
    /// Height of the block the job builds.
    pub height: u32,
    pub share_target: Target,
    pub network_target: Target,
    pub time: u32,
    pub block: bool,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// A line to send (response or notification), newline included.
    Line(String),
    /// The first authorize of this address in this session: the engine
    /// gives it a ledger account if it has none.
    Authorized {
        address: String,
    },
    /// A share needs its proof-of-work hash (scrypt): compute it and call
    /// [`Session::judge`].
    Verify(Box<Pending>),
    /// A block-solving share: submit this block before anything else.
    Block {
        job: Arc<Job>,
        header: [u8; 80],
        extranonce1: Vec<u8>,
        extranonce2: Vec<u8>,
        address: String,
        worker: String,
    },
    Share(AcceptedShare),
}

#[derive(Clone, Debug)]
struct Worker {
    address: String,
    name: String,
}

/// Solo mode's answer to a second payout address on one connection.
const ONE_ADDRESS: &str = "Unauthorized worker: solo mining pays one address per connection";

pub struct Session {
    rules: Arc<PortRules>,
    extranonce1: Option<Vec<u8>>,
    workers: Vec<Worker>,
    difficulty: f64,
    /// Set by `d=`: `suggest_difficulty` (and vardiff) leave it alone.
    fixed: bool,
    floor: f64,
    version_mask: u32,
    extranonce_subscribed: bool,
    /// (job id, easiest difficulty in force since it was sent), newest last.
    job_difficulty: Vec<(u64, f64)>,
    /// How many times the extranonce1 changed, and the value before the
    /// last change (a share verified off the shard may have been built on
    /// it). Once it has changed, a job not in `job_difficulty` was sent
    /// under an earlier value and is stale.
    extranonce1_generation: u32,
    previous_extranonce1: Option<Vec<u8>>,
    /// The last difficulty turned into a target, and that target (the
    /// conversion is exact, so worth keeping).
    target_cache: Option<(f64, Target)>,
    /// Solo mode: the script the session's coinbase pays.
    payout_script: Option<Vec<u8>>,
}

fn reply_ok(id: &str, result: &str) -> Event {
    Event::Line(format!("{{\"id\":{id},\"result\":{result},\"error\":null}}\n"))
}

fn reply_err(id: &str, code: u32, message: &str) -> Event {
    let msg = serde_json::to_string(message).expect("a string serialises");
    Event::Line(format!("{{\"id\":{id},\"result\":null,\"error\":[{code},{msg},null]}}\n"))
}

/// `mining.set_difficulty`, formatted as Stratum miners expect (a plain
/// number; integral difficulties without a fraction).
pub fn set_difficulty_line(d: f64) -> String {
    if d.fract() == 0.0 && d < 1e15 {
        format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{}]}}\n", d as u64)
    } else {
        format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{d}]}}\n")
    }
}

/// `mining.set_extranonce` with the new extranonce1 and the extranonce2
/// size.
pub fn set_extranonce_line(en1: &[u8], extranonce2_size: usize) -> String {
    format!("{{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"{}\",{extranonce2_size}]}}\n", encode_hex(en1))
}

/// `mining.notify` for `job`: serialised once per job (and coinbase
/// variant) and sent as the same bytes to every session.
pub fn notify_line(job: &Job, clean: bool) -> String {
    let n = job.notify_fields();
    let branch: Vec<String> = n.merkle_branch.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"{}\",\"{}\",\"{}\",\"{}\",[{}],\"{}\",\"{}\",\"{}\",{}]}}\n",
        n.job_id,
        n.prevhash,
        n.coinb1,
        n.coinb2,
        branch.join(","),
        n.version,
        n.nbits,
        n.ntime,
        clean
    )
}

impl Session {
    pub fn new(rules: Arc<PortRules>) -> Session {
        let difficulty = rules.difficulty;
        let floor = rules.min_difficulty;
        Session {
            rules,
            extranonce1: None,
            workers: Vec::new(),
            difficulty,
            fixed: false,
            floor,
            version_mask: 0,
            extranonce_subscribed: false,
            job_difficulty: Vec::new(),
            extranonce1_generation: 0,
            previous_extranonce1: None,
            target_cache: None,
            payout_script: None,
        }
    }

    /// Solo mode: the script this session's jobs pay (set by its first
    /// authorize).
    pub fn payout_script(&self) -> Option<&[u8]> {
        self.payout_script.as_deref()
    }

    pub fn extranonce1(&self) -> Option<&[u8]> {
        self.extranonce1.as_deref()
    }

    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    /// Subscribed and at least one worker authorized: the session gets
    /// jobs.
    pub fn is_mining(&self) -> bool {
        self.extranonce1.is_some() && !self.workers.is_empty()
    }

    /// A new job is about to be sent to this session (the shard then sends
    /// the job's shared notify line).
    pub fn on_job(&mut self, job_id: u64) {
        self.job_difficulty.push((job_id, self.difficulty));
        if self.job_difficulty.len() > JOB_DIFFICULTIES {
            self.job_difficulty.remove(0);
        }
    }

    /// The newest job, as a clean one, to a session that just started mining.
    fn send_latest(&mut self, jobs: &mut JobBook, out: &mut Vec<Event>) {
        let line = match &self.payout_script {
            Some(script) => jobs.latest_id().and_then(|id| jobs.variant(id, script, true).map(|(_, l)| (id, l.to_string()))),
            None => jobs.latest_clean().map(|(id, l)| (id, l.to_string())),
        };
        if let Some((id, line)) = line {
            self.on_job(id);
            out.push(Event::Line(line));
        }
    }

    /// Moves a subscribed session to `en1` (its old value was taken over):
    /// `mining.set_extranonce`, then the newest job again as a clean one,
    /// since miners apply the new value from the next notify. Jobs sent
    /// before are stale for this session from now on (21); a share for the
    /// newest job built on the old value fails its proof of work (23), as
    /// the job id alone cannot tell the two apart. False, and nothing
    /// changed, when the miner never asked for extranonce changes
    /// (`mining.extranonce.subscribe` or `subscribe-extranonce`) or never
    /// subscribed: the caller must then disconnect it.
    pub fn change_extranonce1(&mut self, en1: Vec<u8>, jobs: &mut JobBook, out: &mut Vec<Event>) -> bool {
        if !self.extranonce_subscribed || self.extranonce1.is_none() {
            return false;
        }
        out.push(Event::Line(set_extranonce_line(&en1, self.rules.extranonce2_size)));
        self.previous_extranonce1 = self.extranonce1.replace(en1);
        self.extranonce1_generation = self.extranonce1_generation.wrapping_add(1);
        self.job_difficulty.clear();
        if !self.workers.is_empty() {
            self.send_latest(jobs, out);
        }
        true
    }

    fn set_difficulty(&mut self, d: f64, out: &mut Vec<Event>) {
        let d = d.clamp(self.floor.max(self.rules.min_difficulty), self.rules.max_difficulty);
        if d != self.difficulty {
            self.difficulty = d;
            // Jobs already sent accept the easiest difficulty in force
            // since they were sent: miners keep working a job across a
            // change (the old difficulty stays valid until the next job).
            for (_, jd) in &mut self.job_difficulty {
                *jd = jd.min(d);
            }
            out.push(Event::Line(set_difficulty_line(d)));
        }
    }

    /// Handles one line from the miner (without its newline).
    pub fn on_line(&mut self, line: &str, jobs: &mut JobBook, en1s: &mut dyn Extranonce1s, now: u32, out: &mut Vec<Event>) {
        let l = match request::parse(line) {
            Ok(l) => l,
            Err(e) => {
                out.push(reply_err(e.id.unwrap_or("null"), 20, &e.reason));
                return;
            }
        };
        let id = l.id;
        match l.request {
            Request::Configure { extensions, version_mask, min_difficulty } => {
                let mut parts = Vec::new();
                for ext in &extensions {
                    match ext.as_ref() {
                        "version-rolling" => {
                            let mask = version_mask.unwrap_or(u32::MAX) & self.rules.version_mask;
                            self.version_mask = mask;
                            parts.push("\"version-rolling\":true".to_string());
                            parts.push(format!("\"version-rolling.mask\":\"{mask:08x}\""));
                        }
                        "minimum-difficulty" => match min_difficulty {
                            Some(d) if d.is_finite() && d > 0.0 => {
                                self.floor = d.min(self.rules.max_difficulty);
                                parts.push("\"minimum-difficulty\":true".to_string());
                            }
                            _ => parts.push("\"minimum-difficulty\":false".to_string()),
                        },
                        "subscribe-extranonce" => {
                            self.extranonce_subscribed = true;
                            parts.push("\"subscribe-extranonce\":true".to_string());
                        }
                        other => parts.push(format!("{}:false", serde_json::to_string(other).expect("string"))),
                    }
                }
                out.push(reply_ok(id, &format!("{{{}}}", parts.join(","))));
                if self.version_mask != 0 {
                    let m = self.version_mask;
                    out.push(Event::Line(format!("{{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"{m:08x}\"]}}\n")));
                }
                if self.floor > self.difficulty && !self.fixed {
                    self.set_difficulty(self.floor, out);
                }
            }
            Request::Subscribe { resume, .. } => {
                let wanted = resume.as_deref().and_then(crate::chain::decode_hex);
                let en1 = match &self.extranonce1 {
                    Some(e) => e.clone(),
                    None => en1s.claim(wanted.as_deref()),
                };
                let hex = encode_hex(&en1);
                self.extranonce1 = Some(en1);
                out.push(reply_ok(
                    id,
                    &format!(
                        "[[[\"mining.set_difficulty\",\"{hex}\"],[\"mining.notify\",\"{hex}\"]],\"{hex}\",{}]",
                        self.rules.extranonce2_size
                    ),
                ));
                out.push(Event::Line(set_difficulty_line(self.difficulty)));
                if !self.workers.is_empty() {
                    self.send_latest(jobs, out);
                }
            }
            Request::ExtranonceSubscribe => {
                self.extranonce_subscribed = true;
                out.push(reply_ok(id, "true"));
            }
            Request::Authorize { user, password } => {
                let addr = user.split_once('.').map_or(&*user, |(a, _)| a);
                let script = match address::script_for(addr, self.rules.coin, self.rules.network) {
                    Ok(s) => s,
                    Err(e) => {
                        out.push(reply_err(id, 24, &format!("Unauthorized worker: {e}")));
                        return;
                    }
                };
                if self.rules.solo && self.payout_script.as_ref().is_some_and(|s| *s != script) {
                    out.push(reply_err(id, 24, ONE_ADDRESS));
                    return;
                }
                if self.workers.len() >= MAX_WORKERS && !self.workers.iter().any(|w| w.name == *user) {
                    out.push(reply_err(id, 24, &format!("Unauthorized worker: at most {MAX_WORKERS} workers per connection")));
                    return;
                }
                let d = password.split(',').find_map(|kv| kv.trim().strip_prefix("d=")).and_then(|v| v.parse::<f64>().ok());
                let new_address = !self.workers.iter().any(|w| w.address == addr);
                if self.rules.solo && self.payout_script.is_none() {
                    self.payout_script = Some(script);
                }
                if !self.workers.iter().any(|w| w.name == *user) {
                    self.workers.push(Worker { address: addr.to_string(), name: user.to_string() });
                }
                out.push(reply_ok(id, "true"));
                if new_address {
                    out.push(Event::Authorized { address: addr.to_string() });
                }
                if let Some(d) = d.filter(|d| d.is_finite() && *d > 0.0) {
                    self.fixed = true;
                    self.set_difficulty(d, out);
                }
                if self.extranonce1.is_some() && self.workers.len() == 1 && new_address {
                    self.send_latest(jobs, out);
                }
            }
            Request::SuggestDifficulty(d) => {
                if d.is_finite() && d > 0.0 && !self.fixed {
                    self.set_difficulty(d, out);
                }
                out.push(reply_ok(id, "true"));
            }
            Request::Submit(s) => self.submit(id, s, jobs, now, out),
            Request::Unknown(m) => out.push(reply_err(id, 20, &format!("Method not found: {m}"))),
        }
    }

    fn submit(&mut self, id: &str, s: Submit<'_>, jobs: &mut JobBook, now: u32, out: &mut Vec<Event>) {
        let Some(en1) = self.extranonce1.as_deref() else {
            return out.push(reply_err(id, 25, "Not subscribed"));
        };
        let Some(worker) = self.workers.iter().position(|w| w.name == s.worker) else {
            return out.push(reply_err(id, 24, "Unauthorized worker"));
        };
        let job = match &self.payout_script {
            Some(script) => jobs.variant(s.job_id, script, false).map(|(j, _)| j),
            None => jobs.get(s.job_id),
        };
        let Some(job) = job else {
            return out.push(reply_err(id, 21, "Job not found"));
        };
        let difficulty = match self.job_difficulty.iter().rev().find(|(j, _)| *j == s.job_id) {
            Some((_, d)) => *d,
            None if self.previous_extranonce1.is_some() => {
                return out.push(reply_err(id, 21, "Job not found (sent before the extranonce changed)"));
            }
            None => self.difficulty,
        };
        if s.extranonce2.len() != self.rules.extranonce2_size {
            return out.push(reply_err(id, 20, &format!("Incorrect size of extranonce2 (expected {} bytes)", self.rules.extranonce2_size)));
        }
        if s.ntime < job.mintime || s.ntime > job.curtime.max(now).saturating_add(self.rules.ntime_future) {
            return out.push(reply_err(id, 20, "ntime out of range"));
        }
        let version = match s.version_bits {
            None => job.version,
            Some(bits) if bits & !self.version_mask == 0 => (job.version & !self.version_mask) | bits,
            Some(_) => return out.push(reply_err(id, 20, "Invalid version bits (outside the negotiated mask)")),
        };
        let header = job.header(en1, &s.extranonce2, s.ntime, s.nonce, version);
        let block_id = sha256d(&header);
        match jobs.record(s.job_id, &block_id) {
            Seen::New => {}
            Seen::Duplicate => return out.push(reply_err(id, 22, "Duplicate share")),
            Seen::Full | Seen::Gone => return out.push(reply_err(id, 21, "Job not found")),
        }
        let share_target = match self.target_cache {
            Some((d, t)) if d == difficulty => t,
            _ => match Target::from_difficulty(difficulty, self.rules.family) {
                Ok(t) => {
                    self.target_cache = Some((difficulty, t));
                    t
                }
                Err(_) => return out.push(reply_err(id, 20, "difficulty out of range")),
            },
        };
        let pending = Pending {
            id: id.to_string(),
            header,
            job,
            extranonce2: s.extranonce2,
            worker,
            share_target,
            extranonce1_generation: self.extranonce1_generation,
        };
        match self.rules.family {
            Family::Sha256d => self.judge(pending, &block_id, now, out),
            _ => out.push(Event::Verify(Box::new(pending))),
        }
    }

    /// Finishes a share with its proof-of-work hash.
    pub fn judge(&mut self, p: Pending, pow: &[u8; 32], now: u32, out: &mut Vec<Event>) {
        let block = p.job.target.is_met_by(pow);
        // The extranonce1 the header was built on: the current one, or the
        // one before the last change for a share that was being verified.
        let en1 = if p.extranonce1_generation == self.extranonce1_generation {
            self.extranonce1.as_ref()
        } else if p.extranonce1_generation.wrapping_add(1) == self.extranonce1_generation {
            self.previous_extranonce1.as_ref()
        } else {
            None
        };
        let Some(en1) = en1 else {
            return out.push(reply_err(&p.id, 21, "Job not found (sent before the extranonce changed)"));
        };
        let w = &self.workers[p.worker];
        if block {
            // Submission first: the shard acts on this before the answer.
            out.push(Event::Block {
                job: p.job.clone(),
                header: p.header,
                extranonce1: en1.clone(),
                extranonce2: p.extranonce2.clone(),
                address: w.address.clone(),
                worker: w.name.clone(),
            });
        }
        if !block && !p.share_target.is_met_by(pow) {
            return out.push(reply_err(&p.id, 23, "Low difficulty share"));
        }
        out.push(reply_ok(&p.id, "true"));
        out.push(Event::Share(AcceptedShare {
            address: w.address.clone(),
            worker: w.name.clone(),
            job: p.job.id,
            height: p.job.height,
            share_target: p.share_target,
            network_target: p.job.target,
            time: now,
            block,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::devnet::Devnet;
    use crate::chain::job::CoinbaseConfig;
    use crate::stratum::extranonce::ShardExtranonces;
    use otedama_hashers::Algorithm;

    fn address() -> String {
        bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[7u8; 20]).unwrap()
    }

    fn rules() -> Arc<PortRules> {
        Arc::new(PortRules {
            family: Family::Sha256d,
            coin: Coin::Bitcoin,
            network: Network::Regtest,
            extranonce2_size: 8,
            version_mask: BIP320_MASK,
            difficulty: 1.0,
            min_difficulty: 1e-9,
            max_difficulty: 1e12,
            ntime_future: 7000,
            solo: false,
        })
    }

    /// A job of id `id`; `hard`: mainnet difficulty-1 bits, so shares at a
    /// tiny difficulty are not blocks.
    fn job(id: u64, hard: bool) -> Arc<Job> {
        let mut t = Devnet::new(Algorithm::Sha256d, 1_700_000_000).template(1_700_000_100);
        if hard {
            t.bits = "1d00ffff".into();
        }
        Arc::new(Job::new(id, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap())
    }

    fn lines(out: &[Event]) -> Vec<serde_json::Value> {
        out.iter()
            .filter_map(|e| match e {
                Event::Line(l) => {
                    assert!(l.ends_with('\n'));
                    Some(serde_json::from_str(l).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    struct Miner {
        s: Session,
        jobs: JobBook,
        en1s: ShardExtranonces,
        now: u32,
    }

    impl Miner {
        fn send(&mut self, line: &str) -> Vec<Event> {
            let mut out = Vec::new();
            self.s.on_line(line, &mut self.jobs, &mut self.en1s, self.now, &mut out);
            out
        }
        fn error_code(&mut self, line: &str) -> Option<i64> {
            let out = self.send(line);
            lines(&out)[0]["error"][0].as_i64()
        }
        /// A nonce whose share meets (or misses) difficulty `d` on `job`.
        fn nonce(&self, job: &Job, en2: &[u8], ntime: u32, version: u32, d: f64, meets: bool) -> u32 {
            let t = Target::from_difficulty(d, Family::Sha256d).unwrap();
            let en1 = self.s.extranonce1().unwrap();
            (0..).find(|&n| t.is_met_by(&sha256d(&job.header(en1, en2, ntime, n, version))) == meets).unwrap()
        }
        fn submit(&mut self, job: u64, en2: &str, ntime: u32, nonce: u32, bits: Option<u32>) -> Vec<Event> {
            let vb = bits.map(|b| format!(",\"{b:08x}\"")).unwrap_or_default();
            let line = format!(
                r#"{{"id":9,"method":"mining.submit","params":["{}.rig","{job:x}","{en2}","{ntime:08x}","{nonce:08x}"{vb}]}}"#,
                address()
            );
            self.send(&line)
        }
    }

    fn miner() -> Miner {
        let mut jobs = JobBook::new(4, 1000);
        jobs.push(job(1, true), true);
        Miner { s: Session::new(rules()), jobs, en1s: ShardExtranonces::new(0, 4), now: 1_700_000_200 }
    }

    #[test]
    fn configure_subscribe_authorize_and_get_work() {
        let mut m = miner();
        // Configure before subscribe, as ASICs do.
        let out = m.send(r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","x-unknown"],{"version-rolling.mask":"ffffffff","minimum-difficulty.value":0.5}]}"#);
        let l = lines(&out);
        assert_eq!(l[0]["result"]["version-rolling"], true);
        assert_eq!(l[0]["result"]["version-rolling.mask"], "1fffe000");
        assert_eq!(l[0]["result"]["minimum-difficulty"], true);
        assert_eq!(l[0]["result"]["x-unknown"], false);
        assert_eq!(l[1]["method"], "mining.set_version_mask");
        let out = m.send(r#"{"id":2,"method":"mining.subscribe","params":["bmminer/2.0.0"]}"#);
        let l = lines(&out);
        assert_eq!(l[0]["result"][1], "00000000");
        assert_eq!(l[0]["result"][2], 8);
        assert_eq!(l[1]["method"], "mining.set_difficulty");
        assert!(!m.s.is_mining());
        let out = m.send(&format!(r#"{{"id":3,"method":"mining.authorize","params":["{}.rig","x"]}}"#, address()));
        assert!(matches!(&out[1], Event::Authorized { address: a } if *a == address()));
        let l = lines(&out);
        assert_eq!(l[0]["result"], true);
        assert_eq!(l[1]["method"], "mining.notify");
        assert_eq!(l[1]["params"][0], "1");
        assert_eq!(l[1]["params"][8], true);
        assert!(m.s.is_mining());
        // A second subscribe keeps the extranonce; resume asks for one.
        let out = m.send(r#"{"id":4,"method":"mining.subscribe","params":["x"]}"#);
        assert_eq!(lines(&out)[0]["result"][1], "00000000");
        let mut r = miner();
        let out = r.send(r#"{"id":1,"method":"mining.subscribe","params":["x","0000abcd"]}"#);
        assert_eq!(lines(&out)[0]["result"][1], "0000abcd");
    }

    #[test]
    fn a_moved_session_keeps_a_block_built_on_its_old_extranonce1() {
        let mut m = miner();
        m.jobs = JobBook::new(4, 1000);
        m.jobs.push(job(1, false), true);
        m.send(r#"{"id":1,"method":"mining.subscribe","params":[]}"#);
        let old = m.s.extranonce1().unwrap().to_vec();
        // Not subscribed to extranonce changes: cannot be moved.
        assert!(!m.s.change_extranonce1(vec![0, 0, 0, 7], &mut m.jobs, &mut Vec::new()));
        assert_eq!(m.s.extranonce1(), Some(&old[..]));
        m.send(r#"{"id":2,"method":"mining.extranonce.subscribe","params":[]}"#);
        m.send(&format!(r#"{{"id":3,"method":"mining.authorize","params":["{}.rig","x"]}}"#, address()));
        // A share on the old value, its hash still being computed (as a
        // scrypt share on a verification worker would be).
        let j = m.jobs.get(1).unwrap();
        let en2 = vec![0u8; 8];
        let header = j.header(&old, &en2, j.curtime, 0, j.version);
        let pending = |g| Pending {
            id: "5".into(),
            header,
            job: j.clone(),
            extranonce2: en2.clone(),
            worker: 0,
            share_target: Target::from_difficulty(1e-9, Family::Sha256d).unwrap(),
            extranonce1_generation: g,
        };
        let mut out = Vec::new();
        assert!(m.s.change_extranonce1(vec![0, 0, 0, 7], &mut m.jobs, &mut out));
        let l = lines(&out);
        assert_eq!(l[0]["method"], "mining.set_extranonce");
        assert_eq!(l[0]["params"], serde_json::json!(["00000007", 8]));
        assert_eq!((l[1]["method"].as_str(), l[1]["params"][8].as_bool()), (Some("mining.notify"), Some(true)));
        // The pending block is submitted with the extranonce1 that built it.
        let pow = sha256d(&header);
        let mut out = Vec::new();
        m.s.judge(pending(0), &pow, m.now, &mut out);
        assert!(matches!(&out[0], Event::Block { extranonce1, .. } if *extranonce1 == old));
        assert_eq!(lines(&out)[0]["result"], true);
        // Two changes later nobody knows that value any more: stale.
        m.s.change_extranonce1(vec![0, 0, 0, 8], &mut m.jobs, &mut Vec::new());
        let mut out = Vec::new();
        m.s.judge(pending(0), &pow, m.now, &mut out);
        assert_eq!(lines(&out)[0]["error"][0], 21);
        assert!(!out.iter().any(|e| matches!(e, Event::Block { .. })));
    }

    fn mining(d: &str) -> Miner {
        let mut m = miner();
        m.send(r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}"#);
        m.send(r#"{"id":2,"method":"mining.subscribe","params":[]}"#);
        m.send(&format!(r#"{{"id":3,"method":"mining.authorize","params":["{}.rig","{d}"]}}"#, address()));
        m
    }

    #[test]
    fn shares_are_judged_with_the_right_error_codes() {
        let mut m = mining("d=0.0001");
        assert_eq!(m.s.difficulty(), 0.0001);
        let j = m.jobs.get(1).unwrap();
        let en2 = [0u8, 0, 0, 0, 0, 0, 0, 1];
        let t = j.curtime;
        let good = m.nonce(&j, &en2, t, j.version, 0.0001, true);
        let out = m.submit(1, "0000000000000001", t, good, None);
        assert_eq!(lines(&out)[0]["result"], true);
        let share = out.iter().find_map(|e| if let Event::Share(s) = e { Some(s.clone()) } else { None }).unwrap();
        assert_eq!((share.job, share.block, share.address.clone()), (1, false, address()));
        assert_eq!(share.share_target, Target::from_difficulty(0.0001, Family::Sha256d).unwrap());
        // Duplicate, stale job, low difficulty, ntime, version bits, extranonce2 size.
        assert_eq!(lines(&m.submit(1, "0000000000000001", t, good, None))[0]["error"][0], 22);
        assert_eq!(lines(&m.submit(7, "0000000000000001", t, good, None))[0]["error"][0], 21);
        let low = m.nonce(&j, &en2, t, j.version, 0.0001, false);
        assert_eq!(lines(&m.submit(1, "0000000000000001", t, low, None))[0]["error"][0], 23);
        assert_eq!(lines(&m.submit(1, "0000000000000001", j.mintime - 1, good, None))[0]["error"][0], 20);
        assert_eq!(lines(&m.submit(1, "0000000000000001", m.now + 7001, good, None))[0]["error"][0], 20);
        let e = lines(&m.submit(1, "0000000000000001", t, good, Some(0x0000_1000)));
        assert!(e[0]["error"][1].as_str().unwrap().contains("version bits"), "{e:?}");
        assert_eq!(lines(&m.submit(1, "00000001", t, good, None))[0]["error"][0], 20);
        // Version rolling inside the mask is accepted.
        let v = (j.version & !BIP320_MASK) | 0x0040_0000;
        let rolled = m.nonce(&j, &en2, t, v, 0.0001, true);
        assert_eq!(lines(&m.submit(1, "0000000000000001", t, rolled, Some(0x0040_0000)))[0]["result"], true);
        // Wrong worker; a session that never subscribed.
        let other =
            format!(r#"{{"id":5,"method":"mining.submit","params":["{}.other","1","0000000000000001","{t:08x}","00000000"]}}"#, address());
        assert_eq!(m.error_code(&other), Some(24));
        let mut fresh = miner();
        assert_eq!(fresh.error_code(&other), Some(25));
        // None of that ended anything: garbage too is just an error.
        assert_eq!(m.error_code("garbage"), Some(20));
        assert_eq!(m.error_code(r#"{"id":6,"method":"mining.teleport","params":[]}"#), Some(20));
        let again = m.nonce(&j, &[0, 0, 0, 0, 0, 0, 0, 2], t, j.version, 0.0001, true);
        assert_eq!(lines(&m.submit(1, "0000000000000002", t, again, None))[0]["result"], true);
    }

    #[test]
    fn a_clean_job_makes_older_ones_stale_and_an_old_difficulty_holds_until_the_next_job() {
        let mut m = mining("x");
        m.send(r#"{"id":7,"method":"mining.suggest_difficulty","params":[0.0001]}"#);
        let j1 = m.jobs.get(1).unwrap();
        // Job 2 (not clean) is sent after the difficulty rose to 0.01.
        let line = m.jobs.push(job(2, true), false).to_string();
        assert!(line.ends_with("false]}\n"));
        let out = m.send(r#"{"id":8,"method":"mining.suggest_difficulty","params":[0.01]}"#);
        assert_eq!(lines(&out)[0]["params"][0], 0.01);
        m.s.on_job(2);
        // Job 1 was current while the difficulty was 0.0001: a share
        // meeting only that is fine for it; job 2 came after the rise.
        let en2 = [0u8; 8];
        let n = (0..)
            .find(|&n| {
                let h = sha256d(&j1.header(m.s.extranonce1().unwrap(), &en2, j1.curtime, n, j1.version));
                Target::from_difficulty(0.0001, Family::Sha256d).unwrap().is_met_by(&h)
                    && !Target::from_difficulty(0.01, Family::Sha256d).unwrap().is_met_by(&h)
            })
            .unwrap();
        assert_eq!(lines(&m.submit(1, "0000000000000000", j1.curtime, n, None))[0]["result"], true);
        let j2 = m.jobs.get(2).unwrap();
        let low2 = m.nonce(&j2, &en2, j2.curtime, j2.version, 0.01, false);
        assert_eq!(lines(&m.submit(2, "0000000000000000", j2.curtime, low2, None))[0]["error"][0], 23);
        // A new block: job 3 is clean, jobs 1 and 2 are stale.
        m.jobs.push(job(3, true), true);
        assert_eq!(lines(&m.submit(1, "0000000000000009", j1.curtime, n, None))[0]["error"][0], 21);
        assert_eq!(m.jobs.latest_clean().unwrap().0, 3);
    }

    #[test]
    fn a_block_solving_share_is_handed_over_before_its_answer() {
        let mut m = mining("d=0.0001");
        m.jobs.push(job(5, false), true); // the devnet's easy target
        m.s.on_job(5);
        let j = m.jobs.get(5).unwrap();
        let en2 = [0u8, 0, 0, 0, 0, 0, 0, 3];
        let n =
            (0..).find(|&n| j.target.is_met_by(&sha256d(&j.header(m.s.extranonce1().unwrap(), &en2, j.curtime, n, j.version)))).unwrap();
        let out = m.submit(5, "0000000000000003", j.curtime, n, None);
        match &out[0] {
            Event::Block { header, extranonce2, address: a, .. } => {
                assert_eq!(*header, j.header(m.s.extranonce1().unwrap(), &en2, j.curtime, n, j.version));
                assert_eq!((extranonce2.as_slice(), a.as_str()), (&en2[..], address().as_str()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lines(&out)[0]["result"], true);
        assert!(matches!(&out[2], Event::Share(s) if s.block));
    }

    #[test]
    fn solo_sessions_mine_a_coinbase_paying_their_own_address() {
        let solo = Arc::new(PortRules { solo: true, ..(*rules()).clone() });
        let mut jobs = JobBook::new(4, 1000);
        jobs.push(job(1, false), true);
        let mut m = Miner { s: Session::new(solo), jobs, en1s: ShardExtranonces::new(0, 4), now: 1_700_000_200 };
        m.send(r#"{"id":1,"method":"mining.subscribe","params":[]}"#);
        let out = m.send(&format!(r#"{{"id":2,"method":"mining.authorize","params":["{}.rig","d=0.0001"]}}"#, address()));
        let script = address::script_for(&address(), Coin::Bitcoin, Network::Regtest).unwrap();
        assert_eq!(m.s.payout_script(), Some(&script[..]));
        let notify = lines(&out).into_iter().find(|l| l["method"] == "mining.notify").unwrap();
        let coinb2 = notify["params"][3].as_str().unwrap();
        assert!(coinb2.contains(&encode_hex(&script)), "the notify's coinbase pays the miner: {coinb2}");
        // A second address on the same connection is refused.
        let other = bech32::segwit::encode(bech32::hrp::BCRT, bech32::segwit::VERSION_0, &[8u8; 20]).unwrap();
        let e = lines(&m.send(&format!(r#"{{"id":3,"method":"mining.authorize","params":["{other}","x"]}}"#)));
        assert_eq!(e[0]["error"][0], 24);
        // A block from this session pays the miner, and shares are judged
        // against that variant.
        let (variant, _) = m.jobs.variant(1, &script, false).unwrap();
        let en2 = [0u8, 0, 0, 0, 0, 0, 0, 5];
        let n = (0..)
            .find(|&n| {
                variant.target.is_met_by(&sha256d(&variant.header(m.s.extranonce1().unwrap(), &en2, variant.curtime, n, variant.version)))
            })
            .unwrap();
        let out = m.submit(1, "0000000000000005", variant.curtime, n, None);
        match &out[0] {
            Event::Block { job, .. } => assert_eq!(job.coinb2, variant.coinb2),
            other => panic!("{other:?}"),
        }
        assert_eq!(lines(&out)[0]["result"], true);
    }

    #[test]
    fn authorize_checks_the_address_for_the_chain() {
        let mut m = miner();
        m.send(r#"{"id":1,"method":"mining.subscribe","params":[]}"#);
        let e = lines(&m.send(r#"{"id":2,"method":"mining.authorize","params":["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4","x"]}"#));
        assert_eq!(e[0]["error"][0], 24);
        assert!(!m.s.is_mining());
        let e = lines(&m.send(r#"{"id":2,"method":"mining.authorize","params":["nonsense.rig","x"]}"#));
        assert_eq!(e[0]["error"][0], 24);
    }
}
