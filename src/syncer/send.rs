//! Snapshot creation (upstream `syncer/send.go`): reads every non-private DBI (native mode) or
//! its shadow (shadow mode) in one transaction and streams it as a gzipped snapshot. Each DBI is walked twice,
//! first to learn its encoded length (protobuf needs it before the entries), then to write, so
//! memory stays flat whatever the dataset size; the read transaction makes both walks see the
//! same data.

use std::io::Write;

use crate::header;
use crate::lmdb::{LmdbError, MDB_DUPSORT, Txn};
use crate::merge::{SYNC_PREFIX, key_for_humans};
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

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Walks one DBI, handing each entry (key, app value, header) to `f`.
fn for_each_entry<T: Txn>(
    txn: &T,
    dbi: crate::lmdb::Dbi,
    name: &[u8],
    mut f: impl FnMut(KvRef) -> std::io::Result<()>,
) -> Result<(), SnapshotError> {
    let lmdb_err = |source| SnapshotError::Lmdb {
        dbi: lossy(name),
        source,
    };
    let cursor = txn.cursor(dbi).map_err(lmdb_err)?;
    for item in cursor {
        let (key, value) = item.map_err(lmdb_err)?;
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
            let sname = crate::shadow::shadow_name(name);
            let d = txn
                .open_dbi(&sname)
                .map_err(lmdb_err)?
                .ok_or_else(|| SnapshotError::MissingShadow(lossy(&sname)))?;
            (d, sname)
        } else {
            (main, name.clone())
        };
        let mut entries_len = 0u64;
        for_each_entry(txn, dbi, &source_name, |kv| {
            entries_len += kv_field_len(&kv);
            Ok(())
        })?;
        let info = DbiInfo {
            name: name.clone(),
            flags: u64::from(flags),
            transform,
        };
        writer.begin_dbi(&info, entries_len)?;
        for_each_entry(txn, dbi, &source_name, |kv| {
            stats.entries += 1;
            writer.write_kv(&kv)
        })?;
        writer.end_dbi()?;
        stats.dbis += 1;
    }
    stats.uncompressed_size = writer.bytes_written();
    Ok((writer.finish()?, stats))
}
