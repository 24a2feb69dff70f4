//! The template task against real litecoind in regtest (two nodes): the
//! first work, new work within moments of a new block (long poll, not
//! polling), failover when a node goes away.
//!
//! Without litecoind the test says so and passes, except under `CI=true`,
//! where a missing peer is a failure.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::job::CoinbaseConfig;
use otedama_net::regtest::{self, Litecoind};
use otedama_net::template_task::{TemplateTask, TemplateTaskConfig, Work};
use serde_json::json;

/// The next work at `height` or above (a refresh of older work may come
/// first), within `within`.
fn work_at(rx: &mpsc::Receiver<Work>, height: u32, within: Duration) -> (Work, Duration) {
    let t = Instant::now();
    loop {
        let left = within.checked_sub(t.elapsed()).unwrap_or_else(|| panic!("no work at height {height} within {within:?}"));
        let w = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no work at height {height} within {within:?}"));
        if w.job.height >= height {
            return (w, t.elapsed());
        }
    }
}

#[test]
fn new_blocks_reach_the_template_task_by_long_poll_and_it_fails_over() {
    if !regtest::litecoind_installed() {
        eprintln!("skipping: litecoind not installed (apt-get install litecoind)");
        return;
    }
    let a = Litecoind::start(None).unwrap();
    let mut b = Litecoind::start(Some(a.p2p)).unwrap();
    let (na, nb) = (a.node(), b.node());
    let call = |n: &otedama_net::node::Node, m: &str, p| n.call(m, p, Duration::from_secs(60)).unwrap();
    call(&na, "createwallet", json!(["w"]));
    let addr = call(&na, "getnewaddress", json!([])).as_str().unwrap().to_string();
    call(&na, "generatetoaddress", json!([5, addr]));

    let mut cfg = TemplateTaskConfig::new(CoinbaseConfig::new(Coin::Litecoin, Network::Regtest), vec![0x51]);
    // Polling would take 20 s: anything faster came by long poll.
    cfg.poll_interval = Duration::from_secs(20);
    let (tx, rx) = mpsc::channel();
    // B first: it learns of A's blocks over P2P, so its long poll is the
    // one that must deliver them.
    let task = TemplateTask::start(vec![nb.clone(), na.clone()], cfg, tx);
    let (first, _) = work_at(&rx, 6, Duration::from_secs(20));
    assert!(first.clean);

    for h in 7..=9 {
        call(&na, "generatetoaddress", json!([1, addr]));
        let (w, took) = work_at(&rx, h, Duration::from_secs(15));
        assert!(w.clean, "a new block makes clean work");
        assert_eq!(w.job.height, h);
        assert!(took < Duration::from_secs(10), "new work after {took:?}");
        let tip = otedama_engine::chain::from_display_hex(call(&na, "getbestblockhash", json!([])).as_str().unwrap()).unwrap();
        assert_eq!(w.job.prev, tip);
    }

    // Node B goes away: A alone still delivers new blocks.
    let _c = Litecoind::start(Some(a.p2p)).unwrap(); // A keeps a peer (a node without peers gives no templates)
    b.kill();
    call(&na, "generatetoaddress", json!([1, addr]));
    let (w, took) = work_at(&rx, 10, Duration::from_secs(15));
    assert_eq!(w.node, 1, "the work came from node A");
    assert!(took < Duration::from_secs(10), "{took:?}");
    task.stop();
}
