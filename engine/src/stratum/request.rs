//! Stratum V1 requests from miners: one JSON-RPC object per line
//! (`{"id": …, "method": "mining.…", "params": […]}`), parsed into typed
//! requests, with a precise error for anything else. Wire forms, with the
//! messages real miners send: `net/STRATUM.md`.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Longest request id echoed back (bytes of its JSON text).
pub const MAX_ID_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Request<'a> {
    /// `mining.subscribe [user_agent [, session_id]]`: the session id asks
    /// to resume an earlier session (its extranonce1).
    Subscribe { agent: Option<Cow<'a, str>>, resume: Option<Cow<'a, str>> },
    /// `mining.authorize [username, password]`.
    Authorize { user: Cow<'a, str>, password: Cow<'a, str> },
    /// `mining.configure [[extension, …], {"ext.param": value, …}]` (BIP 310).
    Configure { extensions: Vec<Cow<'a, str>>, version_mask: Option<u32>, min_difficulty: Option<f64> },
    /// `mining.suggest_difficulty [difficulty]`.
    SuggestDifficulty(f64),
    /// `mining.extranonce.subscribe []`.
    ExtranonceSubscribe,
    /// `mining.submit [worker, job_id, extranonce2, ntime, nonce [, version_bits]]`.
    Submit(Submit<'a>),
    /// Any other method (answered with an error, never a disconnect).
    Unknown(Cow<'a, str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submit<'a> {
    pub worker: Cow<'a, str>,
    pub job_id: u64,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    pub version_bits: Option<u32>,
}

/// A request and the id to answer it with.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// The id's JSON text, echoed verbatim (`1`, `"a7"`, `null`).
    pub id: &'a str,
    pub request: Request<'a>,
}

/// Why a line is not a request. `id` is the request's id when it could be
/// read, so the error can be answered to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest<'a> {
    pub id: Option<&'a str>,
    pub reason: String,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

fn str_param<'a>(p: &[&'a RawValue], i: usize, what: &str) -> Result<Cow<'a, str>, String> {
    let raw = p.get(i).ok_or_else(|| format!("missing parameter {i} ({what})"))?;
    let s: Cow<'a, str> = serde_json::from_str(raw.get()).map_err(|_| format!("parameter {i} ({what}) must be a string"))?;
    Ok(s)
}

fn opt_str_param<'a>(p: &[&'a RawValue], i: usize) -> Option<Cow<'a, str>> {
    p.get(i).and_then(|raw| serde_json::from_str::<Option<Cow<'a, str>>>(raw.get()).ok().flatten())
}

/// A big-endian hex word as Stratum sends ntime, nonce and version bits
/// (exactly 8 hex digits).
fn hex_u32(s: &str, what: &str) -> Result<u32, String> {
    if s.len() != 8 {
        return Err(format!("{what} must be 8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| format!("{what} must be 8 hex digits"))
}

fn number(raw: &RawValue) -> Option<f64> {
    match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
        serde_json::Value::Number(n) => n.as_f64(),
        // Some miners send numbers as strings.
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Result<Line<'_>, BadRequest<'_>> {
    let raw: Raw<'_> = serde_json::from_str(line).map_err(|e| BadRequest { id: None, reason: format!("not a JSON-RPC request: {e}") })?;
    let id = raw.id.map_or("null", |r| r.get());
    let bad = |reason: String| BadRequest { id: Some(id), reason };
    if id.len() > MAX_ID_LEN || id.starts_with('{') || id.starts_with('[') {
        return Err(BadRequest { id: None, reason: "the id must be a number, a string or null of at most 64 bytes".into() });
    }
    let params: Vec<&RawValue> = match raw.params {
        None => vec![],
        Some(p) if p.get() == "null" => vec![],
        Some(p) => serde_json::from_str(p.get()).map_err(|_| bad("params must be an array".into()))?,
    };
    let request = match raw.method.as_ref() {
        "mining.subscribe" => Request::Subscribe { agent: opt_str_param(&params, 0), resume: opt_str_param(&params, 1) },
        "mining.authorize" => Request::Authorize {
            user: str_param(&params, 0, "username").map_err(bad)?,
            password: opt_str_param(&params, 1).unwrap_or(Cow::Borrowed("")),
        },
        "mining.configure" => {
            let extensions: Vec<Cow<'_, str>> = match params.first() {
                Some(r) => serde_json::from_str(r.get())
                    .map_err(|_| bad("mining.configure: parameter 0 must be a list of extension names".into()))?,
                None => return Err(bad("mining.configure: missing the extension list".into())),
            };
            let opts: serde_json::Map<String, serde_json::Value> = match params.get(1) {
                Some(r) => serde_json::from_str(r.get()).map_err(|_| bad("mining.configure: parameter 1 must be an object".into()))?,
                None => serde_json::Map::new(),
            };
            let version_mask = match opts.get("version-rolling.mask") {
                Some(serde_json::Value::String(m)) => Some(hex_u32(m, "version-rolling.mask").map_err(bad)?),
                Some(_) => return Err(bad("version-rolling.mask must be 8 hex digits".into())),
                None => None,
            };
            let min_difficulty = match opts.get("minimum-difficulty.value") {
                Some(v) => Some(v.as_f64().ok_or_else(|| bad("minimum-difficulty.value must be a number".into()))?),
                None => None,
            };
            Request::Configure { extensions, version_mask, min_difficulty }
        }
        "mining.suggest_difficulty" => {
            let d = params.first().and_then(|r| number(r)).ok_or_else(|| bad("mining.suggest_difficulty takes one number".into()))?;
            Request::SuggestDifficulty(d)
        }
        "mining.extranonce.subscribe" => Request::ExtranonceSubscribe,
        "mining.submit" => {
            if params.len() < 5 || params.len() > 6 {
                return Err(bad(format!("mining.submit takes 5 or 6 parameters, got {}", params.len())));
            }
            let worker = str_param(&params, 0, "worker").map_err(bad)?;
            let job = str_param(&params, 1, "job id").map_err(bad)?;
            let job_id = (!job.is_empty() && job.len() <= 16)
                .then(|| u64::from_str_radix(&job, 16).ok())
                .flatten()
                .ok_or_else(|| bad("job id must be the hex job id from mining.notify".into()))?;
            let en2 = str_param(&params, 2, "extranonce2").map_err(bad)?;
            if en2.len() % 2 != 0 || en2.len() > 64 {
                return Err(bad("extranonce2 must be hex of the subscribed size".into()));
            }
            let mut extranonce2 = vec![0u8; en2.len() / 2];
            faster_hex::hex_decode(en2.as_bytes(), &mut extranonce2).map_err(|_| bad("extranonce2 must be hex".into()))?;
            let ntime = hex_u32(&str_param(&params, 3, "ntime").map_err(bad)?, "ntime").map_err(bad)?;
            let nonce = hex_u32(&str_param(&params, 4, "nonce").map_err(bad)?, "nonce").map_err(bad)?;
            let version_bits = match params.get(5) {
                None => None,
                Some(_) => Some(hex_u32(&str_param(&params, 5, "version bits").map_err(bad)?, "version bits").map_err(bad)?),
            };
            Request::Submit(Submit { worker, job_id, extranonce2, ntime, nonce, version_bits })
        }
        _ => Request::Unknown(raw.method),
    };
    Ok(Line { id, request })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_real_miners_send() {
        // cgminer/bfgminer, an Antminer (configure first), NiceHash-style resume.
        let l = parse(r#"{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.10.0"]}"#).unwrap();
        assert_eq!((l.id, l.request), ("1", Request::Subscribe { agent: Some("cgminer/4.10.0".into()), resume: None }));
        let l = parse(r#"{"id":2,"method":"mining.subscribe","params":["bmminer/2.0.0","00000001"]}"#).unwrap();
        assert_eq!(l.request, Request::Subscribe { agent: Some("bmminer/2.0.0".into()), resume: Some("00000001".into()) });
        let l = parse(r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty"],{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":2,"minimum-difficulty.value":2048}]}"#).unwrap();
        assert_eq!(
            l.request,
            Request::Configure {
                extensions: vec!["version-rolling".into(), "minimum-difficulty".into()],
                version_mask: Some(0x1fffe000),
                min_difficulty: Some(2048.0)
            }
        );
        let l = parse(r#"{"params": ["rltc1qxyz.rig1", "x,d=512"], "id": "auth", "method": "mining.authorize"}"#).unwrap();
        assert_eq!((l.id, l.request), (r#""auth""#, Request::Authorize { user: "rltc1qxyz.rig1".into(), password: "x,d=512".into() }));
        let l = parse(r#"{"id":4,"method":"mining.submit","params":["rltc1qxyz.rig1","1f","0000000000000001","6553f100","a1b2c3d4"]}"#)
            .unwrap();
        assert_eq!(
            l.request,
            Request::Submit(Submit {
                worker: "rltc1qxyz.rig1".into(),
                job_id: 0x1f,
                extranonce2: vec![0, 0, 0, 0, 0, 0, 0, 1],
                ntime: 0x6553f100,
                nonce: 0xa1b2c3d4,
                version_bits: None
            })
        );
        let l = parse(r#"{"id":5,"method":"mining.submit","params":["w","2","00000001","6553f100","00000000","04d46000"]}"#).unwrap();
        assert!(matches!(l.request, Request::Submit(Submit { version_bits: Some(0x04d46000), .. })));
        assert_eq!(
            parse(r#"{"id":6,"method":"mining.suggest_difficulty","params":[1024]}"#).unwrap().request,
            Request::SuggestDifficulty(1024.0)
        );
        assert_eq!(
            parse(r#"{"id":6,"method":"mining.suggest_difficulty","params":["0.5"]}"#).unwrap().request,
            Request::SuggestDifficulty(0.5)
        );
        assert_eq!(parse(r#"{"id":7,"method":"mining.extranonce.subscribe","params":[]}"#).unwrap().request, Request::ExtranonceSubscribe);
        assert_eq!(parse(r#"{"id":8,"method":"mining.ping"}"#).unwrap().request, Request::Unknown("mining.ping".into()));
    }

    #[test]
    fn bad_lines_are_precise_errors_answered_to_their_id_when_readable() {
        for (line, id, want) in [
            ("garbage", None, "not a JSON-RPC request"),
            ("{}", None, "not a JSON-RPC request"),
            (r#"{"id":{"a":1},"method":"mining.subscribe"}"#, None, "the id must be"),
            (r#"{"id":3,"method":"mining.submit","params":["w","1","00","6553f100"]}"#, Some("3"), "5 or 6 parameters"),
            (r#"{"id":3,"method":"mining.submit","params":["w","zz","00","6553f100","00000000"]}"#, Some("3"), "job id"),
            (r#"{"id":3,"method":"mining.submit","params":["w","1","0g","6553f100","00000000"]}"#, Some("3"), "extranonce2 must be hex"),
            (r#"{"id":3,"method":"mining.submit","params":["w","1","00","6553f1","00000000"]}"#, Some("3"), "ntime must be 8 hex"),
            (r#"{"id":3,"method":"mining.submit","params":["w","1","00","6553f100",7]}"#, Some("3"), "nonce) must be a string"),
            (r#"{"id":3,"method":"mining.authorize","params":[]}"#, Some("3"), "missing parameter 0"),
            (
                r#"{"id":3,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"xyz"}]}"#,
                Some("3"),
                "mask must be 8 hex",
            ),
            (r#"{"id":3,"method":"mining.suggest_difficulty","params":[]}"#, Some("3"), "takes one number"),
            (r#"{"id":3,"method":"mining.subscribe","params":{"a":1}}"#, Some("3"), "params must be an array"),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.id, id, "{line}");
            assert!(e.reason.contains(want), "{line}: {}", e.reason);
        }
    }
}
