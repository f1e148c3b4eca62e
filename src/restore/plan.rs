//! Which objects rebuild a db's state as of a moment, and which retained objects a retention
//! policy keeps (pure: names, sizes and clock readings in, decisions out). Per instance, the
//! state at `at` is its newest full snapshot not newer than `at` plus the deltas after it up to
//! `at`, which must continue each other's transaction ranges; the fleet's state is all those
//! merged by last-writer-wins, so extra older entries never change the result but a missing
//! delta would: a gap is an error naming the objects around it. Retention keeps every object of
//! the `all` window and, for each kept point (UTC hour boundaries in the `hourly` window, UTC
//! midnights in the `daily` window, and the start of the `all` window), exactly what
//! [`plan_at`] picks for that point, so a restore at a kept point finds everything it needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::RetentionConfig;
use crate::core::name::{Kind, SnapshotName, format_timestamp};
use crate::storage::ObjectInfo;

const HOUR_NS: i64 = 3_600_000_000_000;
const DAY_NS: i64 = 24 * HOUR_NS;

/// One instance's part of a restore: its base full snapshot, then its deltas in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstancePlan {
    pub instance: String,
    pub objects: Vec<ObjectInfo>,
}

/// The objects to merge for the state as of `at_ns`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub at_ns: i64,
    pub instances: Vec<InstancePlan>,
    /// Instances with objects not newer than `at_ns` but no full snapshot to start from
    /// (they are left out), with how many deltas were ignored.
    pub without_base: Vec<(String, usize)>,
}

impl Plan {
    pub fn objects(&self) -> impl Iterator<Item = &ObjectInfo> {
        self.instances.iter().flat_map(|i| i.objects.iter())
    }

    pub fn bytes(&self) -> u64 {
        self.objects().map(|o| o.size).sum()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "instance {instance}: no retained object holds its transactions {from}..{to} \
         (between {before} and {after}); the restore would miss changes, refusing"
    )]
    Gap {
        instance: String,
        before: String,
        after: String,
        from: u64,
        to: u64,
    },
    #[error("no instance has a full snapshot of db {db:?} at or before {at}")]
    Nothing { db: String, at: String },
}

/// A parsed object of one instance.
#[derive(Clone, Debug)]
struct Obj {
    info: ObjectInfo,
    ts: i64,
    kind: Kind,
    /// Full snapshots: the transaction the name says it covers.
    covers: Option<u64>,
}

/// Objects of `db` grouped by instance, each group sorted by time (then name).
fn by_instance(objects: &[ObjectInfo], db: &str) -> BTreeMap<String, Vec<Obj>> {
    let mut out: BTreeMap<String, Vec<Obj>> = BTreeMap::new();
    for o in objects {
        let Ok((n, kind)) = SnapshotName::parse_object(&o.name) else {
            continue;
        };
        if n.syncer != db {
            continue;
        }
        out.entry(n.instance.clone()).or_default().push(Obj {
            info: o.clone(),
            ts: n.timestamp_ns,
            kind,
            covers: n.covers(),
        });
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| (a.ts, &a.info.name).cmp(&(b.ts, &b.info.name)));
    }
    out
}

/// What one instance contributes at `at`: `None` without a base; the gaps found.
struct Choice<'a> {
    chosen: Vec<&'a Obj>,
    gaps: Vec<PlanError>,
}

fn choose<'a>(instance: &str, objs: &'a [Obj], at: i64) -> Option<Choice<'a>> {
    // Objects not newer than `at` form a prefix of the time-sorted list.
    let all = objs;
    let upto = objs.partition_point(|o| o.ts <= at);
    let objs = &objs[..upto];
    // The newest full snapshot; on a clock tie the one covering the later transaction.
    let base = objs
        .iter()
        .filter(|o| o.kind == Kind::Snapshot)
        .max_by_key(|o| (o.ts, o.covers.unwrap_or(0), &o.info.name))?;
    let mut deltas: Vec<(&Obj, u64, u64)> = objs
        .iter()
        .filter(|o| o.ts >= base.ts)
        .filter_map(|o| match o.kind {
            Kind::Delta { from, to } => Some((o, from, to)),
            Kind::Snapshot => None,
        })
        // A delta the base's name says it covers (a bridging delta stored in the same
        // nanosecond) adds nothing.
        .filter(|(_, _, to)| base.covers.is_none_or(|c| *to > c))
        .collect();
    deltas.sort_by(|a, b| {
        (a.0.ts, a.1, a.2, &a.0.info.name).cmp(&(b.0.ts, b.1, b.2, &b.0.info.name))
    });
    let mut chosen = vec![base];
    let mut gaps = Vec::new();
    let mut end = base.covers;
    let mut prev = &base.info.name;
    for (o, from, to) in deltas {
        if let Some(e) = end
            && from > e
        {
            gaps.push(PlanError::Gap {
                instance: instance.to_string(),
                before: prev.clone(),
                after: o.info.name.clone(),
                from: e,
                to: from,
            });
        }
        end = Some(end.map_or(to, |e| e.max(to)));
        prev = &o.info.name;
        chosen.push(o);
    }
    // The last delta up to `at` missing leaves no hole between chosen objects: the first
    // object after `at` shows it when it is a delta that does not continue the chain.
    if let (Some(e), Some(next)) = (end, all.get(upto))
        && let Kind::Delta { from, .. } = next.kind
        && from > e
    {
        gaps.push(PlanError::Gap {
            instance: instance.to_string(),
            before: prev.clone(),
            after: next.info.name.clone(),
            from: e,
            to: from,
        });
    }
    Some(Choice { chosen, gaps })
}

/// The objects that rebuild `db` as of `at_ns`, for every instance or only `only_instance`.
pub fn plan_at(
    objects: &[ObjectInfo],
    db: &str,
    at_ns: i64,
    only_instance: Option<&str>,
) -> Result<Plan, PlanError> {
    let mut plan = Plan {
        at_ns,
        ..Plan::default()
    };
    for (instance, objs) in by_instance(objects, db) {
        if only_instance.is_some_and(|i| i != instance) {
            continue;
        }
        match choose(&instance, &objs, at_ns) {
            Some(mut c) => {
                if !c.gaps.is_empty() {
                    return Err(c.gaps.remove(0));
                }
                plan.instances.push(InstancePlan {
                    instance,
                    objects: c.chosen.iter().map(|o| o.info.clone()).collect(),
                });
            }
            None => {
                let n = objs.iter().filter(|o| o.ts <= at_ns).count();
                if n > 0 {
                    plan.without_base.push((instance, n));
                }
            }
        }
    }
    if plan.instances.is_empty() {
        return Err(PlanError::Nothing {
            db: db.to_string(),
            at: format_timestamp(at_ns),
        });
    }
    Ok(plan)
}

/// The moments a retention policy keeps at `now_ns` besides the whole `all` window: the start
/// of that window, UTC hour boundaries within `hourly` and UTC midnights within `daily`, newest
/// first.
pub fn kept_points(now_ns: i64, r: &RetentionConfig) -> Vec<i64> {
    let all_start = now_ns - r.all.0;
    let mut points = BTreeSet::new();
    points.insert(all_start);
    for (window, step) in [(r.hourly.0, HOUR_NS), (r.daily.0, DAY_NS)] {
        if window <= 0 {
            continue;
        }
        let oldest = now_ns - window;
        // The newest boundary strictly before the all window's start, then back in steps.
        let mut p = (all_start - 1).div_euclid(step) * step;
        while p >= oldest {
            points.insert(p);
            p -= step;
        }
    }
    points.into_iter().rev().collect()
}

/// The archived objects of `db` that the policy no longer needs at `now_ns`. Names that are
/// not objects of ours, and objects newer than the window's start, always stay.
pub fn prune(objects: &[ObjectInfo], db: &str, now_ns: i64, r: &RetentionConfig) -> Vec<String> {
    let all_start = now_ns - r.all.0;
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let groups = by_instance(objects, db);
    let points = kept_points(now_ns, r);
    for (instance, objs) in &groups {
        for o in objs.iter().filter(|o| o.ts >= all_start) {
            keep.insert(&o.info.name);
        }
        for &p in &points {
            if let Some(c) = choose(instance, objs, p) {
                keep.extend(c.chosen.iter().map(|o| o.info.name.as_str()));
            }
        }
    }
    groups
        .values()
        .flatten()
        .filter(|o| !keep.contains(o.info.name.as_str()))
        .map(|o| o.info.name.clone())
        .collect()
}

/// The moment a restore at `at_ns` rebuilds, given the policy at `now_ns`: `at_ns` itself
/// within the `all` window (exact), else the newest kept point not after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub at_ns: i64,
    pub exact: bool,
}

/// Describes what a policy keeps at `now_ns`, for error messages.
pub fn describe_window(now_ns: i64, r: &RetentionConfig) -> String {
    let t = |ns: i64| crate::core::display::rfc3339_nano(ns);
    let mut parts = Vec::new();
    if r.all.0 > 0 {
        parts.push(format!("every moment from {} to now", t(now_ns - r.all.0)));
    }
    if r.hourly.0 > 0 {
        parts.push(format!("each UTC hour from {}", t(now_ns - r.hourly.0)));
    }
    if r.daily.0 > 0 {
        parts.push(format!("each UTC midnight from {}", t(now_ns - r.daily.0)));
    }
    parts.join(", ")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("{at} is in the future (now is {now})")]
    Future { at: String, now: String },
    #[error("{at} is outside the retained window; retention keeps {window}")]
    Outside { at: String, window: String },
    #[error(
        "{at} is before the oldest retained object ({oldest}); retention (keeping {window}) \
         began then"
    )]
    BeforeRetained {
        at: String,
        oldest: String,
        window: String,
    },
}

/// Resolves a restore time against the policy and the oldest retained object's time.
pub fn resolve(
    at_ns: i64,
    now_ns: i64,
    r: &RetentionConfig,
    oldest_retained: Option<i64>,
) -> Result<Resolved, WindowError> {
    let t = crate::core::display::rfc3339_nano;
    if at_ns > now_ns {
        return Err(WindowError::Future {
            at: t(at_ns),
            now: t(now_ns),
        });
    }
    let resolved = if at_ns >= now_ns - r.all.0 {
        Resolved { at_ns, exact: true }
    } else {
        match kept_points(now_ns, r).into_iter().find(|p| *p <= at_ns) {
            Some(p) => Resolved {
                at_ns: p,
                exact: p == at_ns,
            },
            None => {
                return Err(WindowError::Outside {
                    at: t(at_ns),
                    window: describe_window(now_ns, r),
                });
            }
        }
    };
    match oldest_retained {
        Some(o) if o <= resolved.at_ns => Ok(resolved),
        Some(o) => Err(WindowError::BeforeRetained {
            at: t(at_ns),
            oldest: t(o),
            window: describe_window(now_ns, r),
        }),
        None => Err(WindowError::Outside {
            at: t(at_ns),
            window: format!(
                "{} (but nothing is retained yet)",
                describe_window(now_ns, r)
            ),
        }),
    }
}

/// The time a restore asks for: RFC 3339 (`2026-12-04T10:00:00Z`), or a Go duration or whole
/// days ago (`90m`, `2h`, `3d`).
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return i64::try_from(ts.as_nanosecond()).map_err(|_| format!("time {s:?} out of range"));
    }
    match crate::config::parse_days(s) {
        Ok(d) if d.0 >= 0 => Ok(now_ns - d.0),
        Ok(_) => Err(format!("time {s:?}: a duration ago must not be negative")),
        Err(_) => Err(format!(
            "time {s:?} is neither RFC 3339 (2026-12-04T10:00:00Z) nor a duration ago (2h, 3d)"
        )),
    }
}

#[cfg(test)]
mod tests;
