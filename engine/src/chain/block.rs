//! Reading blocks back: the parts a validator needs (header, each
//! transaction's id, the coinbase's scriptSig and outputs). Used by the
//! devnet to check what it is given.

use super::encode::read_varint;
use super::sha256d;

/// Why bytes are not a well-formed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A parsed transaction: its id and what a coinbase check needs.
#[derive(Clone, Debug)]
pub struct Tx {
    pub txid: [u8; 32],
    /// The first input's previous output (hash, index).
    pub first_prevout: ([u8; 32], u32),
    pub inputs: usize,
    /// The first input's scriptSig.
    pub first_script_sig: Vec<u8>,
    /// (value, script) of every output.
    pub outputs: Vec<(u64, Vec<u8>)>,
}

/// A parsed block.
#[derive(Clone, Debug)]
pub struct Block {
    pub header: [u8; 80],
    pub txs: Vec<Tx>,
    /// Bytes after the transactions (Litecoin: `0x01 ‖ mweb`).
    pub trailer: usize,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        let s = self.b.get(self.at..self.at.checked_add(n).ok_or(Malformed(what))?).ok_or(Malformed(what))?;
        self.at += n;
        Ok(s)
    }
    fn varint(&mut self, what: &'static str) -> Result<u64, Malformed> {
        let (v, n) = read_varint(&self.b[self.at.min(self.b.len())..]).ok_or(Malformed(what))?;
        self.at += n;
        Ok(v)
    }
    /// A count that must fit in what is left (each item at least `min` bytes).
    fn count(&mut self, min: usize, what: &'static str) -> Result<usize, Malformed> {
        let n = self.varint(what)?;
        let left = (self.b.len() - self.at) as u64;
        if n > left / min.max(1) as u64 {
            return Err(Malformed(what));
        }
        Ok(n as usize)
    }
}

fn parse_tx(r: &mut Reader<'_>) -> Result<Tx, Malformed> {
    let start = r.at;
    r.take(4, "transaction version")?;
    // Extended serialization: marker 0x00, then flags: 1 = witness data,
    // 8 = Litecoin MWEB (the HogEx carries it with an empty MWEB part).
    let mut flags = 0u8;
    if r.b.get(r.at) == Some(&0) {
        flags = *r.b.get(r.at + 1).ok_or(Malformed("transaction flags"))?;
        if flags == 0 || flags & !0x09 != 0 {
            return Err(Malformed("transaction flags"));
        }
        r.at += 2;
    }
    let segwit = flags & 1 != 0;
    let body_start = r.at;
    let inputs = r.count(41, "input count")?;
    if inputs == 0 {
        return Err(Malformed("transaction without inputs"));
    }
    let mut first_prevout = ([0u8; 32], 0u32);
    let mut first_script_sig = Vec::new();
    for i in 0..inputs {
        let hash: [u8; 32] = r.take(32, "input")?.try_into().unwrap();
        let index = u32::from_le_bytes(r.take(4, "input")?.try_into().unwrap());
        let len = r.count(1, "scriptSig length")?;
        let script = r.take(len, "scriptSig")?;
        r.take(4, "sequence")?;
        if i == 0 {
            first_prevout = (hash, index);
            first_script_sig = script.to_vec();
        }
    }
    let n_out = r.count(9, "output count")?;
    let mut outputs = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        let value = u64::from_le_bytes(r.take(8, "output value")?.try_into().unwrap());
        let len = r.count(1, "output script length")?;
        outputs.push((value, r.take(len, "output script")?.to_vec()));
    }
    let body_end = r.at;
    if segwit {
        for _ in 0..inputs {
            let items = r.count(1, "witness item count")?;
            for _ in 0..items {
                let len = r.count(1, "witness item length")?;
                r.take(len, "witness item")?;
            }
        }
    }
    if flags & 8 != 0 {
        // An optional MWEB transaction: 0 = none (the HogEx). A full MWEB
        // body inside a canonical transaction is not read here.
        if r.take(1, "mweb transaction")?[0] != 0 {
            return Err(Malformed("mweb transaction body"));
        }
    }
    let lock = r.take(4, "lock time")?;
    // The id covers the serialization without marker, flags, witness and
    // MWEB part.
    let mut plain = Vec::with_capacity(body_end - body_start + 8);
    plain.extend_from_slice(&r.b[start..start + 4]);
    plain.extend_from_slice(&r.b[body_start..body_end]);
    plain.extend_from_slice(lock);
    Ok(Tx { txid: sha256d(&plain), first_prevout, inputs, first_script_sig, outputs })
}

/// Parses `header ‖ varint(n) ‖ n transactions [‖ trailer]`.
pub fn parse(bytes: &[u8]) -> Result<Block, Malformed> {
    let mut r = Reader { b: bytes, at: 0 };
    let header: [u8; 80] = r.take(80, "header")?.try_into().unwrap();
    let n = r.count(60, "transaction count")?;
    if n == 0 {
        return Err(Malformed("block without transactions"));
    }
    let mut txs = Vec::with_capacity(n);
    for _ in 0..n {
        txs.push(parse_tx(&mut r)?);
    }
    Ok(Block { header, txs, trailer: bytes.len() - r.at })
}
