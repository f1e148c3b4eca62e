//! Snapshot object names: `SnapshotName::parse` on arbitrary text. A name that parses is
//! rebuilt byte for byte by `object_name()` (parse keeps every part verbatim), parses again to
//! the same value, and its time is in canonical form (fixed-width digits of a valid UTC time).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lightningstream::core::name::{SnapshotName, format_timestamp};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match SnapshotName::parse(&text) {
        Ok(n) => {
            let rebuilt = n.object_name();
            assert_eq!(rebuilt, text, "object_name() differs from the parsed name");
            assert_eq!(SnapshotName::parse(&rebuilt).as_ref(), Ok(&n));
            assert_eq!(n.to_string(), rebuilt);
            assert_eq!(format_timestamp(n.timestamp_ns), n.timestamp_str);
            assert_eq!(n.shorthash().len(), 7);
            for kind in ['X', 'Y', 'é'] {
                if let Some(v) = n.extra(kind) {
                    assert!(n.extras.iter().any(|e| e.ends_with(v)));
                }
            }
        }
        Err(e) => drop(e.to_string()),
    }
});
