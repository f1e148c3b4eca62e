//! The 24-byte value header on arbitrary bytes. Properties that genuinely hold (see
//! src/header.rs): a parsed header re-encodes to the same timestamp, txn ID, version and flags
//! bytes (the reserved bytes 18..22 and the extension blocks are not kept, and `write_header`
//! writes no blocks or one zero block); the application value is exactly what follows the
//! announced blocks; re-encoded headers parse back to themselves. Merging a remote entry onto
//! the bytes as a local value never panics, and a value it writes parses back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lightningstream::core::header::{self, FLAG_DELETED, HEADER_SIZE, HeaderError};
use lightningstream::core::lww::{Decision, MergeParams, merge_entry};
use lightningstream::snapshot::KvRef;

fuzz_target!(|data: &[u8]| {
    assert_eq!(header::timestamp_prefix(data).is_some(), data.len() >= 8);
    match header::parse(data) {
        Ok((h, app)) => {
            let start = HEADER_SIZE + 8 * usize::from(h.num_extra);
            assert_eq!(app, &data[start..]);
            assert_eq!(h.version, 0);
            assert_eq!(h.is_deleted(), data[17] & FLAG_DELETED != 0);
            assert_eq!(header::timestamp_prefix(data), Some(h.timestamp));
            for padding in [false, true] {
                let mut out = Vec::new();
                header::write_header(&mut out, h.timestamp, h.txn_id, h.flags, padding);
                assert_eq!(
                    out.len(),
                    if padding {
                        HEADER_SIZE + 8
                    } else {
                        HEADER_SIZE
                    }
                );
                assert_eq!(out[..18], data[..18]);
                assert_eq!(out[18..22], [0; 4]);
                if !padding && h.num_extra == 0 && data[18..22] == [0; 4] {
                    assert_eq!(out[..], data[..HEADER_SIZE]);
                }
                out.extend_from_slice(app);
                let (h2, app2) = header::parse(&out).expect("a written header parses");
                assert_eq!(
                    (h2.timestamp, h2.txn_id, h2.flags, h2.num_extra, app2),
                    (h.timestamp, h.txn_id, h.flags, u16::from(padding), app)
                );
            }
        }
        Err(HeaderError::TooShort { len, need }) => {
            assert_eq!(len, data.len());
            assert!(need > len && need >= HEADER_SIZE);
        }
        Err(HeaderError::Version(v)) => assert_eq!(Some(&v), data.get(16)),
    }

    // The same bytes as the local value of a merge.
    let tail = &data[data.len().saturating_sub(9)..];
    let remote = KvRef {
        key: b"k",
        value: tail.get(1..).unwrap_or(b""),
        timestamp_nano: u64::from(tail.first().copied().unwrap_or(0)) << 56,
        flags: u32::from(tail.first().copied().unwrap_or(0) & 3),
    };
    let p = MergeParams {
        default_ts: 42,
        txn_id: 99,
        format_version: 3,
        deleted_cutoff: 1 << 60,
        padding: data.len() % 2 == 1,
    };
    let mut out = Vec::new();
    if let Ok(Decision::Put) = merge_entry(&remote, Some(data), &p, &mut out) {
        let (h, app) = header::parse(&out).expect("a merged value parses");
        assert_eq!(h.txn_id, p.txn_id);
        assert_eq!(h.flags, (remote.flags as u8) & FLAG_DELETED);
        assert_eq!(
            app,
            if h.is_deleted() {
                &b""[..]
            } else {
                remote.value
            }
        );
    }
});
