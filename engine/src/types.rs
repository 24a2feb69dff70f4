//! Identifiers and the business-level rejection reasons.
//!
//! A rejection is a value, never a panic or an `Err` of an I/O kind: the
//! command changed nothing and the reason says exactly why.

/// A ledger account (a trader, a miner's payout address, the fee account).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u32);

/// An asset (BTC, LTC, USDT...), balances in its integer minor units.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssetId(pub u16);

/// A tradable pair.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstrumentId(pub u16);

/// An order, as the engine numbers it: the low 32 bits are its slot in
/// the order store, the high 32 bits a generation that changes each time
/// the slot is reused, so a stale id never reaches another order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderId(pub u64);

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Why a command was rejected. Stable numbering: these travel on the wire
/// and into journals.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum Reject {
    UnknownAccount = 1,
    AccountExists = 2,
    AccountLimit = 3,
    UnknownAsset = 4,
    ZeroAmount = 5,
    InsufficientBalance = 6,
    InsufficientHeld = 7,
    /// The result would not fit the balance type.
    Overflow = 8,
    SameAccount = 9,
    UnknownInstrument = 10,
    InstrumentExists = 11,
    InstrumentLimit = 12,
    InvalidInstrument = 13,
    InstrumentHalted = 14,
    PriceOffTick = 15,
    PriceOutOfBand = 16,
    QtyOffLot = 17,
    QtyOutOfBounds = 18,
    UnknownOrder = 19,
    /// A cancel or amend that would not reduce the remaining quantity.
    NotReduced = 20,
    /// The order store is full.
    OrderLimit = 21,
    /// A market buy needs a protection price or a quote budget to hold.
    MarketBuyUnbounded = 22,
    /// A quote budget on a sell.
    BudgetOnSell = 23,
    /// The order belongs to another account.
    NotOwner = 24,
}
