//! `otedama bench chain`: the chain side's critical moments with a
//! mainnet-sized template, from a real litecoind in regtest whose mempool
//! the benchmark fills with wallet transactions.
//!
//! - `job_build_us`: template JSON text → `Job` built (parse, hex decode of
//!   every transaction, merkle branch, coinbase halves).
//! - `block_assemble_us`: a block-solving header → block bytes ready.
//! - `block_submit_us`: the header → the whole `submitblock` request written
//!   to the node's socket (assembly, hex, HTTP), as the pool does it.
//!
//! Beside them, in the same run: `template_parse_us` (serde_json alone on
//! the same text: the floor of job building) and the node's own answer time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use otedama_engine::chain::address::{self, Coin, Network};
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::chain::template::Template;
use otedama_hashers::scrypt::scrypt_1024_1_1;
use otedama_net::node::{Node, Submitted};
use otedama_net::regtest::{self, Litecoind};

use crate::harness::{self, StallMeter};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Fewer samples (the mempool fill takes the same time).
    #[arg(long)]
    pub quick: bool,
    /// Transactions in the template.
    #[arg(long, default_value_t = 3000)]
    pub txs: usize,
    #[arg(long)]
    pub runs: Option<usize>,
    /// The core the measured thread is pinned to.
    #[arg(long, default_value_t = 1)]
    pub core: usize,
}

fn call(n: &Node, method: &str, params: Value) -> Result<Value> {
    n.call(method, params, Duration::from_secs(120)).with_context(|| method.to_string())
}

/// Fills node `a`'s mempool with `count` one-input wallet transactions.
fn fill_mempool(a: &Node, count: usize) -> Result<()> {
    call(a, "createwallet", json!(["bench"]))?;
    let mine = call(a, "getnewaddress", json!([]))?.as_str().unwrap_or_default().to_string();
    // Enough mature coinbases to fund the fan-out.
    call(a, "generatetoaddress", json!([110, mine]))?;
    let addrs: Vec<String> =
        (0..500).map(|_| call(a, "getnewaddress", json!([])).map(|v| v.as_str().unwrap_or_default().to_string())).collect::<Result<_>>()?;
    let outputs: serde_json::Map<String, Value> = addrs.iter().map(|a| (a.clone(), json!(0.05))).collect();
    for _ in 0..count.div_ceil(500) {
        call(a, "sendmany", json!(["", outputs]))?;
    }
    call(a, "generatetoaddress", json!([1, mine]))?;
    let utxos = call(a, "listunspent", json!([1, 9999999, addrs]))?;
    let mut sent = 0;
    for u in utxos.as_array().context("listunspent")? {
        if sent == count {
            break;
        }
        let raw = call(a, "createrawtransaction", json!([[{"txid": u["txid"], "vout": u["vout"]}], [{ mine.clone(): 0.0499 }]]))?;
        let signed = call(a, "signrawtransactionwithwallet", json!([raw]))?;
        call(a, "sendrawtransaction", json!([signed["hex"]]))?;
        sent += 1;
    }
    if sent < count {
        bail!("only {sent} of {count} transactions could be funded");
    }
    Ok(())
}

fn q(h: &hdrhistogram::Histogram<u64>, p: f64) -> f64 {
    h.value_at_quantile(p) as f64 / 1e3
}

pub fn run(a: &Args) -> Result<Value> {
    if !regtest::litecoind_installed() {
        bail!("litecoind is not installed: apt-get install litecoind (or bash .ci/setup as root)");
    }
    let runs = a.runs.unwrap_or(if a.quick { 3 } else { 5 }).max(1);
    let iters = if a.quick { 50 } else { 200 };
    let node_a = Litecoind::start(None).map_err(anyhow::Error::msg)?;
    let node_b = Litecoind::start(Some(node_a.p2p)).map_err(anyhow::Error::msg)?;
    let (na, _nb) = (node_a.node(), node_b.node());
    let t0 = Instant::now();
    fill_mempool(&na, a.txs)?;
    println!("mempool filled with {} transactions in {:.1} s", a.txs, t0.elapsed().as_secs_f64());
    let tv = call(&na, "getblocktemplate", json!([{"rules": ["mweb", "segwit"]}]))?;
    let text = serde_json::to_string(&tv)?;
    let template = Template::from_json(&text)?;
    if template.transactions.len() < a.txs {
        bail!("the template has {} transactions, wanted {}", template.transactions.len(), a.txs);
    }
    println!("template: {} transactions, {} KiB of JSON, height {}", template.transactions.len(), text.len() / 1024, template.height);
    let payout = call(&na, "getnewaddress", json!([]))?.as_str().unwrap_or_default().to_string();
    let script = address::script_for(&payout, Coin::Litecoin, Network::Regtest)?;
    let cfg = CoinbaseConfig::new(Coin::Litecoin, Network::Regtest);
    let (en1, en2) = ([0u8, 0, 0, 1], [7u8; 8]);
    let job = Job::new(1, &template, &cfg, &script)?;
    // A header whose scrypt misses the target, so the node rejects the
    // block at its first check and every submission costs it the same.
    let mut nonce = 0;
    let header = loop {
        let h = job.header(&en1, &en2, template.curtime as u32, nonce, template.version);
        if !job.target.is_met_by(&scrypt_1024_1_1(&h)) {
            break h;
        }
        nonce += 1;
    };
    let (answer, _) = na.submit_block_bytes(&job.block(&header, &en1, &en2))?;
    if answer != Submitted::Rejected("high-hash".into()) {
        bail!("the node answered {answer:?} to a block below target");
    }

    harness::pin(a.core);
    let stall = StallMeter::start(Some(a.core), Duration::from_millis(1));
    let mut medians: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut all = [harness::histogram(), harness::histogram(), harness::histogram(), harness::histogram(), harness::histogram()];
    for run in 0..runs {
        let mut h = [harness::histogram(), harness::histogram(), harness::histogram(), harness::histogram(), harness::histogram()];
        let cpu0 = harness::thread_cpu_ns();
        for i in 0..iters {
            let t = Instant::now();
            let parsed = Template::from_json(&text)?;
            let parse_ns = t.elapsed().as_nanos() as u64;
            let job = Job::new(i as u64, &parsed, &cfg, &script)?;
            let build_ns = t.elapsed().as_nanos() as u64;
            std::hint::black_box(&job);
            let t = Instant::now();
            let block = job.block(&header, &en1, &en2);
            let assemble_ns = t.elapsed().as_nanos() as u64;
            std::hint::black_box(&block);
            drop(block);
            h[0].record(parse_ns.max(1))?;
            h[1].record(build_ns.max(1))?;
            h[2].record(assemble_ns.max(1))?;
            if i % 4 == 0 {
                // Submission (every 4th iteration, to spare the node).
                let t = Instant::now();
                let block = job.block(&header, &en1, &en2);
                let (answer, written) = na.submit_block_bytes(&block)?;
                let answered = t.elapsed().as_nanos() as u64;
                if answer != Submitted::Rejected("high-hash".into()) {
                    bail!("unexpected answer {answer:?}");
                }
                h[3].record(((written - t).as_nanos() as u64).max(1))?;
                h[4].record(answered.max(1))?;
            }
        }
        let cpu_us = (harness::thread_cpu_ns() - cpu0) as f64 / 1e3 / iters as f64;
        for (k, hist) in h.iter().enumerate() {
            all[k].add(hist)?;
        }
        let names = ["template_parse_us", "job_build_us", "block_assemble_us", "block_submit_us", "node_answer_us"];
        for (k, name) in names.iter().enumerate() {
            medians.entry(name.to_string()).or_default().push(q(&h[k], 0.5));
            medians.entry(format!("{name}_p99")).or_default().push(q(&h[k], 0.99));
        }
        medians.entry("cpu_us_per_iteration".into()).or_default().push(cpu_us);
        println!(
            "  run {run}: parse {:.0} µs, job build {:.0} µs, assemble {:.0} µs, submit (written) {:.0} µs, node answered {:.0} µs (p50)",
            q(&h[0], 0.5),
            q(&h[1], 0.5),
            q(&h[2], 0.5),
            q(&h[3], 0.5),
            q(&h[4], 0.5)
        );
    }
    let labels = ["template parse", "job build", "block assemble", "block submit (written)", "node answered"];
    for (k, l) in labels.iter().enumerate() {
        harness::print_histogram(l, &all[k], 1e3, "µs");
    }
    let stalls = stall.stop();
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("chain"));
    for (k, xs) in &medians {
        let (m, spread) = harness::median_spread(xs);
        out.insert(k.clone(), json!((m * 10.0).round() / 10.0));
        if xs.len() > 1 {
            out.insert(format!("{k}_spread"), json!((spread * 10.0).round() / 10.0));
        }
    }
    out.insert("transactions".into(), json!(template.transactions.len()));
    out.insert("template_json_bytes".into(), json!(text.len()));
    out.insert("block_bytes".into(), json!(job.block(&header, &en1, &en2).len()));
    out.insert("stall_p99_us".into(), json!(stalls.p99_us));
    out.insert("stall_max_us".into(), json!(stalls.max_us));
    out.insert("runs".into(), json!(runs));
    out.insert("settings".into(), json!({"core": a.core, "iterations_per_run": iters, "submit_every": 4}));
    out.insert("machine".into(), harness::machine());
    let line = Value::Object(out);
    println!("{line}");
    Ok(line)
}
