use super::*;
use crate::config::GoDuration;

const S: i64 = 1_000_000_000;
const MIN: i64 = 60 * S;
/// 2024-05-01T10:00:00Z in ns (a UTC hour boundary).
const T0: i64 = 1_714_557_600_000_000_000;

fn obj(name: String) -> ObjectInfo {
    ObjectInfo { name, size: 10 }
}
fn full(inst: &str, ts: i64, covers: Option<u64>) -> ObjectInfo {
    obj(match covers {
        Some(t) => SnapshotName::full_covering("main", inst, ts, t).object_name(),
        None => SnapshotName::new("main", inst, ts).object_name(),
    })
}
fn delta(inst: &str, ts: i64, from: u64, to: u64) -> ObjectInfo {
    obj(SnapshotName::delta("main", inst, ts, from, to).object_name())
}
fn names(p: &Plan) -> Vec<&str> {
    p.objects().map(|o| o.name.as_str()).collect()
}

#[test]
fn newest_full_then_its_deltas_up_to_the_moment() {
    let f1 = full("a", T0, Some(10));
    let d1 = delta("a", T0 + MIN, 10, 12);
    let d2 = delta("a", T0 + 2 * MIN, 12, 13);
    let f2 = full("a", T0 + 3 * MIN, Some(13));
    let d3 = delta("a", T0 + 4 * MIN, 13, 20);
    let all = vec![d3.clone(), f2.clone(), d2.clone(), d1.clone(), f1.clone()];
    // Listing order does not matter; objects newer than the moment are never read.
    let p = plan_at(&all, "main", T0 + MIN + 5 * S, None).unwrap();
    assert_eq!(names(&p), [f1.name.as_str(), d1.name.as_str()]);
    assert_eq!(p.bytes(), 20);
    let p = plan_at(&all, "main", T0 + 150 * S, None).unwrap();
    assert_eq!(names(&p), [&f1.name, &d1.name, &d2.name]);
    // A newer full snapshot replaces everything before it.
    let p = plan_at(&all, "main", T0 + 10 * MIN, None).unwrap();
    assert_eq!(names(&p), [&f2.name, &d3.name]);
    // Before the first full snapshot there is nothing to rebuild.
    let e = plan_at(&all, "main", T0 - 1, None).unwrap_err();
    assert!(matches!(e, PlanError::Nothing { .. }), "{e}");
    // Other dbs' objects and foreign names are ignored.
    let mut mixed = all.clone();
    mixed.push(obj("shard__a__20240501-100000-000000000__GX.pb.gz".into()));
    mixed.push(obj("main__junk".into()));
    assert_eq!(plan_at(&mixed, "main", T0 + 10 * MIN, None).unwrap(), p);
}

#[test]
fn several_instances_and_one_instance_view() {
    let a = full("a", T0, None);
    let b = full("b", T0 + MIN, Some(5));
    let bd = delta("b", T0 + 2 * MIN, 5, 6);
    // c only has a delta (its full snapshot was never retained): left out, and said so.
    let cd = delta("c", T0, 1, 2);
    let all = vec![a.clone(), b.clone(), bd.clone(), cd.clone()];
    let p = plan_at(&all, "main", T0 + 5 * MIN, None).unwrap();
    assert_eq!(names(&p), [&a.name, &b.name, &bd.name]);
    assert_eq!(p.instances.len(), 2);
    assert_eq!(p.without_base, vec![("c".to_string(), 1)]);
    // b did not exist yet at T0: only a.
    let p = plan_at(&all, "main", T0, None).unwrap();
    assert_eq!(names(&p), [&a.name]);
    let p = plan_at(&all, "main", T0 + 5 * MIN, Some("b")).unwrap();
    assert_eq!(names(&p), [&b.name, &bd.name]);
    assert!(plan_at(&all, "main", T0 + 5 * MIN, Some("zz")).is_err());
}

#[test]
fn a_missing_delta_is_an_error_naming_its_neighbours() {
    let f = full("a", T0, Some(10));
    let d1 = delta("a", T0 + MIN, 10, 12);
    // (12, 15] was deleted (or never stored).
    let d3 = delta("a", T0 + 3 * MIN, 15, 16);
    let all = vec![f.clone(), d1.clone(), d3.clone()];
    let e = plan_at(&all, "main", T0 + 3 * MIN, None).unwrap_err();
    assert_eq!(
        e,
        PlanError::Gap {
            instance: "a".into(),
            before: d1.name.clone(),
            after: d3.name.clone(),
            from: 12,
            to: 15
        }
    );
    assert!(e.to_string().contains(&d1.name) && e.to_string().contains("12..15"));
    // Between d1 and d3 the names cannot tell whether the missing delta was stored before
    // or after the moment: a restore there is refused too, rather than possibly incomplete.
    for at in [T0 + MIN, T0 + 2 * MIN] {
        let e = plan_at(&all, "main", at, None).unwrap_err();
        assert!(
            matches!(
                e,
                PlanError::Gap {
                    from: 12,
                    to: 15,
                    ..
                }
            ),
            "{e}"
        );
    }
    let d2 = delta("a", T0 + 2 * MIN, 12, 15);
    assert!(
        plan_at(
            &[f.clone(), d1.clone(), d2, d3.clone()],
            "main",
            T0 + MIN,
            None
        )
        .is_ok()
    );
    // A full snapshot after the moment resets the chain: no complaint.
    let f2 = full("a", T0 + 2 * MIN, Some(15));
    assert!(
        plan_at(
            &[f.clone(), d1.clone(), f2, d3.clone()],
            "main",
            T0 + MIN,
            None
        )
        .is_ok()
    );
    // The first delta must continue the transaction the full snapshot covers.
    let late = delta("a", T0 + MIN, 11, 12);
    let e = plan_at(&[f.clone(), late], "main", T0 + MIN, None).unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::Gap {
                from: 10,
                to: 11,
                ..
            }
        ),
        "{e}"
    );
    // Overlapping ranges are harmless (the merge is idempotent).
    let over = delta("a", T0 + MIN, 8, 12);
    assert!(plan_at(&[f, over], "main", T0 + MIN, None).is_ok());
}

#[test]
fn clock_ties() {
    // Objects stamped exactly at the moment are part of it.
    let f = full("a", T0, Some(10));
    let d = delta("a", T0 + MIN, 10, 11);
    let p = plan_at(&[f.clone(), d.clone()], "main", T0 + MIN, None).unwrap();
    assert_eq!(names(&p), [&f.name, &d.name]);
    // A bridging delta and the full snapshot covering it in the same nanosecond: the full
    // snapshot is the base, the bridge adds nothing.
    let bridge = delta("a", T0 + 2 * MIN, 11, 14);
    let f2 = full("a", T0 + 2 * MIN, Some(14));
    let next = delta("a", T0 + 2 * MIN, 14, 15);
    let all = vec![f.clone(), d.clone(), bridge, f2.clone(), next.clone()];
    let p = plan_at(&all, "main", T0 + 2 * MIN, None).unwrap();
    assert_eq!(names(&p), [&f2.name, &next.name]);
    // Two full snapshots of one instance in the same nanosecond: the later transaction wins.
    let g1 = full("a", T0 + 5 * MIN, Some(30));
    let g2 = full("a", T0 + 5 * MIN, Some(31));
    let p = plan_at(&[g2.clone(), g1], "main", T0 + 5 * MIN, None).unwrap();
    assert_eq!(names(&p), [&g2.name]);
    // A Go instance's full snapshots say nothing about transactions: a same-time delta of
    // ours is merged too (harmless when it is older).
    let go = full("b", T0, None);
    let d_same = delta("b", T0, 3, 4);
    let p = plan_at(&[go.clone(), d_same.clone()], "main", T0, None).unwrap();
    assert_eq!(names(&p), [&go.name, &d_same.name]);
}

fn policy(all: i64, hourly: i64, daily: i64) -> RetentionConfig {
    RetentionConfig {
        all: GoDuration(all),
        hourly: GoDuration(hourly),
        daily: GoDuration(daily),
    }
}

#[test]
fn kept_points_follow_the_windows() {
    let now = T0 + 30 * MIN; // 10:30
    let r = policy(HOUR_NS, 4 * HOUR_NS, 2 * DAY_NS);
    let p = kept_points(now, &r);
    // The all window's start (09:30), hours 09:00..06:30, midnights within two days.
    assert_eq!(p[0], now - HOUR_NS);
    assert_eq!(
        &p[1..4],
        &[T0 - HOUR_NS, T0 - 2 * HOUR_NS, T0 - 3 * HOUR_NS]
    );
    let midnight = T0 - 10 * HOUR_NS;
    assert!(p.contains(&midnight) && p.contains(&(midnight - DAY_NS)));
    assert!(!p.contains(&(midnight - 2 * DAY_NS)));
    assert!(p.windows(2).all(|w| w[0] > w[1]));
    // Only `all`: its start alone.
    assert_eq!(
        kept_points(now, &policy(HOUR_NS, 0, 0)),
        vec![now - HOUR_NS]
    );
}

#[test]
fn prune_keeps_the_window_and_each_points_chain() {
    let r = policy(HOUR_NS, 3 * HOUR_NS, 0);
    // An object every 10 minutes from 06:00 to 10:50: full snapshots at :00 and :30, deltas
    // between, one continuous chain.
    let mut objs = Vec::new();
    let mut txn = 0;
    let mut ts = T0 - 4 * HOUR_NS;
    while ts < T0 + HOUR_NS {
        let m = (ts - T0).rem_euclid(HOUR_NS) / MIN;
        if m % 30 == 0 {
            objs.push(full("a", ts, Some(txn)));
        } else {
            objs.push(delta("a", ts, txn, txn + 1));
            txn += 1;
        }
        ts += 10 * MIN;
    }
    objs.push(obj("main__unknown-file".into()));
    let now = T0 + 55 * MIN;
    let gone = prune(&objs, "main", now, &r);
    let kept: Vec<&ObjectInfo> = objs.iter().filter(|o| !gone.contains(&o.name)).collect();
    // Every point's plan still works after pruning, and rebuilds the same as before.
    let kept_infos: Vec<ObjectInfo> = kept.iter().map(|o| (*o).clone()).collect();
    for p in kept_points(now, &r) {
        assert_eq!(
            plan_at(&kept_infos, "main", p, None),
            plan_at(&objs, "main", p, None),
            "point {p}"
        );
    }
    // So does every moment of the all window.
    for m in 0..=60 {
        let at = now - HOUR_NS + m * MIN;
        assert_eq!(
            plan_at(&kept_infos, "main", at, None),
            plan_at(&objs, "main", at, None)
        );
    }
    // Things did go: the 06:xx deltas before the 07:00 point, for one.
    assert!(gone.contains(&delta("a", T0 - 4 * HOUR_NS + 10 * MIN, 0, 1).name));
    // 08:00 and 09:00 are points (07:00 is older than the hourly window); what lies between
    // a point and the next point's base goes, like the delta of 08:40.
    assert!(gone.contains(&delta("a", T0 - 2 * HOUR_NS + 40 * MIN, 10, 11).name));
    assert!(!gone.contains(&full("a", T0 - 2 * HOUR_NS, Some(8)).name));
    assert!(!gone.contains(&"main__unknown-file".to_string()));
    // Nothing older than the hourly window survives, save a base a point needs.
    assert!(kept.iter().all(|o| o.name.contains("unknown")
        || SnapshotName::parse_object(&o.name).unwrap().0.timestamp_ns >= T0 - 3 * HOUR_NS));
}

#[test]
fn resolve_checks_the_window() {
    let r = policy(HOUR_NS, 3 * HOUR_NS, 0);
    let now = T0 + 30 * MIN;
    let oldest = Some(T0 - 5 * HOUR_NS);
    assert_eq!(
        resolve(now - MIN, now, &r, oldest).unwrap(),
        Resolved {
            at_ns: now - MIN,
            exact: true
        }
    );
    // Before the all window: the newest kept point not after it.
    assert_eq!(
        resolve(T0 - HOUR_NS + 7 * MIN, now, &r, oldest).unwrap(),
        Resolved {
            at_ns: T0 - HOUR_NS,
            exact: false
        }
    );
    let e = resolve(now - 4 * HOUR_NS, now, &r, oldest).unwrap_err();
    assert!(matches!(e, WindowError::Outside { .. }));
    assert!(e.to_string().contains("each UTC hour from"), "{e}");
    assert!(matches!(
        resolve(now + S, now, &r, oldest),
        Err(WindowError::Future { .. })
    ));
    // Retention switched on recently: nothing before its first object.
    let e = resolve(now - 50 * MIN, now, &r, Some(now - 10 * MIN)).unwrap_err();
    assert!(matches!(e, WindowError::BeforeRetained { .. }), "{e}");
    assert!(resolve(now, now, &r, None).is_err());
}

#[test]
fn times_parse_as_rfc3339_or_ago() {
    let now = T0;
    assert_eq!(parse_time("2024-05-01T09:00:00Z", now), Ok(T0 - HOUR_NS));
    assert_eq!(
        parse_time("2024-05-01T11:00:00.5+02:00", now),
        Ok(T0 - HOUR_NS + S / 2)
    );
    assert_eq!(parse_time("2h", now), Ok(T0 - 2 * HOUR_NS));
    assert_eq!(parse_time("1h30m", now), Ok(T0 - 90 * MIN));
    assert_eq!(parse_time("3d", now), Ok(T0 - 3 * DAY_NS));
    assert!(
        parse_time("yesterday", now)
            .unwrap_err()
            .contains("RFC 3339")
    );
    assert!(parse_time("-2h", now).is_err());
}
