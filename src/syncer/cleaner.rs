//! The snapshot cleaner (upstream `syncer/cleaner`, spec/sync-loop.md §8): removes snapshots
//! that every instance has moved past, for all instances, not just our own. The decision is the
//! pure [`Cleaner::plan`] over a listing and a clock reading, so that it can be tested on a fake
//! clock; [`run`] is the thread that lists, plans and deletes. Rules, identical to the Go version
//! so that both can clean one bucket: a snapshot is kept while first seen less than
//! `must_keep_interval` ago (by this process; object times can lag behind their appearance), each
//! instance keeps its newest snapshot, and an instance's last snapshot goes only when older than
//! `remove_old_instances_interval` and already merged into a snapshot we stored since. Our
//! deltas (which Go's cleaner cannot parse, so never touches) go once older than their
//! instance's newest full snapshot and first seen more than `must_keep_interval` ago; they
//! never count as an instance's snapshot, so full snapshots are cleaned exactly as before.
//! With retention, each run first copies what the listing shows into the retained prefix
//! (`restore::archive`) and deletes only objects that are retained or that no window needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::name::{Kind, SnapshotName};
use crate::metrics::metrics;
use crate::restore::archive::Archive;
use crate::storage::Storage;

use crate::retry::sleep_unless_stopped;

/// Why a snapshot is deleted (the `reason` label of `lightningstream_cleaner_delete_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    NewerSnapshot,
    StaleInstance,
    /// A delta older than its instance's newest full snapshot.
    SupersededDelta,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::NewerSnapshot => "newer snapshot",
            Reason::StaleInstance => "stale instance",
            Reason::SupersededDelta => "superseded delta",
        }
    }
}

/// The cleaner's memory between runs.
pub struct Cleaner {
    must_keep: Duration,
    remove_old_instances: Duration,
    /// When this process first saw each snapshot name in a listing.
    first_seen: HashMap<String, Instant>,
    /// Per instance, the snapshot time (ns, from the name) of the latest snapshot we merged
    /// and then included in a snapshot of our own.
    committed: Arc<Mutex<BTreeMap<String, i64>>>,
}

/// The outcome of one planning pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub delete: Vec<(String, Reason)>,
    /// Stale snapshots kept because we have not proven that their data is in ours.
    pub unproven: Vec<String>,
    pub total: usize,
}

impl Cleaner {
    pub fn new(must_keep: Duration, remove_old_instances: Duration) -> Cleaner {
        Cleaner {
            must_keep,
            remove_old_instances,
            first_seen: HashMap::new(),
            committed: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// A handle the syncer uses to report what its stored snapshots include.
    pub fn committed_handle(&self) -> Arc<Mutex<BTreeMap<String, i64>>> {
        self.committed.clone()
    }

    /// Decides what to delete from `names` (a listing of `<db>__*`) at `now`, whose wall-clock
    /// time is `now_ns`.
    pub fn plan(&mut self, names: &[String], now: Instant, now_ns: i64) -> Plan {
        let mut snaps: Vec<(SnapshotName, &String)> = Vec::new();
        let mut deltas: Vec<(SnapshotName, &String)> = Vec::new();
        for n in names {
            match SnapshotName::parse_object(n) {
                Ok((s, Kind::Snapshot)) => snaps.push((s, n)),
                Ok((s, Kind::Delta { .. })) => deltas.push((s, n)),
                Err(_) => {}
            }
        }
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        self.first_seen.retain(|n, _| listed.contains(n.as_str()));
        // Newest first, so an instance's first snapshot met is its newest.
        snaps.sort_by_key(|s| std::cmp::Reverse(s.0.timestamp_ns));
        let total = snaps.len() + deltas.len();
        let mut newest_full: BTreeMap<&str, i64> = BTreeMap::new();
        for (s, _) in &snaps {
            newest_full
                .entry(s.instance.as_str())
                .or_insert(s.timestamp_ns);
        }
        let mut superseded = Vec::new();
        for (s, name) in &deltas {
            let seen = *self.first_seen.entry((*name).clone()).or_insert(now);
            let kept = now.saturating_duration_since(seen) <= self.must_keep;
            let older = newest_full
                .get(s.instance.as_str())
                .is_some_and(|f| s.timestamp_ns < *f);
            if !kept && older {
                superseded.push(((*name).clone(), Reason::SupersededDelta));
            }
        }

        let mut marked: BTreeSet<String> = BTreeSet::new();
        let mut candidates = Vec::new();
        for (s, name) in snaps {
            let name = name.clone();
            match self.first_seen.get(&name) {
                None => {
                    // New: kept, but without marking its instance, so that the previous newest
                    // survives at least one more run.
                    self.first_seen.insert(name, now);
                }
                Some(t) if now.saturating_duration_since(*t) <= self.must_keep => {
                    marked.insert(s.instance.clone());
                }
                Some(_) => candidates.push((s, name)),
            }
        }

        let mut plan = Plan {
            total,
            delete: superseded,
            ..Plan::default()
        };
        let mut too_old = Vec::new();
        for (s, name) in candidates {
            if marked.insert(s.instance.clone()) {
                // The instance's newest deletable snapshot stays, unless the instance is gone.
                let age = now_ns.saturating_sub(s.timestamp_ns);
                if age > 0 && age as u128 > self.remove_old_instances.as_nanos() {
                    too_old.push((s, name));
                }
            } else {
                plan.delete.push((name, Reason::NewerSnapshot));
            }
        }
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        for (s, name) in too_old {
            let proven = committed.get(&s.instance).copied().unwrap_or(i64::MIN);
            if s.timestamp_ns > proven {
                plan.unproven.push(name);
            } else {
                plan.delete.push((name, Reason::StaleInstance));
            }
        }
        plan
    }
}

/// Sleeps `interval × U[0.8, 1.2)` between runs, like upstream, so that instances started
/// together do not clean in lockstep.
fn perturbed(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let permille = 800 + u64::from(nanos % 400);
    interval.mul_f64(permille as f64 / 1000.0)
}

/// Runs one listing, plan and deletion pass. With retention, the listed objects are retained
/// first, and only those safely retained are deleted.
pub fn run_once(
    cleaner: &mut Cleaner,
    storage: &dyn Storage,
    db: &str,
    archive: Option<&Archive>,
) -> Result<(), crate::storage::StorageError> {
    let m = metrics();
    m.cleaner_list_calls.inc();
    let listed = storage.list(&format!("{db}__")).inspect_err(|_| {
        m.cleaner_list_failed.inc();
    })?;
    let names: Vec<String> = listed.iter().map(|o| o.name.clone()).collect();
    let now_ns = crate::base::now_ns();
    let mut plan = cleaner.plan(&names, Instant::now(), now_ns);
    if let Some(archive) = archive {
        let run = archive.run_once(storage, db, &listed, now_ns)?;
        m.retention_objects
            .with_label_values(&[db])
            .set(i64::try_from(run.objects).unwrap_or(i64::MAX));
        m.retention_bytes
            .with_label_values(&[db])
            .set(i64::try_from(run.bytes).unwrap_or(i64::MAX));
        m.retention_copied
            .with_label_values(&[db])
            .inc_by(run.copied as u64);
        m.retention_pruned
            .with_label_values(&[db])
            .inc_by(run.pruned as u64);
        log::debug!(db = db, component = "retention", copied = run.copied, failed = run.copy_failed, pruned = run.pruned, objects = run.objects, bytes = run.bytes; "Retention stats");
        plan.delete.retain(|(n, _)| run.retained.contains(n));
    }
    for n in &plan.unproven {
        log::debug!(db = db, component = "cleaner", snapshot = n; "Not cleaning stale snapshot, merge not proven yet");
    }
    let (mut cleaned, mut failed) = (0, 0);
    for (name, reason) in &plan.delete {
        if *reason == Reason::NewerSnapshot {
            log::debug!(db = db, component = "cleaner", snapshot = name; "Cleaning old snapshot");
        }
        m.cleaner_delete
            .with_label_values(&[db, reason.label()])
            .inc();
        match storage.delete(name) {
            Ok(()) => {
                cleaned += 1;
                if *reason == Reason::StaleInstance {
                    let inst = SnapshotName::parse_object(name)
                        .map(|n| n.0.instance)
                        .unwrap_or_default();
                    log::info!(db = db, component = "cleaner", snapshot = name, instance = inst; "Cleaning stale instance snapshot, merge proven");
                }
            }
            Err(e) => {
                failed += 1;
                m.cleaner_delete_failed.inc();
                log::warn!(db = db, component = "cleaner", snapshot = name, error = e.to_string(); "Could not delete old snapshot");
            }
        }
    }
    log::debug!(db = db, component = "cleaner", cleaned = cleaned, failed = failed, total = plan.total; "Cleaning stats");
    Ok(())
}

/// The cleaner thread's body: a run at start, then one every perturbed `interval`.
pub fn run(
    mut cleaner: Cleaner,
    storage: Arc<dyn Storage>,
    db: String,
    interval: Duration,
    stop: Arc<AtomicBool>,
    archive: Option<Archive>,
) {
    loop {
        if let Err(e) = run_once(&mut cleaner, storage.as_ref(), &db, archive.as_ref()) {
            log::warn!(db = db, component = "cleaner", error = e.to_string(); "Clean run failed");
        }
        if !sleep_unless_stopped(&stop, perturbed(interval)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;
    /// 2024-05-01T10:00:00Z in ns.
    const T0: i64 = 1_714_557_600_000_000_000;

    fn name(inst: &str, ts: i64) -> String {
        SnapshotName::new("main", inst, ts).object_name()
    }

    fn at(base: Instant, minutes: u64) -> Instant {
        base + Duration::from_secs(60 * minutes)
    }

    fn deleted(p: &Plan) -> Vec<(&str, Reason)> {
        p.delete.iter().map(|(n, r)| (n.as_str(), *r)).collect()
    }

    /// The timeline of upstream's cleaner test: must keep 10 min, stale after 1 h.
    #[test]
    fn keeps_newest_and_recent_and_removes_superseded() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let a1 = name("a", T0);
        let b1 = name("b", T0 + MIN);
        // First sighting: nothing goes.
        let p = c.plan(&[a1.clone(), b1.clone()], base, T0 + 2 * MIN);
        assert_eq!((p.delete.len(), p.total), (0, 2));

        // A second snapshot of a, first seen at +5 min.
        let a2 = name("a", T0 + 5 * MIN);
        let names = vec![a1.clone(), a2.clone(), b1.clone()];
        let p = c.plan(&names, at(base, 5), T0 + 5 * MIN);
        assert!(p.delete.is_empty(), "{p:?}");
        // +11 min: a1 is past must-keep, but a2 (seen at +5) is within it, so a1 goes.
        let p = c.plan(&names, at(base, 11), T0 + 11 * MIN);
        assert_eq!(deleted(&p), vec![(a1.as_str(), Reason::NewerSnapshot)]);

        // A new snapshot appearing does not doom the previous newest at once: at +20 both a2
        // and b1 are past must-keep; a3 is new (unmarked), so a2 stays as a's newest candidate.
        let a3 = name("a", T0 + 20 * MIN);
        let names = vec![a2.clone(), a3.clone(), b1.clone()];
        let p = c.plan(&names, at(base, 20), T0 + 20 * MIN);
        assert!(p.delete.is_empty(), "{p:?}");
        // Next run: a3 is now known and within must-keep, so a2 goes.
        let p = c.plan(&names, at(base, 21), T0 + 21 * MIN);
        assert_eq!(deleted(&p), vec![(a2.as_str(), Reason::NewerSnapshot)]);
    }

    #[test]
    fn stale_instance_needs_proof_of_merge() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let b1 = name("b", T0);
        c.plan(std::slice::from_ref(&b1), base, T0);
        // Two hours later: b is stale, but we never merged its snapshot.
        let later = T0 + 120 * MIN;
        let p = c.plan(std::slice::from_ref(&b1), at(base, 120), later);
        assert!(p.delete.is_empty());
        assert_eq!(p.unproven, vec![b1.clone()]);
        // Merged something older than b1: still not proven.
        c.committed_handle()
            .lock()
            .unwrap()
            .insert("b".into(), T0 - 1);
        assert!(
            c.plan(std::slice::from_ref(&b1), at(base, 121), later)
                .delete
                .is_empty()
        );
        // Merged b1 itself and stored a snapshot since: it goes.
        c.committed_handle().lock().unwrap().insert("b".into(), T0);
        let p = c.plan(std::slice::from_ref(&b1), at(base, 122), later);
        assert_eq!(deleted(&p), vec![(b1.as_str(), Reason::StaleInstance)]);
    }

    #[test]
    fn stale_is_measured_from_the_snapshot_time_and_recent_ones_stay() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let b1 = name("b", T0);
        c.committed_handle().lock().unwrap().insert("b".into(), T0);
        c.plan(std::slice::from_ref(&b1), base, T0);
        // 59 min after the snapshot time: not stale yet.
        assert!(
            c.plan(std::slice::from_ref(&b1), at(base, 59), T0 + 59 * MIN)
                .delete
                .is_empty()
        );
        // A snapshot seen for the first time is never deleted, however old its time.
        let mut fresh = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        fresh
            .committed_handle()
            .lock()
            .unwrap()
            .insert("b".into(), T0);
        assert!(
            fresh
                .plan(std::slice::from_ref(&b1), base, T0 + 1000 * MIN)
                .delete
                .is_empty()
        );
    }

    #[test]
    fn forgets_vanished_names_and_ignores_other_objects() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let a1 = name("a", T0);
        let a2 = name("a", T0 + MIN);
        let junk = "main__not-a-snapshot".to_string();
        c.plan(&[a1.clone(), a2.clone(), junk.clone()], base, T0);
        assert_eq!(c.first_seen.len(), 2);
        // a1 disappeared (another cleaner removed it): forgotten.
        let p = c.plan(&[a2.clone(), junk], at(base, 30), T0 + 30 * MIN);
        assert_eq!(c.first_seen.len(), 1);
        assert!(p.delete.is_empty());
        // Re-listed later, it counts as new again.
        let p = c.plan(&[a1.clone(), a2.clone()], at(base, 31), T0 + 31 * MIN);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn deltas_go_once_a_newer_full_snapshot_exists() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let delta = |ts, from, to| SnapshotName::delta("main", "a", ts, from, to).object_name();
        let a1 = name("a", T0);
        let (d1, d2) = (delta(T0 + MIN, 5, 6), delta(T0 + 2 * MIN, 6, 7));
        // A Go instance's full snapshots in the same bucket.
        let g1 = name("go", T0);
        let mut names = vec![a1.clone(), d1.clone(), d2.clone(), g1.clone()];
        assert!(c.plan(&names, base, T0 + 2 * MIN).delete.is_empty());
        // Deltas newer than the newest full snapshot stay, however old.
        let p = c.plan(&names, at(base, 60), T0 + 60 * MIN);
        assert!(p.delete.is_empty(), "{p:?}");
        // A newer full snapshot appears, with a delta after it.
        let a2 = name("a", T0 + 61 * MIN);
        let d3 = delta(T0 + 62 * MIN, 9, 10);
        names.extend([a2.clone(), d3.clone()]);
        // The older deltas are past must-keep: they go; a1 waits one run, as before.
        let p = c.plan(&names, at(base, 62), T0 + 62 * MIN);
        assert_eq!(
            deleted(&p),
            vec![
                (d1.as_str(), Reason::SupersededDelta),
                (d2.as_str(), Reason::SupersededDelta)
            ]
        );
        assert_eq!(p.total, 6);
        // Full snapshots follow the old rules, deltas never count as an instance's newest.
        let p = c.plan(&names, at(base, 63), T0 + 63 * MIN);
        assert_eq!(
            deleted(&p),
            vec![
                (d1.as_str(), Reason::SupersededDelta),
                (d2.as_str(), Reason::SupersededDelta),
                (a1.as_str(), Reason::NewerSnapshot)
            ]
        );
        // A delta within must-keep stays even when superseded.
        let mut fresh = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        fresh.plan(&names, base, T0 + 63 * MIN);
        let p = fresh.plan(&names, at(base, 5), T0 + 68 * MIN);
        assert!(p.delete.is_empty(), "{p:?}");
    }

    /// Encrypted snapshots and deltas (`.age`) are cleaned by the same rules as their
    /// plaintext kinds, in any mix (an instance that turned encryption on).
    #[test]
    fn encrypted_objects_are_cleaned_like_plaintext_ones() {
        let base = Instant::now();
        let mut c = Cleaner::new(Duration::from_secs(600), Duration::from_secs(3600));
        let enc = |n: String| format!("{n}.age");
        let a1 = name("a", T0);
        let d1 = enc(SnapshotName::delta("main", "a", T0 + MIN, 5, 6).object_name());
        let a2 = enc(name("a", T0 + 2 * MIN));
        let b1 = enc(name("b", T0));
        let names = vec![a1.clone(), d1.clone(), a2.clone(), b1.clone()];
        c.plan(&names, base, T0 + 2 * MIN);
        c.plan(&names, at(base, 11), T0 + 13 * MIN);
        let p = c.plan(&names, at(base, 12), T0 + 14 * MIN);
        assert_eq!(
            deleted(&p),
            vec![
                (d1.as_str(), Reason::SupersededDelta),
                (a1.as_str(), Reason::NewerSnapshot)
            ]
        );
        assert_eq!(p.total, 4);
        // Each instance keeps its newest, encrypted or not.
        assert!(!deleted(&p).iter().any(|(n, _)| *n == a2 || *n == b1));
    }

    #[test]
    fn perturbation_stays_within_bounds() {
        for _ in 0..100 {
            let d = perturbed(Duration::from_secs(100));
            assert!(d >= Duration::from_secs(80) && d < Duration::from_secs(120));
        }
    }
}
