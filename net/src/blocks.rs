//! A block-solving share becomes a block on the nodes, then a durable
//! record: assemble from the job's pre-serialised parts, submit to every
//! node at once, decide from the answers and the nodes' tips whether it
//! landed, append a `block_found` record and sync it before returning
//! (`../shared/DESIGN.md`: the node is the source of truth, so submission
//! comes first; nothing else happens to the block before its record is
//! durable).

use std::time::{Duration, Instant};

use otedama_engine::chain::job::Job;
use otedama_engine::chain::record::{BlockRecord, Outcome};
use otedama_engine::chain::{sha256d, to_display_hex};
use otedama_journal::{Journal, JournalError, kinds};

use crate::node::{self, Node, NodeError, Submitted};

/// Who solved the block.
#[derive(Clone, Debug, Default)]
pub struct Finder<'a> {
    pub address: &'a str,
    pub worker: &'a str,
}

/// What [`submit_block`] did, with its timings.
#[derive(Debug)]
pub struct Submission {
    pub record: BlockRecord,
    pub landing: node::Landing,
    /// Header → block bytes ready.
    pub assembled: Duration,
    /// Header → every node answered and the tips were checked.
    pub decided: Duration,
}

/// Submits the block of `job` with `header` (and the extranonces that
/// built its coinbase) to every node, waits up to `confirm_wait` for the
/// nodes' tips to show it, and records the outcome durably in `journal`.
pub fn submit_block(
    nodes: &[Node],
    journal: &mut Journal,
    job: &Job,
    header: &[u8; 80],
    (extranonce1, extranonce2): (&[u8], &[u8]),
    finder: Finder<'_>,
    confirm_wait: Duration,
) -> Result<Submission, JournalError> {
    let t0 = Instant::now();
    let block = job.block(header, extranonce1, extranonce2);
    let assembled = t0.elapsed();
    let id = sha256d(header);
    let landing = node::submit_and_confirm(nodes, &block, &to_display_hex(&id), confirm_wait);
    let decided = t0.elapsed();
    let outcome = if landing.landed() {
        Outcome::Landed
    } else if landing.answers.iter().all(|a| matches!(a, Err(NodeError::Unreachable { .. }))) {
        Outcome::Unreachable
    } else if landing.answers.iter().all(|a| matches!(a, Ok(Submitted::Rejected(_)) | Err(_))) {
        Outcome::Rejected
    } else {
        Outcome::NotOnChain
    };
    let reason = landing
        .answers
        .iter()
        .find_map(|a| match a {
            Ok(Submitted::Rejected(r)) => Some(r.clone()),
            Err(e) => Some(e.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    let on_chain_mask = landing.on_chain.iter().filter(|&&i| i < 64).fold(0u64, |m, &i| m | 1 << i);
    let time = u32::from_le_bytes(header[68..72].try_into().expect("4 bytes"));
    let record = BlockRecord {
        height: job.height,
        id,
        time,
        subsidy: job.coinbase_value - job.fees.min(job.coinbase_value),
        fees: job.fees.min(job.coinbase_value),
        job: job.id,
        outcome,
        on_chain_mask,
        finder: finder.address.to_string(),
        worker: finder.worker.to_string(),
        reason,
    };
    journal.append(kinds::BLOCK_FOUND, otedama_engine::chain::record::BLOCK_RECORD_VERSION, otedama_journal::now_ns(), &record.encode())?;
    journal.sync()?;
    match outcome {
        Outcome::Landed => tracing::info!(height = record.height, hash = %to_display_hex(&id), finder = finder.address, "block landed"),
        _ => tracing::warn!(height = record.height, hash = %to_display_hex(&id), ?outcome, reason = %record.reason, "block did not land"),
    }
    Ok(Submission { record, landing, assembled, decided })
}
