//! The background threads of one syncer (upstream `syncer/receiver`): a lister that lists the
//! bucket every `storage_poll_interval`, a pool of downloaders that fetch and validate snapshots
//! into temporary files, and a poller that watches the LMDB's last transaction ID every
//! `lmdb_poll_interval`. They only talk to the syncer thread, over one `mpsc` channel; the syncer
//! thread alone writes to the LMDB. A counting gate bounds how many validated snapshots may wait
//! for the syncer (`memory_decompressed_snapshots`); the pool size bounds concurrent downloads
//! (`memory_downloaded_snapshots`). Both bound temporary files, not memory: snapshots stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use std::time::Instant;

use crate::core::name::SnapshotName;
use crate::lmdb::Env;
use crate::metrics::metrics;
use crate::retry::sleep_unless_stopped;
use crate::status::health::DbHealth;
use crate::storage::Storage;

use crate::import::load::{FetchError, Fetched, fetch};

/// Valid snapshot and delta names of one db, per instance, oldest first.
pub use super::scheduler::Listing;

/// What the background threads tell the syncer thread.
pub enum Msg {
    Listing(anyhow::Result<Listing>),
    Fetched {
        instance: String,
        name: String,
        // Boxed: a fetched snapshot's index is much larger than the other messages.
        result: Result<Box<(Fetched, Permit)>, FetchError>,
    },
    /// The LMDB's last committed transaction ID, when it changed.
    LocalTxn(u64),
}

/// A download request: instance, object name, and when it was queued.
pub struct Job {
    pub instance: String,
    pub name: String,
    queued: Instant,
}

impl Job {
    pub fn new(instance: &str, name: &str) -> Job {
        Job {
            instance: instance.to_string(),
            name: name.to_string(),
            queued: Instant::now(),
        }
    }
}

/// A counting semaphore: downloaders take a permit before handing a snapshot over; the syncer
/// drops it once the snapshot is merged or replaced. Reported as upstream's `climit` metrics.
pub struct Gate {
    free: Mutex<usize>,
    cond: Condvar,
    labels: [String; 2],
}

pub struct Permit(Arc<Gate>, Instant);

impl Gate {
    pub fn new(db: &str, limit_name: &str, permits: usize) -> Arc<Gate> {
        let labels = [db.to_string(), limit_name.to_string()];
        metrics()
            .climit_limit
            .with_label_values(&labels)
            .set(permits.max(1) as i64);
        Arc::new(Gate {
            free: Mutex::new(permits.max(1)),
            cond: Condvar::new(),
            labels,
        })
    }

    /// Waits for a permit; `None` when asked to stop meanwhile.
    fn acquire(self: &Arc<Gate>, stop: &AtomicBool) -> Option<Permit> {
        let m = metrics();
        let t0 = Instant::now();
        let waiting = m.climit_waiting.with_label_values(&self.labels);
        waiting.inc();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.load(Ordering::Relaxed) {
                waiting.dec();
                return None;
            }
            if *free > 0 {
                *free -= 1;
                waiting.dec();
                m.climit_waiting_seconds
                    .with_label_values(&self.labels)
                    .observe(t0.elapsed().as_secs_f64());
                m.climit_acquired.with_label_values(&self.labels).inc();
                m.climit_active.with_label_values(&self.labels).inc();
                return Some(Permit(self.clone(), Instant::now()));
            }
            free = self
                .cond
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let m = metrics();
        m.climit_active.with_label_values(&self.0.labels).dec();
        m.climit_active_seconds
            .with_label_values(&self.0.labels)
            .observe(self.1.elapsed().as_secs_f64());
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cond.notify_one();
    }
}

/// Lists `<db>__` objects and groups the valid snapshot and delta names by instance.
pub fn list_snapshots(
    storage: &dyn Storage,
    db: &str,
    health: &DbHealth,
) -> anyhow::Result<Listing> {
    use anyhow::Context;
    let prefix = format!("{db}__");
    let m = metrics();
    m.list_calls.inc();
    let objects = match storage.list(&prefix) {
        Ok(o) => {
            health.list.add_success();
            o
        }
        Err(e) => {
            m.list_failed.with_label_values(&[db]).inc();
            health.list.add_failure(&e);
            return Err(e).with_context(|| format!("listing {prefix}*"));
        }
    };
    m.in_storage_count
        .with_label_values(&[db])
        .set(objects.len() as i64);
    m.in_storage_bytes
        .with_label_values(&[db])
        .set(objects.iter().map(|o| o.size).sum::<u64>() as i64);
    let mut listing = Listing::new();
    for o in objects {
        match SnapshotName::parse_object(&o.name) {
            Ok((n, _)) => listing.entry(n.instance).or_default().push(o.name),
            Err(e) => {
                log::debug!(db = db, filename = o.name, error = e.to_string(); "Skipping invalid filename")
            }
        }
    }
    // Storage lists in name order, which is time order within one instance.
    for names in listing.values_mut() {
        names.sort();
    }
    Ok(listing)
}

/// Handles to the background threads; dropping the job sender ends the downloaders.
pub struct Background {
    pub jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts the lister, the downloaders and the poller.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        db: &str,
        storage: Arc<dyn Storage>,
        env: Arc<Env>,
        to_syncer: Sender<Msg>,
        stop: Arc<AtomicBool>,
        downloaders: usize,
        gate: Arc<Gate>,
        storage_poll: Duration,
        lmdb_poll: Duration,
        max_uncompressed: u64,
        native: bool,
        health: DbHealth,
    ) -> Background {
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("spawning a syncer thread")
        };

        // Lister: the initial listing happened on the syncer thread, so wait first.
        {
            let (db, storage, tx, stop, health) = (
                db.to_string(),
                storage.clone(),
                to_syncer.clone(),
                stop.clone(),
                health.clone(),
            );
            threads.push(spawn(
                format!("lister-{db}"),
                Box::new(move || {
                    while sleep_unless_stopped(&stop, storage_poll) {
                        if tx
                            .send(Msg::Listing(list_snapshots(storage.as_ref(), &db, &health)))
                            .is_err()
                        {
                            return;
                        }
                    }
                }),
            ));
        }

        // Downloaders share one job queue.
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let pool = downloaders.max(1);
        metrics()
            .climit_limit
            .with_label_values(&[db, "download"])
            .set(pool as i64);
        for i in 0..pool {
            let d = Downloader {
                db: db.to_string(),
                storage: storage.clone(),
                jobs: jobs_rx.clone(),
                tx: to_syncer.clone(),
                stop: stop.clone(),
                gate: gate.clone(),
                health: health.clone(),
                max_uncompressed,
                compare: native.then(|| env.clone()),
            };
            threads.push(spawn(
                format!("download-{db}-{i}"),
                Box::new(move || d.run()),
            ));
        }

        // Poller: reports the LMDB's last transaction ID whenever it moves.
        {
            let (tx, stop) = (to_syncer, stop);
            threads.push(spawn(
                format!("poller-{db}"),
                Box::new(move || {
                    let mut last = None;
                    while sleep_unless_stopped(&stop, lmdb_poll) {
                        match env.info() {
                            Ok(i) if last != Some(i.last_txn_id) => {
                                last = Some(i.last_txn_id);
                                if tx.send(Msg::LocalTxn(i.last_txn_id)).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => log::warn!(error = e.to_string(); "Reading LMDB info failed"),
                        }
                    }
                }),
            ));
        }
        Background {
            jobs: Some(jobs_tx),
            threads,
        }
    }

    /// Stops taking jobs and waits for the threads (they watch the stop flag), but not beyond
    /// a few seconds: a download in the middle of a large transfer is left to die with the
    /// process rather than holding up a shutdown.
    pub fn join(mut self) {
        self.jobs = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while self.threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads.drain(..).filter(|t| t.is_finished()) {
            let _ = t.join();
        }
    }
}

/// One thread of the download pool (upstream's `download` limiter: the pool size is its limit).
struct Downloader {
    db: String,
    storage: Arc<dyn Storage>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    health: DbHealth,
    max_uncompressed: u64,
    /// Native mode: the LMDB each snapshot is compared with while it is validated.
    compare: Option<Arc<Env>>,
}

impl Downloader {
    fn run(&self) {
        let m = metrics();
        let labels = [self.db.as_str(), "download"];
        loop {
            let job = {
                let rx = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv_timeout(Duration::from_millis(200))
            };
            let job = match job {
                Ok(j) => j,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let Some(permit) = self.gate.acquire(&self.stop) else {
                return;
            };
            m.climit_waiting_seconds
                .with_label_values(&labels)
                .observe(job.queued.elapsed().as_secs_f64());
            m.climit_acquired.with_label_values(&labels).inc();
            m.climit_active.with_label_values(&labels).inc();
            m.load_calls.inc();
            let t0 = Instant::now();
            let fetched = fetch(
                self.storage.as_ref(),
                &job.name,
                self.max_uncompressed,
                self.compare.as_deref(),
            );
            m.climit_active.with_label_values(&labels).dec();
            m.climit_active_seconds
                .with_label_values(&labels)
                .observe(t0.elapsed().as_secs_f64());
            match &fetched {
                Ok(f) => {
                    m.load_bytes.inc_by(f.compressed_size as f64);
                    self.health.load.add_success();
                }
                Err(FetchError::Storage(e)) => {
                    m.load_failed
                        .with_label_values(&[&self.db, &job.instance])
                        .inc();
                    self.health.load.add_failure(e);
                }
                // The object arrived; what is wrong with it is not the storage's fault.
                Err(_) => self.health.load.add_success(),
            }
            let (instance, name) = (job.instance, job.name);
            let result = fetched.map(|f| {
                log::info!(db = self.db, snapshot_instance = instance, filename = name,
                    timestamp = f.index.meta.timestamp_nano,
                    shorthash = SnapshotName::parse_object(&name).map(|n| n.0.shorthash()).unwrap_or_default(),
                    time_load_storage = format!("{:?}", f.time_load_storage),
                    time_load_total = format!("{:?}", t0.elapsed()); "Snapshot downloaded");
                Box::new((f, permit))
            });
            if self
                .tx
                .send(Msg::Fetched {
                    instance,
                    name,
                    result,
                })
                .is_err()
            {
                return;
            }
        }
    }
}
