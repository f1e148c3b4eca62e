//! Snapshot creation (upstream `syncer/send.go`): reads every non-private DBI (native mode) or
//! its shadow (shadow mode) in one transaction and streams it as a gzipped snapshot. Each DBI is walked twice,
//! first to learn its encoded length (protobuf needs it before the entries), then to write, so
//! memory stays flat whatever the dataset size; the read transaction makes both walks see the
//! same data. A delta holds only the entries whose header carries a transaction ID above the
//! one our previous object covered: one walk, filtering on the raw header bytes before any
//! parsing, keeping references into the LMDB's pages (valid for the transaction) of the few
//! entries that match.

pub mod dump;

use std::io::Write;
use std::time::{Duration, Instant};

use crate::core::display::{key_for_humans, lossy};
use crate::core::header;
use crate::core::lww::SYNC_PREFIX;
use crate::lmdb::{LmdbError, MDB_DUPSORT, Txn};
use crate::snapshot::encode::{SnapshotWriter, kv_field_len};
use crate::snapshot::{DbiInfo, KvRef, Meta, TRANSFORM_DUPSORT_HACK};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("LMDB, DBI {dbi:?}: {source}")]
    Lmdb {
        dbi: String,
        #[source]
        source: LmdbError,
    },
    #[error("invalid entry (dbi {dbi}, key {key}): {source}")]
    InvalidEntry {
        dbi: String,
        key: String,
        #[source]
        source: header::HeaderError,
    },
    #[error("dupsort db {0:?} found and dupsort_hack disabled")]
    DupSort(String),
    #[error("shadow DBI {0:?} is missing (main to shadow has not run)")]
    MissingShadow(String),
    #[error("writing snapshot: {0}")]
    Io(#[from] std::io::Error),
}

/// Figures of one snapshot, for the "Stored snapshot" log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotStats {
    pub dbis: u64,
    pub entries: u64,
    pub uncompressed_size: u64,
}

/// When full snapshots are due while deltas are on (`deltas:` in the config).
#[derive(Clone, Copy, Debug)]
pub struct DeltaSettings {
    pub full_interval: Duration,
    pub max_deltas: u64,
}

/// What this process stored last, which the next delta continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The LMDB transaction ID our last stored object covers.
    pub txn_id: u64,
    /// When the last full snapshot was stored, and how many deltas followed it.
    pub full_at: Instant,
    pub deltas: u64,
}

/// The kind of object the next store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Full(&'static str),
    Delta {
        from: u64,
    },
    /// A delta up to the read transaction, then a full snapshot of the same transaction: a
    /// receiver whose chain reaches the delta has everything the full snapshot holds and need
    /// not download it.
    Bridge {
        from: u64,
        reason: &'static str,
    },
    /// Nothing new since our last object: nothing to store.
    Nothing,
}

/// Decides between a full snapshot and a delta for a store reading the LMDB at `txn_id`.
/// Full snapshots: with deltas off, for the first store of a process (new and lagging readers
/// start from it), when forced, when the interval or the delta count is reached (bridged, see
/// [`Plan::Bridge`]), and when the LMDB's transaction IDs went backwards (it was replaced by an
/// older copy: the headers' IDs no longer say what is new).
pub fn plan(
    settings: Option<&DeltaSettings>,
    stored: Option<&Stored>,
    txn_id: u64,
    forced: bool,
    now: Instant,
) -> Plan {
    let (Some(settings), Some(stored)) = (settings, stored) else {
        return Plan::Full(if settings.is_some() {
            "first of this process"
        } else {
            "deltas disabled"
        });
    };
    let bridge = |reason| Plan::Bridge {
        from: stored.txn_id,
        reason,
    };
    if txn_id < stored.txn_id {
        Plan::Full("LMDB transaction IDs went backwards")
    } else if txn_id == stored.txn_id {
        // Nothing to bridge: the full snapshot covers what the chain ends at.
        if forced {
            Plan::Full("forced")
        } else {
            Plan::Nothing
        }
    } else if forced {
        bridge("forced")
    } else if stored.deltas >= settings.max_deltas {
        bridge("max_deltas reached")
    } else if now.saturating_duration_since(stored.full_at) >= settings.full_interval {
        bridge("full_snapshot_interval reached")
    } else {
        Plan::Delta {
            from: stored.txn_id,
        }
    }
}

/// A delta carrying more than this (encoded, uncompressed) is written as a full snapshot
/// instead: at that size a delta saves little, and the references it collects cost memory.
pub const MAX_DELTA_BYTES: u64 = 64 << 20;

/// The header's transaction ID read straight from the value bytes (no parsing); values too
/// short for a header count as new, so that the parser reports them.
fn raw_txn_id(value: &[u8]) -> u64 {
    match value.get(8..16) {
        Some(b) => u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8])),
        None => u64::MAX,
    }
}

/// Walks one DBI, handing each entry (key, app value, header) to `f`; with `after`, only the
/// entries whose header transaction ID is above it.
fn for_each_entry<'t, T: Txn>(
    txn: &'t T,
    dbi: crate::lmdb::Dbi,
    name: &[u8],
    after: Option<u64>,
    mut f: impl FnMut(KvRef<'t>) -> std::io::Result<()>,
) -> Result<(), SnapshotError> {
    let lmdb_err = |source| SnapshotError::Lmdb {
        dbi: lossy(name),
        source,
    };
    let cursor = txn.cursor(dbi).map_err(lmdb_err)?;
    for item in cursor {
        let (key, value) = item.map_err(lmdb_err)?;
        if after.is_some_and(|a| raw_txn_id(value) <= a) {
            continue;
        }
        let (h, app) = header::parse(value).map_err(|source| SnapshotError::InvalidEntry {
            dbi: lossy(name),
            key: key_for_humans(key),
            source,
        })?;
        f(KvRef {
            key,
            value: app,
            timestamp_nano: h.timestamp,
            flags: u32::from(h.flags & header::FLAG_SYNC_MASK),
        })?;
    }
    Ok(())
}

/// Writes a snapshot of all non-`_sync` DBIs visible in `txn` to `out` (uncompressed protobuf;
/// the caller wraps `out` in gzip): the DBIs themselves in native mode, their shadows in shadow
/// mode, always under the DBI's name and with its flags. Returns the writer and the figures.
pub fn write_snapshot<T: Txn, W: Write>(
    txn: &T,
    meta: &Meta,
    out: W,
    shadow: bool,
    dupsort_hack: bool,
) -> Result<(W, SnapshotStats), SnapshotError> {
    write_object(txn, meta, out, shadow, dupsort_hack, None).map(|r| r.expect("no size limit"))
}

/// Writes a delta: as [`write_snapshot`], but only entries whose header transaction ID is above
/// `after`; every DBI is listed, so that new DBIs travel too. `None` when the delta would exceed
/// [`MAX_DELTA_BYTES`] (the caller writes a full snapshot instead).
pub fn write_delta<T: Txn, W: Write>(
    txn: &T,
    meta: &Meta,
    out: W,
    shadow: bool,
    dupsort_hack: bool,
    after: u64,
) -> Result<Option<(W, SnapshotStats)>, SnapshotError> {
    write_object(txn, meta, out, shadow, dupsort_hack, Some(after))
}

fn write_object<T: Txn, W: Write>(
    txn: &T,
    meta: &Meta,
    out: W,
    shadow: bool,
    dupsort_hack: bool,
    after: Option<u64>,
) -> Result<Option<(W, SnapshotStats)>, SnapshotError> {
    let mut stats = SnapshotStats::default();
    let mut writer = SnapshotWriter::new(out, meta)?;
    let names = txn.list_dbis().map_err(|source| SnapshotError::Lmdb {
        dbi: String::new(),
        source,
    })?;
    for name in names.iter().filter(|n| !n.starts_with(SYNC_PREFIX)) {
        let lmdb_err = |source| SnapshotError::Lmdb {
            dbi: lossy(name),
            source,
        };
        let Some(main) = txn.open_dbi(name).map_err(lmdb_err)? else {
            continue;
        };
        let flags = txn.dbi_flags(main).map_err(lmdb_err)?;
        let mut transform = Vec::new();
        if flags & MDB_DUPSORT != 0 {
            if !(shadow && dupsort_hack) {
                return Err(SnapshotError::DupSort(lossy(name)));
            }
            transform = TRANSFORM_DUPSORT_HACK.to_vec();
        }
        let (dbi, source_name) = if shadow {
            let sname = crate::core::shadow::shadow_name(name);
            let d = txn
                .open_dbi(&sname)
                .map_err(lmdb_err)?
                .ok_or_else(|| SnapshotError::MissingShadow(lossy(&sname)))?;
            (d, sname)
        } else {
            (main, name.clone())
        };
        let info = DbiInfo {
            name: name.clone(),
            flags: u64::from(flags),
            transform,
        };
        let mut entries_len = 0u64;
        if let Some(after) = after {
            let mut kept = Vec::new();
            let mut too_large = false;
            for_each_entry(txn, dbi, &source_name, Some(after), |kv| {
                entries_len += kv_field_len(&kv);
                too_large |= writer.bytes_written() + entries_len > MAX_DELTA_BYTES;
                if !too_large {
                    kept.push(kv);
                }
                Ok(())
            })?;
            if too_large {
                return Ok(None);
            }
            writer.begin_dbi(&info, entries_len)?;
            for kv in &kept {
                stats.entries += 1;
                writer.write_kv(kv)?;
            }
        } else {
            for_each_entry(txn, dbi, &source_name, None, |kv| {
                entries_len += kv_field_len(&kv);
                Ok(())
            })?;
            writer.begin_dbi(&info, entries_len)?;
            for_each_entry(txn, dbi, &source_name, None, |kv| {
                stats.entries += 1;
                writer.write_kv(&kv)
            })?;
        }
        writer.end_dbi()?;
        stats.dbis += 1;
    }
    stats.uncompressed_size = writer.bytes_written();
    Ok(Some((writer.finish()?, stats)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::decode::decode_all;
    use crate::snapshot::encode::GzipWriter;

    /// Writes entries (key, txn ID, deleted) into DBI `dbi`, each with a header of that txn ID.
    fn put(env: &crate::lmdb::Env, dbi: &[u8], items: &[(&str, u64, bool)]) {
        let mut txn = env.begin_rw().unwrap();
        let d = txn.create_dbi(dbi, 0).unwrap();
        for (k, id, deleted) in items {
            let mut v = Vec::new();
            let flags = if *deleted { header::FLAG_DELETED } else { 0 };
            header::write_header(&mut v, 1000 + id, *id, flags, false);
            if !deleted {
                v.extend_from_slice(k.as_bytes());
            }
            txn.put(d, k.as_bytes(), &v).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn delta_holds_exactly_the_entries_after_the_txn_id() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::testutil::scratch_env(dir.path(), "db", 1 << 20);
        put(
            &env,
            b"a",
            &[("old", 3, false), ("new", 7, false), ("gone", 8, true)],
        );
        put(&env, b"b", &[("x", 5, false)]);
        put(&env, b"_sync_private", &[("p", 9, false)]);
        let txn = env.begin_ro().unwrap();
        let meta = Meta {
            lmdb_txn_id: 9,
            from_lmdb_txn_id: 5,
            ..Meta::default()
        };
        let (gz, stats) = write_delta(&txn, &meta, GzipWriter::new(Vec::new()), false, false, 5)
            .unwrap()
            .unwrap();
        let (index, entries) = decode_all(&gz.finish().unwrap()[..]).unwrap();
        assert_eq!(index.meta.from_lmdb_txn_id, 5);
        // Both DBIs are listed, only entries above txn 5 travel, the tombstone included.
        let names: Vec<&[u8]> = index.dbis.iter().map(|d| &d.info.name[..]).collect();
        assert_eq!(names, [b"a".as_slice(), b"b".as_slice()]);
        let got: Vec<(usize, &[u8], u32)> = entries
            .iter()
            .map(|(i, kv)| (*i, &kv.key[..], kv.flags))
            .collect();
        assert_eq!(got, [(0, b"gone".as_slice(), 1), (0, b"new".as_slice(), 0)]);
        assert_eq!(stats.entries, 2);
        // From 0 (exclusive), everything written since the LMDB's first transaction.
        let (_, all) = write_delta(&txn, &meta, GzipWriter::new(Vec::new()), false, false, 0)
            .unwrap()
            .unwrap();
        assert_eq!(all.entries, 4);
        // A value too short for a header is reported, not skipped.
        drop(txn);
        let mut w = env.begin_rw().unwrap();
        let d = w.create_dbi(b"b", 0).unwrap();
        w.put(d, b"short", b"abc").unwrap();
        w.commit().unwrap();
        let txn = env.begin_ro().unwrap();
        let e = write_delta(&txn, &meta, Vec::new(), false, false, 5).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
    }

    #[test]
    fn full_or_delta() {
        let t0 = Instant::now();
        let s = DeltaSettings {
            full_interval: Duration::from_secs(600),
            max_deltas: 3,
        };
        let st = Stored {
            txn_id: 10,
            full_at: t0,
            deltas: 0,
        };
        let many = Stored { deltas: 3, ..st };
        let bridge = |reason| Plan::Bridge { from: 10, reason };
        assert_eq!(
            plan(None, Some(&st), 12, false, t0),
            Plan::Full("deltas disabled")
        );
        assert!(matches!(plan(Some(&s), None, 12, false, t0), Plan::Full(_)));
        // (what was stored, read txn, forced, seconds since the last full, plan)
        let cases = [
            (st, 12, false, 1, Plan::Delta { from: 10 }),
            (st, 10, false, 1, Plan::Nothing),
            (st, 10, true, 1, Plan::Full("forced")),
            (st, 12, true, 1, bridge("forced")),
            (
                st,
                9,
                false,
                1,
                Plan::Full("LMDB transaction IDs went backwards"),
            ),
            (st, 12, false, 600, bridge("full_snapshot_interval reached")),
            (many, 12, false, 1, bridge("max_deltas reached")),
        ];
        for (stored, txn, forced, secs, want) in cases {
            let now = t0 + Duration::from_secs(secs);
            assert_eq!(
                plan(Some(&s), Some(&stored), txn, forced, now),
                want,
                "{stored:?} {txn} {forced} {secs}"
            );
        }
    }
}
