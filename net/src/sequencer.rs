//! The engine shard's core loop step, without the rings: journal each
//! command (with its origin: the session's key and `client_seq`), apply
//! it, journal the events it produced. And the inverse: replay a journal
//! into an exchange (and the session book), checking that every command
//! reproduces the events that were journaled with it.

use otedama_engine::codec::{CodecError, decode_command, decode_events, encode_command, encode_events};
use otedama_engine::{Command, Event, Exchange};
use otedama_journal::{Journal, JournalError, Reader, kinds};

use crate::sessions::{self, SessionBook, SessionOpen};

/// The version of command records this build writes (2: with the envelope).
pub const COMMAND_VERSION: u16 = 2;

/// Journal, then apply, then journal the events.
pub struct Sequencer {
    exchange: Exchange,
    journal: Journal,
    buf: Vec<u8>,
    events: Vec<Event>,
}

impl Sequencer {
    pub fn new(exchange: Exchange, journal: Journal) -> Sequencer {
        Sequencer { exchange, journal, buf: Vec::with_capacity(64 << 10), events: Vec::with_capacity(4096) }
    }

    /// Journals `cmd` with no origin, applies it and journals its events;
    /// returns the command's journal sequence and the events.
    pub fn submit(&mut self, cmd: &Command) -> Result<(u64, &[Event]), JournalError> {
        let s = self.submit_from(0, 0, cmd)?;
        Ok((s.command_seq, &self.events))
    }

    /// Journals `cmd` with its origin (key id, 0 for none, and
    /// `client_seq`), applies it and journals its events.
    pub fn submit_from(&mut self, origin_key: u64, client_seq: u64, cmd: &Command) -> Result<Submitted<'_>, JournalError> {
        self.buf.clear();
        sessions::encode_envelope(origin_key, client_seq, &mut self.buf);
        encode_command(cmd, &mut self.buf);
        let command_seq = self.journal.append(kinds::EXCHANGE_COMMAND, COMMAND_VERSION, cmd.ts, &self.buf)?;
        self.events.clear();
        self.exchange.apply(cmd, &mut self.events);
        self.buf.clear();
        encode_events(command_seq, &self.events, &mut self.buf);
        let events_seq = self.journal.append(kinds::EXCHANGE_EVENTS, 1, cmd.ts, &self.buf)?;
        Ok(Submitted { command_seq, events_seq, events: &self.events })
    }

    /// Journals a session record (`session_open` or `session_close`).
    pub fn append_session(&mut self, kind: u16, ts: u64, payload: &[u8]) -> Result<u64, JournalError> {
        self.journal.append(kind, 1, ts, payload)
    }

    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    pub fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    pub fn into_parts(self) -> (Exchange, Journal) {
        (self.exchange, self.journal)
    }
}

/// What [`Sequencer::submit_from`] journaled and produced.
pub struct Submitted<'a> {
    pub command_seq: u64,
    /// The events record: once it is durable, so is the command.
    pub events_seq: u64,
    pub events: &'a [Event],
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub commands: u64,
    pub events: u64,
    /// Journal sequence of the last record consumed (0: none).
    pub last_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("record {seq}: {err}")]
    Decode { seq: u64, err: CodecError },
    #[error("record {seq}: {err}")]
    Session { seq: u64, err: sessions::RecordError },
    #[error("command {seq} comes from key {key:016x}, which never logged in before it")]
    UnknownOrigin { seq: u64, key: u64 },
    #[error("command {seq} has no events record after it")]
    MissingEvents { seq: u64 },
    #[error("command {seq}: replay produced different events (event {index}: journaled {journaled}, replayed {replayed})")]
    Mismatch { seq: u64, index: usize, journaled: String, replayed: String },
}

/// Numbers a replayed command's events for the session names, as the
/// engine shard did when it applied the command.
fn route_replayed(book: &mut SessionBook, origin_key: u64, client_seq: u64, seq: u64, events: &[Event]) -> Result<(), ReplayError> {
    let origin = match origin_key {
        0 => None,
        k => Some(book.find(k).ok_or(ReplayError::UnknownOrigin { seq, key: k })?),
    };
    if let Some(o) = origin {
        book.take_client_seq(o, client_seq);
    }
    for ev in events {
        book.route(origin, client_seq, seq, ev, |_, _, _| {});
    }
    Ok(())
}

/// Replays every exchange command the reader returns into `exchange`,
/// comparing the events it produces with the journaled ones.
pub fn replay(reader: &mut Reader, exchange: &mut Exchange) -> Result<ReplayReport, ReplayError> {
    replay_with(reader, exchange, None, false)
}

/// One record's worth of replay work, decoded.
enum Step {
    Open(SessionOpen),
    Register(SessionOpen),
    Close(u64),
    /// A command, its origin, and its journaled events record's payload
    /// (`Batch::events[from..to]`, as stored: `engine/FORMAT.md`).
    Command {
        seq: u64,
        origin_key: u64,
        client_seq: u64,
        cmd: Command,
        from: u32,
        to: u32,
    },
}

/// Decoded records, handed from the decoding stage to the applying one.
#[derive(Default)]
struct Batch {
    steps: Vec<Step>,
    /// The journaled events records' payloads, back to back. The applier
    /// compares them with the encoding of the events it produces: the
    /// encoding is canonical and its decoder strict (every field checked,
    /// nothing left over), so equal bytes are equal events, and the
    /// decoding stage, the slower of the two, only copies them.
    events: Vec<u8>,
    /// Last record consumed.
    last_seq: u64,
    /// The decoder stopped here: the journal's end (`None` inside), or an
    /// error after the steps above.
    end: Option<Option<ReplayError>>,
}

const BATCH_STEPS: usize = 1024;

/// Reads and decodes records into `b` until it holds `max` steps or the
/// journal ends (`b.end`), pairing each command with its events record.
fn decode_into(reader: &mut Reader, b: &mut Batch, max: usize, tailing: bool) {
    let r = (|| -> Result<bool, ReplayError> {
        while b.steps.len() < max {
            let (seq, origin_key, client_seq, cmd) = {
                let Some(rec) = reader.try_next()? else { return Ok(false) };
                b.last_seq = rec.seq;
                let bad = |err| ReplayError::Session { seq: rec.seq, err };
                match rec.kind {
                    kinds::EXCHANGE_COMMAND => {}
                    kinds::SESSION_OPEN => {
                        b.steps.push(Step::Open(SessionOpen::decode(rec.payload).map_err(bad)?));
                        continue;
                    }
                    kinds::SESSION_REGISTER => {
                        b.steps.push(Step::Register(SessionOpen::decode(rec.payload).map_err(bad)?));
                        continue;
                    }
                    kinds::SESSION_CLOSE => {
                        b.steps.push(Step::Close(sessions::decode_close(rec.payload).map_err(bad)?.0));
                        continue;
                    }
                    _ => continue,
                }
                let (origin_key, client_seq, body) = sessions::split_envelope(rec.version, rec.payload).map_err(bad)?;
                (rec.seq, origin_key, client_seq, decode_command(body).map_err(|err| ReplayError::Decode { seq: rec.seq, err })?)
            };
            let next = if tailing { reader.next_timeout(std::time::Duration::from_secs(5))? } else { reader.try_next()? };
            let Some(rec) = next else { return Err(ReplayError::MissingEvents { seq }) };
            b.last_seq = rec.seq;
            if rec.kind != kinds::EXCHANGE_EVENTS {
                return Err(ReplayError::MissingEvents { seq });
            }
            // The payload starts with the sequence of the command it answers.
            let Some(of) = rec.payload.get(..8) else {
                return Err(ReplayError::Decode { seq: rec.seq, err: CodecError::Truncated });
            };
            if u64::from_le_bytes(of.try_into().expect("8 bytes")) != seq {
                return Err(ReplayError::MissingEvents { seq });
            }
            let from = b.events.len() as u32;
            b.events.extend_from_slice(rec.payload);
            b.steps.push(Step::Command { seq, origin_key, client_seq, cmd, from, to: b.events.len() as u32 });
        }
        Ok(true)
    })();
    match r {
        Ok(true) => {}
        Ok(false) => b.end = Some(None),
        Err(e) => b.end = Some(Some(e)),
    }
}

/// Applies a batch: every command must reproduce its journaled events.
fn apply_batch(
    b: &Batch,
    exchange: &mut Exchange,
    mut book: Option<&mut SessionBook>,
    produced: &mut Vec<Event>,
    encoded: &mut Vec<u8>,
    report: &mut ReplayReport,
) -> Result<(), ReplayError> {
    for step in &b.steps {
        match step {
            Step::Open(o) => {
                if let Some(book) = book.as_deref_mut() {
                    book.open(&o.binding, o.flags);
                }
            }
            Step::Register(o) => {
                if let Some(book) = book.as_deref_mut() {
                    book.register(&o.binding);
                }
            }
            Step::Close(key) => {
                if let Some(book) = book.as_deref_mut() {
                    book.close(*key);
                }
            }
            Step::Command { seq, origin_key, client_seq, cmd, from, to } => {
                produced.clear();
                exchange.apply(cmd, produced);
                encoded.clear();
                encode_events(*seq, produced, encoded);
                let journaled = &b.events[*from as usize..*to as usize];
                if encoded.as_slice() != journaled {
                    return Err(mismatch(*seq, produced, journaled));
                }
                if let Some(book) = book.as_deref_mut() {
                    route_replayed(book, *origin_key, *client_seq, *seq, produced)?;
                }
                report.commands += 1;
                report.events += produced.len() as u64;
            }
        }
    }
    Ok(())
}

/// The error for a command whose replayed events (`produced`) encode
/// differently from its journaled events record (`journaled`, the payload
/// of record `seq + 1`): which event differs, or why the record does not
/// decode.
fn mismatch(seq: u64, produced: &[Event], journaled: &[u8]) -> ReplayError {
    let mut decoded = Vec::new();
    if let Err(err) = decode_events(journaled, &mut decoded) {
        return ReplayError::Decode { seq: seq + 1, err };
    }
    let index = produced.iter().zip(&decoded).position(|(a, b)| a != b).unwrap_or(produced.len().min(decoded.len()));
    ReplayError::Mismatch {
        seq,
        index,
        journaled: decoded.get(index).map(|e| format!("{e:?}")).unwrap_or_else(|| "nothing".into()),
        replayed: produced.get(index).map(|e| format!("{e:?}")).unwrap_or_else(|| "nothing".into()),
    }
}

/// [`replay`], also replaying the session records and the commands'
/// origins into `book`, so every session name's numbering is rebuilt.
/// `tailing`: the journal is being written (a follower); a command whose
/// events record is not published yet is waited for (up to 5 s), not an
/// error.
pub fn replay_with(
    reader: &mut Reader,
    exchange: &mut Exchange,
    mut book: Option<&mut SessionBook>,
    tailing: bool,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport { commands: 0, events: 0, last_seq: 0 };
    let (mut produced, mut encoded) = (Vec::with_capacity(4096), Vec::with_capacity(1 << 16));
    let mut b = Batch::default();
    loop {
        b.steps.clear();
        b.events.clear();
        decode_into(reader, &mut b, BATCH_STEPS, tailing);
        apply_batch(&b, exchange, book.as_deref_mut(), &mut produced, &mut encoded, &mut report)?;
        if b.last_seq != 0 {
            report.last_seq = b.last_seq;
        }
        match b.end.take() {
            None => {}
            Some(None) => return Ok(report),
            Some(Some(e)) => return Err(e),
        }
    }
}

/// [`replay_with`] on two threads: one reads and checks records and
/// decodes the commands ahead, batches of a thousand at a time, copying
/// the events records as stored; the calling thread applies the commands
/// and compares the encoding of what they produce with those bytes. What
/// recovery runs at start, when both cores are free.
pub fn replay_pipelined(reader: Reader, exchange: &mut Exchange, mut book: Option<&mut SessionBook>) -> Result<ReplayReport, ReplayError> {
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Batch>(4);
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Batch>(6);
    for _ in 0..6 {
        let _ = free_tx.send(Batch::default());
    }
    std::thread::scope(|sc| {
        sc.spawn(move || {
            // Named for profiles and `top -H`.
            // SAFETY: a NUL-terminated name under 16 bytes, for this thread.
            unsafe { libc::pthread_setname_np(libc::pthread_self(), c"replay-decode".as_ptr()) };
            // Free to run on any core (a pinned caller's affinity is
            // inherited): the point is to run beside the applier.
            otedama_journal::cpus::unpin_current_thread();
            let mut reader = reader;
            // Ends when the applier stops taking batches (an error) or the
            // journal ends.
            while let Ok(mut b) = free_rx.recv() {
                b.steps.clear();
                b.events.clear();
                b.end = None;
                decode_into(&mut reader, &mut b, BATCH_STEPS, false);
                let done = b.end.is_some();
                if full_tx.send(b).is_err() || done {
                    return;
                }
            }
        });
        let mut report = ReplayReport { commands: 0, events: 0, last_seq: 0 };
        let (mut produced, mut encoded) = (Vec::with_capacity(4096), Vec::with_capacity(1 << 16));
        let result = loop {
            let Ok(mut b) = full_rx.recv() else { break Ok(report) };
            if let Err(e) = apply_batch(&b, exchange, book.as_deref_mut(), &mut produced, &mut encoded, &mut report) {
                break Err(e);
            }
            if b.last_seq != 0 {
                report.last_seq = b.last_seq;
            }
            match b.end.take() {
                None => {}
                Some(None) => break Ok(report),
                Some(Some(e)) => break Err(e),
            }
            let _ = free_tx.send(b);
        };
        // Unblocks the decoder if it is waiting for a free batch.
        drop(free_tx);
        drop(full_rx);
        result
    })
}
