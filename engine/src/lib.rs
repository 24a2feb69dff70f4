//! Deterministic, sans-I/O state machines: order books and ledger, pool math,
//! the devnet chain and DeFi math.
//!
//! Not built yet: the matching-core issue fills this crate. The engine never
//! does I/O, never reads a clock and never spawns a thread (see
//! `ARCHITECTURE.md`).
