//! Fetching and merging one remote snapshot (upstream `LoadOnce` plus the downloader's decode
//! step). The object is copied to a temporary file and validated completely in a first pass
//! (gzip CRC, every protobuf level, every key); in native mode that pass also compares the
//! entries with the LMDB and keeps the few that differ (`merge::diff`). Only then is anything
//! written: the kept entries, or the whole snapshot streamed again when there were too many. A
//! snapshot that fails validation is reported as corrupt and never touches the LMDB; a failure
//! during the merge aborts the transaction, leaving the LMDB as it was. An encrypted object is
//! decrypted as it is downloaded, into the temporary file (`crate::crypt`): age authenticates
//! every chunk and marks the last, so a truncated or tampered object fails there, before the
//! validating pass, and is as corrupt as a snapshot failing validation.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use crate::core::lww::SYNC_PREFIX;
use crate::core::name::{SnapshotName, is_encrypted_name};
use crate::crypt::{Keyring, OpenError};
use crate::import::diff::{Diff, scan_and_diff};
use crate::import::{
    LoadError, LoadOptions, LoadStats, SliceClock, load_native_sliced, load_snapshot,
};
use crate::lmdb::{Env, LmdbError};
use crate::snapshot::decode::{DecodeError, EntryReader, SnapshotIndex, scan_limited};
use crate::storage::{Storage, StorageError, get_as_file};

/// Why a remote snapshot was not merged.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The storage could not deliver it: retry later.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// Reading our downloaded copy failed (local disk trouble): try again later.
    #[error("reading the downloaded copy of {name}: {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The object is not a snapshot we can merge: skip it for good.
    #[error("snapshot {name} is corrupt: {reason}")]
    Corrupt { name: String, reason: String },
    /// The object is encrypted and no configured identity can decrypt it: skip it.
    #[error("snapshot {name}: {reason}")]
    Undecryptable { name: String, reason: String },
    /// The local LMDB refused the merge (a broken local value, a full map): fatal for the syncer.
    #[error("loading snapshot {name}: {source}")]
    Local {
        name: String,
        #[source]
        source: LoadError,
    },
    #[error("loading snapshot {name} (shadow DBIs): {source}")]
    Shadow {
        name: String,
        #[source]
        source: crate::import::shadow::ShadowError,
    },
    #[error("loading snapshot {name}: {source}")]
    Lmdb {
        name: String,
        #[source]
        source: LmdbError,
    },
}

/// A downloaded and validated snapshot, ready to merge.
pub struct Fetched {
    pub name: String,
    pub file: File,
    pub index: SnapshotIndex,
    /// Native mode: the entries that differed from the LMDB when validated, if few enough.
    pub diff: Option<Diff>,
    pub compressed_size: u64,
    pub time_load_storage: std::time::Duration,
}

/// A decode failure: the object's fault (corrupt), unless our own copy could not be read.
fn decode_error(name: &str, e: DecodeError) -> FetchError {
    match e {
        DecodeError::Read(source) => FetchError::Io {
            name: name.to_string(),
            source,
        },
        other => corrupt(name, other),
    }
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Corrupt {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// Room for the differing entries a native-mode fetch keeps, in temporary file space, as a
/// multiple of the downloaded object's size (at least `DIFF_BUDGET_MIN`); past it, the merge
/// streams the whole snapshot again. Going through the differences is much cheaper than
/// decompressing everything again, so even a good part of a snapshot is worth keeping.
const DIFF_BUDGET_FACTOR: u64 = 2;
const DIFF_BUDGET_MIN: u64 = 16 << 20;

/// An encrypted object (by its name) downloaded and decrypted into an anonymous temporary file,
/// positioned at its start, with the object's size. Nothing is downloaded without an identity.
pub fn get_decrypted(
    storage: &dyn Storage,
    name: &str,
    keys: &Keyring,
) -> Result<(File, u64), FetchError> {
    let db = SnapshotName::parse_object(name)
        .map(|n| n.0.syncer)
        .unwrap_or_default();
    let count = |result: &str| {
        crate::metrics::metrics()
            .encrypted_objects
            .with_label_values(&[&db, result])
            .inc()
    };
    let undecryptable = |e: OpenError| FetchError::Undecryptable {
        name: name.to_string(),
        reason: e.to_string(),
    };
    if !keys.decrypts() {
        count("no_identity");
        return Err(undecryptable(OpenError::NoIdentity));
    }
    let source: Box<dyn Read + Send + '_> = match storage.local_file(name) {
        Some(f) => Box::new(f?),
        None => storage.get(name)?,
    };
    let local = |source| FetchError::Io {
        name: name.to_string(),
        source,
    };
    let mut file = tempfile::tempfile().map_err(local)?;
    let mut out = BufWriter::with_capacity(256 * 1024, &mut file);
    let size = match keys.decrypt_to(source, &mut out) {
        Ok((size, _)) => size,
        Err(OpenError::Source(e)) => return Err(StorageError::io("get", name, e).into()),
        Err(OpenError::Sink(e)) => return Err(local(e)),
        Err(e @ (OpenError::NoIdentity | OpenError::WrongIdentity { .. })) => {
            count("wrong_identity");
            return Err(undecryptable(e));
        }
        Err(OpenError::Corrupt(reason)) => {
            count("corrupt");
            return Err(corrupt(name, format!("decryption failed: {reason}")));
        }
    };
    out.flush().map_err(local)?;
    drop(out);
    file.seek(SeekFrom::Start(0)).map_err(local)?;
    count("decrypted");
    Ok((file, size))
}

/// Downloads `name` (decrypting it with `keys` when its name says it is encrypted) and
/// validates it completely; more than `max_uncompressed` bytes after decompression make it
/// corrupt. With `compare` (native mode), the entries are compared with that LMDB in the same
/// pass and those that differ are kept (see `DIFF_BUDGET_FACTOR`).
pub fn fetch(
    storage: &dyn Storage,
    name: &str,
    keys: &Keyring,
    max_uncompressed: u64,
    compare: Option<&Env>,
) -> Result<Fetched, FetchError> {
    let t0 = Instant::now();
    let (mut file, compressed_size) = if is_encrypted_name(name) {
        get_decrypted(storage, name, keys)?
    } else {
        get_as_file(storage, name)?
    };
    let time_load_storage = t0.elapsed();
    let input = BufReader::with_capacity(256 * 1024, &mut file);
    let (index, diff) = match compare {
        Some(env) => {
            let budget = (compressed_size * DIFF_BUDGET_FACTOR).max(DIFF_BUDGET_MIN);
            let s = std::thread::scope(|scope| {
                let reader = crate::pipeline::scanning_reader(scope, input, max_uncompressed);
                scan_and_diff(reader, env, budget)
            })
            .map_err(|e| corrupt(name, e))?;
            (s.index, s.diff)
        }
        None => (
            scan_limited(input, max_uncompressed).map_err(|e| corrupt(name, e))?,
            None,
        ),
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| corrupt(name, format!("rewinding the downloaded copy: {e}")))?;
    Ok(Fetched {
        name: name.to_string(),
        file,
        index,
        diff,
        compressed_size,
        time_load_storage,
    })
}

/// How long a native-mode merge may hold the write lock at a time, and the pause between.
#[derive(Clone, Copy, Debug)]
pub struct SliceLimits {
    /// Zero: no bound (one write transaction, as the Go version does).
    pub max: Duration,
    pub pause: Duration,
}

/// The wall clock of sliced merges, recording the longest write transaction. A slice ends
/// early enough that its commit (writing its pages out, fsync) fits in the bound too, going by
/// how long the previous commit took.
struct WallClock {
    limits: SliceLimits,
    began: Instant,
    committing: Instant,
    last_commit: Duration,
    longest: Duration,
    total: Duration,
}

impl WallClock {
    fn new(limits: SliceLimits) -> WallClock {
        WallClock {
            limits,
            began: Instant::now(),
            committing: Instant::now(),
            last_commit: Duration::ZERO,
            longest: Duration::ZERO,
            total: Duration::ZERO,
        }
    }
}

impl SliceClock for WallClock {
    fn began(&mut self) {
        self.began = Instant::now();
    }

    fn due(&mut self) -> bool {
        !self.limits.max.is_zero() && self.began.elapsed() + self.last_commit >= self.limits.max
    }

    fn committing(&mut self) {
        self.committing = Instant::now();
    }

    fn committed(&mut self) {
        let now = Instant::now();
        // At most half the bound, so that a slow commit cannot make every slice tiny.
        self.last_commit = (now - self.committing).min(self.limits.max / 2);
        let held = now - self.began;
        self.longest = self.longest.max(held);
        self.total += held;
        // Give writers waiting for the lock (PowerDNS) the chance to take it.
        std::thread::sleep(self.limits.pause);
    }
}

/// Result of merging one snapshot.
pub struct Merged {
    /// The ID of the merge transaction, lowered to the last committed ID when it wrote nothing.
    pub txn_id: u64,
    /// Whether the LMDB had changes not covered by our last snapshot when the merge began.
    pub local_changed: bool,
    pub stats: LoadStats,
    /// The longest write transaction of the merge.
    pub time_write_lock: Duration,
    /// All write transactions of the merge together.
    pub time_write_total: Duration,
    pub write_txns: u64,
    /// What the merge went through after validating: the entries that differed (how many), or
    /// the whole snapshot again (`None`).
    pub differences: Option<usize>,
}

/// Merges a fetched snapshot in one write transaction (merge.md §4), through the shadow DBIs
/// in shadow mode.
pub fn merge(
    env: &Env,
    mut fetched: Fetched,
    last_synced_txn_id: u64,
    opts: &LoadOptions,
    limits: SliceLimits,
) -> Result<Merged, FetchError> {
    match merge_once(env, &mut fetched, last_synced_txn_id, opts, limits) {
        // The map filled up, but the application sharing the LMDB may have grown it since we
        // opened it: follow its size and try once more from the start.
        Err(e) if is_map_full(&e) && env.adopt_file_map_size().unwrap_or(false) => {
            log::info!(filename = fetched.name, map_size = env.info().map(|i| i.map_size).unwrap_or(0);
                "LMDB map was full; adopted the larger map size of the file and retrying");
            fetched.file.seek(SeekFrom::Start(0)).map_err(|e| {
                corrupt(&fetched.name, format!("rewinding the downloaded copy: {e}"))
            })?;
            merge_once(env, &mut fetched, last_synced_txn_id, opts, limits)
        }
        r => r,
    }
}

fn is_map_full(e: &FetchError) -> bool {
    match e {
        FetchError::Lmdb { source, .. } => source.is_map_full(),
        FetchError::Local {
            source: LoadError::Lmdb { source, .. },
            ..
        } => source.is_map_full(),
        FetchError::Shadow {
            source: crate::import::shadow::ShadowError::Lmdb { source, .. },
            ..
        } => source.is_map_full(),
        _ => false,
    }
}

/// A load error: the snapshot's fault (corrupt), or the local LMDB's.
fn load_error(name: &str, e: LoadError) -> FetchError {
    match e {
        // The first pass accepted these bytes, so a decode error now means the temporary file
        // changed under us or could not be read.
        LoadError::Decode(e) => decode_error(name, e),
        e @ LoadError::Version { .. } => corrupt(name, e),
        source => FetchError::Local {
            name: name.to_string(),
            source,
        },
    }
}

/// Native mode: compared read-only, written in bounded slices (see [`load_native_sliced`]).
fn merge_native(
    env: &Env,
    fetched: &mut Fetched,
    last_synced_txn_id: u64,
    opts: &LoadOptions,
    limits: SliceLimits,
) -> Result<Merged, FetchError> {
    let mut clock = WallClock::new(limits);
    // Decompression and parsing run on a second thread, beside the LMDB work.
    let file = fetched.file.try_clone().map_err(|source| FetchError::Io {
        name: fetched.name.clone(),
        source,
    })?;
    let index = &fetched.index;
    let done = match &mut fetched.diff {
        // Only what differed when validated; each is decided again under the write lock.
        Some(diff) => load_native_sliced(
            env,
            index,
            diff.entries().map_err(|source| FetchError::Io {
                name: fetched.name.clone(),
                source,
            })?,
            opts,
            last_synced_txn_id,
            &mut clock,
        )
        .map(|mut done| {
            // Counted as the whole-snapshot merge counts them: every entry it would have seen.
            done.stats.entries = index
                .dbis
                .iter()
                .filter(|d| !d.info.name.starts_with(SYNC_PREFIX))
                .map(|d| d.entries)
                .sum();
            done
        }),
        None => std::thread::scope(|scope| {
            let entries = crate::pipeline::ThreadedEntries::spawn(
                scope,
                BufReader::with_capacity(256 * 1024, file),
            );
            load_native_sliced(env, index, entries, opts, last_synced_txn_id, &mut clock)
        }),
    }
    .map_err(|e| load_error(&fetched.name, e))?;
    Ok(Merged {
        // Nothing written: our view of what the snapshots cover is unchanged.
        txn_id: done.last_txn_id.unwrap_or(last_synced_txn_id),
        local_changed: done.local_changed,
        stats: done.stats,
        time_write_lock: clock.longest,
        time_write_total: clock.total,
        write_txns: done.write_txns,
        differences: fetched.diff.as_ref().map(|d| d.len()),
    })
}

fn merge_once(
    env: &Env,
    fetched: &mut Fetched,
    last_synced_txn_id: u64,
    opts: &LoadOptions,
    limits: SliceLimits,
) -> Result<Merged, FetchError> {
    if opts.native {
        return merge_native(env, fetched, last_synced_txn_id, opts, limits);
    }
    let name = fetched.name.clone();
    let lmdb_err = |source| FetchError::Lmdb {
        name: name.clone(),
        source,
    };
    let t0 = Instant::now();
    let mut txn = crate::lmdb::retry_lmdb("Starting a write transaction", || env.begin_rw())
        .map_err(lmdb_err)?;
    let txn_id = crate::lmdb::Txn::id(&txn);
    let local_changed = last_synced_txn_id < txn_id.saturating_sub(1);
    let shadow_err = |e: crate::import::shadow::ShadowError| FetchError::Shadow {
        name: name.clone(),
        source: e,
    };
    let mut wrote = false;
    if local_changed {
        // Local changes get their timestamps before remote ones are weighed against them.
        let ts = crate::base::now_ns().max(1) as u64;
        wrote |= crate::import::shadow::main_to_shadow(
            &mut txn,
            ts,
            opts.dupsort_hack,
            opts.deleted_cutoff,
        )
        .map_err(shadow_err)?
        .changed();
    }
    let reader = EntryReader::new(BufReader::with_capacity(256 * 1024, &mut fetched.file));
    let stats =
        load_snapshot(&mut txn, &fetched.index, reader, opts).map_err(|e| load_error(&name, e))?;
    wrote |= stats.written + stats.deleted + stats.created_dbis > 0;
    wrote |= crate::import::shadow::shadow_to_main(&mut txn, opts.dupsort_hack)
        .map_err(shadow_err)?
        .changed();
    txn.commit().map_err(lmdb_err)?;
    let time_write_lock = t0.elapsed();
    // A transaction that wrote nothing leaves its ID unused. Decided from what we wrote, not by
    // reading the last ID after the commit: another writer may have taken it by then, and its
    // change must not pass for ours.
    let txn_id = if wrote {
        txn_id
    } else {
        log::debug!(txnID = txn_id - 1; "Adjusting TxnID (no changes)");
        txn_id - 1
    };
    Ok(Merged {
        txn_id,
        local_changed,
        stats,
        time_write_lock,
        time_write_total: time_write_lock,
        write_txns: 1,
        differences: None,
    })
}
