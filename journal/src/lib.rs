//! Otedama's append-only journal: the log the engine, the pool and the cold
//! path share.
//!
//! - One writer ([`Journal`]) appends records into fixed-size, preallocated
//!   segment files, building each record in place in pre-faulted memory that
//!   mirrors the segment; a writeback thread copies committed records into
//!   the file. Appending under the `none` and `batch` policies makes no heap
//!   allocation and no syscall (one futex wake when the writeback thread has
//!   gone idle). Readers map the segment files read-only.
//! - Durability is a policy ([`Durability`]); the durable watermark is
//!   published to callers and persisted in segment headers, so recovery
//!   knows which records it promised.
//! - Any number of [`Reader`]s tail the journal, in this process or another.
//! - [`snapshot`] stores state snapshots tagged with the sequence they
//!   cover; [`retention`] deletes or archives segments nobody needs.
//!
//! The byte layouts are in `journal/FORMAT.md`.

pub mod control;
pub mod cpus;
pub mod format;
pub mod kinds;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod retention;
pub mod snapshot;
pub mod storage;
pub mod writer;

pub use reader::{Reader, ReaderOptions};
pub use record::Record;
pub use recovery::{Damage, Scan, scan};
pub use storage::{FileStorage, PowerLoss, Region, SimStorage, Storage};
pub use writer::{Durability, DurabilityWatch, Journal, OpenReport, Options, Reservation, WriterStats, now_ns};

/// Everything that can go wrong with a journal. Business outcomes do not
/// exist here: every variant is a failure the caller must report.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "journal damaged at or below its durable watermark {watermark}: segment {segment}, offset {offset}, sequence {seq}: {reason} (run `otedama journal repair` to truncate there)"
    )]
    Corrupt { segment: String, offset: u64, seq: u64, watermark: u64, reason: String },
    #[error("record payload of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("journal refuses appends after an earlier failure: {0}")]
    Poisoned(String),
    #[error("journal is locked: {0}")]
    Locked(String),
    #[error("sequence {seq} is no longer in the journal (oldest segment starts at {oldest})")]
    NotAvailable { seq: u64, oldest: u64 },
    #[error("the journal was truncated by a restart to {journal_end}, before this reader's position {reader_at}")]
    Truncated { reader_at: u64, journal_end: u64 },
    #[error("invalid journal configuration: {0}")]
    Config(String),
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<String>, source: std::io::Error) -> JournalError {
        JournalError::Io { op, path: path.into(), source }
    }

    /// Whether the error is a full disk.
    pub fn is_no_space(&self) -> bool {
        matches!(self, JournalError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}
