//! The registry of record kinds: one number space for every journal, each
//! kind owned by the crate that writes it. `journal/FORMAT.md` carries the
//! same table; a test checks the two agree.
//!
//! Ranges are reserved per owner so crates can add kinds without
//! colliding: 0x0001–0x00FF journal, 0x0100–0x01FF engine commands,
//! 0x0200–0x02FF engine events, 0x0300–0x03FF pool shares and blocks,
//! 0x0400–0x04FF sessions, 0xF000–0xFFFF tests and benchmarks.

/// (kind, name, owner, meaning)
pub const REGISTRY: &[(u16, &str, &str, &str)] = &[
    (0x0001, "heartbeat", "journal", "a writer is alive and has nothing to record; payload: empty"),
    (0x0100, "exchange_command", "engine", "one exchange command (engine/FORMAT.md)"),
    (0x0200, "exchange_events", "engine", "the events of the command before it (engine/FORMAT.md)"),
    (0x0300, "block_found", "net", "a solved block and what the nodes made of it (engine/CHAIN.md)"),
    (0x0310, "devnet_block", "net", "a block the embedded devnet accepted, as submitted (engine/CHAIN.md)"),
    (0x0320, "share", "net", "an accepted Stratum share, written by the I/O shard that judged it (net/STRATUM.md)"),
    (0x0330, "miner_account", "net", "a payout address given a ledger account on its first authorize (net/STRATUM.md)"),
    (0x0331, "miner_account_created", "net", "ledger accounts the engine confirmed for miners (net/STRATUM.md)"),
    (0x0400, "session_open", "net", "an order-entry login the engine accepted: key, role, account, flags (net/PROTOCOL.md)"),
    (0x0401, "session_close", "net", "an order-entry session ended (net/PROTOCOL.md)"),
    (0x0402, "session_register", "net", "the engine learnt of an API key: its messages are numbered from here (net/PROTOCOL.md)"),
    (0xF000, "test", "tests", "opaque test payload"),
    (0xF001, "bench", "benches", "opaque benchmark payload"),
];

pub const HEARTBEAT: u16 = 0x0001;
pub const EXCHANGE_COMMAND: u16 = 0x0100;
pub const EXCHANGE_EVENTS: u16 = 0x0200;
pub const BLOCK_FOUND: u16 = 0x0300;
pub const DEVNET_BLOCK: u16 = 0x0310;
pub const SHARE: u16 = 0x0320;
pub const MINER_ACCOUNT: u16 = 0x0330;
pub const MINER_ACCOUNT_CREATED: u16 = 0x0331;
pub const SESSION_OPEN: u16 = 0x0400;
pub const SESSION_CLOSE: u16 = 0x0401;
pub const SESSION_REGISTER: u16 = 0x0402;
pub const TEST: u16 = 0xF000;
pub const BENCH: u16 = 0xF001;

/// The registered name of `kind`, if any.
pub fn name(kind: u16) -> Option<&'static str> {
    REGISTRY.iter().find(|k| k.0 == kind).map(|k| k.1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_is_unique_and_matches_format_md() {
        let mut seen = std::collections::BTreeSet::new();
        let doc = include_str!("../FORMAT.md");
        for (kind, name, owner, _) in super::REGISTRY {
            assert!(seen.insert(*kind), "kind {kind:#06x} registered twice");
            let row = format!("| `{kind:#06x}` | `{name}` | {owner} |");
            assert!(doc.contains(&row), "FORMAT.md lacks the registry row {row}");
        }
    }
}
