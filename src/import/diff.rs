//! Validating and comparing in one pass: while a downloaded snapshot is checked from end to end
//! (the pass that must succeed before anything is written), its entries are also compared with
//! a native-mode LMDB under short read transactions, and those that would change something are
//! kept. The merge then only has to go through those instead of decompressing the whole
//! snapshot a second time; a snapshot identical to the LMDB costs one pass and no write lock.
//! When the differences outgrow their budget, or an entry cannot be compared (its DBI does not
//! exist here yet), comparing stops, validation goes on, and the merge streams the whole
//! snapshot as before.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use super::sliced::{READ_RENEW_EVERY, Walk};
use super::{Action, plan_entry};
use crate::core::display::lossy;
use crate::core::lww::{MergeParams, SYNC_PREFIX};
use crate::lmdb::{Env, Txn};
use crate::snapshot::KvRef;
use crate::snapshot::decode::{DecodeError, EntrySource, Inflate, ScanningReader, SnapshotIndex};

/// Entries of a snapshot that differ from the LMDB they were compared with, in snapshot order,
/// kept in a temporary file (page cache, not the process's memory): a header of DBI message
/// index, key length, value length (u32 each), timestamp (u64) and flags (u32), then key and
/// value.
#[derive(Debug)]
pub struct Diff {
    file: BufWriter<File>,
    len: usize,
    bytes: u64,
}

const RECORD_HEADER: usize = 24;

impl Diff {
    fn new() -> std::io::Result<Diff> {
        Ok(Diff {
            file: BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?),
            len: 0,
            bytes: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, dbi: usize, kv: &KvRef) -> std::io::Result<()> {
        let mut h = [0u8; RECORD_HEADER];
        h[0..4].copy_from_slice(&(dbi as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(kv.key.len() as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(kv.value.len() as u32).to_le_bytes());
        h[12..20].copy_from_slice(&kv.timestamp_nano.to_le_bytes());
        h[20..24].copy_from_slice(&kv.flags.to_le_bytes());
        self.file.write_all(&h)?;
        self.file.write_all(kv.key)?;
        self.file.write_all(kv.value)?;
        self.len += 1;
        self.bytes += (RECORD_HEADER + kv.key.len() + kv.value.len()) as u64;
        Ok(())
    }

    /// The kept entries from the first, as a source for the merge (which may run more than
    /// once: after a full map, say).
    pub fn entries(&mut self) -> std::io::Result<DiffEntries> {
        self.file.flush()?;
        let mut f = self.file.get_ref().try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        Ok(DiffEntries {
            r: BufReader::with_capacity(256 * 1024, f),
            left: self.len,
            buf: Vec::new(),
        })
    }
}

pub struct DiffEntries {
    r: BufReader<File>,
    left: usize,
    buf: Vec<u8>,
}

impl EntrySource for DiffEntries {
    fn next_entry(&mut self) -> Result<Option<(usize, KvRef<'_>)>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut h = [0u8; RECORD_HEADER];
        self.r.read_exact(&mut h).map_err(DecodeError::Read)?;
        let word = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let (dbi, klen, vlen) = (word(0) as usize, word(4) as usize, word(8) as usize);
        let ts = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
        self.buf.resize(klen + vlen, 0);
        self.r
            .read_exact(&mut self.buf)
            .map_err(DecodeError::Read)?;
        Ok(Some((
            dbi,
            KvRef {
                key: &self.buf[..klen],
                value: &self.buf[klen..],
                timestamp_nano: ts,
                flags: word(20),
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
/// differing entries (in a temporary file). Entries are judged with no tombstone cutoff, which
/// can only make more of them look different, never fewer; the merge decides each kept entry
/// again under the write lock with the real cutoff. A problem on the LMDB side only ends the
/// comparison.
pub fn scan_and_diff<I: Inflate>(
    mut reader: ScanningReader<I>,
    env: &Env,
    budget: u64,
) -> Result<Scanned, DecodeError> {
    // Without a place for the differences, the merge streams everything: slower, not wrong.
    let mut diff = Diff::new().ok();
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
                    let walk = ro
                        .published_dbi(name)
                        .filter(|_| !name.is_empty())
                        .and_then(|dbi| Walk::open(&ro, dbi).ok());
                    let Some(walk) = walk else {
                        diff = None;
                        break 'views;
                    };
                    Some(walk)
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
            if differs && (d.push(i, &kv).is_err() || d.bytes > budget) {
                diff = None;
                break 'views;
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
