//! The I/O shell of the hot path: runtime and shards, SPSC rings, wire codecs,
//! sessions, servers, node RPC clients and the protocol client.
//!
//! Not built yet: the gateway issue fills this crate.
