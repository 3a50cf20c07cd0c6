//! Exponential back-off with a cap and deterministic jitter.
//!
//! The jitter is drawn from a hash of the endpoint and the attempt rather than a
//! random source: devices that failed together (a cell going down) still spread out,
//! yet a test, a replay or a restored campaign computes the very same delays.

use crate::policy::RetryPolicy;

/// FNV-1a, chosen because it is fixed forever (std's hasher may change between Rust
/// releases, and delays are persisted through `not_before`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: spreads neighbouring attempts over the whole range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in [0, 1) fixed by endpoint and attempt.
pub fn unit_jitter(endpoint: &str, attempt: u16) -> f64 {
    let h = mix(fnv1a(endpoint.as_bytes()) ^ u64::from(attempt));
    // 53 high bits make an exact f64 in [0, 1).
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Delay before the attempt after `failed_attempt` (1 for the first attempt):
/// `initial * factor^(failed_attempt - 1)`, capped at `max`, shortened by up to
/// `jitter` of itself. Never above `max_ms`, never below `1 - jitter` of the
/// un-jittered delay, never zero.
pub fn delay_ms(policy: &RetryPolicy, endpoint: &str, failed_attempt: u16) -> u64 {
    let exp = i32::from(failed_attempt.saturating_sub(1));
    let max = policy.max_ms as f64;
    let base = (policy.initial_ms as f64 * policy.factor.powi(exp)).min(max);
    let jitter = policy.jitter.clamp(0.0, 1.0);
    let d = base * (1.0 - jitter * unit_jitter(endpoint, failed_attempt));
    // `as` saturates and maps NaN to 0; the bounds keep the result meaningful.
    (d as u64).clamp(1, policy.max_ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            initial_ms: 1_000,
            factor: 2.0,
            max_ms: 10_000,
            max_attempts: 10,
            jitter,
        }
    }

    #[test]
    fn without_jitter_it_doubles_up_to_the_cap() {
        let p = policy(0.0);
        let d: Vec<u64> = (1..=6).map(|a| delay_ms(&p, "ep", a)).collect();
        assert_eq!(d, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(delay_ms(&p, "ep", u16::MAX), 10_000);
        assert_eq!(
            delay_ms(&p, "ep", 0),
            1_000,
            "attempt 0 treated as the first"
        );
    }

    #[test]
    fn jitter_is_deterministic_per_endpoint_and_attempt() {
        let p = policy(0.5);
        assert_eq!(delay_ms(&p, "a", 3), delay_ms(&p, "a", 3));
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| delay_ms(&p, &format!("urn:imei:{i}"), 3))
            .collect();
        assert!(spread.len() > 40, "devices failing together spread out");
        for d in spread {
            assert!((2_000..=4_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // Published FNV-1a test vectors: any change would move persisted delays.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    proptest::proptest! {
        #[test]
        fn delays_stay_within_bounds(
            initial in 1u64..1_000_000,
            extra in 0u64..10_000_000,
            factor in 1.0f64..10.0,
            jitter in 0.0f64..=1.0,
            attempt in proptest::num::u16::ANY,
            ep in ".{0,30}",
        ) {
            let p = RetryPolicy { initial_ms: initial, factor, max_ms: initial + extra, max_attempts: 5, jitter };
            let d = delay_ms(&p, &ep, attempt);
            proptest::prop_assert!(d >= 1 && d <= p.max_ms);
            let u = unit_jitter(&ep, attempt);
            proptest::prop_assert!((0.0..1.0).contains(&u));
        }
    }
}
