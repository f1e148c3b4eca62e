//! Operations, end to end through the real binary: the status HTTP server (`/metrics` checked by
//! Prometheus's own `promtool`, `/healthz` turning warning, then failing while the S3 server is
//! down and healthy again when it returns, the `/` page), the cleaner against a real S3 server
//! (superseded snapshots removed, stale instances only once merged) and the sweeper in a daemon.

mod common;
#[path = "common/s3server.rs"]
mod s3server;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Instance, free_port, get, promtool_check, wait_for};

fn append_config(i: &Instance, extra: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&i.config)
        .unwrap();
    f.write_all(extra.as_bytes()).unwrap();
}

fn s3_storage(server: &s3server::S3Server, extra: &str) -> String {
    format!(
        "storage:\n  type: s3\n  options:\n    endpoint_url: {}\n    bucket: status\n    create_bucket: true\n    \
         access_key: {}\n    secret_key: '{}'\n{extra}",
        server.endpoint(),
        s3server::ACCESS_KEY,
        s3server::SECRET_KEY
    )
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn metrics_healthz_and_status_page_through_an_s3_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = s3server::S3Server::start(&dir.path().join("s3"));
    let a = Instance::with_storage(dir.path(), "a", &s3_storage(&server, ""), "100ms");
    let b = Instance::with_storage(dir.path(), "b", &s3_storage(&server, ""), "100ms");
    let port = free_port();
    let health = "health:\n  storage_list: {interval: 1s, warn_duration: 1s, error_duration: 4s}\n  \
                  start: {interval: 1s, warn_duration: 30s, error_duration: 60s}\n";
    append_config(&a, &format!("http:\n  address: 127.0.0.1:{port}\n{health}"));
    b.write("records", &[("from-b", Some("1"), 100)]);
    b.sync_once();
    a.write("records", &[("from-a", Some("1"), 200)]);
    let log = dir.path().join("a.log");
    let _d = Daemon::start(&a, "sync", &log);

    // Healthy once start-up is complete (listing, own snapshot, b's snapshot merged).
    wait_for(
        "/healthz ok after start-up",
        Duration::from_secs(30),
        || {
            get(port, "/healthz").is_some_and(|(c, b)| {
                c == 200 && b.contains("\"status\": \"OK\"") && b.contains("\"startup_main\": true")
            })
        },
    );
    let (_, body) = get(port, "/healthz").unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    for k in [
        "ok",
        "has_warnings",
        "status",
        "time",
        "since",
        "runtime",
        "failures",
        "warnings",
        "metadata",
    ] {
        assert!(json.get(k).is_some(), "/healthz lacks {k}: {body}");
    }
    assert_eq!(json["metadata"]["startup_main"], true, "{body}");

    // Metrics: upstream names, valid exposition format.
    let (code, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "lightningstream_syncer_snapshots_generated_total{lmdb=\"main\"} 1",
        "lightningstream_syncer_snapshots_store_calls_total ",
        "lightningstream_syncer_snapshots_load_calls_total",
        "lightningstream_receiver_snapshots_in_storage_count{lmdb=\"main\"} 2",
        "lightningstream_receiver_snapshots_last_received_seconds{lmdb=\"main\",syncer_instance=\"b\"}",
        "lightningstream_receiver_snapshots_last_received_age_seconds_bucket{lmdb=\"main\",syncer_instance=\"b\",le=\"0.1\"}",
        "lightningstream_climit_limit{limit_name=\"download\",lmdb=\"main\"}",
        "lightningstream_climit_acquired_total{limit_name=\"decompress\",lmdb=\"main\"}",
        "lmdb_env_last_tnx_id{lmdb=\"main\"}",
        "lmdb_stat_entries{db=\"records\",lmdb=\"main\"} 2",
        "lmdb_stat_pages{db=\"records\",lmdb=\"main\",pagetype=\"leaf\"} 1",
        "lmdb_total_usage_fraction{lmdb=\"main\"}",
        "storage_s3_call_total{method=\"list\"}",
        "storage_s3_call_total{method=\"store\"}",
        "storage_s3_call_duration_seconds_bucket{method=\"load\",le=\"60\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    promtool_check(&metrics);

    // The page a person reads.
    let (code, page) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    for s in [
        "Lightning Stream: instance <span id=\"instance\">a</span>",
        "<div id=\"verdict\"",
        "data-instance=\"b\"",
        "DBIs in main",
        "records",
        "<td>b</td>",
    ] {
        assert!(page.contains(s), "status page lacks {s}:\n{page}");
    }
    assert_eq!(get(port, "/nope").unwrap().0, 404);
    let (code, listing) = get(port, "/storage").unwrap();
    assert_eq!(code, 200);
    assert!(listing.starts_with("Name\tSize\nmain__a__"), "{listing}");

    // S3 down: listing fails, the check warns after 1 s and fails after 4 s (HTTP 503).
    server.stop();
    wait_for("/healthz warning", Duration::from_secs(60), || {
        get(port, "/healthz").is_some_and(|(c, b)| {
            c == 200 && b.contains("main_storage_list_failed_duration") && b.contains("Warning")
        })
    });
    wait_for("/healthz failing", Duration::from_secs(60), || {
        get(port, "/healthz").is_some_and(|(c, b)| {
            c == 503
                && b.contains("failed to list snapshots on storage backend for")
                && b.contains("Unavailable")
        })
    });
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("lightningstream_syncer_snapshots_list_failed_total{lmdb=\"main\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("storage_s3_call_error_by_type_total{error=\"URLError\",method=\"list\"}"),
        "{metrics}"
    );
    let (code, body) = get(port, "/storage").unwrap();
    assert!(
        code == 500 && body.starts_with("ERROR LISTING STORAGE: "),
        "{code} {body}"
    );
    // The status page still answers while storage is down.
    assert_eq!(get(port, "/").unwrap().0, 200);

    server.restart();
    wait_for("/healthz ok again", Duration::from_secs(60), || {
        get(port, "/healthz").is_some_and(|(c, b)| c == 200 && b.contains("\"status\": \"OK\""))
    });
    let l = log_of(&log);
    assert!(l.contains("is violating the error threshold"), "{l}");
    assert!(l.contains("HTTP stats server enabled"), "{l}");
}

/// A client that connects and never sends a request must not hold up /healthz.
#[test]
fn a_silent_client_does_not_block_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    let port = free_port();
    append_config(&a, &format!("http:\n  address: 127.0.0.1:{port}\n"));
    let _d = Daemon::start(&a, "sync", &dir.path().join("a.log"));
    wait_for("HTTP up", Duration::from_secs(20), || {
        get(port, "/healthz").is_some()
    });
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let t0 = std::time::Instant::now();
    assert!(get(port, "/healthz").is_some());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    drop(silent);
}

/// Many snapshots of one instance shrink to the newest; a stale instance's snapshot goes only
/// after we merged it and stored a snapshot of our own.
#[test]
fn cleaner_removes_superseded_and_merged_stale_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let server = s3server::S3Server::start(&dir.path().join("s3"));
    let plain = s3_storage(&server, "");
    // The stale instance: one snapshot, made long ago (its name carries the time).
    let old = Instance::with_storage(dir.path(), "old", &plain, "100ms");
    old.write("records", &[("from-old", Some("x"), 50)]);
    old.sync_once();
    let bucket = dir.path().join("s3").join("status");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&bucket)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("main__"))
            .collect();
        v.sort();
        v
    };
    let orig = names().pop().unwrap();
    let aged = orig.replace(&orig[11..36], "20200101-000000-000000000");
    std::fs::rename(bucket.join(&orig), bucket.join(&aged)).unwrap();

    let cleanup = "  cleanup:\n    enabled: true\n    interval: 1s\n    must_keep_interval: 1s\n    \
                   remove_old_instances_interval: 24h\n";
    let a = Instance::with_storage(dir.path(), "a", &s3_storage(&server, cleanup), "100ms");
    let log = dir.path().join("a.log");
    let _d = Daemon::start(&a, "sync", &log);
    for n in 0..8u64 {
        a.write("records", &[("k", Some(&format!("v{n}")), 1000 + n)]);
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for(
        "old instance cleaned after merge",
        Duration::from_secs(30),
        || !names().contains(&aged),
    );
    assert_eq!(
        a.dump()
            .get(&common::key("records", "from-old"))
            .map(|e| e.value.clone()),
        Some(b"x".to_vec()),
        "the stale instance's data was merged before its snapshot went"
    );
    wait_for("a's snapshots cleaned", Duration::from_secs(30), || {
        names()
            .iter()
            .filter(|n| n.starts_with("main__a__"))
            .count()
            == 1
    });
    let l = log_of(&log);
    assert!(
        l.contains("Cleaning stale instance snapshot, merge proven"),
        "{l}"
    );
    // The newest snapshot of a holds the newest value.
    let b = Instance::with_storage(dir.path(), "b", &plain, "100ms");
    b.sync_once();
    assert_eq!(
        b.dump()
            .get(&common::key("records", "k"))
            .map(|e| e.value.clone()),
        Some(b"v7".to_vec())
    );
}

/// The sweeper of a running daemon removes an expired tombstone and keeps everything else;
/// its figures reach the metrics and the log.
#[test]
fn sweeper_in_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    let port = free_port();
    append_config(
        &a,
        &format!(
            "http:\n  address: 127.0.0.1:{port}\nsweeper:\n  enabled: true\n  retention_days: 1\n  \
             first_interval: 500ms\n  interval: 1h\n  lock_duration: 10ms\n  release_duration: 10ms\n"
        ),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let day = 86_400_000_000_000u64;
    a.write(
        "records",
        &[
            ("expired-tomb", None, now - 2 * day),
            ("young-tomb", None, now - day / 2),
            ("old-live", Some("keep"), now - 10 * day),
        ],
    );
    let log = dir.path().join("a.log");
    let _d = Daemon::start(&a, "sync", &log);
    wait_for("sweep done", Duration::from_secs(30), || {
        log_of(&log).contains("Sweep for stale deleted entries completed")
    });
    let d = a.dump();
    assert!(!d.contains_key(&common::key("records", "expired-tomb")));
    assert!(d.contains_key(&common::key("records", "young-tomb")));
    assert!(d.contains_key(&common::key("records", "old-live")));
    let (_, m) = get(port, "/metrics").unwrap();
    for s in [
        "lightningstream_sweeper_cleaned_total{lmdb=\"main\"} 1",
        "lightningstream_sweeper_stats_total_entries{lmdb=\"main\"} 2",
        "lightningstream_sweeper_stats_deleted_entries{lmdb=\"main\"} 1",
        "lightningstream_sweeper_stats_available{lmdb=\"main\"} 1",
        "# TYPE lightningstream_sweeper_duration_seconds summary",
        "lightningstream_sweeper_duration_seconds_count{lmdb=\"main\"} 1",
    ] {
        assert!(m.contains(s), "/metrics lacks {s}:\n{m}");
    }
    // The sweep is a local change: a new snapshot without the tombstone follows. (A fresh
    // reader each time: one that merged an older snapshot keeps the tombstone it got.)
    let mut n = 0;
    wait_for(
        "snapshot without the tombstone",
        Duration::from_secs(20),
        || {
            n += 1;
            let b = Instance::new(dir.path(), &format!("b{n}"), &bucket, "100ms");
            b.sync_once();
            !b.dump()
                .contains_key(&common::key("records", "expired-tomb"))
        },
    );
}

/// Secrets never leave the process: not in the log (debug level, with S3 failures), not in
/// `--log-config`, not on any status page. The status server listens only where configured.
#[test]
fn secrets_stay_out_of_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = s3server::S3Server::start(&dir.path().join("s3"));
    let a = Instance::with_storage(dir.path(), "a", &s3_storage(&server, ""), "100ms");
    let port = free_port();
    append_config(&a, &format!("http:\n  address: 127.0.0.1:{port}\n"));
    a.write("records", &[("k", Some("v"), 10)]);
    let log = dir.path().join("a.log");
    let d = Daemon(
        a.command(&["--log-config", "sync"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("HTTP up", Duration::from_secs(20), || {
        get(port, "/healthz").is_some()
    });
    wait_for("a snapshot stored", Duration::from_secs(20), || {
        log_of(&log).contains("Stored snapshot")
    });
    // Failures log request details: still no secret.
    server.stop();
    a.write("records", &[("k2", Some("v"), 20)]);
    wait_for("store failures logged", Duration::from_secs(60), || {
        log_of(&log).contains("Store failed")
    });
    let mut outputs = vec![log_of(&log)];
    for path in ["/", "/healthz", "/metrics", "/storage"] {
        outputs.push(get(port, path).map(|r| r.1).unwrap_or_default());
    }
    // Only the configured address answers: another loopback address of this host does not.
    assert!(TcpStream::connect(("127.0.0.2", port)).is_err());
    drop(d);
    let out = a
        .command(&["--log-config", "snapshots", "ls"])
        .output()
        .unwrap();
    outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    for o in &outputs {
        assert!(!o.contains(s3server::SECRET_KEY), "secret key leaked:\n{o}");
        assert!(!o.contains("X-Amz-Signature="), "signature leaked:\n{o}");
    }
    assert!(
        outputs[0].contains("secret_key"),
        "the effective config is logged, redacted"
    );
}
