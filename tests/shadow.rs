//! Shadow mode (`schema_tracks_changes: false`) with real processes: plain values and a DUPSORT
//! DBI (dupsort_hack) converge through a directory, deletes included; `drop-shadow` and
//! `experimental migrate-timestamps` do what the PowerDNS 4.7 → 4.8 migration needs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lightningstream::core::header;
use lightningstream::lmdb::{Env, EnvOptions, MDB_DUPSORT, Txn};

type Plain = BTreeMap<(Vec<u8>, Vec<u8>), Vec<Vec<u8>>>;

struct Node {
    db: PathBuf,
    config: PathBuf,
}

impl Node {
    fn new(dir: &Path, name: &str, bucket: &Path) -> Node {
        let (db, config) = common::home(dir, name);
        std::fs::write(
            &config,
            format!(
                "instance: {name}\nlmdbs:\n  main:\n    path: {}\n    dupsort_hack: true\n    \
                 options: {{no_subdir: true, create: true}}\nstorage:\n  type: fs\n  options:\n    root_path: {}\n\
                 lmdb_poll_interval: 100ms\nstorage_poll_interval: 100ms\n",
                db.display(),
                bucket.display()
            ),
        )
        .unwrap();
        Node { db, config }
    }

    /// `sync --only-once`, whatever its outcome.
    fn sync_once_output(&self) -> std::process::Output {
        Command::new(common::bin())
            .arg("-c")
            .arg(&self.config)
            .args(["sync", "--only-once"])
            .output()
            .unwrap()
    }

    fn env(&self) -> std::sync::Arc<Env> {
        let o = EnvOptions {
            no_subdir: true,
            create: true,
            ..Default::default()
        };
        Env::open(&self.db, &o).unwrap()
    }

    /// Application writes: plain values; `None` deletes the key.
    fn write(&self, dbi: &str, flags: u32, entries: &[(&str, Option<&str>)]) {
        let env = self.env();
        let mut txn = env.begin_rw().unwrap();
        let d = txn.create_dbi(dbi.as_bytes(), flags).unwrap();
        for (k, v) in entries {
            match v {
                Some(v) => txn.put(d, k.as_bytes(), v.as_bytes()).unwrap(),
                None => {
                    txn.del(d, k.as_bytes()).unwrap();
                }
            }
        }
        txn.commit().unwrap();
    }

    /// The application's view: user DBIs only, every duplicate.
    fn plain(&self) -> Plain {
        let env = self.env();
        let txn = env.begin_ro().unwrap();
        let mut out = Plain::new();
        for name in txn.list_dbis().unwrap() {
            if name.starts_with(b"_sync") {
                continue;
            }
            let dbi = txn.open_dbi(&name).unwrap().unwrap();
            for item in txn.cursor(dbi).unwrap() {
                let (k, v) = item.unwrap();
                out.entry((name.clone(), k.to_vec()))
                    .or_default()
                    .push(v.to_vec());
            }
        }
        out
    }

    fn dbis(&self) -> Vec<Vec<u8>> {
        let env = self.env();
        let txn = env.begin_ro().unwrap();
        txn.list_dbis().unwrap()
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new(common::bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        common::assert_ok(&out, &args.join(" "));
    }
}

fn k(dbi: &str, key: &str) -> (Vec<u8>, Vec<u8>) {
    (dbi.as_bytes().to_vec(), key.as_bytes().to_vec())
}

#[test]
fn shadow_mode_converges_with_deletes_and_dupsort() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Node::new(dir.path(), "a", &bucket);
    let b = Node::new(dir.path(), "b", &bucket);
    a.write(
        "records",
        0,
        &[("www", Some("192.0.2.1")), ("mail", Some("192.0.2.2"))],
    );
    a.write("ds", MDB_DUPSORT, &[("k", Some("v1")), ("k", Some("v2"))]);
    b.write("records", 0, &[("ftp", Some("192.0.2.3"))]);
    b.write("ds", MDB_DUPSORT, &[("k", Some("v3"))]);
    for n in [&a, &b, &a] {
        n.run(&["sync", "--only-once"]);
    }
    assert_eq!(a.plain(), b.plain());
    let p = a.plain();
    assert_eq!(
        p[&k("ds", "k")],
        [b"v1".to_vec(), b"v2".to_vec(), b"v3".to_vec()]
    );
    assert_eq!(p.len(), 4);
    assert!(a.dbis().contains(&b"_sync_shadow_records".to_vec()));

    // A change and a delete on b while syncing runs reach a.
    b.run(&["sync", "--only-once"]);
    b.write("records", 0, &[("www", Some("192.0.2.99")), ("mail", None)]);
    b.run(&["sync", "--only-once"]);
    a.run(&["sync", "--only-once"]);
    let p = a.plain();
    assert_eq!(p[&k("records", "www")], [b"192.0.2.99".to_vec()]);
    assert!(!p.contains_key(&k("records", "mail")));
    assert_eq!(a.plain(), b.plain());

    // drop-shadow removes every _sync DBI and nothing else
    a.run(&["drop-shadow"]);
    assert!(a.dbis().iter().all(|d| !d.starts_with(b"_sync")));
    assert_eq!(a.plain(), b.plain());
}

#[test]
fn migrate_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::new(dir.path(), "m", &dir.path().join("bucket"));
    let hdr = |ts: u64, txn: u64, flags: u8, app: &str| {
        let mut v = Vec::new();
        header::write_header(&mut v, ts, txn, flags, false);
        v.extend_from_slice(app.as_bytes());
        v
    };
    {
        let env = n.env();
        let mut txn = env.begin_rw().unwrap();
        let src = txn.create_dbi(b"_sync_shadow_records", 0).unwrap();
        let dst = txn.create_dbi(b"records_v5", 0).unwrap();
        txn.put(src, b"newer", &hdr(500, 1, 0, "x")).unwrap();
        txn.put(src, b"older", &hdr(100, 1, 0, "x")).unwrap();
        txn.put(src, b"gone", &hdr(700, 1, 1, "")).unwrap();
        txn.put(src, b"old-style-gone", &600u64.to_be_bytes())
            .unwrap();
        txn.put(dst, b"newer", &hdr(200, 1, 0, "v")).unwrap();
        txn.put(dst, b"older", &hdr(300, 1, 0, "v")).unwrap();
        txn.commit().unwrap();
    }
    n.run(&[
        "experimental",
        "migrate-timestamps",
        "--database",
        "main",
        "--src-dbi",
        "_sync_shadow_records",
        "--dst-dbi",
        "records_v5",
        "--add-delete-entries",
    ]);
    let env = n.env();
    let txn = env.begin_ro().unwrap();
    let t = txn.id(); // the migration's own transaction
    let dst = txn.open_dbi(b"records_v5").unwrap().unwrap();
    let get = |key: &str| {
        header::parse(txn.get(dst, key.as_bytes()).unwrap().unwrap())
            .map(|(h, a)| (h.timestamp, h.txn_id, h.flags, a.to_vec()))
            .unwrap()
    };
    assert_eq!(get("newer"), (500, t, 0, b"v".to_vec()));
    assert_eq!(get("older"), (300, 1, 0, b"v".to_vec()));
    assert_eq!(get("gone"), (700, t, 1, vec![]));
    assert_eq!(get("old-style-gone"), (600, t, 1, vec![]));
    // the same source and destination is refused; a missing source can be tolerated
    let out = Command::new(common::bin())
        .arg("-c")
        .arg(&n.config)
        .args([
            "experimental",
            "migrate-timestamps",
            "-d",
            "main",
            "--src-dbi",
            "x",
            "--dst-dbi",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be the same"));
    drop(txn);
    n.run(&[
        "experimental",
        "migrate-timestamps",
        "-d",
        "main",
        "--src-dbi",
        "absent",
        "--dst-dbi",
        "records_v5",
        "--ignore-src-dbi-not-present",
    ]);
}

#[test]
fn refusals_name_the_dbi() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let n = Node::new(dir.path(), "n", &bucket);
    // a DUPSORT DBI without dupsort_hack
    let cfg = std::fs::read_to_string(&n.config)
        .unwrap()
        .replace("dupsort_hack: true", "dupsort_hack: false");
    std::fs::write(&n.config, cfg).unwrap();
    n.write("dups", MDB_DUPSORT, &[("k", Some("1")), ("k", Some("2"))]);
    let out = n.sync_once_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dupsort db \"dups\" found and dupsort_hack disabled"),
        "{err}"
    );
}

/// A format 2 snapshot cannot create a missing DBI in shadow mode (its flags were the shadow's)
/// unless `override_create_flags` says how.
#[test]
fn old_format_snapshots_need_override_flags_to_create_dbis() {
    use lightningstream::snapshot::encode::{GzipWriter, SnapshotWriter, kv_field_len};
    use lightningstream::snapshot::{DbiInfo, KvRef, Meta};
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let kv = KvRef {
        key: b"k",
        value: b"v",
        timestamp_nano: 5,
        flags: 0,
    };
    let mut w =
        SnapshotWriter::with_versions(GzipWriter::new(Vec::new()), &Meta::default(), 2, 0).unwrap();
    w.begin_dbi(
        &DbiInfo {
            name: b"newdbi".to_vec(),
            ..Default::default()
        },
        kv_field_len(&kv),
    )
    .unwrap();
    w.write_kv(&kv).unwrap();
    w.end_dbi().unwrap();
    let bytes = w.finish().unwrap().finish().unwrap();
    std::fs::write(
        bucket.join("main__old__20230101-000000-000000000__GX.pb.gz"),
        bytes,
    )
    .unwrap();

    let n = Node::new(dir.path(), "n", &bucket);
    let out = n.sync_once_output();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("cannot safely create it from a formatVersion=2 snapshot"),
        "{log}"
    );
    assert!(!n.dbis().contains(&b"newdbi".to_vec()));

    let m = Node::new(dir.path(), "m", &bucket);
    let cfg = std::fs::read_to_string(&m.config).unwrap().replace(
        "    dupsort_hack: true\n",
        "    dupsort_hack: true\n    dbi_options:\n      newdbi: {override_create_flags: 0}\n",
    );
    std::fs::write(&m.config, cfg).unwrap();
    m.run(&["sync", "--only-once"]);
    assert_eq!(m.plain()[&k("newdbi", "k")], [b"v".to_vec()]);
}
