//! Bad input never corrupts an LMDB or kills the daemon: corrupt, truncated and hostile snapshots
//! are skipped and reported by object name; a bad config stops the program before any LMDB is
//! opened; a local value without a header is a clear error naming DBI and key.

mod common;

use std::io::Write;

use common::{Instance, entry, key};
use lightningstream::snapshot::encode::{GzipWriter, SnapshotWriter, kv_field_len};
use lightningstream::snapshot::{DbiInfo, KvRef, Meta};

const NAME_EVIL: &str = "main__evil__20260101-000000-000000000__GX.pb.gz";

/// A gzipped snapshot with one DBI holding the given entries (key, value, ts).
fn snapshot(dbi: &str, entries: &[(&[u8], &[u8], u64)]) -> Vec<u8> {
    let meta = Meta {
        generation_id: b"GX".to_vec(),
        instance_id: b"evil".to_vec(),
        hostname: b"h".to_vec(),
        lmdb_txn_id: 1,
        timestamp_nano: 1,
        database_name: b"main".to_vec(),
        from_lmdb_txn_id: 0,
    };
    let kvs: Vec<KvRef> = entries
        .iter()
        .map(|(k, v, ts)| KvRef {
            key: k,
            value: v,
            timestamp_nano: *ts,
            flags: 0,
        })
        .collect();
    let mut w = SnapshotWriter::new(GzipWriter::new(Vec::new()), &meta).unwrap();
    let info = DbiInfo {
        name: dbi.as_bytes().to_vec(),
        flags: 0,
        transform: Vec::new(),
    };
    w.begin_dbi(&info, kvs.iter().map(kv_field_len).sum())
        .unwrap();
    for kv in &kvs {
        w.write_kv(kv).unwrap();
    }
    w.end_dbi().unwrap();
    w.finish().unwrap().finish().unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Instance) {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let b = Instance::new(dir.path(), "b", &bucket, "100ms");
    b.write("records", &[("mine", Some("b"), 10)]);
    (dir, bucket, b)
}

#[test]
fn garbage_and_truncated_objects_are_skipped() {
    let (_dir, bucket, b) = setup();
    std::fs::write(bucket.join(NAME_EVIL), b"this is not gzip at all").unwrap();
    let good = snapshot("records", &[(b"k", b"v", 5)]);
    // The truncated newer snapshot of instance t must make us fall back to its older one.
    std::fs::write(
        bucket.join("main__t__20260101-000000-000000001__GX.pb.gz"),
        &good,
    )
    .unwrap();
    std::fs::write(
        bucket.join("main__t__20260101-000000-000000002__GX.pb.gz"),
        &good[..good.len() - 5],
    )
    .unwrap();
    let log = b.sync_once();
    assert!(log.contains(NAME_EVIL), "{log}");
    assert!(
        log.contains("main__t__20260101-000000-000000002__GX.pb.gz"),
        "{log}"
    );
    assert!(log.contains("corrupt"), "{log}");
    let d = b.dump();
    assert_eq!(d[&key("records", "k")], entry(5, Some("v")));
    assert_eq!(d[&key("records", "mine")], entry(10, Some("b")));
    assert_eq!(d.len(), 2);
}

#[test]
fn hostile_snapshots_leave_the_lmdb_unchanged() {
    let long_key = vec![b'x'; 600];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // a key LMDB cannot store, after a valid entry: nothing of it may be merged
        (
            "long-key",
            snapshot("records", &[(b"a", b"1", 5), (&long_key, b"v", 5)]),
        ),
        // a huge claimed length
        ("huge-len", {
            let mut gz = GzipWriter::new(Vec::new());
            gz.write_all(&[0x08, 0x03, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .unwrap();
            gz.finish().unwrap()
        }),
    ];
    for (what, bytes) in cases {
        let (_dir, bucket, b) = setup();
        let before = b.dump();
        let txn_before = b.last_txn_id();
        std::fs::write(bucket.join(NAME_EVIL), &bytes).unwrap();
        let log = b.sync_once();
        assert!(log.contains(NAME_EVIL), "{what}: {log}");
        assert_eq!(b.dump(), before, "{what}");
        assert_eq!(
            b.last_txn_id(),
            txn_before,
            "{what}: a write transaction was committed"
        );
    }
}

#[test]
fn private_dbis_in_snapshots_are_ignored() {
    let (_dir, bucket, b) = setup();
    std::fs::write(
        bucket.join(NAME_EVIL),
        snapshot("_sync_shadow_x", &[(b"k", b"v", 5)]),
    )
    .unwrap();
    let log = b.sync_once();
    assert!(log.contains("private DBI"), "{log}");
    assert!(b.dump().keys().all(|(dbi, _)| dbi == b"records"));
}

#[test]
fn bad_config_stops_before_any_lmdb_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.lmdb");
    let cases = [
        (
            "unknown key",
            format!(
                "lmdbs:\n  main:\n    path: {}\n    bogus_key: 1\nstorage:\n  type: fs\n",
                db.display()
            ),
            "bogus_key",
        ),
        (
            "bad mask",
            format!(
                "lmdbs:\n  main:\n    path: {}\n    options:\n      file_mask: 775\n      create: true\n",
                db.display()
            ),
            "file_mask",
        ),
        (
            "bad duration",
            format!(
                "lmdbs:\n  main:\n    path: {}\nlmdb_poll_interval: 5 minutes\n",
                db.display()
            ),
            "lmdb_poll_interval",
        ),
    ];
    for (what, text, needle) in cases {
        let cfg = dir.path().join("bad.yaml");
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(common::bin())
            .args(["-c", cfg.to_str().unwrap(), "sync", "--only-once"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("bad.yaml"), "{what}: no file name in {err}");
        assert!(err.contains(needle), "{what}: no key in {err}");
        assert!(err.contains("line"), "{what}: no line in {err}");
        assert!(!db.exists(), "{what}: the LMDB was created");
    }
}

#[test]
fn local_value_without_header_is_a_clear_error() {
    let (_dir, bucket, b) = setup();
    {
        let env = lightningstream::lmdb::Env::open(
            &b.db,
            &lightningstream::lmdb::EnvOptions {
                no_subdir: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut txn = env.begin_rw().unwrap();
        let dbi = txn.create_dbi(b"records", 0).unwrap();
        txn.put(dbi, b"broken-key", b"short").unwrap();
        txn.commit().unwrap();
    }
    std::fs::write(
        bucket.join(NAME_EVIL),
        snapshot("records", &[(b"broken-key", b"v", 5)]),
    )
    .unwrap();
    let out = b.command(&["sync", "--only-once"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("records") && err.contains("broken-key"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A gzip bomb (a valid snapshot that decompresses to far more than allowed) is refused as
/// corrupt before anything is merged, and the daemon goes on.
#[test]
fn gzip_bomb_is_refused_by_size() {
    let (_dir, bucket, b) = setup();
    let zeros = vec![0u8; 60_000];
    let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    let entries: Vec<(&[u8], &[u8], u64)> = keys
        .iter()
        .map(|k| (k.as_bytes(), zeros.as_slice(), 5))
        .collect();
    let bomb = snapshot("records", &entries);
    assert!(bomb.len() < 100_000, "6 MB of zeros compress well");
    std::fs::write(bucket.join(NAME_EVIL), &bomb).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&b.config)
        .unwrap();
    f.write_all(b"snapshot_max_uncompressed_size: 1MB\n")
        .unwrap();
    let before = b.dump();
    let log = b.sync_once();
    assert!(
        log.contains("Snapshot marked as corrupt") && log.contains("decompresses to more than"),
        "{log}"
    );
    assert_eq!(b.dump(), before);
}
