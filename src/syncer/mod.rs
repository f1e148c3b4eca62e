//! One syncer per configured LMDB (upstream `syncer/`): the start-up sequence and main loop of
//! spec/sync-loop.md §2–§4. The syncer thread owns every LMDB write: it merges other instances'
//! latest snapshots (and our own once, at start-up) as the downloaders deliver them, and stores
//! a new snapshot whenever the LMDB's last transaction ID moves past what our last snapshot or
//! merge covered. Listing, downloading and polling run on background threads (`receiver`) that
//! talk to it over one `mpsc` channel. `--only-once` returns after the first complete pass.

pub mod chain;
pub mod cleaner;

pub mod receiver;

pub mod sweeper;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::base::{hostname, now_ns};
use crate::core::name::SnapshotName;
use crate::export;
use crate::import::LoadOptions;
use crate::import::load::{self, FetchError, Fetched};
use crate::lmdb::{Env, Txn};
use crate::metrics::metrics;
use crate::pipeline::ParallelGzip;
use crate::snapshot::Meta;
use crate::status::health::DbHealth;
use crate::status::update_board;
use crate::storage::{Storage, put_file};
use receiver::{Background, Gate, Job, Listing, Msg, Permit, list_snapshots, sleep_unless_stopped};

/// At most this many snapshots are merged in a row while local changes wait to be snapshotted.
const MAX_CONSECUTIVE_LOADS: usize = 10;

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
    /// Encryption of what we store and identities for what we fetch (`encryption`).
    pub keys: Arc<crate::crypt::Keyring>,
}

pub struct Syncer {
    db: String,
    env: Arc<Env>,
    storage: Arc<dyn Storage>,
    instance: String,
    hostname: String,
    opts: SyncOptions,
    load_opts: LoadOptions,
    /// Process-wide: set by signals or by a failing sibling syncer.
    stop: Arc<AtomicBool>,

    last_synced_txn_id: u64,
    /// Valid snapshot names per instance from the last listing, oldest first, corrupt ones removed.
    listing: Listing,
    /// Per instance, the snapshot handed to the downloaders last.
    requested: BTreeMap<String, String>,
    /// Per instance, the snapshot last merged (or given up on).
    processed: BTreeMap<String, String>,
    corrupt: BTreeSet<String>,
    retry_at: BTreeMap<String, Instant>,
    /// Validated snapshots waiting to be merged, the latest per instance.
    pending: BTreeMap<String, (String, Fetched, Permit)>,
    waiting: BTreeSet<String>,
    health: DbHealth,
    /// The cleaner's record of merged snapshots included in one of ours (per instance, the
    /// snapshot time in ns), updated after every stored snapshot.
    committed: Option<Arc<std::sync::Mutex<BTreeMap<String, i64>>>>,
    /// What this process stored last (the next delta continues it).
    stored: Option<export::Stored>,
    /// Per instance, the chain of its objects merged here.
    chains: BTreeMap<String, chain::Chain>,
    /// Per instance, the delta at which its chain was last found broken, the number of the
    /// listing that showed it first, and whether the gap was reported (once).
    gaps: BTreeMap<String, (String, u64, bool)>,
    /// Listings received so far (numbers them for `gaps`).
    listings: u64,
}

fn shorthash(name: &str) -> String {
    SnapshotName::parse_object(name)
        .map(|n| n.0.shorthash())
        .unwrap_or_default()
}

/// An object dumped to a temporary file, ready to store.
struct Dumped {
    file: std::fs::File,
    stats: export::SnapshotStats,
    name: String,
    delta: bool,
    /// The time in its name.
    ts: i64,
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
            listing: Listing::new(),
            requested: BTreeMap::new(),
            processed: BTreeMap::new(),
            corrupt: BTreeSet::new(),
            retry_at: BTreeMap::new(),
            pending: BTreeMap::new(),
            waiting: BTreeSet::new(),
            health: DbHealth::detached(),
            committed: None,
            stored: None,
            chains: BTreeMap::new(),
            gaps: BTreeMap::new(),
            listings: 0,
        }
    }

    /// Reports to these health trackers instead of detached ones.
    pub fn with_health(mut self, health: DbHealth) -> Syncer {
        self.health = health;
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

    fn deleted_cutoff(&self) -> u64 {
        match self.opts.tombstone_cutoff_ns {
            Some(c) => now_ns().saturating_sub(c).max(0) as u64,
            None => 0,
        }
    }

    /// Takes a new listing: corrupt names stay out, vanished instances are no longer waited for.
    fn set_listing(&mut self, mut listing: Listing) {
        let now = now_ns();
        for (inst, names) in &listing {
            let Some(latest) = names.last() else { continue };
            let known = self.listing.get(inst).and_then(|n| n.last()) == Some(latest);
            if known || (*inst == self.instance && !self.waiting.contains(inst)) {
                continue;
            }
            if let Ok((n, _)) = SnapshotName::parse_object(latest) {
                let m = metrics();
                let labels = [self.db.as_str(), inst.as_str()];
                m.last_received
                    .with_label_values(&labels)
                    .set(crate::metrics::unix_seconds(n.timestamp_ns));
                m.last_received_age.with_label_values(&labels).observe(
                    crate::metrics::unix_seconds(now.saturating_sub(n.timestamp_ns)),
                );
            }
        }
        update_board(&self.db, |b| {
            b.latest = listing
                .iter()
                .filter_map(|(i, n)| n.last().map(|l| (i.clone(), l.clone())))
                .collect();
        });
        for names in listing.values_mut() {
            names.retain(|n| !self.corrupt.contains(n));
        }
        listing.retain(|_, names| !names.is_empty());
        self.listing = listing;
        let gone: Vec<String> = self
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

    /// Hands each instance's next object (chain.rs: its newest full snapshot not merged yet,
    /// else the delta continuing what we merged, or the one after a gap) to the downloaders,
    /// one per instance at a time, since what comes next depends on what was merged (and so
    /// that an instance writing faster than we download cannot pile up a queue of objects
    /// that are stale before their turn comes: seen with Garage under chaos). Our own
    /// objects only while we still wait for our own (start-up): then every own delta is merged,
    /// gap or not, so that our own data comes back before we write a new full snapshot. Also
    /// ends the wait for instances whose chain is complete.
    fn request_downloads(&mut self, jobs: &Sender<Job>) {
        let now = Instant::now();
        let own_allowed = self.waiting.contains(&self.instance);
        let mut complete = Vec::new();
        let mut adopted = Vec::new();
        for (inst, names) in &self.listing {
            if *inst == self.instance && !own_allowed {
                continue;
            }
            let chain = self.chains.get(inst).cloned().unwrap_or_default();
            let next = match chain::next_step(names, &chain) {
                chain::Step::Load(n) => n,
                chain::Step::Adopt(n) => {
                    adopted.push((inst.clone(), n));
                    continue;
                }
                chain::Step::UpToDate => {
                    // A broken chain is complete only with the instance's next full snapshot;
                    // we alone write our own, and without any full snapshot there is none.
                    if !chain.broken || *inst == self.instance || chain.base.is_none() {
                        complete.push(inst.clone());
                    }
                    continue;
                }
                chain::Step::Gap(n) => {
                    let listings = self.listings;
                    let gap = self
                        .gaps
                        .entry(inst.clone())
                        .or_insert_with(|| (n.clone(), listings, false));
                    if gap.0 != n {
                        *gap = (n.clone(), listings, false);
                    }
                    // A listing is not always a snapshot of the bucket: a directory read while
                    // objects are renamed into it, or S3 pages fetched seconds apart (a stalled
                    // request), can miss a delta stored before a later one they show. The next
                    // listing begins after this one arrived, so it has every delta stored by
                    // then: only a gap that it shows too is taken for real.
                    if self.listings <= gap.1 {
                        continue;
                    }
                    if !gap.2 {
                        gap.2 = true;
                        log::warn!(db = self.db, snapshot_instance = inst, filename = n, chain_end_txn = chain.end;
                            "Delta chain broken (missing, cleaned or corrupt delta); merging the deltas after it, complete again with the instance's next full snapshot");
                        metrics()
                            .delta_chain_gaps
                            .with_label_values(&[&self.db, inst])
                            .inc();
                    }
                    n
                }
            };
            if self.requested.contains_key(inst)
                || self.pending.contains_key(inst)
                || self.retry_at.get(inst).is_some_and(|t| *t > now)
            {
                continue;
            }
            log::debug!(db = self.db, snapshot_instance = inst, filename = next; "New snapshot detected");
            self.retry_at.remove(inst);
            self.requested.insert(inst.clone(), next.clone());
            let _ = jobs.send(Job::new(inst, &next));
        }
        for inst in complete {
            if self.waiting.remove(&inst) {
                log::info!(db = self.db, other_instance = inst; "No longer waiting for instance");
            }
        }
        if adopted.is_empty() {
            return;
        }
        for (inst, name) in adopted {
            log::info!(db = self.db, snapshot_instance = inst, filename = name;
                "Full snapshot covered by the merged delta chain, not downloaded");
            let chain = self.chains.get(&inst).cloned().unwrap_or_default();
            self.chains.insert(inst.clone(), chain.adopted(&name));
            update_board(&self.db, |b| {
                b.merged.insert(inst.clone(), name.clone());
            });
            self.processed.insert(inst, name);
        }
        // What follows an adopted snapshot (its deltas, or the end of the wait).
        self.request_downloads(jobs);
    }

    /// A snapshot that cannot be merged: never again, and the instance's previous one is next.
    fn mark_corrupt(&mut self, instance: &str, name: &str, reason: &str) {
        log::warn!(db = self.db, filename = name, error = reason; "Snapshot marked as corrupt and will be ignored");
        self.skip(instance, name);
    }

    /// Never requests `name` again; the instance's previous object is next.
    fn skip(&mut self, instance: &str, name: &str) {
        self.corrupt.insert(name.to_string());
        self.requested.remove(instance);
        let listing = std::mem::take(&mut self.listing);
        self.set_listing(listing);
    }

    fn handle(&mut self, msg: Msg, jobs: &Sender<Job>) {
        match msg {
            Msg::Listing(Ok(l)) => {
                self.listings += 1;
                self.set_listing(l)
            }
            Msg::Listing(Err(e)) => {
                log::error!(db = self.db, error = format!("{e:#}"); "Fetch error");
                return;
            }
            Msg::Fetched {
                instance,
                name,
                result: Ok(boxed),
            } => {
                let (fetched, permit) = *boxed;
                if self.requested.get(&instance) == Some(&name) {
                    self.requested.remove(&instance);
                    self.pending.insert(instance, (name, fetched, permit));
                }
            }
            Msg::Fetched {
                instance,
                name,
                result: Err(FetchError::Corrupt { reason, .. }),
            } => self.mark_corrupt(&instance, &name, &reason),
            Msg::Fetched {
                instance,
                name,
                result: Err(e @ FetchError::Undecryptable { .. }),
            } => {
                // Skipped like a corrupt object (logged once: never requested again).
                log::warn!(db = self.db, filename = name, error = e.to_string(); "Encrypted snapshot skipped");
                self.skip(&instance, &name);
            }
            Msg::Fetched {
                instance,
                name,
                result: Err(e),
            } => {
                log::warn!(db = self.db, filename = name, error = e.to_string(); "Load error");
                self.requested.remove(&instance);
                self.retry_at
                    .insert(instance, Instant::now() + self.opts.storage_retry_interval);
            }
            Msg::LocalTxn(_) => return,
        }
        self.request_downloads(jobs);
    }

    /// Merges the pending snapshots (upstream main loop step (a)).
    fn apply_pending(&mut self, jobs: &Sender<Job>) -> anyhow::Result<()> {
        let mut loads = 0;
        let instances: Vec<String> = self.pending.keys().cloned().collect();
        for instance in instances {
            if self.stopped() {
                break;
            }
            let Some((name, fetched, permit)) = self.pending.remove(&instance) else {
                continue;
            };
            if instance == self.instance {
                log::info!(db = self.db, snapshot_instance = instance; "Loading update for own instance");
            } else {
                log::debug!(db = self.db, snapshot_instance = instance; "Loading update");
            }
            let mut opts = self.load_opts.clone();
            opts.deleted_cutoff = self.deleted_cutoff();
            let size = fetched.compressed_size;
            let fetched_ts = fetched.index.meta.timestamp_nano;
            let meta_txn_id = u64::try_from(fetched.index.meta.lmdb_txn_id).unwrap_or(0);
            let is_delta = matches!(
                SnapshotName::parse_object(&name),
                Ok((_, crate::core::name::Kind::Delta { .. }))
            );
            let t0 = Instant::now();
            let merged = load::merge(
                &self.env,
                fetched,
                self.last_synced_txn_id,
                &opts,
                self.opts.merge_limits,
            );
            drop(permit);
            match merged {
                Ok(m) => {
                    log::info!(db = self.db, snapshot_instance = instance, shorthash = shorthash(&name),
                        txnID = m.txn_id, time_total = format!("{:?}", t0.elapsed()),
                        time_write_lock = format!("{:?}", m.time_write_lock),
                        time_write_total = format!("{:?}", m.time_write_total),
                        write_transactions = m.write_txns,
                        merged = m.differences.map_or("whole snapshot".to_string(), |n| format!("{n} differing entries")),
                        entries = m.stats.entries, written = m.stats.written,
                        timestamp = fetched_ts, extra = "",
                        compressed_size_bytes = size,
                        kind = if is_delta { "delta" } else { "snapshot" }; "Loaded remote update");
                    update_board(&self.db, |b| {
                        b.merged.insert(instance.clone(), name.clone());
                    });
                    if is_delta {
                        metrics()
                            .deltas_loaded
                            .with_label_values(&[&self.db, &instance])
                            .inc();
                    }
                    let chain = self.chains.get(&instance).cloned().unwrap_or_default();
                    self.chains
                        .insert(instance.clone(), chain.applied(&name, meta_txn_id));
                    self.processed.insert(instance.clone(), name);
                    // Asks for the chain's next object, or ends the wait for the instance.
                    self.request_downloads(jobs);
                    if !m.local_changed {
                        self.last_synced_txn_id = m.txn_id;
                    }
                    loads += 1;
                    if m.local_changed && loads >= MAX_CONSECUTIVE_LOADS {
                        break;
                    }
                }
                Err(FetchError::Corrupt { reason, .. }) => {
                    self.mark_corrupt(&instance, &name, &reason);
                    self.request_downloads(jobs);
                }
                Err(e @ FetchError::Io { .. }) => {
                    // Our temporary copy could not be read: fetch it again later.
                    log::warn!(db = self.db, filename = name, error = e.to_string(); "Load error");
                    self.retry_at.insert(
                        instance.clone(),
                        Instant::now() + self.opts.storage_retry_interval,
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn meta(&self, txn_id: u64, ts: i64, from: u64) -> Meta {
        Meta {
            generation_id: b"GX".to_vec(),
            instance_id: self.instance.as_bytes().to_vec(),
            hostname: self.hostname.as_bytes().to_vec(),
            lmdb_txn_id: txn_id as i64,
            timestamp_nano: ts as u64,
            database_name: self.db.as_bytes().to_vec(),
            from_lmdb_txn_id: from as i64,
        }
    }

    /// Streams what `txn` sees into a temporary gzip file: a full snapshot, or with `after`
    /// a delta of the entries written after that transaction (`None` if it is too large).
    fn dump<T: Txn>(
        &self,
        txn: &T,
        meta: &Meta,
        after: Option<u64>,
    ) -> anyhow::Result<Option<(std::fs::File, export::SnapshotStats)>> {
        let file = tempfile::tempfile().context("creating a temporary file for the snapshot")?;
        // Compression runs on worker threads, beside the LMDB reading and encoding.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        // Encrypted (when configured) as the compressed bytes are written: no second pass.
        let sealed = self
            .opts
            .keys
            .seal(BufWriter::with_capacity(256 * 1024, file))
            .context("starting the encryption")?;
        let gz = ParallelGzip::new(sealed, threads).context("starting the compression threads")?;
        let (shadow, hack) = (!self.load_opts.native, self.load_opts.dupsort_hack);
        let written = match after {
            Some(a) => export::write_delta(txn, meta, gz, shadow, hack, a),
            None => export::write_snapshot(txn, meta, gz, shadow, hack).map(Some),
        }
        .with_context(|| format!("creating snapshot of LMDB {:?}", self.db))?;
        let Some((gz, stats)) = written else {
            return Ok(None);
        };
        let file = gz
            .finish()
            .and_then(|sealed| sealed.finish())
            .and_then(|mut w| w.flush().map(|_| w))
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .context("compressing snapshot")?;
        Ok(Some((file, stats)))
    }

    /// Dumps what the plan asks for at `txn_id`, in storing order: a delta if one is due and
    /// not too large, else a full snapshot, after a bridging delta when the plan says so.
    /// Nothing when there is nothing to store (an empty delta).
    fn dump_planned<T: Txn>(
        &self,
        txn: &T,
        txn_id: u64,
        ts: i64,
        forced: bool,
    ) -> anyhow::Result<Vec<Dumped>> {
        let plan = export::plan(
            self.opts.deltas.as_ref(),
            self.stored.as_ref(),
            txn_id,
            forced,
            Instant::now(),
        );
        let mut out = Vec::new();
        let (reason, bridge) = match plan {
            export::Plan::Nothing => return Ok(out),
            export::Plan::Delta { from } => match self.dump_delta(txn, txn_id, ts, from)? {
                // Nothing new (a change that left no header behind): nothing to say.
                Some(d) if d.stats.entries == 0 => return Ok(out),
                Some(d) => return Ok(vec![d]),
                None => ("delta too large", None),
            },
            export::Plan::Bridge { from, reason } => (reason, Some(from)),
            export::Plan::Full(reason) => (reason, None),
        };
        // The bridging delta is stored even when empty: it says the chain reaches `txn_id`.
        if let Some(from) = bridge
            && let Some(d) = self.dump_delta(txn, txn_id, ts, from)?
        {
            out.push(d);
        }
        let name = if self.opts.deltas.is_some() {
            log::info!(db = self.db, reason = reason, bridged = !out.is_empty(); "Writing a full snapshot");
            // One nanosecond after the bridging delta, so that it sorts after it.
            SnapshotName::full_covering(&self.db, &self.instance, ts + 1, txn_id)
        } else {
            SnapshotName::new(&self.db, &self.instance, ts)
        };
        let (file, stats) = self
            .dump(txn, &self.meta(txn_id, name.timestamp_ns, 0), None)?
            .context("a full snapshot has no size limit")?;
        out.push(Dumped {
            file,
            stats,
            name: name.object_name(),
            delta: false,
            ts: name.timestamp_ns,
        });
        Ok(out)
    }

    /// A delta of the entries written after `from` (`None` if too large).
    fn dump_delta<T: Txn>(
        &self,
        txn: &T,
        txn_id: u64,
        ts: i64,
        from: u64,
    ) -> anyhow::Result<Option<Dumped>> {
        let dumped = self.dump(txn, &self.meta(txn_id, ts, from), Some(from))?;
        Ok(dumped.map(|(file, stats)| Dumped {
            file,
            stats,
            name: SnapshotName::delta(&self.db, &self.instance, ts, from, txn_id).object_name(),
            delta: true,
            ts,
        }))
    }

    /// Creates and stores a snapshot or delta; returns the LMDB txn ID it covers (upstream
    /// `SendOnce`). Native mode reads in a read-only transaction; shadow mode first captures
    /// local changes into the shadows, in a write transaction.
    fn send_once(&mut self, forced: bool) -> anyhow::Result<u64> {
        let t0 = Instant::now();
        let (txn_id, _ts, dumped, time_acquire, time_copy_shadow) = if self.load_opts.native {
            let txn =
                crate::lmdb::retry_lmdb("Starting a read transaction", || self.env.begin_ro())
                    .context("starting read transaction")?;
            let ts = now_ns();
            let txn_id = txn.id();
            let time_acquire = t0.elapsed();
            let dumped = if self.opts.receive_only {
                None
            } else {
                Some(self.dump_planned(&txn, txn_id, ts, forced)?)
            };
            (txn_id, ts, dumped, time_acquire, Duration::ZERO)
        } else {
            let mut txn =
                crate::lmdb::retry_lmdb("Starting a write transaction", || self.env.begin_rw())
                    .context("starting write transaction")?;
            let ts = now_ns();
            let time_acquire = t0.elapsed();
            let pass = crate::import::shadow::main_to_shadow(
                &mut txn,
                ts.max(1) as u64,
                self.load_opts.dupsort_hack,
                0,
            )
            .with_context(|| format!("syncing main to shadow in LMDB {:?}", self.db))?;
            let time_copy_shadow = t0.elapsed() - time_acquire;
            // An empty write transaction does not advance the ID; LMDB reuses it.
            let txn_id = if pass.changed() {
                txn.id()
            } else {
                txn.id() - 1
            };
            log::info!(db = self.db, txnID = txn_id, time_total = format!("{time_copy_shadow:?}"); "Synced data to shadow");
            let dumped = if self.opts.receive_only {
                None
            } else {
                Some(self.dump_planned(&txn, txn_id, ts, forced)?)
            };
            txn.commit().context("committing the shadow update")?;
            (txn_id, ts, dumped, time_acquire, time_copy_shadow)
        };
        let Some(dumped) = dumped else {
            log::info!(db = self.db, txnID = txn_id; "Snapshot store skipped, because running in receive-only mode");
            return Ok(txn_id);
        };
        let time_dump = t0.elapsed() - time_acquire - time_copy_shadow;
        for d in dumped {
            self.store_dumped(d, txn_id, t0, [time_acquire, time_copy_shadow, time_dump])?;
        }
        Ok(txn_id)
    }

    /// Stores one dumped object of the read at `txn_id` and records it; `times` are the
    /// acquire, shadow copy and dump durations of that read.
    fn store_dumped(
        &mut self,
        d: Dumped,
        txn_id: u64,
        t0: Instant,
        times: [Duration; 3],
    ) -> anyhow::Result<()> {
        let Dumped {
            mut file,
            stats,
            name,
            delta,
            ts,
        } = d;
        let [time_acquire, time_copy_shadow, time_dump] = times;
        let name = self.opts.keys.object_name(&name);
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let m = metrics();
        m.snapshots_generated.with_label_values(&[&self.db]).inc();
        m.snapshots_generated_last_unix
            .with_label_values(&[&self.db])
            .set(crate::metrics::unix_seconds(ts));
        m.snapshots_generated_last_size
            .with_label_values(&[&self.db])
            .set(size as i64);
        let t_store = Instant::now();
        self.store_with_retries(&name, &mut file)?;
        m.store_bytes.inc_by(size as f64);
        self.stored = Some(match (delta, self.stored) {
            (true, Some(s)) => export::Stored {
                txn_id,
                deltas: s.deltas + 1,
                ..s
            },
            _ => export::Stored {
                txn_id,
                full_at: Instant::now(),
                deltas: 0,
            },
        });
        if delta {
            m.deltas_stored.with_label_values(&[&self.db]).inc();
        }
        update_board(&self.db, |b| b.last_stored = Some((name.clone(), ts)));
        if let Some(c) = &self.committed {
            // Everything merged so far is in the snapshot just stored.
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            for (inst, merged) in &self.processed {
                if let Ok((n, _)) = SnapshotName::parse_object(merged) {
                    c.insert(inst.clone(), n.timestamp_ns);
                }
            }
        }
        let ratio = if size > 0 {
            stats.uncompressed_size as f64 / size as f64
        } else {
            0.0
        };
        let kind = if delta { "delta" } else { "snapshot" };
        log::info!(db = self.db, snapshot_name = name, txnID = txn_id,
            time_acquire = format!("{time_acquire:?}"), time_copy_shadow = format!("{time_copy_shadow:?}"),
            time_dump = format!("{time_dump:?}"), time_compress = "0s", time_gc = "0s",
            time_store = format!("{:?}", t_store.elapsed()), time_total = format!("{:?}", t0.elapsed()),
            uncompressed_size = stats.uncompressed_size, snapshot_size = size,
            compression_ratio = format!("1:{ratio:.2}"), entries = stats.entries,
            snapshot_kind = kind; "Stored snapshot");
        Ok(())
    }

    fn store_with_retries(&self, name: &str, file: &mut std::fs::File) -> anyhow::Result<()> {
        let mut attempt: i64 = 0;
        loop {
            metrics().store_calls.inc();
            match put_file(self.storage.as_ref(), name, file) {
                Ok(()) => {
                    self.health.store.add_success();
                    return Ok(());
                }
                Err(e) => {
                    attempt += 1;
                    metrics()
                        .store_failed_attempts
                        .with_label_values(&[&self.db])
                        .inc();
                    self.health.store.add_failure(&e);
                    if !self.opts.storage_retry_forever && attempt >= self.opts.storage_retry_count
                    {
                        metrics()
                            .store_failed_permanently
                            .with_label_values(&[&self.db])
                            .inc();
                        log::warn!(db = self.db, error = e.to_string(); "Store failed too many times, giving up");
                        bail!("storing snapshot {name}: {e}");
                    }
                    log::warn!(db = self.db, error = e.to_string(); "Store failed, retrying");
                    if !sleep_unless_stopped(&self.stop, self.opts.storage_retry_interval) {
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
        if self.load_opts.native {
            log::info!(db = self.db; "schema_tracks_changes enabled");
        } else {
            log::info!(db = self.db; "This LMDB has schema_tracks_changes disabled and will use shadow databases for version tracking.");
        }
        log::info!(db = self.db, instance = self.instance; "Initialised syncer");
        update_board(&self.db, |b| b.instance = self.instance.clone());

        let listing = loop {
            match list_snapshots(self.storage.as_ref(), &self.db, &self.health) {
                Ok(l) => break l,
                Err(e) => {
                    log::info!(db = self.db, error = format!("{e:#}"); "Waiting for initial receiver listing");
                    if !sleep_unless_stopped(&self.stop, Duration::from_secs(1)) {
                        return Ok(());
                    }
                }
            }
        };
        self.health.start.passed_initial_listing();
        let has_snapshots = !listing.is_empty();
        self.waiting = listing.keys().cloned().collect();
        self.set_listing(listing);
        if self.waiting.contains(&self.instance) {
            log::info!(db = self.db; "This instance has existing snapshots that must be loaded before we create new snapshots");
        }
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
            self.health.start.passed_initial_store();
        }
        if !has_data_at_start {
            self.health.start.passed_initial_store();
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
            self.health.clone(),
            self.opts.keys.clone(),
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
        self.request_downloads(jobs);
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
            if self.retry_at.values().any(|t| *t <= Instant::now()) {
                self.request_downloads(jobs);
            }
            self.apply_pending(jobs)?;
            if self.stopped() {
                return Ok(());
            }
            // A single pass ends as soon as it is complete, not at the next poll tick.
            if self.opts.only_once && self.waiting.is_empty() {
                next_local_check = next_local_check.min(Instant::now());
            }
            if Instant::now() < next_local_check {
                continue;
            }
            next_local_check = Instant::now() + poll;

            if !self.waiting.is_empty() && last_waiting_log.elapsed() >= Duration::from_secs(1) {
                let still: Vec<_> = self.waiting.iter().cloned().collect();
                log::info!(db = self.db, instances = still.join(" "); "Still waiting for snapshots from instances");
                last_waiting_log = Instant::now();
            }
            let force = self.opts.force_snapshot_interval;
            let overdue =
                !self.opts.receive_only && !force.is_zero() && last_snapshot.elapsed() > force;
            if overdue {
                log::info!(db = self.db, last_snapshot_time_passed = format!("{:?}", last_snapshot.elapsed()); "Snapshot overdue, forcing one");
            }
            let last_txn_id = self.env.info().context("reading LMDB info")?.last_txn_id;
            if last_txn_id > self.last_synced_txn_id || overdue {
                if self.waiting.contains(&self.instance) {
                    log::info!(db = self.db; "Waiting to load own old snapshot before writing a new one");
                } else {
                    self.last_synced_txn_id = last_txn_id;
                    if has_data_at_start || self.last_synced_txn_id > 0 {
                        self.last_synced_txn_id = self.send_once(overdue)?;
                        self.health.start.passed_initial_store();
                        last_snapshot = Instant::now();
                    } else if !warned_empty {
                        log::warn!(db = self.db; "LMDB is empty, waiting for data");
                        warned_empty = true;
                    }
                }
            }
            if self.waiting.is_empty() && !self.health.start.is_complete() {
                self.health.start.pass_completed();
                if self.health.start.is_complete() {
                    update_board(&self.db, |b| b.startup_complete = true);
                }
            }
            let stats_every = self.opts.log_stats_interval;
            if !stats_every.is_zero() && last_stats_log.elapsed() >= stats_every {
                crate::status::log_lmdb_stats(&self.db, &self.env, self.opts.log_stats_smaps);
                last_stats_log = Instant::now();
            }
            if self.opts.only_once && self.waiting.is_empty() {
                log::info!(db = self.db; "Stopping, because requested to only do a single pass");
                return Ok(());
            }
        }
    }
}
