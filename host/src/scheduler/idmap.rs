//! Hash maps keyed by small integers (host and VM ids, indexes). A cycle over 10,000 hosts does
//! tens of thousands of lookups; SipHash's resistance to chosen keys buys nothing here (the keys
//! are ids from our own inventory) and costs several percent of the cycle.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of integer words (the scheme of rustc's `FxHasher`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_spread_and_maps_work() {
        let mut m: IdMap<u32, u32> = IdMap::default();
        for i in 0..10_000u32 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u32).all(|i| m[&i] == i * 2));
        // Consecutive ids land in different buckets of a small table (hashbrown indexes buckets
        // by the low bits).
        let buckets: IdSet<u64> = (0..64u32)
            .map(|i| {
                let mut h = IdHasher::default();
                h.write_u32(i);
                h.finish() & 63
            })
            .collect();
        assert!(buckets.len() > 48, "{}", buckets.len());
    }
}
