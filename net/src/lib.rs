//! Otedama's I/O shell: the order-entry gateway (io_uring I/O shards, the
//! engine shard, rings), the binary protocol's codec and client, the key
//! store, and the sequencer that journals and applies commands.

pub mod blocks;
pub mod client;
pub mod devnet_rpc;
pub mod gateway;
pub mod keys;
pub mod miner_accounts;
pub mod node;
pub mod recovery;
pub mod regtest;
pub mod sequencer;
pub mod sessions;
pub mod stratum_client;
pub mod stratum_server;
pub mod template_task;
pub mod wire;
