//! A hand-written reader for the one JSON shape `getblocktemplate` answers
//! with, the fast path of [`Template::from_json`] and
//! [`Template::from_reply`].
//!
//! Why by hand: a full template is 1.7 MB of JSON, almost all of it the
//! transactions' hex, and serde_json spends about 0.85 ms on it on the
//! reference machine (simd-json 0.15 and sonic-rs 0.5 through serde were
//! slower still); job building has a 1 ms budget. Here a hex string is
//! scanned once, 32 bytes at a time, checking every byte is a hex digit
//! until the closing quote, so the hex is validated by the same pass that
//! finds its end and the job builder can decode it without checking again.
//!
//! It never decides alone that input is bad: anything it does not expect
//! (an escape in a string, a number with a fraction, a duplicate or missing
//! field, a `null` where a value is needed, deep nesting) makes it give up,
//! and the caller parses with serde_json, which gives the answer and the
//! error. A fuzz target (`fuzz/fuzz_targets/chain_inputs.rs`) checks that
//! whenever this reader returns a template, serde_json returns the same one.

use std::borrow::Cow;

use super::template::{Template, TemplateTx};

/// Gave up: let serde_json decide.
#[derive(Debug)]
pub(super) struct GiveUp;

type R<T> = Result<T, GiveUp>;

const MAX_DEPTH: usize = 64;

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

fn is_hex(c: u8) -> bool {
    c.wrapping_sub(b'0') < 10 || (c | 0x20).wrapping_sub(b'a') < 6
}

/// Length of the run of hex digits at the start of `b`. The 32-byte loop
/// has no early exit so the compiler vectorises it; compiled a second time
/// for AVX2, chosen at run time.
#[inline(always)]
fn hex_run_body(b: &[u8]) -> usize {
    let mut at = 0;
    for chunk in b.chunks_exact(32) {
        let bad = chunk.iter().fold(0u8, |acc, &c| acc | u8::from(!is_hex(c)));
        if bad != 0 {
            break;
        }
        at += 32;
    }
    at + b[at..].iter().position(|&c| !is_hex(c)).unwrap_or(b.len() - at)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hex_run_avx2(b: &[u8]) -> usize {
    hex_run_body(b)
}

fn hex_run(b: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2")) {
            // SAFETY: AVX2 was detected.
            return unsafe { hex_run_avx2(b) };
        }
    }
    hex_run_body(b)
}

/// The index of the first `"`, `\\` or control byte in the first 32 bytes
/// of `b`, if any, found 8 bytes at a time (SWAR: a byte equal to `c` is a
/// zero byte of `x ^ c·0x01…01`; the lowest flagged byte is exact).
fn short_string_end(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut at = 0;
    while at + 8 <= b.len().min(32) {
        let x = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let m = zero(x ^ (LO * u64::from(b'"'))) | zero(x ^ (LO * u64::from(b'\\'))) | (x.wrapping_sub(LO * 0x20) & !x & HI);
        if m != 0 {
            return Some(at + m.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    if at >= 32 {
        return None;
    }
    b[at..b.len().min(32)].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|n| at + n)
}

impl<'a> P<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(GiveUp)
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(GiveUp);
        }
        self.i += 1;
        Ok(())
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> R<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        // Keys and short values: 8 bytes at a time; long strings: memchr.
        let rest = &self.b[start..];
        let len = match short_string_end(rest) {
            Some(n) => n,
            None => memchr::memchr2(b'"', b'\\', rest).ok_or(GiveUp)?,
        };
        let end = start + len;
        if self.b[end] != b'"' || (len > 32 && self.b[start..end].iter().any(|&c| c < 0x20)) {
            return Err(GiveUp);
        }
        self.i = end + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        Ok(&self.s[start..end])
    }

    /// A string of hex digits only (validated here).
    fn hex(&mut self) -> R<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = start + hex_run(&self.b[start..]);
        if self.b.get(end) != Some(&b'"') {
            return Err(GiveUp);
        }
        self.i = end + 1;
        Ok(&self.s[start..end])
    }

    fn is_null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            if self.b[self.i..].starts_with(b"null") {
                self.i += 4;
                return Ok(true);
            }
            return Err(GiveUp);
        }
        Ok(false)
    }

    /// An integer as serde_json reads one into an integer type: `-?` then
    /// digits, no leading zero, no fraction or exponent.
    fn int(&mut self) -> R<i128> {
        self.ws();
        let neg = self.b.get(self.i) == Some(&b'-');
        let start = self.i + usize::from(neg);
        let digits = self.b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 20 || (digits > 1 && self.b[start] == b'0') {
            return Err(GiveUp);
        }
        if matches!(self.b.get(start + digits), Some(b'.' | b'e' | b'E')) {
            return Err(GiveUp);
        }
        // At most 20 digits: no overflow in an i128.
        let v = self.b[start..start + digits].iter().fold(0i128, |v, &c| v * 10 + i128::from(c - b'0'));
        self.i = start + digits;
        Ok(if neg { -v } else { v })
    }

    fn uint<T: TryFrom<i128>>(&mut self) -> R<T> {
        T::try_from(self.int()?).map_err(|_| GiveUp)
    }

    /// Skips any value.
    fn skip(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(GiveUp);
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|p, _| p.skip(depth + 1)),
            b'[' => self.array(|p| p.skip(depth + 1)),
            b't' | b'f' | b'n' => {
                for lit in [&b"true"[..], b"false", b"null"] {
                    if self.b[self.i..].starts_with(lit) {
                        self.i += lit.len();
                        return Ok(());
                    }
                }
                Err(GiveUp)
            }
            b'-' | b'0'..=b'9' => {
                // Any JSON number.
                let rest = &self.b[self.i..];
                let n = rest.iter().take_while(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')).count();
                // Let serde_json judge the exact grammar of anything unusual.
                if !rest[..n].iter().all(|c| c.is_ascii_digit() || *c == b'-') {
                    return Err(GiveUp);
                }
                self.int().map(drop)
            }
            _ => Err(GiveUp),
        }
    }

    /// Calls `field` for each key of an object; `field` consumes the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            if self.closed(b'}')? {
                return Ok(());
            }
        }
    }

    fn array(&mut self, mut item: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            if self.closed(b']')? {
                return Ok(());
            }
        }
    }

    /// After a member: `,` (more follow) or `close` (the end).
    fn closed(&mut self, close: u8) -> R<bool> {
        let c = self.peek()?;
        if c != b',' && c != close {
            return Err(GiveUp);
        }
        self.i += 1;
        Ok(c == close)
    }
}

/// Sets `slot` once (a duplicate key is serde_json's to judge).
fn once<T>(slot: &mut Option<T>, v: T) -> R<()> {
    if slot.is_some() {
        return Err(GiveUp);
    }
    *slot = Some(v);
    Ok(())
}

/// An optional field: `null` or absent is `None`; present twice gives up.
fn opt<'a, T>(slot: &mut Option<Option<T>>, p: &mut P<'a>, read: impl FnOnce(&mut P<'a>) -> R<T>) -> R<()> {
    let v = if p.is_null()? { None } else { Some(read(p)?) };
    once(slot, v)
}

fn tx<'a>(p: &mut P<'a>) -> R<TemplateTx<'a>> {
    let (mut data, mut txid, mut hash, mut fee, mut weight) = (None, None, None, None, None);
    p.object(|p, key| match key {
        "data" => {
            let v = p.hex()?;
            once(&mut data, v)
        }
        "txid" => {
            let v = p.hex()?;
            once(&mut txid, v)
        }
        "hash" => opt(&mut hash, p, |p| p.hex()),
        "fee" => opt(&mut fee, p, |p| p.int().and_then(|v| i64::try_from(v).map_err(|_| GiveUp))),
        "weight" => opt(&mut weight, p, |p| p.uint::<u64>()),
        _ => p.skip(2),
    })?;
    Ok(TemplateTx {
        data: Cow::Borrowed(data.ok_or(GiveUp)?),
        txid: Cow::Borrowed(txid.ok_or(GiveUp)?),
        hash: hash.flatten().map(Cow::Borrowed),
        fee: fee.flatten(),
        weight: weight.flatten(),
    })
}

fn template<'a>(p: &mut P<'a>) -> R<Template<'a>> {
    let (mut version, mut rules, mut prev, mut txs, mut value) = (None, None, None, None, None);
    let (mut longpollid, mut target, mut mintime, mut curtime, mut bits) = (None, None, None, None, None);
    let (mut height, mut commitment, mut mweb) = (None, None, None);
    p.object(|p, key| match key {
        "version" => {
            let v = p.uint::<u32>()?;
            once(&mut version, v)
        }
        "rules" => {
            let mut v = Vec::new();
            p.array(|p| p.string().map(|s| v.push(s.to_string())))?;
            once(&mut rules, v)
        }
        "previousblockhash" => {
            let v = p.string()?.to_string();
            once(&mut prev, v)
        }
        "transactions" => {
            let mut v = Vec::with_capacity(4096);
            p.array(|p| tx(p).map(|t| v.push(t)))?;
            once(&mut txs, v)
        }
        "coinbasevalue" => {
            let v = p.uint::<u64>()?;
            once(&mut value, v)
        }
        "longpollid" => opt(&mut longpollid, p, |p| p.string().map(str::to_string)),
        "target" => {
            let v = p.string()?.to_string();
            once(&mut target, v)
        }
        "mintime" => {
            let v = p.uint::<u64>()?;
            once(&mut mintime, v)
        }
        "curtime" => {
            let v = p.uint::<u64>()?;
            once(&mut curtime, v)
        }
        "bits" => {
            let v = p.string()?.to_string();
            once(&mut bits, v)
        }
        "height" => {
            let v = p.uint::<u32>()?;
            once(&mut height, v)
        }
        "default_witness_commitment" => opt(&mut commitment, p, |p| p.string().map(str::to_string)),
        "mweb" => opt(&mut mweb, p, |p| p.string().map(str::to_string)),
        _ => p.skip(1),
    })?;
    let mut t = Template {
        version: version.ok_or(GiveUp)?,
        rules: rules.unwrap_or_default(),
        previousblockhash: prev.ok_or(GiveUp)?,
        transactions: txs.ok_or(GiveUp)?,
        coinbasevalue: value.ok_or(GiveUp)?,
        longpollid: longpollid.flatten(),
        target: target.ok_or(GiveUp)?,
        mintime: mintime.ok_or(GiveUp)?,
        curtime: curtime.ok_or(GiveUp)?,
        bits: bits.ok_or(GiveUp)?,
        height: height.ok_or(GiveUp)?,
        default_witness_commitment: commitment.flatten(),
        mweb: mweb.flatten(),
        hex_checked: false,
    };
    t.hex_checked = true;
    Ok(t)
}

fn end(p: &mut P<'_>) -> R<()> {
    p.ws();
    if p.i == p.b.len() { Ok(()) } else { Err(GiveUp) }
}

/// A bare template object.
pub(super) fn parse_template(text: &str) -> R<Template<'_>> {
    let mut p = P { s: text, b: text.as_bytes(), i: 0 };
    let t = template(&mut p)?;
    end(&mut p)?;
    Ok(t)
}

/// A JSON-RPC reply whose `result` is a template and whose `error` is
/// `null` (an error reply gives up: serde_json reads it).
pub(super) fn parse_reply(text: &str) -> R<Template<'_>> {
    let mut p = P { s: text, b: text.as_bytes(), i: 0 };
    let (mut result, mut error_null) = (None, None);
    p.object(|p, key| match key {
        "result" => {
            let t = template(p)?;
            once(&mut result, t)
        }
        "error" => {
            if !p.is_null()? {
                return Err(GiveUp);
            }
            once(&mut error_null, ())
        }
        _ => p.skip(1),
    })?;
    end(&mut p)?;
    result.ok_or(GiveUp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_string_end_finds_the_first_stop_byte_at_every_offset() {
        for len in 0..40 {
            let s = vec![b'k'; len];
            assert_eq!(short_string_end(&s), None, "{len}");
            for at in 0..len.min(32) {
                for stop in [b'"', b'\\', 0x00, 0x1f] {
                    let mut t = s.clone();
                    t[at] = stop;
                    if at + 1 < len {
                        t[at + 1] = b'"';
                    }
                    assert_eq!(short_string_end(&t), Some(at), "{len} {at} {stop}");
                }
            }
        }
        // UTF-8 bytes (high bit set) are not stops.
        assert_eq!(short_string_end("é漢字\"".as_bytes()), Some(8));
    }

    #[test]
    fn hex_run_stops_at_the_first_non_hex_byte_at_every_offset() {
        for len in 0..100 {
            let mut s = "aF09".repeat(25).into_bytes();
            s.truncate(len);
            assert_eq!(hex_run(&s), len);
            for bad in 0..len {
                let mut t = s.clone();
                t[bad] = b'g';
                assert_eq!(hex_run(&t), bad);
            }
        }
    }

    fn same_as_serde(text: &str) {
        let fast = parse_template(text).expect("the fast path takes it");
        let slow: Template<'_> = serde_json::from_str(text).unwrap();
        assert!(fast.hex_checked);
        assert_eq!(Template { hex_checked: true, ..slow }, fast);
    }

    const T: &str = r#"{"capabilities":["proposal"],"version":536870912,"rules":["csv","!segwit","mweb"],"vbavailable":{},"vbrequired":0,
        "previousblockhash":"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
        "transactions":[{"data":"0100ab","txid":"aa","hash":"bb","depends":[1,2],"fee":-3,"sigops":1,"weight":900},{"data":"","txid":"00","hash":null}],
        "coinbaseaux":{"flags":""},"coinbasevalue":5000000000,"longpollid":"abc1","target":"7fffff00","mintime":1700000000,
        "mutable":["time","transactions","prevblock"],"noncerange":"00000000ffffffff","sigoplimit":80000,"sizelimit":4000000,
        "curtime":1700000100,"bits":"207fffff","height":500,"default_witness_commitment":"6a24aa21a9ed00","mweb":null, "x": [[{"y": [true, false, null, -0]}]] }"#;

    #[test]
    fn reads_a_template_exactly_as_serde_json_does() {
        same_as_serde(T);
        let reply = format!(r#"{{"result":{T},"error":null,"id":"otedama"}}"#);
        let fast = parse_reply(&reply).unwrap();
        assert_eq!(fast.transactions.len(), 2);
        assert_eq!(fast.transactions[0].fee, Some(-3));
        assert_eq!(fast.mweb, None);
    }

    #[test]
    fn gives_up_on_what_it_does_not_expect() {
        for (from, to) in [
            (r#""data":"0100ab""#, r#""data":"01\u0030""#),              // an escape
            (r#""data":"0100ab""#, r#""data":"0100xg""#),                // not hex
            (r#""height":500"#, r#""height":500.0"#),                    // a fraction
            (r#""height":500"#, r#""height":5e2"#),                      // an exponent
            (r#""height":500"#, r#""height":0500"#),                     // a leading zero
            (r#""height":500"#, r#""height":-500"#),                     // negative for an unsigned field
            (r#""height":500"#, r#""height":null"#),                     // null for a required field
            (r#""height":500"#, r#""heigh":500"#),                       // missing
            (r#""bits":"207fffff""#, r#""bits":"207fffff","bits":"1""#), // duplicate
            (r#""x": [[{"y""#, r#""x": [[{"y"!"#),                       // broken JSON
        ] {
            let bad = T.replacen(from, to, 1);
            assert_ne!(bad, T, "{to}");
            assert!(parse_template(&bad).is_err(), "{to}");
        }
        assert!(parse_template(&format!("{T} x")).is_err());
        assert!(parse_template(&format!("{}{T}", "[".repeat(100))).is_err());
        assert!(parse_reply(r#"{"result":null,"error":{"code":-10,"message":"IBD"},"id":1}"#).is_err());
    }
}
