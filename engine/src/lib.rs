//! Deterministic, sans-I/O state machines: the ledger and (to come) order
//! books, pool math, the devnet chain and DeFi math.
//!
//! The engine never does I/O, never reads a clock, never draws randomness
//! and never iterates an unordered map: time and randomness arrive as
//! command fields, so its state is a pure function of (snapshot, journal).
//!
//! Built so far: the exchange ([`exchange`]: instruments, [`ledger`],
//! order books in [`book`], matching, events, snapshots), its binary form
//! ([`codec`], `engine/FORMAT.md`) and deterministic benchmark streams
//! ([`workload`]). Pool math, the devnet chain and DeFi come later.

pub mod book;
pub mod chain;
pub mod codec;
pub mod exchange;
pub mod ledger;
pub mod stratum;
pub mod types;
pub mod workload;

pub use exchange::{CancelReason, Command, CommandKind, Event, Exchange, InstrumentSpec, Limits, OrderType, Status, TimeInForce};
pub use ledger::{Balance, Ledger, LedgerLimits};
pub use types::{AccountId, AssetId, InstrumentId, OrderId, Reject, Side};
