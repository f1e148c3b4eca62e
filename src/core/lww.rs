//! The merge rule every implementation must apply identically for instances to converge
//! (spec/merge.md §2): per-key last-writer-wins on the header timestamp, ties broken by the
//! bytewise larger application value, tombstones like any other value. Pure functions over
//! bytes; applying them to an LMDB is `import`'s job.

use super::header::{self, FLAG_DELETED, FLAG_SYNC_MASK, HeaderError};
use super::kv::KvRef;

/// DBIs whose names start with this are Lightning Stream's own and never synced.
pub const SYNC_PREFIX: &[u8] = b"_sync";

/// Per-transaction inputs of the merge rule.
#[derive(Clone, Copy, Debug)]
pub struct MergeParams {
    /// Timestamp given to remote entries without one (0 when merging remote snapshots).
    pub default_ts: u64,
    /// The current write transaction's ID, written into every rewritten header.
    pub txn_id: u64,
    pub format_version: u32,
    /// Tombstones older than this are not added for keys absent locally (0 = no cutoff).
    pub deleted_cutoff: u64,
    /// Write a zero extension block after the header (`header_extra_padding_block`, testing).
    pub padding: bool,
}

/// What to do with one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The local value stays byte-identical (nothing is written).
    Keep,
    /// Write the value built into the caller's buffer.
    Put,
    /// Remove the key (a stale tombstone for a key that is absent or zero-length locally).
    Delete,
}

/// The winner rule of merge.md §2. `old` is the current local value (`None` or empty when the
/// key is absent). On [`Decision::Put`] the new value is in `out`.
pub fn merge_entry(
    remote: &KvRef,
    old: Option<&[u8]>,
    p: &MergeParams,
    out: &mut Vec<u8>,
) -> Result<Decision, HeaderError> {
    let remote_flags = (remote.flags as u8) & FLAG_SYNC_MASK;
    let old = match old {
        Some(v) if !v.is_empty() => v,
        _ => {
            if remote_flags & FLAG_DELETED != 0 && remote.timestamp_nano < p.deleted_cutoff {
                return Ok(Decision::Delete);
            }
            build(remote.value, remote.timestamp_nano, remote_flags, p, out);
            return Ok(Decision::Put);
        }
    };
    let (h, old_app) = header::parse(old)?;
    let mut new_ts = remote.timestamp_nano;
    if new_ts == 0 {
        if old_app == remote.value {
            return Ok(Decision::Keep);
        }
        new_ts = p.default_ts;
    }
    if new_ts < h.timestamp || (new_ts == h.timestamp && old_app <= remote.value) {
        return Ok(Decision::Keep);
    }
    build(remote.value, new_ts, remote_flags, p, out);
    Ok(Decision::Put)
}

fn build(value: &[u8], ts: u64, flags: u8, p: &MergeParams, out: &mut Vec<u8>) {
    let ts = if ts == 0 { p.default_ts } else { ts };
    let mut flags = flags;
    // Format 1 had no flags: an empty value was the only way to say "deleted".
    if value.is_empty() && p.format_version < 2 {
        flags |= FLAG_DELETED;
    }
    out.clear();
    header::write_header(out, ts, p.txn_id, flags, p.padding);
    if flags & FLAG_DELETED == 0 {
        out.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ts: u64, txn: u64, flags: u8, app: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        super::header::write_header(&mut v, ts, txn, flags, false);
        v.extend_from_slice(app);
        v
    }

    fn kv<'a>(value: &'a [u8], ts: u64, flags: u32) -> KvRef<'a> {
        KvRef {
            key: b"k",
            value,
            timestamp_nano: ts,
            flags,
        }
    }

    const P: MergeParams = MergeParams {
        default_ts: 42,
        txn_id: 123,
        format_version: 3,
        deleted_cutoff: 10,
        padding: false,
    };

    fn run(remote: KvRef, old: Option<&[u8]>) -> (Decision, Vec<u8>) {
        let mut out = Vec::new();
        let d = merge_entry(&remote, old, &P, &mut out).unwrap();
        (d, out)
    }

    /// The table of merge.md §2 (from upstream's iterators_test.go), row by row.
    #[test]
    fn merge_rule_table() {
        assert_eq!(
            run(kv(b"val", 30, 0), None),
            (Decision::Put, hdr(30, 123, 0, b"val"))
        );
        assert_eq!(
            run(kv(b"val", 5, 0), None),
            (Decision::Put, hdr(5, 123, 0, b"val"))
        );
        assert_eq!(
            run(kv(b"val", 0, 0), None),
            (Decision::Put, hdr(42, 123, 0, b"val"))
        );
        let newer = hdr(40, 1, 0, b"newer");
        assert_eq!(run(kv(b"val", 30, 0), Some(&newer)).0, Decision::Keep);
        assert_eq!(
            run(kv(b"", 30, 1), None),
            (Decision::Put, hdr(30, 123, 1, b""))
        );
        assert_eq!(run(kv(b"", 5, 1), None).0, Decision::Delete);
        let bbb = hdr(30, 1, 0, b"bbb");
        assert_eq!(
            run(kv(b"aaa", 30, 0), Some(&bbb)),
            (Decision::Put, hdr(30, 123, 0, b"aaa"))
        );
        assert_eq!(run(kv(b"ccc", 30, 0), Some(&bbb)).0, Decision::Keep);
        let val = hdr(30, 1, 0, b"val");
        assert_eq!(run(kv(b"val", 30, 0), Some(&val)).0, Decision::Keep);
        let mut out = Vec::new();
        assert!(merge_entry(&kv(b"val", 30, 0), Some(b"corrupt"), &P, &mut out).is_err());
    }

    #[test]
    fn ties_tombstones_and_flags() {
        // A tombstone (empty value) wins a tie against any non-empty value.
        let live = hdr(30, 1, 0, b"a");
        assert_eq!(
            run(kv(b"", 30, 1), Some(&live)),
            (Decision::Put, hdr(30, 123, 1, b""))
        );
        // Tie between a tombstone and a live empty value keeps the local one.
        let empty_live = hdr(30, 1, 0, b"");
        assert_eq!(run(kv(b"", 30, 1), Some(&empty_live)).0, Decision::Keep);
        // A deleted remote with a non-empty value compares with its raw value but writes none.
        assert_eq!(
            run(kv(b"zzz", 31, 1), Some(&live)),
            (Decision::Put, hdr(31, 123, 1, b""))
        );
        // Unknown remote flag bits are masked off.
        assert_eq!(
            run(kv(b"x", 31, 0xfe), Some(&live)),
            (Decision::Put, hdr(31, 123, 0, b"x"))
        );
        // The local winner keeps unknown flags and extension blocks: nothing is written.
        let mut odd = hdr(50, 7, 0x82, b"");
        odd[23] = 1;
        odd.extend_from_slice(&[9; 8]);
        odd.extend_from_slice(b"v");
        assert_eq!(run(kv(b"a", 40, 0), Some(&odd)).0, Decision::Keep);
        // Against the same odd value, a newer remote replaces it with a plain header.
        assert_eq!(
            run(kv(b"a", 60, 0), Some(&odd)),
            (Decision::Put, hdr(60, 123, 0, b"a"))
        );
        // Timestamps compare unsigned.
        let max = hdr(u64::MAX, 1, 0, b"m");
        assert_eq!(run(kv(b"a", 1 << 63, 0), Some(&max)).0, Decision::Keep);
        // A zero-length local value counts as absent.
        assert_eq!(
            run(kv(b"v", 30, 0), Some(b"")),
            (Decision::Put, hdr(30, 123, 0, b"v"))
        );
    }

    #[test]
    fn timestamp_zero_and_old_formats() {
        let mut p = P;
        p.default_ts = 0;
        let mut out = Vec::new();
        // Remote ts 0 with an equal value: unchanged.
        let local0 = hdr(0, 1, 0, b"b");
        assert_eq!(
            merge_entry(&kv(b"b", 0, 0), Some(&local0), &p, &mut out).unwrap(),
            Decision::Keep
        );
        // Remote ts 0 wins only against local ts 0 with a larger value; written with ts 0.
        assert_eq!(
            merge_entry(&kv(b"a", 0, 0), Some(&local0), &p, &mut out).unwrap(),
            Decision::Put
        );
        assert_eq!(out, hdr(0, 123, 0, b"a"));
        let local5 = hdr(5, 1, 0, b"b");
        assert_eq!(
            merge_entry(&kv(b"a", 0, 0), Some(&local5), &p, &mut out).unwrap(),
            Decision::Keep
        );
        // Format 1: an empty value is a deletion, and the cutoff does not see it (no flag).
        p.format_version = 1;
        p.deleted_cutoff = 100;
        assert_eq!(
            merge_entry(&kv(b"", 50, 0), None, &p, &mut out).unwrap(),
            Decision::Put
        );
        assert_eq!(out, hdr(50, 123, 1, b""));
        // Padding block: numExtra = 1 and 8 zero bytes before the value.
        p.format_version = 3;
        p.padding = true;
        merge_entry(&kv(b"1", 50, 0), None, &p, &mut out).unwrap();
        assert_eq!(out.len(), 33);
        assert_eq!(out[23], 1);
        assert_eq!(&out[24..32], &[0; 8]);
        assert_eq!(out[32], b'1');
    }
}
