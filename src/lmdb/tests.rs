//! The wrapper against real LMDB files: DBI table rules, resizing, cursors, error mapping.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn opts() -> EnvOptions {
    EnvOptions {
        no_subdir: true,
        create: true,
        map_size: 1 << 20,
        ..Default::default()
    }
}

#[test]
fn txn_ids_and_dbis() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::open(&dir.path().join("sub/db.lmdb"), &opts()).unwrap();
    assert_eq!(env.info().unwrap().last_txn_id, 0);
    {
        let mut t = env.begin_rw().unwrap();
        assert_eq!(t.id(), 1);
        let b = t.create_dbi(b"b", MDB_DUPSORT | MDB_DUPFIXED).unwrap();
        let i = t.create_dbi(b"\xffraw", MDB_INTEGERKEY).unwrap();
        let a = t.create_dbi(b"a", 0).unwrap();
        t.put(a, b"k2", b"v2").unwrap();
        t.put(a, b"k1", b"v1").unwrap();
        t.put(b, b"d", b"1").unwrap();
        t.put(b, b"d", b"2").unwrap();
        t.put(i, &7u32.to_ne_bytes(), b"seven").unwrap();
        t.commit().unwrap();
    }
    assert_eq!(env.info().unwrap().last_txn_id, 1);
    // An empty write transaction does not advance the ID.
    env.begin_rw().unwrap().commit().unwrap();
    assert_eq!(env.info().unwrap().last_txn_id, 1);

    let t = env.begin_ro().unwrap();
    assert_eq!(t.id(), 1);
    assert_eq!(
        t.list_dbis().unwrap(),
        [b"a".to_vec(), b"b".to_vec(), b"\xffraw".to_vec()]
    );
    let a = t.open_dbi(b"a").unwrap().unwrap();
    let b = t.open_dbi(b"b").unwrap().unwrap();
    let i = t.open_dbi(b"\xffraw").unwrap().unwrap();
    assert!(t.open_dbi(b"missing").unwrap().is_none());
    assert_eq!(t.dbi_flags(a).unwrap(), 0);
    assert_eq!(t.dbi_flags(b).unwrap(), MDB_DUPSORT | MDB_DUPFIXED);
    assert_eq!(t.dbi_flags(i).unwrap(), MDB_INTEGERKEY);
    assert_eq!(t.get(a, b"k1").unwrap(), Some(&b"v1"[..]));
    assert_eq!(t.get(a, b"nope").unwrap(), None);
    let all: Vec<_> = t.cursor(a).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all, [(&b"k1"[..], &b"v1"[..]), (&b"k2"[..], &b"v2"[..])]);
    let dups: Vec<_> = t.cursor(b).unwrap().map(|r| r.unwrap().1).collect();
    assert_eq!(dups, [b"1", b"2"]);
    let mut c = t.cursor(a).unwrap();
    assert_eq!(c.set_range(b"k15").unwrap(), Some((&b"k2"[..], &b"v2"[..])));
    assert_eq!(c.next_entry().unwrap(), None);
    assert_eq!(t.dbi_stat(a).unwrap().entries, 2);
    drop(c);
    drop(t);

    let mut t = env.begin_rw().unwrap();
    assert!(t.del(a, b"k1").unwrap());
    assert!(!t.del(a, b"k1").unwrap());
    t.drop_dbi(b, true).unwrap();
    t.commit().unwrap();
    let t = env.begin_ro().unwrap();
    assert_eq!(t.list_dbis().unwrap(), [b"a".to_vec(), b"\xffraw".to_vec()]);
}

#[test]
fn bad_input_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::open(&dir.path().join("db"), &opts()).unwrap();
    let mut t = env.begin_rw().unwrap();
    assert!(t.create_dbi(b"odd", 0x8000).is_err());
    assert!(matches!(
        t.create_dbi(b"a\0b", 0),
        Err(LmdbError::BadName { .. })
    ));
    let d = t.create_dbi(b"d", 0).unwrap();
    assert!(matches!(
        t.put(d, &[b'k'; 512], b"v"),
        Err(LmdbError::BadKey { len: 512, .. })
    ));
    assert!(matches!(
        t.put(d, b"", b"v"),
        Err(LmdbError::BadKey { len: 0, .. })
    ));
    t.put(d, &[b'k'; 511], b"v").unwrap();
    assert!(t.get(d, &[0; 600]).is_err());
    // A tiny map fills up with a recognisable error.
    let big = vec![7u8; 64 << 10];
    let full = (0..100u32)
        .find_map(|i| t.put(d, &i.to_be_bytes(), &big).err())
        .unwrap();
    assert!(full.is_map_full(), "{full}");
}

#[test]
fn one_env_per_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let a = Env::open(&path, &opts()).unwrap();
    let b = Env::open(&dir.path().join(".").join("db"), &opts()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let c = Env::open(&dir.path().join("link/db"), &opts()).unwrap();
    assert!(Arc::ptr_eq(&a, &c));
    drop((a, b, c));
    let d = Env::open(&path, &opts()).unwrap();
    assert_eq!(d.info().unwrap().last_txn_id, 0);
}

#[test]
fn masks_and_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let o = EnvOptions {
        file_mask: 0o600,
        dir_mask: 0o700,
        ..opts()
    };
    let path = dir.path().join("new/dir/db");
    let _env = Env::open(&path, &o).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("new/dir")), 0o700 & !umask());
    // A directory-style LMDB (data.mdb + lock.mdb inside `path`).
    let sub = dir.path().join("subdir-env");
    let env = Env::open(
        &sub,
        &EnvOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(sub.join("data.mdb").exists());
    assert_eq!(env.info().unwrap().map_size, 1 << 30);
    // Without create, a missing LMDB is an error naming the path.
    let e = Env::open(&dir.path().join("absent/db"), &EnvOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("absent"), "{e}");
}

/// Creates DBIs a, b, c in a fresh LMDB and reopens it, so that no handle is open yet.
fn env_with_unopened_dbis(dir: &Path) -> Arc<Env> {
    let path = dir.join("db");
    {
        let env = Env::open(&path, &opts()).unwrap();
        let mut t = env.begin_rw().unwrap();
        for n in [b"a", b"b", b"c"] {
            let d = t.create_dbi(n, 0).unwrap();
            t.put(d, b"k", n).unwrap();
        }
        t.commit().unwrap();
    }
    Env::open(&path, &opts()).unwrap()
}

#[test]
fn dbi_table_rules() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_with_unopened_dbis(dir.path());
    let t1 = env.begin_ro().unwrap();
    let t2 = env.begin_ro().unwrap();
    let a = t1.open_dbi(b"a").unwrap().unwrap();
    // Two live txns adding handles could get the same slot for different names.
    let e = t2.open_dbi(b"b").unwrap_err();
    assert!(matches!(e, LmdbError::DbiTableBusy { .. }), "{e}");
    drop(t1);
    // t2 began before `a` was published: its slot count does not include it.
    let e = t2.open_dbi(b"a").unwrap_err();
    assert!(matches!(e, LmdbError::DbiTableChanged { .. }), "{e}");
    drop(t2);
    let t3 = env.begin_ro().unwrap();
    assert_eq!(t3.open_dbi(b"a").unwrap(), Some(a));
    let b = t3.open_dbi(b"b").unwrap().unwrap();
    assert_ne!(a, b);
    assert_eq!(t3.get(a, b"k").unwrap(), Some(&b"a"[..]));
    assert_eq!(t3.get(b, b"k").unwrap(), Some(&b"b"[..]));
    drop(t3);
    // Published handles can be reopened by concurrent txns of one thread.
    let t4 = env.begin_ro().unwrap();
    let t5 = env.begin_ro().unwrap();
    assert_eq!(t4.open_dbi(b"a").unwrap(), Some(a));
    assert_eq!(t5.open_dbi(b"b").unwrap(), Some(b));
    drop((t4, t5));

    // Another thread waits for the owner to end instead of failing.
    let mut w = env.begin_rw().unwrap();
    w.create_dbi(b"new", 0).unwrap();
    let ended = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let t = env.begin_ro().unwrap();
            let c = t.open_dbi(b"c").unwrap().unwrap();
            assert!(ended.load(Ordering::SeqCst));
            t.get(c, b"k").unwrap().map(<[u8]>::to_vec)
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        ended.store(true, Ordering::SeqCst);
        w.abort();
        assert_eq!(reader.join().unwrap(), Some(b"c".to_vec()));
    });
}

#[test]
fn no_resize_under_a_live_txn() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::open(&dir.path().join("db"), &opts()).unwrap();
    let t = env.begin_ro().unwrap();
    assert!(!env.adopt_file_map_size().unwrap());
    drop(t);
    // Nothing grew the file's map, so there is nothing to adopt.
    assert!(!env.adopt_file_map_size().unwrap());
}

/// Whether this process holds an fcntl lock on `file`, per /proc/locks.
fn holds_lock(file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(file).unwrap().ino().to_string();
    let pid = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            f.len() > 5 && f[4] == pid && f[5].rsplit(':').next() == Some(ino.as_str())
        })
}

#[test]
fn reopen_racing_close_keeps_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let lockfile = dir.path().join("db-lock");
    drop(Env::open(&path, &opts()).unwrap());
    for _ in 0..20 {
        let env = Env::open(&path, &opts()).unwrap();
        let env = std::thread::scope(|s| {
            let opener = s.spawn(|| Env::open(&path, &opts()).unwrap());
            drop(env);
            opener.join().unwrap()
        });
        assert!(holds_lock(&lockfile), "lost the LMDB lock");
        drop(env);
        // The check can see a lock go.
        assert!(!holds_lock(&lockfile));
    }
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap_or(0o022)
}
