//! Long-running daemons as real processes: three instances converging through a real S3 server
//! after interleaved writes, deletes and conflicts on every instance; a daemon killed with SIGKILL
//! and restarted without losing the writes it had not sent; a receive-only instance that never
//! writes objects; a corrupt object that stops nobody; SIGTERM ending a daemon cleanly.

mod common;
#[path = "common/s3server.rs"]
mod s3server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Daemon, Dump, Entry, Instance, key, wait_for};

/// The newest write per key, ties to the lower value (tombstones have the empty value).
fn expected(writes: &[(String, Option<String>, u64)]) -> BTreeMap<String, Entry> {
    let mut want: BTreeMap<String, Entry> = BTreeMap::new();
    for (k, v, ts) in writes {
        let e = common::entry(*ts, v.as_deref());
        let better = match want.get(k) {
            None => true,
            Some(old) => e.ts > old.ts || (e.ts == old.ts && e.value < old.value),
        };
        if better {
            want.insert(k.clone(), e);
        }
    }
    want
}

fn records(d: &Dump) -> BTreeMap<String, Entry> {
    d.iter()
        .filter(|((dbi, _), _)| dbi == b"records")
        .map(|((_, k), v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
        .collect()
}

fn s3_storage(server: &s3server::S3Server) -> String {
    format!(
        "storage:\n  type: s3\n  options:\n    endpoint_url: {}\n    bucket: daemons\n    create_bucket: true\n    \
         access_key: {}\n    secret_key: '{}'\n",
        server.endpoint(),
        s3server::ACCESS_KEY,
        s3server::SECRET_KEY
    )
}

#[test]
fn three_daemons_converge_and_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = s3server::S3Server::start(&dir.path().join("s3"));
    let storage = s3_storage(&server);
    let names = ["a", "b", "c"];
    let inst: Vec<Instance> = names
        .iter()
        .map(|n| Instance::with_storage(dir.path(), n, &storage, "100ms"))
        .collect();
    let log = |n: &str, round: u32| dir.path().join(format!("{n}-{round}.log"));
    let mut daemons: Vec<Option<Daemon>> = inst
        .iter()
        .map(|i| Some(Daemon::start(i, "sync", &log(&i.name, 0))))
        .collect();

    let mut writes: Vec<(String, Option<String>, u64)> = Vec::new();
    let mut record = |i: &Instance, k: &str, v: Option<&str>, ts: u64| {
        i.write("records", &[(k, v, ts)]);
        writes.push((k.to_string(), v.map(String::from), ts));
    };
    for round in 0..6u64 {
        for (n, i) in inst.iter().enumerate() {
            let ts = 1_000 + round * 10 + n as u64;
            record(
                i,
                &format!("own-{}-{round}", i.name),
                Some(&format!("{}{round}", i.name)),
                ts,
            );
            // everybody fights over the same keys; equal timestamps on "tie"
            record(i, "shared", Some(&format!("shared-{}-{round}", i.name)), ts);
            record(i, "tie", Some(&format!("tie-{}", i.name)), 5_000);
            if round % 2 == 1 {
                record(i, &format!("own-{}-{}", i.name, round - 1), None, ts + 1);
            }
        }
        if round == 2 {
            // b dies without warning, misses a round of remote changes and writes alone
            daemons[1] = None;
            record(&inst[1], "written-while-down", Some("b-only"), 4_000);
        }
        if round == 4 {
            daemons[1] = Some(Daemon::start(&inst[1], "sync", &log("b", 1)));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let want = expected(&writes);
    wait_for(
        "three identical LMDBs with every write",
        Duration::from_secs(60),
        || inst.iter().all(|i| records(&i.dump()) == want),
    );
    assert_eq!(
        want["written-while-down"],
        common::entry(4_000, Some("b-only"))
    );
    assert_eq!(want["tie"], common::entry(5_000, Some("tie-a")));
    drop(daemons);
}

#[test]
fn receive_only_corrupt_objects_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    let r = Instance::new(dir.path(), "r", &bucket, "100ms");
    a.write("records", &[("k", Some("from-a"), 10)]);
    r.write("records", &[("local", Some("never-sent"), 10)]);
    let da = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    let mut dr = Daemon::start(&r, "receive", &dir.path().join("r.log"));
    wait_for("a's data on the receiver", Duration::from_secs(20), || {
        r.dump().contains_key(&key("records", "k"))
    });
    // garbage in the bucket stops nobody
    std::fs::write(
        bucket.join("main__evil__20260101-000000-000000000__GX.pb.gz"),
        b"garbage",
    )
    .unwrap();
    a.write("records", &[("k2", Some("after-garbage"), 20)]);
    wait_for(
        "a's later write on the receiver",
        Duration::from_secs(20),
        || r.dump().contains_key(&key("records", "k2")),
    );
    // The receiver notices the local write (it logs skipping the store) and still stores
    // nothing.
    let skipped = || {
        std::fs::read_to_string(dir.path().join("r.log"))
            .unwrap_or_default()
            .matches("Snapshot store skipped")
            .count()
    };
    let before = skipped();
    r.write("records", &[("local2", Some("never-sent"), 30)]);
    wait_for(
        "the receiver to skip storing its local change",
        Duration::from_secs(20),
        || skipped() > before,
    );
    let objects: Vec<String> = std::fs::read_dir(&bucket)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        objects.iter().all(|o| !o.starts_with("main__r__")),
        "{objects:?}"
    );
    assert!(!a.dump().contains_key(&key("records", "local")));
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(
        log.contains("main__evil__") && log.contains("corrupt"),
        "{log}"
    );

    // SIGTERM: a clean exit 0 within a few seconds
    let t0 = Instant::now();
    send_signal(dr.0.id(), "TERM");
    let status = loop {
        if let Some(s) = dr.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "receiver did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(da);
}

/// `kill -s SIG PID` with the kill(1) command, which keeps `unsafe` out of the tests.
fn send_signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn wait_for_marker_file() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    a.write("records", &[("k", Some("v"), 10)]);
    let log = std::fs::File::create(dir.path().join("a.log")).unwrap();
    let _d = Daemon(
        a.command(&[
            "sync",
            "--wait-for-marker-file",
            "go-ahead",
            "--log-level",
            "debug",
        ])
        .stderr(log)
        .spawn()
        .unwrap(),
    );
    let snapshots = || common::count_objects(&bucket, "main__");
    // Three looks for the marker (100 ms apart) that found nothing, and nothing synced.
    let misses = || {
        std::fs::read_to_string(dir.path().join("a.log"))
            .unwrap_or_default()
            .matches("not found yet")
            .count()
    };
    wait_for(
        "three looks for the marker",
        Duration::from_secs(20),
        || misses() >= 3,
    );
    assert_eq!(snapshots(), 0, "synced before the marker existed");
    std::fs::write(bucket.join("go-ahead"), b"").unwrap();
    wait_for(
        "the first snapshot after the marker",
        Duration::from_secs(20),
        || snapshots() > 0,
    );
}

/// A large merge in many short write transactions: the merged data is complete, our own
/// slices are not taken for local changes (no snapshot follows), and a write made by another
/// process while the merge runs is.
#[test]
fn sliced_merge_is_not_a_local_change() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let b = Instance::new(dir.path(), "b", &bucket, "100ms");
    let keys: Vec<String> = (0..30_000).map(|i| format!("key-{i:06}")).collect();
    let entries: Vec<(&str, Option<&str>, u64)> = keys
        .iter()
        .map(|k| (k.as_str(), Some("value"), 1000))
        .collect();
    b.write("records", &entries);
    b.sync_once();
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&a.config)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        b"merge_lock_duration: 1ms\nmerge_release_duration: 1ms\n",
    )
    .unwrap();
    let log = dir.path().join("a.log");
    let _d = Daemon::start(&a, "sync", &log);
    wait_for("b's snapshot merged", Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Loaded remote update")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let slices: u64 = text
        .split("write_transactions=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(slices > 1, "expected several write transactions: {text}");
    assert_eq!(records(&a.dump()).len(), 30_000);
    let own = || common::count_objects(&bucket, "main__a__");
    // Start-up completes only after a local check that follows the merge: had the merge's
    // slices looked like a local change, that check would have stored a snapshot first.
    wait_for("a's start-up to complete", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Start-up complete")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(own(), 0, "a snapshot was stored for a merge alone:\n{text}");
    // A real local change is snapshotted.
    a.write("records", &[("local", Some("x"), 5000)]);
    wait_for(
        "a's snapshot of its own change",
        Duration::from_secs(20),
        || own() > 0,
    );
}

/// A process killed inside a read transaction leaves its reader slot behind; while another
/// process (PowerDNS) keeps the LMDB open, LMDB never clears it by itself, the slot pins old
/// pages and the file grows with every write until the map is full. The daemon clears such
/// slots when it opens the LMDB. (Found by tests/chaos.sh: files of 200+ MB for 800 keys.)
#[test]
fn stale_reader_of_a_killed_process_is_cleared() {
    use lightningstream::lmdb::{Env, EnvOptions, Txn};
    let opts = EnvOptions {
        no_subdir: true,
        create: true,
        map_size: 64 << 20,
        ..Default::default()
    };
    // The child: open the LMDB, start a read transaction, say so, and wait to be killed.
    if let Ok(path) = std::env::var("LS_TEST_HOLD_READER") {
        let env = Env::open(std::path::Path::new(&path), &opts).unwrap();
        let _txn = env.begin_ro().unwrap();
        println!("holding a reader");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::new(dir.path(), "a", &dir.path().join("bucket"), "100ms");
    a.write("records", &[("k", Some("v"), 10)]);
    // The application that keeps the LMDB open all along.
    let env = Env::open(&a.db, &opts).unwrap();
    let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stale_reader_of_a_killed_process_is_cleared",
            "--nocapture",
        ])
        .env("LS_TEST_HOLD_READER", &a.db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("holding a reader") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "the reader process ended early"
        );
    }
    holder.kill().unwrap();
    holder.wait().unwrap();

    a.sync_once();
    let size = || std::fs::metadata(&a.db).unwrap().len();
    let before = size();
    let value = vec![b'x'; 3000];
    for n in 0..300u64 {
        let mut txn = env.begin_rw().unwrap();
        let d = txn.create_dbi(b"records", 0).unwrap();
        let mut v = Vec::new();
        lightningstream::core::header::write_header(&mut v, 100 + n, txn.id(), 0, false);
        v.extend_from_slice(&value);
        txn.put(d, b"k", &v).unwrap();
        txn.commit().unwrap();
    }
    // With the dead reader's slot still there, every transaction takes new pages (> 1 MB).
    let grown = size() - before;
    assert!(
        grown < 256 << 10,
        "the LMDB grew by {grown} bytes over 300 rewrites of one key"
    );
}
