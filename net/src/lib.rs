//! The I/O shell of the hot path: runtime and shards, SPSC rings, wire codecs,
//! sessions, servers, node RPC clients and the protocol client.
//!
//! Built so far: [`sequencer`], the engine shard's journal-apply-journal
//! step and journal replay. The shards, rings and servers come with the
//! gateway issue.

pub mod sequencer;
