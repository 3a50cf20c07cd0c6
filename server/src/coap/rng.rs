//! A small deterministic generator for tokens, message ids and retransmission jitter.
//!
//! Deterministic so that tests and fuzzing replay exactly; production seeds it from the
//! operating system with [`os_seed`]. SplitMix64 is not a cryptographic generator: tokens
//! guard against confusion and off-path guessing of a 64-bit value, not against a peer
//! that can observe many of our tokens (DTLS is the defence there).

#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed from the operating system's generator (`getrandom`), for production endpoints.
pub fn os_seed() -> Result<u64, getrandom::Error> {
    getrandom::u64()
}
