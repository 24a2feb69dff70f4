//! Payout addresses to output scripts, validated per coin and network.
//!
//! bech32 (witness v0) and bech32m (v1+) through the `bech32` crate,
//! base58check through `bs58`; the prefixes are each chain's
//! `chainparams.cpp`. Litecoin MWEB addresses (`ltcmweb1…`) cannot receive
//! a coinbase and are refused.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Coin {
    Bitcoin,
    Litecoin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    Mainnet,
    Testnet,
    Regtest,
}

/// A chain's address prefixes.
struct Prefixes {
    hrp: &'static str,
    p2pkh: &'static [u8],
    p2sh: &'static [u8],
}

fn prefixes(coin: Coin, net: Network) -> Prefixes {
    match (coin, net) {
        (Coin::Bitcoin, Network::Mainnet) => Prefixes { hrp: "bc", p2pkh: &[0x00], p2sh: &[0x05] },
        (Coin::Bitcoin, Network::Testnet) => Prefixes { hrp: "tb", p2pkh: &[0x6f], p2sh: &[0xc4] },
        (Coin::Bitcoin, Network::Regtest) => Prefixes { hrp: "bcrt", p2pkh: &[0x6f], p2sh: &[0xc4] },
        // Litecoin keeps accepting the old P2SH version (5 on mainnet, 196
        // on test networks) beside the new one (50 'M', 58 'Q').
        (Coin::Litecoin, Network::Mainnet) => Prefixes { hrp: "ltc", p2pkh: &[0x30], p2sh: &[0x32, 0x05] },
        (Coin::Litecoin, Network::Testnet) => Prefixes { hrp: "tltc", p2pkh: &[0x6f], p2sh: &[0x3a, 0xc4] },
        (Coin::Litecoin, Network::Regtest) => Prefixes { hrp: "rltc", p2pkh: &[0x6f], p2sh: &[0x3a, 0xc4] },
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Not valid bech32/bech32m or base58check at all.
    Malformed(String),
    /// Valid, but for another chain or network.
    WrongNetwork { address: String, expected: String },
    /// An MWEB address: cannot be paid by a coinbase.
    Mweb,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::Malformed(a) => write!(f, "{a:?} is not a valid address (bad encoding or checksum)"),
            AddressError::WrongNetwork { address, expected } => write!(f, "{address:?} is not an address of {expected}"),
            AddressError::Mweb => write!(f, "MWEB addresses cannot receive a coinbase; use a bech32 or legacy address"),
        }
    }
}

impl std::error::Error for AddressError {}

/// The output script (scriptPubKey) paying `address` on `coin`/`net`.
pub fn script_for(address: &str, coin: Coin, net: Network) -> Result<Vec<u8>, AddressError> {
    let p = prefixes(coin, net);
    let expected = || format!("{coin:?} {net:?}");
    let lower = address.to_ascii_lowercase();
    if lower.starts_with("ltcmweb1") || lower.starts_with("tmweb1") || lower.starts_with("rmweb1") {
        return Err(AddressError::Mweb);
    }
    if let Ok((hrp, version, program)) = bech32::segwit::decode(address) {
        if hrp.as_str().to_ascii_lowercase() != p.hrp {
            return Err(AddressError::WrongNetwork { address: address.into(), expected: expected() });
        }
        let v = version.to_u8();
        let mut script = vec![if v == 0 { 0x00 } else { 0x50 + v }];
        crate::chain::encode::push_data(&mut script, &program);
        return Ok(script);
    }
    let raw = bs58::decode(address).with_check(None).into_vec().map_err(|_| AddressError::Malformed(address.into()))?;
    if raw.len() != 21 {
        return Err(AddressError::Malformed(address.into()));
    }
    let (version, hash) = (raw[0], &raw[1..]);
    if p.p2pkh.contains(&version) {
        // OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG
        let mut s = vec![0x76, 0xa9, 0x14];
        s.extend_from_slice(hash);
        s.extend_from_slice(&[0x88, 0xac]);
        Ok(s)
    } else if p.p2sh.contains(&version) {
        // OP_HASH160 <20> OP_EQUAL
        let mut s = vec![0xa9, 0x14];
        s.extend_from_slice(hash);
        s.push(0x87);
        Ok(s)
    } else {
        Err(AddressError::WrongNetwork { address: address.into(), expected: expected() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{decode_hex, encode_hex};

    #[test]
    fn known_addresses_map_to_their_scripts() {
        // BIP 173's and BIP 350's test vectors.
        assert_eq!(
            encode_hex(&script_for("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", Coin::Bitcoin, Network::Mainnet).unwrap()),
            "0014751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        assert_eq!(
            encode_hex(
                &script_for("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", Coin::Bitcoin, Network::Mainnet).unwrap()
            ),
            "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        );
        // The genesis coinbase's key, as a P2PKH address.
        assert_eq!(
            encode_hex(&script_for("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", Coin::Bitcoin, Network::Mainnet).unwrap()),
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"
        );
        // The same 20 bytes as a Litecoin address (version 0x30).
        let ltc = bs58::encode(decode_hex("3062e907b15cbf27d5425399ebf6f0fb50ebb88f18").unwrap()).with_check().into_string();
        assert!(ltc.starts_with('L'), "{ltc}");
        assert_eq!(
            encode_hex(&script_for(&ltc, Coin::Litecoin, Network::Mainnet).unwrap()),
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"
        );
    }

    #[test]
    fn wrong_networks_bad_checksums_and_mweb_are_refused() {
        let btc = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        assert!(matches!(script_for(btc, Coin::Litecoin, Network::Mainnet), Err(AddressError::WrongNetwork { .. })));
        assert!(matches!(script_for(btc, Coin::Bitcoin, Network::Regtest), Err(AddressError::WrongNetwork { .. })));
        assert!(matches!(
            script_for("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", Coin::Bitcoin, Network::Mainnet),
            Err(AddressError::Malformed(_))
        ));
        assert!(matches!(
            script_for("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", Coin::Bitcoin, Network::Mainnet),
            Err(AddressError::Malformed(_))
        ));
        assert!(matches!(
            script_for("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", Coin::Litecoin, Network::Mainnet),
            Err(AddressError::WrongNetwork { .. })
        ));
        assert_eq!(script_for("ltcmweb1qqabc", Coin::Litecoin, Network::Mainnet), Err(AddressError::Mweb));
        assert!(script_for("", Coin::Bitcoin, Network::Mainnet).is_err());
    }
}
