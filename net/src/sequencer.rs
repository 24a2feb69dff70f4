//! The engine shard's core loop step, without the rings: journal each
//! command, apply it, journal the events it produced. And the inverse:
//! replay a journal into an exchange, checking that every command
//! reproduces the events that were journaled with it.

use otedama_engine::codec::{CodecError, decode_command, decode_events, encode_command, encode_events};
use otedama_engine::{Command, Event, Exchange};
use otedama_journal::{Journal, JournalError, Reader, kinds};

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

    /// Journals `cmd`, applies it and journals its events; returns the
    /// events and the command's journal sequence.
    pub fn submit(&mut self, cmd: &Command) -> Result<(u64, &[Event]), JournalError> {
        self.buf.clear();
        encode_command(cmd, &mut self.buf);
        let seq = self.journal.append(kinds::EXCHANGE_COMMAND, 1, cmd.ts, &self.buf)?;
        self.events.clear();
        self.exchange.apply(cmd, &mut self.events);
        self.buf.clear();
        encode_events(seq, &self.events, &mut self.buf);
        self.journal.append(kinds::EXCHANGE_EVENTS, 1, cmd.ts, &self.buf)?;
        Ok((seq, &self.events))
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
    #[error("command {seq} has no events record after it")]
    MissingEvents { seq: u64 },
    #[error("command {seq}: replay produced different events (event {index}: journaled {journaled}, replayed {replayed})")]
    Mismatch { seq: u64, index: usize, journaled: String, replayed: String },
}

/// Replays every exchange command the reader returns into `exchange`,
/// comparing the events it produces with the journaled ones.
pub fn replay(reader: &mut Reader, exchange: &mut Exchange) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport { commands: 0, events: 0, last_seq: 0 };
    let mut produced = Vec::with_capacity(4096);
    let mut journaled = Vec::with_capacity(4096);
    loop {
        let (seq, cmd) = {
            let Some(rec) = reader.try_next()? else { break };
            report.last_seq = rec.seq;
            if rec.kind != kinds::EXCHANGE_COMMAND {
                continue;
            }
            (rec.seq, decode_command(rec.payload).map_err(|err| ReplayError::Decode { seq: rec.seq, err })?)
        };
        produced.clear();
        exchange.apply(&cmd, &mut produced);
        let Some(rec) = reader.try_next()? else { return Err(ReplayError::MissingEvents { seq }) };
        report.last_seq = rec.seq;
        if rec.kind != kinds::EXCHANGE_EVENTS {
            return Err(ReplayError::MissingEvents { seq });
        }
        let of = decode_events(rec.payload, &mut journaled).map_err(|err| ReplayError::Decode { seq: rec.seq, err })?;
        if of != seq {
            return Err(ReplayError::MissingEvents { seq });
        }
        if produced != journaled {
            let index = produced.iter().zip(&journaled).position(|(a, b)| a != b).unwrap_or(produced.len().min(journaled.len()));
            return Err(ReplayError::Mismatch {
                seq,
                index,
                journaled: journaled.get(index).map(|e| format!("{e:?}")).unwrap_or_else(|| "nothing".into()),
                replayed: produced.get(index).map(|e| format!("{e:?}")).unwrap_or_else(|| "nothing".into()),
            });
        }
        report.commands += 1;
        report.events += produced.len() as u64;
    }
    Ok(report)
}
