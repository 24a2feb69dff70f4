//! The cold-path process (`otedama api`): HTTP/WebSocket API, database
//! projections, payouts, DeFi and P2P services.
//!
//! Built so far: the exchange's read model fed from the journal
//! ([`exchange_model`]) and its first HTTP routes ([`server`]). Not built
//! yet: the database, mining routes, OpenAPI, rate limits, WebSocket (the
//! cold-path issue).

pub mod exchange_model;
pub mod projection;
pub mod server;
pub mod share_merge;
