//! Extranonce1 values unique across every I/O shard without coordination:
//! the first byte is the shard's number, the rest a counter the shard owns
//! (4 bytes: 256 shards × 16.7 M sessions each before a value is reused,
//! and a value in use is never handed out twice). A miner resuming a
//! session (`mining.subscribe` with its old extranonce1) gets it back when
//! it lands on the same shard and nobody holds it.

use std::collections::BTreeSet;

use super::session::Extranonce1s;

pub struct ShardExtranonces {
    shard: u8,
    size: usize,
    next: u64,
    in_use: BTreeSet<u64>,
}

impl ShardExtranonces {
    /// `size`: extranonce1 bytes, 2 to 8.
    pub fn new(shard: u8, size: usize) -> ShardExtranonces {
        assert!((2..=8).contains(&size), "extranonce1 is 2 to 8 bytes");
        ShardExtranonces { shard, size, next: 0, in_use: BTreeSet::new() }
    }

    fn counter_bits(&self) -> u32 {
        8 * (self.size as u32 - 1)
    }

    fn encode(&self, counter: u64) -> Vec<u8> {
        let v = (u64::from(self.shard) << self.counter_bits()) | counter;
        v.to_be_bytes()[8 - self.size..].to_vec()
    }

    /// The session holding `en1` ended.
    pub fn release(&mut self, en1: &[u8]) {
        if let Some(c) = self.counter_of(en1) {
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
}

impl Extranonce1s for ShardExtranonces {
    fn claim(&mut self, wanted: Option<&[u8]>) -> Vec<u8> {
        if let Some(c) = wanted.and_then(|w| self.counter_of(w))
            && self.in_use.insert(c)
        {
            return self.encode(c);
        }
        let space = 1u64 << self.counter_bits();
        assert!((self.in_use.len() as u64) < space, "every extranonce1 of this shard is in use");
        loop {
            let c = self.next;
            self.next = (self.next + 1) % space;
            if self.in_use.insert(c) {
                return self.encode(c);
            }
        }
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
        a.release(&[1, 0, 0, 9]);
        assert_eq!(a.claim(Some(&[1, 0, 0, 9])), vec![1, 0, 0, 9]);
        // A small space wraps around and skips values in use.
        let mut s = ShardExtranonces::new(7, 2);
        let all: Vec<Vec<u8>> = (0..256).map(|_| s.claim(None)).collect();
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 256);
        s.release(&[7, 42]);
        assert_eq!(s.claim(None), vec![7, 42]);
        assert_eq!(s.in_use(), 256);
    }
}
