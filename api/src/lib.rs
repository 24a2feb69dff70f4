//! The cold-path process (`otedama api`): HTTP/WebSocket API, database
//! projections, payouts, DeFi and P2P services.
//!
//! Not built yet: the cold-path issue fills this crate.
