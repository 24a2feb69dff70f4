//! Replay determinism: journal a random run, replay it into a fresh engine
//! (every command must reproduce its journaled events, and the final state
//! hash must equal the live one); restore from a snapshot taken mid-way and
//! replay the rest: same hash again. A tampered events record is caught.

use otedama_engine::workload::{Mix, Workload, limits};
use otedama_engine::{Event, Exchange};
use otedama_journal::snapshot::Snapshots;
use otedama_journal::{Durability, Journal, Options, Reader, kinds};
use otedama_net::sequencer::{ReplayError, Sequencer, replay};

fn opts() -> Options {
    Options { segment_bytes: 8 << 20, durability: Durability::None, ..Options::default() }
}

#[test]
fn journaled_run_replays_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), opts()).unwrap();
    let mut seq = Sequencer::new(Exchange::new(limits()), journal);
    let mut w = Workload::new(Mix::ExchangeCore, 11);
    for c in w.setup() {
        seq.submit(&c).unwrap();
    }
    let snaps = Snapshots::open(dir.path(), 2).unwrap();
    let mut snap_at = 0;
    let mut ev: Vec<Event> = Vec::new();
    for i in 0..100_000 {
        let c = w.next_command();
        let (s, events) = seq.submit(&c).unwrap();
        ev.clear();
        ev.extend_from_slice(events);
        w.observe(&ev);
        if i == 50_000 {
            // The snapshot covers everything through this command's events.
            snap_at = s + 1;
            snaps.write(snap_at, &seq.exchange().snapshot()).unwrap();
        }
    }
    let live_hash = seq.exchange().state_hash();
    let (_, journal) = seq.into_parts();
    journal.close().unwrap();

    // Full replay into a fresh engine.
    let mut fresh = Exchange::new(limits());
    let mut r = Reader::open(dir.path(), 1, Default::default()).unwrap();
    let rep = replay(&mut r, &mut fresh).unwrap();
    assert_eq!(rep.commands, 100_000 + w.setup().len() as u64);
    assert_eq!(fresh.state_hash(), live_hash);
    // The same on two threads (what recovery runs), batch boundaries and all.
    let mut fresh2 = Exchange::new(limits());
    let r = Reader::open(dir.path(), 1, Default::default()).unwrap();
    assert_eq!(otedama_net::sequencer::replay_pipelined(r, &mut fresh2, None).unwrap(), rep);
    assert_eq!(fresh2.state_hash(), live_hash);

    // Snapshot + the rest.
    let snap = snaps.latest().unwrap().unwrap();
    assert_eq!(snap.seq, snap_at);
    let mut restored = Exchange::restore(&snap.data).unwrap();
    let mut r = Reader::open(dir.path(), snap.seq + 1, Default::default()).unwrap();
    let rep2 = replay(&mut r, &mut restored).unwrap();
    assert_eq!(rep2.commands, 100_000 - 50_001);
    assert_eq!(restored.state_hash(), live_hash);
}

#[test]
fn a_tampered_events_record_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path(), opts()).unwrap();
    let w = Workload::new(Mix::ExchangeCore, 12);
    let mut ex = Exchange::new(limits());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let setup = w.setup();
    let c = setup[0];
    otedama_engine::codec::encode_command(&c, &mut buf);
    let s = j.append(kinds::EXCHANGE_COMMAND, 1, 0, &buf).unwrap();
    ex.apply(&c, &mut out);
    // Journal a different outcome than the engine produces.
    buf.clear();
    otedama_engine::codec::encode_events(s, &[Event::Rejected { reason: otedama_engine::Reject::InstrumentExists }], &mut buf);
    j.append(kinds::EXCHANGE_EVENTS, 1, 0, &buf).unwrap();
    j.close().unwrap();
    let mut fresh = Exchange::new(limits());
    let mut r = Reader::open(dir.path(), 1, Default::default()).unwrap();
    match replay(&mut r, &mut fresh) {
        Err(ReplayError::Mismatch { seq, index: 0, .. }) => assert_eq!(seq, s),
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // The two-thread replay recovery runs says the same.
    let mut fresh = Exchange::new(limits());
    let r = Reader::open(dir.path(), 1, Default::default()).unwrap();
    match otedama_net::sequencer::replay_pipelined(r, &mut fresh, None) {
        Err(ReplayError::Mismatch { seq, index: 0, .. }) => assert_eq!(seq, s),
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// Journals one setup command followed by `events` as its events record.
fn journal_with_events_payload(dir: &std::path::Path, events: impl FnOnce(u64) -> Vec<u8>) -> u64 {
    let mut j = Journal::open(dir, opts()).unwrap();
    let mut buf = Vec::new();
    let c = Workload::new(Mix::ExchangeCore, 12).setup()[0];
    otedama_engine::codec::encode_command(&c, &mut buf);
    let s = j.append(kinds::EXCHANGE_COMMAND, 1, 0, &buf).unwrap();
    j.append(kinds::EXCHANGE_EVENTS, 1, 0, &events(s)).unwrap();
    j.close().unwrap();
    s
}

#[test]
fn an_events_record_that_does_not_decode_is_a_decode_error() {
    // The replay compares encodings; a record that is not a valid encoding
    // must still be reported as what it is, by both replays.
    type Payload = Box<dyn Fn(u64) -> Vec<u8>>;
    let cases: [(&str, Payload); 3] = [
        ("too short to name its command", Box::new(|_| vec![1, 2, 3])),
        (
            "an unknown event tag",
            Box::new(|s| {
                let mut b = s.to_le_bytes().to_vec();
                b.extend_from_slice(&1u32.to_le_bytes());
                b.push(0xee);
                b
            }),
        ),
        (
            "a valid encoding with a byte left over",
            Box::new(|s| {
                let mut b = Vec::new();
                otedama_engine::codec::encode_events(s, &[], &mut b);
                b.push(0);
                b
            }),
        ),
    ];
    for (what, payload) in cases {
        let dir = tempfile::tempdir().unwrap();
        let s = journal_with_events_payload(dir.path(), payload);
        let mut r = Reader::open(dir.path(), 1, Default::default()).unwrap();
        match replay(&mut r, &mut Exchange::new(limits())) {
            Err(ReplayError::Decode { seq, .. }) => assert_eq!(seq, s + 1, "{what}"),
            other => panic!("{what}: expected a decode error, got {other:?}"),
        }
        let r = Reader::open(dir.path(), 1, Default::default()).unwrap();
        match otedama_net::sequencer::replay_pipelined(r, &mut Exchange::new(limits()), None) {
            Err(ReplayError::Decode { seq, .. }) => assert_eq!(seq, s + 1, "{what}"),
            other => panic!("{what}: expected a decode error, got {other:?}"),
        }
    }
}

#[test]
fn an_events_record_for_another_command_is_missing_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = journal_with_events_payload(dir.path(), |s| {
        let mut b = Vec::new();
        otedama_engine::codec::encode_events(s + 7, &[], &mut b);
        b
    });
    let mut r = Reader::open(dir.path(), 1, Default::default()).unwrap();
    match replay(&mut r, &mut Exchange::new(limits())) {
        Err(ReplayError::MissingEvents { seq }) => assert_eq!(seq, s),
        other => panic!("expected missing events, got {other:?}"),
    }
}
