//! The binary form of exchange commands and events, as journaled. Layout:
//! `engine/FORMAT.md` (little-endian, packed, one tag byte per variant).
//! Decoding checks every length, tag and enum value: bytes from disk
//! become typed values or a precise error, never a panic.

use crate::exchange::*;
use crate::types::*;

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    Truncated,
    UnknownTag(u8),
    BadValue(&'static str),
    TrailingBytes,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Truncated => write!(f, "truncated"),
            CodecError::UnknownTag(t) => write!(f, "unknown tag {t}"),
            CodecError::BadValue(what) => write!(f, "invalid {what}"),
            CodecError::TrailingBytes => write!(f, "trailing bytes"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Appends to a caller-owned buffer (reused: no allocation once warm).
struct W<'a>(&'a mut Vec<u8>);
impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct R<'a> {
    b: &'a [u8],
}
impl<'a> R<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        if self.b.len() < N {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.b.split_at(N);
        self.b = t;
        Ok(h.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn side(&mut self) -> Result<Side, CodecError> {
        match self.u8()? {
            0 => Ok(Side::Buy),
            1 => Ok(Side::Sell),
            _ => Err(CodecError::BadValue("side")),
        }
    }
    fn status(&mut self) -> Result<Status, CodecError> {
        match self.u8()? {
            0 => Ok(Status::Trading),
            1 => Ok(Status::Halted),
            _ => Err(CodecError::BadValue("status")),
        }
    }
    fn done(&self) -> Result<(), CodecError> {
        if self.b.is_empty() { Ok(()) } else { Err(CodecError::TrailingBytes) }
    }
}

fn side_u8(s: Side) -> u8 {
    match s {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

fn status_u8(s: Status) -> u8 {
    match s {
        Status::Trading => 0,
        Status::Halted => 1,
    }
}

fn tif_u8(t: TimeInForce) -> u8 {
    match t {
        TimeInForce::Gtc => 0,
        TimeInForce::Ioc => 1,
        TimeInForce::Fok => 2,
    }
}

fn reason_u8(r: CancelReason) -> u8 {
    match r {
        CancelReason::Requested => 0,
        CancelReason::Unfilled => 1,
        CancelReason::BudgetExhausted => 2,
        CancelReason::MassCancel => 3,
        CancelReason::Replaced => 4,
    }
}

/// The stable code of a reject reason.
pub fn reject_code(r: Reject) -> u16 {
    r as u16
}

/// A reject reason from its code.
pub fn reject_from_code(c: u16) -> Option<Reject> {
    use Reject::*;
    const ALL: [Reject; 24] = [
        UnknownAccount,
        AccountExists,
        AccountLimit,
        UnknownAsset,
        ZeroAmount,
        InsufficientBalance,
        InsufficientHeld,
        Overflow,
        SameAccount,
        UnknownInstrument,
        InstrumentExists,
        InstrumentLimit,
        InvalidInstrument,
        InstrumentHalted,
        PriceOffTick,
        PriceOutOfBand,
        QtyOffLot,
        QtyOutOfBounds,
        UnknownOrder,
        NotReduced,
        OrderLimit,
        MarketBuyUnbounded,
        BudgetOnSell,
        NotOwner,
    ];
    ALL.into_iter().find(|r| *r as u16 == c)
}

/// Appends the encoding of `cmd` to `buf`.
pub fn encode_command(cmd: &Command, buf: &mut Vec<u8>) {
    let mut w = W(buf);
    w.u64(cmd.ts);
    match cmd.kind {
        CommandKind::CreateAccount { account } => {
            w.u8(1);
            w.u32(account.0);
        }
        CommandKind::Deposit { account, asset, amount } => {
            w.u8(2);
            w.u32(account.0);
            w.u16(asset.0);
            w.u64(amount);
        }
        CommandKind::Withdraw { account, asset, amount } => {
            w.u8(3);
            w.u32(account.0);
            w.u16(asset.0);
            w.u64(amount);
        }
        CommandKind::Transfer { from, to, asset, amount } => {
            w.u8(4);
            w.u32(from.0);
            w.u32(to.0);
            w.u16(asset.0);
            w.u64(amount);
        }
        CommandKind::AddInstrument { spec: s } => {
            w.u8(5);
            w.u16(s.id.0);
            w.0.extend_from_slice(&s.symbol);
            w.u16(s.base.0);
            w.u16(s.quote.0);
            w.i64(s.tick);
            w.u64(s.lot);
            w.i64(s.min_price);
            w.i64(s.max_price);
            w.u64(s.min_qty);
            w.u64(s.max_qty);
            w.u64(s.quote_per_unit);
            w.u64(s.base_per_unit);
            w.i32(s.maker_bps);
            w.i32(s.taker_bps);
            w.u8(status_u8(s.status));
        }
        CommandKind::SetInstrumentStatus { instrument, status } => {
            w.u8(6);
            w.u16(instrument.0);
            w.u8(status_u8(status));
        }
        CommandKind::SetFees { instrument, maker_bps, taker_bps } => {
            w.u8(7);
            w.u16(instrument.0);
            w.i32(maker_bps);
            w.i32(taker_bps);
        }
        CommandKind::NewOrder { account, instrument, side, qty, order } => {
            w.u8(8);
            w.u32(account.0);
            w.u16(instrument.0);
            w.u8(side_u8(side));
            w.u64(qty);
            match order {
                OrderType::Limit { price, tif } => {
                    w.u8(0);
                    w.i64(price);
                    w.u8(tif_u8(tif));
                }
                OrderType::Market { protection, budget } => {
                    w.u8(1);
                    w.u8(protection.is_some() as u8 | (budget.is_some() as u8) << 1);
                    w.i64(protection.unwrap_or(0));
                    w.u64(budget.unwrap_or(0));
                }
            }
        }
        CommandKind::Cancel { account, order, qty } => {
            w.u8(9);
            w.u32(account.0);
            w.u64(order.0);
            w.u64(qty);
        }
        CommandKind::Replace { account, order, price, qty } => {
            w.u8(10);
            w.u32(account.0);
            w.u64(order.0);
            w.i64(price);
            w.u64(qty);
        }
        CommandKind::Amend { account, order, qty } => {
            w.u8(11);
            w.u32(account.0);
            w.u64(order.0);
            w.u64(qty);
        }
        CommandKind::MassCancel { account, instrument, side } => {
            w.u8(12);
            w.u32(account.0);
            w.u8(instrument.is_some() as u8 | (side.is_some() as u8) << 1);
            w.u16(instrument.map(|i| i.0).unwrap_or(0));
            w.u8(side.map(side_u8).unwrap_or(0));
        }
    }
}

/// Decodes one command; the whole slice must be consumed.
pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    let mut r = R { b: bytes };
    let ts = r.u64()?;
    let tag = r.u8()?;
    let kind = match tag {
        1 => CommandKind::CreateAccount { account: AccountId(r.u32()?) },
        2 => CommandKind::Deposit { account: AccountId(r.u32()?), asset: AssetId(r.u16()?), amount: r.u64()? },
        3 => CommandKind::Withdraw { account: AccountId(r.u32()?), asset: AssetId(r.u16()?), amount: r.u64()? },
        4 => CommandKind::Transfer { from: AccountId(r.u32()?), to: AccountId(r.u32()?), asset: AssetId(r.u16()?), amount: r.u64()? },
        5 => {
            let id = InstrumentId(r.u16()?);
            let symbol = r.take::<16>()?;
            CommandKind::AddInstrument {
                spec: InstrumentSpec {
                    id,
                    symbol,
                    base: AssetId(r.u16()?),
                    quote: AssetId(r.u16()?),
                    tick: r.i64()?,
                    lot: r.u64()?,
                    min_price: r.i64()?,
                    max_price: r.i64()?,
                    min_qty: r.u64()?,
                    max_qty: r.u64()?,
                    quote_per_unit: r.u64()?,
                    base_per_unit: r.u64()?,
                    maker_bps: r.i32()?,
                    taker_bps: r.i32()?,
                    status: r.status()?,
                },
            }
        }
        6 => CommandKind::SetInstrumentStatus { instrument: InstrumentId(r.u16()?), status: r.status()? },
        7 => CommandKind::SetFees { instrument: InstrumentId(r.u16()?), maker_bps: r.i32()?, taker_bps: r.i32()? },
        8 => {
            let account = AccountId(r.u32()?);
            let instrument = InstrumentId(r.u16()?);
            let side = r.side()?;
            let qty = r.u64()?;
            let order = match r.u8()? {
                0 => {
                    let price = r.i64()?;
                    let tif = match r.u8()? {
                        0 => TimeInForce::Gtc,
                        1 => TimeInForce::Ioc,
                        2 => TimeInForce::Fok,
                        _ => return Err(CodecError::BadValue("time in force")),
                    };
                    OrderType::Limit { price, tif }
                }
                1 => {
                    let flags = r.u8()?;
                    if flags > 3 {
                        return Err(CodecError::BadValue("market flags"));
                    }
                    let p = r.i64()?;
                    let b = r.u64()?;
                    // Absent values must be zero: one encoding per command.
                    if (flags & 1 == 0 && p != 0) || (flags & 2 == 0 && b != 0) {
                        return Err(CodecError::BadValue("absent market value is not zero"));
                    }
                    OrderType::Market { protection: (flags & 1 != 0).then_some(p), budget: (flags & 2 != 0).then_some(b) }
                }
                _ => return Err(CodecError::BadValue("order type")),
            };
            CommandKind::NewOrder { account, instrument, side, qty, order }
        }
        9 => CommandKind::Cancel { account: AccountId(r.u32()?), order: OrderId(r.u64()?), qty: r.u64()? },
        10 => CommandKind::Replace { account: AccountId(r.u32()?), order: OrderId(r.u64()?), price: r.i64()?, qty: r.u64()? },
        11 => CommandKind::Amend { account: AccountId(r.u32()?), order: OrderId(r.u64()?), qty: r.u64()? },
        12 => {
            let account = AccountId(r.u32()?);
            let flags = r.u8()?;
            if flags > 3 {
                return Err(CodecError::BadValue("mass cancel flags"));
            }
            let i = r.u16()?;
            let s = r.side()?;
            if (flags & 1 == 0 && i != 0) || (flags & 2 == 0 && s != Side::Buy) {
                return Err(CodecError::BadValue("absent mass cancel filter is not zero"));
            }
            CommandKind::MassCancel {
                account,
                instrument: (flags & 1 != 0).then_some(InstrumentId(i)),
                side: (flags & 2 != 0).then_some(s),
            }
        }
        t => return Err(CodecError::UnknownTag(t)),
    };
    r.done()?;
    Ok(Command { ts, kind })
}

/// Appends the encoding of the events one command produced.
pub fn encode_events(command_seq: u64, events: &[Event], buf: &mut Vec<u8>) {
    let mut w = W(buf);
    w.u64(command_seq);
    w.u32(events.len() as u32);
    for e in events {
        match *e {
            Event::Rejected { reason } => {
                w.u8(1);
                w.u16(reject_code(reason));
            }
            Event::Done => w.u8(2),
            Event::Accepted { order, account, instrument, side, price, qty } => {
                w.u8(3);
                w.u64(order.0);
                w.u32(account.0);
                w.u16(instrument.0);
                w.u8(side_u8(side));
                w.i64(price);
                w.u64(qty);
            }
            Event::Executed { match_id, order, account, maker, price, qty, fee, leaves } => {
                w.u8(4);
                w.u64(match_id);
                w.u64(order.0);
                w.u32(account.0);
                w.u8(maker as u8);
                w.i64(price);
                w.u64(qty);
                w.i64(fee);
                w.u64(leaves);
            }
            Event::Canceled { order, account, qty, leaves, reason } => {
                w.u8(5);
                w.u64(order.0);
                w.u32(account.0);
                w.u64(qty);
                w.u64(leaves);
                w.u8(reason_u8(reason));
            }
            Event::Replaced { old, new, account } => {
                w.u8(6);
                w.u64(old.0);
                w.u64(new.0);
                w.u32(account.0);
            }
            Event::Amended { order, account, leaves } => {
                w.u8(7);
                w.u64(order.0);
                w.u32(account.0);
                w.u64(leaves);
            }
            Event::BookAdd { order, instrument, side, price, qty } => {
                w.u8(8);
                w.u64(order.0);
                w.u16(instrument.0);
                w.u8(side_u8(side));
                w.i64(price);
                w.u64(qty);
            }
            Event::BookExecute { order, qty } => {
                w.u8(9);
                w.u64(order.0);
                w.u64(qty);
            }
            Event::BookReduce { order, qty } => {
                w.u8(10);
                w.u64(order.0);
                w.u64(qty);
            }
            Event::BookDelete { order } => {
                w.u8(11);
                w.u64(order.0);
            }
        }
    }
}

/// Decodes an events record into `out` (cleared first); returns the
/// journal sequence of the command that produced them.
pub fn decode_events(bytes: &[u8], out: &mut Vec<Event>) -> Result<u64, CodecError> {
    out.clear();
    let mut r = R { b: bytes };
    let seq = r.u64()?;
    let n = r.u32()?;
    // Each event takes at least one byte: a hostile count cannot make us
    // loop or reserve beyond the input.
    if n as usize > r.b.len() {
        return Err(CodecError::Truncated);
    }
    for _ in 0..n {
        let e = match r.u8()? {
            1 => Event::Rejected { reason: reject_from_code(r.u16()?).ok_or(CodecError::BadValue("reject reason"))? },
            2 => Event::Done,
            3 => Event::Accepted {
                order: OrderId(r.u64()?),
                account: AccountId(r.u32()?),
                instrument: InstrumentId(r.u16()?),
                side: r.side()?,
                price: r.i64()?,
                qty: r.u64()?,
            },
            4 => Event::Executed {
                match_id: r.u64()?,
                order: OrderId(r.u64()?),
                account: AccountId(r.u32()?),
                maker: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(CodecError::BadValue("maker flag")),
                },
                price: r.i64()?,
                qty: r.u64()?,
                fee: r.i64()?,
                leaves: r.u64()?,
            },
            5 => Event::Canceled {
                order: OrderId(r.u64()?),
                account: AccountId(r.u32()?),
                qty: r.u64()?,
                leaves: r.u64()?,
                reason: match r.u8()? {
                    0 => CancelReason::Requested,
                    1 => CancelReason::Unfilled,
                    2 => CancelReason::BudgetExhausted,
                    3 => CancelReason::MassCancel,
                    4 => CancelReason::Replaced,
                    _ => return Err(CodecError::BadValue("cancel reason")),
                },
            },
            6 => Event::Replaced { old: OrderId(r.u64()?), new: OrderId(r.u64()?), account: AccountId(r.u32()?) },
            7 => Event::Amended { order: OrderId(r.u64()?), account: AccountId(r.u32()?), leaves: r.u64()? },
            8 => Event::BookAdd {
                order: OrderId(r.u64()?),
                instrument: InstrumentId(r.u16()?),
                side: r.side()?,
                price: r.i64()?,
                qty: r.u64()?,
            },
            9 => Event::BookExecute { order: OrderId(r.u64()?), qty: r.u64()? },
            10 => Event::BookReduce { order: OrderId(r.u64()?), qty: r.u64()? },
            11 => Event::BookDelete { order: OrderId(r.u64()?) },
            t => return Err(CodecError::UnknownTag(t)),
        };
        out.push(e);
    }
    r.done()?;
    Ok(seq)
}
