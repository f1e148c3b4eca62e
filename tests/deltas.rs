//! Deltas between real daemons sharing a directory bucket: chains merged in order (deletes
//! included, metrics checked), periodic full snapshots bridged and not downloaded again, a
//! missing or corrupt delta detected and repaired by the next full snapshot, the writer
//! restarted (also on an older copy of its LMDB), a bucket shared with Go-written snapshots and
//! a cleaner, shadow mode, three instances converging. The pure parts (names, chain planning,
//! the full or delta decision, the delta writer, the cleaner plan) have unit tests in the
//! library.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Daemon, Instance, count_objects, entry, free_port, get, key, promtool_check, shared_dir,
    wait_for,
};

const T: Duration = Duration::from_secs(30);

/// An instance with deltas on, after `max_deltas` deltas a full snapshot.
fn with_deltas(dir: &Path, name: &str, bucket: &Path, max_deltas: u32) -> Instance {
    let i = Instance::new(dir, name, bucket, "100ms");
    let mut cfg = std::fs::read_to_string(&i.config).unwrap();
    cfg.push_str(&format!(
        "deltas:\n  enabled: true\n  full_snapshot_interval: 1h\n  max_deltas: {max_deltas}\n"
    ));
    std::fs::write(&i.config, cfg).unwrap();
    i
}

/// A scratch directory with instances a and b sharing its bucket, deltas on.
fn pair(max_deltas: u32) -> (tempfile::TempDir, PathBuf, Instance, Instance) {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = with_deltas(dir.path(), "a", &bucket, max_deltas);
    let b = with_deltas(dir.path(), "b", &bucket, max_deltas);
    (dir, bucket, a, b)
}

/// Object names in the bucket of one instance, sorted.
fn objects(bucket: &Path, instance: &str) -> Vec<String> {
    let prefix = format!("main__{instance}__");
    let Ok(dir) = std::fs::read_dir(bucket) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    v.sort();
    v
}

fn deltas(bucket: &Path, instance: &str) -> Vec<String> {
    objects(bucket, instance)
        .into_iter()
        .filter(|n| n.ends_with(".delta.pb.gz"))
        .collect()
}

fn fulls(bucket: &Path, instance: &str) -> Vec<String> {
    objects(bucket, instance)
        .into_iter()
        .filter(|n| n.ends_with(".pb.gz") && !n.ends_with(".delta.pb.gz"))
        .collect()
}

/// Starts instance a's daemon on k0, then writes k1..=kN (timestamps 11..), waiting for the
/// delta of each.
fn start_with_deltas(a: &Instance, dir: &Path, bucket: &Path, n: u64) -> Daemon {
    a.write("records", &[("k0", Some("v"), 10)]);
    let d = Daemon::start(a, "sync", &dir.join("a.log"));
    wait_for("a's first snapshot", T, || fulls(bucket, "a").len() == 1);
    for i in 1..=n {
        a.write("records", &[(&format!("k{i}"), Some("v"), 10 + i)]);
        wait_for("a's delta", T, || deltas(bucket, "a").len() == i as usize);
    }
    d
}

fn has(i: &Instance, k: &str, ts: u64, v: Option<&str>) -> bool {
    i.dump().get(&key("records", k)) == Some(&entry(ts, v))
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn chain_of_deltas_with_deletes_propagates_in_order() {
    let (dir, bucket, a, b) = pair(100);
    let ports = [free_port(), free_port()];
    for (i, port) in [&a, &b].iter().zip(ports) {
        let mut cfg = std::fs::read_to_string(&i.config).unwrap();
        cfg.push_str(&format!("http:\n  address: 127.0.0.1:{port}\n"));
        std::fs::write(&i.config, cfg).unwrap();
    }
    let big = "x".repeat(200);
    a.write_filler("records", "fill", 2000, &big, 5);
    let _da = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    wait_for("initial data on b", T, || {
        has(&b, "fill01999", 5, Some(&big))
    });
    assert_eq!(fulls(&bucket, "a").len(), 1);

    // Each change, a delete among them, is one small delta continuing the chain.
    for n in 1..=5u64 {
        let v = format!("v{n}");
        a.write("records", &[("k", Some(&v), 100 + n)]);
        wait_for("a's change on b", T, || has(&b, "k", 100 + n, Some(&v)));
    }
    a.write("records", &[("k", None, 200), ("fill00000", None, 200)]);
    wait_for("a's deletes on b", T, || {
        has(&b, "k", 200, None) && has(&b, "fill00000", 200, None)
    });
    wait_for("identical LMDBs", T, || a.dump() == b.dump());
    let ds = deltas(&bucket, "a");
    assert!(ds.len() >= 6, "{ds:?}");
    assert_eq!(
        fulls(&bucket, "a").len(),
        1,
        "no full snapshot since start-up"
    );
    for d in &ds {
        let size = std::fs::metadata(bucket.join(d)).unwrap().len();
        assert!(size < 2048, "{d}: {size} bytes");
    }
    // The names chain: each delta starts where the previous one ended.
    let range = |n: &str| {
        let f = n.split("__F").nth(1).unwrap();
        let (from, rest) = f.split_once("__T").unwrap();
        let to = rest.split_once('.').unwrap().0;
        (from.parse::<u64>().unwrap(), to.parse::<u64>().unwrap())
    };
    for w in ds.windows(2) {
        assert_eq!(range(&w[0]).1, range(&w[1]).0, "{w:?}");
    }
    // The delta metrics, in a valid exposition format.
    let metrics = |port| get(port, "/metrics").unwrap().1;
    let (ma, mb) = (metrics(ports[0]), metrics(ports[1]));
    let stored = format!(
        "lightningstream_deltas_stored_total{{lmdb=\"main\"}} {}",
        ds.len()
    );
    assert!(ma.contains(&stored), "{stored}:\n{ma}");
    let loaded = format!(
        "lightningstream_deltas_loaded_total{{instance=\"a\",lmdb=\"main\"}} {}",
        ds.len()
    );
    assert!(mb.contains(&loaded), "{loaded}:\n{mb}");
    assert!(
        !mb.contains("lightningstream_deltas_chain_gaps_total{"),
        "{mb}"
    );
    promtool_check(&ma);
    promtool_check(&mb);
    let lb = log(dir.path(), "b.log");
    assert!(lb.contains("kind=delta"), "{lb}");
    assert!(!lb.contains("Delta chain broken"), "{lb}");
    // b with deltas on stores deltas of what it merged (echoes) only when it changes itself.
    assert!(
        deltas(&bucket, "b").is_empty(),
        "{:?}",
        deltas(&bucket, "b")
    );
}

#[test]
fn periodic_full_snapshots_are_bridged_and_not_downloaded_again() {
    let (dir, bucket, a, b) = pair(2);
    a.write("records", &[("k0", Some("v"), 10)]);
    let _da = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    wait_for("k0 on b", T, || has(&b, "k0", 10, Some("v")));
    for n in 1..=4u64 {
        a.write("records", &[(&format!("k{n}"), Some("v"), 10 + n)]);
        wait_for("change on b", T, || {
            has(&b, &format!("k{n}"), 10 + n, Some("v"))
        });
    }
    // Start-up full, two deltas, then a bridging delta and a full snapshot of the same
    // transaction (max_deltas), and one more delta.
    let fs = fulls(&bucket, "a");
    assert_eq!((fs.len(), deltas(&bucket, "a").len()), (2, 4), "{fs:?}");
    let covered = fs[1]
        .split("__T")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap();
    assert!(
        deltas(&bucket, "a")[2].contains(&format!("__T{covered}.")),
        "{:?}",
        deltas(&bucket, "a")
    );
    // b followed the chain, so it took the second full snapshot without downloading it.
    let lb = log(dir.path(), "b.log");
    let downloaded = |name: &str| {
        lb.lines()
            .any(|l| l.contains("\"Snapshot downloaded\"") && l.contains(name))
    };
    assert!(downloaded(&fs[0]) && !downloaded(&fs[1]), "{lb}");
    assert!(lb.contains("not downloaded"), "{lb}");
    wait_for("identical LMDBs", T, || a.dump() == b.dump());
}

#[test]
fn missing_delta_falls_back_to_the_next_full_snapshot() {
    let (dir, bucket, a, b) = pair(4);
    let _da = start_with_deltas(&a, dir.path(), &bucket, 3);
    // The middle delta disappears before b ever sees it.
    let lost = deltas(&bucket, "a")[1].clone();
    std::fs::remove_file(bucket.join(&lost)).unwrap();
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    // b merges the chain up to the gap and the delta after it, but lacks the lost change,
    // and does not count a as loaded.
    wait_for("b past the gap", T, || has(&b, "k3", 13, Some("v")));
    assert!(has(&b, "k1", 11, Some("v")));
    assert!(!b.dump().contains_key(&key("records", "k2")));
    let ready = |l: &str| {
        l.lines().any(|l| {
            l.contains("\"No longer waiting for instance\"") && l.contains("other_instance=a")
        })
    };
    let lb = log(dir.path(), "b.log");
    assert!(lb.contains("Delta chain broken") && !ready(&lb), "{lb}");
    // The fourth delta, then the full snapshot that max_deltas calls for.
    a.write("records", &[("k4", Some("v"), 14)]);
    wait_for("a's fourth delta", T, || deltas(&bucket, "a").len() == 3);
    wait_for("k4 on b", T, || has(&b, "k4", 14, Some("v")));
    a.write("records", &[("k5", Some("v"), 15)]);
    wait_for("a's next full snapshot", T, || {
        fulls(&bucket, "a").len() == 2
    });
    wait_for("b repaired", T, || a.dump() == b.dump());
    assert!(has(&b, "k2", 12, Some("v")) && has(&b, "k5", 15, Some("v")));
    wait_for("a counted as loaded", T, || {
        ready(&log(dir.path(), "b.log"))
    });
    let la = log(dir.path(), "a.log");
    assert!(la.contains("reason=\"max_deltas reached\""), "{la}");
}

#[test]
fn corrupt_delta_is_reported_and_skipped() {
    let (dir, bucket, a, b) = pair(100);
    let _da = start_with_deltas(&a, dir.path(), &bucket, 2);
    let bad = deltas(&bucket, "a")[0].clone();
    std::fs::write(bucket.join(&bad), b"\x1f\x8b not really gzip").unwrap();
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    wait_for("the delta after it on b", T, || {
        has(&b, "k2", 12, Some("v"))
    });
    assert!(!b.dump().contains_key(&key("records", "k1")));
    let lb = log(dir.path(), "b.log");
    let reported = lb
        .lines()
        .any(|l| l.contains("marked as corrupt") && l.contains(&bad));
    assert!(reported && lb.contains("Delta chain broken"), "{lb}");
}

#[test]
fn restarted_writer_and_an_older_copy_of_its_lmdb() {
    let (dir, bucket, a, b) = pair(100);
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    a.write("records", &[("k1", Some("v"), 10)]);
    let da = Daemon::start(&a, "sync", &dir.path().join("a1.log"));
    wait_for("k1 on b", T, || has(&b, "k1", 10, Some("v")));
    a.write("records", &[("k2", Some("v"), 20)]);
    wait_for("k2 on b", T, || has(&b, "k2", 20, Some("v")));
    drop(da);
    let old = dir.path().join("old.lmdb");
    std::fs::copy(&a.db, &old).unwrap();
    let old_txn = a.last_txn_id();

    // Restart: a full snapshot first, then deltas whose txn IDs continue.
    let da = Daemon::start(&a, "sync", &dir.path().join("a2.log"));
    wait_for("a's start-up snapshot", T, || {
        fulls(&bucket, "a").len() == 2
    });
    for n in 3..=5u64 {
        a.write("records", &[(&format!("k{n}"), Some("v"), 10 * n)]);
        wait_for("change on b", T, || {
            has(&b, &format!("k{n}"), 10 * n, Some("v"))
        });
    }
    let high = a.last_txn_id();
    drop(da);

    // The LMDB is replaced by the older copy: its txn IDs are behind what a stored.
    std::fs::copy(&old, &a.db).unwrap();
    assert!(a.last_txn_id() < high);
    assert_eq!(a.last_txn_id(), old_txn);
    let before = fulls(&bucket, "a").len();
    let _da = Daemon::start(&a, "sync", &dir.path().join("a3.log"));
    // It takes its own newer data back from its chain in the bucket, then stores a full.
    wait_for("a's own data back", T, || has(&a, "k5", 50, Some("v")));
    wait_for("a full snapshot", T, || {
        fulls(&bucket, "a").len() == before + 1
    });
    a.write("records", &[("k6", Some("v"), 60), ("k1", None, 61)]);
    wait_for("k6 on b", T, || {
        has(&b, "k6", 60, Some("v")) && has(&b, "k1", 61, None)
    });
    wait_for("identical LMDBs", T, || a.dump() == b.dump());
    let la = log(dir.path(), "a3.log");
    assert!(la.contains("Loading update for own instance"), "{la}");
}

#[test]
fn mixed_bucket_with_go_snapshots_and_a_cleaner() {
    let Some(vectors) = shared_dir("vectors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    // A Go-written snapshot of instance b: keys such as alpha/"b-2rat".
    let go = "main__b__20261122-082123-776334390__GX.pb.gz";
    std::fs::copy(
        vectors.join("cases/native-disjoint/snapshots").join(go),
        bucket.join(go),
    )
    .unwrap();
    // r1 cleans, and writes a full snapshot after every two deltas.
    let r1 = with_deltas(dir.path(), "r1", &bucket, 2);
    let r2 = with_deltas(dir.path(), "r2", &bucket, 100);
    let cleanup = "storage:\n  cleanup:\n    enabled: true\n    interval: 1s\n    \
                   must_keep_interval: 1s\n    remove_old_instances_interval: 1000h\n";
    let cfg = std::fs::read_to_string(&r1.config).unwrap();
    std::fs::write(&r1.config, cfg.replacen("storage:\n", cleanup, 1)).unwrap();
    r1.write("records", &[("k0", Some("v"), 10)]);
    let _d1 = Daemon::start(&r1, "sync", &dir.path().join("r1.log"));
    let _d2 = Daemon::start(&r2, "sync", &dir.path().join("r2.log"));
    let go_key = (b"alpha".to_vec(), b"b-2rat".to_vec());
    wait_for("Go data on r2", T, || r2.dump().contains_key(&go_key));
    for n in 1..=4u64 {
        r1.write("records", &[(&format!("k{n}"), Some("v"), 10 + n)]);
        wait_for("change on r2", T, || {
            has(&r2, &format!("k{n}"), 10 + n, Some("v"))
        });
    }
    wait_for("identical LMDBs", T, || r1.dump() == r2.dump());
    // Start-up full, two deltas, a full, one delta: the cleaner removes the superseded
    // deltas and the older full snapshot, and leaves Go's snapshot alone.
    wait_for("superseded objects cleaned", T, || {
        deltas(&bucket, "r1").len() == 1 && fulls(&bucket, "r1").len() == 1
    });
    assert!(bucket.join(go).exists());
    assert_eq!(count_objects(&bucket, "main__b__"), 1);
    let l1 = log(dir.path(), "r1.log");
    assert!(!l1.contains("Clean run failed"), "{l1}");
}

#[test]
fn three_instances_converge_with_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let inst: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| with_deltas(dir.path(), n, &bucket, 3))
        .collect();
    let _daemons: Vec<Daemon> = inst
        .iter()
        .map(|i| Daemon::start(i, "sync", &dir.path().join(format!("{}.log", i.name))))
        .collect();
    for round in 0..4u64 {
        // Each instance adds a key of its own and overwrites a shared one; c's write is newest.
        for (n, i) in inst.iter().enumerate() {
            let (own, val) = (
                format!("own-{}-{round}", i.name),
                format!("{}-{round}", i.name),
            );
            let ts = 100 * round + n as u64;
            i.write(
                "records",
                &[(&own, Some(&val), ts), ("conflict", Some(&val), ts)],
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    inst[1].write("records", &[("own-a-0", None, 1000)]);
    wait_for("three identical LMDBs", Duration::from_secs(60), || {
        let d = inst[0].dump();
        d.len() == 13 && inst[1].dump() == d && inst[2].dump() == d
    });
    let d = inst[0].dump();
    assert_eq!(d[&key("records", "conflict")], entry(302, Some("c-3")));
    assert_eq!(d[&key("records", "own-a-0")], entry(1000, None));
    for i in &inst {
        assert!(
            !deltas(&bucket, &i.name).is_empty(),
            "{} wrote no delta",
            i.name
        );
    }
}

/// Shadow mode: the shadow headers carry the txn IDs that select a delta's entries.
#[test]
fn shadow_mode_deltas() {
    use lightningstream::lmdb::{Env, EnvOptions, Txn};
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let mk = |name: &str| {
        let i = with_deltas(dir.path(), name, &bucket, 100);
        let cfg = std::fs::read_to_string(&i.config).unwrap();
        std::fs::write(
            &i.config,
            cfg.replace(
                "schema_tracks_changes: true",
                "schema_tracks_changes: false",
            ),
        )
        .unwrap();
        i
    };
    let (a, b) = (mk("a"), mk("b"));
    let env = |i: &Instance| {
        let o = EnvOptions {
            no_subdir: true,
            create: true,
            map_size: 64 << 20,
            ..Default::default()
        };
        Env::open(&i.db, &o).unwrap()
    };
    let put = |i: &Instance, k: &str, v: Option<&str>| {
        let e = env(i);
        let mut txn = e.begin_rw().unwrap();
        let d = txn.create_dbi(b"plain", 0).unwrap();
        match v {
            Some(v) => txn.put(d, k.as_bytes(), v.as_bytes()).unwrap(),
            None => {
                txn.del(d, k.as_bytes()).unwrap();
            }
        }
        txn.commit().unwrap();
    };
    let get = |i: &Instance, k: &str| -> Option<Vec<u8>> {
        let e = env(i);
        let txn = e.begin_ro().unwrap();
        let d = txn.open_dbi(b"plain").unwrap()?;
        txn.get(d, k.as_bytes()).unwrap().map(|v| v.to_vec())
    };
    put(&a, "start", Some("1"));
    let _da = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    let _db = Daemon::start(&b, "sync", &dir.path().join("b.log"));
    wait_for("start on b", T, || get(&b, "start").is_some());
    put(&a, "k", Some("v1"));
    wait_for("k on b", T, || {
        get(&b, "k").as_deref() == Some(b"v1".as_slice())
    });
    put(&a, "k", None);
    wait_for("k deleted on b", T, || get(&b, "k").is_none());
    put(&b, "from-b", Some("x"));
    wait_for("b's key on a", T, || get(&a, "from-b").is_some());
    assert!(
        deltas(&bucket, "a").len() >= 2,
        "{:?}",
        deltas(&bucket, "a")
    );
    assert_eq!(fulls(&bucket, "a").len(), 1);
    let lb = log(dir.path(), "b.log");
    assert!(
        lb.contains("kind=delta") && !lb.contains("Delta chain broken"),
        "{lb}"
    );
}
