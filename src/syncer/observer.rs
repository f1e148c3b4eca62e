//! Everything the syncer tells the outside world, in one handle: the log lines (with the Go
//! version's messages and fields, which operators grep for), the Prometheus metrics, the status
//! page's board and the health trackers. The executor and the scheduler's actions go through
//! it, so the sync logic itself names no global and a test can give a syncer a detached one.

use std::collections::BTreeMap;
use std::time::Duration;

use super::scheduler::Action;
use crate::base::now_ns;
use crate::import::load::Merged;
use crate::metrics::{metrics, unix_seconds};
use crate::status::health::DbHealth;
use crate::status::update_board;

/// The reporting handle of one LMDB's syncer.
#[derive(Clone)]
pub struct Observer {
    db: String,
    health: DbHealth,
}

/// What one merge did, for the "Loaded remote update" line.
pub struct LoadReport<'a> {
    pub instance: &'a str,
    pub name: &'a str,
    pub merged: &'a Merged,
    pub time_total: Duration,
    pub compressed_size: u64,
    pub snapshot_timestamp: u64,
}

/// What one store did, for the "Stored snapshot" line.
pub struct StoreReport<'a> {
    pub name: &'a str,
    pub delta: bool,
    pub txn_id: u64,
    /// The time in the object's name.
    pub ts: i64,
    pub size: u64,
    pub uncompressed_size: u64,
    pub entries: u64,
    /// Acquiring the transaction, copying main to shadow, dumping, storing, and in all.
    pub times: [Duration; 5],
}

fn kind(delta: bool) -> &'static str {
    if delta { "delta" } else { "snapshot" }
}

impl Observer {
    pub fn new(db: &str, health: DbHealth) -> Observer {
        Observer {
            db: db.to_string(),
            health,
        }
    }

    /// Records a current problem on the status page's board (secret-free: the error texts
    /// name objects and storage responses, never configuration values).
    fn board_error(&self, what: &str, error: String) {
        update_board(&self.db, |b| {
            b.errors.insert(what.to_string(), (now_ns(), error));
        });
    }

    fn board_clear(&self, what: &str) {
        update_board(&self.db, |b| {
            b.errors.remove(what);
        });
    }

    /// The time in an object's name, as `last_received_seconds` has it, as this instance's
    /// newest merged object of that instance.
    fn merged_up_to(&self, instance: &str, name: &str) {
        if let Ok((n, _)) = crate::core::name::SnapshotName::parse_object(name) {
            metrics()
                .last_merged
                .with_label_values(&[&self.db, instance])
                .set(unix_seconds(n.timestamp_ns));
        }
    }

    /// The state of an instance's delta chain here, in words, for the status page.
    pub fn chain_state(&self, instance: &str, chain: &super::chain::Chain) {
        let described = chain.describe();
        update_board(&self.db, |b| {
            b.chains.insert(instance.to_string(), described);
        });
    }

    /// The LMDB moved past what our last snapshot or merge covered.
    pub fn local_change(&self, txn_id: u64) {
        update_board(&self.db, |b| {
            b.last_local_change = Some((txn_id, now_ns()));
        });
    }

    /// The health trackers (the lister reports to them directly).
    pub fn health(&self) -> &DbHealth {
        &self.health
    }

    pub fn started(&self, instance: &str, native: bool) {
        if native {
            log::info!(db = self.db; "schema_tracks_changes enabled");
        } else {
            log::info!(db = self.db; "This LMDB has schema_tracks_changes disabled and will use shadow databases for version tracking.");
        }
        log::info!(db = self.db, instance = instance; "Initialised syncer");
        update_board(&self.db, |b| b.instance = instance.to_string());
    }

    pub fn initial_listing_failed(&self, e: &anyhow::Error) {
        log::info!(db = self.db, error = format!("{e:#}"); "Waiting for initial receiver listing");
    }

    pub fn initial_listing_done(&self, own_snapshots: bool) {
        self.health.start.passed_initial_listing();
        if own_snapshots {
            log::info!(db = self.db; "This instance has existing snapshots that must be loaded before we create new snapshots");
        }
    }

    /// Start-up stored its first snapshot, or had nothing to store.
    pub fn initial_store_done(&self) {
        self.health.start.passed_initial_store();
    }

    /// A pass of the main loop ended with nothing left to wait for.
    pub fn pass_completed(&self) {
        if self.health.start.is_complete() {
            return;
        }
        self.health.start.pass_completed();
        if self.health.start.is_complete() {
            // Logged after the pass's local check: a change made before this line was seen.
            log::info!(db = self.db; "Start-up complete: every instance's snapshots are loaded");
            update_board(&self.db, |b| b.startup_complete = true);
        }
    }

    pub fn still_waiting(&self, instances: &[String]) {
        log::info!(db = self.db, instances = instances.join(" "); "Still waiting for snapshots from instances");
    }

    /// Reports one of the scheduler's decisions.
    pub fn scheduled(&self, action: &Action) {
        let db = self.db.as_str();
        match action {
            Action::Download { instance, name } => {
                log::debug!(db = db, snapshot_instance = instance, filename = name; "New snapshot detected");
            }
            Action::Adopted { instance, name } => {
                log::info!(db = db, snapshot_instance = instance, filename = name;
                    "Full snapshot covered by the merged delta chain, not downloaded");
                self.merged_up_to(instance, name);
                update_board(db, |b| {
                    b.merged.insert(instance.clone(), name.clone());
                });
            }
            Action::Gap {
                instance,
                name,
                chain_end,
            } => {
                log::warn!(db = db, snapshot_instance = instance, filename = name, chain_end_txn = chain_end;
                    "Delta chain broken (missing, cleaned or corrupt delta); merging the deltas after it, complete again with the instance's next full snapshot");
                metrics()
                    .delta_chain_gaps
                    .with_label_values(&[db, instance])
                    .inc();
            }
            Action::Corrupt {
                instance,
                name,
                reason,
            } => {
                log::warn!(db = db, filename = name, error = reason; "Snapshot marked as corrupt and will be ignored");
                self.board_error(
                    &format!("load {instance}"),
                    format!("{name} is corrupt and skipped: {reason}"),
                );
            }
            Action::DoneWaiting { instance } => {
                log::info!(db = db, other_instance = instance; "No longer waiting for instance");
            }
            Action::Vanished { instance } => {
                log::info!(db = db, cleaned_instance = instance; "No longer waiting for instance, because its snapshots disappeared");
            }
            Action::NewLatest { instance, name } => {
                if let Ok((n, _)) = crate::core::name::SnapshotName::parse_object(name) {
                    let m = metrics();
                    let labels = [db, instance.as_str()];
                    m.last_received
                        .with_label_values(&labels)
                        .set(unix_seconds(n.timestamp_ns));
                    m.last_received_age
                        .with_label_values(&labels)
                        .observe(unix_seconds(now_ns().saturating_sub(n.timestamp_ns)));
                }
            }
            Action::Listed { latest } => {
                let latest: BTreeMap<String, String> = latest.clone();
                update_board(db, |b| b.latest = latest);
            }
        }
    }

    pub fn listed(&self) {
        self.board_clear("list");
    }

    pub fn listing_failed(&self, e: &anyhow::Error) {
        log::error!(db = self.db, error = format!("{e:#}"); "Fetch error");
        self.board_error("list", format!("listing the storage: {e:#}"));
    }

    /// A download or merge of the instance's object `name` that will be retried later.
    pub fn load_failed(&self, instance: &str, name: &str, e: &dyn std::fmt::Display) {
        log::warn!(db = self.db, filename = name, error = e.to_string(); "Load error");
        self.board_error(&format!("load {instance}"), format!("{name}: {e}"));
    }

    pub fn loading(&self, instance: &str, own: bool) {
        if own {
            log::info!(db = self.db, snapshot_instance = instance; "Loading update for own instance");
        } else {
            log::debug!(db = self.db, snapshot_instance = instance; "Loading update");
        }
    }

    pub fn loaded(&self, r: &LoadReport) {
        let m = r.merged;
        let delta = super::scheduler::is_delta(r.name);
        log::info!(db = self.db, snapshot_instance = r.instance, shorthash = shorthash(r.name),
            txnID = m.txn_id, time_total = format!("{:?}", r.time_total),
            time_write_lock = format!("{:?}", m.time_write_lock),
            time_write_total = format!("{:?}", m.time_write_total),
            write_transactions = m.write_txns,
            merged = m.differences.map_or("whole snapshot".to_string(), |n| format!("{n} differing entries")),
            entries = m.stats.entries, written = m.stats.written,
            timestamp = r.snapshot_timestamp, extra = "",
            compressed_size_bytes = r.compressed_size,
            kind = kind(delta); "Loaded remote update");
        let m = metrics();
        m.merge_duration
            .with_label_values(&[&self.db, kind(delta)])
            .observe(r.time_total.as_secs_f64());
        m.merge_write_lock
            .with_label_values(&[&self.db])
            .observe(r.merged.time_write_lock.as_secs_f64());
        self.merged_up_to(r.instance, r.name);
        update_board(&self.db, |b| {
            b.merged.insert(r.instance.to_string(), r.name.to_string());
            b.errors.remove(&format!("load {}", r.instance));
        });
        if delta {
            metrics()
                .deltas_loaded
                .with_label_values(&[&self.db, r.instance])
                .inc();
        }
    }

    pub fn shadow_synced(&self, txn_id: u64, took: Duration) {
        log::info!(db = self.db, txnID = txn_id, time_total = format!("{took:?}"); "Synced data to shadow");
    }

    pub fn receive_only_skip(&self, txn_id: u64) {
        log::info!(db = self.db, txnID = txn_id; "Snapshot store skipped, because running in receive-only mode");
    }

    /// An object is about to be stored.
    pub fn generated(&self, ts: i64, size: u64) {
        let m = metrics();
        m.snapshots_generated.with_label_values(&[&self.db]).inc();
        m.snapshots_generated_last_unix
            .with_label_values(&[&self.db])
            .set(unix_seconds(ts));
        m.snapshots_generated_last_size
            .with_label_values(&[&self.db])
            .set(size as i64);
    }

    pub fn store_attempt(&self) {
        metrics().store_calls.inc();
    }

    pub fn store_succeeded(&self) {
        self.health.store.add_success();
        self.board_clear("store");
    }

    /// A failed attempt to store `name`; `gave_up` when no retry follows.
    pub fn store_failed(&self, name: &str, e: &dyn std::fmt::Display, gave_up: bool) {
        self.board_error("store", format!("storing {name}: {e}"));
        let m = metrics();
        m.store_failed_attempts.with_label_values(&[&self.db]).inc();
        self.health.store.add_failure(e);
        if gave_up {
            m.store_failed_permanently
                .with_label_values(&[&self.db])
                .inc();
            log::warn!(db = self.db, error = e.to_string(); "Store failed too many times, giving up");
        } else {
            log::warn!(db = self.db, error = e.to_string(); "Store failed, retrying");
        }
    }

    pub fn stored(&self, r: &StoreReport) {
        let m = metrics();
        m.store_bytes.inc_by(r.size as f64);
        if r.delta {
            m.deltas_stored.with_label_values(&[&self.db]).inc();
        }
        update_board(&self.db, |b| {
            b.last_stored = Some((r.name.to_string(), r.ts));
            b.last_stored_size = r.size;
        });
        let ratio = if r.size > 0 {
            r.uncompressed_size as f64 / r.size as f64
        } else {
            0.0
        };
        let [acquire, copy_shadow, dump, store, total] = r.times;
        log::info!(db = self.db, snapshot_name = r.name, txnID = r.txn_id,
            time_acquire = format!("{acquire:?}"), time_copy_shadow = format!("{copy_shadow:?}"),
            time_dump = format!("{dump:?}"), time_compress = "0s", time_gc = "0s",
            time_store = format!("{store:?}"), time_total = format!("{total:?}"),
            uncompressed_size = r.uncompressed_size, snapshot_size = r.size,
            compression_ratio = format!("1:{ratio:.2}"), entries = r.entries,
            snapshot_kind = kind(r.delta); "Stored snapshot");
    }
}

fn shorthash(name: &str) -> String {
    crate::core::name::SnapshotName::parse_object(name)
        .map(|n| n.0.shorthash())
        .unwrap_or_default()
}
