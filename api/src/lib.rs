//! The cold-path process (`otedama api`): HTTP/WebSocket API, database
//! projections, payouts, DeFi and P2P services.
//!
//! Built so far: the exchange's read model, fed from the journal
//! ([`exchange_model`]). Not built yet: the process, its HTTP API and the
//! database (the cold-path issue).

pub mod exchange_model;
