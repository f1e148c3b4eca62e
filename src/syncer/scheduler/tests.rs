//! The scheduler's rules, driven by hand-made listings and results: start-up readiness, one
//! download per instance, corrupt objects, retries, delta chains with gaps, and adoption of
//! covered full snapshots. No threads, sockets, files or sleeps: time is an argument.

use super::*;

const T: i64 = 1_700_000_000_000_000_000;
const DB: &str = "main";
const ME: &str = "me";

fn full(inst: &str, s: i64) -> String {
    SnapshotName::new(DB, inst, T + s).object_name()
}

fn full_covering(inst: &str, s: i64, txn: u64) -> String {
    SnapshotName::full_covering(DB, inst, T + s, txn).object_name()
}

fn delta(inst: &str, s: i64, from: u64, to: u64) -> String {
    SnapshotName::delta(DB, inst, T + s, from, to).object_name()
}

fn listing(items: &[(&str, &[&String])]) -> Listing {
    items
        .iter()
        .map(|(i, names)| {
            let mut v: Vec<String> = names.iter().map(|n| (*n).clone()).collect();
            v.sort();
            (i.to_string(), v)
        })
        .collect()
}

fn downloads(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Download { instance, name } => Some((instance.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

fn has(actions: &[Action], want: &Action) -> bool {
    actions.contains(want)
}

fn sched() -> Scheduler {
    Scheduler::new(ME, Duration::from_secs(2))
}

/// Fetches and merges what was asked for, the way the executor would, returning what follows.
fn deliver(s: &mut Scheduler, inst: &str, name: &str, txn: u64, now: Instant) -> Vec<Action> {
    let (wanted, mut out) = s.fetched(inst, name, now);
    assert!(wanted, "{name} was not requested");
    s.take_pending(inst);
    out.extend(s.merged(inst, name, txn, now));
    out
}

#[test]
fn start_up_waits_for_every_instance_until_its_newest_snapshot_is_merged() {
    let now = Instant::now();
    let (a1, a2, b1, own) = (full("a", 1), full("a", 2), full("b", 1), full(ME, 1));
    let mut s = sched();
    let start = s.start(listing(&[("a", &[&a1, &a2]), ("b", &[&b1]), (ME, &[&own])]));
    assert!(
        downloads(&start).is_empty(),
        "nothing before the downloaders run"
    );
    assert_eq!(s.waiting().len(), 3);
    let first = s.tick(now);
    assert_eq!(
        downloads(&first),
        [
            ("a".into(), a2.clone()),
            ("b".into(), b1.clone()),
            (ME.into(), own.clone()),
        ],
        "the newest full snapshot of each instance, our own too while start-up waits for it"
    );
    let out = deliver(&mut s, "a", &a2, 10, now);
    assert!(has(
        &out,
        &Action::DoneWaiting {
            instance: "a".into()
        }
    ));
    assert!(s.is_waiting_for("b") && s.is_waiting_for(ME));
    deliver(&mut s, "b", &b1, 10, now);
    deliver(&mut s, ME, &own, 10, now);
    assert!(s.waiting().is_empty(), "start-up complete");
    assert_eq!(s.processed().get("a"), Some(&a2));
}

#[test]
fn one_download_per_instance_and_stale_results_are_dropped() {
    let now = Instant::now();
    let (a1, a2, a3) = (full("a", 1), full("a", 2), full("a", 3));
    let mut s = sched();
    s.start(Listing::new());
    assert_eq!(
        downloads(&s.listed(listing(&[("a", &[&a1])]), now)).len(),
        1
    );
    // Newer objects while one is in flight: nothing more for that instance.
    assert!(downloads(&s.listed(listing(&[("a", &[&a1, &a2])]), now)).is_empty());
    // The in-flight result is still wanted; afterwards the newest is asked for.
    let (wanted, _) = s.fetched("a", &a1, now);
    assert!(wanted);
    s.take_pending("a");
    let next = s.merged("a", &a1, 1, now);
    assert_eq!(downloads(&next), [("a".into(), a2.clone())]);
    // A result for something not (or no longer) requested is not merged.
    let (wanted, _) = s.fetched("a", &a3, now);
    assert!(!wanted);
}

#[test]
fn a_pending_object_blocks_the_next_request_until_it_is_merged() {
    let now = Instant::now();
    let (a1, a2) = (full("a", 1), full("a", 2));
    let mut s = sched();
    s.start(Listing::new());
    s.listed(listing(&[("a", &[&a1])]), now);
    let (wanted, _) = s.fetched("a", &a1, now);
    assert!(wanted);
    assert!(downloads(&s.listed(listing(&[("a", &[&a1, &a2])]), now)).is_empty());
    s.take_pending("a");
    assert_eq!(
        downloads(&s.merged("a", &a1, 1, now)),
        [("a".into(), a2.clone())]
    );
}

#[test]
fn corrupt_objects_are_never_retried_and_the_previous_one_is_used() {
    let now = Instant::now();
    let (a1, a2) = (full("a", 1), full("a", 2));
    let mut s = sched();
    s.start(listing(&[("a", &[&a1, &a2])]));
    assert_eq!(downloads(&s.tick(now)), [("a".into(), a2.clone())]);
    let out = s.fetch_failed("a", &a2, Some("bad gzip"), now);
    assert!(has(
        &out,
        &Action::Corrupt {
            instance: "a".into(),
            name: a2.clone(),
            reason: "bad gzip".into()
        }
    ));
    assert_eq!(downloads(&out), [("a".into(), a1.clone())]);
    // Later listings still show it; it stays out.
    s.take_pending("a");
    s.fetched("a", &a1, now);
    s.take_pending("a");
    let out = s.merged("a", &a1, 1, now);
    assert!(downloads(&out).is_empty());
    assert!(downloads(&s.listed(listing(&[("a", &[&a1, &a2])]), now)).is_empty());
    assert!(s.waiting().is_empty());
}

#[test]
fn an_instance_whose_only_object_is_corrupt_is_no_longer_waited_for() {
    let now = Instant::now();
    let a1 = full("a", 1);
    let mut s = sched();
    s.start(listing(&[("a", &[&a1])]));
    s.tick(now);
    let out = s.merge_corrupt("a", &a1, "truncated", now);
    assert!(has(
        &out,
        &Action::Vanished {
            instance: "a".into()
        }
    ));
    assert!(s.waiting().is_empty());
}

#[test]
fn failed_downloads_wait_for_the_retry_interval() {
    let now = Instant::now();
    let a1 = full("a", 1);
    let mut s = sched();
    s.start(listing(&[("a", &[&a1])]));
    s.tick(now);
    let out = s.fetch_failed("a", &a1, None, now);
    assert!(downloads(&out).is_empty());
    assert!(!s.retry_due(now + Duration::from_secs(1)));
    assert!(downloads(&s.tick(now + Duration::from_secs(1))).is_empty());
    assert!(s.retry_due(now + Duration::from_secs(2)));
    assert_eq!(
        downloads(&s.tick(now + Duration::from_secs(2))),
        [("a".into(), a1.clone())]
    );
    // The same after a merge that could not read its temporary copy.
    s.fetched("a", &a1, now);
    s.take_pending("a");
    s.merge_retry("a", now + Duration::from_secs(2));
    assert!(downloads(&s.tick(now + Duration::from_secs(3))).is_empty());
    assert_eq!(downloads(&s.tick(now + Duration::from_secs(4))).len(), 1);
}

#[test]
fn deltas_follow_the_chain_in_order() {
    let now = Instant::now();
    let f = full_covering("a", 1, 10);
    let (d1, d2) = (delta("a", 2, 10, 20), delta("a", 3, 20, 30));
    let mut s = sched();
    s.start(listing(&[("a", &[&f, &d2, &d1])]));
    assert_eq!(downloads(&s.tick(now)), [("a".into(), f.clone())]);
    let out = deliver(&mut s, "a", &f, 10, now);
    assert_eq!(downloads(&out), [("a".into(), d1.clone())]);
    assert!(s.is_waiting_for("a"), "the chain is not complete yet");
    let out = deliver(&mut s, "a", &d1, 20, now);
    assert_eq!(downloads(&out), [("a".into(), d2.clone())]);
    let out = deliver(&mut s, "a", &d2, 30, now);
    assert!(has(
        &out,
        &Action::DoneWaiting {
            instance: "a".into()
        }
    ));
}

#[test]
fn a_gap_counts_only_when_the_next_listing_shows_it_too() {
    let now = Instant::now();
    let f = full_covering("a", 1, 10);
    let d2 = delta("a", 3, 20, 30); // (10, 20] is missing
    let mut s = sched();
    s.start(Listing::new());
    s.listed(listing(&[("a", &[&f])]), now);
    deliver(&mut s, "a", &f, 10, now);
    // The listing that first shows the gap may have missed the delta before it.
    let out = s.listed(listing(&[("a", &[&f, &d2])]), now);
    assert!(downloads(&out).is_empty());
    assert!(!out.iter().any(|a| matches!(a, Action::Gap { .. })));
    // The next one has every delta stored by the time the first arrived: a real gap.
    let out = s.listed(listing(&[("a", &[&f, &d2])]), now);
    assert!(has(
        &out,
        &Action::Gap {
            instance: "a".into(),
            name: d2.clone(),
            chain_end: 10
        }
    ));
    assert_eq!(downloads(&out), [("a".into(), d2.clone())]);
    // Reported once; merged anyway; the chain stays broken until the next full snapshot.
    let out = deliver(&mut s, "a", &d2, 30, now);
    assert!(!out.iter().any(|a| matches!(a, Action::Gap { .. })));
    let out = s.listed(listing(&[("a", &[&f, &d2])]), now);
    assert!(!out.iter().any(|a| matches!(a, Action::Gap { .. })));
}

#[test]
fn a_gap_filled_by_the_next_listing_is_no_gap() {
    let now = Instant::now();
    let f = full_covering("a", 1, 10);
    let (d1, d2) = (delta("a", 2, 10, 20), delta("a", 3, 20, 30));
    let mut s = sched();
    s.start(Listing::new());
    s.listed(listing(&[("a", &[&f])]), now);
    deliver(&mut s, "a", &f, 10, now);
    s.listed(listing(&[("a", &[&f, &d2])]), now);
    let out = s.listed(listing(&[("a", &[&f, &d1, &d2])]), now);
    assert!(!out.iter().any(|a| matches!(a, Action::Gap { .. })));
    assert_eq!(downloads(&out), [("a".into(), d1.clone())]);
}

#[test]
fn a_broken_chain_keeps_start_up_waiting_until_the_next_full_snapshot() {
    let now = Instant::now();
    let f1 = full_covering("a", 1, 10);
    let d2 = delta("a", 3, 20, 30);
    let f2 = full_covering("a", 4, 40);
    let mut s = sched();
    s.start(listing(&[("a", &[&f1])]));
    s.tick(now);
    // f1 merged: complete for now.
    deliver(&mut s, "a", &f1, 10, now);
    assert!(s.waiting().is_empty());
    // Start-up of a second scheduler that meets the gap: it keeps waiting.
    let mut s = sched();
    s.start(listing(&[("a", &[&f1, &d2])]));
    s.tick(now);
    deliver(&mut s, "a", &f1, 10, now);
    s.listed(listing(&[("a", &[&f1, &d2])]), now);
    s.listed(listing(&[("a", &[&f1, &d2])]), now);
    deliver(&mut s, "a", &d2, 30, now);
    assert!(s.is_waiting_for("a"), "broken chain: not loaded yet");
    let out = s.listed(listing(&[("a", &[&f1, &d2, &f2])]), now);
    assert_eq!(downloads(&out), [("a".into(), f2.clone())]);
    let out = deliver(&mut s, "a", &f2, 40, now);
    assert!(has(
        &out,
        &Action::DoneWaiting {
            instance: "a".into()
        }
    ));
}

#[test]
fn a_full_snapshot_covered_by_the_chain_is_adopted_without_a_download() {
    let now = Instant::now();
    let f1 = full_covering("a", 1, 10);
    let bridge = delta("a", 2, 10, 20);
    let f2 = full_covering("a", 3, 20);
    let d3 = delta("a", 4, 20, 25);
    let mut s = sched();
    s.start(Listing::new());
    s.listed(listing(&[("a", &[&f1])]), now);
    deliver(&mut s, "a", &f1, 10, now);
    // The bridging delta is cheaper than the full snapshot after it...
    let out = s.listed(listing(&[("a", &[&f1, &bridge, &f2, &d3])]), now);
    assert_eq!(downloads(&out), [("a".into(), bridge.clone())]);
    // ...after which the full snapshot is adopted, and the delta after it follows.
    let out = deliver(&mut s, "a", &bridge, 20, now);
    assert!(has(
        &out,
        &Action::Adopted {
            instance: "a".into(),
            name: f2.clone()
        }
    ));
    assert_eq!(downloads(&out), [("a".into(), d3.clone())]);
    assert_eq!(s.processed().get("a"), Some(&f2));
}

#[test]
fn own_objects_only_while_start_up_waits_for_them() {
    let now = Instant::now();
    let (own1, own2) = (full(ME, 1), full(ME, 2));
    let mut s = sched();
    s.start(listing(&[(ME, &[&own1])]));
    assert_eq!(downloads(&s.tick(now)), [(ME.into(), own1.clone())]);
    deliver(&mut s, ME, &own1, 5, now);
    assert!(s.waiting().is_empty());
    // Our own later snapshots are what we wrote: never downloaded, never announced.
    let out = s.listed(listing(&[(ME, &[&own1, &own2])]), now);
    assert!(downloads(&out).is_empty());
    assert!(!out.iter().any(|a| matches!(a, Action::NewLatest { .. })));
}

#[test]
fn listings_announce_new_latest_objects_once_and_vanished_instances() {
    let now = Instant::now();
    let (a1, a2, b1) = (full("a", 1), full("a", 2), full("b", 1));
    let mut s = sched();
    let out = s.start(listing(&[("a", &[&a1]), ("b", &[&b1])]));
    let news = |out: &[Action]| {
        out.iter()
            .filter(|a| matches!(a, Action::NewLatest { .. }))
            .count()
    };
    assert_eq!(news(&out), 2);
    let out = s.listed(listing(&[("a", &[&a1]), ("b", &[&b1])]), now);
    assert_eq!(news(&out), 0);
    let out = s.listed(listing(&[("a", &[&a1, &a2])]), now);
    assert_eq!(news(&out), 1);
    assert!(has(
        &out,
        &Action::Vanished {
            instance: "b".into()
        }
    ));
    let latest = out.iter().find_map(|a| match a {
        Action::Listed { latest } => Some(latest.clone()),
        _ => None,
    });
    assert_eq!(latest.unwrap().get("a"), Some(&a2));
}
