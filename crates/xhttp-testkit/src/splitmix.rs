//! SplitMix64 (Steele, Lea and Flood, 2014): the whole random source of the testkit.
//!
//! Tests need outcomes that a seed reproduces exactly, not unpredictability, so a
//! ten-line generator replaces a dependency on `rand`.

/// Odd constant of the Weyl sequence: the golden ratio in 64-bit fixed point.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective mixer whose every output bit depends on
/// every input bit.
pub(crate) fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a seed, a stream and an index into one well-mixed word.
///
/// Stateless, so a decision for the n-th request can be recomputed by anyone who knows
/// the three inputs (see [`crate::fault_pattern`]).
pub(crate) fn hash(seed: u64, stream: u64, index: u64) -> u64 {
    let salted = finalize(seed ^ finalize(stream.wrapping_add(1).wrapping_mul(GAMMA)));
    finalize(salted.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// Maps a word to a uniform `f64` in `[0, 1)` using its 53 high bits.
pub(crate) fn unit(word: u64) -> f64 {
    (word >> 11) as f64 / (1u64 << 53) as f64
}

/// The sequential generator, used where a stream of values is drawn in order (tokens).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        finalize(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence_for_seed_zero() {
        // First outputs of the reference C implementation seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn unit_stays_in_the_half_open_interval() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u64::MAX) < 1.0);
    }

    #[test]
    fn hash_separates_seeds_streams_and_indices() {
        let base = hash(1, 2, 3);
        assert_ne!(base, hash(0, 2, 3));
        assert_ne!(base, hash(1, 1, 3));
        assert_ne!(base, hash(1, 2, 2));
    }
}
