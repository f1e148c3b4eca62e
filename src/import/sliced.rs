//! The sliced native merge: a snapshot's entries compared with the LMDB under short read
//! transactions and only the differing ones written, in write transactions that end whenever
//! the [`SliceClock`] says the slice is due, so PowerDNS never waits long for the write lock.
//! Per-key last-writer-wins makes every slice boundary a valid state.

use super::*;

/// Entries merged between two looks at the clock while a sliced merge holds the write lock.
pub const SLICE_CHECK_EVERY: u64 = 1000;

/// A write slice ends after this many entries in a row that changed nothing: comparing is
/// faster read-only, but every commit costs an fsync, worth about this many comparisons.
const UNCHANGED_RUN_ENDS_SLICE: u64 = 10_000;

/// Read transactions of a sliced merge are renewed after this many entries, so that a long
/// comparison does not pin old pages while the application keeps writing.
pub(super) const READ_RENEW_EVERY: u64 = 100_000;

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

/// Whether a cursor walk may step forward to find a key instead of searching: only where
/// LMDB orders keys as byte slices compare and each key has one value. INTEGERKEY and
/// REVERSEKEY order keys otherwise; in a DUPSORT DBI a step may land on another duplicate of
/// the same key. (DUPSORT DBIs only reach a native merge from format 1-2 snapshots: from
/// format 3 on, they need the dupsort_hack transform, which native mode refuses.)
fn steps_bytewise(flags: u32) -> bool {
    use crate::lmdb::{MDB_DUPSORT, MDB_INTEGERKEY, MDB_REVERSEKEY};
    flags & (MDB_INTEGERKEY | MDB_REVERSEKEY | MDB_DUPSORT) == 0
}

/// A read cursor walking one DBI alongside the snapshot's keys.
pub(super) struct Walk<'t> {
    cursor: crate::lmdb::Cursor<'t>,
    /// Where the cursor is: `Some(None)` past the last key, `None` not positioned yet.
    pos: Option<Option<(&'t [u8], &'t [u8])>>,
    /// See [`steps_bytewise`].
    bytewise: bool,
}

impl<'t> Walk<'t> {
    pub(super) fn open(ro: &'t RoTxn, dbi: Dbi) -> Result<Walk<'t>, LmdbError> {
        let flags = ro.dbi_flags(dbi)?;
        Ok(Walk {
            cursor: ro.cursor(dbi)?,
            pos: None,
            bytewise: steps_bytewise(flags),
        })
    }

    /// The value of `key`, if present. Snapshot keys come in the DBI's order, so usually the
    /// next entry is the one: step forward a little before searching (LMDB's search restarts
    /// from the root whenever the key is past the current page).
    pub(super) fn lookup(&mut self, key: &[u8]) -> Result<Option<&'t [u8]>, LmdbError> {
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
        let lmdb_err = in_dbi(index, i);
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
            bytewise: steps_bytewise(flags),
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
mod tests;
