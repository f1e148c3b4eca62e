//! A process-wide pseudo-random source (splitmix64 over an atomic counter): no dependency, and
//! any thread can draw from it. Seeded once; timing makes whole runs unrepeatable anyway, but
//! the seed is printed so that the plan of kills and outages can be replayed.

use std::sync::atomic::{AtomicU64, Ordering};

static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

pub fn seed(s: u64) {
    STATE.store(s, Ordering::SeqCst);
}

pub fn next() -> u64 {
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `0..n` (0 when `n` is 0).
pub fn below(n: u64) -> u64 {
    if n == 0 { 0 } else { next() % n }
}

/// Uniform in `lo..=hi`.
pub fn between(lo: u64, hi: u64) -> u64 {
    lo + below(hi - lo + 1)
}
