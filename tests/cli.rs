//! The command line as operators and scripts use it: Go-style flags, `snapshots` output formats,
//! `dump`, `stats`, `version`, `--timeout`, and decoding the Go-written snapshot files.

mod common;

use std::process::Command;

use common::{Instance, assert_ok};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_needs_no_config() {
    let o = run(&["-c", "/nonexistent.yaml", "version"]);
    assert_ok(&o, "version");
    assert_eq!(stdout(&o).trim(), env!("CARGO_PKG_VERSION"));
    let o = run(&["--version"]);
    assert_ok(&o, "--version");
    assert!(stdout(&o).starts_with("lightningstream version "));
}

#[test]
fn errors_exit_1() {
    let o = run(&["-c", "/nonexistent.yaml", "sync"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.yaml"));
    assert_eq!(run(&["bogus"]).status.code(), Some(1));
    assert_eq!(run(&["sync", "--bogus-flag"]).status.code(), Some(1));
}

#[test]
fn snapshots_commands() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Instance::new(dir.path(), "a", &bucket, "100ms");
    a.write("records", &[("k", Some("v"), 1_641_092_645_012_345_678)]);
    a.sync_once();
    std::fs::write(bucket.join("zzz-not-a-snapshot"), b"").unwrap();
    let cfg = a.config.to_str().unwrap();

    let o = run(&["snapshots", "list", "--config", cfg]);
    assert_ok(&o, "list");
    let names: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("main__a__") && names[0].ends_with("__GX.pb.gz"));
    assert_eq!(names[1], "zzz-not-a-snapshot");

    let o = run(&["--config=".to_string() + cfg]
        .iter()
        .map(String::as_str)
        .chain(["snapshots", "list", "-l", "-t"])
        .collect::<Vec<_>>());
    assert_ok(&o, "list -l -t");
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines[0], format!("{:12}\t{}", 0, "zzz-not-a-snapshot"));
    let size = std::fs::metadata(bucket.join(&names[0])).unwrap().len();
    assert_eq!(lines[1], format!("{size:12}\t{}", names[0]));

    let o = run(&["-c", cfg, "snapshots", "list", "-p", "zzz"]);
    assert_eq!(stdout(&o), "zzz-not-a-snapshot\n");

    // get, put (name checked unless --force), remove
    let got = dir.path().join("got.pb.gz");
    assert_ok(
        &run(&[
            "-c",
            cfg,
            "snapshots",
            "get",
            &names[0],
            "-o",
            got.to_str().unwrap(),
        ]),
        "get",
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(bucket.join(&names[0])).unwrap()
    );
    let put = |extra: &[&str]| {
        let mut args = vec!["-c", cfg, "snapshots", "put", got.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = put(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid snapshot name"));
    let copy = "main__b__20260101-000000-000000000__GX.pb.gz";
    assert_ok(&put(&["-n", copy]), "put -n");
    assert_ok(&put(&["--force"]), "put --force");
    assert!(bucket.join("got.pb.gz").exists());
    assert_ok(
        &run(&["-c", cfg, "snapshots", "remove", "got.pb.gz"]),
        "remove",
    );
    assert!(!bucket.join("got.pb.gz").exists());

    // dump of our own snapshot
    let o = run(&["-c", cfg, "snapshots", "dump", copy]);
    assert_ok(&o, "dump");
    let text = stdout(&o);
    assert!(text.starts_with("{\n  \"FormatVersion\": 3,\n  \"CompatVersion\": 1,\n  \"Meta\": {\n    \"GenerationID\": \"GX\",\n    \"InstanceID\": \"a\","), "{text}");
    assert!(
        text.contains("\n### records (transform=\"\", flags=\"\")\n\n"),
        "{text}"
    );
    assert!(
        text.contains("k [6b]  =  v [76]  (2022-01-02 03:04:05.012345678 +0000 UTC, "),
        "{text}"
    );
    assert!(text.contains(" ago; flags=00)\n"), "{text}");
    let o = run(&["-c", cfg, "snapshots", "dump", "-f", "json", copy]);
    assert_eq!(o.status.code(), Some(1));
}

/// The Go-written files of ../shared/vectors/decode, printed by `snapshots dump --local`.
#[test]
fn dump_go_written_snapshots() {
    let Some(dir) = common::shared_dir("vectors/decode") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "a", &tmp.path().join("bucket"), "1s");
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if !path.to_string_lossy().ends_with(".pb.gz") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{}.json", path.display())).unwrap())
                .unwrap();
        let o = a
            .command(&["snapshots", "dump", "--local", path.to_str().unwrap()])
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert_ok(&o, "dump --local");
        let text = stdout(&o);
        let entries: usize = json["databases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["entries"].as_array().unwrap().len())
            .sum();
        assert_eq!(text.matches(" ago; flags=").count(), entries, "{text}");
        for d in json["databases"].as_array().unwrap() {
            assert!(
                text.contains(&format!(
                    "\n### {} (transform=",
                    d["name"].as_str().unwrap()
                )),
                "{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "\"TimestampNano\": {}",
                json["meta"]["timestampNano"]
            )),
            "{text}"
        );
    }
}

#[test]
fn dump_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::new(dir.path(), "a", &dir.path().join("bucket"), "1s");
    a.write("t", &[("k_T", Some("1"), 1_641_092_645_012_345_678)]);
    let o = a.command(&["dump"]).output().unwrap();
    assert_ok(&o, "dump");
    assert_eq!(
        stdout(&o),
        "\n### main :: t\n\nk_T [6b 5f 54]  =  ..U..w.N................1 [16 c6 55 10 d5 77 93 4e 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 31] (2022-01-02T03:04:05.012345678Z)\n"
    );
    let o = a.command(&["stats"]).output().unwrap();
    assert_ok(&o, "stats");
    let s = stdout(&o);
    assert!(
        s.starts_with("main: Env info: {MapSize:67108864 LastPNO:"),
        "{s}"
    );
    assert!(s.contains("main: dbi t: {PSize:4096 Depth:1 BranchPages:0 LeafPages:1 OverflowPages:0 Entries:1} (4.0 KB)"), "{s}");
    assert!(
        s.contains("main: Total Used: 4.0 KB / 64.0 MB (~ 0.0 %)"),
        "{s}"
    );
}

#[test]
fn timeout_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::new(dir.path(), "a", &dir.path().join("bucket"), "100ms");
    let o = a.command(&["sync", "--timeout", "1s"]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Timeout reached"));
}
