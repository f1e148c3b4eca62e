//! The merge rule and its application to an LMDB write transaction (spec/merge.md §2 and §4,
//! native mode). [`merge_entry`] is the pure per-key decision every implementation must make
//! identically for instances to converge; [`load_snapshot`] streams a validated snapshot's
//! entries into the DBIs of one write transaction, creating missing DBIs with the snapshot's
//! flags and writing only keys whose value actually changes.

use crate::core::display::{key_for_humans, lossy};
use crate::core::flags::dbi_flags_string;
use crate::core::header::HeaderError;
use crate::core::lww::{Decision, MergeParams, SYNC_PREFIX, merge_entry};
use crate::lmdb::{Dbi, Env, LmdbError, RoTxn, RwTxn, Txn};
use crate::snapshot::KvRef;
use crate::snapshot::decode::{DecodeError, EntrySource, SnapshotIndex, validate_dbi};

pub mod diff;
pub mod load;
pub mod shadow;

/// Everything that can stop a snapshot load; the transaction is then aborted, so the LMDB is
/// left exactly as it was.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("snapshot decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot DBI {dbi:?}: {reason}")]
    Version { dbi: String, reason: String },
    #[error("local value in DBI {dbi:?} key {key} has no valid header: {source}")]
    LocalHeader {
        dbi: String,
        key: String,
        #[source]
        source: HeaderError,
    },
    #[error("LMDB, DBI {dbi:?}: {source}")]
    Lmdb {
        dbi: String,
        #[source]
        source: LmdbError,
    },
    #[error("snapshot entry for DBI #{0} that the index does not have")]
    UnknownDbi(usize),
}

/// Options of one load that come from the configuration.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `schema_tracks_changes`: merge into the DBIs themselves, else into their shadows.
    pub native: bool,
    pub dupsort_hack: bool,
    pub deleted_cutoff: u64,
    pub padding: bool,
    /// `dbi_options.<name>.override_create_flags`, looked up by DBI name.
    pub override_create_flags: std::collections::BTreeMap<Vec<u8>, u32>,
}

/// Counters of one load, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    pub entries: u64,
    pub written: u64,
    pub deleted: u64,
    pub created_dbis: u64,
}

fn open_or_create(
    txn: &mut RwTxn,
    name: &[u8],
    flags: u32,
    stats: &mut LoadStats,
) -> Result<Dbi, LoadError> {
    let lmdb_err = |source| LoadError::Lmdb {
        dbi: lossy(name),
        source,
    };
    if let Some(dbi) = txn.open_dbi(name).map_err(lmdb_err)? {
        return Ok(dbi);
    }
    log::warn!(dbi = lossy(name), flags = dbi_flags_string(u64::from(flags)); "Creating new DBI from snapshot");
    stats.created_dbis += 1;
    txn.create_dbi(name, flags).map_err(lmdb_err)
}

/// Opens the DBI a snapshot DBI is merged into (the DBI itself in native mode, its shadow
/// otherwise), creating what is missing with the override flags or the snapshot's flags
/// (truncated to LMDB's 16 flag bits, as Go does).
fn target_dbi(
    txn: &mut RwTxn,
    name: &[u8],
    snapshot_flags: u64,
    format_version: u32,
    opts: &LoadOptions,
    stats: &mut LoadStats,
) -> Result<Dbi, LoadError> {
    let override_flags = opts.override_create_flags.get(name).copied();
    let flags = override_flags.unwrap_or((snapshot_flags & 0xffff) as u32);
    if opts.native {
        return open_or_create(txn, name, flags, stats);
    }
    let exists = txn
        .open_dbi(name)
        .map_err(|source| LoadError::Lmdb {
            dbi: lossy(name),
            source,
        })?
        .is_some();
    if !exists {
        // Before format 3 the flags were the shadow's, useless for creating the real DBI.
        if format_version < 3 && override_flags.is_none() {
            return Err(LoadError::Version {
                dbi: lossy(name),
                reason: format!(
                    "DBI {} does not exist yet, and we cannot safely create it from a formatVersion={format_version} snapshot, \
                     set dbi_options.{}.override_create_flags",
                    lossy(name),
                    lossy(name)
                ),
            });
        }
        open_or_create(txn, name, flags, stats)?;
    }
    let shadow = crate::core::shadow::shadow_name(name);
    open_or_create(
        txn,
        &shadow,
        flags & crate::core::shadow::ALLOWED_SHADOW_FLAGS,
        stats,
    )
}

/// Merges a snapshot's entries into the DBIs (native mode) or their shadows (shadow mode; the
/// caller runs main→shadow before and shadow→main after). `index`
/// comes from a validating first pass over the same bytes that `entries` now streams, so a
/// corrupt snapshot was refused before anything was written. The caller commits.
pub fn load_snapshot(
    txn: &mut RwTxn,
    index: &SnapshotIndex,
    mut entries: impl EntrySource,
    opts: &LoadOptions,
) -> Result<LoadStats, LoadError> {
    let mut stats = LoadStats::default();
    let params = MergeParams {
        default_ts: 0,
        txn_id: txn.id(),
        format_version: index.format_version,
        deleted_cutoff: opts.deleted_cutoff,
        padding: opts.padding,
    };
    let mut targets: Vec<Option<Dbi>> = Vec::with_capacity(index.dbis.len());
    for d in &index.dbis {
        let name = &d.info.name;
        if name.starts_with(SYNC_PREFIX) {
            log::warn!(dbi = lossy(name); "Remote snapshot contains private DBI, ignoring");
            targets.push(None);
            continue;
        }
        validate_dbi(index, &d.info, opts.native).map_err(|e| LoadError::Version {
            dbi: lossy(name),
            reason: e.to_string(),
        })?;
        targets.push(Some(target_dbi(
            txn,
            name,
            d.info.flags,
            index.format_version,
            opts,
            &mut stats,
        )?));
    }

    let mut buf = Vec::with_capacity(256);
    while let Some((i, kv)) = entries.next_entry()? {
        let Some(dbi) = target_of(&targets, i)? else {
            continue;
        };
        stats.entries += 1;
        let name = || lossy(&index.dbis[i].info.name);
        let lmdb_err = in_dbi(index, i);
        let old = txn.get(dbi, kv.key).map_err(lmdb_err)?;
        match plan_entry(old, &kv, &params, &mut buf, &name)? {
            Action::Nothing => {}
            Action::Put => {
                txn.put(dbi, kv.key, &buf).map_err(lmdb_err)?;
                stats.written += 1;
            }
            Action::Delete => {
                txn.del(dbi, kv.key).map_err(lmdb_err)?;
                stats.deleted += 1;
            }
        }
    }
    Ok(stats)
}

/// Turns an LMDB error into a load error naming snapshot DBI message `i`.
fn in_dbi(index: &SnapshotIndex, i: usize) -> impl Fn(LmdbError) -> LoadError + Copy + '_ {
    move |source| LoadError::Lmdb {
        dbi: lossy(&index.dbis[i].info.name),
        source,
    }
}

/// The LMDB DBI that entries of snapshot DBI message `i` go to; `None` for skipped DBIs.
fn target_of(targets: &[Option<Dbi>], i: usize) -> Result<Option<Dbi>, LoadError> {
    targets.get(i).copied().ok_or(LoadError::UnknownDbi(i))
}

/// What merging one entry needs done to the LMDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Nothing,
    /// Put the merged value (left in the caller's buffer).
    Put,
    Delete,
}

/// Decides what one snapshot entry changes, given the key's current value.
fn plan_entry(
    old: Option<&[u8]>,
    kv: &KvRef,
    params: &MergeParams,
    buf: &mut Vec<u8>,
    dbi_name: &dyn Fn() -> String,
) -> Result<Action, LoadError> {
    let decision = merge_entry(kv, old, params, buf).map_err(|source| LoadError::LocalHeader {
        dbi: dbi_name(),
        key: key_for_humans(kv.key),
        source,
    })?;
    Ok(match decision {
        Decision::Keep => Action::Nothing,
        Decision::Put if old == Some(buf.as_slice()) => Action::Nothing,
        Decision::Put => Action::Put,
        Decision::Delete if old.is_some() => Action::Delete,
        Decision::Delete => Action::Nothing,
    })
}

mod sliced;
pub use sliced::{SLICE_CHECK_EVERY, SliceClock, SlicedLoad, load_native_sliced};
