//! The executor's merging step (upstream main loop step (a)): the validated objects waiting in
//! `pending` are merged into the LMDB one after the other, each result handed back to the
//! scheduler and reported through the observer.

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::observer::LoadReport;
use super::receiver::Job;
use super::{Syncer, now_ns};
use crate::import::load::{self, FetchError};

/// At most this many snapshots are merged in a row while local changes wait to be snapshotted.
const MAX_CONSECUTIVE_LOADS: usize = 10;

impl Syncer {
    /// The tombstone cutoff of a merge now (merge.md §2.1), 0 without the sweeper.
    fn deleted_cutoff(&self) -> u64 {
        match self.opts.tombstone_cutoff_ns {
            Some(c) => now_ns().saturating_sub(c).max(0) as u64,
            None => 0,
        }
    }

    /// Merges the pending objects.
    pub(super) fn apply_pending(&mut self, jobs: &Sender<Job>) -> anyhow::Result<()> {
        let mut loads = 0;
        let instances: Vec<String> = self.pending.keys().cloned().collect();
        for instance in instances {
            if self.stopped() {
                break;
            }
            let Some((name, fetched, permit)) = self.pending.remove(&instance) else {
                continue;
            };
            self.sched.take_pending(&instance);
            self.observer.loading(&instance, instance == self.instance);
            let mut opts = self.load_opts.clone();
            opts.deleted_cutoff = self.deleted_cutoff();
            let compressed_size = fetched.compressed_size;
            let snapshot_timestamp = fetched.index.meta.timestamp_nano;
            let meta_txn_id = u64::try_from(fetched.index.meta.lmdb_txn_id).unwrap_or(0);
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
                    self.observer.loaded(&LoadReport {
                        instance: &instance,
                        name: &name,
                        merged: &m,
                        time_total: t0.elapsed(),
                        compressed_size,
                        snapshot_timestamp,
                    });
                    // Asks for the chain's next object, or ends the wait for the instance.
                    let next = self
                        .sched
                        .merged(&instance, &name, meta_txn_id, Instant::now());
                    self.observer
                        .chain_state(&instance, self.sched.chain(&instance));
                    self.act(next, jobs);
                    if !m.local_changed {
                        self.last_synced_txn_id = m.txn_id;
                    }
                    loads += 1;
                    if m.local_changed && loads >= MAX_CONSECUTIVE_LOADS {
                        break;
                    }
                }
                Err(FetchError::Corrupt { reason, .. }) => {
                    let next = self
                        .sched
                        .merge_corrupt(&instance, &name, &reason, Instant::now());
                    self.act(next, jobs);
                }
                Err(e @ FetchError::Io { .. }) => {
                    // Our temporary copy could not be read: fetch it again later.
                    self.observer.load_failed(&instance, &name, &e);
                    self.sched.merge_retry(&instance, Instant::now());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
