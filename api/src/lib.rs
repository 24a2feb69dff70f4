//! The cold-path process (`otedama api`): HTTP/WebSocket API, database
//! projections, payouts, DeFi and P2P services.
//!
//! Built: read models fed from the journals (the exchange's in
//! [`exchange_model`], the pool's in [`pool_model`] from the shard journals
//! merged by [`share_merge`]), the REST routes over them ([`server`]), and
//! the database they are projected into ([`projection`]). Not built yet:
//! the admin client of the binary protocol, WebSocket streams, metrics,
//! the dashboard, payouts.

pub mod exchange_model;
pub mod pool_model;
pub mod projection;
pub mod scratch_pg;
pub mod server;
pub mod share_merge;
