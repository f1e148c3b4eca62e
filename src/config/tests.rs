//! Config parsing and validation against spec/config.md: defaults, Go formats, null sections,
//! errors that name file, key and line, and the effective-config printout.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, "test.yaml", no_env)
}

const MINIMAL: &str = "lmdbs:\n  main:\n    path: /tmp/x\n";

#[test]
fn defaults_of_every_section() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.instance, "");
    assert_eq!(c.lmdb_poll_interval.to_string(), "1s");
    assert_eq!(c.lmdb_log_stats_interval.to_string(), "30m0s");
    assert!(c.lmdb_scrape_smaps);
    assert_eq!(c.storage_poll_interval.to_string(), "1s");
    assert_eq!(c.storage_retry_interval.to_string(), "5s");
    assert_eq!(c.storage_retry_count, 100);
    assert!(!c.storage_retry_forever);
    assert_eq!(c.storage_force_snapshot_interval.to_string(), "4h0m0s");
    assert_eq!(c.memory_downloaded_snapshots, 2);
    assert_eq!(c.memory_decompressed_snapshots, 3);
    assert!(!c.only_once);
    let s = &c.sweeper;
    assert!(!s.enabled);
    assert_eq!(s.retention_days, 370.0);
    assert_eq!(
        (s.interval.to_string(), s.first_interval.to_string()),
        ("6h0m0s".into(), "10m0s".into())
    );
    assert_eq!(
        (s.lock_duration.to_string(), s.release_duration.to_string()),
        ("50ms".into(), "50ms".into())
    );
    assert!(s.retention_load_cutoff_duration.is_zero());
    let cl = &c.storage.cleanup;
    assert!(!cl.enabled);
    assert_eq!(cl.interval.to_string(), "5m0s");
    assert_eq!(cl.must_keep_interval.to_string(), "10m0s");
    assert_eq!(cl.remove_old_instances_interval.to_string(), "168h0m0s");
    assert_eq!(c.storage.kind, "");
    assert_eq!(c.http.address, "");
    assert_eq!(
        (
            c.log.level.as_str(),
            c.log.format.as_str(),
            c.log.timestamp.as_str()
        ),
        ("info", "human", "short")
    );
    for h in [
        &c.health.storage_list,
        &c.health.storage_load,
        &c.health.storage_store,
    ] {
        assert_eq!(
            (
                h.interval.to_string(),
                h.warn_duration.to_string(),
                h.error_duration.to_string()
            ),
            ("5s".into(), "1m0s".into(), "5m0s".into())
        );
    }
    let st = &c.health.start;
    assert_eq!(st.interval.to_string(), "1s");
    assert!(!st.report_healthz && st.report_metadata);
    let l = &c.lmdbs["main"];
    assert_eq!(l.path, "/tmp/x");
    assert!(!l.schema_tracks_changes && !l.options.create);
    assert_eq!((l.options.file_mask, l.options.map_size), (0, 0));
}

#[test]
fn spec_example_and_vector_config() {
    let example = r#"
instance: ${LS_INSTANCE}
lmdbs:
  main:
    path: /var/lib/pdns/pdns.lmdb
    schema_tracks_changes: true
    options: {no_subdir: true, create: true, map_size: 1000MB}
storage:
  type: s3
  options: {access_key: minioadmin, secret_key: minioadmin, bucket: lightningstream,
            endpoint_url: "http://localhost:9000", create_bucket: true}
  cleanup: {enabled: true, interval: 5m, must_keep_interval: 10m, remove_old_instances_interval: 168h}
http: {address: ":8500"}
"#;
    let c = parse_with_env(example, "ex.yaml", |k| {
        (k == "LS_INSTANCE").then(|| "edge1".into())
    })
    .unwrap();
    assert_eq!(c.instance, "edge1");
    let l = &c.lmdbs["main"];
    assert!(l.schema_tracks_changes && l.options.no_subdir && l.options.create);
    assert_eq!(l.options.map_size, 1_048_576_000);
    assert!(c.storage.cleanup.enabled);
    assert_eq!(c.http.address, ":8500");
    let s3 = c.s3_options().unwrap();
    assert_eq!(
        (s3.bucket.as_str(), s3.region.as_str()),
        ("lightningstream", "us-east-1")
    );
    assert!(s3.create_bucket);
    assert_eq!(s3.client_timeout.to_string(), "15m0s");
    assert_eq!(s3.max_idle_conns, 100);

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors/ls-a.yaml");
    if let Ok(text) = std::fs::read_to_string(path) {
        let env = |k: &str| match k {
            "LSV_DB_A" => Some("/tmp/a.lmdb".to_string()),
            "LSV_STORAGE" => Some("/tmp/bucket".to_string()),
            "LSV_SCHEMA_TRACKS_CHANGES" => Some("true".to_string()),
            "LSV_DUPSORT_HACK" | "LSV_HEADER_EXTRA_PADDING_BLOCK" => Some("false".to_string()),
            _ => None,
        };
        let c = parse_with_env(&text, path, env).unwrap();
        assert_eq!(c.instance, "a");
        assert_eq!(c.lmdbs["main"].path, "/tmp/a.lmdb");
        assert_eq!(c.lmdbs["main"].options.map_size, 64 << 20);
        assert!(c.lmdbs["main"].schema_tracks_changes);
        assert_eq!(c.fs_options().unwrap().root_path, "/tmp/bucket");
        assert_eq!(c.lmdb_poll_interval.to_string(), "100ms");
    }
}

#[test]
fn yaml11_scalars() {
    let c = parse(
        "lmdbs:\n  main:\n    path: p\n    schema_tracks_changes: yes\n    options:\n      \
         file_mask: 0664\n      dir_mask: 0o775\n      max_dbs: 1_000\n      create: on\n\
         lmdb_poll_interval: 100000000\nonly_once: Y\n",
    )
    .unwrap();
    let l = &c.lmdbs["main"];
    assert!(l.schema_tracks_changes && l.options.create && c.only_once);
    assert_eq!(
        (l.options.file_mask, l.options.dir_mask, l.options.max_dbs),
        (0o664, 0o775, 1000)
    );
    assert_eq!(c.lmdb_poll_interval.to_string(), "100ms");
    // An environment variable expanding to nothing leaves an empty value: false.
    let c = parse_with_env(
        "lmdbs:\n  main:\n    path: p\n    dupsort_hack: ${UNSET}\n",
        "t.yaml",
        no_env,
    )
    .unwrap();
    assert!(!c.lmdbs["main"].dupsort_hack);
}

#[test]
fn null_sections_are_zero_absent_sections_are_defaults() {
    let c = parse(&format!(
        "{MINIMAL}sweeper:\nhealth:\n  start:\n  storage_list: {{interval: 2s}}\n"
    ))
    .unwrap();
    assert_eq!(c.sweeper.retention_days, 0.0);
    assert!(c.sweeper.interval.is_zero());
    assert!(!c.health.start.report_metadata);
    assert!(c.health.start.interval.is_zero());
    assert_eq!(c.health.storage_list.interval.to_string(), "2s");
    assert_eq!(c.health.storage_list.warn_duration.to_string(), "1m0s");
    assert_eq!(c.health.storage_load.interval.to_string(), "5s");
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_file_key_and_line() {
    let e = err("lmdbs:\n  main:\n    path: p\n    bogus_key: 1\n");
    assert!(
        e.contains("test.yaml") && e.contains("bogus_key") && e.contains("line 4"),
        "{e}"
    );
    let e = err("lmdbs:\n  main:\n    path: p\nlmdb_poll_interval: 5 minutes\n");
    assert!(
        e.contains("lmdb_poll_interval") && e.contains("line 4"),
        "{e}"
    );
    let e = err("lmdbs:\n  main:\n    path: p\nstorage_poll_interval: '10'\n");
    assert!(
        e.contains("storage_poll_interval") && e.contains("missing unit"),
        "{e}"
    );
    let e = err("lmdbs:\n  main:\n    path: p\n    options:\n      map_size: 1Kb\n");
    assert!(e.contains("map_size") && e.contains("line 5"), "{e}");
    let e = err("lmdbs: [unclosed\n");
    assert!(e.contains("line"), "{e}");
    let e = err("lmdbs:\n  main:\n    path: p\n    path: q\n");
    assert!(e.contains("duplicate"), "{e}");
    let e = err("lmdbs:\n  main:\n    path: p\n    schema_tracks_changes: maybe\n");
    assert!(
        e.contains("schema_tracks_changes") && e.contains("line 4"),
        "{e}"
    );
    let e = err(
        "lmdbs:\n  main:\n    path: p\n    dbi_options:\n      x: {override_create_flags: MDB_CREATE}\n",
    );
    assert!(
        e.contains("invalid persistent DBI flag: MDB_CREATE") && e.contains("line 5"),
        "{e}"
    );
}

#[test]
fn validation_rules() {
    let cases = [
        ("log: {level: loud}\n", "log.level: must be one of"),
        ("log: {format: xml}\n", "log.format: must be one of"),
        ("log: {timestamp: long}\n", "log.timestamp: must be one of"),
        (
            "lmdb_poll_interval: 10ms\n",
            "lmdb_poll_interval: too short interval",
        ),
        (
            "storage_poll_interval: 99ms\n",
            "storage_poll_interval: too short interval",
        ),
        (
            "storage_retry_interval: 1ns\n",
            "storage_retry_interval: too short interval",
        ),
        (
            "storage_force_snapshot_interval: 30s\n",
            "minimum 1m if enabled",
        ),
        (
            "storage_retry_count: 0\n",
            "storage_retry_count: positive number required",
        ),
        (
            "memory_downloaded_snapshots: 0\n",
            "memory_downloaded_snapshots: positive number required",
        ),
        (
            "memory_decompressed_snapshots: -1\n",
            "memory_decompressed_snapshots: positive number required",
        ),
        (
            "http: {address: localhost}\n",
            "http.address: address localhost: missing port in address",
        ),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{MINIMAL}{extra}"));
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(e.contains("line"), "{extra:?}: no line in {e}");
    }
    assert!(err("instance: x\n").contains("no LMDBs configured"));
    assert!(
        err("lmdbs:\n  main:\n    options: {create: true}\n")
            .contains("lmdb \"main\": no path configured")
    );
    let e = err("lmdbs:\n  main:\n    path: p\n    options:\n      file_mask: 775\n");
    assert!(
        e.contains("lmdb.options.file_mask: too large value, possible use of decimal (775) instead of octal (01407)")
            && e.contains("line 5"),
        "{e}"
    );
    let e = err(
        "lmdbs:\n  main:\n    path: p\n    schema_tracks_changes: true\n    dupsort_hack: true\n",
    );
    assert!(
        e.contains("cannot be used together with the dupsort_hack option"),
        "{e}"
    );
    assert!(
        parse(&format!(
            "{MINIMAL}storage_force_snapshot_interval: 0\nhttp: {{address: '[::1]:8500'}}\n"
        ))
        .is_ok()
    );
}

#[test]
fn backend_options() {
    let c = parse(&format!(
        "{MINIMAL}storage:\n  type: fs\n  options:\n    root_path: /b\n    bogus: 1\n"
    ))
    .unwrap();
    let e = c.fs_options().unwrap_err().to_string();
    assert!(e.contains("bogus") && e.contains("line 8"), "{e}");
    let c = parse(&format!("{MINIMAL}storage:\n  type: fs\n")).unwrap();
    assert!(
        c.fs_options()
            .unwrap_err()
            .to_string()
            .contains("options.root_path must be set")
    );
    // the deprecated storage.root_path is copied into the options
    let c = parse(&format!(
        "{MINIMAL}storage:\n  type: fs\n  root_path: /old\n"
    ))
    .unwrap();
    assert_eq!(c.fs_options().unwrap().root_path, "/old");
    let c = parse(&format!(
        "{MINIMAL}storage:\n  type: s3\n  options: {{bucket: b}}\n"
    ))
    .unwrap();
    assert!(
        c.s3_options()
            .unwrap_err()
            .to_string()
            .contains("credentials are required")
    );
    let c = parse(&format!(
        "{MINIMAL}storage:\n  type: s3\n  options: {{bucket: b, access_key_file: /a, secret_key_file: /s, endpoint_url: 'ftp://x'}}\n"
    ))
    .unwrap();
    assert!(
        c.s3_options()
            .unwrap_err()
            .to_string()
            .contains("http:// or https://")
    );
}

#[test]
fn effective_config_hides_secrets() {
    let c = parse(&format!(
        "{MINIMAL}storage:\n  type: s3\n  options: {{access_key: AK, secret_key: 'sup3r-s3cret', bucket: b}}\n"
    ))
    .unwrap();
    let y = c.effective_yaml();
    assert!(!y.contains("sup3r-s3cret"), "{y}");
    assert!(
        y.contains("secret_key: '***'") || y.contains("secret_key: \"***\""),
        "{y}"
    );
    assert!(y.contains("lmdb_poll_interval: 1s"), "{y}");
    assert!(y.contains("storage_force_snapshot_interval: 4h0m0s"), "{y}");
    assert!(y.contains("map_size: 0B"), "{y}");
}

#[test]
fn retention_math_is_float32() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.sweeper.retention_duration_ns(), 31_968_002_077_360_128);
    assert_eq!(
        c.sweeper.retention_duration_minus_cutoff_ns(),
        31_648_322_056_586_527
    );
    let mut s = c.sweeper.clone();
    s.retention_load_cutoff_duration = GoDuration::from_secs(3600);
    assert_eq!(
        s.retention_duration_minus_cutoff_ns(),
        31_968_002_077_360_128 - 3_600_000_000_000
    );
}

#[test]
fn merge_lock_keys_of_ours() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.merge_lock_duration.to_string(), "50ms");
    assert_eq!(c.merge_release_duration.to_string(), "2ms");
    let c = parse(&format!(
        "{MINIMAL}merge_lock_duration: 0\nmerge_release_duration: 10ms\n"
    ))
    .unwrap();
    assert!(c.merge_lock_duration.is_zero());
    assert_eq!(c.merge_release_duration.to_string(), "10ms");
    let e = err(&format!("{MINIMAL}merge_lock_duration: -1s\n"));
    assert!(
        e.contains("merge_lock_duration") && e.contains("negative"),
        "{e}"
    );
}

#[test]
fn delta_keys_of_ours() {
    let c = parse(MINIMAL).unwrap();
    assert!(!c.deltas.enabled);
    assert_eq!(c.deltas.full_snapshot_interval.to_string(), "10m0s");
    assert_eq!(c.deltas.max_deltas, 100);
    // Off: the printed config is what it was before deltas existed.
    assert!(!c.effective_yaml().contains("deltas"));
    let c = parse(&format!(
        "{MINIMAL}deltas:\n  enabled: yes\n  full_snapshot_interval: 2m\n  max_deltas: 5\n"
    ))
    .unwrap();
    assert!(c.deltas.enabled);
    assert_eq!(c.deltas.full_snapshot_interval.to_string(), "2m0s");
    assert_eq!(c.deltas.max_deltas, 5);
    assert!(c.effective_yaml().contains("max_deltas: 5"));
    for (bad, want) in [
        ("deltas:\n  enabled: true\n  max_deltas: 0\n", "max_deltas"),
        (
            "deltas:\n  enabled: true\n  full_snapshot_interval: 10ms\n",
            "full_snapshot_interval",
        ),
        ("deltas:\n  enable: true\n", "enable"),
        ("deltas:\n  max_deltas: many\n", "max_deltas"),
    ] {
        let e = err(&format!("{MINIMAL}{bad}"));
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// `encryption:` (ours): recipients and identity files checked at load, every error naming the
/// key and the item's line, no key material ever repeated.
#[test]
fn encryption_section() {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let id = age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    #[allow(non_snake_case)]
    let (SECRET, PUBLIC) = (secret.as_str(), id.to_public().to_string());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("# public key: {PUBLIC}\n{SECRET}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = key.display().to_string();
    let c = parse(&format!(
        "{MINIMAL}encryption:\n  recipients:\n    - {PUBLIC}\n  identity_files: [{key}]\n"
    ))
    .unwrap();
    assert_eq!(c.encryption.recipients, [PUBLIC.as_str()]);
    assert_eq!(c.encryption.identity_files, [key.as_str()]);
    let y = c.effective_yaml();
    assert!(
        y.contains(&PUBLIC) && y.contains(&key) && !y.contains(SECRET),
        "{y}"
    );
    // Absent or empty: off, and not printed.
    assert!(
        !parse(MINIMAL)
            .unwrap()
            .effective_yaml()
            .contains("encryption")
    );
    assert!(
        parse(&format!("{MINIMAL}encryption:\n"))
            .unwrap()
            .encryption
            .recipients
            .is_empty()
    );

    let bad_recipient = err(&format!(
        "{MINIMAL}encryption:\n  recipients:\n    - {PUBLIC}\n    - age1notakey\n"
    ));
    assert!(
        bad_recipient.contains("encryption.recipients[1]") && bad_recipient.contains("line 7"),
        "{bad_recipient}"
    );
    assert!(!bad_recipient.contains("age1notakey"), "{bad_recipient}");
    // A secret key pasted as a recipient is named as such, never printed.
    let pasted = err(&format!("{MINIMAL}encryption:\n  recipients: [{SECRET}]\n"));
    assert!(
        pasted.contains("not a recipient") && pasted.contains("line 5"),
        "{pasted}"
    );
    assert!(!pasted.contains(SECRET), "{pasted}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = err(&format!(
        "{MINIMAL}encryption:\n  identity_files:\n    - {key}\n"
    ));
    assert!(
        open.contains(&key) && open.contains("other users") && open.contains("line 6"),
        "{open}"
    );
    let missing = err(&format!(
        "{MINIMAL}encryption:\n  identity_files: [{key}.missing]\n"
    ));
    assert!(
        missing.contains(&format!("{key}.missing")) && missing.contains("line 5"),
        "{missing}"
    );
    std::fs::write(&key, "not a key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let invalid = err(&format!(
        "{MINIMAL}encryption:\n  identity_files: [{key}]\n"
    ));
    assert!(
        invalid.contains(&key) && invalid.contains("line 1"),
        "{invalid}"
    );
    assert!(!invalid.contains("not a key"), "{invalid}");
    let unknown = err(&format!("{MINIMAL}encryption:\n  passphrase: x\n"));
    assert!(unknown.contains("encryption.passphrase"), "{unknown}");
}

#[test]
fn retention_windows_parse_and_validate() {
    let base = "lmdbs: {main: {path: /x}}\nstorage: {type: fs, options: {root_path: /b}";
    let c = parse(&format!(
        "{base}}}\nretention: {{all: 24h, hourly: 7d, daily: 90d}}\n"
    ))
    .unwrap();
    assert_eq!(c.retention.all, GoDuration::from_secs(86_400));
    assert_eq!(c.retention.hourly, GoDuration::from_secs(7 * 86_400));
    assert_eq!(c.retention.daily, GoDuration::from_secs(90 * 86_400));
    assert!(!c.retention.is_off());
    assert!(c.effective_yaml().contains("\nretention:"));
    let off = parse(&format!("{base}}}\n")).unwrap();
    assert!(off.retention.is_off());
    assert!(!off.effective_yaml().contains("\nretention:"));

    for (bad, needle) in [
        ("retention: {all: 7d, hourly: 1d}", "retention.hourly"),
        ("retention: {hourly: 7d, daily: 1d}", "retention.daily"),
        ("retention: {all: 5x}", "unknown unit"),
        ("retention: {all: 1h, weekly: 1d}", "weekly"),
    ] {
        let e = parse(&format!("{base}}}\n{bad}\n"))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(e.to_string().contains(needle), "{bad}: {e}");
    }
    // A cleaner that runs less often than objects may be deleted could miss some.
    let e = parse(&format!(
            "{base}, cleanup: {{enabled: true, interval: 10m, must_keep_interval: 10m}}}}\nretention: {{all: 1h}}\n"
        ))
    .expect_err("slow archiving cleaner accepted");
    assert!(e.to_string().contains("storage.cleanup.interval"), "{e}");
    parse(&format!(
            "{base}, cleanup: {{enabled: true, interval: 5m, must_keep_interval: 10m}}}}\nretention: {{all: 1h}}\n"
        ))
    .unwrap();
}
