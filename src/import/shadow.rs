//! Shadow (non-native) mode, for applications that store plain values (PowerDNS Auth 4.7): every
//! user DBI `X` gets a `_sync_shadow_X` twin whose values carry LS headers, so per-key timestamps
//! and tombstones exist although the application knows nothing of them (spec/merge.md §5–§7).
//! main→shadow captures local changes with a timestamp, remote snapshots are merged into the
//! shadows, and shadow→main copies the result back. DUPSORT DBIs go through the
//! `dupsort_hack_v1` key transform. Every pass reads in bounded batches, so memory does not grow
//! with the DBI size.

use std::cmp::Ordering;

use crate::core::display::{key_for_humans, lossy};
use crate::core::header::{self, FLAG_DELETED};
use crate::core::lww::{Decision, MergeParams, SYNC_PREFIX, merge_entry};
use crate::core::shadow::{ALLOWED_SHADOW_FLAGS, dupsort_decode, dupsort_encode, shadow_name};
use crate::lmdb::{Dbi, LmdbError, MDB_DUPSORT, RwTxn, Txn};
use crate::snapshot::KvRef;

/// Entries read per batch; writes happen between batches.
const BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("LMDB, DBI {dbi:?}: {source}")]
    Lmdb {
        dbi: String,
        #[source]
        source: LmdbError,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) type Batch = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to about `BATCH` entries of `dbi` from `from` (inclusive) on, never splitting the
/// duplicates of one key; returns them and the key to continue at.
fn read_batch(
    txn: &RwTxn,
    dbi: Dbi,
    from: Option<&[u8]>,
) -> Result<(Batch, Option<Vec<u8>>), LmdbError> {
    let mut c = txn.cursor(dbi)?;
    let mut item = match from {
        Some(k) => c.set_range(k)?,
        None => c.first()?,
    };
    let mut out: Batch = Vec::new();
    while let Some((k, v)) = item {
        if out.len() >= BATCH && out.last().is_some_and(|(lk, _)| lk.as_slice() != k) {
            return Ok((out, Some(k.to_vec())));
        }
        out.push((k.to_vec(), v.to_vec()));
        item = c.next_entry()?;
    }
    Ok((out, None))
}

/// Calls `f` for every entry of `dbi` in batches; `f` may write to the transaction, but must not
/// add or remove keys of `dbi` itself at or after the batch's end.
pub(crate) fn for_each_batch(
    txn: &mut RwTxn,
    dbi: Dbi,
    name: &[u8],
    mut f: impl FnMut(&mut RwTxn, Batch) -> Result<(), ShadowError>,
) -> Result<(), ShadowError> {
    let mut from: Option<Vec<u8>> = None;
    loop {
        let (batch, next) =
            read_batch(txn, dbi, from.as_deref()).map_err(|source| ShadowError::Lmdb {
                dbi: lossy(name),
                source,
            })?;
        f(txn, batch)?;
        match next {
            Some(k) => from = Some(k),
            None => return Ok(()),
        }
    }
}

/// The user DBIs (root order, `_sync*` left out) with their flags.
fn user_dbis(txn: &RwTxn) -> Result<Vec<(Vec<u8>, Dbi, u32)>, ShadowError> {
    let lmdb = |dbi: &[u8]| {
        let dbi = lossy(dbi);
        move |source| ShadowError::Lmdb { dbi, source }
    };
    let mut out = Vec::new();
    for name in txn.list_dbis().map_err(lmdb(b""))? {
        if name.starts_with(SYNC_PREFIX) {
            continue;
        }
        if let Some(dbi) = txn.open_dbi(&name).map_err(lmdb(&name))? {
            let flags = txn.dbi_flags(dbi).map_err(lmdb(&name))?;
            out.push((name, dbi, flags));
        }
    }
    Ok(out)
}

/// Counters of one pass, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub written: u64,
    pub deleted: u64,
    pub created_dbis: u64,
}

impl PassStats {
    /// Whether the pass wrote anything (and so its transaction will get a new ID).
    pub fn changed(&self) -> bool {
        self.written + self.deleted + self.created_dbis > 0
    }
}

/// main→shadow (merge.md §5): local values that differ from their shadow get timestamp `ts`,
/// keys gone from main become tombstones at `ts`.
pub fn main_to_shadow(
    txn: &mut RwTxn,
    ts: u64,
    dupsort_hack: bool,
    deleted_cutoff: u64,
) -> Result<PassStats, ShadowError> {
    let mut stats = PassStats::default();
    let params = MergeParams {
        default_ts: ts,
        txn_id: txn.id(),
        format_version: 3,
        deleted_cutoff,
        padding: false,
    };
    for (name, main, flags) in user_dbis(txn)? {
        let dupsort = flags & MDB_DUPSORT != 0;
        if dupsort && !dupsort_hack {
            return Err(ShadowError::Invalid(format!(
                "mainToShadow: dupsort db {:?} found and dupsort_hack disabled",
                lossy(&name)
            )));
        }
        let sname = shadow_name(&name);
        let existing = txn.open_dbi(&sname).map_err(|source| ShadowError::Lmdb {
            dbi: lossy(&sname),
            source,
        })?;
        let shadow = match existing {
            Some(d) => d,
            None => {
                stats.created_dbis += 1;
                txn.create_dbi(&sname, flags & ALLOWED_SHADOW_FLAGS)
                    .map_err(|source| ShadowError::Lmdb {
                        dbi: lossy(&sname),
                        source,
                    })?
            }
        };
        let lmdb = |source| ShadowError::Lmdb {
            dbi: lossy(&sname),
            source,
        };

        // Pass A: every main entry into the shadow, per key.
        let mut prev: Option<Vec<u8>> = None;
        let mut buf = Vec::new();
        for_each_batch(txn, main, &name, |txn, batch| {
            for (k, v) in batch {
                let key = if dupsort {
                    let e = dupsort_encode(&k, &v).map_err(ShadowError::Invalid)?;
                    match prev.as_deref().map(|p| e.as_slice().cmp(p)) {
                        Some(Ordering::Equal) => {
                            return Err(ShadowError::Invalid(format!(
                                "dupsort_hack does not result in unique keys for key {}",
                                key_for_humans(&k)
                            )));
                        }
                        Some(Ordering::Less) => {
                            return Err(ShadowError::Invalid(format!(
                                "dupsort_hack results in reverse sort order for key {}",
                                key_for_humans(&k)
                            )));
                        }
                        _ => {}
                    }
                    prev = Some(e.clone());
                    e
                } else {
                    k
                };
                let kv = KvRef {
                    key: &key,
                    value: &v,
                    timestamp_nano: 0,
                    flags: 0,
                };
                let old = txn.get(shadow, &key).map_err(lmdb)?;
                let decision = merge_entry(&kv, old, &params, &mut buf).map_err(|e| {
                    ShadowError::Invalid(format!(
                        "shadow DBI {:?} key {}: {e}",
                        lossy(&sname),
                        key_for_humans(&key)
                    ))
                })?;
                if decision == Decision::Put && old != Some(buf.as_slice()) {
                    txn.put(shadow, &key, &buf).map_err(lmdb)?;
                    stats.written += 1;
                }
            }
            Ok(())
        })?;

        // Pass B: live shadow entries whose key left main become tombstones.
        for_each_batch(txn, shadow, &sname, |txn, batch| {
            for (k, v) in batch {
                let (h, _) = header::parse(&v).map_err(|e| {
                    ShadowError::Invalid(format!(
                        "shadow DBI {:?} key {}: {e}",
                        lossy(&sname),
                        key_for_humans(&k)
                    ))
                })?;
                if h.is_deleted() || still_in_main(txn, main, dupsort, &k).map_err(lmdb)? {
                    continue;
                }
                let mut t = Vec::with_capacity(header::HEADER_SIZE);
                header::write_header(&mut t, ts, params.txn_id, FLAG_DELETED, false);
                txn.put(shadow, &k, &t).map_err(lmdb)?;
                stats.deleted += 1;
            }
            Ok(())
        })?;
    }
    Ok(stats)
}

/// Whether the main DBI still has the entry a shadow key stands for.
fn still_in_main(
    txn: &RwTxn,
    main: Dbi,
    dupsort: bool,
    shadow_key: &[u8],
) -> Result<bool, LmdbError> {
    if !dupsort {
        return Ok(txn.get(main, shadow_key)?.is_some());
    }
    let Ok(key) = dupsort_decode(shadow_key) else {
        return Ok(false);
    };
    let mut c = txn.cursor(main)?;
    let mut item = c.set_range(key)?;
    while let Some((k, v)) = item {
        if k != key {
            break;
        }
        if dupsort_encode(k, v).is_ok_and(|e| e == shadow_key) {
            return Ok(true);
        }
        item = c.next_entry()?;
    }
    Ok(false)
}

/// shadow→main (merge.md §6): each main DBI becomes exactly the live, non-empty shadow entries.
pub fn shadow_to_main(txn: &mut RwTxn, dupsort_hack: bool) -> Result<PassStats, ShadowError> {
    let mut stats = PassStats::default();
    for (name, main, flags) in user_dbis(txn)? {
        let dupsort = flags & MDB_DUPSORT != 0;
        if dupsort && !dupsort_hack {
            return Err(ShadowError::Invalid(format!(
                "shadowToMain: dupsort db {:?} found and dupsort_hack disabled",
                lossy(&name)
            )));
        }
        let sname = shadow_name(&name);
        let lmdb = |dbi: &[u8]| {
            let dbi = lossy(dbi);
            move |source| ShadowError::Lmdb { dbi, source }
        };
        let shadow = txn.open_dbi(&sname).map_err(lmdb(&sname))?.ok_or_else(|| {
            ShadowError::Invalid(format!("shadow DBI {:?} does not exist", lossy(&sname)))
        })?;
        let parse = |k: &[u8], v: &[u8]| -> Result<Option<Vec<u8>>, ShadowError> {
            let (_, app) = header::parse(v).map_err(|e| {
                ShadowError::Invalid(format!(
                    "shadow DBI {:?} key {}: {e}",
                    lossy(&sname),
                    key_for_humans(k)
                ))
            })?;
            // Tombstones and live empty values both leave main (a Go quirk kept on purpose).
            Ok((!app.is_empty()).then(|| app.to_vec()))
        };
        if dupsort {
            // Rebuilt from scratch: duplicates cannot be updated in place.
            txn.drop_dbi(main, false).map_err(lmdb(&name))?;
            for_each_batch(txn, shadow, &sname, |txn, batch| {
                for (k, v) in batch {
                    let key = dupsort_decode(&k)
                        .map_err(|e| {
                            ShadowError::Invalid(format!(
                                "dupsort_hack error for DBI {}: {e}",
                                lossy(&name)
                            ))
                        })?
                        .to_vec();
                    if let Some(app) = parse(&k, &v)? {
                        txn.put(main, &key, &app).map_err(lmdb(&name))?;
                        stats.written += 1;
                    }
                }
                Ok(())
            })?;
            continue;
        }
        // Shadow entries into main, per key.
        for_each_batch(txn, shadow, &sname, |txn, batch| {
            for (k, v) in batch {
                let want = parse(&k, &v)?;
                let cur = txn.get(main, &k).map_err(lmdb(&name))?;
                match (want, cur) {
                    (Some(w), Some(c)) if w == c => {}
                    (Some(w), _) => {
                        txn.put(main, &k, &w).map_err(lmdb(&name))?;
                        stats.written += 1;
                    }
                    (None, Some(_)) => {
                        txn.del(main, &k).map_err(lmdb(&name))?;
                        stats.deleted += 1;
                    }
                    (None, None) => {}
                }
            }
            Ok(())
        })?;
        // Main keys without a shadow entry go.
        for_each_batch(txn, main, &name, |txn, batch| {
            for (k, _) in batch {
                if txn.get(shadow, &k).map_err(lmdb(&sname))?.is_none() {
                    txn.del(main, &k).map_err(lmdb(&name))?;
                    stats.deleted += 1;
                }
            }
            Ok(())
        })?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lmdb::{Env, EnvOptions};

    fn shadow_values(txn: &RwTxn, name: &[u8]) -> Vec<(Vec<u8>, u64, u8, Vec<u8>)> {
        let dbi = txn.open_dbi(&shadow_name(name)).unwrap().unwrap();
        txn.cursor(dbi)
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let (h, app) = header::parse(v).unwrap();
                (k.to_vec(), h.timestamp, h.flags, app.to_vec())
            })
            .collect()
    }

    fn scratch_env(dir: &std::path::Path) -> std::sync::Arc<Env> {
        let o = EnvOptions {
            no_subdir: true,
            create: true,
            map_size: 1 << 20,
            ..Default::default()
        };
        Env::open(&dir.join("db"), &o).unwrap()
    }

    /// The worked example of merge.md §8.
    #[test]
    fn worked_example() {
        let dir = tempfile::tempdir().unwrap();
        let env = scratch_env(dir.path());
        let mut txn = env.begin_rw().unwrap();
        let foo = txn.create_dbi(b"foo", 0).unwrap();
        for (k, v) in [("a", "abc"), ("b", "xyz"), ("c", "cccccc")] {
            txn.put(foo, k.as_bytes(), v.as_bytes()).unwrap();
        }
        main_to_shadow(&mut txn, 100, false, 0).unwrap();
        txn.commit().unwrap();
        let mut txn = env.begin_rw().unwrap();
        let foo = txn.open_dbi(b"foo").unwrap().unwrap();
        txn.put(foo, b"d", b"ddd").unwrap();
        txn.del(foo, b"b").unwrap();
        txn.put(foo, b"c", b"CCC").unwrap();
        main_to_shadow(&mut txn, 200, false, 0).unwrap();
        let s = shadow_values(&txn, b"foo");
        let want = vec![
            (b"a".to_vec(), 100, 0, b"abc".to_vec()),
            (b"b".to_vec(), 200, 1, vec![]),
            (b"c".to_vec(), 200, 0, b"CCC".to_vec()),
            (b"d".to_vec(), 200, 0, b"ddd".to_vec()),
        ];
        assert_eq!(s, want);
        assert_eq!(
            main_to_shadow(&mut txn, 300, false, 0).unwrap(),
            PassStats::default()
        );
        // the application deletes a, changes c, adds z: shadow→main restores the shadow's view
        txn.del(foo, b"a").unwrap();
        txn.put(foo, b"c", b"changed").unwrap();
        txn.put(foo, b"z", b"new").unwrap();
        shadow_to_main(&mut txn, false).unwrap();
        let main: Vec<(Vec<u8>, Vec<u8>)> = txn
            .cursor(foo)
            .unwrap()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(
            main,
            vec![
                (b"a".to_vec(), b"abc".to_vec()),
                (b"c".to_vec(), b"CCC".to_vec()),
                (b"d".to_vec(), b"ddd".to_vec())
            ]
        );
    }

    #[test]
    fn dupsort_dbis_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let env = scratch_env(dir.path());
        let mut txn = env.begin_rw().unwrap();
        let ds = txn.create_dbi(b"ds", MDB_DUPSORT).unwrap();
        for v in ["v1", "v2", "v3"] {
            txn.put(ds, b"k", v.as_bytes()).unwrap();
        }
        assert!(main_to_shadow(&mut txn, 5, false, 0).is_err());
        main_to_shadow(&mut txn, 5, true, 0).unwrap();
        let s = shadow_values(&txn, b"ds");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, b"k\0\0\0\0v1\x01");
        txn.del(ds, b"k").unwrap();
        txn.put(ds, b"k", b"v2").unwrap();
        main_to_shadow(&mut txn, 6, true, 0).unwrap();
        let s = shadow_values(&txn, b"ds");
        let flags: Vec<u8> = s.iter().map(|e| e.2).collect();
        assert_eq!(flags, [1, 0, 1]);
        shadow_to_main(&mut txn, true).unwrap();
        let dups: Vec<Vec<u8>> = txn
            .cursor(ds)
            .unwrap()
            .map(|r| r.unwrap().1.to_vec())
            .collect();
        assert_eq!(dups, [b"v2".to_vec()]);
    }
}
