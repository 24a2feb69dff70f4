//! Session names and their outbound sequence numbers, as a deterministic
//! function of the exchange journal.
//!
//! A session name is an API key. The engine shard numbers each name's
//! outbound messages as it emits events; everything that decides those
//! numbers is journaled: a name's binding (role, account, followed
//! accounts) in its `session_open` record, each command's origin (key and
//! `client_seq`) in the command record's envelope. So replaying the journal
//! reproduces every name's numbering exactly, which is what lets recovery
//! rebuild the counters after a crash and the replayer serve any name's
//! missed messages straight from the journal.
//!
//! [`SessionBook`] is that state (no I/O, no clock); [`receives`] is the
//! routing rule for one name, shared by the live router and the replayer so
//! the two cannot disagree. Record layouts: `net/PROTOCOL.md`, "Journal
//! records of the gateway".

use std::collections::BTreeMap;

use otedama_engine::Event;

use crate::keys::Follow;

/// Login flag bit 0: hold sequenced messages until the journal has synced them.
pub const FLAG_ACK_ON_DURABLE: u32 = 1;
/// Login flag bit 1: cancel the account's resting orders when the session ends.
pub const FLAG_CANCEL_ON_DISCONNECT: u32 = 2;
pub const FLAGS_KNOWN: u32 = FLAG_ACK_ON_DURABLE | FLAG_CANCEL_ON_DISCONNECT;

/// Every this many messages a name's index records where its stream can
/// be resumed from in the journal.
pub const INDEX_STRIDE: u64 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Trader = 0,
    Admin = 1,
    DropCopy = 2,
}

impl Role {
    pub fn from_u8(v: u8) -> Option<Role> {
        match v {
            0 => Some(Role::Trader),
            1 => Some(Role::Admin),
            2 => Some(Role::DropCopy),
            _ => None,
        }
    }
}

/// What a key is bound to, frozen at the name's first login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub key_id: u64,
    pub role: Role,
    pub account: u32,
    /// Drop copy only.
    pub follow: Follow,
}

/// Which account an event concerns, for routing: `None` for market-by-order
/// changes (market data, not order entry), `Some(None)` for answers with no
/// account (Rejected, Done).
fn event_account(ev: &Event) -> Option<Option<u32>> {
    match *ev {
        Event::Accepted { account, .. }
        | Event::Executed { account, .. }
        | Event::Canceled { account, .. }
        | Event::Replaced { account, .. }
        | Event::Amended { account, .. } => Some(Some(account.0)),
        Event::Rejected { .. } | Event::Done => Some(None),
        Event::BookAdd { .. } | Event::BookExecute { .. } | Event::BookReduce { .. } | Event::BookDelete { .. } => None,
    }
}

/// The routing rule: whether name `b` receives `ev`, produced by a command
/// of `origin_key` (0: none), and with which `client_seq`.
///
/// The origin hears the answers to its own commands (an admin all of them,
/// a trader those on its account or with none); a trader hears every event
/// on its account caused by others (`client_seq` 0); a drop copy hears
/// every execution of the accounts it follows.
#[inline]
pub fn receives(b: &Binding, origin_key: u64, client_seq: u64, ev: &Event) -> Option<u64> {
    let account = event_account(ev)?;
    if origin_key == b.key_id && origin_key != 0 {
        let gets = match b.role {
            Role::Admin => true,
            Role::Trader => account.is_none() || account == Some(b.account),
            Role::DropCopy => false,
        };
        return gets.then_some(client_seq);
    }
    let a = account?;
    let gets = match b.role {
        Role::Trader => a == b.account,
        Role::Admin => false,
        Role::DropCopy => matches!(ev, Event::Executed { .. }) && b.follow.covers(a),
    };
    gets.then_some(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub binding: Binding,
    /// Flags of the latest login.
    pub flags: u32,
    /// Logged in (a `session_open` without its `session_close`).
    pub open: bool,
    /// Last outbound sequence number assigned.
    pub out_seq: u64,
    /// Highest inbound `client_seq` applied.
    pub last_client_seq: u64,
    /// Journal sequence of the last command that sent this name something,
    /// and `out_seq` before that command's first message.
    last_cmd: u64,
    /// (out_seq before a command's first message to this name, that
    /// command's journal sequence), about every [`INDEX_STRIDE`] messages.
    index: Vec<(u64, u64)>,
}

/// Where the replayer starts to serve a name from sequence `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Journal sequence of the command to start reading at.
    pub journal_seq: u64,
    /// The name's `out_seq` just before that command's messages.
    pub out_seq_before: u64,
}

/// Every session name, in the order of first login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionBook {
    names: Vec<Name>,
    by_key: BTreeMap<u64, u32>,
    /// account → trader names bound to it.
    by_account: BTreeMap<u32, Vec<u32>>,
    /// Drop copies following every account.
    copy_all: Vec<u32>,
    /// account → drop copies following it.
    copy_by_account: BTreeMap<u32, Vec<u32>>,
}

impl SessionBook {
    pub fn new() -> SessionBook {
        SessionBook::default()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: u32) -> &Name {
        &self.names[i as usize]
    }

    pub fn names(&self) -> &[Name] {
        &self.names
    }

    pub fn find(&self, key_id: u64) -> Option<u32> {
        self.by_key.get(&key_id).copied()
    }

    /// Registers a name (the engine learnt of its key: at start-up, when
    /// the key store changes, or at its first login): from here on events
    /// are numbered for it. Its binding is frozen from then on. Returns the
    /// name's index.
    pub fn register(&mut self, binding: &Binding) -> u32 {
        match self.by_key.get(&binding.key_id) {
            Some(&i) => i,
            None => {
                let i = self.names.len() as u32;
                self.names.push(Name {
                    binding: binding.clone(),
                    flags: 0,
                    open: false,
                    out_seq: 0,
                    last_client_seq: 0,
                    last_cmd: 0,
                    index: Vec::new(),
                });
                self.by_key.insert(binding.key_id, i);
                self.bind(i);
                i
            }
        }
    }

    /// A login: registers the name if new, records the flags and marks it
    /// open. Returns the name's index.
    pub fn open(&mut self, binding: &Binding, flags: u32) -> u32 {
        let i = self.register(binding);
        let n = &mut self.names[i as usize];
        n.flags = flags;
        n.open = true;
        i
    }

    fn bind(&mut self, i: u32) {
        let b = &self.names[i as usize].binding;
        match (b.role, &b.follow) {
            (Role::Trader, _) => self.by_account.entry(b.account).or_default().push(i),
            (Role::Admin, _) => {}
            (Role::DropCopy, Follow::All) => self.copy_all.push(i),
            (Role::DropCopy, Follow::Accounts(v)) => {
                for &a in v {
                    self.copy_by_account.entry(a).or_default().push(i);
                }
            }
        }
    }

    /// A session ended.
    pub fn close(&mut self, key_id: u64) {
        if let Some(&i) = self.by_key.get(&key_id) {
            self.names[i as usize].open = false;
        }
    }

    /// A command from `origin` (a name index) with `client_seq` is about to
    /// be applied: records the `client_seq`. Commands at or below the
    /// highest taken are never journaled.
    pub fn take_client_seq(&mut self, origin: u32, client_seq: u64) {
        let n = &mut self.names[origin as usize];
        if client_seq > n.last_client_seq {
            n.last_client_seq = client_seq;
        }
    }

    /// Numbers `ev` for every name that receives it; `deliver(name, seq,
    /// client_seq)` is called once per recipient.
    #[inline]
    pub fn route(&mut self, origin: Option<u32>, client_seq: u64, cmd_jseq: u64, ev: &Event, mut deliver: impl FnMut(u32, u64, u64)) {
        let Some(account) = event_account(ev) else { return };
        let origin_key = origin.map_or(0, |o| self.names[o as usize].binding.key_id);
        if let Some(o) = origin
            && let Some(cs) = receives(&self.names[o as usize].binding, origin_key, client_seq, ev)
        {
            let seq = self.number(o, cmd_jseq);
            deliver(o, seq, cs);
        }
        let Some(a) = account else { return };
        // Lists are taken out for the loop (no allocation: the Vec moves)
        // so each map is searched twice per event, not once per recipient.
        if let Some(list) = self.by_account.get_mut(&a) {
            let list = std::mem::take(list);
            for &n in &list {
                if Some(n) != origin {
                    let seq = self.number(n, cmd_jseq);
                    deliver(n, seq, 0);
                }
            }
            *self.by_account.get_mut(&a).expect("still there") = list;
        }
        if matches!(ev, Event::Executed { .. }) {
            if !self.copy_all.is_empty() {
                let list = std::mem::take(&mut self.copy_all);
                for &n in &list {
                    let seq = self.number(n, cmd_jseq);
                    deliver(n, seq, 0);
                }
                self.copy_all = list;
            }
            if let Some(list) = self.copy_by_account.get_mut(&a) {
                let list = std::mem::take(list);
                for &n in &list {
                    let seq = self.number(n, cmd_jseq);
                    deliver(n, seq, 0);
                }
                *self.copy_by_account.get_mut(&a).expect("still there") = list;
            }
        }
    }

    #[inline]
    fn number(&mut self, name: u32, cmd_jseq: u64) -> u64 {
        let n = &mut self.names[name as usize];
        if n.last_cmd != cmd_jseq {
            n.last_cmd = cmd_jseq;
            if n.index.last().is_none_or(|&(s, _)| n.out_seq - s >= INDEX_STRIDE) {
                n.index.push((n.out_seq, cmd_jseq));
            }
        }
        n.out_seq += 1;
        n.out_seq
    }

    /// Where to start reading the journal to serve `name` from sequence
    /// `from` (1 ≤ `from` ≤ its `out_seq`).
    pub fn resume_point(&self, name: u32, from: u64) -> Option<ResumePoint> {
        let idx = &self.names[name as usize].index;
        let k = idx.partition_point(|&(s, _)| s < from);
        let &(out_seq_before, journal_seq) = idx.get(k.checked_sub(1)?)?;
        Some(ResumePoint { journal_seq, out_seq_before })
    }

    /// Serialises the book for a snapshot (layout: `net/PROTOCOL.md`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.names.len() as u32).to_le_bytes());
        for n in &self.names {
            let b = &n.binding;
            out.extend_from_slice(&b.key_id.to_le_bytes());
            out.push(b.role as u8);
            out.push(n.open as u8);
            out.extend_from_slice(&n.flags.to_le_bytes());
            out.extend_from_slice(&b.account.to_le_bytes());
            encode_follow(&b.follow, out);
            for v in [n.out_seq, n.last_client_seq, n.last_cmd] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(n.index.len() as u32).to_le_bytes());
            for &(s, j) in &n.index {
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&j.to_le_bytes());
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<SessionBook, RecordError> {
        let mut r = Cursor { b, at: 0 };
        let count = r.u32()?;
        let mut book = SessionBook::new();
        for _ in 0..count {
            let key_id = r.u64()?;
            let role = Role::from_u8(r.u8()?).ok_or(RecordError::Bad("role"))?;
            let open = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Bad("open flag")),
            };
            let flags = r.u32()?;
            let account = r.u32()?;
            let follow = decode_follow(&mut r)?;
            let (out_seq, last_client_seq, last_cmd) = (r.u64()?, r.u64()?, r.u64()?);
            let n = r.u32()? as usize;
            if n > r.left() / 16 {
                return Err(RecordError::Short);
            }
            let mut index = Vec::with_capacity(n);
            for _ in 0..n {
                index.push((r.u64()?, r.u64()?));
            }
            if book.by_key.contains_key(&key_id) {
                return Err(RecordError::Bad("a key twice"));
            }
            let i = book.names.len() as u32;
            book.names.push(Name {
                binding: Binding { key_id, role, account, follow },
                flags,
                open,
                out_seq,
                last_client_seq,
                last_cmd,
                index,
            });
            book.by_key.insert(key_id, i);
            book.bind(i);
        }
        if r.left() != 0 {
            return Err(RecordError::Bad("trailing bytes"));
        }
        Ok(book)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record too short")]
    Short,
    #[error("bad record: {0}")]
    Bad(&'static str),
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let s = self.b.get(self.at..self.at.checked_add(n).ok_or(RecordError::Short)?).ok_or(RecordError::Short)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
}

fn encode_follow(f: &Follow, out: &mut Vec<u8>) {
    match f {
        Follow::All => {
            out.push(1);
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        Follow::Accounts(v) => {
            out.push(0);
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            for a in v {
                out.extend_from_slice(&a.to_le_bytes());
            }
        }
    }
}

fn decode_follow(r: &mut Cursor<'_>) -> Result<Follow, RecordError> {
    let all = r.u8()?;
    let n = r.u16()? as usize;
    match all {
        1 if n == 0 => Ok(Follow::All),
        0 if n <= crate::keys::FOLLOW_MAX => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.u32()?);
            }
            if !v.is_sorted() {
                return Err(RecordError::Bad("followed accounts not sorted"));
            }
            Ok(Follow::Accounts(v))
        }
        _ => Err(RecordError::Bad("follow")),
    }
}

/// `session_open` (kind 0x0400): a login the engine accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOpen {
    pub binding: Binding,
    pub flags: u32,
}

impl SessionOpen {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let b = &self.binding;
        out.extend_from_slice(&b.key_id.to_le_bytes());
        out.push(b.role as u8);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&b.account.to_le_bytes());
        encode_follow(&b.follow, out);
    }

    pub fn decode(b: &[u8]) -> Result<SessionOpen, RecordError> {
        let mut r = Cursor { b, at: 0 };
        let key_id = r.u64()?;
        let role = Role::from_u8(r.u8()?).ok_or(RecordError::Bad("role"))?;
        if r.take(3)? != [0; 3] {
            return Err(RecordError::Bad("reserved bytes"));
        }
        let flags = r.u32()?;
        let account = r.u32()?;
        let follow = decode_follow(&mut r)?;
        if r.left() != 0 {
            return Err(RecordError::Bad("trailing bytes"));
        }
        Ok(SessionOpen { binding: Binding { key_id, role, account, follow }, flags })
    }
}

/// Why a session ended (`session_close`, kind 0x0401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The connection ended (logout, error, timeout, shutdown).
    Disconnected = 0,
    /// Open when the engine stopped without a clean close (found at recovery).
    EngineRestart = 1,
}

/// `session_close` payload: key id (u64), reason (u8), 7 reserved bytes.
pub fn encode_close(key_id: u64, reason: CloseReason, out: &mut Vec<u8>) {
    out.extend_from_slice(&key_id.to_le_bytes());
    out.push(reason as u8);
    out.extend_from_slice(&[0; 7]);
}

pub fn decode_close(b: &[u8]) -> Result<(u64, u8), RecordError> {
    if b.len() != 16 {
        return Err(RecordError::Short);
    }
    if b[9..] != [0; 7] {
        return Err(RecordError::Bad("reserved bytes"));
    }
    Ok((u64::from_le_bytes(b[..8].try_into().expect("8")), b[8]))
}

/// The command record's envelope (record version 2): origin key (u64, 0 for
/// none) and `client_seq` (u64), then the command as in version 1.
pub const ENVELOPE_BYTES: usize = 16;

pub fn encode_envelope(origin_key: u64, client_seq: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&origin_key.to_le_bytes());
    out.extend_from_slice(&client_seq.to_le_bytes());
}

/// Splits a command record's payload by its version: (origin key,
/// client_seq, the command's bytes).
pub fn split_envelope(version: u16, payload: &[u8]) -> Result<(u64, u64, &[u8]), RecordError> {
    match version {
        1 => Ok((0, 0, payload)),
        2 if payload.len() >= ENVELOPE_BYTES => Ok((
            u64::from_le_bytes(payload[..8].try_into().expect("8")),
            u64::from_le_bytes(payload[8..16].try_into().expect("8")),
            &payload[ENVELOPE_BYTES..],
        )),
        2 => Err(RecordError::Short),
        _ => Err(RecordError::Bad("unknown command record version")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otedama_engine::{AccountId, OrderId};

    fn b(key_id: u64, role: Role, account: u32, follow: Follow) -> Binding {
        Binding { key_id, role, account, follow }
    }

    fn exec(account: u32) -> Event {
        Event::Executed { match_id: 1, order: OrderId(1), account: AccountId(account), maker: true, price: 1, qty: 1, fee: 0, leaves: 0 }
    }

    #[test]
    fn route_agrees_with_the_rule_and_the_index_finds_every_start() {
        let mut book = SessionBook::new();
        let names = [
            b(11, Role::Trader, 1, Follow::All),
            b(12, Role::Trader, 1, Follow::All),
            b(13, Role::Trader, 2, Follow::All),
            b(14, Role::Admin, 0, Follow::All),
            b(15, Role::DropCopy, 0, Follow::All),
            b(16, Role::DropCopy, 0, Follow::Accounts(vec![2, 7])),
        ];
        for n in &names {
            book.open(n, 0);
        }
        let mut got: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); names.len()];
        let mut expect = got.clone();
        let mut counters = [0u64; 6];
        for cmd in 1..2000u64 {
            let origin = [0u32, 1, 2, 3][(cmd % 4) as usize];
            let evs = [exec((cmd % 3) as u32 + 1), Event::Done, Event::Rejected { reason: otedama_engine::Reject::UnknownOrder }];
            for ev in &evs[..(cmd % 3) as usize + 1] {
                book.route(Some(origin), cmd, cmd * 2, ev, |n, seq, cs| got[n as usize].push((seq, cs, cmd)));
                for (i, n) in names.iter().enumerate() {
                    if let Some(cs) = receives(n, names[origin as usize].key_id, cmd, ev) {
                        counters[i] += 1;
                        expect[i].push((counters[i], cs, cmd));
                    }
                }
            }
        }
        assert_eq!(got, expect);
        assert!(got.iter().all(|g| g.len() > 300), "{:?}", got.iter().map(Vec::len).collect::<Vec<_>>());
        for (i, stream) in got.iter().enumerate() {
            for (k, &(seq, _, cmd)) in stream.iter().enumerate() {
                let rp = book.resume_point(i as u32, seq).unwrap();
                // Starting at the index's command and counting from its
                // `out_seq_before` reaches `seq` at or after it.
                assert!(rp.journal_seq <= cmd * 2, "name {i} seq {seq}");
                let first = stream.iter().position(|&(_, _, c)| c * 2 >= rp.journal_seq).unwrap();
                assert_eq!(stream[first].0, rp.out_seq_before + 1);
                assert!(first <= k);
            }
        }
        let mut enc = Vec::new();
        book.encode(&mut enc);
        assert_eq!(SessionBook::decode(&enc).unwrap(), book);
        for cut in 0..enc.len() {
            assert!(SessionBook::decode(&enc[..cut]).is_err());
        }
        // Found by fuzzing: an open flag other than 0 or 1 is refused (it
        // would not re-encode to the same bytes).
        let mut bad = enc.clone();
        bad[13] = 10;
        assert_eq!(SessionBook::decode(&bad), Err(RecordError::Bad("open flag")));
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let o = SessionOpen { binding: b(5, Role::DropCopy, 0, Follow::Accounts(vec![1, 9])), flags: 3 };
        let mut v = Vec::new();
        o.encode(&mut v);
        assert_eq!(SessionOpen::decode(&v).unwrap(), o);
        for cut in 0..v.len() {
            assert!(SessionOpen::decode(&v[..cut]).is_err());
        }
        v[8] = 9;
        assert!(SessionOpen::decode(&v).is_err());
        let mut c = Vec::new();
        encode_close(7, CloseReason::EngineRestart, &mut c);
        assert_eq!(decode_close(&c).unwrap(), (7, 1));
        let mut e = Vec::new();
        encode_envelope(3, 4, &mut e);
        e.push(99);
        assert_eq!(split_envelope(2, &e).unwrap(), (3, 4, &[99u8][..]));
        assert!(split_envelope(2, &e[..15]).is_err());
        assert!(split_envelope(3, &e).is_err());
    }
}
