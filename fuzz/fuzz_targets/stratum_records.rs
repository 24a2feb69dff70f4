//! Arbitrary bytes as the Stratum side's journal records (`share`,
//! `miner_account`): decoding never panics, and whatever decodes encodes
//! back to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otedama_engine::stratum::record::ShareRecord;
use otedama_net::miner_accounts::{decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ShareRecord::decode(data) {
        assert_eq!(r.encode(), data, "a share record re-encodes to its bytes");
    }
    if let Some((account, address)) = decode_record(data) {
        assert_eq!(encode_record(account, &address), data, "a miner_account record re-encodes to its bytes");
    }
});
