//! The recovery figures of `otedama bench gateway`: how fast a restart
//! rebuilds the engine from its journal (`recovery::recover`, exactly what
//! `otedama engine` runs at start), and how fast the replayer serves a
//! client's missed messages from the journal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use otedama_engine::Exchange;
use otedama_engine::workload::{self, Mix, Workload};
use otedama_journal::snapshot::Snapshots;
use otedama_journal::{Durability, FileStorage, Journal, Options, Storage};
use otedama_net::client::{Client, ClientError, LoginOptions};
use otedama_net::gateway::{EngineState, Gateway, GatewayConfig, Poll};
use otedama_net::keys::KeyStore;
use otedama_net::recovery::{encode_state, recover};
use otedama_net::sequencer::Sequencer;
use otedama_net::wire::{self, ServerMsg};

use crate::harness::{self, median_spread};

/// The engine's defaults (64 MiB segments), without syncs.
fn opts() -> Options {
    Options { durability: Durability::None, ..Options::default() }
}

/// One restart: (seconds in all, the report).
fn restart(storage: &Arc<dyn Storage>, snaps: Option<&Snapshots>, live: [u8; 32]) -> Result<(f64, otedama_net::recovery::RecoveryReport)> {
    let t = Instant::now();
    let (state, journal, rep) = recover(storage.clone(), opts(), snaps, workload::limits())?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(state.exchange.state_hash() == live, "recovery did not reach the live state");
    journal.close()?;
    Ok((secs, rep))
}

/// Writes `commands` commands of exchange-core's mix through the sequencer
/// (a snapshot half-way), then restarts from the journal `runs` times on
/// `core`, the way `otedama engine` starts: from the start of the journal;
/// from the snapshot with the whole journal kept; and from the snapshot
/// after retention removed the segments it covers (`otedama journal
/// retain`, what an operator who takes snapshots runs).
pub fn recovery_speed(parent: Option<&std::path::Path>, commands: usize, runs: usize, core: usize) -> Result<Value> {
    let dir = match parent {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    };
    let jdir = dir.path().join("exchange");
    let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(&jdir)?);
    let mut seq = Sequencer::new(Exchange::new(workload::limits()), Journal::open_with(storage.clone(), opts())?);
    let mut w = Workload::new(Mix::ExchangeCore, 42);
    for c in w.setup() {
        seq.submit(&c)?;
    }
    let snaps = Snapshots::open(&jdir, 2)?;
    let mut ev = Vec::new();
    let t = Instant::now();
    for i in 0..commands {
        let c = w.next_command();
        let (s, events) = seq.submit(&c)?;
        ev.clear();
        ev.extend_from_slice(events);
        w.observe(&ev);
        if i == commands / 2 {
            let copy = Exchange::restore(&seq.exchange().snapshot()).map_err(anyhow::Error::msg)?;
            snaps.write(s + 1, &encode_state(&EngineState::fresh(copy)))?;
        }
    }
    let live = seq.exchange().state_hash();
    let (_, j) = seq.into_parts();
    j.close()?;
    // Written back before the restarts, so the kernel flushing a fresh
    // journal does not overlap what is measured.
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    println!(
        "  restart: journal of {commands} commands (exchange-core mix) written in {:.1} s; a snapshot half-way",
        t.elapsed().as_secs_f64()
    );
    harness::pin(core);
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut reps: [Option<otedama_net::recovery::RecoveryReport>; 3] = Default::default();
    let labels = ["from the start of the journal", "from the snapshot, whole journal kept", "from the snapshot, after retention"];
    for run in 0..runs {
        for (k, times) in times.iter_mut().enumerate().take(2) {
            let (secs, rep) = restart(&storage, (k == 1).then_some(&snaps), live)?;
            println!(
                "  restart run {} {}: {} events in {secs:.3} s (journal open {:.3} s, snapshot load {:.3} s, replay {:.3} s): {:.1} M events/s",
                run + 1,
                labels[k],
                rep.events,
                rep.open_s,
                rep.snapshot_load_s,
                rep.replay_s,
                rep.events as f64 / secs / 1e6
            );
            times.push(secs);
            reps[k] = Some(rep);
        }
    }
    let policy = otedama_journal::retention::RetentionPolicy::default();
    let removed = otedama_journal::retention::apply(&jdir, 2, &policy)?.removed.len();
    for run in 0..runs {
        let (secs, rep) = restart(&storage, Some(&snaps), live)?;
        println!(
            "  restart run {} {} ({removed} segments removed): {} events in {secs:.3} s (journal open {:.3} s, snapshot load {:.3} s, replay {:.3} s): {:.1} M events/s",
            run + 1,
            labels[2],
            rep.events,
            rep.open_s,
            rep.snapshot_load_s,
            rep.replay_s,
            rep.events as f64 / secs / 1e6
        );
        times[2].push(secs);
        reps[2] = Some(rep);
    }
    let mut out = serde_json::Map::new();
    let keys = ["recovery_full", "recovery_snapshot_whole_journal", "recovery_snapshot_retained"];
    let mut per_million = [0.0; 3];
    for k in 0..3 {
        let (m, spread) = median_spread(&times[k]);
        let events = reps[k].as_ref().map_or(0, |r| r.events);
        per_million[k] = m / (events as f64 / 1e6);
        println!(
            "  restart {}: median {m:.3} s (spread {spread:.3} s) for {events} events: {:.4} s per million, {:.1} M events/s",
            labels[k],
            per_million[k],
            events as f64 / m / 1e6
        );
        out.insert(format!("{}_s", keys[k]), json!(m));
        out.insert(format!("{}_s_spread", keys[k]), json!(spread));
        out.insert(format!("{}_events", keys[k]), json!(events));
        out.insert(format!("{}_s_per_million_events", keys[k]), json!(per_million[k]));
    }
    // The headline: a restart from the newest snapshot plus the replay of
    // what follows it, with retention applied.
    out.insert("recovery_s_per_million_events".into(), json!(per_million[2]));
    out.insert("recovery_events_per_sec".into(), json!(1e6 / per_million[2]));
    Ok(Value::Object(out))
}

/// Logs in, retrying while the engine still holds the previous session.
fn login(addr: SocketAddr, key: (u64, [u8; 32]), opts: LoginOptions) -> Result<Client> {
    let t = Instant::now();
    loop {
        match Client::login_with(addr, key.0, key.1, opts) {
            Ok(c) => return Ok(c),
            Err(ClientError::LoginRejected(2)) if t.elapsed() < Duration::from_secs(5) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A gateway in this process (I/O and engine shards in one thread on
/// `engine_core`); one session's stream grows to `2 × orders` messages,
/// then the client logs in again from sequence 1, `runs` times, on
/// `client_core`, and reads the whole replay.
pub fn replay_speed(parent: Option<&std::path::Path>, orders: usize, runs: usize, engine_core: usize, client_core: usize) -> Result<Value> {
    let dir = match parent {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    };
    let kp = otedama_net::keys::path_in(dir.path());
    let mut ks = KeyStore::default();
    let admin = ks.add(0, true, "bench admin")?;
    let trader = ks.add(1, false, "bench")?;
    ks.save(&kp)?;
    let mut cfg = GatewayConfig::parking("127.0.0.1:0".parse().expect("address"), kp);
    cfg.io_cores = vec![Some(engine_core)];
    cfg.engine_core = Some(engine_core);
    cfg.io_poll = Poll::Park;
    cfg.engine_poll = Poll::Park;
    cfg.outbound_queue_bytes = 16 << 20;
    let limits = otedama_engine::Limits {
        accounts_max: 16,
        assets_max: 4,
        instruments_max: 2,
        orders_max: 1 << 16,
        levels_max: 1 << 20,
        fee_account: otedama_engine::AccountId(0),
    };
    let journal = Journal::open(dir.path().join("exchange"), opts())?;
    let gw = Gateway::start(cfg, EngineState::fresh(Exchange::new(limits)), journal)?;
    let addr = gw.local_addr();
    crate::gateway::setup(addr, (admin.id, admin.secret), 1)?;
    // Build the stream: IOC buys that find nothing (Accepted, then
    // Canceled as unfilled), pipelined a thousand at a time.
    let key = (trader.id, trader.secret);
    let mut c = login(addr, key, LoginOptions::default())?;
    let t = Instant::now();
    let mut got = 0u64;
    for _ in 0..orders / 1000 {
        for _ in 0..1000 {
            let cs = c.take_client_seq();
            c.queue(|b| {
                wire::NewOrder {
                    client_seq: cs,
                    account: 0,
                    instrument: 1,
                    side: 0,
                    ord_type: 0,
                    tif: 1,
                    flags: 0,
                    reserved: 0,
                    price: 1,
                    qty: 1,
                    budget: 0,
                }
                .push(b)
            });
        }
        c.flush()?;
        // Each order: Accepted, then Canceled (unfilled).
        let want = got + 2000;
        while got < want {
            if c.recv()?.seq() != 0 {
                got += 1;
            }
        }
    }
    let total = c.next_seq - 1;
    drop(c);
    println!("  replay: a session stream of {total} messages built in {:.1} s", t.elapsed().as_secs_f64());
    let mut rates = Vec::new();
    let mut cpu = Vec::new();
    let handle = std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>)> {
        harness::pin(client_core);
        for run in 0..runs {
            let cpu0 = harness::process_cpu_ns();
            let t = Instant::now();
            let mut c = login(addr, key, LoginOptions { next_seq: 1, ..Default::default() })?;
            anyhow::ensure!(c.next_seq == 1, "the server did not replay from 1");
            let mut n = 0u64;
            while n < total {
                match c.recv()? {
                    ServerMsg::Heartbeat(_) => {}
                    m => {
                        anyhow::ensure!(m.seq() == n + 1, "replay out of order");
                        n += 1;
                    }
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let ns = (harness::process_cpu_ns() - cpu0) as f64 / total as f64;
            println!(
                "  replay run {}: {total} messages in {secs:.3} s: {:.2} M messages/s, {ns:.0} ns CPU per message (process)",
                run + 1,
                total as f64 / secs / 1e6
            );
            rates.push(total as f64 / secs);
            cpu.push(ns);
        }
        Ok((rates, cpu))
    });
    let (rates, cpu) = handle.join().map_err(|_| anyhow::anyhow!("replay client panicked"))??;
    gw.shutdown().map_err(anyhow::Error::msg).context("stopping the gateway")?;
    let (r, rs) = median_spread(&rates);
    let (c, _) = median_spread(&cpu);
    println!("  replay median: {:.2} M messages/s (spread {:.2} M), {c:.0} ns CPU per message", r / 1e6, rs / 1e6);
    Ok(json!({
        "replay_msgs_per_sec": r,
        "replay_msgs_per_sec_spread": rs,
        "replay_messages": total,
        "replay_cpu_ns_per_msg": c,
    }))
}
