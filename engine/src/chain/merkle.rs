//! Merkle trees of transaction ids (internal byte order), Bitcoin's rule:
//! an odd level duplicates its last hash.

use super::sha256d;
use otedama_hashers::sha256d::sha256d_64;

fn parent(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    sha256d(&buf)
}

/// The merkle root of `ids` (the coinbase first). Zero for no ids.
pub fn root(ids: &[[u8; 32]]) -> [u8; 32] {
    if ids.is_empty() {
        return [0; 32];
    }
    let mut level = ids.to_vec();
    let mut next = Vec::with_capacity(level.len() / 2 + 1);
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(*level.last().unwrap());
        }
        next.resize(level.len() / 2, [0; 32]);
        // A whole level at once: several pairs hashed side by side.
        sha256d_64(level.as_flattened(), &mut next);
        std::mem::swap(&mut level, &mut next);
    }
    level[0]
}

/// The coinbase's merkle branch: the sibling hashes from the leaves up,
/// given the ids of every transaction but the coinbase. With it the root of
/// any coinbase is [`root_from_branch`] (Stratum's `merkle_branch`).
pub fn coinbase_branch(others: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut branch = Vec::new();
    // `known`: the current level without its first hash (the coinbase's
    // path, not known yet).
    let mut known = others.to_vec();
    let mut next = Vec::with_capacity(known.len() / 2 + 1);
    while !known.is_empty() {
        branch.push(known[0]);
        // The level (1 + known.len() hashes) is odd: duplicate its last.
        if known.len().is_multiple_of(2) {
            known.push(*known.last().unwrap());
        }
        // The pairs after the coinbase's: positions 2, 3, …
        next.resize((known.len() - 1) / 2, [0; 32]);
        sha256d_64(known[1..].as_flattened(), &mut next);
        std::mem::swap(&mut known, &mut next);
    }
    branch
}

/// The root from a coinbase id and its branch.
pub fn root_from_branch(coinbase: &[u8; 32], branch: &[[u8; 32]]) -> [u8; 32] {
    branch.iter().fold(*coinbase, |acc, h| parent(&acc, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{from_display_hex, to_display_hex};

    #[test]
    fn bitcoin_block_100000_merkle_root() {
        // Its four transactions (getblock), and the header's merkle root.
        let ids: Vec<[u8; 32]> = [
            "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
            "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
            "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
            "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
        ]
        .iter()
        .map(|h| from_display_hex(h).unwrap())
        .collect();
        let want = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766";
        assert_eq!(to_display_hex(&root(&ids)), want);
        let branch = coinbase_branch(&ids[1..]);
        assert_eq!(branch.len(), 2);
        assert_eq!(to_display_hex(&root_from_branch(&ids[0], &branch)), want);
    }

    #[test]
    fn branch_agrees_with_the_full_tree_for_every_size() {
        for n in 1..40u8 {
            let ids: Vec<[u8; 32]> = (0..n).map(|i| sha256d(&[i, n])).collect();
            let branch = coinbase_branch(&ids[1..]);
            assert_eq!(root_from_branch(&ids[0], &branch), root(&ids), "{n} transactions");
        }
        assert_eq!(root(&[[7; 32]]), [7; 32]);
    }
}
