//! One syncer per configured LMDB (upstream `syncer/`): the start-up sequence and main loop of
//! spec/sync-loop.md §2–§4. The syncer thread owns every LMDB write: it merges other instances'
//! latest snapshots (and our own once, at start-up) as the downloaders deliver them, and stores
//! a new snapshot whenever the LMDB's last transaction ID moves past what our last snapshot or
//! merge covered. Listing, downloading and polling run on background threads (`receiver`) that
//! talk to it over one `mpsc` channel. `--only-once` returns after the first complete pass.

mod apply;
pub mod chain;
pub mod cleaner;
pub mod observer;
pub mod receiver;
pub mod scheduler;
mod store;
pub mod sweeper;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::base::{hostname, now_ns};
use crate::export;
use crate::export::dump::Dumper;
use crate::import::LoadOptions;
use crate::import::load::{self, FetchError, Fetched};
use crate::lmdb::{Env, Txn};
use crate::retry::sleep_unless_stopped;
use crate::status::health::DbHealth;
use crate::storage::Storage;
use observer::Observer;
use receiver::{Background, Gate, Job, Msg, Permit, list_snapshots};
use scheduler::{Action, Scheduler};

/// Settings of a syncer that come from the configuration and the command line.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub only_once: bool,
    /// `receive`: merge remote snapshots but never store our own.
    pub receive_only: bool,
    pub lmdb_poll_interval: Duration,
    pub storage_poll_interval: Duration,
    pub storage_retry_interval: Duration,
    pub storage_retry_count: i64,
    pub storage_retry_forever: bool,
    /// Zero disables forced snapshots.
    pub force_snapshot_interval: Duration,
    /// `RetentionDurationMinusCutoff` in ns when the sweeper is enabled (merge.md §2.1).
    pub tombstone_cutoff_ns: Option<i64>,
    /// Concurrent downloads (`memory_downloaded_snapshots`).
    pub downloaders: usize,
    /// Validated snapshots that may wait for a merge (`memory_decompressed_snapshots`).
    pub waiting_snapshots: usize,
    /// Zero disables the periodic LMDB statistics log lines.
    pub log_stats_interval: Duration,
    pub log_stats_smaps: bool,
    /// Snapshots decompressing to more bytes are refused (`snapshot_max_uncompressed_size`).
    pub max_uncompressed: u64,
    /// Write-lock bound of native-mode merges (`merge_lock_duration`, `merge_release_duration`).
    pub merge_limits: load::SliceLimits,
    /// Deltas between full snapshots (`deltas.enabled`); `None` writes full snapshots only.
    pub deltas: Option<export::DeltaSettings>,
}

pub struct Syncer {
    db: String,
    env: Arc<Env>,
    storage: Arc<dyn Storage>,
    instance: String,
    opts: SyncOptions,
    load_opts: LoadOptions,
    /// Process-wide: set by signals or by a failing sibling syncer.
    stop: Arc<AtomicBool>,

    last_synced_txn_id: u64,
    /// What to download, merge and wait for next.
    sched: Scheduler,
    /// Validated objects waiting to be merged, the latest per instance (the scheduler knows
    /// which instances have one).
    pending: BTreeMap<String, (String, Fetched, Permit)>,
    observer: Observer,
    /// Names and metadata of the objects we store.
    dumper: Dumper,
    /// The cleaner's record of merged snapshots included in one of ours (per instance, the
    /// snapshot time in ns), updated after every stored snapshot.
    committed: Option<Arc<std::sync::Mutex<BTreeMap<String, i64>>>>,
    /// What this process stored last (the next delta continues it).
    stored: Option<export::Stored>,
}

impl Syncer {
    pub fn new(
        db: &str,
        env: Arc<Env>,
        storage: Arc<dyn Storage>,
        instance: &str,
        opts: SyncOptions,
        load_opts: LoadOptions,
        stop: Arc<AtomicBool>,
    ) -> Syncer {
        let dumper = Dumper {
            db: db.to_string(),
            instance: instance.to_string(),
            hostname: hostname(),
            shadow: !load_opts.native,
            dupsort_hack: load_opts.dupsort_hack,
            deltas: opts.deltas,
        };
        Syncer {
            db: db.to_string(),
            env,
            storage,
            instance: instance.to_string(),
            sched: Scheduler::new(instance, opts.storage_retry_interval),
            opts,
            load_opts,
            stop,
            last_synced_txn_id: 0,
            pending: BTreeMap::new(),
            observer: Observer::new(db, DbHealth::detached()),
            dumper,
            committed: None,
            stored: None,
        }
    }

    /// Reports to these health trackers instead of detached ones.
    pub fn with_health(mut self, health: DbHealth) -> Syncer {
        self.observer = Observer::new(&self.db, health);
        self
    }

    /// Tells this cleaner record what our stored snapshots include.
    pub fn with_cleaner(
        mut self,
        committed: Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
    ) -> Syncer {
        self.committed = Some(committed);
        self
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reports the scheduler's decisions that need no action here.
    fn report(&self, actions: &[Action]) {
        for a in actions {
            self.observer.scheduled(a);
            if let Action::Adopted { instance, .. } = a {
                self.observer
                    .chain_state(instance, self.sched.chain(instance));
            }
        }
    }

    /// Carries out the scheduler's decisions: downloads go to the downloaders, the rest is
    /// reported.
    fn act(&self, actions: Vec<Action>, jobs: &Sender<Job>) {
        self.report(&actions);
        for a in actions {
            if let Action::Download { instance, name } = a {
                let _ = jobs.send(Job::new(&instance, &name));
            }
        }
    }

    fn handle(&mut self, msg: Msg, jobs: &Sender<Job>) {
        let now = Instant::now();
        let actions = match msg {
            Msg::Listing(Ok(l)) => {
                self.observer.listed();
                self.sched.listed(l, now)
            }
            Msg::Listing(Err(e)) => {
                self.observer.listing_failed(&e);
                return;
            }
            Msg::Fetched {
                instance,
                name,
                result: Ok(boxed),
            } => {
                let (wanted, actions) = self.sched.fetched(&instance, &name, now);
                if wanted {
                    let (fetched, permit) = *boxed;
                    self.pending.insert(instance, (name, fetched, permit));
                }
                actions
            }
            Msg::Fetched {
                instance,
                name,
                result: Err(FetchError::Corrupt { reason, .. }),
            } => self
                .sched
                .fetch_failed(&instance, &name, Some(&reason), now),
            Msg::Fetched {
                instance,
                name,
                result: Err(e),
            } => {
                self.observer.load_failed(&instance, &name, &e);
                self.sched.fetch_failed(&instance, &name, None, now)
            }
            Msg::LocalTxn(_) => return,
        };
        self.act(actions, jobs);
    }

    /// Runs the syncer until it is stopped, or after one complete pass with `only_once`.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let info = self.env.info().context("reading LMDB info")?;
        let has_data_at_start = info.last_txn_id > 0;
        self.observer.started(&self.instance, self.load_opts.native);

        let listing = loop {
            match list_snapshots(self.storage.as_ref(), &self.db, self.observer.health()) {
                Ok(l) => break l,
                Err(e) => {
                    self.observer.initial_listing_failed(&e);
                    if !sleep_unless_stopped(&self.stop, Duration::from_secs(1)) {
                        return Ok(());
                    }
                }
            }
        };
        let has_snapshots = !listing.is_empty();
        let actions = self.sched.start(listing);
        self.report(&actions);
        self.observer
            .initial_listing_done(self.sched.is_waiting_for(&self.instance));
        if !self.load_opts.native && has_data_at_start {
            // Data found at start-up gets timestamp 1 ns: anything written anywhere since wins.
            log::info!(db = self.db; "Syncing main to shadow, in case data was changed before start");
            let mut txn =
                crate::lmdb::retry_lmdb("Starting a write transaction", || self.env.begin_rw())
                    .context("starting write transaction")?;
            crate::import::shadow::main_to_shadow(&mut txn, 1, self.load_opts.dupsort_hack, 0)
                .with_context(|| format!("syncing main to shadow in LMDB {:?}", self.db))?;
            txn.commit().context("committing the shadow update")?;
        }
        if has_data_at_start && !has_snapshots {
            log::info!(db = self.db; "Performing initial snapshot, because none exists yet");
            self.last_synced_txn_id = self.send_once(false)?;
            self.observer.initial_store_done();
        }
        if !has_data_at_start {
            self.observer.initial_store_done();
        }

        if self.load_opts.native {
            // The downloaders compare snapshots with the DBIs whose handles are published (see
            // `merge::diff`); publishing them now, from this thread, lets the very first load
            // be compared too.
            let txn =
                crate::lmdb::retry_lmdb("Starting a read transaction", || self.env.begin_ro())
                    .context("starting a read transaction")?;
            for name in txn.list_dbis().context("listing DBIs")? {
                if let Err(e) = txn.open_dbi(&name) {
                    log::debug!(db = self.db, dbi = String::from_utf8_lossy(&name), error = e.to_string(); "Could not open DBI");
                }
            }
        }

        // The background threads stop when this syncer ends, whatever the reason.
        let local_stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let bg = Background::start(
            &self.db,
            self.storage.clone(),
            self.env.clone(),
            tx,
            local_stop.clone(),
            self.opts.downloaders,
            Gate::new(&self.db, "decompress", self.opts.waiting_snapshots),
            self.opts.storage_poll_interval,
            self.opts.lmdb_poll_interval,
            self.opts.max_uncompressed,
            self.load_opts.native,
            self.observer.health().clone(),
        );
        let result = match bg.jobs.clone() {
            Some(jobs) => self.main_loop(&rx, &jobs, has_data_at_start),
            None => Ok(()),
        };
        local_stop.store(true, Ordering::Relaxed);
        // Pending snapshots hold permits the downloaders may wait for.
        self.pending.clear();
        drop(rx);
        bg.join();
        result
    }

    fn main_loop(
        &mut self,
        rx: &std::sync::mpsc::Receiver<Msg>,
        jobs: &Sender<Job>,
        has_data_at_start: bool,
    ) -> anyhow::Result<()> {
        let first = self.sched.tick(Instant::now());
        self.act(first, jobs);
        let poll = self.opts.lmdb_poll_interval;
        let mut last_snapshot = Instant::now();
        let mut next_local_check = Instant::now();
        let mut warned_empty = false;
        let mut last_waiting_log = Instant::now();
        let mut last_stats_log = Instant::now();
        loop {
            // Wait for news, at most until the next local check is due.
            let wait = next_local_check.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait.min(Duration::from_millis(250))) {
                Ok(m) => self.handle(m, jobs),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("syncer background threads ended"),
            }
            while let Ok(m) = rx.try_recv() {
                self.handle(m, jobs);
            }
            if self.stopped() {
                return Ok(());
            }
            // Downloads that failed are asked for again once their retry time has come.
            if self.sched.retry_due(Instant::now()) {
                let due = self.sched.tick(Instant::now());
                self.act(due, jobs);
            }
            self.apply_pending(jobs)?;
            if self.stopped() {
                return Ok(());
            }
            // A single pass ends as soon as it is complete, not at the next poll tick.
            if self.opts.only_once && self.sched.waiting().is_empty() {
                next_local_check = next_local_check.min(Instant::now());
            }
            if Instant::now() < next_local_check {
                continue;
            }
            next_local_check = Instant::now() + poll;

            if !self.sched.waiting().is_empty()
                && last_waiting_log.elapsed() >= Duration::from_secs(1)
            {
                let still: Vec<_> = self.sched.waiting().iter().cloned().collect();
                self.observer.still_waiting(&still);
                last_waiting_log = Instant::now();
            }
            let force = self.opts.force_snapshot_interval;
            let overdue =
                !self.opts.receive_only && !force.is_zero() && last_snapshot.elapsed() > force;
            if overdue {
                log::info!(db = self.db, last_snapshot_time_passed = format!("{:?}", last_snapshot.elapsed()); "Snapshot overdue, forcing one");
            }
            let last_txn_id = self.env.info().context("reading LMDB info")?.last_txn_id;
            if last_txn_id > self.last_synced_txn_id {
                self.observer.local_change(last_txn_id);
            }
            if last_txn_id > self.last_synced_txn_id || overdue {
                if self.sched.is_waiting_for(&self.instance) {
                    log::info!(db = self.db; "Waiting to load own old snapshot before writing a new one");
                } else {
                    self.last_synced_txn_id = last_txn_id;
                    if has_data_at_start || self.last_synced_txn_id > 0 {
                        self.last_synced_txn_id = self.send_once(overdue)?;
                        self.observer.initial_store_done();
                        last_snapshot = Instant::now();
                    } else if !warned_empty {
                        log::warn!(db = self.db; "LMDB is empty, waiting for data");
                        warned_empty = true;
                    }
                }
            }
            if self.sched.waiting().is_empty() {
                self.observer.pass_completed();
            }
            let stats_every = self.opts.log_stats_interval;
            if !stats_every.is_zero() && last_stats_log.elapsed() >= stats_every {
                crate::status::log_lmdb_stats(&self.db, &self.env, self.opts.log_stats_smaps);
                last_stats_log = Instant::now();
            }
            if self.opts.only_once && self.sched.waiting().is_empty() {
                log::info!(db = self.db; "Stopping, because requested to only do a single pass");
                return Ok(());
            }
        }
    }
}
