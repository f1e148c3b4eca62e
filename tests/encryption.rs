//! Encryption at rest (`encryption:`, the age format) through the real binary: round trip and
//! the `snapshots` commands, key rotation, missing and wrong identities (skipped, start-up not
//! held up), tampered and truncated objects (corrupt, never merged), a plaintext fleet moving to
//! encryption (deltas included), the stock `age` tool on our objects and ours on its, a
//! Go-written snapshot beside encrypted objects whose names Go's rules ignore, and secrets kept
//! out of every output of daemons running at debug level over S3.

mod common;
#[path = "common/s3server.rs"]
mod s3server;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use common::{Daemon, Instance, assert_ok, free_port, get, key, shared_dir, wait_for};
use lightningstream::core::name::SnapshotName;

const T: Duration = Duration::from_secs(60);
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

struct Key {
    secret: String,
    public: String,
    file: PathBuf,
}

/// A fresh X25519 key pair, its identity file written as age-keygen does (mode 0600).
fn age_key(dir: &Path, name: &str) -> Key {
    let id = age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let public = id.to_public().to_string();
    let file = dir.join(format!("{name}.key"));
    std::fs::write(
        &file,
        format!("# created: test\n# public key: {public}\n{secret}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Key {
        secret,
        public,
        file,
    }
}

/// Sets the instance's `encryption:` section (replacing an earlier one, which is always last).
fn encryption(i: &Instance, recipients: &[&Key], identities: &[&Key]) {
    let cfg = std::fs::read_to_string(&i.config).unwrap();
    let mut cfg = match cfg.find("encryption:\n") {
        Some(at) => cfg[..at].to_string(),
        None => cfg,
    };
    let list = |v: Vec<String>| format!("[{}]", v.join(", "));
    cfg.push_str(&format!(
        "encryption:\n  recipients: {}\n  identity_files: {}\n",
        list(recipients.iter().map(|k| k.public.clone()).collect()),
        list(
            identities
                .iter()
                .map(|k| k.file.display().to_string())
                .collect()
        ),
    ));
    std::fs::write(&i.config, cfg).unwrap();
}

fn append(i: &Instance, text: &str) {
    let cfg = std::fs::read_to_string(&i.config).unwrap();
    std::fs::write(&i.config, format!("{text}{cfg}")).unwrap();
}

fn objects(bucket: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(bucket)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn value(i: &Instance, k: &str) -> Option<Vec<u8>> {
    i.dump().get(&key("records", k)).map(|e| e.value.clone())
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    (dir, bucket)
}

fn run(i: &Instance, args: &[&str]) -> std::process::Output {
    i.command(args).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn round_trip_and_the_snapshots_commands() {
    let (dir, bucket) = setup();
    let k = age_key(dir.path(), "k");
    let a = Instance::new(dir.path(), "a", &bucket, "200ms");
    let b = Instance::new(dir.path(), "b", &bucket, "200ms");
    let plain = Instance::new(dir.path(), "p", &bucket, "200ms");
    encryption(&a, &[&k], &[&k]);
    encryption(&b, &[], &[&k]);
    a.write(
        "records",
        &[("dnssec-key", Some("PRIVATE-KEY-MATERIAL"), 10)],
    );
    a.sync_once();
    let names = objects(&bucket, "main__a__");
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    assert!(name.ends_with("__GX.pb.gz.age"), "{name}");
    let stored = std::fs::read(bucket.join(name)).unwrap();
    assert!(stored.starts_with(AGE_MAGIC));
    assert!(!stored.windows(10).any(|w| w == b"dnssec-key"));
    // b reads it with the identity; an instance with no identity skips it.
    b.sync_once();
    assert_eq!(value(&b, "dnssec-key").unwrap(), b"PRIVATE-KEY-MATERIAL");

    // dump decrypts; get writes the object as stored, or decrypted with --decrypt.
    let out = run(&b, &["snapshots", "dump", name]);
    assert_ok(&out, "snapshots dump");
    assert!(text(&out).contains("dnssec-key"), "{}", text(&out));
    let raw = dir.path().join("raw.age");
    assert_ok(
        &run(&b, &["snapshots", "get", name, "-o", raw.to_str().unwrap()]),
        "get",
    );
    assert_eq!(std::fs::read(&raw).unwrap(), stored);
    let out = run(&b, &["snapshots", "dump", "--local", raw.to_str().unwrap()]);
    assert_ok(&out, "dump --local of an encrypted file");
    assert!(text(&out).contains("dnssec-key"));
    let dec = dir.path().join("plain.pb.gz");
    assert_ok(
        &run(
            &b,
            &[
                "snapshots",
                "get",
                "--decrypt",
                name,
                "-o",
                dec.to_str().unwrap(),
            ],
        ),
        "get --decrypt",
    );
    assert!(std::fs::read(&dec).unwrap().starts_with(&[0x1f, 0x8b]));
    // `put` restores the stored bytes as they were.
    let copy = name.replace("__a__", "__r__");
    assert_ok(
        &run(
            &b,
            &["snapshots", "put", raw.to_str().unwrap(), "-n", &copy],
        ),
        "put",
    );
    assert_eq!(std::fs::read(bucket.join(&copy)).unwrap(), stored);
    let out = run(&plain, &["snapshots", "dump", name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("encrypted, no identity configured") && text(&out).contains(name),
        "{}",
        text(&out)
    );
    let out = run(
        &b,
        &["snapshots", "get", "--decrypt", &dec.display().to_string()],
    );
    assert!(!out.status.success());
}

#[test]
fn rotation_two_recipients_then_one() {
    let (dir, bucket) = setup();
    let (old, new) = (age_key(dir.path(), "old"), age_key(dir.path(), "new"));
    let a = Instance::new(dir.path(), "a", &bucket, "200ms");
    let with_new = Instance::new(dir.path(), "b", &bucket, "200ms");
    let with_old = Instance::new(dir.path(), "c", &bucket, "200ms");
    // Step 1: writing to both recipients; readers hold either identity.
    encryption(&a, &[&old, &new], &[&old, &new]);
    encryption(&with_new, &[], &[&new]);
    encryption(&with_old, &[], &[&old]);
    a.write("records", &[("k", Some("v1"), 10)]);
    a.sync_once();
    with_new.sync_once();
    with_old.sync_once();
    assert_eq!(value(&with_new, "k").unwrap(), b"v1");
    assert_eq!(value(&with_old, "k").unwrap(), b"v1");
    // Step 3: the old recipient dropped. A reader still on the old identity skips the new
    // object with an error naming it, keeps what it had and finishes its pass.
    encryption(&a, &[&new], &[&new]);
    a.write("records", &[("k", Some("v2"), 20)]);
    a.sync_once();
    with_new.sync_once();
    assert_eq!(value(&with_new, "k").unwrap(), b"v2");
    let log = with_old.sync_once();
    let newest = objects(&bucket, "main__a__").pop().unwrap();
    let skipped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Encrypted snapshot skipped"))
        .collect();
    assert!(
        skipped.len() == 1
            && skipped[0].contains(&newest)
            && skipped[0].contains("none of the configured identities"),
        "{log}"
    );
    assert_eq!(value(&with_old, "k").unwrap(), b"v1");
    // Its identity file updated: the next object is read (identities follow the file).
    encryption(&with_old, &[], &[&new]);
    a.write("records", &[("k", Some("v3"), 30)]);
    a.sync_once();
    with_old.sync_once();
    assert_eq!(value(&with_old, "k").unwrap(), b"v3");
}

#[test]
fn without_an_identity_objects_are_skipped_once_and_startup_completes() {
    let (dir, bucket) = setup();
    let k = age_key(dir.path(), "k");
    let a = Instance::new(dir.path(), "a", &bucket, "200ms");
    let d = Instance::new(dir.path(), "d", &bucket, "200ms");
    encryption(&a, &[&k], &[&k]);
    a.write("records", &[("k", Some("v"), 10)]);
    a.sync_once();
    let name = objects(&bucket, "main__a__").pop().unwrap();
    let port = free_port();
    append(&d, &format!("http:\n  address: 127.0.0.1:{port}\n"));
    d.write("records", &[("own", Some("x"), 5)]);
    let log_path = dir.path().join("d.log");
    let _daemon = Daemon::start(&d, "sync", &log_path);
    wait_for("/healthz ok with start-up complete", T, || {
        get(port, "/healthz").is_some_and(|(c, b)| {
            c == 200 && b.contains("\"status\": \"OK\"") && b.contains("\"startup_main\": true")
        })
    });
    // Several listings later, still one line for the object.
    std::thread::sleep(Duration::from_millis(1500));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("encrypted, no identity configured"))
        .collect();
    assert!(lines.len() == 1 && lines[0].contains(&name), "{log}");
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "lightningstream_encrypted_objects_total{lmdb=\"main\",result=\"no_identity\"} 1"
        ),
        "{metrics}"
    );
    assert!(value(&d, "k").is_none());
    // d's own snapshots are stored in the clear, and a (with the identity) reads them.
    assert!(
        objects(&bucket, "main__d__")
            .iter()
            .all(|n| n.ends_with(".pb.gz"))
    );
    a.sync_once();
    assert_eq!(value(&a, "own").unwrap(), b"x");
}

#[test]
fn tampered_or_truncated_objects_are_corrupt_and_never_merged() {
    let (dir, bucket) = setup();
    let k = age_key(dir.path(), "k");
    let a = Instance::new(dir.path(), "a", &bucket, "200ms");
    encryption(&a, &[&k], &[&k]);
    // Large enough for several 64 KiB age chunks.
    a.write_filler("records", "key", 20_000, "some value that takes room", 10);
    a.sync_once();
    let name = objects(&bucket, "main__a__").pop().unwrap();
    let path = bucket.join(&name);
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() > 65_536, "{}", good.len());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped byte in the payload", {
            let mut v = good.clone();
            let at = v.len() / 2;
            v[at] ^= 0x40;
            v
        }),
        ("a flipped byte in the header MAC", {
            let mut v = good.clone();
            let at = v.windows(4).position(|w| w == b"--- ").unwrap() + 10;
            v[at] ^= 0x01;
            v
        }),
        ("a truncated object", good[..good.len() - 1000].to_vec()),
    ];
    for (n, (what, bytes)) in cases.into_iter().enumerate() {
        std::fs::write(&path, &bytes).unwrap();
        let b = Instance::new(dir.path(), &format!("b{n}"), &bucket, "200ms");
        encryption(&b, &[], &[&k]);
        let log = b.sync_once();
        assert!(
            log.contains("Snapshot marked as corrupt") && log.contains("decryption failed"),
            "{what}: {log}"
        );
        assert!(b.dump().is_empty(), "{what}: something was merged");
    }
    // The good object again: merged.
    std::fs::write(&path, &good).unwrap();
    let b = Instance::new(dir.path(), "b9", &bucket, "200ms");
    encryption(&b, &[], &[&k]);
    b.sync_once();
    assert_eq!(b.dump().len(), 20_000);
}

/// A plaintext fleet of three moves to encryption without a flag day: identities everywhere
/// first, then recipients one instance at a time; one of them writes deltas throughout.
#[test]
fn plaintext_fleet_migrates_to_encryption() {
    let (dir, bucket) = setup();
    let k = age_key(dir.path(), "fleet");
    let inst: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| Instance::new(dir.path(), n, &bucket, "200ms"))
        .collect();
    append(
        &inst[0],
        "deltas:\n  enabled: true\n  max_deltas: 3\n  full_snapshot_interval: 1h\n",
    );
    let start = |i: &Instance, step: usize| {
        Daemon::start(
            i,
            "sync",
            &dir.path().join(format!("{}-{step}.log", i.name)),
        )
    };
    let mut daemons: Vec<Daemon> = inst.iter().map(|i| start(i, 0)).collect();
    // Stops an instance's daemon before starting it again with its new config.
    let restart = |daemons: &mut Vec<Daemon>, n: usize, step: usize| {
        let _ = daemons[n].0.kill();
        let _ = daemons[n].0.wait();
        daemons[n] = start(&inst[n], step);
    };
    let mut ts = 100u64;
    let mut round = |inst: &[Instance], what: &str| {
        for i in inst {
            ts += 1;
            i.write("records", &[(&format!("{}-{ts}", i.name), Some(what), ts)]);
        }
        wait_for(&format!("converged: {what}"), T, || {
            let d = inst[0].dump();
            d.len() as u64 >= ts - 100 && inst.iter().all(|i| i.dump() == d)
        });
    };
    round(&inst, "plaintext");
    // Step 1: every instance gets the identity (restarted one by one).
    for (n, i) in inst.iter().enumerate() {
        encryption(i, &[], &[&k]);
        restart(&mut daemons, n, 1);
    }
    round(&inst, "identities");
    // Step 2: a and b encrypt; c still writes plaintext, read by all.
    for n in [0, 1] {
        encryption(&inst[n], &[&k], &[&k]);
        restart(&mut daemons, n, 2);
    }
    round(&inst, "half encrypted");
    round(&inst, "half encrypted again");
    // Step 3: c too.
    encryption(&inst[2], &[&k], &[&k]);
    restart(&mut daemons, 2, 3);
    round(&inst, "encrypted");
    round(&inst, "encrypted again");
    drop(daemons);
    for i in &inst {
        let newest = objects(&bucket, &format!("main__{}__", i.name))
            .pop()
            .unwrap();
        assert!(newest.ends_with(".age"), "{newest}");
    }
    let a = objects(&bucket, "main__a__");
    assert!(
        a.iter().any(|n| n.ends_with(".delta.pb.gz.age")),
        "no encrypted delta: {a:?}"
    );
    for i in &inst {
        for step in 0..4 {
            let p = dir.path().join(format!("{}-{step}.log", i.name));
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !log.contains("corrupt") && !log.contains("Encrypted snapshot skipped"),
                "{}: {log}",
                p.display()
            );
        }
    }
}

/// The stock `age` tool (Debian package `age`): installed when missing (CI runs as root).
fn age_cli() -> Option<&'static str> {
    let have = || {
        Command::new("age")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have() {
        eprintln!("installing the Debian package age");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "age"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            install();
        }
    }
    if have() {
        return Some("age");
    }
    assert!(
        std::env::var_os("LS_ALLOW_NO_AGE_CLI").is_some(),
        "the age tool is missing and could not be installed (set LS_ALLOW_NO_AGE_CLI=1 to skip)"
    );
    None
}

#[test]
fn the_stock_age_tool_reads_our_objects_and_we_read_its() {
    let Some(age) = age_cli() else { return };
    let (dir, bucket) = setup();
    let k = age_key(dir.path(), "k");
    let a = Instance::new(dir.path(), "a", &bucket, "200ms");
    encryption(&a, &[&k], &[&k]);
    a.write("records", &[("tsig-secret", Some("c2VjcmV0"), 10)]);
    a.sync_once();
    let name = objects(&bucket, "main__a__").pop().unwrap();
    // age -d -i key.txt OBJECT | gunzip
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{age} -d -i '{}' '{}' | gunzip",
            k.file.display(),
            bucket.join(&name).display()
        ))
        .output()
        .unwrap();
    assert_ok(&out, "age -d | gunzip");
    let plain = out.stdout;
    assert!(
        plain.windows(11).any(|w| w == b"tsig-secret"),
        "{} bytes",
        plain.len()
    );
    // The other way: a snapshot encrypted by the stock tool is merged by us.
    let pb = dir.path().join("x.pb.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    std::fs::write(&pb, gz.finish().unwrap()).unwrap();
    let theirs = name.replace("__a__", "__z__");
    let st = Command::new(age)
        .args(["-r", &k.public, "-o"])
        .arg(bucket.join(&theirs))
        .arg(&pb)
        .status()
        .unwrap();
    assert!(st.success());
    let b = Instance::new(dir.path(), "b", &bucket, "200ms");
    encryption(&b, &[], &[&k]);
    let log = b.sync_once();
    assert!(log.contains(&theirs), "{log}");
    assert_eq!(value(&b, "tsig-secret").unwrap(), b"c2VjcmV0");
}

#[test]
fn go_snapshot_loads_beside_encrypted_objects_whose_names_go_ignores() {
    let Some(vectors) = shared_dir("vectors") else {
        return;
    };
    let (dir, bucket) = setup();
    let go = "main__b__20261122-082123-776334390__GX.pb.gz";
    std::fs::copy(
        vectors.join("cases/native-disjoint/snapshots").join(go),
        bucket.join(go),
    )
    .unwrap();
    let k = age_key(dir.path(), "k");
    let r1 = Instance::new(dir.path(), "r1", &bucket, "200ms");
    let r2 = Instance::new(dir.path(), "r2", &bucket, "200ms");
    append(
        &r1,
        "deltas:\n  enabled: true\n  max_deltas: 2\n  full_snapshot_interval: 1h\n",
    );
    encryption(&r1, &[&k], &[&k]);
    encryption(&r2, &[&k], &[&k]);
    r1.write("records", &[("k0", Some("v"), 10)]);
    let _d1 = Daemon::start(&r1, "sync", &dir.path().join("r1.log"));
    let _d2 = Daemon::start(&r2, "sync", &dir.path().join("r2.log"));
    let go_key = (b"alpha".to_vec(), b"b-2rat".to_vec());
    wait_for("Go data on both", T, || {
        r1.dump().contains_key(&go_key) && r2.dump().contains_key(&go_key)
    });
    for n in 1..=3u64 {
        r1.write("records", &[(&format!("k{n}"), Some("v"), 10 + n)]);
    }
    wait_for("identical LMDBs", T, || {
        r2.dump().contains_key(&key("records", "k3")) && r1.dump() == r2.dump()
    });
    // Go's ParseName (ours is a faithful port) rejects every object we stored, so Go's
    // receiver and cleaner ignore them; it accepts the Go snapshot.
    let ours: Vec<String> = objects(&bucket, "main__r");
    assert!(
        ours.iter().any(|n| n.ends_with(".delta.pb.gz.age")),
        "{ours:?}"
    );
    assert!(
        ours.iter()
            .any(|n| n.ends_with(".pb.gz.age") && !n.contains(".delta"))
    );
    for n in &ours {
        assert!(n.ends_with(".age"), "{n} stored in the clear");
        let e = SnapshotName::parse(n).unwrap_err().to_string();
        assert!(e.contains("unknown extension"), "{n}: {e}");
        assert!(SnapshotName::parse_object(n).is_ok());
    }
    assert!(SnapshotName::parse(go).is_ok());
    assert!(bucket.join(go).exists());
}

/// Identities, S3 secret keys and key files never show in logs (debug level), the status page,
/// /metrics, /healthz, /storage, `--help` or error messages.
#[test]
fn secrets_stay_out_of_every_output() {
    let (dir, _bucket) = setup();
    let server = s3server::S3Server::start(&dir.path().join("s3"));
    let k = age_key(dir.path(), "k");
    let wrong = age_key(dir.path(), "wrong");
    let (ak_file, sk_file) = (dir.path().join("ak"), dir.path().join("sk"));
    std::fs::write(&ak_file, s3server::ACCESS_KEY).unwrap();
    std::fs::write(&sk_file, s3server::SECRET_KEY).unwrap();
    let storage = format!(
        "storage:\n  type: s3\n  options:\n    endpoint_url: {}\n    bucket: secrets\n    \
         create_bucket: true\n    access_key_file: {}\n    secret_key_file: {}\n    \
         secrets_refresh_interval: 1s\n",
        server.endpoint(),
        ak_file.display(),
        sk_file.display()
    );
    let ports = [free_port(), free_port()];
    let inst: Vec<Instance> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(n, port)| {
            let i = Instance::with_storage(dir.path(), n, &storage, "200ms");
            append(&i, &format!("http:\n  address: 127.0.0.1:{port}\n"));
            encryption(&i, &[&k], &[&k]);
            i
        })
        .collect();
    let mut outputs: Vec<(String, String)> = Vec::new();
    {
        let daemons: Vec<Daemon> = inst
            .iter()
            .map(|i| {
                let log =
                    std::fs::File::create(dir.path().join(format!("{}.log", i.name))).unwrap();
                let out =
                    std::fs::File::create(dir.path().join(format!("{}.out", i.name))).unwrap();
                Daemon(
                    i.command(&["--debug", "--log-config", "sync"])
                        .stderr(log)
                        .stdout(out)
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        inst[0].write("records", &[("k", Some("v"), 10)]);
        wait_for("b has a's data", T, || value(&inst[1], "k").is_some());
        // A rejected identity-file change is logged (by path, not content).
        std::fs::write(&k.file, format!("{}\n{}x\n", k.secret, k.secret)).unwrap();
        inst[0].write("records", &[("k2", Some("v"), 11)]);
        wait_for("b has a's second write", T, || {
            value(&inst[1], "k2").is_some()
        });
        for port in ports {
            for path in ["/", "/metrics", "/healthz", "/storage"] {
                let (_, body) = get(port, path).unwrap();
                outputs.push((format!("GET {path} on {port}"), body));
            }
        }
        server.fail_next(3);
        inst[0].write("records", &[("k3", Some("v"), 12)]);
        wait_for("b has a's third write", T, || {
            value(&inst[1], "k3").is_some()
        });
        // b decrypted a's second object with the identities it had.
        wait_for("b saw the identity file change", T, || {
            std::fs::read_to_string(dir.path().join("b.log"))
                .unwrap()
                .contains("Identity file changed but cannot be used")
        });
        drop(daemons);
    }
    std::fs::write(&k.file, format!("{}\n", k.secret)).unwrap();
    for i in &inst {
        for ext in ["log", "out"] {
            let p = dir.path().join(format!("{}.{ext}", i.name));
            outputs.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    let log_a = &outputs
        .iter()
        .find(|(n, _)| n.ends_with("a.log"))
        .unwrap()
        .1;
    assert!(log_a.contains("level=debug"), "not a debug log");
    // --help of every command, and error messages of bad keys and wrong identities.
    let a = &inst[0];
    for args in [
        &["--help"][..],
        &["sync", "--help"],
        &["snapshots", "--help"],
        &["snapshots", "get", "--help"],
        &["snapshots", "dump", "--help"],
    ] {
        outputs.push((format!("{args:?}"), text(&run(a, args))));
    }
    let name = {
        let out = run(a, &["snapshots", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string()
    };
    encryption(a, &[&k], &[&wrong]);
    let out = run(a, &["snapshots", "dump", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("none of the configured identities"),
        "{}",
        text(&out)
    );
    outputs.push(("dump with a wrong identity".into(), text(&out)));
    let cfg = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, cfg.replace(&k.public, &wrong.secret)).unwrap();
    let out = run(a, &["sync", "--only-once"]);
    assert!(!out.status.success());
    outputs.push(("a secret key given as a recipient".into(), text(&out)));
    encryption(a, &[&k], &[&wrong]);
    std::fs::set_permissions(&wrong.file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(a, &["snapshots", "list"]);
    assert!(!out.status.success() && text(&out).contains(&wrong.file.display().to_string()));
    outputs.push(("world-readable identity file".into(), text(&out)));

    let secrets = [
        k.secret.as_str(),
        wrong.secret.as_str(),
        s3server::SECRET_KEY,
        // Parts of keys, in case something prints them cut or re-encoded.
        &k.secret[15..40],
        &wrong.secret[15..40],
        &s3server::SECRET_KEY[..20],
    ];
    for (what, out) in &outputs {
        assert!(!out.is_empty() || what.ends_with(".out"), "{what}: empty");
        for s in secrets {
            assert!(!out.contains(s), "{what} shows a secret ({s}):\n{out}");
            assert!(!out.to_lowercase().contains(&s.to_lowercase()), "{what}");
        }
    }
}
