//! The tomb sweeper (upstream `syncer/sweeper`, spec/sync-loop.md §9): removes deletion markers
//! (tombstones) older than the retention period, so that deleted keys do not accumulate for
//! ever. It walks every DBI with LS headers (all DBIs in native mode, only the `_sync*` ones in
//! shadow mode) in slices, each its own write transaction that ends after about `lock_duration`,
//! with `release_duration` pauses between them so that PowerDNS gets the write lock in between.
//! [`sweep_slice`] is the pure step over one transaction; [`Sweeper`] runs the schedule.
//! Retention arithmetic is upstream's float32 one (`SweeperConfig::retention_duration_ns`); the
//! load-time cutoff (merge.md §2.1) keeps remote copies of swept tombstones from coming back.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::core::header;
use crate::lmdb::{Dbi, Env, LmdbError, MDB_DUPSORT, RwTxn, Txn};
use crate::metrics::metrics;

use crate::retry::sleep_unless_stopped;

/// Records between two looks at the clock (upstream `LimitDurationCheckEveryDefault`).
pub const CHECK_EVERY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("failed to parse header for key {key}: {reason}")]
    Header { key: String, reason: String },
    #[error("failed to sweep dbi {dbi}: {source}")]
    Lmdb {
        dbi: String,
        #[source]
        source: LmdbError,
    },
}

/// Counts of one sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Live entries plus tombstones kept.
    pub entries: u64,
    /// Tombstones kept (younger than the cutoff).
    pub deleted: u64,
    /// Tombstones removed.
    pub cleaned: u64,
    pub transactions: u64,
}

/// Sweeps `dbi` from just after `resume` (from the start when `None`) until its end, or until
/// `time_up()` — asked every [`CHECK_EVERY`] records — says to stop. Tombstones with a
/// timestamp below `cutoff_ns` are deleted. Returns the key to resume after when stopped early.
pub fn sweep_slice(
    txn: &mut RwTxn,
    dbi: Dbi,
    dbi_name: &str,
    resume: Option<&[u8]>,
    cutoff_ns: u64,
    time_up: &mut dyn FnMut() -> bool,
    stats: &mut SweepStats,
) -> Result<Option<Vec<u8>>, SweepError> {
    let lmdb = |source| SweepError::Lmdb {
        dbi: dbi_name.to_string(),
        source,
    };
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut stopped_at = None;
    {
        let mut cur = txn.cursor(dbi).map_err(lmdb)?;
        let mut item = match resume {
            None => cur.first().map_err(lmdb)?,
            Some(k) => match cur.set_range(k).map_err(lmdb)? {
                Some((key, _)) if key == k => cur.next_entry().map_err(lmdb)?,
                other => other,
            },
        };
        let mut count = 0u64;
        while let Some((key, value)) = item {
            if count > 0 && count.is_multiple_of(CHECK_EVERY) && time_up() {
                break;
            }
            count += 1;
            let (h, _) = header::parse(value).map_err(|e| SweepError::Header {
                key: crate::core::display::display_ascii(key, crate::base::now_ns()),
                reason: e.to_string(),
            })?;
            if !h.is_deleted() {
                stats.entries += 1;
            } else if h.timestamp >= cutoff_ns {
                stats.entries += 1;
                stats.deleted += 1;
            } else {
                stats.cleaned += 1;
                doomed.push(key.to_vec());
            }
            stopped_at = Some(key.to_vec());
            item = cur.next_entry().map_err(lmdb)?;
        }
        if item.is_none() {
            stopped_at = None;
        }
    }
    for key in &doomed {
        txn.del(dbi, key).map_err(lmdb)?;
    }
    Ok(stopped_at)
}

/// Settings of a sweeper, from `sweeper:` in the config.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub retention_ns: i64,
    pub first_interval: Duration,
    pub interval: Duration,
    pub lock_duration: Duration,
    pub release_duration: Duration,
    /// Native mode sweeps every DBI; shadow mode only the `_sync*` ones.
    pub native: bool,
}

/// Result of one full sweep, with the longest write transaction it held.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub stats: SweepStats,
    pub longest_txn: Duration,
    pub time_taken: Duration,
    /// Asked to stop before the sweep was complete.
    pub interrupted: bool,
}

pub struct Sweeper {
    pub db: String,
    pub env: Arc<Env>,
    pub opts: SweepOptions,
    pub stop: Arc<AtomicBool>,
}

impl Sweeper {
    /// One full sweep of every eligible DBI at wall-clock time `now_ns`.
    pub fn sweep(&self, now_ns: i64) -> Result<SweepReport, SweepError> {
        let t0 = Instant::now();
        let cutoff = now_ns.saturating_sub(self.opts.retention_ns).max(0) as u64;
        let root = |source| SweepError::Lmdb {
            dbi: String::new(),
            source,
        };
        let names = {
            let txn = self.env.begin_ro().map_err(root)?;
            txn.list_dbis().map_err(root)?
        };
        let mut report = SweepReport::default();
        for name in names {
            if !self.opts.native && !name.starts_with(b"_sync") {
                continue;
            }
            let label = String::from_utf8_lossy(&name).into_owned();
            let mut resume: Option<Vec<u8>> = None;
            loop {
                if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    report.interrupted = true;
                    return Ok(report);
                }
                let lmdb = |source| SweepError::Lmdb {
                    dbi: label.clone(),
                    source,
                };
                let began = Instant::now();
                let mut txn = self.env.begin_rw().map_err(lmdb)?;
                report.stats.transactions += 1;
                let Some(dbi) = txn.open_dbi(&name).map_err(lmdb)? else {
                    break;
                };
                if txn.dbi_flags(dbi).map_err(lmdb)? & MDB_DUPSORT != 0 {
                    // Values of DUPSORT DBIs never carry LS headers (shadow mode keeps them
                    // in plain shadow DBIs via dupsort_hack).
                    log::debug!(db = self.db, component = "sweeper", dbi = label; "Skipping DUPSORT DBI");
                    break;
                }
                let limit = self.opts.lock_duration;
                let mut time_up = || !limit.is_zero() && began.elapsed() >= limit;
                let next = sweep_slice(
                    &mut txn,
                    dbi,
                    &label,
                    resume.as_deref(),
                    cutoff,
                    &mut time_up,
                    &mut report.stats,
                )?;
                txn.commit().map_err(lmdb)?;
                report.longest_txn = report.longest_txn.max(began.elapsed());
                match next {
                    Some(k) => {
                        log::debug!(db = self.db, component = "sweeper", dbi = label; "Sweep limit reached, continuing after pause");
                        resume = Some(k);
                        if !sleep_unless_stopped(&self.stop, self.opts.release_duration) {
                            report.interrupted = true;
                            return Ok(report);
                        }
                    }
                    None => break,
                }
            }
        }
        report.time_taken = t0.elapsed();
        Ok(report)
    }

    /// Sweeps and reports in metrics and the log.
    pub fn sweep_and_report(&self) -> Result<SweepReport, SweepError> {
        let r = self.sweep(crate::base::now_ns())?;
        if r.interrupted {
            return Ok(r);
        }
        let m = metrics();
        let s = &r.stats;
        let db = self.db.as_str();
        m.sweeper_cleaned.with_label_values(&[db]).inc_by(s.cleaned);
        m.sweeper_stats_total_entries
            .with_label_values(&[db])
            .set(s.entries as i64);
        m.sweeper_stats_deleted_entries
            .with_label_values(&[db])
            .set(s.deleted as i64);
        m.sweeper_stats_available.with_label_values(&[db]).set(1);
        m.observe_sweep(db, r.time_taken.as_secs_f64());
        let fraction = if s.entries > 0 {
            s.deleted as f64 / s.entries as f64
        } else {
            0.0
        };
        log::info!(db = db, component = "sweeper", total_entries = s.entries,
            deleted_entries = s.deleted, deleted_fraction = format!("{fraction:.3}"),
            cleaned_entries = s.cleaned, transactions = s.transactions,
            longest_transaction = format!("{:?}", r.longest_txn),
            time_taken = format!("{:?}", r.time_taken); "Sweep for stale deleted entries completed");
        Ok(r)
    }

    /// The sweeper thread: waits `first_interval`, then sweeps every `interval`.
    pub fn run(self) {
        let mut wait = self.opts.first_interval;
        while sleep_unless_stopped(&self.stop, wait) {
            wait = self.opts.interval;
            if let Err(e) = self.sweep_and_report() {
                log::warn!(db = self.db, component = "sweeper", error = e.to_string(); "Sweep failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000_000_000;
    const NOW: u64 = 1_714_557_600_000_000_000;

    use crate::testutil::{header_value as value, put_all as fill};

    fn env(dir: &std::path::Path) -> Arc<Env> {
        crate::testutil::scratch_env(dir, "db", 256 << 20)
    }

    fn contents(env: &Env, dbi_name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let txn = env.begin_ro().unwrap();
        let Some(dbi) = txn.open_dbi(dbi_name).unwrap() else {
            return Vec::new();
        };
        txn.cursor(dbi)
            .unwrap()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    fn sweeper(env: Arc<Env>, native: bool, lock: Duration) -> Sweeper {
        Sweeper {
            db: "t".into(),
            env,
            opts: SweepOptions {
                retention_ns: (10 * DAY) as i64,
                first_interval: Duration::ZERO,
                interval: Duration::from_secs(1),
                lock_duration: lock,
                release_duration: Duration::ZERO,
                native,
            },
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn removes_only_expired_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let old = NOW - 11 * DAY;
        let young = NOW - 9 * DAY;
        let entries = vec![
            (b"a-live-old".to_vec(), value(old, false, b"v")),
            (b"b-tomb-old".to_vec(), value(old, true, b"")),
            (b"c-tomb-young".to_vec(), value(young, true, b"")),
            (b"d-live-young".to_vec(), value(young, false, b"w")),
            // Exactly at the cutoff: kept (upstream keeps ts >= cutoff).
            (b"e-tomb-cutoff".to_vec(), value(NOW - 10 * DAY, true, b"")),
        ];
        fill(&env, b"records", &entries);
        let r = sweeper(env.clone(), true, Duration::from_millis(50))
            .sweep(NOW as i64)
            .unwrap();
        assert_eq!(
            r.stats,
            SweepStats {
                entries: 4,
                deleted: 2,
                cleaned: 1,
                transactions: 1
            }
        );
        let left: Vec<Vec<u8>> = contents(&env, b"records")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            left,
            vec![
                b"a-live-old".to_vec(),
                b"c-tomb-young".to_vec(),
                b"d-live-young".to_vec(),
                b"e-tomb-cutoff".to_vec()
            ]
        );
    }

    #[test]
    fn shadow_mode_only_touches_sync_dbis() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let tomb = value(NOW - 100 * DAY, true, b"");
        // A user DBI whose raw value merely looks like an old tombstone must stay untouched.
        fill(&env, b"records", &[(b"k".to_vec(), tomb.clone())]);
        fill(
            &env,
            b"_sync_shadow_records",
            &[(b"k".to_vec(), tomb.clone())],
        );
        let r = sweeper(env.clone(), false, Duration::ZERO)
            .sweep(NOW as i64)
            .unwrap();
        assert_eq!(r.stats.cleaned, 1);
        assert_eq!(contents(&env, b"records").len(), 1);
        assert!(contents(&env, b"_sync_shadow_records").is_empty());
    }

    #[test]
    fn a_value_without_header_fails_the_sweep_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let tomb = value(NOW - 100 * DAY, true, b"");
        fill(
            &env,
            b"records",
            &[(b"a".to_vec(), tomb), (b"b".to_vec(), b"short".to_vec())],
        );
        let e = sweeper(env.clone(), true, Duration::ZERO)
            .sweep(NOW as i64)
            .unwrap_err();
        assert!(
            e.to_string().contains("failed to parse header for key b"),
            "{e}"
        );
        assert_eq!(contents(&env, b"records").len(), 2);
    }

    /// Slices end when the clock says so, resume exactly where they stopped, and together
    /// visit every entry once.
    #[test]
    fn slices_resume_after_the_last_key() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let old = NOW - 100 * DAY;
        let entries: Vec<_> = (0..5500u32)
            .map(|i| {
                let k = format!("k{i:06}").into_bytes();
                (k, value(old, i % 2 == 0, b"x"))
            })
            .collect();
        fill(&env, b"records", &entries);
        let mut stats = SweepStats::default();
        let mut resume = None;
        let mut slices = 0;
        loop {
            let mut txn = env.begin_rw().unwrap();
            let dbi = txn.open_dbi(b"records").unwrap().unwrap();
            // Time is always up: each slice handles exactly CHECK_EVERY records.
            let next = sweep_slice(
                &mut txn,
                dbi,
                "records",
                resume.as_deref(),
                NOW - DAY,
                &mut || true,
                &mut stats,
            )
            .unwrap();
            txn.commit().unwrap();
            slices += 1;
            match next {
                Some(k) => resume = Some(k),
                None => break,
            }
        }
        assert_eq!(slices, 6);
        assert_eq!(stats.cleaned, 2750);
        assert_eq!(stats.entries, 2750);
        let left = contents(&env, b"records");
        assert_eq!(left.len(), 2750);
        assert!(
            left.iter()
                .all(|(_, v)| !header::parse(v).unwrap().0.is_deleted())
        );
    }

    /// The write lock is held for about `lock_duration` per slice, measured by the sweeper.
    #[test]
    fn write_transactions_stay_near_the_lock_duration() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(dir.path());
        let entries: Vec<_> = (0..200_000u32)
            .map(|i| {
                let k = format!("key-{i:08}").into_bytes();
                (k, value(NOW - (i as u64 % 20) * DAY, i % 3 == 0, b"value"))
            })
            .collect();
        fill(&env, b"records", &entries);
        let lock = Duration::from_millis(2);
        let r = sweeper(env.clone(), true, lock).sweep(NOW as i64).unwrap();
        assert!(r.stats.transactions > 1, "{r:?}");
        // Slack: the clock is read every 1000 records, plus the deletes and the commit.
        assert!(r.longest_txn < lock + Duration::from_millis(100), "{r:?}");
        assert_eq!(r.stats.entries + r.stats.cleaned, 200_000);
        let mut expect_cleaned = 0;
        for i in 0..200_000u64 {
            if i % 3 == 0 && i % 20 > 10 {
                expect_cleaned += 1;
            }
        }
        assert_eq!(r.stats.cleaned, expect_cleaned);
    }
}
