//! The cold-path process (`otedama api`): HTTP/WebSocket API, database
//! projections, payouts, DeFi and P2P services.
//!
//! Built: read models fed from the journals (the exchange's in
//! [`exchange_model`], the pool's in [`pool_model`] from the shard journals
//! merged by [`share_merge`]), the REST routes over them ([`server`]), and
//! the database they are projected into ([`projection`]), and an admin
//! session with the engine over the binary protocol ([`engine_link`]).
//! Not built yet: WebSocket streams, metrics, the dashboard, payouts.

pub mod engine_link;
pub mod exchange_model;
pub mod pool_model;
pub mod projection;
pub mod scratch_pg;
pub mod server;
pub mod share_merge;
pub mod worker;
