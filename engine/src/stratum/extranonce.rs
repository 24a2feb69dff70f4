//! Extranonce1 values unique across every I/O shard without coordination:
//! the first byte is the shard's number, the rest a counter the shard owns
//! (4 bytes: 256 shards × 16.7 M sessions each before a value is reused,
//! and a value in use is never handed out twice). A miner resuming a
//! session (`mining.subscribe` with its old extranonce1) gets it back when
//! it lands on the same shard and nobody holds it, or when the session
//! holding it came from the same address (the miner's old connection,
//! not yet seen to be dead): that holder is *displaced* and the shard
//! moves it to a fresh value with `mining.set_extranonce`.

use std::collections::BTreeMap;

use super::session::Extranonce1s;

/// Who asks for an extranonce1: the connection (`owner`, the shard's slot)
/// and where it came from (`origin`: the peer's address as 128 bits, IPv4
/// mapped; 0 when unknown, which never displaces anyone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub owner: u32,
    pub origin: u128,
}

impl Claimant {
    /// A claimant that can never displace a holder (tests, fuzzing).
    pub const ANONYMOUS: Claimant = Claimant { owner: u32::MAX, origin: 0 };
}

pub struct ShardExtranonces {
    shard: u8,
    size: usize,
    next: u64,
    /// counter → the claimant holding it.
    in_use: BTreeMap<u64, Claimant>,
}

impl ShardExtranonces {
    /// `size`: extranonce1 bytes, 2 to 8.
    pub fn new(shard: u8, size: usize) -> ShardExtranonces {
        assert!((2..=8).contains(&size), "extranonce1 is 2 to 8 bytes");
        ShardExtranonces { shard, size, next: 0, in_use: BTreeMap::new() }
    }

    fn counter_bits(&self) -> u32 {
        8 * (self.size as u32 - 1)
    }

    fn encode(&self, counter: u64) -> Vec<u8> {
        let v = (u64::from(self.shard) << self.counter_bits()) | counter;
        v.to_be_bytes()[8 - self.size..].to_vec()
    }

    /// `owner`'s session holding `en1` ended (a no-op when `en1` has
    /// since been taken over by another owner).
    pub fn release(&mut self, en1: &[u8], owner: u32) {
        if let Some(c) = self.counter_of(en1)
            && self.in_use.get(&c).is_some_and(|h| h.owner == owner)
        {
            self.in_use.remove(&c);
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    fn counter_of(&self, en1: &[u8]) -> Option<u64> {
        if en1.len() != self.size || en1[0] != self.shard {
            return None;
        }
        Some(en1[1..].iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    /// An extranonce1 for `who`: `wanted` when it is this shard's and free,
    /// or held by another owner of the same (known) origin, which is then
    /// returned as displaced; otherwise a fresh value.
    pub fn claim_for(&mut self, wanted: Option<&[u8]>, who: Claimant) -> (Vec<u8>, Option<u32>) {
        if let Some(c) = wanted.and_then(|w| self.counter_of(w)) {
            match self.in_use.get(&c).copied() {
                None => {
                    self.in_use.insert(c, who);
                    return (self.encode(c), None);
                }
                Some(h) if who.origin != 0 && h.origin == who.origin && h.owner != who.owner => {
                    self.in_use.insert(c, who);
                    return (self.encode(c), Some(h.owner));
                }
                Some(_) => {}
            }
        }
        let space = 1u64 << self.counter_bits();
        assert!((self.in_use.len() as u64) < space, "every extranonce1 of this shard is in use");
        loop {
            let c = self.next;
            self.next = (self.next + 1) % space;
            if let std::collections::btree_map::Entry::Vacant(e) = self.in_use.entry(c) {
                e.insert(who);
                return (self.encode(c), None);
            }
        }
    }
}

impl Extranonce1s for ShardExtranonces {
    fn claim(&mut self, wanted: Option<&[u8]>) -> Vec<u8> {
        self.claim_for(wanted, Claimant::ANONYMOUS).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_across_shards_reused_only_when_free_and_resumable() {
        let mut a = ShardExtranonces::new(1, 4);
        let mut b = ShardExtranonces::new(2, 4);
        let (a1, b1) = (a.claim(None), b.claim(None));
        assert_eq!((a1.as_slice(), b1.as_slice()), (&[1, 0, 0, 0][..], &[2, 0, 0, 0][..]));
        // Resume: free → granted; held → a fresh one; another shard's → fresh.
        assert_eq!(a.claim(Some(&[1, 0, 0, 9])), vec![1, 0, 0, 9]);
        assert_eq!(a.claim(Some(&[1, 0, 0, 9])), vec![1, 0, 0, 1]);
        assert_eq!(a.claim(Some(&[2, 0, 0, 5])), vec![1, 0, 0, 2]);
        a.release(&[1, 0, 0, 9], Claimant::ANONYMOUS.owner);
        assert_eq!(a.claim(Some(&[1, 0, 0, 9])), vec![1, 0, 0, 9]);
        // A small space wraps around and skips values in use.
        let mut s = ShardExtranonces::new(7, 2);
        let all: Vec<Vec<u8>> = (0..256).map(|_| s.claim(None)).collect();
        assert_eq!(all.iter().collect::<std::collections::BTreeSet<_>>().len(), 256);
        s.release(&[7, 42], Claimant::ANONYMOUS.owner);
        assert_eq!(s.claim(None), vec![7, 42]);
        assert_eq!(s.in_use(), 256);
    }

    #[test]
    fn a_resume_from_the_holders_own_address_displaces_it() {
        let mut e = ShardExtranonces::new(3, 4);
        let (a, b, c) = (Claimant { owner: 1, origin: 7 }, Claimant { owner: 2, origin: 7 }, Claimant { owner: 3, origin: 8 });
        let (x, none) = e.claim_for(None, a);
        assert_eq!((x.as_slice(), none), (&[3, 0, 0, 0][..], None));
        // Another address asking for it gets a fresh value; so does an
        // unknown origin.
        assert_eq!(e.claim_for(Some(&x), c), (vec![3, 0, 0, 1], None));
        assert_eq!(e.claim_for(Some(&x), Claimant { owner: 4, origin: 0 }), (vec![3, 0, 0, 2], None));
        // The same address: taken over, the holder named.
        assert_eq!(e.claim_for(Some(&x), b), (x.clone(), Some(1)));
        // The displaced owner's release leaves the new holder's value alone.
        e.release(&x, 1);
        assert_eq!(e.claim_for(Some(&x), c), (vec![3, 0, 0, 3], None));
        e.release(&x, 2);
        assert_eq!(e.claim_for(Some(&x), c), (x, None));
    }
}
