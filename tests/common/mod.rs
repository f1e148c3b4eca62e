//! Helpers shared by the integration tests: instances with their own native-schema LMDB and
//! config, all pointing at one fs "bucket", driven through the real binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use lightningstream::core::header;
use lightningstream::lmdb::{Env, EnvOptions, Txn};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lightningstream")
}

pub struct Instance {
    pub name: String,
    pub db: PathBuf,
    pub config: PathBuf,
}

/// What a key holds, txn IDs left out (they are local to each LMDB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ts: u64,
    pub flags: u8,
    pub value: Vec<u8>,
}

pub type Dump = BTreeMap<(Vec<u8>, Vec<u8>), Entry>;

/// A new home directory `dir/name` for one test instance: its LMDB path and config path.
pub fn home(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    (home.join("db.lmdb"), home.join("ls.yaml"))
}

impl Instance {
    /// An instance whose LMDB lives in `dir/<name>/db.lmdb` and whose bucket is `bucket`.
    pub fn new(dir: &Path, name: &str, bucket: &Path, poll: &str) -> Instance {
        let storage = format!(
            "storage:\n  type: fs\n  options:\n    root_path: {}\n",
            bucket.display()
        );
        Self::with_storage(dir, name, &storage, poll)
    }

    /// An instance with the given `storage:` section (YAML text).
    pub fn with_storage(dir: &Path, name: &str, storage: &str, poll: &str) -> Instance {
        let (db, config) = home(dir, name);
        std::fs::write(
            &config,
            format!(
                "instance: {name}\n\
                 lmdbs:\n  main:\n    path: {db}\n    schema_tracks_changes: true\n    \
                 options: {{no_subdir: true, create: true, map_size: 64MB}}\n\
                 {storage}\
                 lmdb_poll_interval: {poll}\nstorage_poll_interval: {poll}\n\
                 log: {{level: debug, format: logfmt, timestamp: disable}}\n",
                db = db.display(),
            ),
        )
        .unwrap();
        Instance {
            name: name.to_string(),
            db,
            config,
        }
    }

    /// An instance view of one LMDB of a config written by the caller.
    pub fn from_parts(name: &str, db: PathBuf, config: PathBuf) -> Instance {
        Instance {
            name: name.to_string(),
            db,
            config,
        }
    }

    fn env(&self) -> std::sync::Arc<Env> {
        Env::open(
            &self.db,
            &EnvOptions {
                no_subdir: true,
                create: true,
                map_size: 64 << 20,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Writes values the way PowerDNS 4.8+ does: LS header + value, tombstones for deletes.
    pub fn write(&self, dbi: &str, entries: &[(&str, Option<&str>, u64)]) {
        let env = self.env();
        let mut txn = env.begin_rw().unwrap();
        let d = txn.create_dbi(dbi.as_bytes(), 0).unwrap();
        let id = txn.id();
        for (k, v, ts) in entries {
            let mut val = Vec::new();
            let flags = if v.is_none() { header::FLAG_DELETED } else { 0 };
            header::write_header(&mut val, *ts, id, flags, false);
            val.extend_from_slice(v.unwrap_or("").as_bytes());
            txn.put(d, k.as_bytes(), &val).unwrap();
        }
        txn.commit().unwrap();
    }

    /// Writes `n` keys `<prefix><nnnnn>` holding `value` at timestamp `ts`, in one transaction.
    pub fn write_filler(&self, dbi: &str, prefix: &str, n: usize, value: &str, ts: u64) {
        let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
        let entries: Vec<(&str, Option<&str>, u64)> =
            keys.iter().map(|k| (k.as_str(), Some(value), ts)).collect();
        self.write(dbi, &entries);
    }

    pub fn last_txn_id(&self) -> u64 {
        self.env().info().unwrap().last_txn_id
    }

    pub fn dump(&self) -> Dump {
        let env = self.env();
        let txn = env.begin_ro().unwrap();
        let mut out = Dump::new();
        for name in txn.list_dbis().unwrap() {
            let dbi = txn.open_dbi(&name).unwrap().unwrap();
            for item in txn.cursor(dbi).unwrap() {
                let (k, v) = item.unwrap();
                let (h, app) = header::parse(v).unwrap();
                out.insert(
                    (name.clone(), k.to_vec()),
                    Entry {
                        ts: h.timestamp,
                        flags: h.flags,
                        value: app.to_vec(),
                    },
                );
            }
        }
        out
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("-c").arg(&self.config).args(args);
        c
    }

    /// `sync --only-once`, asserting success; returns stderr (the log).
    pub fn sync_once(&self) -> String {
        let out = self.command(&["sync", "--only-once"]).output().unwrap();
        assert_ok(&out, &format!("sync --only-once of {}", self.name));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn entry(ts: u64, value: Option<&str>) -> Entry {
    Entry {
        ts,
        flags: if value.is_some() { 0 } else { 1 },
        value: value.unwrap_or("").as_bytes().to_vec(),
    }
}

pub fn key(dbi: &str, k: &str) -> (Vec<u8>, Vec<u8>) {
    (dbi.as_bytes().to_vec(), k.as_bytes().to_vec())
}

/// A background process killed (SIGKILL) and reaped when dropped.
pub struct Daemon(pub std::process::Child);

impl Daemon {
    /// Runs `lightningstream <cmd>` for the instance, its log (stderr) going to `log`.
    pub fn start(i: &Instance, cmd: &str, log: &Path) -> Daemon {
        let log = std::fs::File::create(log).unwrap();
        Daemon(i.command(&[cmd]).stderr(log).spawn().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` until it holds, failing the test after `timeout`; returns the time it took.
pub fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t0.elapsed()
}

/// A directory of ../shared (the reference material beside the project). `None` when absent,
/// which fails instead when LS_REQUIRE_SHARED is set (CI), so vector tests cannot silently skip.
pub fn shared_dir(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(sub);
    if dir.exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("LS_REQUIRE_SHARED").is_none(),
        "{} missing",
        dir.display()
    );
    eprintln!("skipping: {} not present", dir.display());
    None
}

/// How many objects in the fs bucket `bucket` have names starting with `prefix`.
pub fn count_objects(bucket: &Path, prefix: &str) -> usize {
    std::fs::read_dir(bucket)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .count()
        })
        .unwrap_or(0)
}

/// A free loopback port (released again; the daemon binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`; the status code and body, or `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Prometheus's `promtool`: from `LS_PROMTOOL`, the test cache, or PATH. Required when
/// `LS_REQUIRE_PROMTOOL` is set (the test runner installs it).
fn promtool() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("LS_PROMTOOL").map(Into::into),
        Some("/var/cache/lightningstream-tests/bin/promtool".into()),
        Some("promtool".into()),
    ];
    for c in candidates.into_iter().flatten() {
        let c: std::path::PathBuf = c;
        if std::process::Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    assert!(
        std::env::var_os("LS_REQUIRE_PROMTOOL").is_none(),
        "promtool is required (LS_REQUIRE_PROMTOOL) but was not found"
    );
    None
}

/// Checks a `/metrics` text with `promtool check metrics`, when promtool is there.
pub fn promtool_check(metrics: &str) {
    if let Some(promtool) = promtool() {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        // promtool exits 1 when it cannot parse the text and 3 for naming advice. Upstream's
        // names draw advice of their own (a gauge named `..._count`), which we must keep; any
        // other finding fails.
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let known = ["lightningstream_receiver_snapshots_in_storage_count non-histogram"];
        let unexpected: Vec<&str> = report
            .lines()
            .filter(|l| !l.trim().is_empty() && !known.iter().any(|k| l.starts_with(k)))
            .collect();
        assert!(
            matches!(out.status.code(), Some(0 | 3)) && unexpected.is_empty(),
            "promtool check metrics: {:?}\n{report}",
            out.status
        );
    }
}
