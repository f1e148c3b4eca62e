//! Writing keys of a restored state back into a live LMDB as new writes (native mode): for each
//! selected key whose value as of the restore moment differs from the live one, the old value
//! (or a tombstone, for keys that did not exist then) is written with a fresh timestamp, so that
//! it wins over every copy in the fleet and propagates through the normal sync. The changes are
//! found under read transactions, then applied in write transactions of a bounded number of keys,
//! each key decided again under the write lock (PowerDNS may have written meanwhile).

use crate::core::display::lossy;
use crate::core::header::{self, FLAG_DELETED, HeaderError};
use crate::lmdb::{Dbi, Env, LmdbError, RoTxn, RwTxn, Txn};

/// Keys of one DBI: those starting with any of `prefixes` (all keys when empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub dbi: Vec<u8>,
    pub prefixes: Vec<Vec<u8>>,
}

/// What a change does to the live key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put back the value the key had at the restore moment.
    Restore,
    /// The key did not exist at the restore moment (or was deleted): write a tombstone.
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub dbi: Vec<u8>,
    pub key: Vec<u8>,
    pub action: Action,
    /// The application value as of the restore moment (empty for deletes).
    pub value: Vec<u8>,
    /// Flags to create the DBI with, should the live LMDB not have it.
    pub dbi_flags: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("LMDB {env}, DBI {dbi:?}: {source}")]
    Lmdb {
        env: String,
        dbi: String,
        #[source]
        source: LmdbError,
    },
    #[error(
        "LMDB {env}, DBI {dbi:?}, key {key}: value has no Lightning Stream header ({source}); --into-live needs a native-mode LMDB"
    )]
    Header {
        env: String,
        dbi: String,
        key: String,
        #[source]
        source: HeaderError,
    },
    #[error("DBI {0:?} is MDB_DUPSORT; restoring into it is not supported")]
    Dupsort(String),
}

/// The application value of a stored value, `None` for tombstones (and absent keys).
fn state<'a>(
    v: Option<&'a [u8]>,
    env: &Env,
    dbi: &[u8],
    key: &[u8],
) -> Result<(Option<&'a [u8]>, u64), LiveError> {
    let Some(v) = v else {
        return Ok((None, 0));
    };
    let (h, app) = header::parse(v).map_err(|source| LiveError::Header {
        env: env.path().display().to_string(),
        dbi: lossy(dbi),
        key: hex(key),
        source,
    })?;
    Ok((if h.is_deleted() { None } else { Some(app) }, h.timestamp))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Prefixes with those covered by a shorter one removed, sorted.
fn normalize(prefixes: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = prefixes.to_vec();
    if p.is_empty() {
        return vec![Vec::new()];
    }
    p.sort();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for x in p {
        if out.last().is_some_and(|l| x.starts_with(l)) {
            continue;
        }
        out.push(x);
    }
    out
}

fn lmdb_err(env: &Env, dbi: &[u8]) -> impl Fn(LmdbError) -> LiveError {
    let (env, dbi) = (env.path().display().to_string(), lossy(dbi));
    move |source| LiveError::Lmdb {
        env: env.clone(),
        dbi: dbi.clone(),
        source,
    }
}

type Item<'a> = Option<(&'a [u8], &'a [u8])>;

/// A cursor over the keys of `dbi` starting with `prefix`.
struct Range<'t> {
    cursor: Option<crate::lmdb::Cursor<'t>>,
    prefix: Vec<u8>,
    cur: Item<'t>,
}

impl<'t> Range<'t> {
    fn new(txn: &'t RoTxn, dbi: Option<Dbi>, prefix: &[u8]) -> Result<Range<'t>, LmdbError> {
        let Some(dbi) = dbi else {
            return Ok(Range {
                cursor: None,
                prefix: prefix.to_vec(),
                cur: None,
            });
        };
        let mut c = txn.cursor(dbi)?;
        let first = if prefix.is_empty() {
            c.first()?
        } else {
            c.set_range(prefix)?
        };
        let mut r = Range {
            cursor: Some(c),
            prefix: prefix.to_vec(),
            cur: None,
        };
        r.cur = r.keep(first);
        Ok(r)
    }

    fn keep(&self, item: Item<'t>) -> Item<'t> {
        item.filter(|(k, _)| k.starts_with(&self.prefix))
    }

    fn advance(&mut self) -> Result<(), LmdbError> {
        let next = match &mut self.cursor {
            Some(c) => c.next_entry()?,
            None => None,
        };
        self.cur = self.keep(next);
        Ok(())
    }
}

/// The changes that bring the selected keys of `live` to their state in `restored`.
pub fn plan_changes(restored: &Env, live: &Env, sel: &Selection) -> Result<Vec<Change>, LiveError> {
    let rerr = lmdb_err(restored, &sel.dbi);
    let lerr = lmdb_err(live, &sel.dbi);
    let rtxn = restored.begin_ro().map_err(&rerr)?;
    let ltxn = live.begin_ro().map_err(&lerr)?;
    let rdbi = rtxn.open_dbi(&sel.dbi).map_err(&rerr)?;
    let ldbi = ltxn.open_dbi(&sel.dbi).map_err(&lerr)?;
    let mut dbi_flags = 0;
    for (txn, dbi, err) in [(&rtxn, rdbi, &rerr), (&ltxn, ldbi, &lerr)] {
        if let Some(d) = dbi {
            let f = txn.dbi_flags(d).map_err(err)?;
            if f & crate::core::flags::MDB_DUPSORT != 0 {
                return Err(LiveError::Dupsort(lossy(&sel.dbi)));
            }
            dbi_flags = f;
        }
    }
    let mut changes = Vec::new();
    for prefix in normalize(&sel.prefixes) {
        let mut r = Range::new(&rtxn, rdbi, &prefix).map_err(&rerr)?;
        let mut l = Range::new(&ltxn, ldbi, &prefix).map_err(&lerr)?;
        loop {
            let (key, rv, lv) = match (r.cur, l.cur) {
                (None, None) => break,
                (Some((rk, rv)), Some((lk, lv))) if rk == lk => {
                    r.advance().map_err(&rerr)?;
                    l.advance().map_err(&lerr)?;
                    (rk, Some(rv), Some(lv))
                }
                (Some((rk, rv)), Some((lk, _))) if rk < lk => {
                    r.advance().map_err(&rerr)?;
                    (rk, Some(rv), None)
                }
                (Some((rk, rv)), None) => {
                    r.advance().map_err(&rerr)?;
                    (rk, Some(rv), None)
                }
                (_, Some((lk, lv))) => {
                    l.advance().map_err(&lerr)?;
                    (lk, None, Some(lv))
                }
            };
            let (want, _) = state(rv, restored, &sel.dbi, key)?;
            let (have, _) = state(lv, live, &sel.dbi, key)?;
            if want == have {
                continue;
            }
            changes.push(Change {
                dbi: sel.dbi.clone(),
                key: key.to_vec(),
                action: if want.is_some() {
                    Action::Restore
                } else {
                    Action::Delete
                },
                value: want.unwrap_or_default().to_vec(),
                dbi_flags,
            });
        }
    }
    Ok(changes)
}

/// Counters of an apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub restored: u64,
    pub deleted: u64,
    /// Changes found unnecessary under the write lock (someone wrote the same meanwhile).
    pub unchanged: u64,
    pub write_txns: u64,
}

fn dbi_for(txn: &mut RwTxn, c: &Change, env: &Env) -> Result<Dbi, LiveError> {
    let err = lmdb_err(env, &c.dbi);
    match txn.open_dbi(&c.dbi).map_err(&err)? {
        Some(d) => Ok(d),
        None => txn.create_dbi(&c.dbi, c.dbi_flags).map_err(&err),
    }
}

/// Applies `changes` to `live` in write transactions of at most `batch` keys; `on_change` is
/// called for every change written.
pub fn apply(
    live: &Env,
    changes: &[Change],
    batch: usize,
    mut on_change: impl FnMut(&Change),
) -> Result<Applied, LiveError> {
    let mut done = Applied::default();
    let mut buf = Vec::new();
    for chunk in changes.chunks(batch.max(1)) {
        let err = lmdb_err(live, b"");
        let mut txn = crate::lmdb::retry_lmdb("Starting a write transaction", || live.begin_rw())
            .map_err(&err)?;
        let txn_id = txn.id();
        let mut written = Vec::new();
        for c in chunk {
            let dbi = dbi_for(&mut txn, c, live)?;
            let derr = lmdb_err(live, &c.dbi);
            let cur = txn.get(dbi, &c.key).map_err(&derr)?;
            let (have, ts) = state(cur, live, &c.dbi, &c.key)?;
            let want = match c.action {
                Action::Restore => Some(c.value.as_slice()),
                Action::Delete => None,
            };
            if have == want {
                done.unchanged += 1;
                continue;
            }
            // Newer than anything this key has seen, so the write wins everywhere.
            let fresh = (crate::base::now_ns().max(1) as u64).max(ts + 1);
            buf.clear();
            let flags = if want.is_none() { FLAG_DELETED } else { 0 };
            header::write_header(&mut buf, fresh, txn_id, flags, false);
            buf.extend_from_slice(want.unwrap_or_default());
            txn.put(dbi, &c.key, &buf).map_err(&derr)?;
            written.push(c);
        }
        txn.commit().map_err(&err)?;
        done.write_txns += 1;
        for c in written {
            match c.action {
                Action::Restore => done.restored += 1,
                Action::Delete => done.deleted += 1,
            }
            on_change(c);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{header_value, put_all, scratch_env};

    fn read(env: &Env, dbi: &[u8], key: &[u8]) -> Option<(u64, bool, Vec<u8>)> {
        let txn = env.begin_ro().unwrap();
        let d = txn.open_dbi(dbi).unwrap()?;
        let v = txn.get(d, key).unwrap()?;
        let (h, app) = header::parse(v).unwrap();
        Some((h.timestamp, h.is_deleted(), app.to_vec()))
    }

    #[test]
    fn selected_keys_go_back_as_new_writes() {
        let dir = tempfile::tempdir().unwrap();
        let then = scratch_env(dir.path(), "then", 16 << 20);
        let live = scratch_env(dir.path(), "live", 16 << 20);
        let kv = |k: &str, ts, del, v: &str| {
            (k.as_bytes().to_vec(), header_value(ts, del, v.as_bytes()))
        };
        put_all(
            &then,
            b"r",
            &[
                kv("a1", 10, false, "old"),
                kv("a2", 10, false, "same"),
                kv("a3", 10, false, "was deleted since"),
                kv("a5", 10, true, ""),
                kv("b1", 10, false, "not selected"),
            ],
        );
        put_all(&then, b"only-then", &[kv("x", 10, false, "x")]);
        let future = 4_000_000_000_000_000_000;
        put_all(
            &live,
            b"r",
            &[
                kv("a1", 20, false, "new"),
                kv("a2", 20, false, "same"),
                kv("a3", 20, true, ""),
                kv("a4", future, false, "added since"),
                kv("a5", 20, true, ""),
                kv("b1", 20, false, "changed"),
            ],
        );
        // Overlapping prefixes select each key once.
        let sel = Selection {
            dbi: b"r".to_vec(),
            prefixes: vec![b"a".to_vec(), b"a1".to_vec()],
        };
        let changes = plan_changes(&then, &live, &sel).unwrap();
        let keys: Vec<(&[u8], Action)> = changes
            .iter()
            .map(|c| (c.key.as_slice(), c.action))
            .collect();
        assert_eq!(
            keys,
            [
                (b"a1".as_slice(), Action::Restore),
                (b"a3", Action::Restore),
                (b"a4", Action::Delete)
            ]
        );
        let t0 = crate::base::now_ns() as u64;
        let mut seen = Vec::new();
        let done = apply(&live, &changes, 2, |c| seen.push(c.key.clone())).unwrap();
        assert_eq!(
            (done.restored, done.deleted, done.unchanged, done.write_txns),
            (2, 1, 0, 2)
        );
        assert_eq!(seen.len(), 3);
        let (ts, del, v) = read(&live, b"r", b"a1").unwrap();
        assert!(ts >= t0 && !del && v == b"old");
        assert_eq!(read(&live, b"r", b"a3").unwrap().2, b"was deleted since");
        // A key from the future still loses to the restore's write.
        let (ts, del, _) = read(&live, b"r", b"a4").unwrap();
        assert!(del && ts == future + 1);
        assert_eq!(read(&live, b"r", b"a2").unwrap().0, 20);
        assert_eq!(read(&live, b"r", b"b1").unwrap().2, b"changed");
        // Applying again: decided again under the lock, nothing to do.
        let again = apply(&live, &changes, 10, |_| {}).unwrap();
        assert_eq!((again.restored, again.deleted, again.unchanged), (0, 0, 3));
        // A DBI the live LMDB lacks is created; a whole DBI (no prefix) is selected.
        let sel = Selection {
            dbi: b"only-then".to_vec(),
            prefixes: Vec::new(),
        };
        let changes = plan_changes(&then, &live, &sel).unwrap();
        apply(&live, &changes, 10, |_| {}).unwrap();
        assert_eq!(read(&live, b"only-then", b"x").unwrap().2, b"x");
    }

    #[test]
    fn a_value_without_header_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let then = scratch_env(dir.path(), "then", 16 << 20);
        let live = scratch_env(dir.path(), "live", 16 << 20);
        put_all(
            &then,
            b"r",
            &[(b"k".to_vec(), header_value(1, false, b"v"))],
        );
        put_all(&live, b"r", &[(b"k".to_vec(), b"plain".to_vec())]);
        let sel = Selection {
            dbi: b"r".to_vec(),
            prefixes: Vec::new(),
        };
        let e = plan_changes(&then, &live, &sel).unwrap_err();
        assert!(
            e.to_string().contains("key 6b") && e.to_string().contains("native"),
            "{e}"
        );
    }
}
