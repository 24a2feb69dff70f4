//! The template task: follows every configured node and turns each new
//! template into a mining job.
//!
//! One watcher thread per node keeps a `getblocktemplate` long poll open
//! (`longpollid`): the node answers when its tip changes (and bitcoind
//! also after a minute with a changed mempool). A node that does not long
//! poll (no `longpollid` in its template, or answers that come back at once
//! with nothing new) is polled instead: `getbestblockhash` every
//! `poll_interval`, a full template when the tip moved or `refresh` passed.
//! Nodes that are unreachable, in initial block download or without peers
//! are retried every `retry`, with one log line per change of state.
//!
//! One coordinator thread takes every node's replies, parses them, and
//! builds a job when the work is new: a new previous block at a greater
//! height (`clean`: miners drop older jobs) or, on the same block, a
//! changed transaction set (not clean). Whichever node learns of a block
//! first delivers it; a node that is behind is ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use otedama_engine::chain::job::{CoinbaseConfig, Job};

use crate::node::{Node, NodeError};

#[derive(Clone, Debug)]
pub struct TemplateTaskConfig {
    pub coinbase: CoinbaseConfig,
    /// The coinbase's payout script (the pool's address).
    pub payout_script: Vec<u8>,
    /// Longest a single long poll is left open before it is asked again.
    pub longpoll_timeout: Duration,
    /// How often a node that does not long poll is asked for its tip.
    pub poll_interval: Duration,
    /// A polled node's full template is fetched at least this often (new
    /// transactions and fees).
    pub refresh: Duration,
    /// Wait before asking a failed node again.
    pub retry: Duration,
}

impl TemplateTaskConfig {
    pub fn new(coinbase: CoinbaseConfig, payout_script: Vec<u8>) -> TemplateTaskConfig {
        TemplateTaskConfig {
            coinbase,
            payout_script,
            longpoll_timeout: Duration::from_secs(90),
            poll_interval: Duration::from_millis(500),
            refresh: Duration::from_secs(30),
            retry: Duration::from_secs(1),
        }
    }
}

/// New work for the miners.
#[derive(Clone, Debug)]
pub struct Work {
    pub job: Arc<Job>,
    /// The previous block changed: older jobs are stale.
    pub clean: bool,
    /// The node (configuration order) whose template it is.
    pub node: usize,
    /// The reply's arrival → job built.
    pub build: Duration,
    /// When the reply arrived.
    pub learned: Instant,
}

/// How a node's watcher currently follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    LongPoll,
    Poll,
}

struct Reply {
    node: usize,
    text: String,
    at: Instant,
}

pub struct TemplateTask {
    stop: Arc<AtomicBool>,
    coordinator: Option<std::thread::JoinHandle<()>>,
}

impl TemplateTask {
    /// Starts following `nodes`; every new job is sent to `out`. Ends when
    /// stopped or when `out`'s receiver is gone.
    pub fn start(nodes: Vec<Node>, cfg: TemplateTaskConfig, out: mpsc::Sender<Work>) -> TemplateTask {
        assert!(!nodes.is_empty(), "the template task needs at least one node");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Reply>();
        for (i, node) in nodes.iter().cloned().enumerate() {
            let (tx, stop, cfg) = (tx.clone(), stop.clone(), cfg.clone());
            // Watchers are not joined: one may sit in a long poll; it sees
            // the stop flag (or the closed channel) when the poll returns.
            std::thread::Builder::new()
                .name(format!("node-watch-{i}"))
                .spawn(move || watch(i, &node, &cfg, &tx, &stop))
                .expect("spawning a node watcher");
        }
        drop(tx);
        let coordinator = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("template-task".into())
                .spawn(move || coordinate(&nodes, &cfg, &rx, &out, &stop))
                .expect("spawning the template task")
        };
        TemplateTask { stop, coordinator: Some(coordinator) }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = self.coordinator.take() {
            let _ = c.join();
        }
    }
}

impl Drop for TemplateTask {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sleeps `d` in small steps, returning early when stopped.
fn nap(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn describe(e: &NodeError) -> String {
    match e {
        NodeError::Rpc { code: -10, .. } => "in initial block download".into(),
        NodeError::Rpc { code: -9, .. } => "not connected to any peer".into(),
        other => other.to_string(),
    }
}

/// Pulls the `longpollid` out of a template reply without parsing the whole
/// template (the coordinator does that once).
fn longpollid_of(text: &str) -> Option<String> {
    let at = text.rfind("\"longpollid\"")?;
    let rest = text[at + 12..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

fn watch(i: usize, node: &Node, cfg: &TemplateTaskConfig, tx: &mpsc::Sender<Reply>, stop: &AtomicBool) {
    let mut mode = Mode::LongPoll;
    let mut longpollid: Option<String> = None;
    let mut failing: Option<String> = None;
    let mut quick_repeats = 0u32;
    let mut last_tip = String::new();
    let mut last_fetch = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let result = match mode {
            Mode::LongPoll => {
                let t = Instant::now();
                let r = node.block_template_text(longpollid.as_deref(), cfg.longpoll_timeout);
                match &r {
                    // An error reply (initial block download, no peers):
                    // the coordinator reports it; ask again after a pause.
                    Ok(text) if !text.contains("\"previousblockhash\"") => {
                        longpollid = None;
                        let _ = tx.send(Reply { node: i, text: text.clone(), at: Instant::now() });
                        nap(cfg.retry, stop);
                        continue;
                    }
                    Ok(text) => {
                        let id = longpollid_of(text);
                        // A node that ignores long polls answers at once
                        // with the same work: after a few, poll it instead.
                        if id.is_none() || (longpollid.is_some() && id == longpollid && t.elapsed() < Duration::from_millis(100)) {
                            quick_repeats += 1;
                            if id.is_none() || quick_repeats >= 3 {
                                tracing::info!(node = %node.url(), "node does not long poll; polling its tip instead");
                                mode = Mode::Poll;
                            }
                        } else {
                            quick_repeats = 0;
                        }
                        longpollid = id;
                    }
                    // A long poll that ran out its time on our side is not
                    // a failure: ask again.
                    Err(NodeError::Unreachable { .. }) if longpollid.is_some() && t.elapsed() >= cfg.longpoll_timeout.mul_f64(0.9) => {
                        continue;
                    }
                    Err(_) => longpollid = None,
                }
                r
            }
            Mode::Poll => match node.best_block_hash() {
                Ok(tip) if tip == last_tip && last_fetch.elapsed() < cfg.refresh => {
                    nap(cfg.poll_interval, stop);
                    continue;
                }
                Ok(tip) => {
                    last_tip = tip;
                    last_fetch = Instant::now();
                    node.block_template_text(None, Duration::from_secs(30))
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(text) => {
                // Errors come back inside the reply text; the coordinator
                // reports them. Recovery is logged here.
                if let Some(was) = failing.take() {
                    tracing::info!(node = %node.url(), after = %was, "node answers again");
                }
                if tx.send(Reply { node: i, text, at: Instant::now() }).is_err() {
                    return;
                }
                if mode == Mode::Poll {
                    nap(cfg.poll_interval, stop);
                }
            }
            Err(e) => {
                let what = describe(&e);
                if failing.as_deref() != Some(what.as_str()) {
                    tracing::warn!(node = %node.url(), error = %what, "node gives no work; retrying");
                    failing = Some(what);
                }
                nap(cfg.retry, stop);
            }
        }
    }
}

fn coordinate(nodes: &[Node], cfg: &TemplateTaskConfig, rx: &mpsc::Receiver<Reply>, out: &mpsc::Sender<Work>, stop: &AtomicBool) {
    let mut next_id = 1u64;
    // (height, previous block, transaction count, coinbase value) of the
    // newest work sent.
    let mut current: Option<(u32, [u8; 32], usize, u64)> = None;
    let mut node_errors: Vec<Option<String>> = vec![None; nodes.len()];
    while !stop.load(Ordering::Acquire) {
        let reply = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let node = &nodes[reply.node];
        let template = match node.parse_template(&reply.text) {
            Ok(t) => {
                node_errors[reply.node] = None;
                t
            }
            Err(e) => {
                let what = describe(&e);
                if node_errors[reply.node].as_deref() != Some(what.as_str()) {
                    tracing::warn!(node = %node.url(), error = %what, "node gives no template");
                    node_errors[reply.node] = Some(what);
                }
                continue;
            }
        };
        let Some(prev) = otedama_engine::chain::from_display_hex(&template.previousblockhash) else {
            tracing::warn!(node = %node.url(), "template with a malformed previousblockhash");
            continue;
        };
        let clean = match current {
            None => true,
            Some((h, p, _, _)) if p != prev => {
                if template.height <= h {
                    continue; // a node that is behind, or a competing branch not yet ahead
                }
                true
            }
            Some((_, _, n, v)) => {
                if n == template.transactions.len() && v == template.coinbasevalue {
                    continue; // same work
                }
                false
            }
        };
        let job = match Job::new(next_id, &template, &cfg.coinbase, &cfg.payout_script) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(node = %node.url(), error = %e, height = template.height, "cannot build a job from this template");
                continue;
            }
        };
        next_id += 1;
        current = Some((template.height, prev, template.transactions.len(), template.coinbasevalue));
        let work = Work { job: Arc::new(job), clean, node: reply.node, build: reply.at.elapsed(), learned: reply.at };
        tracing::debug!(
            job = work.job.id,
            height = template.height,
            transactions = template.transactions.len(),
            clean,
            build_us = work.build.as_micros() as u64,
            node = %node.url(),
            "new work"
        );
        if out.send(work).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longpollid_is_found_in_a_reply() {
        let r = r#"{"result":{"transactions":[{"data":"00"}],"longpollid" : "abc123","height":5},"error":null,"id":"x"}"#;
        assert_eq!(longpollid_of(r).as_deref(), Some("abc123"));
        assert_eq!(longpollid_of(r#"{"result":{"height":5}}"#), None);
        assert_eq!(longpollid_of(r#"{"longpollid":5}"#), None);
    }
}
