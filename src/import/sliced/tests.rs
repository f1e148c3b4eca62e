//! The sliced merge against one-transaction merges of the same snapshots, on scratch LMDBs.

use super::*;
use crate::core::header;
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
    let (gz, _) =
        crate::export::write_snapshot(&txn, &meta, GzipWriter::new(Vec::new()), false, false)
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
