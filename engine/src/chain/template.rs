//! The `getblocktemplate` answer (BIP 22/23, segwit and Litecoin MWEB
//! fields), as a bitcoind-dialect node returns it.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct TemplateTx {
    /// The transaction serialized with its witness, hex.
    pub data: String,
    /// Its id (display order hex).
    pub txid: String,
    /// Its witness id (display order hex).
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub fee: Option<i64>,
    #[serde(default)]
    pub weight: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Template {
    pub version: u32,
    #[serde(default)]
    pub rules: Vec<String>,
    pub previousblockhash: String,
    pub transactions: Vec<TemplateTx>,
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

impl Template {
    /// Parses the `result` of a `getblocktemplate` call.
    pub fn from_json(json: &str) -> Result<Template, serde_json::Error> {
        serde_json::from_str(json)
    }
}
