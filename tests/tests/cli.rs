//! The `otedama` binary as a user meets it: configuration, the supervisor
//! today, subcommands not built yet, and the journal tools.

use std::time::Duration;

use otedama_journal::{Durability, Journal, Options, kinds};
use otedama_tests::{Spawned, otedama, run};
use serde_json::Value;

fn journal_with(dir: &std::path::Path, n: u64) {
    let opts = Options { segment_bytes: 64 * 1024, durability: Durability::Batch, ..Options::default() };
    let mut j = Journal::open(dir, opts).unwrap();
    for i in 1..=n {
        j.append(kinds::TEST, 1, i, format!("record {i}").as_bytes()).unwrap();
    }
    j.close().unwrap();
}

#[test]
fn config_show_applies_flag_env_file_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[journal]\nsegment_bytes = 131072\nprepare_ahead = 3\nflusher_spin_us = 7\n").unwrap();
    let mut c = otedama();
    c.args(["--config", file.to_str().unwrap(), "--journal-segment-bytes", "524288", "config", "show", "--json"]);
    c.env("OTEDAMA_JOURNAL__SEGMENT_BYTES", "262144").env("OTEDAMA_JOURNAL__PREPARE_AHEAD", "4");
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["journal"]["segment_bytes"], 524288, "flag");
    assert_eq!(v["journal"]["prepare_ahead"], 4, "env");
    assert_eq!(v["journal"]["flusher_spin_us"], 7, "file");
    assert_eq!(v["journal"]["durability"], "batch", "default");
    // The TOML form round-trips through the same parser.
    let mut c = otedama();
    c.args(["config", "show"]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    let t: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(t["journal"]["segment_bytes"].as_integer(), Some(64 << 20));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let mut c = otedama();
    c.args(["--journal-segment-bytes", "1000", "config", "show"]);
    let (out, _, stderr) = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("segment_bytes must be a multiple of 4096"), "{stderr}");
    let mut c = otedama();
    c.args(["--config", "/nonexistent/otedama.toml", "config", "show"]);
    let (out, _, stderr) = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn standalone_supervises_the_engine_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = otedama();
    c.args([
        "--data-dir",
        data.to_str().unwrap(),
        "--gateway-listen",
        "127.0.0.1:0",
        "--pool-devnet-rpc",
        "127.0.0.1:0",
        "--stratum-host",
        "127.0.0.1",
        "--stratum-port",
        "0",
        "--api-listen",
        "127.0.0.1:0",
        "standalone",
    ]);
    let mut child = Spawned::start(c);
    let api = child.wait_for_seen_or_new("otedama api: http://");
    let api = api.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let (code, body) = otedama_tests::http_get(&api, "/api/v1/status");
    assert_eq!(code, 200, "{body}");
    child.wait_for_seen_or_new("order entry on");
    // The flags reach the engine, which runs the devnet by default.
    let pool = child.wait_for_seen_or_new("pool chain side");
    assert!(pool.contains("devnet-sha256d (embedded devnet") && !pool.contains(":18460"), "{pool}");
    assert!(pool.contains("Stratum V1 on 127.0.0.1:") && !pool.contains(":3333 "), "{pool}");
    assert!(data.is_dir(), "the data directory is created");
    assert!(data.join("exchange").is_dir(), "the engine's journal lives in the data directory");
    child.signal(libc::SIGTERM);
    let (status, stdout) = child.finish();
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("otedama api: stopped cleanly"), "{stdout}");
    assert!(stdout.contains("otedama engine: stopped cleanly"), "{stdout}");
    assert!(stdout.contains("otedama standalone: stopped cleanly"), "{stdout}");
}

#[test]
fn subcommands_not_built_yet_say_so_and_fail() {
    let mut c = otedama();
    c.arg("tune");
    let (out, _, stderr) = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("not built yet"), "{stderr}");
}

#[test]
fn journal_verify_dump_stats() {
    let dir = tempfile::tempdir().unwrap();
    journal_with(dir.path(), 1500);
    let p = dir.path().to_str().unwrap();

    let mut c = otedama();
    c.args(["journal", "verify", p, "--json"]);
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((v["ok"].as_bool(), v["records"].as_u64(), v["last_seq"].as_u64()), (Some(true), Some(1500), Some(1500)));
    assert_eq!(v["persisted_watermark"], 1500);

    let mut c = otedama();
    c.args(["journal", "dump", p, "--from", "1000", "--limit", "3", "--json"]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["seq"], 1000);
    assert_eq!(lines[0]["kind_name"], "test");
    assert_eq!(lines[0]["payload_hex"], hex_of(b"record 1000"));

    let mut c = otedama();
    c.args(["journal", "stats", p, "--json"]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["records"], 1500);
    assert_eq!(v["kinds"][0]["records"], 1500);
    assert_eq!(v["writer_alive"], false);
    assert!(v["segments"].as_u64().unwrap() > 1);
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn damage_is_reported_by_verify_and_truncated_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    journal_with(dir.path(), 1500);
    let p = dir.path().to_str().unwrap();
    // Flip one payload byte of the first record of the second segment.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().into_string().unwrap()))
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    let second = dir.path().join(&segs[1]);
    let first_seq: u64 = segs[1].trim_end_matches(".seg").parse().unwrap();
    let mut bytes = std::fs::read(&second).unwrap();
    bytes[4096 + 32] ^= 0xff;
    std::fs::write(&second, bytes).unwrap();

    let mut c = otedama();
    c.args(["journal", "verify", p]);
    let (out, stdout, _) = run(c);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("segment {}, offset 4096, sequence {first_seq}", segs[1])), "{stdout}");

    // A writer refuses to open it.
    let err = Journal::open(dir.path(), Options::default()).err().expect("open must fail");
    assert!(err.to_string().contains("otedama journal repair"), "{err}");

    let mut c = otedama();
    c.args(["--log-format", "json", "journal", "repair", p, "--json"]);
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["next_seq"], first_seq);
    assert_eq!(v["repaired_below_watermark"], true);
    assert_eq!(v["truncated_at"]["seq"], first_seq);
    // Logs are JSON objects when asked for.
    let log: Value = serde_json::from_str(stderr.lines().next().expect("a log line")).expect("JSON log line");
    assert_eq!(log["level"], "WARN");

    let mut c = otedama();
    c.args(["journal", "verify", p, "--json"]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["last_seq"].as_u64(), Some(first_seq - 1));
}

#[test]
fn journal_tail_follows_a_live_writer_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 64 * 1024, durability: Durability::Batch, ..Options::default() };
    let mut j = Journal::open(dir.path(), opts).unwrap();
    j.append(kinds::TEST, 1, 0, b"before").unwrap();
    j.sync().unwrap();
    let mut c = otedama();
    c.args(["journal", "tail", dir.path().to_str().unwrap(), "--count", "2000", "--json"]);
    c.stdout(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2000u64 {
        j.append(kinds::TEST, 1, i, &i.to_le_bytes()).unwrap();
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2000);
    assert_eq!(lines[0]["seq"], 2, "tail starts after the records already present");
    assert_eq!(lines[1999]["seq"], 2001);
    j.close().unwrap();
}

#[test]
fn journal_retain_archives_what_the_snapshot_covers() {
    let dir = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    journal_with(dir.path(), 1500);
    let p = dir.path().to_str().unwrap();
    let mut c = otedama();
    c.args(["journal", "retain", p, "--json"]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["snapshot_seq"], Value::Null, "no snapshot: nothing goes");

    otedama_journal::snapshot::Snapshots::open(dir.path(), 3).unwrap().write(1500, b"state").unwrap();
    let mut c = otedama();
    c.args(["journal", "retain", p, "--json"]).env("OTEDAMA_JOURNAL__ARCHIVE_DIR", archive.path());
    let (out, stdout, stderr) = run(c);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let archived = v["archived"].as_array().unwrap().len();
    assert!(archived >= 1);
    assert_eq!(std::fs::read_dir(archive.path()).unwrap().count(), archived);
    // dump with the archive still sees every record.
    let mut c = otedama();
    c.args(["journal", "dump", p, "--from", "1", "--json", "--archive", archive.path().to_str().unwrap()]);
    let (out, stdout, _) = run(c);
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 1500);
}

#[test]
fn journal_replay_reaches_the_live_state_hash() {
    use otedama_engine::workload::{Mix, Workload, limits};
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), Options { segment_bytes: 8 << 20, durability: Durability::None, ..Options::default() }).unwrap();
    let mut seq = otedama_net::sequencer::Sequencer::new(otedama_engine::Exchange::new(limits()), j);
    let mut w = Workload::new(Mix::Sweep, 3);
    for c in w.setup() {
        seq.submit(&c).unwrap();
    }
    let mut ev = Vec::new();
    for i in 0..20_000 {
        let c = w.next_command();
        let (s, events) = seq.submit(&c).unwrap();
        ev.clear();
        ev.extend_from_slice(events);
        w.observe(&ev);
        if i == 10_000 {
            let copy = otedama_engine::Exchange::restore(&seq.exchange().snapshot()).unwrap();
            let state = otedama_net::recovery::encode_state(&otedama_net::gateway::EngineState::fresh(copy));
            otedama_journal::snapshot::Snapshots::open(dir.path(), 3).unwrap().write(s + 1, &state).unwrap();
        }
    }
    let live = hex_of(&seq.exchange().state_hash());
    let (_, j) = seq.into_parts();
    j.close().unwrap();
    let l = limits();
    let p = dir.path().to_str().unwrap();
    for extra in [&[][..], &["--from-snapshot"][..]] {
        let mut c = otedama();
        c.args(["--engine-accounts-max", &l.accounts_max.to_string(), "--engine-assets-max", &l.assets_max.to_string()]);
        c.args(["--engine-instruments-max", &l.instruments_max.to_string(), "--engine-orders-max", &l.orders_max.to_string()]);
        c.args(["--engine-levels-max", &l.levels_max.to_string(), "--engine-fee-account", &l.fee_account.0.to_string()]);
        c.args(["journal", "replay", p, "--json"]).args(extra);
        let (out, stdout, stderr) = run(c);
        assert!(out.status.success(), "{stderr}");
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["state_hash"], live, "{extra:?}");
    }
}
