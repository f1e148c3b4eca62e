//! Validating and comparing in one pass: while a downloaded snapshot is checked from end to end
//! (the pass that must succeed before anything is written), its entries are also compared with
//! a native-mode LMDB under short read transactions, and those that would change something are
//! kept. The merge then only has to go through those few instead of decompressing the whole
//! snapshot a second time; a snapshot identical to the LMDB costs one pass and no write lock.
//! When the differences outgrow their budget (a first load), or an entry cannot be compared
//! (its DBI does not exist here yet), comparing stops, validation goes on, and the merge
//! streams the whole snapshot as before.

use std::io::Read;

use super::{Action, MergeParams, READ_RENEW_EVERY, SYNC_PREFIX, Walk, lossy, plan_entry};
use crate::lmdb::{Env, MDB_INTEGERKEY, MDB_REVERSEKEY, Txn};
use crate::snapshot::KvRef;
use crate::snapshot::decode::{DecodeError, EntrySource, ScanningReader, SnapshotIndex};

/// Entries of a snapshot that differ from the LMDB they were compared with, in snapshot order:
/// keys and values back to back in `data`, their lengths and the rest in `items`.
#[derive(Debug, Default)]
pub struct Diff {
    data: Vec<u8>,
    /// (DBI message index, key length, value length, timestamp, flags).
    items: Vec<(u32, u32, u32, u64, u32)>,
}

impl Diff {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Memory held, for the budget.
    fn bytes(&self) -> usize {
        self.data.len() + self.items.len() * std::mem::size_of::<(u32, u32, u32, u64, u32)>()
    }

    fn push(&mut self, dbi: usize, kv: &KvRef) {
        self.data.extend_from_slice(kv.key);
        self.data.extend_from_slice(kv.value);
        self.items.push((
            dbi as u32,
            kv.key.len() as u32,
            kv.value.len() as u32,
            kv.timestamp_nano,
            kv.flags,
        ));
    }

    /// The kept entries, as a source for the merge.
    pub fn entries(&self) -> DiffEntries<'_> {
        DiffEntries {
            diff: self,
            next: 0,
            offset: 0,
        }
    }
}

pub struct DiffEntries<'a> {
    diff: &'a Diff,
    next: usize,
    offset: usize,
}

impl EntrySource for DiffEntries<'_> {
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        let Some(&(dbi, klen, vlen, ts, flags)) = self.diff.items.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let key = self.offset..self.offset + klen as usize;
        let value = key.end..key.end + vlen as usize;
        self.offset = value.end;
        Ok(Some((
            dbi as usize,
            KvRef {
                key: &self.diff.data[key],
                value: &self.diff.data[value],
                timestamp_nano: ts,
                flags,
            },
        )))
    }
}

/// Result of [`scan_and_diff`].
#[derive(Debug)]
pub struct Scanned {
    pub index: SnapshotIndex,
    /// `None` when comparing gave up: the merge must stream the whole snapshot.
    pub diff: Option<Diff>,
}

/// Validates the whole snapshot (as [`crate::snapshot::decode::scan_limited`] does: any error
/// is the snapshot's) and compares its entries with `env`, keeping at most `budget` bytes of
/// differing entries. Entries are judged with no tombstone cutoff, which can only make more of
/// them look different, never fewer; the merge decides each kept entry again under the write
/// lock with the real cutoff. A problem on the LMDB side only ends the comparison.
pub fn scan_and_diff<R: Read>(
    mut reader: ScanningReader<R>,
    env: &Env,
    budget: usize,
) -> Result<Scanned, DecodeError> {
    let mut diff = Some(Diff::default());
    let mut buf = Vec::with_capacity(256);
    let mut params = MergeParams {
        default_ts: 0,
        txn_id: 0,
        format_version: 0,
        deleted_cutoff: 0,
        padding: false,
    };
    'views: while diff.is_some() {
        let Ok(ro) = env.begin_ro() else {
            diff = None;
            break;
        };
        params.txn_id = ro.id() + 1;
        // One walk per DBI message; `None` inside: a `_sync` DBI, which merges never touch.
        let mut walks: Vec<Option<Option<Walk>>> = Vec::new();
        let mut n = 0u64;
        loop {
            let Some(e) = reader.next_entry()? else {
                break 'views;
            };
            let (i, name, kv) = (e.dbi, e.dbi_name, e.kv);
            params.format_version = e.format_version;
            if walks.len() <= i {
                walks.resize_with(i + 1, || None);
            }
            if walks[i].is_none() {
                let walk = if name.starts_with(SYNC_PREFIX) {
                    None
                } else {
                    // An unnamed DBI (so far), one this LMDB lacks (the merge has to create and
                    // fill it: the whole-snapshot path's job), or one this process has not
                    // opened yet: opening it here, on a downloader thread, could disturb the
                    // syncer's transactions (see `RoTxn::published_dbi`).
                    let Some(dbi) = ro.published_dbi(name).filter(|_| !name.is_empty()) else {
                        diff = None;
                        break 'views;
                    };
                    let Ok(flags) = ro.dbi_flags(dbi) else {
                        diff = None;
                        break 'views;
                    };
                    let Ok(cursor) = ro.cursor(dbi) else {
                        diff = None;
                        break 'views;
                    };
                    Some(Walk {
                        cursor,
                        pos: None,
                        bytewise: flags & (MDB_INTEGERKEY | MDB_REVERSEKEY) == 0,
                    })
                };
                walks[i] = Some(walk);
            }
            let Some(Some(walk)) = walks[i].as_mut() else {
                continue;
            };
            let Ok(old) = walk.lookup(kv.key) else {
                diff = None;
                break 'views;
            };
            // A local value that cannot be judged (no valid header) is the merge's to report.
            let name = || lossy(name);
            let differs = !matches!(
                plan_entry(old, &kv, &params, &mut buf, &name),
                Ok(Action::Nothing)
            );
            let d = diff.as_mut().expect("comparing");
            if differs {
                d.push(i, &kv);
                if d.bytes() > budget {
                    diff = None;
                    break 'views;
                }
            }
            n += 1;
            if n >= READ_RENEW_EVERY {
                // A fresh read view, so that a long pass does not pin old pages.
                continue 'views;
            }
        }
    }
    // Given up comparing (or done): validation goes on to the end either way.
    while reader.next_entry()?.is_some() {}
    Ok(Scanned {
        index: reader.finish(),
        diff,
    })
}
