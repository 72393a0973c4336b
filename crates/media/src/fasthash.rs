//! A fast hasher for the media thread's lookup tables.
//!
//! Every packet is looked up a handful of times (session by address, session by id, call by id),
//! and with the standard library's SipHash-1-3 those hashes were about 1.3 % of the media core
//! at 100 streams (perf, `docs/performance.md`). SipHash resists hash flooding, where an attacker
//! picks keys that collide; these tables do not need that: their keys are the engine's own
//! (session ids, random ICE user fragments, call ids) or peer addresses admitted only after
//! ICE authentication and bounded in number per session, so nobody outside chooses what they
//! hold. A lookup of an unknown key costs one probe sequence in a table whose contents are ours.
//!
//! The hash folds each 64-bit word into the state with an xor and a 128-bit multiply whose two
//! halves are xored together, and finishes with an avalanche step (xor-shifts and multiplies, as in the MurmurHash3 64-bit
//! finalizer) so that the low bits, which pick the bucket, and the top seven, which the table
//! keeps as tags, depend on every input bit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Creates an empty [`FastMap`].
pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(BuildHasherDefault::default())
}

/// Multiplier of the fold: odd, with bits spread over the whole word.
const FOLD: u64 = 0x9e37_79b9_7f4a_7c15;

/// A non-cryptographic 64-bit hasher for small keys from trusted sets (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    /// A full 64 x 64 -> 128-bit product, its halves xored: every input bit reaches both
    /// halves, low bits and high (a plain 64-bit multiply only carries bits upwards, and
    /// strings differing in their top bytes collided).
    #[inline]
    fn fold(&mut self, word: u64) {
        let m = u128::from(self.0 ^ word) * u128::from(FOLD);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.fold(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.fold(u64::from_le_bytes(w));
        }
        // The length tells "ab" from "ab\0" (both pad to the same word).
        self.fold(bytes.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.fold(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.fold(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.fold(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.fold(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.fold(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn hash<T: Hash>(t: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(t)
    }

    /// How evenly `hashes` fill `buckets` (low bits) and `tags` (top seven bits): the largest
    /// count over the mean.
    fn worst_over_mean(hashes: &[u64], bits: u32, shift: u32) -> f64 {
        let n = 1usize << bits;
        let mut counts = vec![0u32; n];
        for h in hashes {
            counts[((h >> shift) as usize) & (n - 1)] += 1;
        }
        f64::from(*counts.iter().max().unwrap_or(&0)) / (hashes.len() as f64 / n as f64)
    }

    #[test]
    fn sequential_ids_and_ports_spread_over_buckets_and_tags() {
        let ids: Vec<u64> = (0..65_536u64).map(|i| hash(&i)).collect();
        let addrs: Vec<u64> = (0..65_536u32)
            .map(|i| {
                let ip = Ipv4Addr::new(127, 0, (i >> 14) as u8, 1);
                hash(&SocketAddr::new(
                    IpAddr::V4(ip),
                    10_000 + (i & 0x3fff) as u16,
                ))
            })
            .collect();
        let calls: Vec<u64> = (0..65_536u32).map(|i| hash(&format!("call-{i}"))).collect();
        for (what, hs) in [("ids", &ids), ("addrs", &addrs), ("calls", &calls)] {
            // 1,024 buckets of 64 on average (sd 8): a random hash's fullest is ~1.4x the mean,
            // 1.65x is five sd; 128 tags of 512 (sd 22.6): 1.2x is 4.5 sd. A weak mix (the
            // identity, or no finalizer) fills a few buckets with everything.
            let low = worst_over_mean(hs, 10, 0);
            let top = worst_over_mean(hs, 7, 57);
            assert!(low < 1.65, "{what}: low bits {low}");
            assert!(top < 1.2, "{what}: tag bits {top}");
            let mut sorted = hs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), hs.len(), "{what}: no two keys hash alike");
        }
    }

    #[test]
    fn byte_strings_of_every_length_differ() {
        let a = hash(&[1u8, 2, 3].as_slice());
        let b = hash(&[1u8, 2, 3, 0].as_slice());
        assert_ne!(a, b);
        let mut seen: Vec<u64> = (0..40).map(|n| hash(&"x".repeat(n))).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 40);
    }

    #[test]
    fn a_fast_map_works_as_a_map() {
        let mut m = fast_map();
        for i in 0..1000u64 {
            m.insert(i, i * 2);
        }
        assert!((0..1000u64).all(|i| m.get(&i) == Some(&(i * 2))));
        assert_eq!(m.get(&1000), None);
    }
}
