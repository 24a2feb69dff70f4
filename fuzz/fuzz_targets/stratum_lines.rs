//! Arbitrary bytes as the lines a Stratum miner sends, through one session
//! of the sans-I/O state machine: every line gets exactly one answer (or,
//! for a scrypt-style share, a verification request), errors are errors,
//! nothing panics, and the session keeps taking lines.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use otedama_engine::chain::address::{Coin, Network};
use otedama_engine::chain::devnet::Devnet;
use otedama_engine::chain::job::{CoinbaseConfig, Job};
use otedama_engine::stratum::jobs::JobBook;
use otedama_engine::stratum::extranonce::ShardExtranonces;
use otedama_engine::stratum::session::{Event, PortRules, Session};
use otedama_hashers::{Algorithm, Family};

fuzz_target!(|data: &[u8]| {
    let rules = Arc::new(PortRules {
        family: Family::Sha256d,
        coin: Coin::Bitcoin,
        network: Network::Regtest,
        extranonce2_size: 8,
        version_mask: 0x1fff_e000,
        difficulty: 1.0,
        min_difficulty: 1e-9,
        max_difficulty: 1e12,
        ntime_future: 7000,
        // Solo sessions (a job variant per payout address) on odd inputs.
        solo: data.first().is_some_and(|b| b & 1 == 1),
    });
    let t = Devnet::new(Algorithm::Sha256d, 1_700_000_000).template(1_700_000_100);
    let job = Arc::new(Job::new(1, &t, &CoinbaseConfig::new(Coin::Bitcoin, Network::Regtest), &[0x51]).unwrap());
    let mut jobs = JobBook::new(4, 1000);
    jobs.push(job, true);
    let mut s = Session::new(rules);
    let mut en1s = ShardExtranonces::new(0, 4);
    let text = String::from_utf8_lossy(data);
    // A fixed prefix gets the session subscribed and authorized, so the
    // fuzzed lines reach share validation too.
    let prefix = "{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"bcrt1qqurswpc8qurswpc8qurswpc8qurswpc8dxm0gk\",\"\"]}\n";
    for (i, line) in prefix.lines().chain(text.lines()).take(64).enumerate() {
        // Every eighth line the session's extranonce1 is taken over (a
        // resume from its own address): moved when it subscribed to
        // extranonce changes, refused otherwise; only notifications result.
        if i % 8 == 7 {
            let mut out = Vec::new();
            s.change_extranonce1(vec![0, 0, 1, i as u8], &mut jobs, &mut out);
            assert!(out.iter().all(|e| matches!(e, Event::Line(l) if l.starts_with("{\"id\":null,\"method\""))), "{out:?}");
        }
        let mut out = Vec::new();
        s.on_line(line, &mut jobs, &mut en1s, 1_700_000_200, &mut out);
        let answers = out.iter().filter(|e| matches!(e, Event::Line(l) if l.starts_with("{\"id\":") && !l.starts_with("{\"id\":null,\"method\""))).count();
        let verify = out.iter().filter(|e| matches!(e, Event::Verify(_))).count();
        assert_eq!(answers + verify, 1, "{line:?} → {out:?}");
        for e in &out {
            if let Event::Line(l) = e {
                assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
                serde_json::from_str::<serde_json::Value>(l).expect("every line we send is JSON");
            }
        }
    }
});
