//! What the snapshot fuzz targets share: a validating first pass over the compressed bytes and,
//! when it accepts them, a merge into two scratch LMDBs, one in native mode and one in shadow
//! mode, exactly as `syncer::load` does it (scan, then stream the same bytes into one write
//! transaction). Each merge's transaction is aborted, so both LMDBs keep their seeded content
//! and stay small however long the fuzzer runs.
//!
//! Invariants checked beyond "no panic":
//! * the downloader's comparing pass (threaded inflation, compared with the native LMDB)
//!   accepts and rejects exactly what `scan` does, with the same index or the same error;
//! * once `scan` has accepted some bytes, streaming the same bytes cannot fail to decode, and
//!   every entry belongs to a DBI of the index (no `LoadError::Decode`, no `UnknownDbi`);
//! * a successful load counts exactly the entries of the DBIs it did not skip.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use lightningstream::core::header;
use lightningstream::lmdb::{Env, EnvOptions, MDB_DUPSORT, MDB_INTEGERKEY, RwTxn};
use lightningstream::import::diff::scan_and_diff;
use lightningstream::core::lww::SYNC_PREFIX;
use lightningstream::import::{LoadError, LoadOptions, load_snapshot};
use lightningstream::import::shadow::{main_to_shadow, shadow_to_main};
use lightningstream::snapshot::decode::{EntryReader, SnapshotIndex, scan};

/// Timestamp given to local changes by main→shadow, and the tombstone cutoff: inside the range
/// of the vectors' timestamps, so both sides of every comparison get exercised.
const SHADOW_TS: u64 = 1_795_335_683_000_000_000;
const DELETED_CUTOFF: u64 = 1_700_000_000_000_000_000;

/// Snapshots merged (and committed) into the scratch LMDBs once, so fuzzed snapshots meet
/// existing DBIs, keys and headers.
const NATIVE_SEEDS: &[&[u8]] = &[
    include_bytes!(
        "../corpus/snapshot_decode/native-disjoint__main__a__20261122-082124-014277217__GX.pb.gz"
    ),
    include_bytes!(
        "../corpus/snapshot_decode/native-tombstones__main__a__20261122-082125-130274620__GX.pb.gz"
    ),
    include_bytes!(
        "../corpus/snapshot_decode/native-unknown-flags__main__a__20261122-082125-263020961__GX.pb.gz"
    ),
];
const SHADOW_SEEDS: &[&[u8]] = &[
    include_bytes!(
        "../corpus/snapshot_decode/shadow-basic__main__a__20261122-082126-139345426__GX.pb.gz"
    ),
    include_bytes!(
        "../corpus/snapshot_decode/shadow-preexisting__main__b__20261122-082126-287538645__GX.pb.gz"
    ),
];

struct Scratch {
    native: Arc<Env>,
    shadow: Arc<Env>,
}

fn native_opts() -> LoadOptions {
    LoadOptions {
        native: true,
        deleted_cutoff: DELETED_CUTOFF,
        ..Default::default()
    }
}

fn shadow_opts() -> LoadOptions {
    let mut o = LoadOptions {
        native: false,
        dupsort_hack: true,
        deleted_cutoff: DELETED_CUTOFF,
        padding: true,
        ..Default::default()
    };
    // Lets formatVersion < 3 snapshots create this one DBI (presence matters, 0 is valid).
    o.override_create_flags.insert(b"legacy".to_vec(), 0);
    o
}

fn open(path: &Path) -> Arc<Env> {
    Env::open(
        path,
        &EnvOptions {
            no_subdir: true,
            create: true,
            map_size: 64 << 20,
            ..Default::default()
        },
    )
    .expect("opening a scratch LMDB")
}

fn hdr(ts: u64, flags: u8, app: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    header::write_header(&mut v, ts, 7, flags, false);
    v.extend_from_slice(app);
    v
}

fn load_seed(txn: &mut RwTxn, seed: &[u8], opts: &LoadOptions) {
    let index = scan(seed).expect("seed snapshot scans");
    load_snapshot(txn, &index, EntryReader::new(seed), opts).expect("seed snapshot loads");
}

fn seed_native(env: &Env) {
    let mut txn = env.begin_rw().unwrap();
    let opts = native_opts();
    for seed in NATIVE_SEEDS {
        load_seed(&mut txn, seed, &opts);
    }
    // Local values the vectors do not have: one without a valid header (merging onto it is a
    // local error), one with extension blocks, a tombstone, and DBIs with other flags.
    let records = txn.create_dbi(b"records", 0).unwrap();
    txn.put(records, b"corrupt", b"short").unwrap();
    let mut ext = hdr(SHADOW_TS, 0x82, b"");
    ext[23] = 2;
    ext.extend_from_slice(&[9; 16]);
    ext.extend_from_slice(b"app");
    txn.put(records, b"ext", &ext).unwrap();
    txn.put(records, b"tomb", &hdr(SHADOW_TS, 1, b"")).unwrap();
    let int = txn.create_dbi(b"int", MDB_INTEGERKEY).unwrap();
    for k in [1u32, 2, 1000] {
        txn.put(int, &k.to_ne_bytes(), &hdr(u64::from(k), 0, b"i"))
            .unwrap();
    }
    let dup = txn.create_dbi(b"dup", MDB_DUPSORT).unwrap();
    for v in [&b"a"[..], b"b"] {
        txn.put(dup, b"k", &hdr(5, 0, v)).unwrap();
    }
    txn.commit().unwrap();
}

fn seed_shadow(env: &Env) {
    let mut txn = env.begin_rw().unwrap();
    // Plain application values in the main DBIs, as PowerDNS 4.7 writes them.
    let records = txn.create_dbi(b"records", 0).unwrap();
    for (k, v) in [(&b"k0"[..], &b"v0"[..]), (b"k1", b"v1"), (b"zz", b"")] {
        txn.put(records, k, v).unwrap();
    }
    let dup = txn.create_dbi(b"dup", MDB_DUPSORT).unwrap();
    for v in [&b"a"[..], b"b", b"c"] {
        txn.put(dup, b"k", v).unwrap();
    }
    let int = txn.create_dbi(b"int", MDB_INTEGERKEY).unwrap();
    txn.put(int, &7u32.to_ne_bytes(), b"seven").unwrap();
    let opts = shadow_opts();
    main_to_shadow(&mut txn, SHADOW_TS, true, DELETED_CUTOFF).unwrap();
    for seed in SHADOW_SEEDS {
        load_seed(&mut txn, seed, &opts);
    }
    shadow_to_main(&mut txn, true).unwrap();
    txn.commit().unwrap();
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let native = open(&dir.path().join("native.lmdb"));
        let shadow = open(&dir.path().join("shadow.lmdb"));
        seed_native(&native);
        seed_shadow(&shadow);
        // LMDB keeps its files open and mapped, and nothing reopens them by path: removing the
        // directory now leaves no litter behind, whichever way the fuzzer exits.
        drop(dir);
        Scratch { native, shadow }
    })
}

/// What a load of `index` must count when it succeeds.
fn expected_entries(index: &SnapshotIndex) -> u64 {
    index
        .dbis
        .iter()
        .filter(|d| !d.info.name.starts_with(SYNC_PREFIX))
        .map(|d| d.entries)
        .sum()
}

fn check_load(r: Result<lightningstream::import::LoadStats, LoadError>, index: &SnapshotIndex) {
    match r {
        Ok(stats) => {
            assert_eq!(stats.entries, expected_entries(index), "{stats:?}");
            assert!(stats.written + stats.deleted <= stats.entries, "{stats:?}");
        }
        Err(e @ (LoadError::Decode(_) | LoadError::UnknownDbi(_))) => {
            panic!("scan accepted the snapshot, but streaming the same bytes failed: {e}")
        }
        Err(e) => drop(e.to_string()),
    }
}

fn merge_native(env: &Env, compressed: &[u8], index: &SnapshotIndex) {
    let mut txn = env.begin_rw().expect("write transaction");
    let r = load_snapshot(
        &mut txn,
        index,
        EntryReader::new(compressed),
        &native_opts(),
    );
    check_load(r, index);
    txn.abort();
}

fn merge_shadow(env: &Env, compressed: &[u8], index: &SnapshotIndex) {
    let mut txn = env.begin_rw().expect("write transaction");
    // As syncer::load does when the LMDB changed locally; the seeded state is consistent, so
    // this always succeeds.
    main_to_shadow(&mut txn, SHADOW_TS, true, DELETED_CUTOFF).expect("main->shadow");
    let opts = shadow_opts();
    let r = load_snapshot(&mut txn, index, EntryReader::new(compressed), &opts);
    let ok = r.is_ok();
    check_load(r, index);
    if ok && let Err(e) = shadow_to_main(&mut txn, opts.dupsort_hack) {
        drop(e.to_string());
    }
    txn.abort();
}

/// Validates `compressed` as a snapshot object and, when valid, merges it into both scratch
/// LMDBs. Returns the index when the first pass accepted it.
pub fn check_snapshot(compressed: &[u8]) -> Option<SnapshotIndex> {
    let s = scratch();
    let scanned = scan(compressed);
    // The downloader's pass (inflating on a thread, comparing with the native LMDB) must judge
    // the bytes exactly as the plain pass does.
    let compared = std::thread::scope(|scope| {
        let reader = lightningstream::pipeline::scanning_reader(scope, compressed, u64::MAX);
        scan_and_diff(reader, &s.native, 1 << 20)
    });
    match (&scanned, &compared) {
        (Ok(index), Ok(c)) => assert_eq!(*index, c.index),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!(
            "plain pass: {:?}, comparing pass: {:?}",
            a.as_ref().err(),
            b.as_ref().err()
        ),
    }
    let index = match scanned {
        Ok(index) => index,
        Err(e) => {
            drop(e.to_string());
            return None;
        }
    };
    merge_native(&s.native, compressed, &index);
    merge_shadow(&s.shadow, compressed, &index);
    Some(index)
}
