//! The binary order-entry protocol's frames and messages (`net/PROTOCOL.md`).
//!
//! A frame is `u16 len` (bytes after the length field), `u16 type`, then a
//! fixed-size body. Decoding is a bounds check and a typed view over the
//! bytes ([`Frame`], then a `…View`): no allocation and no copy. Encoding
//! writes a message struct's fields at their offsets.
//!
//! Hand-written rather than derived (rkyv, zerocopy): the layout is a public
//! contract documented byte by byte, and every field read is one unaligned
//! little-endian load at a constant offset.

use otedama_engine::{AccountId, AssetId, CommandKind, InstrumentId, InstrumentSpec, OrderId, OrderType, Side, Status, TimeInForce};

/// Largest frame the server accepts or sends, length field included.
pub const MAX_FRAME: usize = 256;
/// Length field + type field.
pub const HEADER: usize = 4;

/// Why a frame could not be decoded. Any of these ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} below the 2-byte minimum")]
    TooShort(u16),
    #[error("frame length {0} above the {max}-byte maximum", max = MAX_FRAME - 2)]
    TooLong(u16),
    #[error("unknown message type {0:#06x}")]
    UnknownType(u16),
    #[error("message type {ty:#06x} needs a {want}-byte body, got {got}")]
    BadLength { ty: u16, want: usize, got: usize },
}

/// One complete frame in a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ty: u16,
    pub body: &'a [u8],
}

/// Splits the first frame off `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((frame, used)))`: the frame and how many bytes it took.
/// Checks the length bounds, that the type is known and that the body has
/// exactly that type's size.
#[inline]
pub fn split_frame(buf: &[u8], inbound: bool) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = u16::from_le_bytes([buf[0], buf[1]]);
    if len < 2 {
        return Err(FrameError::TooShort(len));
    }
    if len as usize > MAX_FRAME - 2 {
        return Err(FrameError::TooLong(len));
    }
    let total = 2 + len as usize;
    if buf.len() < total {
        // The type is checked as soon as it has arrived, so garbage is
        // refused without waiting for a body that may never come.
        if buf.len() >= HEADER {
            let ty = u16::from_le_bytes([buf[2], buf[3]]);
            body_len(ty, inbound).ok_or(FrameError::UnknownType(ty))?;
        }
        return Ok(None);
    }
    let ty = u16::from_le_bytes([buf[2], buf[3]]);
    let want = body_len(ty, inbound).ok_or(FrameError::UnknownType(ty))?;
    let body = &buf[HEADER..total];
    if body.len() != want {
        return Err(FrameError::BadLength { ty, want, got: body.len() });
    }
    Ok(Some((Frame { ty, body }, total)))
}

#[inline(always)]
fn rd<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

/// Field types of the layout tables.
pub trait Field: Sized + Copy {
    const SIZE: usize;
    fn read(b: &[u8], off: usize) -> Self;
    fn write(self, b: &mut [u8], off: usize);
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn read(b: &[u8], off: usize) -> Self { <$t>::from_le_bytes(rd(b, off)) }
            #[inline(always)]
            fn write(self, b: &mut [u8], off: usize) { b[off..off + Self::SIZE].copy_from_slice(&self.to_le_bytes()) }
        }
    )*};
}
int_field!(u8, u16, u32, u64, i32, i64);

impl<const N: usize> Field for [u8; N] {
    const SIZE: usize = N;
    #[inline(always)]
    fn read(b: &[u8], off: usize) -> Self {
        rd(b, off)
    }
    #[inline(always)]
    fn write(self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(&self)
    }
}

/// Declares a message: its type code, an owned struct (for encoding) and a
/// borrowed view (for decoding) whose accessors read at fixed offsets.
/// Fields are laid out in declaration order with no padding.
macro_rules! messages {
    ($dir:ident: $( $(#[$m:meta])* $code:literal $name:ident / $view:ident { $($f:ident : $t:ty),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
            pub struct $name { $(pub $f: $t),* }

            #[derive(Debug, Clone, Copy)]
            #[allow(dead_code)]
            pub struct $view<'a>(&'a [u8]);

            #[allow(unused_assignments)]
            impl $name {
                pub const TYPE: u16 = $code;
                pub const BODY: usize = 0 $(+ <$t as Field>::SIZE)*;
                /// Writes the whole frame (header included) into `out`,
                /// which must hold `HEADER + BODY` bytes; returns that size.
                #[inline]
                pub fn encode(&self, out: &mut [u8]) -> usize {
                    let total = HEADER + Self::BODY;
                    ((total - 2) as u16).write(out, 0);
                    Self::TYPE.write(out, 2);
                    #[allow(unused_mut, unused_variables)]
                    let mut off = HEADER;
                    $( self.$f.write(out, off); off += <$t as Field>::SIZE; )*
                    total
                }
                /// Appends the frame to `out`.
                pub fn push(&self, out: &mut Vec<u8>) {
                    let at = out.len();
                    out.resize(at + HEADER + Self::BODY, 0);
                    self.encode(&mut out[at..]);
                }
            }

            #[allow(unused_assignments)]
            impl<'a> $view<'a> {
                /// `body` is a frame body of this type, as [`split_frame`] checked it.
                #[inline]
                pub fn parse(body: &'a [u8]) -> Option<Self> {
                    (body.len() == $name::BODY).then_some($view(body))
                }
                messages!(@acc 0usize; $($f : $t),*);
                /// Copies every field out.
                pub fn to_owned(&self) -> $name {
                    $name { $($f: self.$f()),* }
                }
            }
        )*

        /// Body size of a known message type in this direction.
        fn $dir(ty: u16) -> Option<usize> {
            match ty {
                $( $code => Some($name::BODY), )*
                _ => None,
            }
        }
    };
    (@acc $off:expr; ) => {};
    (@acc $off:expr; $f:ident : $t:ty $(, $rf:ident : $rt:ty)*) => {
        #[inline(always)]
        pub fn $f(&self) -> $t { <$t as Field>::read(self.0, $off) }
        messages!(@acc $off + <$t as Field>::SIZE; $($rf : $rt),*);
    };
}

fn body_len(ty: u16, inbound: bool) -> Option<usize> {
    if inbound { inbound_len(ty) } else { outbound_len(ty) }
}

// Client to server.
messages! { inbound_len:
    /// Opens a session. `next_seq`: the first outbound sequence number the
    /// client wants (0: no replay, start after the last one numbered; n:
    /// replay from n, served from the journal). `heartbeat_ms`: the
    /// interval at which the client promises traffic (0: the server's
    /// default). `flags`: bit 0 ack-on-durable, bit 1 cancel-on-disconnect.
    0x0001 Login / LoginView { key_id: u64, secret: [u8; 32], next_seq: u64, heartbeat_ms: u32, flags: u32 }
    0x0002 ClientHeartbeat / ClientHeartbeatView {}
    0x0003 Logout / LogoutView {}
    /// `account` 0: the session's own account (admin sessions may name any).
    /// `ord_type` 0 limit (price, tif), 1 market (`flags` bit 0: `price` is
    /// a protection price; bit 1: `budget` caps the quote a buy spends).
    0x0101 NewOrder / NewOrderView {
        client_seq: u64, account: u32, instrument: u16, side: u8, ord_type: u8,
        tif: u8, flags: u8, reserved: u16, price: i64, qty: u64, budget: u64,
    }
    /// Reduces the order's remaining quantity to `qty` (0 cancels it).
    0x0102 Cancel / CancelView { client_seq: u64, account: u32, reserved: u32, order: u64, qty: u64 }
    /// Cancel and replace: new id, new priority.
    0x0103 Replace / ReplaceView { client_seq: u64, account: u32, reserved: u32, order: u64, price: i64, qty: u64 }
    /// Reduces the quantity, keeps priority.
    0x0104 Amend / AmendView { client_seq: u64, account: u32, reserved: u32, order: u64, qty: u64 }
    /// `flags` bit 0: only `instrument`; bit 1: only `side`.
    0x0105 MassCancel / MassCancelView { client_seq: u64, account: u32, instrument: u16, side: u8, flags: u8 }
    // 0x0110..=0x017f: reserved for the advanced order types.
    0x0201 CreateAccount / CreateAccountView { client_seq: u64, account: u32 }
    0x0202 Deposit / DepositView { client_seq: u64, account: u32, asset: u16, reserved: u16, amount: u64 }
    0x0203 Withdraw / WithdrawView { client_seq: u64, account: u32, asset: u16, reserved: u16, amount: u64 }
    0x0204 Transfer / TransferView { client_seq: u64, from: u32, to: u32, asset: u16, reserved: [u8; 6], amount: u64 }
    0x0205 AddInstrument / AddInstrumentView {
        client_seq: u64, instrument: u16, base: u16, quote: u16, status: u8, reserved: u8,
        symbol: [u8; 16], tick: i64, lot: u64, min_price: i64, max_price: i64, min_qty: u64, max_qty: u64,
        quote_per_unit: u64, base_per_unit: u64, maker_bps: i32, taker_bps: i32,
    }
    0x0206 SetInstrumentStatus / SetInstrumentStatusView { client_seq: u64, instrument: u16, status: u8, reserved: u8 }
    0x0207 SetFees / SetFeesView { client_seq: u64, instrument: u16, reserved: u16, maker_bps: i32, taker_bps: i32 }
    /// Admin only: the engine shard's service-time histogram, answered by
    /// EngineStats (not a command: nothing is journaled). `flags` bit 0:
    /// start a new window after reading.
    0x0208 EngineStatsRequest / EngineStatsRequestView { client_seq: u64, flags: u32, reserved: u32 }
}

// Server to client. Every message starts with `seq` (0: unsequenced) and
// the server's clock `ts` (ns since the Unix epoch).
messages! { outbound_len:
    /// `next_seq`: the sequence number the next sequenced message will carry
    /// (the first replayed one when the client asked for a replay);
    /// `role`: 0 trader, 1 admin, 2 drop copy;
    /// `last_client_seq`: the highest `client_seq` the engine has taken from
    /// this session name (continue above it after a reconnect: anything at
    /// or below it is ignored as a resend).
    0x8001 LoginAccepted / LoginAcceptedView { seq: u64, ts: u64, next_seq: u64, last_client_seq: u64, account: u32, role: u8, reserved: [u8; 3], heartbeat_ms: u32, reserved2: u32 }
    0x8002 LoginRejected / LoginRejectedView { seq: u64, ts: u64, reason: u16, reserved: [u8; 6] }
    0x8003 ServerHeartbeat / ServerHeartbeatView { seq: u64, ts: u64 }
    /// A message was refused before reaching the engine: over the rate
    /// limit. Unsequenced; not replayed.
    0x8004 Throttled / ThrottledView { seq: u64, ts: u64, client_seq: u64 }
    /// The server is closing the connection, and why.
    0x8005 Goodbye / GoodbyeView { seq: u64, ts: u64, reason: u16, reserved: [u8; 6] }
    0x8101 Accepted / AcceptedView {
        seq: u64, ts: u64, client_seq: u64, order: u64, account: u32, instrument: u16, side: u8, reserved: u8, price: i64, qty: u64,
    }
    /// `reason` < 1000: the engine's reject codes; ≥ 1000: the gateway's.
    0x8102 Rejected / RejectedView { seq: u64, ts: u64, client_seq: u64, reason: u16, reserved: [u8; 6] }
    0x8103 Canceled / CanceledView {
        seq: u64, ts: u64, client_seq: u64, order: u64, account: u32, reason: u8, reserved: [u8; 3], qty: u64, leaves: u64,
    }
    0x8104 Replaced / ReplacedView { seq: u64, ts: u64, client_seq: u64, old_order: u64, new_order: u64, account: u32, reserved: u32 }
    0x8105 Amended / AmendedView { seq: u64, ts: u64, client_seq: u64, order: u64, account: u32, reserved: u32, leaves: u64 }
    0x8106 Executed / ExecutedView {
        seq: u64, ts: u64, client_seq: u64, match_id: u64, order: u64, account: u32, maker: u8, reserved: [u8; 3],
        price: i64, qty: u64, fee: i64, leaves: u64,
    }
    /// An admin command (account, deposit, instrument...) took effect.
    0x8107 Done / DoneView { seq: u64, ts: u64, client_seq: u64 }
    /// The engine shard's service time per command (taken off its ring →
    /// journaled, applied, its events handed to the I/O shards), over the
    /// window since `since_ns`: `count` commands, percentiles in ns.
    /// `commands`: every command since the engine started. Unsequenced.
    0x8108 EngineStats / EngineStatsView {
        seq: u64, ts: u64, client_seq: u64, commands: u64, count: u64, since_ns: u64,
        p50_ns: u64, p90_ns: u64, p99_ns: u64, p999_ns: u64, max_ns: u64, busy_ns: u64,
    }
}

/// Gateway reject codes (the engine's own codes are below 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum GatewayReject {
    /// The engine's inbound ring was full.
    EngineBusy = 1001,
    /// Only admin sessions send this message or act for another account.
    NotAdmin = 1002,
    /// A field holds a value outside its enumeration (side, type, tif, flags).
    BadField = 1003,
    /// Drop-copy sessions only listen.
    ReadOnly = 1004,
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum LoginReject {
    /// Unknown key, wrong secret or revoked key (deliberately one code).
    BadCredentials = 1,
    /// A session with this key is already logged in.
    AlreadyLoggedIn = 2,
    /// The credential checker's queue was full.
    Busy = 3,
    /// The server is shutting down.
    ShuttingDown = 4,
    /// Unknown Login flags, or ack-on-durable from an engine whose journal
    /// never syncs (`journal.durability = "none"`).
    BadFlags = 5,
}

/// Why the server closed a connection (sent in [`Goodbye`] when it can be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum GoodbyeReason {
    Logout = 1,
    ProtocolError = 2,
    HeartbeatTimeout = 3,
    LoginTimeout = 4,
    /// The client did not read fast enough and its outbound queue filled.
    SlowReader = 5,
    Shutdown = 6,
    NotLoggedIn = 7,
    /// The replay asked for starts before the oldest journal segment kept
    /// (log in again with `next_seq` 0, or a later one), or reading the
    /// journal failed.
    ReplayUnavailable = 8,
}

/// Encodes one engine event as the sequenced message a session receives;
/// returns its length, or 0 for events sessions do not receive
/// (market-by-order changes). The live router and the replayer both use
/// it, so a replayed message is byte for byte the one sent live.
pub fn encode_event(seq: u64, ts: u64, client_seq: u64, ev: &otedama_engine::Event, b: &mut [u8]) -> usize {
    use otedama_engine::Event;
    match *ev {
        Event::Accepted { order, account, instrument, side, price, qty } => Accepted {
            seq,
            ts,
            client_seq,
            order: order.0,
            account: account.0,
            instrument: instrument.0,
            side: side as u8,
            reserved: 0,
            price,
            qty,
        }
        .encode(b),
        Event::Executed { match_id, order, account, maker, price, qty, fee, leaves } => Executed {
            seq,
            ts,
            client_seq,
            match_id,
            order: order.0,
            account: account.0,
            maker: maker as u8,
            reserved: [0; 3],
            price,
            qty,
            fee,
            leaves,
        }
        .encode(b),
        Event::Canceled { order, account, qty, leaves, reason } => {
            Canceled { seq, ts, client_seq, order: order.0, account: account.0, reason: reason as u8, reserved: [0; 3], qty, leaves }
                .encode(b)
        }
        Event::Replaced { old, new, account } => {
            Replaced { seq, ts, client_seq, old_order: old.0, new_order: new.0, account: account.0, reserved: 0 }.encode(b)
        }
        Event::Amended { order, account, leaves } => {
            Amended { seq, ts, client_seq, order: order.0, account: account.0, reserved: 0, leaves }.encode(b)
        }
        Event::Rejected { reason } => Rejected { seq, ts, client_seq, reason: reason as u16, reserved: [0; 6] }.encode(b),
        Event::Done => Done { seq, ts, client_seq }.encode(b),
        Event::BookAdd { .. } | Event::BookExecute { .. } | Event::BookReduce { .. } | Event::BookDelete { .. } => 0,
    }
}

/// Every inbound type code.
pub const INBOUND_TYPES: &[u16] = &[
    Login::TYPE,
    ClientHeartbeat::TYPE,
    Logout::TYPE,
    NewOrder::TYPE,
    Cancel::TYPE,
    Replace::TYPE,
    Amend::TYPE,
    MassCancel::TYPE,
    CreateAccount::TYPE,
    Deposit::TYPE,
    Withdraw::TYPE,
    Transfer::TYPE,
    AddInstrument::TYPE,
    SetInstrumentStatus::TYPE,
    SetFees::TYPE,
    EngineStatsRequest::TYPE,
];

/// Every outbound type code.
pub const OUTBOUND_TYPES: &[u16] = &[
    LoginAccepted::TYPE,
    LoginRejected::TYPE,
    ServerHeartbeat::TYPE,
    Throttled::TYPE,
    Goodbye::TYPE,
    Accepted::TYPE,
    Rejected::TYPE,
    Canceled::TYPE,
    Replaced::TYPE,
    Amended::TYPE,
    Executed::TYPE,
    Done::TYPE,
    EngineStats::TYPE,
];

/// Body size of an inbound type (for documentation tests and clients).
pub fn inbound_body_len(ty: u16) -> Option<usize> {
    inbound_len(ty)
}

/// Body size of an outbound type.
pub fn outbound_body_len(ty: u16) -> Option<usize> {
    outbound_len(ty)
}

/// A decoded server message, copied out (for clients and tests; the server
/// itself only encodes these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMsg {
    LoginAccepted(LoginAccepted),
    LoginRejected(LoginRejected),
    Heartbeat(ServerHeartbeat),
    Throttled(Throttled),
    Goodbye(Goodbye),
    Accepted(Accepted),
    Rejected(Rejected),
    Canceled(Canceled),
    Replaced(Replaced),
    Amended(Amended),
    Executed(Executed),
    Done(Done),
    EngineStats(EngineStats),
}

impl ServerMsg {
    pub fn decode(f: Frame<'_>) -> Option<ServerMsg> {
        let b = f.body;
        Some(match f.ty {
            LoginAccepted::TYPE => ServerMsg::LoginAccepted(LoginAcceptedView::parse(b)?.to_owned()),
            LoginRejected::TYPE => ServerMsg::LoginRejected(LoginRejectedView::parse(b)?.to_owned()),
            ServerHeartbeat::TYPE => ServerMsg::Heartbeat(ServerHeartbeatView::parse(b)?.to_owned()),
            Throttled::TYPE => ServerMsg::Throttled(ThrottledView::parse(b)?.to_owned()),
            Goodbye::TYPE => ServerMsg::Goodbye(GoodbyeView::parse(b)?.to_owned()),
            Accepted::TYPE => ServerMsg::Accepted(AcceptedView::parse(b)?.to_owned()),
            Rejected::TYPE => ServerMsg::Rejected(RejectedView::parse(b)?.to_owned()),
            Canceled::TYPE => ServerMsg::Canceled(CanceledView::parse(b)?.to_owned()),
            Replaced::TYPE => ServerMsg::Replaced(ReplacedView::parse(b)?.to_owned()),
            Amended::TYPE => ServerMsg::Amended(AmendedView::parse(b)?.to_owned()),
            Executed::TYPE => ServerMsg::Executed(ExecutedView::parse(b)?.to_owned()),
            Done::TYPE => ServerMsg::Done(DoneView::parse(b)?.to_owned()),
            EngineStats::TYPE => ServerMsg::EngineStats(EngineStatsView::parse(b)?.to_owned()),
            _ => return None,
        })
    }

    /// The message's outbound sequence number (0: unsequenced).
    pub fn seq(&self) -> u64 {
        match self {
            ServerMsg::LoginAccepted(m) => m.seq,
            ServerMsg::LoginRejected(m) => m.seq,
            ServerMsg::Heartbeat(m) => m.seq,
            ServerMsg::Throttled(m) => m.seq,
            ServerMsg::Goodbye(m) => m.seq,
            ServerMsg::Accepted(m) => m.seq,
            ServerMsg::Rejected(m) => m.seq,
            ServerMsg::Canceled(m) => m.seq,
            ServerMsg::Replaced(m) => m.seq,
            ServerMsg::Amended(m) => m.seq,
            ServerMsg::Executed(m) => m.seq,
            ServerMsg::Done(m) => m.seq,
            ServerMsg::EngineStats(m) => m.seq,
        }
    }
}

/// Turns an application frame into the engine command it asks for,
/// checking every enumerated field and the session's rights. `account` is
/// the session's own account; `admin` whether it may act for others and
/// send admin commands. Errors carry the frame's `client_seq` for the reply.
pub fn decode_command(f: Frame<'_>, account: u32, admin: bool) -> Result<(u64, CommandKind), (u64, GatewayReject)> {
    use GatewayReject::*;
    let client_seq = if f.body.len() >= 8 { u64::read(f.body, 0) } else { 0 };
    let err = |r| Err((client_seq, r));
    let who = |a: u32| -> Result<AccountId, (u64, GatewayReject)> {
        match a {
            0 => Ok(AccountId(account)),
            a if a == account || admin => Ok(AccountId(a)),
            _ => Err((client_seq, NotAdmin)),
        }
    };
    let side = |s: u8| match s {
        0 => Ok(Side::Buy),
        1 => Ok(Side::Sell),
        _ => Err((client_seq, BadField)),
    };
    let status = |s: u8| match s {
        0 => Ok(Status::Trading),
        1 => Ok(Status::Halted),
        _ => Err((client_seq, BadField)),
    };
    if f.ty >= 0x0200 && !admin {
        return err(NotAdmin);
    }
    let b = f.body;
    let kind = match f.ty {
        NewOrder::TYPE => {
            let v = NewOrderView::parse(b).ok_or((client_seq, BadField))?;
            let order = match v.ord_type() {
                0 => {
                    let tif = match v.tif() {
                        0 => TimeInForce::Gtc,
                        1 => TimeInForce::Ioc,
                        2 => TimeInForce::Fok,
                        _ => return err(BadField),
                    };
                    if v.flags() != 0 || v.budget() != 0 {
                        return err(BadField);
                    }
                    OrderType::Limit { price: v.price(), tif }
                }
                1 => {
                    let fl = v.flags();
                    if fl & !3 != 0 || v.tif() != 0 || (fl & 1 == 0 && v.price() != 0) || (fl & 2 == 0 && v.budget() != 0) {
                        return err(BadField);
                    }
                    OrderType::Market { protection: (fl & 1 != 0).then(|| v.price()), budget: (fl & 2 != 0).then(|| v.budget()) }
                }
                _ => return err(BadField),
            };
            CommandKind::NewOrder {
                account: who(v.account())?,
                instrument: InstrumentId(v.instrument()),
                side: side(v.side())?,
                qty: v.qty(),
                order,
            }
        }
        Cancel::TYPE => {
            let v = CancelView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Cancel { account: who(v.account())?, order: OrderId(v.order()), qty: v.qty() }
        }
        Replace::TYPE => {
            let v = ReplaceView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Replace { account: who(v.account())?, order: OrderId(v.order()), price: v.price(), qty: v.qty() }
        }
        Amend::TYPE => {
            let v = AmendView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Amend { account: who(v.account())?, order: OrderId(v.order()), qty: v.qty() }
        }
        MassCancel::TYPE => {
            let v = MassCancelView::parse(b).ok_or((client_seq, BadField))?;
            let fl = v.flags();
            if fl & !3 != 0 || (fl & 1 == 0 && v.instrument() != 0) || (fl & 2 == 0 && v.side() != 0) {
                return err(BadField);
            }
            CommandKind::MassCancel {
                account: who(v.account())?,
                instrument: (fl & 1 != 0).then(|| InstrumentId(v.instrument())),
                side: if fl & 2 != 0 { Some(side(v.side())?) } else { None },
            }
        }
        CreateAccount::TYPE => {
            let v = CreateAccountView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::CreateAccount { account: AccountId(v.account()) }
        }
        Deposit::TYPE => {
            let v = DepositView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Deposit { account: AccountId(v.account()), asset: AssetId(v.asset()), amount: v.amount() }
        }
        Withdraw::TYPE => {
            let v = WithdrawView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Withdraw { account: AccountId(v.account()), asset: AssetId(v.asset()), amount: v.amount() }
        }
        Transfer::TYPE => {
            let v = TransferView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::Transfer { from: AccountId(v.from()), to: AccountId(v.to()), asset: AssetId(v.asset()), amount: v.amount() }
        }
        AddInstrument::TYPE => {
            let v = AddInstrumentView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::AddInstrument {
                spec: InstrumentSpec {
                    id: InstrumentId(v.instrument()),
                    symbol: v.symbol(),
                    base: AssetId(v.base()),
                    quote: AssetId(v.quote()),
                    tick: v.tick(),
                    lot: v.lot(),
                    min_price: v.min_price(),
                    max_price: v.max_price(),
                    min_qty: v.min_qty(),
                    max_qty: v.max_qty(),
                    quote_per_unit: v.quote_per_unit(),
                    base_per_unit: v.base_per_unit(),
                    maker_bps: v.maker_bps(),
                    taker_bps: v.taker_bps(),
                    status: status(v.status())?,
                },
            }
        }
        SetInstrumentStatus::TYPE => {
            let v = SetInstrumentStatusView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::SetInstrumentStatus { instrument: InstrumentId(v.instrument()), status: status(v.status())? }
        }
        SetFees::TYPE => {
            let v = SetFeesView::parse(b).ok_or((client_seq, BadField))?;
            CommandKind::SetFees { instrument: InstrumentId(v.instrument()), maker_bps: v.maker_bps(), taker_bps: v.taker_bps() }
        }
        _ => return err(BadField),
    };
    Ok((client_seq, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_views() {
        let m = NewOrder {
            client_seq: 7,
            account: 3,
            instrument: 1,
            side: 1,
            ord_type: 0,
            tif: 2,
            flags: 0,
            reserved: 0,
            price: -5,
            qty: 9,
            budget: 11,
        };
        let mut buf = Vec::new();
        m.push(&mut buf);
        assert_eq!(buf.len(), HEADER + NewOrder::BODY);
        assert_eq!(NewOrder::BODY, 44);
        let (f, used) = split_frame(&buf, true).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(f.ty, NewOrder::TYPE);
        let v = NewOrderView::parse(f.body).unwrap();
        assert_eq!(v.price(), -5);
        assert_eq!(v.to_owned(), m);
    }

    #[test]
    fn incomplete_and_bad_frames() {
        let mut buf = Vec::new();
        ClientHeartbeat {}.push(&mut buf);
        for cut in 0..buf.len() {
            assert!(split_frame(&buf[..cut], true).unwrap().is_none());
        }
        assert_eq!(split_frame(&[1, 0], true).unwrap_err(), FrameError::TooShort(1));
        assert_eq!(split_frame(&[0xff, 0xff], true).unwrap_err(), FrameError::TooLong(0xffff));
        assert_eq!(split_frame(&[2, 0, 0x99, 0x99], true).unwrap_err(), FrameError::UnknownType(0x9999));
        // Known type, wrong body size.
        assert!(matches!(split_frame(&[4, 0, 2, 0, 0, 0], true), Err(FrameError::BadLength { .. })));
        // Outbound types are unknown inbound.
        assert!(matches!(split_frame(&[2, 0, 0x03, 0x80], true), Err(FrameError::UnknownType(_))));
    }
}
