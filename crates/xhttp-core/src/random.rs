//! Cheap randomness for jitter and for names that must not collide: not cryptographic.
//!
//! Retry jitter needs values spread out, fast, on any thread; lease owners and login names
//! shared by processes need to differ between processes and between calls. Neither is a
//! secret, so neither needs an operating-system random source on the hot path.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// xorshift64* state per thread, seeded from the process's random hasher keys.
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

fn next() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A value in `[0, 1)`, uniform enough for jitter.
///
/// ```
/// let x = xhttp_core::random::unit();
/// assert!((0.0..1.0).contains(&x));
/// ```
pub fn unit() -> f64 {
    (next() >> 11) as f64 / (1u64 << 53) as f64
}

/// A name no other call, in this process or another, returns: `prefix`, then 32 hex digits
/// drawn from the process's random hasher keys, the process id, the time and a counter.
/// For lease owners and login names, which must differ but are not secrets.
///
/// ```
/// let a = xhttp_core::random::unique_name("lease-");
/// let b = xhttp_core::random::unique_name("lease-");
/// assert_ne!(a, b);
/// assert!(a.starts_with("lease-") && a.len() == "lease-".len() + 32);
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // A fresh RandomState draws new keys from the process's seed: two processes, or two
    // calls, hash the same inputs differently.
    let keys = RandomState::new();
    let high = keys.hash_one((std::process::id(), nanos, count, 0u8));
    let low = keys.hash_one((count, next(), 1u8));
    format!("{prefix}{high:016x}{low:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_stays_in_range_and_spreads() {
        let values: Vec<f64> = (0..10_000).map(|_| unit()).collect();
        assert!(values.iter().all(|x| (0.0..1.0).contains(x)));
        let low = values.iter().filter(|x| **x < 0.5).count();
        assert!((4_000..6_000).contains(&low), "{low} of 10000 below 0.5");
    }

    #[test]
    fn unique_names_do_not_repeat() {
        let names: std::collections::HashSet<String> =
            (0..10_000).map(|_| unique_name("n-")).collect();
        assert_eq!(names.len(), 10_000);
    }
}
