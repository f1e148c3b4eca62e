//! Upload and download throughput of a 100 MB snapshot object through the S3 backend, against
//! the in-process s3s-fs server (real signatures), driving the real binary (`snapshots put` and
//! `snapshots get`) and sampling its peak RssAnon. Prints figures; asserts nothing about speed.
//!
//! cargo bench --bench s3_throughput [-- SIZE_MB]

#[path = "../tests/common/s3server.rs"]
mod s3server;

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the command, sampling /proc/PID/status every 10 ms; returns (wall time, peak RssAnon kB).
fn run_sampled(cmd: &mut Command) -> (Duration, u64) {
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("start lightningstream");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let rss = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        });
        peak = peak.max(rss.unwrap_or(0));
        if let Some(st) = child.try_wait().expect("wait") {
            assert!(st.success(), "{cmd:?} failed: {st}");
            return (t0.elapsed(), peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is a quick smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let size_mb: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 100 } else { 1 });
    let dir = tempfile::tempdir().unwrap();
    let server = s3server::S3Server::start(&dir.path().join("s3"));
    let cfg = dir.path().join("ls.yaml");
    std::fs::write(
        &cfg,
        format!(
            "instance: bench\nlmdbs: {{main: {{path: {}/db, options: {{no_subdir: true, create: true}}}}}}\n\
             storage:\n  type: s3\n  options:\n    endpoint_url: {}\n    bucket: bench\n    create_bucket: true\n    \
             access_key: {}\n    secret_key: '{}'\nlog: {{level: warning}}\n",
            dir.path().display(),
            server.endpoint(),
            s3server::ACCESS_KEY,
            s3server::SECRET_KEY
        ),
    )
    .unwrap();
    // Incompressible content of the requested size, written in chunks.
    let file = dir.path().join("snap.pb.gz");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..size_mb {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            f.write_all(&chunk).unwrap();
        }
    }
    let bin = env!("CARGO_BIN_EXE_lightningstream");
    let name = "main__bench__20260101-000000-000000000__GX.pb.gz";
    let (up, up_rss) = run_sampled(
        Command::new(bin)
            .args(["-c", cfg.to_str().unwrap(), "snapshots", "put", "-n", name])
            .arg(&file),
    );
    let out = dir.path().join("back.pb.gz");
    let (down, down_rss) = run_sampled(
        Command::new(bin)
            .args(["-c", cfg.to_str().unwrap(), "snapshots", "get", name, "-o"])
            .arg(&out),
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        size_mb << 20,
        "downloaded size differs"
    );
    let mbps = |d: Duration| size_mb as f64 / d.as_secs_f64();
    println!(
        "s3 put {size_mb} MiB: {:.2} s, {:.0} MiB/s, peak RssAnon {} KiB (multipart above 64 MiB)",
        up.as_secs_f64(),
        mbps(up),
        up_rss
    );
    println!(
        "s3 get {size_mb} MiB: {:.2} s, {:.0} MiB/s, peak RssAnon {} KiB",
        down.as_secs_f64(),
        mbps(down),
        down_rss
    );
}
