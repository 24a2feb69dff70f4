//! Stratum V1, sans I/O: request parsing (`request`), the per-connection
//! session state machine with share validation (`session`), and a shard's
//! table of live jobs (`jobs`). The I/O shards of `otedama engine` drive
//! them; wire forms are in `net/STRATUM.md`.

pub mod extranonce;
pub mod jobs;
pub mod record;
pub mod request;
pub mod session;
