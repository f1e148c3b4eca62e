//! Point-in-time restore against a real daemon: an instance with deltas, a cleaner and
//! retention writes changes (puts and deletes) while its LMDB is dumped after each stored
//! object; `restore --at` each recorded moment must rebuild exactly that dump, also after a
//! cleaner with the Go rules and no idea of retention has cleaned the bucket. Then the error
//! cases (no retention, times outside the window, a missing or corrupt retained object, an
//! existing target) and `--into-live`. The pure planner has unit tests in the library.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, Dump, Instance, assert_ok, wait_for};
use lightningstream::core::display::rfc3339_nano;
use lightningstream::storage::Storage;
use lightningstream::storage::fs::FsStorage;
use lightningstream::syncer::cleaner::{Cleaner, run_once};

const T: Duration = Duration::from_secs(60);

fn now_ns() -> u64 {
    lightningstream::base::now_ns() as u64
}

fn instance(dir: &Path, bucket: &Path) -> Instance {
    let storage = format!(
        "storage:\n  type: fs\n  options:\n    root_path: {}\n  cleanup: {{enabled: true, interval: 200ms, \
         must_keep_interval: 1s, remove_old_instances_interval: 168h}}\n\
         deltas: {{enabled: true, full_snapshot_interval: 1h, max_deltas: 4}}\n\
         retention: {{all: 24h, hourly: 7d}}\n",
        bucket.display()
    );
    Instance::with_storage(dir, "a", &storage, "100ms")
}

/// The highest transaction an object name of instance `a` says it covers (`__T<n>`), over the
/// bucket and the retained prefix.
fn covered(bucket: &Path) -> u64 {
    let mut best = 0;
    for d in [bucket.to_path_buf(), bucket.join("_retained")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("main__a__") {
                continue;
            }
            if let Some(t) = n
                .split("__")
                .filter_map(|p| p.strip_prefix('T'))
                .filter_map(|p| p.split('.').next()?.parse::<u64>().ok())
                .last()
            {
                best = best.max(t);
            }
        }
    }
    best
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("main__"))
        .collect();
    v.sort();
    v
}

fn restore(i: &Instance, args: &[&str]) -> std::process::Output {
    let mut a = vec!["restore"];
    a.extend_from_slice(args);
    i.command(&a).output().unwrap()
}

fn restored_dump(i: &Instance, path: &Path) -> Dump {
    Instance::from_parts("restored", path.to_path_buf(), i.config.clone()).dump()
}

/// One step of the writing run: a few puts, a change, a delete.
fn write_step(a: &Instance, step: usize) {
    let ts = now_ns();
    let k1 = format!("k{step:03}");
    let prev = format!("k{:03}", step.saturating_sub(1));
    let v = format!("value {step}");
    let mut entries: Vec<(&str, Option<&str>, u64)> = vec![
        (k1.as_str(), Some(v.as_str()), ts),
        ("shared", Some(v.as_str()), ts),
    ];
    if step % 3 == 2 {
        entries.push((prev.as_str(), None, ts));
    }
    a.write("records", &entries);
    if step % 4 == 1 {
        a.write("other", &[("x", Some(v.as_str()), ts)]);
    }
}

#[test]
fn restore_rebuilds_every_recorded_moment_and_survives_cleaners() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = instance(dir.path(), &bucket);
    a.write("records", &[("seed", Some("seed"), now_ns())]);
    let log = dir.path().join("a.log");
    let daemon = Daemon::start(&a, "sync", &log);

    // Write, wait until an object covers the write, then record the moment and the dump.
    let mut moments: Vec<(u64, Dump)> = Vec::new();
    for step in 0..12 {
        write_step(&a, step);
        let txn = a.last_txn_id();
        wait_for("an object covering the write", T, || {
            covered(&bucket) >= txn
        });
        moments.push((now_ns(), a.dump()));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Everything retained, and the bucket cleaned meanwhile (deltas and full snapshots gone).
    let retained = bucket.join("_retained");
    wait_for("the cleaner to retain and clean", T, || {
        let kept = names(&retained);
        let live = names(&bucket);
        covered(&retained) >= a.last_txn_id() && live.len() < kept.len()
    });
    drop(daemon);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("Retention stats"), "{log_text}");

    let check_all = |label: &str| {
        for (n, (at, dump)) in moments.iter().enumerate() {
            let out = dir.path().join(format!("{label}-{n}.lmdb"));
            let at = rfc3339_nano(*at as i64);
            let o = restore(&a, &["--at", &at, "--to", out.to_str().unwrap()]);
            assert_ok(&o, &format!("restore --at {at}"));
            assert_eq!(&restored_dump(&a, &out), dump, "{label}: moment {n} ({at})");
        }
    };
    check_all("first");

    // A cleaner with the Go rules and no retention (a Go instance's, or ours without the
    // setting) cleaning the bucket to the bone: the retained objects are not even listed.
    let fs = FsStorage::new(&bucket).unwrap();
    let before = names(&retained);
    let mut go = Cleaner::new(Duration::ZERO, Duration::ZERO);
    go.committed_handle()
        .lock()
        .unwrap()
        .insert("a".into(), i64::MAX);
    for _ in 0..3 {
        run_once(&mut go, &fs, "main", None).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // At most the newest full snapshot is left (also gone as a stale instance's, with these
    // settings), and deltas after it, which no cleaner removes.
    let fulls = names(&bucket)
        .into_iter()
        .filter(|n| !n.ends_with(".delta.pb.gz"))
        .count();
    assert!(fulls <= 1, "{:?}", names(&bucket));
    assert!(
        fs.list("main__")
            .unwrap()
            .iter()
            .all(|o| !o.name.contains("retained"))
    );
    assert_eq!(names(&retained), before);
    check_all("after-go-cleaner");

    // --dry-run and --instance: what would be read, nothing written.
    let (at, _) = &moments[5];
    let at = rfc3339_nano(*at as i64);
    let o = restore(&a, &["--at", &at, "--dry-run", "--instance", "a"]);
    assert_ok(&o, "dry run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("# would read") && text.contains("entries"),
        "{text}"
    );
    let o = restore(&a, &["--at", &at, "--dry-run", "--instance", "nobody"]);
    assert!(!o.status.success());

    // The space retention uses, per db.
    let o = a
        .command(&["snapshots", "list", "--retained", "-l"])
        .output()
        .unwrap();
    assert_ok(&o, "snapshots list --retained");
    let text = String::from_utf8_lossy(&o.stdout);
    let bytes: u64 = std::fs::read_dir(&retained)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let summary = format!("# retained main: {} objects, {bytes} bytes", before.len());
    assert!(text.contains(&summary), "{summary:?} not in\n{text}");

    errors(&a, dir.path(), &retained, &moments);
    into_live(&a, &moments);
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn errors(a: &Instance, dir: &Path, retained: &Path, moments: &[(u64, Dump)]) {
    let out = dir.join("err.lmdb");
    let to = out.to_str().unwrap();
    // In the future, before anything was retained, beyond every window.
    let o = restore(a, &["--at", "2099-01-01T00:00:00Z", "--to", to]);
    assert!(stderr(&o).contains("in the future"), "{}", stderr(&o));
    let o = restore(a, &["--at", "1h", "--to", to]);
    assert!(
        stderr(&o).contains("before the oldest retained object"),
        "{}",
        stderr(&o)
    );
    let o = restore(a, &["--at", "30d", "--to", to]);
    assert!(
        stderr(&o).contains("outside the retained window") && stderr(&o).contains("each UTC hour"),
        "{}",
        stderr(&o)
    );
    let o = restore(a, &["--at", "yesterday-ish", "--to", to]);
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
    // An existing target is never touched.
    std::fs::write(&out, b"precious").unwrap();
    let at = rfc3339_nano(moments[3].0 as i64);
    let o = restore(a, &["--at", &at, "--to", to]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    std::fs::remove_file(&out).unwrap();

    // No retention configured.
    let plain = dir.join("plain.yaml");
    let cfg = std::fs::read_to_string(&a.config).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("retention:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&plain, cfg).unwrap();
    let o = std::process::Command::new(common::bin())
        .args([
            "-c",
            plain.to_str().unwrap(),
            "restore",
            "--at",
            &at,
            "--to",
            to,
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("no retention configured"),
        "{}",
        stderr(&o)
    );

    // A corrupt object in the range: named, and no LMDB left behind.
    let last = rfc3339_nano(moments.last().unwrap().0 as i64);
    let plan = restore(a, &["--at", &last, "--dry-run"]);
    let listed = String::from_utf8_lossy(&plan.stdout).into_owned();
    let planned: Vec<String> = listed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(1))
        .map(String::from)
        .collect();
    let victim = planned.last().expect("objects in the plan").clone();
    let path = retained.join(&victim);
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let o = restore(a, &["--at", &last, "--to", to]);
    assert!(
        stderr(&o).contains(&victim) && stderr(&o).contains("corrupt"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists() && !PathBuf::from(format!("{to}-lock")).exists());
    std::fs::write(&path, &good).unwrap();
    // Missing: a delta inside the chain leaves a gap, named by its neighbours. A moment whose
    // plan has a delta before its last object:
    let (last, middle) = moments
        .iter()
        .rev()
        .find_map(|(at, _)| {
            let at = rfc3339_nano(*at as i64);
            let o = restore(a, &["--at", &at, "--dry-run"]);
            let planned: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split('\t').nth(1))
                .map(String::from)
                .collect();
            let middle = planned
                .iter()
                .rev()
                .skip(1)
                .find(|n| n.ends_with(".delta.pb.gz"))?
                .clone();
            Some((at, middle))
        })
        .expect("a moment with two deltas");
    let path = retained.join(&middle);
    let good = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let o = restore(a, &["--at", &last, "--to", to]);
    assert!(
        !o.status.success() && stderr(&o).contains("no retained object holds"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    std::fs::write(&path, &good).unwrap();
}

/// `--into-live`: keys of one prefix back to a recorded moment, as new writes.
fn into_live(a: &Instance, moments: &[(u64, Dump)]) {
    let (at, then) = &moments[4];
    let at_s = rfc3339_nano(*at as i64);
    let before = a.dump();
    let t0 = now_ns();
    // Only keys starting with "k0" ("k0" in hex); "shared" and "seed" stay as they are.
    let args = [
        "--at",
        &at_s,
        "--dbi",
        "records",
        "--key-prefix",
        "6b30",
        "--into-live",
    ];
    let o = restore(a, &[&args[..], &["--dry-run"]].concat());
    assert_ok(&o, "into-live dry run");
    assert_eq!(a.dump(), before, "a dry run wrote");
    let o = restore(a, &args);
    assert_ok(&o, "into-live");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("keys restored"), "{text}");
    let after = a.dump();
    let mut changed = 0;
    for ((dbi, k), e) in &after {
        let then_e = then.get(&(dbi.clone(), k.clone()));
        if dbi == b"records" && k.starts_with(b"k0") {
            let live_then = then_e.filter(|e| e.flags & 1 == 0).map(|e| &e.value);
            let live_now = (e.flags & 1 == 0).then_some(&e.value);
            assert_eq!(live_now, live_then, "{}", String::from_utf8_lossy(k));
            if before.get(&(dbi.clone(), k.clone())) != Some(e) {
                assert!(e.ts >= t0, "rewritten with an old timestamp");
                changed += 1;
            }
        } else {
            assert_eq!(before.get(&(dbi.clone(), k.clone())), Some(e));
        }
    }
    assert!(changed > 0);
    // Running it again changes nothing.
    assert_ok(&restore(a, &args), "into-live again");
    assert_eq!(a.dump(), after);
}
