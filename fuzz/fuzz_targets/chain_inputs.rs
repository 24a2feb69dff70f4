//! Arbitrary text as what the chain side parses from outside: a
//! `getblocktemplate` answer (then built into a job, a header and a block)
//! and a payout address for every coin and network. Errors are errors;
//! nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_engine::chain::address::{Coin, Network, script_for};
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::chain::devnet::Devnet;
use otedama_engine::chain::template::Template;
use otedama_hashers::Algorithm;

fuzz_target!(|data: &[u8]| {
    // Raw bytes as a block for the devnet: parsed and checked, refused
    // with a reason (nothing here meets the PoW by chance), never a panic.
    let _ = otedama_engine::chain::block::parse(data);
    let mut d = Devnet::new(Algorithm::Sha256d, 1_700_000_000);
    if d.submit(data).is_ok() {
        assert_eq!(d.height(), 1);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    for coin in [Coin::Bitcoin, Coin::Litecoin] {
        for net in [Network::Mainnet, Network::Testnet, Network::Regtest] {
            if let Ok(script) = script_for(text.trim(), coin, net) {
                assert!(!script.is_empty() && script.len() <= 42);
            }
        }
    }
    // The fast template reader never disagrees with serde_json: same
    // template, same job, or the same refusal.
    let slow: Result<Template<'_>, _> = serde_json::from_str(text);
    let fast = Template::from_json(text);
    assert_eq!(fast.is_ok(), slow.is_ok());
    if let (Ok(f), Ok(s)) = (&fast, &slow) {
        assert_eq!(serde_json::to_value(f).unwrap(), serde_json::to_value(s).unwrap());
        let cfg = CoinbaseConfig::new(Coin::Litecoin, Network::Regtest);
        match (Job::new(1, f, &cfg, &[0x51]), Job::new(1, s, &cfg, &[0x51])) {
            (Ok(a), Ok(b)) => {
                let h = a.header(&[1; 4], &[2; 8], 0, 0, a.version);
                assert_eq!(a.block(&h, &[1; 4], &[2; 8]), b.block(&h, &[1; 4], &[2; 8]));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("fast reader: {:?}, serde_json: {:?}", a.map(|j| j.id), b.map(|j| j.id)),
        }
    }
    let reply = format!(r#"{{"result":{text},"error":null,"id":1}}"#);
    assert_eq!(Template::from_reply(&reply).is_ok(), slow.is_ok());
    if let Ok(t) = fast {
        let cfg = CoinbaseConfig::new(Coin::Litecoin, Network::Regtest);
        if let Ok(job) = Job::new(1, &t, &cfg, &[0x51]) {
            let h = job.header(&[1; 4], &[2; 8], 0, 0, job.version);
            let block = job.block(&h, &[1; 4], &[2; 8]);
            assert_eq!(&block[..80], &h[..]);
            let _ = job.notify_fields();
        }
    }
});
