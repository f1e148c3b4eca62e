//! Propagation latency (a write on A until it is readable in B's LMDB) over single-key writes,
//! with two `sync` daemons sharing the in-process S3 server, at 1 s and 100 ms poll intervals;
//! then the CPU one idle daemon uses over a minute. Prints figures; asserts nothing about speed.
//!
//! cargo bench --bench propagation            (100 writes per interval, 60 s idle)
//! Under `cargo test --all-targets` it is a quick smoke run.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/s3server.rs"]
mod s3server;

use std::time::{Duration, Instant};

use common::{Daemon, Instance, key};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(poll: &str, writes: usize, idle: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let server = s3server::S3Server::start(&dir.path().join("s3"));
    let storage = format!(
        "storage:\n  type: s3\n  options:\n    endpoint_url: {}\n    bucket: latency\n    create_bucket: true\n    \
         access_key: {}\n    secret_key: '{}'\n",
        server.endpoint(),
        s3server::ACCESS_KEY,
        s3server::SECRET_KEY
    );
    let a = Instance::with_storage(dir.path(), "a", &storage, poll);
    let b = Instance::with_storage(dir.path(), "b", &storage, poll);
    a.write("records", &[("start", Some("x"), 1)]);
    b.write("records", &[("start-b", Some("x"), 1)]);
    let quiet = |i: &Instance| {
        let mut c = i.command(&["--log-level", "warning", "sync"]);
        c.stderr(std::process::Stdio::null());
        Daemon(c.spawn().unwrap())
    };
    let da = quiet(&a);
    let _db = quiet(&b);
    let t0 = Instant::now();
    while !b.dump().contains_key(&key("records", "start")) {
        assert!(t0.elapsed() < Duration::from_secs(60), "no initial sync");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut lat = Vec::with_capacity(writes);
    for n in 0..writes {
        let k = format!("lat-{n}");
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let t = Instant::now();
        a.write("records", &[(k.as_str(), Some("v"), ts)]);
        while !b.dump().contains_key(&key("records", &k)) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "write {n} never arrived"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "poll {poll}: {writes} single-key writes A->B over S3: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        lat[lat.len() - 1].as_secs_f64() * 1000.0
    );
    // Idle: nothing changes; measure A's CPU time over the interval.
    std::thread::sleep(Duration::from_secs(2));
    let hz = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(da.0.id());
    std::thread::sleep(idle);
    let used = (cpu_ticks(da.0.id()) - before) as f64 / hz;
    println!(
        "poll {poll}: idle daemon used {used:.2} s CPU in {} s = {:.2}% of a core",
        idle.as_secs(),
        100.0 * used / idle.as_secs_f64()
    );
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (writes, idle) = if benching {
        (100, Duration::from_secs(60))
    } else {
        (3, Duration::from_secs(1))
    };
    run("1s", writes, idle);
    run("100ms", writes, idle);
}
