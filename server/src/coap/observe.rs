//! Notification ordering (RFC 7641 §3.4).

use std::time::{Duration, Instant};

/// Observe sequence numbers are 24-bit and wrap, so "newer" is decided in a window of
/// 2^23 either side; a long silence resets the comparison because the device may have
/// rebooted and restarted its counter.
pub fn is_fresh(v1: u32, t1: Instant, v2: u32, t2: Instant, freshness: Duration) -> bool {
    const HALF: u32 = 1 << 23;
    let (v1, v2) = (v1 & 0xFF_FFFF, v2 & 0xFF_FFFF);
    (v1 < v2 && v2 - v1 < HALF)
        || (v1 > v2 && v1 - v2 > HALF)
        || t1.checked_add(freshness).is_some_and(|limit| t2 > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_follows_rfc7641() {
        let t = Instant::now();
        let f = Duration::from_secs(128);
        assert!(is_fresh(1, t, 2, t, f));
        assert!(!is_fresh(2, t, 1, t, f));
        assert!(!is_fresh(5, t, 5, t, f));
        // wrapped around
        assert!(is_fresh(0xFF_FFF0, t, 3, t, f));
        assert!(!is_fresh(3, t, 0xFF_FFF0, t, f));
        // too far ahead counts as old
        assert!(!is_fresh(0, t, (1 << 23) + 1, t, f));
        // stale by number but after 128 s
        assert!(is_fresh(10, t, 2, t + Duration::from_secs(129), f));
        assert!(!is_fresh(10, t, 2, t + Duration::from_secs(128), f));
    }
}
