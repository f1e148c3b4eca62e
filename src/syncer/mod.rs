//! One syncer per configured LMDB (upstream `syncer/`): the start-up sequence and main loop of
//! spec/sync-loop.md §2–§4 — list the bucket, merge every other instance's latest snapshot (and
//! our own once at start-up), and store a new snapshot whenever the LMDB's last transaction ID
//! moves past what our last snapshot or merge covered. This version runs the loop on the calling
//! thread; `--only-once` returns after the first complete pass.

pub mod load;
pub mod send;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::lmdb::{Env, Txn};
use crate::merge::LoadOptions;
use crate::snapshot::Meta;
use crate::snapshot::encode::GzipWriter;
use crate::snapshot::name::SnapshotName;
use crate::storage::{Storage, put_file};
use load::FetchError;

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
}

pub struct Syncer {
    db: String,
    env: Arc<Env>,
    storage: Arc<dyn Storage>,
    instance: String,
    hostname: String,
    opts: SyncOptions,
    load_opts: LoadOptions,
    stop: Arc<AtomicBool>,

    last_synced_txn_id: u64,
    /// Valid snapshot names per instance from the last listing, oldest first, corrupt ones removed.
    listing: BTreeMap<String, Vec<String>>,
    /// Per instance, the snapshot last merged (or given up on).
    processed: BTreeMap<String, String>,
    corrupt: BTreeSet<String>,
    retry_after: BTreeMap<String, Instant>,
    waiting: BTreeSet<String>,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The OS host name (Meta.hostname, and the instance name when none is configured): the UTS
/// name gethostname(2) returns, read from /proc so that `unsafe` stays in the LMDB wrapper.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_default()
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
        Syncer {
            db: db.to_string(),
            env,
            storage,
            instance: instance.to_string(),
            hostname: hostname(),
            opts,
            load_opts,
            stop,
            last_synced_txn_id: 0,
            listing: BTreeMap::new(),
            processed: BTreeMap::new(),
            corrupt: BTreeSet::new(),
            retry_after: BTreeMap::new(),
            waiting: BTreeSet::new(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Lists `<db>__` objects and groups the valid snapshot names by instance.
    fn refresh_listing(&mut self) -> anyhow::Result<()> {
        let prefix = format!("{}__", self.db);
        let objects = self
            .storage
            .list(&prefix)
            .with_context(|| format!("listing {prefix}*"))?;
        let mut listing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in objects {
            if self.corrupt.contains(&o.name) {
                continue;
            }
            match SnapshotName::parse(&o.name) {
                Ok(n) => listing.entry(n.instance).or_default().push(o.name),
                Err(e) => {
                    log::debug!(db = self.db, filename = o.name, error = e.to_string(); "Skipping invalid filename")
                }
            }
        }
        // Storage lists in name order, which is time order within one instance.
        for names in listing.values_mut() {
            names.sort();
        }
        self.listing = listing;
        Ok(())
    }

    /// Instances whose latest snapshot has not been merged yet (our own only when `own`).
    fn pending(&self, own: bool) -> Vec<(String, String)> {
        let now = Instant::now();
        self.listing
            .iter()
            .filter(|(inst, _)| own || **inst != self.instance)
            .filter_map(|(inst, names)| {
                let latest = names.last()?;
                if self.processed.get(inst) == Some(latest) {
                    return None;
                }
                if self.retry_after.get(inst).is_some_and(|t| *t > now) {
                    return None;
                }
                Some((inst.clone(), latest.clone()))
            })
            .collect()
    }

    fn deleted_cutoff(&self) -> u64 {
        match self.opts.tombstone_cutoff_ns {
            Some(c) => now_ns().saturating_sub(c).max(0) as u64,
            None => 0,
        }
    }

    /// Merges the latest snapshot of `instance`, falling back to its older snapshots when the
    /// latest is corrupt. Returns whether a snapshot was merged and whether local changes were
    /// pending when it was.
    fn load_instance(&mut self, instance: &str) -> anyhow::Result<Option<bool>> {
        loop {
            let Some(name) = self.listing.get(instance).and_then(|v| v.last()).cloned() else {
                if self.waiting.remove(instance) {
                    log::info!(db = self.db, cleaned_instance = instance; "No longer waiting for instance, because its snapshots disappeared");
                }
                return Ok(None);
            };
            if instance == self.instance {
                log::info!(db = self.db, snapshot_instance = instance; "Loading update for own instance");
            } else {
                log::debug!(db = self.db, snapshot_instance = instance; "Loading update");
            }
            let t0 = Instant::now();
            let fetched = load::fetch(self.storage.as_ref(), &name).and_then(|f| {
                log::info!(db = self.db, snapshot_instance = instance,
                    timestamp = f.index.meta.timestamp_nano, shorthash = shorthash(&name),
                    time_load_storage = format!("{:?}", f.time_load_storage),
                    time_load_total = format!("{:?}", t0.elapsed()); "Snapshot downloaded");
                let mut opts = self.load_opts.clone();
                opts.deleted_cutoff = self.deleted_cutoff();
                let size = f.compressed_size;
                load::merge(&self.env, f, self.last_synced_txn_id, &opts).map(|m| (m, size))
            });
            match fetched {
                Ok((merged, size)) => {
                    log::info!(db = self.db, snapshot_instance = instance, shorthash = shorthash(&name),
                        txnID = merged.txn_id, time_total = format!("{:?}", t0.elapsed()),
                        time_write_lock = format!("{:?}", merged.time_write_lock),
                        entries = merged.stats.entries, written = merged.stats.written,
                        compressed_size_bytes = size, kind = "snapshot"; "Loaded remote update");
                    self.processed.insert(instance.to_string(), name);
                    self.retry_after.remove(instance);
                    if self.waiting.remove(instance) {
                        log::info!(db = self.db, other_instance = instance; "No longer waiting for instance");
                    }
                    if !merged.local_changed {
                        self.last_synced_txn_id = merged.txn_id;
                    }
                    return Ok(Some(merged.local_changed));
                }
                Err(FetchError::Corrupt { name, reason }) => {
                    log::warn!(db = self.db, filename = name, error = reason; "Snapshot marked as corrupt and will be ignored");
                    self.corrupt.insert(name.clone());
                    if let Some(v) = self.listing.get_mut(instance) {
                        v.retain(|n| *n != name);
                    }
                }
                Err(FetchError::Storage(e)) => {
                    log::warn!(db = self.db, filename = name, error = e.to_string(); "Load error");
                    self.retry_after.insert(
                        instance.to_string(),
                        Instant::now() + self.opts.storage_retry_interval,
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates and stores a snapshot; returns the LMDB txn ID it covers (upstream `SendOnce`).
    fn send_once(&mut self) -> anyhow::Result<u64> {
        let t0 = Instant::now();
        let txn = self.env.begin_ro().context("starting read transaction")?;
        let ts = now_ns();
        let txn_id = txn.id();
        if self.opts.receive_only {
            log::info!(db = self.db, txnID = txn_id; "Snapshot store skipped, because running in receive-only mode");
            return Ok(txn_id);
        }
        let time_acquire = t0.elapsed();
        let meta = Meta {
            generation_id: b"GX".to_vec(),
            instance_id: self.instance.as_bytes().to_vec(),
            hostname: self.hostname.as_bytes().to_vec(),
            lmdb_txn_id: txn_id as i64,
            timestamp_nano: ts as u64,
            database_name: self.db.as_bytes().to_vec(),
            from_lmdb_txn_id: 0,
        };
        let file = tempfile::tempfile().context("creating a temporary file for the snapshot")?;
        let gz = GzipWriter::new(BufWriter::with_capacity(256 * 1024, file));
        let (gz, stats) = send::write_native_snapshot(&txn, &meta, gz)
            .with_context(|| format!("creating snapshot of LMDB {:?}", self.db))?;
        drop(txn);
        let time_dump = t0.elapsed() - time_acquire;
        let mut file = gz
            .finish()
            .and_then(|mut w| w.flush().map(|_| w))
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .context("compressing snapshot")?;
        let name = SnapshotName::new(&self.db, &self.instance, ts).object_name();
        let t_store = Instant::now();
        self.store_with_retries(&name, &mut file)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let ratio = if size > 0 {
            stats.uncompressed_size as f64 / size as f64
        } else {
            0.0
        };
        log::info!(db = self.db, snapshot_name = name, txnID = txn_id,
            time_acquire = format!("{time_acquire:?}"), time_dump = format!("{time_dump:?}"),
            time_store = format!("{:?}", t_store.elapsed()), time_total = format!("{:?}", t0.elapsed()),
            uncompressed_size = stats.uncompressed_size, snapshot_size = size,
            compression_ratio = format!("1:{ratio:.2}"), entries = stats.entries,
            snapshot_kind = "snapshot"; "Stored snapshot");
        Ok(txn_id)
    }

    fn store_with_retries(&self, name: &str, file: &mut std::fs::File) -> anyhow::Result<()> {
        let mut attempt: i64 = 0;
        loop {
            match put_file(self.storage.as_ref(), name, file) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    attempt += 1;
                    if !self.opts.storage_retry_forever && attempt >= self.opts.storage_retry_count
                    {
                        log::warn!(db = self.db, error = e.to_string(); "Store failed too many times, giving up");
                        bail!("storing snapshot {name}: {e}");
                    }
                    log::warn!(db = self.db, error = e.to_string(); "Store failed, retrying");
                    self.sleep(self.opts.storage_retry_interval);
                    if self.stopped() {
                        bail!("stopped while storing snapshot {name}: {e}");
                    }
                }
            }
        }
    }

    /// Runs the syncer until it is stopped, or after one complete pass with `only_once`.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let info = self.env.info().context("reading LMDB info")?;
        let has_data_at_start = info.last_txn_id > 0;
        log::info!(db = self.db; "schema_tracks_changes enabled");
        log::info!(db = self.db, instance = self.instance; "Initialised syncer");

        while let Err(e) = self.refresh_listing() {
            log::info!(db = self.db, error = format!("{e:#}"); "Waiting for initial receiver listing");
            self.sleep(Duration::from_secs(1));
            if self.stopped() {
                return Ok(());
            }
        }
        let has_snapshots = !self.listing.is_empty();
        self.waiting = self.listing.keys().cloned().collect();
        if self.waiting.contains(&self.instance) {
            log::info!(db = self.db; "This instance has existing snapshots that must be loaded before we create new snapshots");
        }
        if has_data_at_start && !has_snapshots {
            log::info!(db = self.db; "Performing initial snapshot, because none exists yet");
            self.last_synced_txn_id = self.send_once()?;
        }
        let mut last_snapshot = Instant::now();
        let mut last_list = Instant::now();
        let mut own_pending = true;
        let mut warned_empty = false;

        loop {
            // (a) merge what is new, our own old snapshot only at start-up
            let mut loads = 0;
            for (instance, _) in self.pending(own_pending) {
                if let Some(local_changed) = self.load_instance(&instance)? {
                    loads += 1;
                    if local_changed && loads >= 10 {
                        break;
                    }
                }
            }
            own_pending = self.waiting.contains(&self.instance);
            if !self.waiting.is_empty() {
                let still: Vec<_> = self.waiting.iter().cloned().collect();
                log::info!(db = self.db, instances = still.join(" "); "Still waiting for snapshots from instances");
            }

            // (c) forced snapshot
            let force = &self.opts.force_snapshot_interval;
            let overdue =
                !self.opts.receive_only && !force.is_zero() && last_snapshot.elapsed() > *force;
            if overdue {
                log::info!(db = self.db, last_snapshot_time_passed = format!("{:?}", last_snapshot.elapsed()); "Snapshot overdue, forcing one");
            }

            // (d) local changes
            let last_txn_id = self.env.info().context("reading LMDB info")?.last_txn_id;
            if last_txn_id > self.last_synced_txn_id || overdue {
                if self.waiting.contains(&self.instance) {
                    log::info!(db = self.db; "Waiting to load own old snapshot before writing a new one");
                } else {
                    self.last_synced_txn_id = last_txn_id;
                    if has_data_at_start || self.last_synced_txn_id > 0 {
                        self.last_synced_txn_id = self.send_once()?;
                        last_snapshot = Instant::now();
                    } else if !warned_empty {
                        log::warn!(db = self.db; "LMDB is empty, waiting for data");
                        warned_empty = true;
                    }
                }
            }

            // (e) exit rule
            if self.opts.only_once && self.waiting.is_empty() {
                log::info!(db = self.db; "Stopping, because requested to only do a single pass");
                return Ok(());
            }
            if self.stopped() {
                return Ok(());
            }
            self.sleep(self.opts.lmdb_poll_interval);
            if self.stopped() {
                return Ok(());
            }
            let retry_due = !self.retry_after.is_empty();
            if last_list.elapsed() >= self.opts.storage_poll_interval || retry_due {
                if let Err(e) = self.refresh_listing() {
                    log::error!(db = self.db, error = format!("{e:#}"); "Fetch error");
                }
                last_list = Instant::now();
                // Instances whose snapshots all disappeared are no longer waited for.
                let gone: Vec<_> = self
                    .waiting
                    .iter()
                    .filter(|i| !self.listing.contains_key(*i))
                    .cloned()
                    .collect();
                for g in gone {
                    self.waiting.remove(&g);
                    log::info!(db = self.db, cleaned_instance = g; "No longer waiting for instance, because its snapshots disappeared");
                }
            }
        }
    }
}

fn shorthash(name: &str) -> String {
    SnapshotName::parse(name)
        .map(|n| n.shorthash())
        .unwrap_or_default()
}
