//! The `getblocktemplate` answer (BIP 22/23, segwit and Litecoin MWEB
//! fields), as a bitcoind-dialect node returns it.

use serde::Deserialize;
use std::borrow::Cow;

/// A template transaction. The hex strings borrow from the JSON text when
/// parsed with [`Template::from_json`] (no copy of the megabytes a full
/// template carries) and are owned otherwise.
#[derive(Clone, Debug, Deserialize)]
pub struct TemplateTx<'a> {
    /// The transaction serialized with its witness, hex.
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    /// Its id (display order hex).
    #[serde(borrow)]
    pub txid: Cow<'a, str>,
    /// Its witness id (display order hex).
    #[serde(default, borrow)]
    pub hash: Option<Cow<'a, str>>,
    #[serde(default)]
    pub fee: Option<i64>,
    #[serde(default)]
    pub weight: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Template<'a> {
    pub version: u32,
    #[serde(default)]
    pub rules: Vec<String>,
    pub previousblockhash: String,
    #[serde(borrow)]
    pub transactions: Vec<TemplateTx<'a>>,
    pub coinbasevalue: u64,
    #[serde(default)]
    pub longpollid: Option<String>,
    pub target: String,
    pub mintime: u64,
    pub curtime: u64,
    pub bits: String,
    pub height: u32,
    #[serde(default)]
    pub default_witness_commitment: Option<String>,
    /// Litecoin: the MWEB extension block, hex, once MWEB is active.
    #[serde(default)]
    pub mweb: Option<String>,
}

impl<'a> Template<'a> {
    /// Parses the `result` of a `getblocktemplate` call, borrowing the
    /// transactions' hex from `json`.
    pub fn from_json(json: &'a str) -> Result<Template<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }
}
