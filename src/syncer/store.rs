//! The executor's storing step (upstream `SendOnce`): reads the LMDB in one transaction (a
//! write transaction in shadow mode, which first captures local changes into the shadows),
//! dumps what the export plan asks for, and uploads each object with the configured retries,
//! recording what was stored for the next delta and for the cleaner.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::observer::StoreReport;
use super::{Syncer, now_ns};
use crate::core::name::SnapshotName;
use crate::export;
use crate::export::dump::Dumped;
use crate::lmdb::Txn;
use crate::retry::{self, Attempts, Policy, Reason, Verdict, sleep_unless_stopped};
use crate::storage::put_file;

impl Syncer {
    /// Creates and stores a snapshot or delta; returns the LMDB txn ID it covers. Native mode
    /// reads in a read-only transaction; shadow mode first captures local changes into the
    /// shadows, in a write transaction.
    pub(super) fn send_once(&mut self, forced: bool) -> anyhow::Result<u64> {
        let t0 = Instant::now();
        let stored = self.stored;
        let (txn_id, dumped, time_acquire, time_copy_shadow) = if self.load_opts.native {
            let txn =
                crate::lmdb::retry_lmdb("Starting a read transaction", || self.env.begin_ro())
                    .context("starting read transaction")?;
            let ts = now_ns();
            let txn_id = txn.id();
            let time_acquire = t0.elapsed();
            let dumped = self.dump(&txn, stored.as_ref(), txn_id, ts, forced)?;
            (txn_id, dumped, time_acquire, Duration::ZERO)
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
            self.observer.shadow_synced(txn_id, time_copy_shadow);
            let dumped = self.dump(&txn, stored.as_ref(), txn_id, ts, forced)?;
            txn.commit().context("committing the shadow update")?;
            (txn_id, dumped, time_acquire, time_copy_shadow)
        };
        let Some(dumped) = dumped else {
            self.observer.receive_only_skip(txn_id);
            return Ok(txn_id);
        };
        let time_dump = t0.elapsed() - time_acquire - time_copy_shadow;
        for d in dumped {
            self.store_dumped(d, txn_id, t0, [time_acquire, time_copy_shadow, time_dump])?;
        }
        Ok(txn_id)
    }

    /// What the export plan asks to store at `txn_id`; `None` in receive-only mode.
    fn dump<T: Txn>(
        &self,
        txn: &T,
        stored: Option<&export::Stored>,
        txn_id: u64,
        ts: i64,
        forced: bool,
    ) -> anyhow::Result<Option<Vec<Dumped>>> {
        if self.opts.receive_only {
            return Ok(None);
        }
        let dumped = self.dumper.dump_planned(txn, stored, txn_id, ts, forced)?;
        Ok(Some(dumped))
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
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.observer.generated(ts, size);
        let t_store = Instant::now();
        self.store_with_retries(&name, &mut file)?;
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
        if let Some(c) = &self.committed {
            // Everything merged so far is in the snapshot just stored.
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            for (inst, merged) in self.sched.processed() {
                if let Ok((n, _)) = SnapshotName::parse_object(merged) {
                    c.insert(inst.clone(), n.timestamp_ns);
                }
            }
        }
        let [acquire, copy_shadow, dump] = times;
        self.observer.stored(&StoreReport {
            name: &name,
            delta,
            txn_id,
            ts,
            size,
            uncompressed_size: stats.uncompressed_size,
            entries: stats.entries,
            times: [acquire, copy_shadow, dump, t_store.elapsed(), t0.elapsed()],
        });
        Ok(())
    }

    /// Uploads `file` as `name`, `storage_retry_count` times or forever
    /// (`storage_retry_forever`), `storage_retry_interval` apart, until stopped.
    fn store_with_retries(&self, name: &str, file: &mut std::fs::File) -> anyhow::Result<()> {
        let attempts = if self.opts.storage_retry_forever {
            Attempts::Forever
        } else {
            Attempts::Max(u32::try_from(self.opts.storage_retry_count.max(1)).unwrap_or(u32::MAX))
        };
        let policy = Policy::constant(attempts, self.opts.storage_retry_interval);
        let mut failed = 0;
        let stored = retry::run(
            &policy,
            || {
                self.observer.store_attempt();
                let r = put_file(self.storage.as_ref(), name, file);
                match &r {
                    Ok(()) => self.observer.store_succeeded(),
                    Err(e) => {
                        failed += 1;
                        self.observer
                            .store_failed(name, e, !policy.allows_another(failed));
                    }
                }
                r
            },
            |_| Verdict::Retry,
            |_| {},
            |d| sleep_unless_stopped(&self.stop, d),
        );
        match stored {
            Ok(()) => Ok(()),
            Err(f) if f.reason == Reason::Stopped => {
                bail!("stopped while storing snapshot {name}: {}", f.error)
            }
            Err(f) => bail!("storing snapshot {name}: {}", f.error),
        }
    }
}
