//! The CPU-bound function behind `--work N`: a stand-in for parsing,
//! compression or crypto, so the comparison can show CPU-heavy loads.
//!
//! Each round runs FNV-1a over the whole payload, seeded with the previous
//! round's hash, so the compiler cannot skip rounds or hoist them out of the
//! loop. Cost is proportional to `rounds × payload length` (plus a small
//! fixed cost per round, so an empty payload still costs something).
//! The echo itself is never changed by the work.

use std::hint::black_box;

/// Burn CPU in proportion to `rounds` and `payload.len()`; returns a digest so
/// the work is observable (and testable) rather than optimised away.
pub fn work(payload: &[u8], rounds: u32) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..rounds {
        hash ^= u64::from(round);
        // A fixed 64-step mix per round: the floor of the cost.
        for _ in 0..64 {
            hash = (hash ^ (hash >> 29)).wrapping_mul(FNV_PRIME);
        }
        for &b in black_box(payload) {
            hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }
    black_box(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_depends_on_input() {
        assert_eq!(work(b"abc", 3), work(b"abc", 3));
        assert_ne!(work(b"abc", 3), work(b"abd", 3));
        assert_ne!(work(b"abc", 3), work(b"abc", 4));
        assert_eq!(work(b"abc", 0), 0xcbf2_9ce4_8422_2325);
    }
}
