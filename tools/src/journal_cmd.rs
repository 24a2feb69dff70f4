//! `otedama journal dump|verify|tail|stats|repair DIR`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use otedama_journal::{FileStorage, Journal, Reader, ReaderOptions, Record, kinds, retention, scan, snapshot::Snapshots};

#[derive(Debug, clap::Subcommand)]
pub enum JournalCmd {
    /// Print records.
    Dump {
        dir: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
        /// Payload bytes shown per record (hex).
        #[arg(long, default_value_t = 32)]
        payload_bytes: usize,
        #[arg(long)]
        json: bool,
        /// Also read segments retention moved here.
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Check every segment and record; exit status 1 on damage at or below
    /// the durable watermark.
    Verify {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Follow the journal as records arrive (Ctrl-C stops).
    Tail {
        dir: PathBuf,
        /// Start here (default: after the last record present).
        #[arg(long)]
        from: Option<u64>,
        /// Return only records covered by a completed sync.
        #[arg(long)]
        durable_only: bool,
        /// Exit after this many records.
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value_t = 32)]
        payload_bytes: usize,
        #[arg(long)]
        json: bool,
    },
    /// Segments, records per kind, watermarks, writer, snapshots, readers.
    Stats {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Replay the exchange commands into a fresh engine (or the newest
    /// snapshot's state with --from-snapshot), checking every command's
    /// events against the journaled ones; prints the state hash.
    Replay {
        dir: PathBuf,
        #[arg(long)]
        from_snapshot: bool,
        #[arg(long)]
        json: bool,
    },
    /// Apply retention: remove (or move to `journal.archive_dir`) segments
    /// older than the newest snapshot minus `journal.retention_margin_records`
    /// and already consumed by every registered reader.
    Retain {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Truncate at the first damage, even below the durable watermark, and
    /// report what was dropped.
    Repair {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn storage(dir: &Path) -> Result<Arc<FileStorage>> {
    Ok(Arc::new(FileStorage::existing(dir).with_context(|| format!("journal directory {}", dir.display()))?))
}

fn record_json(r: &Record<'_>, payload_bytes: usize) -> serde_json::Value {
    json!({
        "seq": r.seq,
        "timestamp_ns": r.timestamp_ns,
        "kind": r.kind,
        "kind_name": kinds::name(r.kind),
        "version": r.version,
        "len": r.payload.len(),
        "payload_hex": hex::encode(&r.payload[..r.payload.len().min(payload_bytes)]),
    })
}

fn print_record(r: &Record<'_>, payload_bytes: usize, as_json: bool) {
    if as_json {
        println!("{}", record_json(r, payload_bytes));
    } else {
        let shown = &r.payload[..r.payload.len().min(payload_bytes)];
        let more = if r.payload.len() > payload_bytes { "…" } else { "" };
        println!(
            "{:>12}  t={:<20} kind={:#06x}({}) v{} len={:<6} {}{}",
            r.seq,
            r.timestamp_ns,
            r.kind,
            kinds::name(r.kind).unwrap_or("?"),
            r.version,
            r.payload.len(),
            hex::encode(shown),
            more
        );
    }
}

pub fn run(cmd: JournalCmd, journal_cfg: &crate::config::JournalConfig, engine_cfg: &crate::config::EngineConfig) -> Result<i32> {
    match cmd {
        JournalCmd::Dump { dir, from, limit, payload_bytes, json, archive } => {
            let s = storage(&dir)?;
            let first = if from == 0 { scan(&*s, false)?.first_seq } else { from };
            let mut r = Reader::open(&dir, first, ReaderOptions { archive, durable_only: false })?;
            let mut n = 0;
            while limit.is_none_or(|l| n < l) {
                let Some(rec) = r.try_next()? else { break };
                print_record(&rec, payload_bytes, json);
                n += 1;
            }
            Ok(0)
        }
        JournalCmd::Verify { dir, json } => {
            let s = storage(&dir)?;
            let sc = scan(&*s, false)?;
            let below = sc.damage_below_watermark();
            let last = sc.next_seq - 1;
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": !below,
                        "segments": sc.segments.len(),
                        "records": sc.records,
                        "first_seq": sc.first_seq,
                        "last_seq": last,
                        "persisted_watermark": sc.watermark,
                        "damage": sc.damage,
                        "damage_below_watermark": below,
                        "segments_after_damage": sc.beyond,
                    })
                );
            } else {
                println!(
                    "journal {}: {} segments, records {}..={} ({}), persisted durable watermark {}",
                    dir.display(),
                    sc.segments.len(),
                    sc.first_seq,
                    last,
                    sc.records,
                    sc.watermark
                );
                match &sc.damage {
                    None => println!("ok: every record checks out"),
                    Some(d) if below => println!(
                        "DAMAGED at or below the durable watermark: segment {}, offset {}, sequence {}: {}\n  `otedama journal repair {}` truncates there",
                        d.segment,
                        d.offset,
                        d.seq,
                        d.reason,
                        dir.display()
                    ),
                    Some(d) => println!(
                        "ok up to {last}; unsynced tail ends at segment {}, offset {}, sequence {} ({}); the next open truncates it",
                        d.segment, d.offset, d.seq, d.reason
                    ),
                }
            }
            Ok(if below { 1 } else { 0 })
        }
        JournalCmd::Tail { dir, from, durable_only, count, payload_bytes, json } => {
            let start = match from {
                Some(f) => f,
                None => scan(&*storage(&dir)?, false)?.next_seq,
            };
            let signals = crate::supervisor::SignalFlag::install()?;
            let mut r = Reader::open(&dir, start, ReaderOptions { archive: None, durable_only })?;
            let mut n = 0u64;
            while count.is_none_or(|c| n < c) && signals.get().is_none() {
                if let Some(rec) = r.next_timeout(Duration::from_millis(200))? {
                    print_record(&rec, payload_bytes, json);
                    n += 1;
                }
            }
            Ok(0)
        }
        JournalCmd::Stats { dir, json } => {
            let s = storage(&dir)?;
            let sc = scan(&*s, false)?;
            let mut per_kind: std::collections::BTreeMap<u16, (u64, u64)> = Default::default();
            let mut r = Reader::open(&dir, sc.first_seq, ReaderOptions::default())?;
            let mut payload_total = 0u64;
            while let Some(rec) = r.try_next()? {
                let e = per_kind.entry(rec.kind).or_default();
                e.0 += 1;
                e.1 += rec.payload.len() as u64;
                payload_total += rec.payload.len() as u64;
                if rec.seq + 1 >= sc.next_seq {
                    break;
                }
            }
            let bytes: u64 = sc.segments.iter().map(|s| s.region.len() as u64).sum();
            let snaps = Snapshots::open(&dir, journal_cfg.snapshots_keep)?.list()?;
            let readers = retention::readers(&dir)?;
            let kinds_json: Vec<_> =
                per_kind.iter().map(|(k, (n, b))| json!({"kind": k, "name": kinds::name(*k), "records": n, "payload_bytes": b})).collect();
            let live_published = r.writer_alive().then(|| r.published_seq());
            if json {
                println!(
                    "{}",
                    json!({
                        "segments": sc.segments.len(),
                        "segment_bytes_total": bytes,
                        "records": sc.records,
                        "payload_bytes": payload_total,
                        "first_seq": sc.first_seq,
                        "last_seq": sc.next_seq - 1,
                        "persisted_watermark": sc.watermark,
                        "writer_alive": r.writer_alive(),
                        "published_seq": r.published_seq(),
                        "durable_seq": r.durable_seq(),
                        "kinds": kinds_json,
                        "snapshots": snaps,
                        "readers": readers,
                    })
                );
            } else {
                println!("journal {}", dir.display());
                println!("  segments       {} ({} MiB on disk)", sc.segments.len(), bytes >> 20);
                println!("  records        {} ({}..={}), {} payload bytes", sc.records, sc.first_seq, sc.next_seq - 1, payload_total);
                println!("  watermark      {} persisted", sc.watermark);
                match live_published {
                    Some(p) => println!("  writer         alive: published {p}, durable {}", r.durable_seq()),
                    None => println!("  writer         none"),
                }
                for (k, (n, b)) in &per_kind {
                    println!("  kind {k:#06x} {:<10} {n} records, {b} bytes", kinds::name(*k).unwrap_or("?"));
                }
                for s in &snaps {
                    println!("  snapshot       seq {} ({} bytes){}", s.seq, s.bytes, if s.valid { "" } else { " DAMAGED" });
                }
                for (name, seq) in &readers {
                    println!("  reader         {name} at {seq}");
                }
            }
            Ok(0)
        }
        JournalCmd::Replay { dir, from_snapshot, json } => {
            let (mut state, start, snapshot_seq) = if from_snapshot {
                let snap = Snapshots::open(&dir, journal_cfg.snapshots_keep)?.latest()?.context("no valid snapshot")?;
                let st = otedama_net::recovery::decode_state(&snap.data).map_err(anyhow::Error::msg)?;
                (st, snap.seq + 1, Some(snap.seq))
            } else {
                let ex = otedama_engine::Exchange::new(engine_cfg.limits());
                (otedama_net::gateway::EngineState::fresh(ex), scan(&*storage(&dir)?, false)?.first_seq, None)
            };
            let mut r = Reader::open(&dir, start, ReaderOptions::default())?;
            let t0 = std::time::Instant::now();
            let result = otedama_net::sequencer::replay_with(&mut r, &mut state.exchange, Some(&mut state.sessions), false);
            let exchange = &state.exchange;
            let secs = t0.elapsed().as_secs_f64();
            match result {
                Ok(rep) => {
                    let hash = hex::encode(exchange.state_hash());
                    if json {
                        println!(
                            "{}",
                            json!({"ok": true, "from_snapshot": snapshot_seq, "commands": rep.commands, "events": rep.events, "last_seq": rep.last_seq, "state_hash": hash, "seconds": secs})
                        );
                    } else {
                        println!(
                            "replayed {} commands ({} events) through sequence {}{} in {:.3} s: every command reproduced its journaled events",
                            rep.commands,
                            rep.events,
                            rep.last_seq,
                            snapshot_seq.map(|s| format!(" from the snapshot at {s}")).unwrap_or_default(),
                            secs
                        );
                        println!("state hash {hash}");
                    }
                    Ok(0)
                }
                Err(e) => {
                    if json {
                        println!("{}", json!({"ok": false, "error": e.to_string()}));
                    } else {
                        println!("replay failed: {e}");
                    }
                    Ok(1)
                }
            }
        }
        JournalCmd::Retain { dir, json } => {
            let policy = retention::RetentionPolicy {
                margin_records: journal_cfg.retention_margin_records,
                archive: (!journal_cfg.archive_dir.as_os_str().is_empty()).then(|| journal_cfg.archive_dir.clone()),
            };
            let rep = retention::apply(&dir, journal_cfg.snapshots_keep, &policy)?;
            if json {
                println!("{}", serde_json::to_string(&rep)?);
            } else {
                match rep.snapshot_seq {
                    None => println!("no snapshot yet: every segment is kept"),
                    Some(s) => println!(
                        "newest snapshot covers {s}; segments wholly below {} may go{}",
                        rep.limit_seq,
                        rep.slowest_reader.as_ref().map(|(n, q)| format!(" (slowest reader {n} at {q})")).unwrap_or_default()
                    ),
                }
                for n in &rep.removed {
                    println!("removed {n}");
                }
                for n in &rep.archived {
                    println!("archived {n}");
                }
            }
            Ok(0)
        }
        JournalCmd::Repair { dir, json } => {
            if !dir.is_dir() {
                bail!("{} is not a journal directory", dir.display());
            }
            let opts = otedama_journal::Options { repair: true, durability: otedama_journal::Durability::None, ..journal_cfg.options() };
            let j = Journal::open(&dir, opts)?;
            let rep = j.open_report().clone();
            j.close()?;
            if json {
                println!("{}", serde_json::to_string(&rep)?);
            } else {
                match &rep.truncated_at {
                    None => println!("nothing to repair: records {}..={} intact", rep.first_seq, rep.next_seq - 1),
                    Some(d) => {
                        println!(
                            "truncated at segment {}, offset {}, sequence {} ({}); the journal now ends at {}",
                            d.segment,
                            d.offset,
                            d.seq,
                            d.reason,
                            rep.next_seq - 1
                        );
                        if rep.repaired_below_watermark {
                            println!("this dropped records the journal had reported durable (watermark was {})", rep.persisted_watermark);
                        }
                        for s in &rep.dropped_segments {
                            println!("dropped segment {s}");
                        }
                    }
                }
            }
            Ok(0)
        }
    }
}
