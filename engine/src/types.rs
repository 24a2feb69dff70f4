//! Identifiers and the business-level rejection reasons.
//!
//! A rejection is a value, never a panic or an `Err` of an I/O kind: the
//! command changed nothing and the reason says exactly why.

/// A ledger account (a trader, a miner's payout address, the fee account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u32);

/// An asset (BTC, LTC, USDT...), balances in its integer minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssetId(pub u16);

/// Why a command was rejected. Stable numbering: these travel on the wire
/// and into journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
}
