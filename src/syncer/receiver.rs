//! The background threads of one syncer (upstream `syncer/receiver`): a lister that lists the
//! bucket every `storage_poll_interval`, a pool of downloaders that fetch and validate snapshots
//! into temporary files, and a poller that watches the LMDB's last transaction ID every
//! `lmdb_poll_interval`. They only talk to the syncer thread, over one `mpsc` channel; the syncer
//! thread alone writes to the LMDB. A counting gate bounds how many validated snapshots may wait
//! for the syncer (`memory_decompressed_snapshots`); the pool size bounds concurrent downloads
//! (`memory_downloaded_snapshots`). Both bound temporary files, not memory: snapshots stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::lmdb::Env;
use crate::snapshot::name::SnapshotName;
use crate::storage::Storage;

use super::load::{FetchError, Fetched, fetch};

/// Valid snapshot names of one db, per instance, oldest first.
pub type Listing = BTreeMap<String, Vec<String>>;

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

/// A counting semaphore: downloaders take a permit before handing a snapshot over; the syncer
/// drops it once the snapshot is merged or replaced.
pub struct Gate {
    free: Mutex<usize>,
    cond: Condvar,
}

pub struct Permit(Arc<Gate>);

impl Gate {
    pub fn new(permits: usize) -> Arc<Gate> {
        Arc::new(Gate {
            free: Mutex::new(permits.max(1)),
            cond: Condvar::new(),
        })
    }

    /// Waits for a permit; `None` when asked to stop meanwhile.
    fn acquire(self: &Arc<Gate>, stop: &AtomicBool) -> Option<Permit> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Permit(self.clone()));
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
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cond.notify_one();
    }
}

/// Sleeps up to `d`, waking early when asked to stop. Returns false when stopping.
pub fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    false
}

/// Lists `<db>__` objects and groups the valid snapshot names by instance.
pub fn list_snapshots(storage: &dyn Storage, db: &str) -> anyhow::Result<Listing> {
    use anyhow::Context;
    let prefix = format!("{db}__");
    let objects = storage
        .list(&prefix)
        .with_context(|| format!("listing {prefix}*"))?;
    let mut listing = Listing::new();
    for o in objects {
        match SnapshotName::parse(&o.name) {
            Ok(n) => listing.entry(n.instance).or_default().push(o.name),
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
    pub jobs: Option<Sender<(String, String)>>,
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
            let (db, storage, tx, stop) = (
                db.to_string(),
                storage.clone(),
                to_syncer.clone(),
                stop.clone(),
            );
            threads.push(spawn(
                format!("lister-{db}"),
                Box::new(move || {
                    while sleep_unless_stopped(&stop, storage_poll) {
                        if tx
                            .send(Msg::Listing(list_snapshots(storage.as_ref(), &db)))
                            .is_err()
                        {
                            return;
                        }
                    }
                }),
            ));
        }

        // Downloaders share one job queue.
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<(String, String)>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        for i in 0..downloaders.max(1) {
            let (storage, tx, stop, gate, jobs) = (
                storage.clone(),
                to_syncer.clone(),
                stop.clone(),
                gate.clone(),
                jobs_rx.clone(),
            );
            threads.push(spawn(
                format!("download-{db}-{i}"),
                Box::new(move || downloader(storage.as_ref(), &jobs, &tx, &stop, &gate)),
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

fn downloader(
    storage: &dyn Storage,
    jobs: &Mutex<Receiver<(String, String)>>,
    tx: &Sender<Msg>,
    stop: &AtomicBool,
    gate: &Arc<Gate>,
) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(Duration::from_millis(200))
        };
        let (instance, name) = match job {
            Ok(j) => j,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(permit) = gate.acquire(stop) else {
            return;
        };
        let t0 = std::time::Instant::now();
        let result = fetch(storage, &name).map(|f| {
            log::info!(snapshot_instance = instance, filename = name,
                timestamp = f.index.meta.timestamp_nano,
                shorthash = SnapshotName::parse(&name).map(|n| n.shorthash()).unwrap_or_default(),
                time_load_storage = format!("{:?}", f.time_load_storage),
                time_load_total = format!("{:?}", t0.elapsed()); "Snapshot downloaded");
            Box::new((f, permit))
        });
        if tx
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
