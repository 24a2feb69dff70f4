//! The balance sheet: accounts × assets, each with an available and a held
//! amount in integer minor units.
//!
//! Storage is dense and preallocated (`accounts_max × assets_max`
//! balances), so no operation allocates and every lookup is an index. Each
//! operation either applies completely or returns a [`Reject`] and changes
//! nothing. Invariant, checked by [`Ledger::check_invariants`] and asserted
//! after every operation in the tests: for each asset, the sum of available
//! and held over all accounts equals deposits minus withdrawals.

use crate::types::{AccountId, AssetId, Reject};

/// Bounds fixed at start-up.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    pub accounts_max: u32,
    pub assets_max: u16,
}

/// One account's position in one asset.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balance {
    pub available: u64,
    pub held: u64,
}

impl Balance {
    pub fn total(&self) -> u128 {
        self.available as u128 + self.held as u128
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Ledger {
    limits: LedgerLimits,
    open: Vec<bool>,
    balances: Vec<Balance>,
    /// Per asset: deposits minus withdrawals, the number every sum must meet.
    supply: Vec<u128>,
}

impl Ledger {
    /// A ledger with room for `limits`, everything allocated now.
    pub fn new(limits: LedgerLimits) -> Ledger {
        let n = limits.accounts_max as usize * limits.assets_max as usize;
        Ledger {
            limits,
            open: vec![false; limits.accounts_max as usize],
            balances: vec![Balance::default(); n],
            supply: vec![0; limits.assets_max as usize],
        }
    }

    pub fn limits(&self) -> LedgerLimits {
        self.limits
    }

    fn index(&self, account: AccountId, asset: AssetId) -> Result<usize, Reject> {
        if !self.is_open(account) {
            return Err(Reject::UnknownAccount);
        }
        if asset.0 >= self.limits.assets_max {
            return Err(Reject::UnknownAsset);
        }
        Ok(account.0 as usize * self.limits.assets_max as usize + asset.0 as usize)
    }

    pub fn is_open(&self, account: AccountId) -> bool {
        self.open.get(account.0 as usize).copied().unwrap_or(false)
    }

    /// Opens `account` with zero balances.
    pub fn create_account(&mut self, account: AccountId) -> Result<(), Reject> {
        match self.open.get_mut(account.0 as usize) {
            None => Err(Reject::AccountLimit),
            Some(true) => Err(Reject::AccountExists),
            Some(o) => {
                *o = true;
                Ok(())
            }
        }
    }

    pub fn balance(&self, account: AccountId, asset: AssetId) -> Result<Balance, Reject> {
        self.index(account, asset).map(|i| self.balances[i])
    }

    /// Total supply of `asset`: deposits minus withdrawals.
    pub fn supply(&self, asset: AssetId) -> u128 {
        self.supply.get(asset.0 as usize).copied().unwrap_or(0)
    }

    pub fn deposit(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let i = self.index(account, asset)?;
        if amount == 0 {
            return Err(Reject::ZeroAmount);
        }
        let b = &mut self.balances[i];
        let available = b.available.checked_add(amount).ok_or(Reject::Overflow)?;
        // Keep available + held representable for every later hold/release.
        available.checked_add(b.held).ok_or(Reject::Overflow)?;
        b.available = available;
        self.supply[asset.0 as usize] += amount as u128;
        Ok(())
    }

    pub fn withdraw(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let i = self.index(account, asset)?;
        if amount == 0 {
            return Err(Reject::ZeroAmount);
        }
        let b = &mut self.balances[i];
        b.available = b.available.checked_sub(amount).ok_or(Reject::InsufficientBalance)?;
        self.supply[asset.0 as usize] -= amount as u128;
        Ok(())
    }

    /// Moves `amount` of available balance from one account to another.
    pub fn transfer(&mut self, from: AccountId, to: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let f = self.index(from, asset)?;
        let t = self.index(to, asset)?;
        if from == to {
            return Err(Reject::SameAccount);
        }
        if amount == 0 {
            return Err(Reject::ZeroAmount);
        }
        let new_from = self.balances[f].available.checked_sub(amount).ok_or(Reject::InsufficientBalance)?;
        let to_b = self.balances[t];
        let new_to = to_b.available.checked_add(amount).ok_or(Reject::Overflow)?;
        new_to.checked_add(to_b.held).ok_or(Reject::Overflow)?;
        self.balances[f].available = new_from;
        self.balances[t].available = new_to;
        Ok(())
    }

    /// Like [`Ledger::transfer`], but moving to the same account is a no-op
    /// (a fee paid by the fee account to itself).
    pub fn transfer_or_same(&mut self, from: AccountId, to: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        if from == to || amount == 0 {
            self.index(from, asset)?;
            return Ok(());
        }
        self.transfer(from, to, asset, amount)
    }

    /// Moves `amount` from available to held (an order's reservation).
    pub fn hold(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let i = self.index(account, asset)?;
        let b = &mut self.balances[i];
        let available = b.available.checked_sub(amount).ok_or(Reject::InsufficientBalance)?;
        // available + held is unchanged, so the sum cannot overflow.
        b.available = available;
        b.held += amount;
        Ok(())
    }

    /// Moves `amount` from held back to available.
    pub fn release(&mut self, account: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let i = self.index(account, asset)?;
        let b = &mut self.balances[i];
        let held = b.held.checked_sub(amount).ok_or(Reject::InsufficientHeld)?;
        b.held = held;
        b.available += amount;
        Ok(())
    }

    /// Changes an order's hold from `from` to `to` in one step (a
    /// cancel/replace that rests at once): `InsufficientBalance` and no
    /// change when the available balance plus `from` does not cover `to`.
    /// `from` must be part of the held balance.
    #[inline(always)]
    pub fn rehold(&mut self, account: AccountId, asset: AssetId, from: u64, to: u64) -> Result<(), Reject> {
        let i = self.index(account, asset)?;
        let b = &mut self.balances[i];
        // Without a branch on which way the hold moves (a replace moves it
        // either way at random, and a mispredicted branch costs more than
        // the arithmetic): available + held fits in u64 (deposits keep it
        // so), and so does every sum below.
        let rest_held = b.held.checked_sub(from).ok_or(Reject::InsufficientHeld)?;
        let pool = b.available + from;
        let available = pool.checked_sub(to).ok_or(Reject::InsufficientBalance)?;
        b.available = available;
        b.held = rest_held + to;
        Ok(())
    }

    /// Settles part of a trade: `amount` leaves `from`'s held balance and
    /// lands in `to`'s available balance (buyer's quote to seller, seller's
    /// base to buyer, fees to the fee account).
    pub fn settle(&mut self, from: AccountId, to: AccountId, asset: AssetId, amount: u64) -> Result<(), Reject> {
        let f = self.index(from, asset)?;
        let t = self.index(to, asset)?;
        let new_held = self.balances[f].held.checked_sub(amount).ok_or(Reject::InsufficientHeld)?;
        if f == t {
            // Held to available within one account.
            self.balances[f].held = new_held;
            self.balances[f].available += amount;
            return Ok(());
        }
        let to_b = self.balances[t];
        let new_to = to_b.available.checked_add(amount).ok_or(Reject::Overflow)?;
        new_to.checked_add(to_b.held).ok_or(Reject::Overflow)?;
        self.balances[f].held = new_held;
        self.balances[t].available = new_to;
        Ok(())
    }

    /// Checks the conservation invariant for every asset; returns the first
    /// asset whose balances do not add up to its supply.
    pub fn check_invariants(&self) -> Result<(), AssetId> {
        let assets = self.limits.assets_max as usize;
        for asset in 0..assets {
            let sum: u128 = self.balances.iter().skip(asset).step_by(assets).map(Balance::total).sum();
            if sum != self.supply[asset] {
                return Err(AssetId(asset as u16));
            }
        }
        Ok(())
    }
}
