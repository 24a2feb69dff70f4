//! The `getblocktemplate` answer (BIP 22/23, segwit and Litecoin MWEB
//! fields), as a bitcoind-dialect node returns it.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A template transaction. The hex strings borrow from the JSON text when
/// parsed with [`Template::from_json`] (no copy of the megabytes a full
/// template carries) and are owned otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct TemplateTx<'a> {
    /// The transaction serialized with its witness, hex.
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    /// Its id (display order hex).
    #[serde(borrow)]
    pub txid: Cow<'a, str>,
    /// Its witness id (display order hex).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Template<'a> {
    pub version: u32,
    #[serde(default)]
    pub rules: Vec<String>,
    pub previousblockhash: String,
    #[serde(borrow)]
    pub transactions: Vec<TemplateTx<'a>>,
    pub coinbasevalue: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longpollid: Option<String>,
    pub target: String,
    pub mintime: u64,
    pub curtime: u64,
    pub bits: String,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_witness_commitment: Option<String>,
    /// Litecoin: the MWEB extension block, hex, once MWEB is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mweb: Option<String>,
    /// Every transaction's `data`, `txid` and `hash` was checked to be hex
    /// while parsing (the fast reader does it in the pass that finds each
    /// string's end), so the job builder decodes without checking again.
    #[serde(skip)]
    pub(crate) hex_checked: bool,
}

impl<'a> Template<'a> {
    /// Parses the `result` of a `getblocktemplate` call, borrowing the
    /// transactions' hex from `json`.
    pub fn from_json(json: &'a str) -> Result<Template<'a>, serde_json::Error> {
        match super::gbt::parse_template(json) {
            Ok(t) => Ok(t),
            Err(_) => serde_json::from_str(json),
        }
    }
}

/// A `getblocktemplate` reply that did not give a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The node's JSON-RPC error.
    Rpc { code: i64, message: String },
    /// Not JSON, or not a template.
    Json(String),
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    result: Option<Template<'a>>,
    #[serde(default)]
    error: Option<RpcError>,
}

impl<'a> Template<'a> {
    /// Parses a whole JSON-RPC reply (`{"result": …, "error": …, "id": …}`)
    /// to `getblocktemplate`, borrowing the transactions' hex from `text`.
    pub fn from_reply(text: &'a str) -> Result<Template<'a>, ReplyError> {
        if let Ok(t) = super::gbt::parse_reply(text) {
            return Ok(t);
        }
        let r: Reply<'a> = serde_json::from_str(text).map_err(|e| ReplyError::Json(e.to_string()))?;
        if let Some(e) = r.error {
            return Err(ReplyError::Rpc { code: e.code, message: e.message });
        }
        r.result.ok_or_else(|| ReplyError::Json("neither result nor error".into()))
    }
}
