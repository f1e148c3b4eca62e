//! Arbitrary bytes as a compressed snapshot object: the validating first pass, then (if it
//! accepts them) a merge into scratch LMDBs in native and shadow mode. Errors are fine; panics,
//! and a merge failing to decode what the first pass accepted, are not.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lightningstream_fuzz::check_snapshot(data);
});
