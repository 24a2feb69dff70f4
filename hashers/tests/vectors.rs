//! Real data: block headers of Bitcoin and Litecoin, RandomX's reference
//! vectors and Bitcoin Core's compact-target cases, from `testdata/`.

use ethnum::U256;
use otedama_hashers::Target;
use otedama_hashers::randomx;
use otedama_hashers::scrypt::{self, Scrypt};
use otedama_hashers::sha256d::{self, HeaderJob};
use otedama_hashers::target::CompactError;
use serde_json::Value;

fn data(name: &str) -> Value {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

/// 32 bytes from display-order hex (most significant byte first).
fn display(hex: &str) -> [u8; 32] {
    let mut b: [u8; 32] = hex::decode(hex).unwrap().try_into().unwrap();
    b.reverse();
    b
}

fn u32_hex(hex: &str) -> u32 {
    u32::from_str_radix(hex, 16).unwrap()
}

fn header(h: &Value) -> [u8; 80] {
    let mut out = [0u8; 80];
    out[0..4].copy_from_slice(&(h["version"].as_u64().unwrap() as u32).to_le_bytes());
    out[4..36].copy_from_slice(&display(h["prev"].as_str().unwrap()));
    out[36..68].copy_from_slice(&display(h["merkle"].as_str().unwrap()));
    out[68..72].copy_from_slice(&(h["time"].as_u64().unwrap() as u32).to_le_bytes());
    out[72..76].copy_from_slice(&u32_hex(h["bits"].as_str().unwrap()).to_le_bytes());
    out[76..80].copy_from_slice(&(h["nonce"].as_u64().unwrap() as u32).to_le_bytes());
    out
}

#[test]
fn bitcoin_headers_hash_to_their_block_ids_and_meet_their_bits() {
    let d = data("sha256d_headers.json");
    let headers = d["headers"].as_array().unwrap();
    assert!(headers.len() >= 5);
    for h in headers {
        let bytes = header(h);
        let hash = sha256d::sha256d(&bytes);
        let name = format!("{} {}", h["chain"], h["height"]);
        if let Some(want) = h["hash"].as_str() {
            assert_eq!(hash, display(want), "{name}");
        }
        let target = Target::from_compact(u32_hex(h["bits"].as_str().unwrap())).unwrap();
        assert!(target.is_met_by(&hash), "{name} does not meet its bits");
        // The midstate path and every scanning kernel agree, and a scan
        // around the real nonce finds it.
        let job = HeaderJob::new(&bytes);
        let nonce = h["nonce"].as_u64().unwrap() as u32;
        assert_eq!(job.hash(nonce), hash, "{name}");
        let start = nonce.saturating_sub(100).min(u32::MAX - 300);
        for kernel in sha256d::Kernel::available() {
            let mut found = Vec::new();
            sha256d::scan(&job, start, 300, target, kernel, &mut found);
            assert_eq!(found, vec![nonce], "{name} with {kernel:?}");
        }
    }
}

#[test]
fn litecoin_headers_have_their_scrypt_proof_of_work() {
    let d = data("scrypt_headers.json");
    let headers = d["headers"].as_array().unwrap();
    assert!(headers.len() >= 2);
    for h in headers {
        let bytes = header(h);
        let name = format!("{} {}", h["chain"], h["height"]);
        assert_eq!(sha256d::sha256d(&bytes), display(h["hash"].as_str().unwrap()), "{name} block id");
        let pow = display(h["pow"].as_str().unwrap());
        assert_eq!(scrypt::scrypt_1024_1_1(&bytes), pow, "{name} reference scrypt");
        let target = Target::from_compact(u32_hex(h["bits"].as_str().unwrap())).unwrap();
        assert!(target.is_met_by(&pow), "{name} does not meet its bits");
        let nonce = h["nonce"].as_u64().unwrap() as u32;
        for kernel in scrypt::Kernel::available() {
            let mut s = Scrypt::new(kernel);
            let mut out = [[0u8; 32]];
            s.hash_many(&[bytes], &mut out);
            assert_eq!(out[0], pow, "{name} with {kernel:?}");
            let mut found = Vec::new();
            s.scan(&bytes, nonce - 7, 16, target, &mut found);
            assert_eq!(found, vec![nonce], "{name} scan with {kernel:?}");
        }
    }
}

#[test]
fn randomx_matches_its_reference_vectors_in_light_mode() {
    let d = data("randomx_vectors.json");
    let vectors = d["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 5);
    let mut cache_key = Vec::new();
    let mut vm = None;
    for v in vectors {
        let key = v["key"].as_str().unwrap().as_bytes().to_vec();
        let input = match v["input"].as_str() {
            Some(t) => t.as_bytes().to_vec(),
            None => hex::decode(v["input_hex"].as_str().unwrap()).unwrap(),
        };
        if key != cache_key {
            let cache = randomx::Cache::new(&key, randomx::recommended_flags()).unwrap();
            vm = Some(randomx::Vm::light(cache).unwrap());
            cache_key = key;
        }
        let vm = vm.as_mut().unwrap();
        let want: [u8; 32] = hex::decode(v["hash"].as_str().unwrap()).unwrap().try_into().unwrap();
        assert_eq!(vm.hash(&input), want, "{v}");
        // The pipelined scan gives the same hash for the blob's own nonce.
        if input.len() >= 43 {
            let nonce = u32::from_le_bytes(input[39..43].try_into().unwrap());
            let exact = Target(U256::from_le_bytes(want));
            let mut found = Vec::new();
            vm.scan(&input, 39, nonce.saturating_sub(2), 5, exact, &mut found);
            assert!(found.contains(&nonce), "{found:?}");
        }
    }
}

#[test]
fn compact_targets_decode_and_encode_as_bitcoin_core_does() {
    let d = data("compact_targets.json");
    for c in d["cases"].as_array().unwrap() {
        let bits = u32_hex(c["bits"].as_str().unwrap());
        match c["error"].as_str() {
            Some("negative") => assert_eq!(Target::from_compact(bits), Err(CompactError::Negative(bits)), "{c}"),
            Some("overflow") => assert_eq!(Target::from_compact(bits), Err(CompactError::Overflow(bits)), "{c}"),
            Some(other) => panic!("unknown error kind {other}"),
            None => {
                let t = Target::from_compact(bits).unwrap();
                let want = U256::from_str_radix(c["target"].as_str().unwrap(), 16).unwrap();
                assert_eq!(t.0, want, "{c}");
                assert_eq!(t.to_compact(), u32_hex(c["compact"].as_str().unwrap()), "{c}");
            }
        }
    }
}
