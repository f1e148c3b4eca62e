//! The few facts about the running program and its host that many modules need and that are
//! not pure: our version, the wall clock in nanoseconds (the unit of LS header timestamps), and
//! the host name. Kept apart from `core` (which may not read clocks or files) and depending on
//! nothing else, so that taking them never pulls in a module from higher up.

use std::time::{SystemTime, UNIX_EPOCH};

/// The version `version`, the status page and `/healthz` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Nanoseconds since the Unix epoch, as LS headers and object names count time.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The OS host name (Meta.hostname, and the instance name when none is configured): the UTS
/// name gethostname(2) returns, read from /proc so that `unsafe` stays in the LMDB wrapper.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}
