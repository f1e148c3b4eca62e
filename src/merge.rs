//! The merge rule and its application to an LMDB write transaction (spec/merge.md §2 and §4,
//! native mode). [`merge_entry`] is the pure per-key decision every implementation must make
//! identically for instances to converge; [`load_snapshot`] streams a validated snapshot's
//! entries into the DBIs of one write transaction, creating missing DBIs with the snapshot's
//! flags and writing only keys whose value actually changes.

use crate::header::{self, FLAG_DELETED, FLAG_SYNC_MASK, HeaderError};
use crate::lmdb::{Dbi, Env, LmdbError, RoTxn, RwTxn, Txn};
use crate::snapshot::KvRef;
use crate::snapshot::decode::{DecodeError, EntrySource, SnapshotIndex, validate_dbi};

/// DBIs whose names start with this are Lightning Stream's own and never synced.
pub const SYNC_PREFIX: &[u8] = b"_sync";

pub mod diff;

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

/// A key for error messages: printable, and bounded so one hostile key cannot flood a log.
pub fn key_for_humans(key: &[u8]) -> String {
    let shown = &key[..key.len().min(64)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if key.len() > shown.len() {
        s.push_str(&format!("... ({} bytes)", key.len()));
    }
    s
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
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
    log::warn!(dbi = lossy(name), flags = crate::config::dbi_flags_string(u64::from(flags)); "Creating new DBI from snapshot");
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
    let shadow = crate::shadow::shadow_name(name);
    open_or_create(
        txn,
        &shadow,
        flags & crate::shadow::ALLOWED_SHADOW_FLAGS,
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
        let lmdb_err = |source| LoadError::Lmdb {
            dbi: name(),
            source,
        };
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

/// Entries merged between two looks at the clock while a sliced merge holds the write lock.
pub const SLICE_CHECK_EVERY: u64 = 1000;

/// A write slice ends after this many entries in a row that changed nothing: comparing is
/// faster read-only, but every commit costs an fsync, worth about this many comparisons.
const UNCHANGED_RUN_ENDS_SLICE: u64 = 10_000;

/// Read transactions of a sliced merge are renewed after this many entries, so that a long
/// comparison does not pin old pages while the application keeps writing.
const READ_RENEW_EVERY: u64 = 100_000;

/// The clock of a sliced merge, supplied by the caller so that the merge itself stays a plain
/// function over LMDB transactions.
pub trait SliceClock {
    /// A write transaction has begun.
    fn began(&mut self);
    /// Whether the current write transaction has been held long enough (asked every
    /// [`SLICE_CHECK_EVERY`] entries).
    fn due(&mut self) -> bool;
    /// The write transaction is about to be committed.
    fn committing(&mut self) {}
    /// The write transaction was committed; the lock stays free until the next [`began`].
    ///
    /// [`began`]: SliceClock::began
    fn committed(&mut self);
}

/// Result of [`load_native_sliced`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlicedLoad {
    pub stats: LoadStats,
    /// Write transactions begun (0 when the snapshot changed nothing).
    pub write_txns: u64,
    /// ID of our last write transaction that changed something.
    pub last_txn_id: Option<u64>,
    /// Another writer committed before or between our write transactions.
    pub local_changed: bool,
}

struct Writer<'e> {
    txn: RwTxn<'e>,
    /// Whether LMDB will give this txn a new ID on commit (it wrote something).
    dirty: bool,
    entries: u64,
}

/// Tracks the write transactions of a sliced merge: which IDs were ours, and whether someone
/// else's commit came in between (a local change the syncer must snapshot).
struct Slices<'a> {
    clock: &'a mut dyn SliceClock,
    /// The ID the next write transaction gets if nobody else commits first.
    expect: u64,
    out: SlicedLoad,
}

impl Slices<'_> {
    fn begin<'e>(&mut self, env: &'e Env) -> Result<Writer<'e>, LoadError> {
        let txn = env.begin_rw().map_err(|source| LoadError::Lmdb {
            dbi: String::new(),
            source,
        })?;
        if txn.id() != self.expect {
            self.out.local_changed = true;
        }
        self.out.write_txns += 1;
        self.clock.began();
        Ok(Writer {
            txn,
            dirty: false,
            entries: 0,
        })
    }

    fn commit(&mut self, w: Writer) -> Result<(), LoadError> {
        let id = w.txn.id();
        self.clock.committing();
        w.txn.commit().map_err(|source| LoadError::Lmdb {
            dbi: String::new(),
            source,
        })?;
        self.clock.committed();
        // A commit that wrote nothing does not use up its ID; the next txn gets it again.
        if w.dirty {
            self.out.last_txn_id = Some(id);
            self.expect = id + 1;
        } else {
            self.expect = id;
        }
        Ok(())
    }
}

/// Where the read-only comparison stopped.
enum ReadEnd {
    /// The snapshot is done.
    End,
    /// Time for a fresh read view.
    Renew,
    /// This entry (of DBI message `usize`) changes something.
    Differs(usize, crate::snapshot::OwnedKv),
}

/// A read cursor walking one DBI alongside the snapshot's keys.
struct Walk<'t> {
    cursor: crate::lmdb::Cursor<'t>,
    /// Where the cursor is: `Some(None)` past the last key, `None` not positioned yet.
    pos: Option<Option<(&'t [u8], &'t [u8])>>,
    /// Keys in plain byte order (no INTEGERKEY/REVERSEKEY), as slices compare.
    bytewise: bool,
}

impl<'t> Walk<'t> {
    fn open(ro: &'t RoTxn, dbi: Dbi) -> Result<Walk<'t>, LmdbError> {
        let flags = ro.dbi_flags(dbi)?;
        Ok(Walk {
            cursor: ro.cursor(dbi)?,
            pos: None,
            bytewise: flags & (crate::lmdb::MDB_INTEGERKEY | crate::lmdb::MDB_REVERSEKEY) == 0,
        })
    }

    /// The value of `key`, if present. Snapshot keys come in the DBI's order, so usually the
    /// next entry is the one: step forward a little before searching (LMDB's search restarts
    /// from the root whenever the key is past the current page).
    fn lookup(&mut self, key: &[u8]) -> Result<Option<&'t [u8]>, LmdbError> {
        if self.bytewise
            && let Some(mut pos) = self.pos
        {
            for _ in 0..8 {
                match pos {
                    // Nothing after a key smaller than this one: absent.
                    None => return Ok(None),
                    Some((k, v)) => match k.cmp(key) {
                        std::cmp::Ordering::Equal => return Ok(Some(v)),
                        // Maybe before the cursor (snapshot order differs): search.
                        std::cmp::Ordering::Greater => break,
                        std::cmp::Ordering::Less => {
                            pos = self.cursor.next_entry()?;
                            self.pos = Some(pos);
                        }
                    },
                }
            }
        }
        let found = self.cursor.set_range(key)?;
        self.pos = Some(found);
        Ok(found.filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
}

/// Compares entries under `ro` until one would change the LMDB (see [`ReadEnd`]), walking
/// each DBI with a cursor alongside the snapshot.
#[allow(clippy::too_many_arguments)]
fn compare_run(
    ro: &RoTxn,
    entries: &mut impl EntrySource,
    index: &SnapshotIndex,
    targets: &[Option<Dbi>],
    params: &mut MergeParams,
    buf: &mut Vec<u8>,
    stats: &mut LoadStats,
) -> Result<ReadEnd, LoadError> {
    let mut walks: Vec<Option<Walk>> = Vec::new();
    walks.resize_with(targets.len(), || None);
    params.txn_id = ro.id() + 1;
    let mut n = 0u64;
    while let Some((i, kv)) = entries.next_entry()? {
        let Some(dbi) = target_of(targets, i)? else {
            continue;
        };
        stats.entries += 1;
        let name = || lossy(&index.dbis[i].info.name);
        let lmdb_err = |source| LoadError::Lmdb {
            dbi: name(),
            source,
        };
        if walks[i].is_none() {
            walks[i] = Some(Walk::open(ro, dbi).map_err(lmdb_err)?);
        }
        let walk = walks[i].as_mut().expect("opened above");
        let old = walk.lookup(kv.key).map_err(lmdb_err)?;
        if plan_entry(old, &kv, params, buf, &name)? != Action::Nothing {
            stats.entries -= 1; // counted again when applied
            return Ok(ReadEnd::Differs(i, kv.into()));
        }
        n += 1;
        if n >= READ_RENEW_EVERY {
            return Ok(ReadEnd::Renew);
        }
    }
    Ok(ReadEnd::End)
}

/// A write cursor walking one DBI alongside the snapshot's keys within a write slice: most
/// keys are found by stepping forward from the previous one, and writes go through the same
/// cursor, so a slice of scattered changes costs little more than the read-only comparison.
struct WriteWalk<'t> {
    cursor: crate::lmdb::RwCursor<'t>,
    /// `None`: not positioned (or just deleted at); `Some(true)`: past the last key.
    at_end: Option<bool>,
    bytewise: bool,
    dupsort: bool,
}

impl<'t> WriteWalk<'t> {
    fn open(txn: &'t mut RwTxn, dbi: Dbi) -> Result<WriteWalk<'t>, LmdbError> {
        let flags = txn.dbi_flags(dbi)?;
        Ok(WriteWalk {
            cursor: txn.write_cursor(dbi)?,
            at_end: None,
            bytewise: flags
                & (crate::lmdb::MDB_INTEGERKEY
                    | crate::lmdb::MDB_REVERSEKEY
                    | crate::lmdb::MDB_DUPSORT)
                == 0,
            dupsort: flags & crate::lmdb::MDB_DUPSORT != 0,
        })
    }

    /// The value of `key`, if present, leaving the cursor at it (or where it would be).
    fn lookup(&mut self, key: &[u8]) -> Result<Option<&[u8]>, LmdbError> {
        if self.bytewise
            && let Some(mut at_end) = self.at_end
        {
            for _ in 0..8 {
                if at_end {
                    return Ok(None);
                }
                let ord = match self.cursor.current()? {
                    Some((k, _)) => k.cmp(key),
                    None => break,
                };
                match ord {
                    std::cmp::Ordering::Equal => {
                        return Ok(self.cursor.current()?.map(|(_, v)| v));
                    }
                    std::cmp::Ordering::Greater => break,
                    std::cmp::Ordering::Less => {
                        at_end = self.cursor.next_entry()?.is_none();
                        self.at_end = Some(at_end);
                    }
                }
            }
        }
        let found = self.cursor.set_range(key)?;
        self.at_end = Some(found.is_none());
        Ok(found.filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
}

/// Applies one entry under the write lock, deciding again on the current value; true when it
/// changed the LMDB.
#[allow(clippy::too_many_arguments)]
fn apply_entry(
    walk: &mut WriteWalk,
    append: &mut bool,
    kv: &KvRef,
    name: &dyn Fn() -> String,
    params: &MergeParams,
    buf: &mut Vec<u8>,
    stats: &mut LoadStats,
) -> Result<bool, LoadError> {
    let lmdb_err = |source| LoadError::Lmdb {
        dbi: name(),
        source,
    };
    let old = walk.lookup(kv.key).map_err(lmdb_err)?;
    let absent = old.is_none();
    let action = plan_entry(old, kv, params, buf, name)?;
    stats.entries += 1;
    match action {
        Action::Nothing => return Ok(false),
        Action::Put => {
            // New keys past the end (a first load) are appended; the first that is not after
            // the last key turns appending off for this DBI.
            let appended =
                absent && *append && walk.cursor.append(kv.key, buf).map_err(lmdb_err)?;
            if absent && !appended {
                *append = false;
            }
            if !appended {
                walk.cursor.put(kv.key, buf).map_err(lmdb_err)?;
            }
            // Either way the cursor is at the key just written.
            walk.at_end = Some(false);
            stats.written += 1;
        }
        Action::Delete => {
            // `plan_entry` deletes only what `lookup` found, so the cursor is at the key.
            walk.cursor.del_current(walk.dupsort).map_err(lmdb_err)?;
            walk.at_end = None;
            stats.deleted += 1;
        }
    }
    Ok(true)
}

/// Merges a snapshot into the DBIs of a native-mode LMDB without holding the write lock
/// longer than the clock allows. Entries are compared under a read transaction; only when one
/// would change something is a write transaction begun (its decision made again under the
/// lock), and it is committed once `clock.due()`, after which comparing goes on read-only. A
/// snapshot identical to what the LMDB holds takes no write lock at all. Per-key
/// last-writer-wins makes every prefix of the merge a valid state, so the slices may commit
/// independently and a crash in between converges when the snapshot is merged again.
/// `last_synced_txn_id` is the LMDB's last transaction already covered by a snapshot (or
/// merge); any other writer's commit before or between our slices sets `local_changed`.
pub fn load_native_sliced(
    env: &Env,
    index: &SnapshotIndex,
    mut entries: impl EntrySource,
    opts: &LoadOptions,
    last_synced_txn_id: u64,
    clock: &mut dyn SliceClock,
) -> Result<SlicedLoad, LoadError> {
    debug_assert!(opts.native, "sliced merges are for native mode");
    let lmdb_err = |dbi: &[u8]| {
        let dbi = lossy(dbi);
        move |source| LoadError::Lmdb { dbi, source }
    };
    let mut slices = Slices {
        clock,
        expect: last_synced_txn_id + 1,
        out: SlicedLoad::default(),
    };

    // Target DBIs: opened read-only; only missing ones need a (short) write transaction.
    let mut targets: Vec<Option<Dbi>> = vec![None; index.dbis.len()];
    let mut missing = Vec::new();
    {
        let ro = env.begin_ro().map_err(lmdb_err(b""))?;
        for (i, d) in index.dbis.iter().enumerate() {
            let name = &d.info.name;
            if name.starts_with(SYNC_PREFIX) {
                log::warn!(dbi = lossy(name); "Remote snapshot contains private DBI, ignoring");
                continue;
            }
            validate_dbi(index, &d.info, true).map_err(|e| LoadError::Version {
                dbi: lossy(name),
                reason: e.to_string(),
            })?;
            match ro.open_dbi(name).map_err(lmdb_err(name))? {
                Some(dbi) => targets[i] = Some(dbi),
                None => missing.push(i),
            }
        }
    }
    if !missing.is_empty() {
        let mut w = slices.begin(env)?;
        let mut stats = LoadStats::default();
        for i in missing {
            let d = &index.dbis[i].info;
            targets[i] = Some(target_dbi(
                &mut w.txn,
                &d.name,
                d.flags,
                index.format_version,
                opts,
                &mut stats,
            )?);
        }
        w.dirty = stats.created_dbis > 0;
        slices.out.stats.created_dbis = stats.created_dbis;
        slices.commit(w)?;
    }

    let mut params = MergeParams {
        default_ts: 0,
        txn_id: 0,
        format_version: index.format_version,
        deleted_cutoff: opts.deleted_cutoff,
        padding: opts.padding,
    };
    let mut buf = Vec::with_capacity(256);
    // Appending is tried for non-DUPSORT DBIs until it first fails.
    let mut append = vec![false; targets.len()];
    {
        let ro = env.begin_ro().map_err(lmdb_err(b""))?;
        for (i, t) in targets.iter().enumerate() {
            if let Some(dbi) = t {
                let flags = ro
                    .dbi_flags(*dbi)
                    .map_err(lmdb_err(&index.dbis[i].info.name))?;
                append[i] = flags & crate::lmdb::MDB_DUPSORT == 0;
            }
        }
    }
    let mut stats = LoadStats {
        created_dbis: slices.out.stats.created_dbis,
        ..LoadStats::default()
    };
    loop {
        let end = {
            let ro = env.begin_ro().map_err(lmdb_err(b""))?;
            compare_run(
                &ro,
                &mut entries,
                index,
                &targets,
                &mut params,
                &mut buf,
                &mut stats,
            )?
        };
        let (i, first) = match end {
            ReadEnd::End => break,
            ReadEnd::Renew => continue,
            ReadEnd::Differs(i, kv) => (i, kv),
        };
        // A difference: take the write lock and apply entries until the slice is due. Entries
        // come DBI by DBI; each run of one DBI goes through one write cursor.
        let mut w = slices.begin(env)?;
        params.txn_id = w.txn.id();
        let mut pending = Some((i, first));
        let mut finished = true;
        let mut unchanged_run = 0u64;
        'slice: while let Some((i, first)) = pending.take() {
            let Some(dbi) = target_of(&targets, i)? else {
                // A skipped DBI: pass over its entries.
                while let Some((j, kv)) = entries.next_entry()? {
                    if j != i {
                        pending = Some((j, kv.into()));
                        break;
                    }
                }
                continue;
            };
            let name = || lossy(&index.dbis[i].info.name);
            let mut walk = WriteWalk::open(&mut w.txn, dbi).map_err(|source| LoadError::Lmdb {
                dbi: name(),
                source,
            })?;
            let first = KvRef {
                key: &first.key,
                value: &first.value,
                timestamp_nano: first.timestamp_nano,
                flags: first.flags,
            };
            let mut changed = apply_entry(
                &mut walk,
                &mut append[i],
                &first,
                &name,
                &params,
                &mut buf,
                &mut stats,
            )?;
            loop {
                if changed {
                    w.dirty = true;
                    unchanged_run = 0;
                } else {
                    unchanged_run += 1;
                }
                w.entries += 1;
                // Slices end when due, or when the changes seem to have stopped: comparing goes
                // faster read-only, without holding the lock.
                if unchanged_run >= UNCHANGED_RUN_ENDS_SLICE
                    || (w.entries.is_multiple_of(SLICE_CHECK_EVERY) && slices.clock.due())
                {
                    finished = false;
                    break 'slice;
                }
                let Some((j, kv)) = entries.next_entry()? else {
                    break 'slice;
                };
                if j != i {
                    pending = Some((j, kv.into()));
                    break;
                }
                changed = apply_entry(
                    &mut walk,
                    &mut append[i],
                    &kv,
                    &name,
                    &params,
                    &mut buf,
                    &mut stats,
                )?;
            }
        }
        slices.commit(w)?;
        if finished {
            break;
        }
    }
    slices.out.stats = stats;
    Ok(slices.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ts: u64, txn: u64, flags: u8, app: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        header::write_header(&mut v, ts, txn, flags, false);
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

#[cfg(test)]
mod sliced_tests {
    use super::*;
    use crate::snapshot::Meta;
    use crate::snapshot::decode::{EntryReader, scan};
    use crate::snapshot::encode::GzipWriter;
    use std::sync::Arc;

    use crate::testutil::{header_value as val, put_all};

    fn env(dir: &std::path::Path, name: &str) -> Arc<Env> {
        crate::testutil::scratch_env(dir, name, 256 << 20)
    }

    fn snapshot_of(src: &Env) -> Vec<u8> {
        let txn = src.begin_ro().unwrap();
        let meta = Meta {
            generation_id: b"GX".to_vec(),
            instance_id: b"src".to_vec(),
            hostname: b"h".to_vec(),
            lmdb_txn_id: txn.id() as i64,
            timestamp_nano: 1,
            database_name: b"main".to_vec(),
            from_lmdb_txn_id: 0,
        };
        let (gz, _) = crate::syncer::send::write_snapshot(
            &txn,
            &meta,
            GzipWriter::new(Vec::new()),
            false,
            false,
        )
        .unwrap();
        gz.finish().unwrap()
    }

    /// DBI, key, timestamp, flags, app value.
    type Row = (Vec<u8>, Vec<u8>, u64, u8, Vec<u8>);

    /// Everything but the header's txn ID, which is local to each LMDB.
    fn contents(env: &Env) -> Vec<Row> {
        let txn = env.begin_ro().unwrap();
        let mut out = Vec::new();
        for name in txn.list_dbis().unwrap() {
            let d = txn.open_dbi(&name).unwrap().unwrap();
            for item in txn.cursor(d).unwrap() {
                let (k, v) = item.unwrap();
                let (h, app) = header::parse(v).unwrap();
                out.push((name.clone(), k.to_vec(), h.timestamp, h.flags, app.to_vec()));
            }
        }
        out
    }

    fn native() -> LoadOptions {
        LoadOptions {
            native: true,
            ..Default::default()
        }
    }

    /// A clock that ends a slice at every check, and may run something between slices.
    struct EverySlice<'a> {
        between: &'a mut dyn FnMut(),
        began: u64,
        committed: u64,
    }

    impl SliceClock for EverySlice<'_> {
        fn began(&mut self) {
            self.began += 1;
        }
        fn due(&mut self) -> bool {
            true
        }
        fn committed(&mut self) {
            self.committed += 1;
            (self.between)();
        }
    }

    struct Never;

    impl SliceClock for Never {
        fn began(&mut self) {}
        fn due(&mut self) -> bool {
            false
        }
        fn committed(&mut self) {}
    }

    fn load(dst: &Env, snap: &[u8], last_synced: u64, clock: &mut dyn SliceClock) -> SlicedLoad {
        let index = scan(snap).unwrap();
        load_native_sliced(
            dst,
            &index,
            EntryReader::new(snap),
            &native(),
            last_synced,
            clock,
        )
        .unwrap()
    }

    /// A source and a destination that differ in every way the merge rule cares about.
    fn scenario(dir: &std::path::Path, n: u32) -> (Arc<Env>, Arc<Env>, Vec<u8>) {
        let src = env(dir, "src");
        let dst = env(dir, "dst");
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..n {
            let k = format!("key{i:06}").into_bytes();
            let ts = 1_000 + u64::from(i);
            match i % 5 {
                0 => a.push((k, val(ts + 1, false, b"remote-newer"))),
                1 => {
                    a.push((k.clone(), val(ts, false, b"remote-older")));
                    b.push((k, val(ts + 1, false, b"local-newer")));
                }
                2 => {
                    a.push((k.clone(), val(ts + 1, true, b"")));
                    b.push((k, val(ts, false, b"local-deleted-remotely")));
                }
                3 => {
                    a.push((k.clone(), val(ts, false, b"same")));
                    b.push((k, val(ts, false, b"same")));
                }
                _ => b.push((k, val(ts, false, b"local-only"))),
            }
        }
        put_all(&src, b"records", &a);
        put_all(
            &src,
            b"extra",
            &[(b"x".to_vec(), val(5, false, b"new dbi"))],
        );
        put_all(&dst, b"records", &b);
        let snap = snapshot_of(&src);
        (src, dst, snap)
    }

    #[test]
    fn sliced_merge_equals_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (_, dst, snap) = scenario(dir.path(), 12_000);
        let reference = env(dir.path(), "ref");
        // The same starting point, merged the classic way in one transaction.
        {
            let mut txn = reference.begin_rw().unwrap();
            let d = txn.create_dbi(b"records", 0).unwrap();
            let src = dst.begin_ro().unwrap();
            let sd = src.open_dbi(b"records").unwrap().unwrap();
            for item in src.cursor(sd).unwrap() {
                let (k, v) = item.unwrap();
                txn.put(d, k, v).unwrap();
            }
            let index = scan(snap.as_slice()).unwrap();
            load_snapshot(
                &mut txn,
                &index,
                EntryReader::new(snap.as_slice()),
                &native(),
            )
            .unwrap();
            txn.commit().unwrap();
        }
        let last = dst.info().unwrap().last_txn_id;
        let mut between = || {};
        let mut clock = EverySlice {
            between: &mut between,
            began: 0,
            committed: 0,
        };
        let r = load(&dst, &snap, last, &mut clock);
        assert_eq!(contents(&dst), contents(&reference));
        // 12,000 records, 1 in 5 unchanged or newer locally: the writes come in slices of
        // 1,000 merged entries, plus one transaction creating the new DBI.
        assert!(r.write_txns > 5, "{r:?}");
        assert_eq!(clock.began, r.write_txns);
        assert_eq!(clock.committed, r.write_txns);
        assert!(
            !r.local_changed,
            "our own slices are not local changes: {r:?}"
        );
        assert_eq!(r.last_txn_id, Some(dst.info().unwrap().last_txn_id));
        assert_eq!(r.stats.created_dbis, 1);
        assert_eq!(r.stats.entries, 12_000 / 5 * 4 + 1);
        // Newer remote values and newer remote tombstones (kept as header-only values).
        assert_eq!(r.stats.written, 12_000 / 5 * 2 + 1);
        assert_eq!(r.stats.deleted, 0);
    }

    /// Deletes through the write cursor (stale tombstones over zero-length local values), keys
    /// found by stepping forward or by searching, and an INTEGERKEY DBI (never stepped through
    /// bytewise): the sliced merge ends where one transaction does.
    #[test]
    fn sliced_merge_with_deletes_and_integer_keys_equals_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, reference) = (
            env(dir.path(), "src"),
            env(dir.path(), "dst"),
            env(dir.path(), "ref"),
        );
        let cutoff = 5_000;
        let (mut remote, mut local) = (Vec::new(), Vec::new());
        for i in 0..6_000u32 {
            let k = format!("k{i:05}").into_bytes();
            match i % 6 {
                // Zero-length locally, stale tombstone remotely: deleted.
                0 => {
                    remote.push((k.clone(), val(1_000, true, b"")));
                    local.push((k, Vec::new()));
                }
                // Zero-length locally, a value remotely: written.
                1 => {
                    remote.push((k.clone(), val(6_000, false, b"remote")));
                    local.push((k, Vec::new()));
                }
                // Stale tombstone for a key absent here: nothing.
                2 => remote.push((k, val(1_000, true, b""))),
                // Newer locally: kept.
                3 => {
                    remote.push((k.clone(), val(6_000, false, b"older")));
                    local.push((k, val(7_000, false, b"newer")));
                }
                // Only here, between remote keys: the cursor steps over it.
                4 => local.push((k, val(6_000, false, b"local only"))),
                _ => remote.push((k, val(6_500, false, b"new"))),
            }
        }
        put_all(&src, b"records", &remote);
        for (e, rows) in [(&dst, &local), (&reference, &local)] {
            put_all(e, b"records", rows);
        }
        let ints = |e: &Env, keys: &[u32], app: &[u8], ts: u64| {
            let mut txn = e.begin_rw().unwrap();
            let d = txn
                .create_dbi(b"ints", crate::lmdb::MDB_INTEGERKEY)
                .unwrap();
            for k in keys {
                txn.put(d, &k.to_ne_bytes(), &val(ts, false, app)).unwrap();
            }
            txn.commit().unwrap();
        };
        ints(&src, &[1, 255, 256, 65_536, 70_000], b"remote", 9_000);
        for e in [&dst, &reference] {
            ints(e, &[2, 256, 65_536], b"local", 8_000);
        }
        let snap = snapshot_of(&src);
        let opts = LoadOptions {
            native: true,
            deleted_cutoff: cutoff,
            ..Default::default()
        };
        {
            let mut txn = reference.begin_rw().unwrap();
            let index = scan(snap.as_slice()).unwrap();
            load_snapshot(&mut txn, &index, EntryReader::new(snap.as_slice()), &opts).unwrap();
            txn.commit().unwrap();
        }
        let mut between = || {};
        let mut clock = EverySlice {
            between: &mut between,
            began: 0,
            committed: 0,
        };
        let index = scan(snap.as_slice()).unwrap();
        let last = dst.info().unwrap().last_txn_id;
        let r = load_native_sliced(
            &dst,
            &index,
            EntryReader::new(snap.as_slice()),
            &opts,
            last,
            &mut clock,
        )
        .unwrap();
        assert_eq!(r.stats.deleted, 1_000, "{r:?}");
        assert!(r.write_txns > 3, "{r:?}");
        assert_eq!(contents(&dst), contents(&reference));
    }

    /// Two LMDBs with the same `n` keys in `records` and a `_sync_private` DBI; then the keys
    /// numbered in `changed` get a newer value in `src` only.
    fn twins(dir: &std::path::Path, n: u32, changed: &[u32]) -> (Arc<Env>, Arc<Env>) {
        let (src, dst) = (env(dir, "src"), env(dir, "dst"));
        let rows: Vec<_> = (0..n)
            .map(|i| {
                (
                    format!("key{i:07}").into_bytes(),
                    val(1_000, false, b"same"),
                )
            })
            .collect();
        for e in [&src, &dst] {
            put_all(e, b"records", &rows);
            put_all(e, b"_sync_private", &rows[..1]);
        }
        let newer: Vec<_> = changed
            .iter()
            .map(|i| {
                (
                    format!("key{i:07}").into_bytes(),
                    val(2_000, false, b"newer"),
                )
            })
            .collect();
        put_all(&src, b"records", &newer);
        (src, dst)
    }

    /// Every key and raw value of one DBI.
    fn rows(env: &Env, dbi: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let txn = env.begin_ro().unwrap();
        let d = txn.open_dbi(dbi).unwrap().unwrap();
        txn.cursor(d)
            .unwrap()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    fn scan_diff(snap: &[u8], dst: &Env, budget: u64) -> diff::Scanned {
        let reader = crate::snapshot::decode::ScanningReader::new(snap, u64::MAX);
        diff::scan_and_diff(reader, dst, budget).unwrap()
    }

    #[test]
    fn validating_pass_keeps_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        // More entries than one read view compares, so the pass renews its view on the way.
        let n = READ_RENEW_EVERY as u32 + 5_000;
        let changed = [0, 7, 50_000, n - 1];
        let (src, dst) = twins(dir.path(), n, &changed);
        let snap = snapshot_of(&src);
        let s = scan_diff(&snap, &dst, 1 << 20);
        // The same index as the plain validating pass.
        assert_eq!(s.index, scan(snap.as_slice()).unwrap());
        let mut diff = s.diff.expect("few differences");
        assert_eq!(diff.len(), changed.len());
        let mut it = diff.entries().unwrap();
        for i in changed {
            let (_, kv) = it.next_entry().unwrap().unwrap();
            assert_eq!(kv.key, format!("key{i:07}").as_bytes());
            assert_eq!(kv.timestamp_nano, 2_000);
        }
        // Merging just those gives what merging everything gives.
        let reference = env(dir.path(), "ref");
        {
            let rows = rows(&dst, b"records");
            put_all(&reference, b"records", &rows);
            put_all(&reference, b"_sync_private", &rows[..1]);
            let mut w = reference.begin_rw().unwrap();
            load_snapshot(
                &mut w,
                &s.index,
                EntryReader::new(snap.as_slice()),
                &native(),
            )
            .unwrap();
            w.commit().unwrap();
        }
        let last = dst.info().unwrap().last_txn_id;
        let entries = diff.entries().unwrap();
        let r = load_native_sliced(&dst, &s.index, entries, &native(), last, &mut Never).unwrap();
        assert_eq!(r.stats.written, 4);
        assert_eq!(r.write_txns, 1);
        assert_eq!(contents(&dst), contents(&reference));
        // Now identical: nothing is kept.
        let again = scan_diff(&snap, &dst, 1 << 20);
        assert!(again.diff.expect("nothing differs").is_empty());
    }

    #[test]
    fn validating_pass_gives_up_comparing_but_not_validating() {
        let dir = tempfile::tempdir().unwrap();
        let changed: Vec<u32> = (0..2_000).collect();
        let (src, dst) = twins(dir.path(), 3_000, &changed);
        let snap = snapshot_of(&src);
        // Over budget: no diff, but the full index.
        let s = scan_diff(&snap, &dst, 10_000);
        assert!(s.diff.is_none());
        assert_eq!(s.index, scan(snap.as_slice()).unwrap());
        // A DBI the LMDB lacks: the whole-snapshot merge must create it.
        put_all(&src, b"brand-new", &[(b"k".to_vec(), val(5, false, b"v"))]);
        let snap = snapshot_of(&src);
        assert!(scan_diff(&snap, &dst, 1 << 30).diff.is_none());
        // A snapshot cut short is an error, however few its differences.
        let cut = &snap[..snap.len() - 9];
        let reader = crate::snapshot::decode::ScanningReader::new(cut, u64::MAX);
        assert!(diff::scan_and_diff(reader, &dst, 1 << 30).is_err());
        // So is one over the size limit.
        let reader = crate::snapshot::decode::ScanningReader::new(snap.as_slice(), 1_000);
        assert!(matches!(
            diff::scan_and_diff(reader, &dst, 1 << 30),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    /// Appending (into an empty DBI, or past its last key) and its fallback give the same
    /// result as plain puts.
    #[test]
    fn appending_and_its_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let src = env(dir.path(), "src");
        let items: Vec<_> = (0..3000u32)
            .map(|i| (format!("k{i:05}").into_bytes(), val(10, false, b"v")))
            .collect();
        put_all(&src, b"records", &items);
        let snap = snapshot_of(&src);
        for local in [
            vec![],
            // After every snapshot key: appends fail at once.
            vec![(b"zzz".to_vec(), val(1, false, b"local"))],
            // Inside the range: appends work until k01500, then plain puts.
            vec![(b"k01500x".to_vec(), val(1, false, b"local"))],
        ] {
            let dst = env(
                dir.path(),
                &format!(
                    "dst{}",
                    local.len() + local.first().map_or(0, |l| l.0.len())
                ),
            );
            put_all(&dst, b"records", &local);
            let last = dst.info().unwrap().last_txn_id;
            let r = load(&dst, &snap, last, &mut Never);
            assert_eq!(r.stats.written, 3000);
            let got = contents(&dst);
            assert_eq!(got.len(), 3000 + local.len());
            let keys: Vec<_> = got.iter().map(|r| r.1.clone()).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted);
            for (k, _) in &items {
                assert!(keys.contains(k));
            }
        }
    }

    #[test]
    fn identical_data_takes_no_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, snap) = scenario(dir.path(), 3_000);
        let last = dst.info().unwrap().last_txn_id;
        let first = load(&dst, &snap, last, &mut Never);
        assert!(first.write_txns >= 1 && !first.local_changed);
        // Loading the same snapshot again, and a snapshot of the source itself into a copy of
        // it, changes nothing and never begins a write transaction.
        let last = dst.info().unwrap().last_txn_id;
        let again = load(&dst, &snap, last, &mut Never);
        assert_eq!(again.write_txns, 0, "{again:?}");
        assert_eq!(again.last_txn_id, None);
        assert_eq!(dst.info().unwrap().last_txn_id, last);
        let last_src = src.info().unwrap().last_txn_id;
        let own = load(&src, &snap, last_src, &mut Never);
        assert_eq!(own.write_txns, 0);
    }

    #[test]
    fn writes_by_others_before_or_between_slices_are_local_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (_, dst, snap) = scenario(dir.path(), 6_000);
        // Someone wrote after our last snapshot: local change even before the first slice.
        let last = dst.info().unwrap().last_txn_id;
        put_all(&dst, b"other", &[(b"k".to_vec(), val(1, false, b"v"))]);
        let r = load(&dst, &snap, last, &mut Never);
        assert!(r.local_changed);

        let dir = tempfile::tempdir().unwrap();
        let (_, dst, snap) = scenario(dir.path(), 6_000);
        let last = dst.info().unwrap().last_txn_id;
        let writer = dst.clone();
        let mut n = 0;
        let mut between = || {
            n += 1;
            if n == 2 {
                // PowerDNS gets the lock between two of our slices.
                put_all(&writer, b"other", &[(b"k".to_vec(), val(1, false, b"v"))]);
            }
        };
        let mut clock = EverySlice {
            between: &mut between,
            began: 0,
            committed: 0,
        };
        let r = load(&dst, &snap, last, &mut clock);
        assert!(r.local_changed, "{r:?}");
        assert!(r.write_txns > 2);
    }

    #[test]
    fn an_interrupted_merge_converges_when_merged_again() {
        let dir = tempfile::tempdir().unwrap();
        let (_, dst, snap) = scenario(dir.path(), 5_000);
        // The reference starts from dst's state and takes the merge in one go.
        let reference = env(dir.path(), "ref2");
        put_all(&reference, b"records", &rows(&dst, b"records"));
        let last = reference.info().unwrap().last_txn_id;
        load(&reference, &snap, last, &mut Never);
        // Merge into dst, failing after the second slice (a crash: committed slices stay).
        struct Crash(u32);
        impl SliceClock for Crash {
            fn began(&mut self) {}
            fn due(&mut self) -> bool {
                true
            }
            fn committed(&mut self) {
                self.0 += 1;
            }
        }
        let index = scan(snap.as_slice()).unwrap();
        let truncated = &snap[..snap.len() * 3 / 5];
        let mut crash = Crash(0);
        let partial = load_native_sliced(
            &dst,
            &index,
            EntryReader::new(truncated),
            &native(),
            0,
            &mut crash,
        );
        assert!(partial.is_err());
        assert!(crash.0 >= 1);
        assert_ne!(contents(&dst), contents(&reference));
        // The next attempt merges the whole snapshot: same result as in one go.
        let last = dst.info().unwrap().last_txn_id;
        load(&dst, &snap, last, &mut Never);
        assert_eq!(contents(&dst), contents(&reference));
    }
}
