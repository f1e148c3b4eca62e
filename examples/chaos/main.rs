//! Chaos convergence test (run by `tests/chaos.sh`): five `lightningstream sync` daemons, each
//! with its own native-mode LMDB and a writer putting and deleting keys in it the way PowerDNS
//! does, all on one bucket of the S3 test server (`examples/s3_test_server.rs`, SigV4 checked),
//! each talking to S3 through a fault-injecting proxy (`proxy.rs`). Meanwhile daemons are killed
//! with SIGKILL and restarted, S3 goes away (proxy refusing everything, or the S3 server
//! stopped and started again), and the proxy injects 5xx errors, resets, stalls and truncated
//! bodies. At the end: writers stopped, faults off, every daemon running; once the LMDBs are
//! identical, every key must hold the winner among all writes logged (nothing lost, nothing
//! resurrected, nothing invented). Prints figures and `chaos: N passed, M failed`; exits 1 on
//! a failed check.
//!
//! With `--garage PATH` the bucket lives on a 3-node Garage cluster (replication 3) instead,
//! each node behind its own proxy and daemons spread over the three; the "S3 stopped" outages
//! then SIGKILL one Garage node and start it again on its data, while the other two keep the
//! quorum.
//!
//! With `--azurite MAIN_JS` the daemons use the `azure` backend on Azurite (the Azure Storage
//! emulator, Shared Key auth) instead, through the same proxies and faults; its "S3 stopped"
//! outages stop Azurite (SIGTERM) and start it again on its directory.
//!
//! With `--deltas` the daemons store deltas between full snapshots (a full one every 5
//! deltas or 10 s), so that chains, gaps and bridged full snapshots go through the same faults.
//!
//! usage: chaos --bin PATH (--s3-server PATH | --garage PATH | --azurite PATH) [--deltas]
//!              [--duration SECS]
//!              [--dir DIR] [--seed N] [--keep]

mod azurite;
mod check;
mod garage;
mod proxy;
mod rng;
mod writer;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lightningstream::lmdb::{Env, EnvOptions};

const INSTANCES: usize = 5;
const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const POLL: &str = "150ms";
/// The daemons' S3 client timeout; stalls stay well below it.
const CLIENT_TIMEOUT: &str = "10s";
const STALL_MAX_MS: u32 = 4000;
/// Chance of a fault per proxied request while chaos runs, in 1/1000.
const FAULT_PERMILLE: u32 = 80;
const MAX_LMDB_FILE: u64 = 16 << 20;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

struct Args {
    bin: PathBuf,
    s3_server: PathBuf,
    garage: Option<PathBuf>,
    azurite: Option<PathBuf>,
    deltas: bool,
    duration: u64,
    dir: Option<PathBuf>,
    seed: u64,
    keep: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: chaos --bin PATH (--s3-server PATH | --garage PATH | --azurite PATH) [--deltas] [--duration SECS] [--dir DIR] [--seed N] [--keep]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        bin: PathBuf::new(),
        s3_server: PathBuf::new(),
        garage: None,
        azurite: None,
        deltas: false,
        duration: 180,
        dir: None,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--bin" => a.bin = val().into(),
            "--s3-server" => a.s3_server = val().into(),
            "--garage" => a.garage = Some(val().into()),
            "--azurite" => a.azurite = Some(val().into()),
            "--deltas" => a.deltas = true,
            "--duration" => a.duration = val().parse().unwrap_or_else(|_| usage()),
            "--dir" => a.dir = Some(val().into()),
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| usage()),
            "--keep" => a.keep = true,
            _ => usage(),
        }
    }
    let stores = [
        !a.s3_server.as_os_str().is_empty(),
        a.garage.is_some(),
        a.azurite.is_some(),
    ];
    if a.bin.as_os_str().is_empty() || stores.iter().filter(|x| **x).count() != 1 {
        usage();
    }
    a
}

/// The S3 test server as a child process; it prints its endpoint on stdout.
struct S3Proc {
    child: Child,
    addr: SocketAddr,
}

fn start_s3(bin: &Path, root: &Path, log: &Path) -> S3Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(bin)
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("S3 test server printed {line:?}"));
    S3Proc { child, addr }
}

/// Where the bucket lives, and how an "S3 stopped" outage takes it down.
enum Store {
    /// The S3 test server: the one process is stopped and started again on its directory.
    TestServer {
        bin: PathBuf,
        root: PathBuf,
        log: PathBuf,
        proc: Option<S3Proc>,
    },
    /// A Garage cluster: one node is stopped and started again; the others keep the quorum.
    Garage(garage::Garage),
    /// Azurite: the one emulator is stopped and started again on its directory.
    Azurite(azurite::Azurite),
}

impl Store {
    fn start(a: &Args, dir: &Path) -> Store {
        if let Some(main_js) = &a.azurite {
            return Store::Azurite(azurite::Azurite::start(main_js, dir));
        }
        match &a.garage {
            Some(bin) => Store::Garage(garage::Garage::start(bin, dir, "chaos")),
            None => {
                let (root, log) = (dir.join("s3"), dir.join("s3.log"));
                let proc = Some(start_s3(&a.s3_server, &root, &log));
                Store::TestServer {
                    bin: a.s3_server.clone(),
                    root,
                    log,
                    proc,
                }
            }
        }
    }

    fn endpoints(&self) -> Vec<SocketAddr> {
        match self {
            Store::TestServer { proc, .. } => vec![proc.as_ref().unwrap().addr],
            Store::Garage(g) => g.nodes.iter().map(|n| n.s3).collect(),
            Store::Azurite(z) => vec![z.addr],
        }
    }

    /// The daemons' `storage:` section, reaching the store through `proxy`.
    fn storage_yaml(&self, proxy: SocketAddr) -> String {
        let (access_key, secret_key) = match self {
            Store::Azurite(_) => {
                return format!(
                    "storage:\n  type: azure\n  options:\n    endpoint_url: http://{proxy}/{}\n    \
                     container: chaos\n    create_container: true\n    account_name: {}\n    \
                     use_shared_key: true\n    account_key: '{}'\n    client_timeout: {CLIENT_TIMEOUT}\n    \
                     dial_timeout: 2s\n",
                    azurite::ACCOUNT,
                    azurite::ACCOUNT,
                    azurite::KEY
                );
            }
            Store::TestServer { .. } => (ACCESS_KEY, SECRET_KEY),
            Store::Garage(_) => (garage::ACCESS_KEY, garage::SECRET_KEY),
        };
        format!(
            "storage:\n  type: s3\n  options:\n    endpoint_url: http://{proxy}\n    \
             bucket: chaos\n    create_bucket: true\n    access_key: {access_key}\n    \
             secret_key: '{secret_key}'\n    client_timeout: {CLIENT_TIMEOUT}\n    \
             dial_timeout: 2s\n"
        )
    }

    /// Takes (part of) the storage down; says what went down.
    fn stop(&mut self) -> String {
        match self {
            Store::TestServer { proc, .. } => {
                if let Some(mut s) = proc.take() {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                }
                "S3 server stopped".into()
            }
            Store::Garage(g) => {
                let i = rng::below(g.nodes.len() as u64) as usize;
                g.stop_node(i);
                format!("garage node {} stopped", i + 1)
            }
            Store::Azurite(z) => {
                z.stop();
                "Azurite stopped".into()
            }
        }
    }

    /// Brings back whatever `stop` took down.
    fn restart(&mut self, proxies: &proxy::Proxies) {
        match self {
            Store::TestServer {
                bin,
                root,
                log,
                proc,
            } => {
                if proc.is_none() {
                    let s = start_s3(bin, root, log);
                    proxies.0[0].ctl.set_upstream(s.addr);
                    *proc = Some(s);
                }
            }
            Store::Garage(g) => {
                for i in 0..g.nodes.len() {
                    if !g.running(i) {
                        g.start_node(i);
                    }
                }
            }
            Store::Azurite(z) => {
                if !z.running() {
                    z.spawn();
                }
            }
        }
    }

    fn shutdown(&mut self) {
        match self {
            Store::TestServer { proc, .. } => {
                if let Some(mut s) = proc.take() {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                }
            }
            Store::Garage(g) => {
                for i in 0..g.nodes.len() {
                    g.stop_node(i);
                }
            }
            Store::Azurite(z) => z.stop(),
        }
    }
}

struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    env: Arc<Env>,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    fn note(&self, t: f64, what: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "=== chaos t={t:.1}s: {what}");
        }
    }

    fn start(&mut self, bin: &Path, t: f64) {
        self.note(t, "starting");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(bin)
                .arg("-c")
                .arg(&self.config)
                .arg("sync")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        self.starts += 1;
    }

    fn kill(&mut self, t: f64) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.note(t, "SIGKILL");
        }
    }

    fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outage {
    ProxyRefusing,
    S3Stopped,
}

#[derive(Debug)]
enum Event {
    Kill,
    Outage(Outage),
}

/// A daemon that ended without being killed by us.
struct SelfExit {
    instance: String,
    at: f64,
    status: String,
    last_lines: String,
    crash: bool,
}

struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) -> bool {
        if ok {
            self.passed += 1;
            println!("ok   {what}");
        } else {
            self.failed += 1;
            println!("FAIL {what}");
        }
        ok
    }
}

fn list_some(items: &[String], n: usize) {
    for i in items.iter().take(n) {
        println!("       {i}");
    }
    if items.len() > n {
        println!("       ... and {} more", items.len() - n);
    }
}

fn main() {
    let a = args();
    rng::seed(a.seed);
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("chaos.")
                .tempdir()
                .unwrap()
                .keep();
            tmp
        }
    };
    println!(
        "chaos: {} s, {INSTANCES} instances{}, seed {}, work dir {}",
        a.duration,
        if a.deltas { ", deltas on" } else { "" },
        a.seed,
        dir.display()
    );

    let mut store = Store::start(&a, &dir);
    let px = proxy::Proxies(
        store
            .endpoints()
            .into_iter()
            .map(proxy::Proxy::start)
            .collect(),
    );
    px.set_stall_ms(STALL_MAX_MS);

    let mut nodes: Vec<Node> = (0..INSTANCES)
        .map(|i| {
            let name = format!("i{i}");
            let home = dir.join(&name);
            std::fs::create_dir_all(&home).unwrap();
            let db = home.join("db.lmdb");
            let config = home.join("ls.yaml");
            std::fs::write(
                &config,
                format!(
                    "instance: {name}\n\
                     lmdbs:\n  main:\n    path: {db}\n    schema_tracks_changes: true\n    \
                     options: {{no_subdir: true, create: true, map_size: 256MB}}\n\
                     {storage}\
                     lmdb_poll_interval: {POLL}\nstorage_poll_interval: {POLL}\n\
                     storage_retry_interval: 1s\n\
                     log: {{level: info, format: logfmt}}\n{deltas}",
                    db = db.display(),
                    storage = store.storage_yaml(px.0[i % px.0.len()].addr),
                    deltas = if a.deltas {
                        "deltas: {enabled: true, max_deltas: 5, full_snapshot_interval: 10s}\n"
                    } else {
                        ""
                    },
                ),
            )
            .unwrap();
            let env = Env::open(
                &db,
                &EnvOptions {
                    no_subdir: true,
                    create: true,
                    map_size: 256 << 20,
                    ..Default::default()
                },
            )
            .unwrap();
            Node {
                name,
                config,
                log: home.join("daemon.log"),
                env,
                child: None,
                starts: 0,
            }
        })
        .collect();

    let t0 = Instant::now();
    let secs = || t0.elapsed().as_secs_f64();
    for n in nodes.iter_mut() {
        n.start(&a.bin, 0.0);
    }
    px.set_fault_permille(FAULT_PERMILLE);

    let stop_writers = Arc::new(AtomicBool::new(false));
    let calm = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (env, stop, calm) = (n.env.clone(), stop_writers.clone(), calm.clone());
            let log = dir.join(format!("writes-{}.log", n.name));
            std::thread::spawn(move || writer::run(i, env, log, stop, calm))
        })
        .collect();

    // The plan: kills spread at random, outages spread evenly with some jitter.
    let dur = a.duration as f64;
    let kills = (a.duration / 18).max(5);
    let outages = (a.duration / 45).max(3);
    let mut plan: Vec<(f64, Event)> = Vec::new();
    for _ in 0..kills {
        plan.push((
            rng::between(3000, a.duration * 1000 - 3000) as f64 / 1000.0,
            Event::Kill,
        ));
    }
    for k in 0..outages {
        let slot = dur / outages as f64;
        let at = slot * k as f64 + slot * (0.3 + 0.4 * rng::below(1000) as f64 / 1000.0);
        let kind = if k % 2 == 0 {
            Outage::ProxyRefusing
        } else {
            Outage::S3Stopped
        };
        plan.push((at, Event::Outage(kind)));
    }
    plan.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut plan = plan.into_iter().peekable();

    let mut kills_done = 0u32;
    let mut outage_log: Vec<(Outage, f64)> = Vec::new();
    let mut outage_end: Option<(f64, Outage, f64)> = None;
    let mut restarts: Vec<(f64, usize)> = Vec::new();
    let mut self_exits: Vec<SelfExit> = Vec::new();

    // Reaps daemons that ended on their own, and restarts them a second later (as a service
    // manager would).
    let reap = |nodes: &mut Vec<Node>,
                restarts: &mut Vec<(f64, usize)>,
                self_exits: &mut Vec<SelfExit>,
                t: f64| {
        for (i, n) in nodes.iter_mut().enumerate() {
            let Some(c) = n.child.as_mut() else { continue };
            if let Ok(Some(status)) = c.try_wait() {
                n.child = None;
                n.note(t, &format!("exited on its own: {status}"));
                let last_lines = n.tail(8);
                let crash = status.code().is_none()
                    || status.code() == Some(101)
                    || last_lines.contains("panicked");
                println!("     t={t:.1}s {} exited on its own: {status}", n.name);
                self_exits.push(SelfExit {
                    instance: n.name.clone(),
                    at: t,
                    status: status.to_string(),
                    last_lines,
                    crash,
                });
                restarts.push((t + 1.0, i));
            }
        }
    };

    // Writers alternate busy (8–20 s) and calm (4–10 s) spells; the last 8 s are calm.
    let mut next_pace = rng::between(8000, 20000) as f64 / 1000.0;
    let mut calm_spells = 0u32;
    while secs() < dur {
        let t = secs();
        if t >= next_pace || (t >= dur - 8.0 && !calm.load(Ordering::SeqCst)) {
            let now_calm = !calm.load(Ordering::SeqCst) || t >= dur - 8.0;
            if now_calm && !calm.load(Ordering::SeqCst) {
                calm_spells += 1;
            }
            calm.store(now_calm, Ordering::SeqCst);
            next_pace = t + if now_calm {
                rng::between(4000, 10000)
            } else {
                rng::between(8000, 20000)
            } as f64
                / 1000.0;
        }
        while plan.peek().is_some_and(|(at, _)| *at <= t) {
            let (_, ev) = plan.next().unwrap();
            match ev {
                Event::Kill => {
                    let victims = if rng::below(4) == 0 { 2 } else { 1 };
                    for _ in 0..victims {
                        let alive: Vec<usize> = (0..INSTANCES)
                            .filter(|i| nodes[*i].child.is_some())
                            .collect();
                        if alive.is_empty() {
                            break;
                        }
                        let i = alive[rng::below(alive.len() as u64) as usize];
                        nodes[i].kill(t);
                        kills_done += 1;
                        let down = rng::between(0, 3000) as f64 / 1000.0;
                        restarts.push((t + down, i));
                        println!(
                            "     t={t:.1}s SIGKILL {} (restart in {down:.1} s)",
                            nodes[i].name
                        );
                    }
                }
                Event::Outage(kind) => {
                    if outage_end.is_some() {
                        continue;
                    }
                    let len = rng::between(2000, 6000) as f64 / 1000.0;
                    match kind {
                        Outage::ProxyRefusing => {
                            px.set_refuse(true);
                            println!("     t={t:.1}s outage: proxy refusing for {len:.1} s");
                        }
                        Outage::S3Stopped => {
                            let what = store.stop();
                            println!("     t={t:.1}s outage: {what} for {len:.1} s");
                        }
                    }
                    outage_end = Some((t + len, kind, t));
                }
            }
        }
        if let Some((end, kind, start)) = outage_end
            && end <= t
        {
            match kind {
                Outage::ProxyRefusing => px.set_refuse(false),
                Outage::S3Stopped => store.restart(&px),
            }
            outage_log.push((kind, t - start));
            outage_end = None;
        }
        restart_due(&mut nodes, &mut restarts, &a.bin, t);
        reap(&mut nodes, &mut restarts, &mut self_exits, t);
        std::thread::sleep(Duration::from_millis(20));
    }

    // The end of the chaos: writers stop, faults and outages end, every daemon runs.
    stop_writers.store(true, Ordering::SeqCst);
    let stats: Vec<writer::Stats> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    px.set_fault_permille(0);
    if let Some((_, kind, start)) = outage_end.take() {
        px.set_refuse(false);
        if kind == Outage::S3Stopped {
            store.restart(&px);
        }
        outage_log.push((kind, secs() - start));
    }
    let t_quiet = Instant::now();
    println!("     t={:.1}s writers stopped, faults off", secs());
    restarts.clear();
    for n in nodes.iter_mut() {
        if n.child.is_none() {
            n.start(&a.bin, secs());
        }
    }

    // Quiet period: dumps until identical (a daemon ending now is restarted too).
    let dumps = |nodes: &[Node]| -> Vec<check::Dump> {
        nodes
            .iter()
            .map(|n| check::dump(&n.env).unwrap_or_else(|e| panic!("dump of {}: {e}", n.name)))
            .collect()
    };
    let mut converged = None;
    let mut last = dumps(&nodes);
    while t_quiet.elapsed() < CONVERGE_TIMEOUT {
        let t = secs();
        reap(&mut nodes, &mut restarts, &mut self_exits, t);
        restart_due(&mut nodes, &mut restarts, &a.bin, t);
        last = dumps(&nodes);
        if last.iter().all(|d| *d == last[0]) {
            converged = Some(t_quiet.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still the same a while later: nothing was in flight.
    let mut stable = false;
    if converged.is_some() {
        std::thread::sleep(Duration::from_secs(3));
        let again = dumps(&nodes);
        stable = again.iter().all(|d| *d == last[0]);
        last = again;
    }
    let t = secs();
    reap(&mut nodes, &mut restarts, &mut self_exits, t);

    // Figures.
    let mut writes = Vec::new();
    let mut log_errors = Vec::new();
    for n in &nodes {
        match check::read_log(&dir.join(format!("writes-{}.log", n.name))) {
            Ok(w) => writes.extend(w),
            Err(e) => log_errors.push(e),
        }
    }
    let total: writer::Stats = stats.iter().fold(Default::default(), |mut s, x| {
        s.txns += x.txns;
        s.puts += x.puts;
        s.deletes += x.deletes;
        s.failed_txns += x.failed_txns;
        s
    });
    let want = check::expected(&writes);
    let tie_keys = want.keys().filter(|k| k.0 == "ties").count();
    println!(
        "writes: {} ({} puts, {} deletes) in {} transactions by {INSTANCES} writers; {} keys ({} with 100 ms timestamps); {} failed transactions",
        writes.len(),
        total.puts,
        total.deletes,
        total.txns,
        want.len(),
        tie_keys,
        total.failed_txns
    );
    let restarts_total: u32 = nodes.iter().map(|n| n.starts - 1).sum();
    println!(
        "writer pace: {calm_spells} calm spells (a transaction every 150–900 ms), busy otherwise (every 5–60 ms)"
    );
    println!(
        "kills: {kills_done} SIGKILL; daemon restarts: {restarts_total}; exits on their own: {}",
        self_exits.len()
    );
    for e in &self_exits {
        println!(
            "     {} at t={:.1}s: {}{}\n{}",
            e.instance,
            e.at,
            e.status,
            if e.crash { " (CRASH)" } else { "" },
            e.last_lines
                .lines()
                .map(|l| format!("       | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let refusing = outage_log
        .iter()
        .filter(|o| o.0 == Outage::ProxyRefusing)
        .count();
    println!(
        "outages: {} ({} proxy refusing every connection, {} {}), {:.1} s in all; connections refused {}, requests with S3 unreachable {}",
        outage_log.len(),
        refusing,
        outage_log.len() - refusing,
        if a.garage.is_some() {
            "with one Garage node stopped"
        } else if a.azurite.is_some() {
            "with Azurite stopped"
        } else {
            "with the S3 server stopped"
        },
        outage_log.iter().map(|o| o.1).sum::<f64>(),
        px.refused(),
        px.upstream_down()
    );
    let injected: u64 = proxy::FAULTS.iter().map(|(f, _)| px.count(*f)).sum();
    println!(
        "faults injected: {injected} in {} proxied requests",
        px.requests()
    );
    for (f, what) in proxy::FAULTS {
        println!("     {:>6}  {what}", px.count(f));
    }
    match converged {
        Some(c) => println!(
            "convergence: {:.2} s after writers stopped and faults ended",
            c.as_secs_f64()
        ),
        None => println!("convergence: none within {} s", CONVERGE_TIMEOUT.as_secs()),
    }

    let sizes: Vec<u64> = nodes
        .iter()
        .map(|n| {
            std::fs::metadata(n.env.path())
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .collect();
    println!(
        "LMDB file sizes (KiB): {}",
        sizes
            .iter()
            .map(|s| (s / 1024).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut v = check::Verdict::default();
    for (n, d) in nodes.iter().zip(&last) {
        check::verify(&n.name, d, &want, &mut v);
    }
    println!(
        "keys checked: {} on {INSTANCES} instances; lost {}, resurrected {}, never written {}, other mismatches {}",
        v.keys_checked,
        v.lost.len(),
        v.resurrected.len(),
        v.unexpected.len(),
        v.other.len()
    );

    // Checks.
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };
    c.check(
        kills_done >= 5,
        &format!("at least 5 daemons killed ({kills_done})"),
    );
    c.check(
        outage_log.len() >= 3,
        &format!("at least 3 S3 outages ({})", outage_log.len()),
    );
    let missing: Vec<&str> = proxy::FAULTS
        .iter()
        .filter(|(f, _)| px.count(*f) == 0)
        .map(|(_, w)| *w)
        .collect();
    c.check(
        missing.is_empty(),
        &format!("every kind of fault injected (missing: {missing:?})"),
    );
    c.check(
        log_errors.is_empty() && !writes.is_empty(),
        &format!("writer logs readable and not empty {log_errors:?}"),
    );
    let logged = (total.puts + total.deletes) as usize;
    c.check(
        writes.len() == logged,
        &format!(
            "writer logs hold every committed write ({} of {logged})",
            writes.len()
        ),
    );
    let crashes: Vec<&SelfExit> = self_exits.iter().filter(|e| e.crash).collect();
    c.check(
        crashes.is_empty(),
        &format!(
            "no daemon crashed (panic or signal we did not send): {}",
            crashes.len()
        ),
    );
    for n in nodes.iter_mut() {
        let running = n
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        c.check(running, &format!("daemon {} running at the end", n.name));
    }
    // A few hundred small keys: anything big means pages that were never reused (stale
    // reader slots of killed daemons pinning old transactions).
    c.check(
        sizes.iter().all(|s| *s < MAX_LMDB_FILE),
        &format!(
            "every LMDB file below {} MiB (largest {} KiB)",
            MAX_LMDB_FILE >> 20,
            sizes.iter().max().unwrap_or(&0) / 1024
        ),
    );
    c.check(
        converged.is_some(),
        &format!(
            "LMDBs identical within {} s of the end of the chaos",
            CONVERGE_TIMEOUT.as_secs()
        ),
    );
    c.check(stable, "LMDBs still identical 3 s later");
    for (n, d) in nodes.iter().zip(&last).skip(1) {
        let diff = check::diff(&last[0], d);
        if !c.check(
            diff.is_empty(),
            &format!(
                "{} identical to {} (keys, values, timestamps, flags): {} differences",
                n.name,
                nodes[0].name,
                diff.len()
            ),
        ) {
            list_some(&diff, 10);
        }
    }
    if !c.check(
        v.lost.is_empty(),
        &format!(
            "no write lost: {} keys checked per instance",
            v.keys_checked
        ),
    ) {
        list_some(&v.lost, 20);
    }
    if !c.check(v.resurrected.is_empty(), "no deleted key resurrected") {
        list_some(&v.resurrected, 20);
    }
    if !c.check(v.unexpected.is_empty(), "no key that nobody wrote") {
        list_some(&v.unexpected, 20);
    }
    if !c.check(
        v.other.is_empty(),
        "every surviving entry is exactly the winning write (value, timestamp, flags)",
    ) {
        list_some(&v.other, 20);
    }

    for n in nodes.iter_mut() {
        n.kill(secs());
    }
    store.shutdown();
    if c.failed > 0 {
        for n in &nodes {
            println!("--- last lines of {}", n.log.display());
            println!("{}", n.tail(40));
        }
        println!("work files kept in {}", dir.display());
    } else if a.keep || a.dir.is_some() {
        println!("work files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("chaos: {} passed, {} failed", c.passed, c.failed);
    std::process::exit(if c.failed > 0 { 1 } else { 0 });
}

/// Starts the daemons whose restart time has come (unless already running again).
fn restart_due(nodes: &mut [Node], restarts: &mut Vec<(f64, usize)>, bin: &Path, t: f64) {
    restarts.retain(|(at, i)| {
        if *at <= t {
            if nodes[*i].child.is_none() {
                nodes[*i].start(bin, t);
            }
            false
        } else {
            true
        }
    });
}
