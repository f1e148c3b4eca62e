//! Health checks behind `/healthz` (spec/observability.md §2), modelled on the go-healthz
//! registry the Go version uses: named checks, each evaluated on its own interval by the health
//! thread, whose last results make up the report. Two kinds feed it: failure-duration trackers
//! (`<db>_storage_{list,load,store}_failed_duration`), which storage callers tell of each success
//! and failure, and the start tracker (`<db>_startup_in_progress`), which the syncer tells when
//! each start-up step is done and which removes itself once start-up is complete.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::GoDuration;

/// Checks are never evaluated more often than this (upstream `MinEvaluationInterval`).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    Warn(String),
    Fail(String),
}

/// What a check's evaluation returns: a result, or `None` to remove the check.
type Evaluator = Box<dyn FnMut() -> Option<CheckResult> + Send>;

struct Check {
    interval: Duration,
    next: Instant,
    last: CheckResult,
    eval: Evaluator,
}

/// The registry of checks and metadata.
pub struct Health {
    checks: Mutex<BTreeMap<String, Check>>,
    meta: Mutex<BTreeMap<String, Value>>,
    since: jiff::Timestamp,
    started: Instant,
}

static HEALTH: LazyLock<Health> = LazyLock::new(Health::new);

/// The process's health registry.
pub fn health() -> &'static Health {
    &HEALTH
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A duration as Go prints it after `Round(time.Second)`: `0s`, `45s`, `1m5s`.
fn round_secs(d: Duration) -> String {
    let secs = (d.as_millis() + 500) / 1000;
    GoDuration::from_secs(secs as i64).to_string()
}

impl Health {
    pub fn new() -> Health {
        let mut meta = BTreeMap::new();
        let host = crate::base::hostname();
        if !host.is_empty() {
            meta.insert("hostname".to_string(), Value::from(host));
        }
        meta.insert("version".to_string(), Value::from(crate::base::VERSION));
        Health {
            checks: Mutex::new(BTreeMap::new()),
            meta: Mutex::new(meta),
            since: jiff::Timestamp::now(),
            started: Instant::now(),
        }
    }

    /// Adds (or replaces) a check; it reports the failure "pending" until first evaluated.
    pub fn register(
        &self,
        name: &str,
        interval: Duration,
        eval: impl FnMut() -> Option<CheckResult> + Send + 'static,
    ) {
        lock(&self.checks).insert(
            name.to_string(),
            Check {
                interval: interval.max(MIN_INTERVAL),
                next: Instant::now(),
                last: CheckResult::Fail("pending".into()),
                eval: Box::new(eval),
            },
        );
    }

    pub fn deregister(&self, name: &str) {
        lock(&self.checks).remove(name);
    }

    pub fn set_meta(&self, key: &str, value: Value) {
        lock(&self.meta).insert(key.to_string(), value);
    }

    /// Evaluates the checks that are due; returns how long until the next one is.
    pub fn evaluate_due(&self, now: Instant) -> Duration {
        let gauge = &crate::metrics::metrics().health_check_status;
        let mut checks = lock(&self.checks);
        let mut done = Vec::new();
        for (name, c) in checks.iter_mut().filter(|(_, c)| c.next <= now) {
            match (c.eval)() {
                Some(result) => {
                    let level = match result {
                        CheckResult::Ok => 0,
                        CheckResult::Warn(_) => 1,
                        CheckResult::Fail(_) => 2,
                    };
                    gauge.with_label_values(&[name]).set(level);
                    c.last = result;
                    c.next = now + c.interval;
                }
                None => done.push(name.clone()),
            }
        }
        for name in done {
            let _ = gauge.remove_label_values(&[&name]);
            checks.remove(&name);
        }
        checks
            .values()
            .map(|c| c.next.saturating_duration_since(now))
            .min()
            .unwrap_or(MIN_INTERVAL)
    }

    /// The `/healthz` status code and JSON body.
    pub fn report(&self) -> (u16, Value) {
        let mut failures = serde_json::Map::new();
        let mut warnings = serde_json::Map::new();
        for (name, c) in lock(&self.checks).iter() {
            match &c.last {
                CheckResult::Ok => {}
                CheckResult::Warn(m) => {
                    warnings.insert(name.clone(), Value::from(m.clone()));
                }
                CheckResult::Fail(m) => {
                    failures.insert(name.clone(), Value::from(m.clone()));
                }
            }
        }
        let ok = failures.is_empty();
        let has_warnings = !warnings.is_empty();
        let status = if !ok {
            "Unavailable"
        } else if has_warnings {
            "Warning"
        } else {
            "OK"
        };
        let mut body = json!({
            "ok": ok,
            "has_warnings": has_warnings,
            "status": status,
            "time": jiff::Timestamp::now().to_string(),
            "since": self.since.to_string(),
            "runtime": runtime_info(),
            "failures": failures,
            "warnings": warnings,
        });
        let meta = lock(&self.meta).clone();
        if !meta.is_empty() {
            body["metadata"] = Value::Object(meta.into_iter().collect());
        }
        (if ok { 200 } else { 503 }, body)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// The `runtime` object: upstream reports Go runtime figures; these are the nearest process
/// facts (threads for goroutines, anonymous resident memory for the heap), same keys.
fn runtime_info() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "arch": arch,
        "os": std::env::consts::OS,
        "version": concat!("rust lightningstream ", env!("CARGO_PKG_VERSION")),
        "goroutines_count": field("Threads:"),
        "heap_objects_count": 0,
        "alloc_bytes": field("RssAnon:") * 1024,
        "total_alloc_bytes": field("VmHWM:") * 1024,
    })
}

/// Warn and error thresholds of a tracker.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub interval: Duration,
    pub warn: Duration,
    pub error: Duration,
}

#[derive(Default)]
struct Streak {
    since: Option<Instant>,
    last_error: String,
}

/// Tracks how long an activity has failed without a success in between (upstream
/// `healthtracker`).
pub struct FailureTracker {
    activity: &'static str,
    limits: Thresholds,
    failures: AtomicU32,
    streak: Mutex<Streak>,
}

impl FailureTracker {
    pub fn new(activity: &'static str, limits: Thresholds) -> FailureTracker {
        FailureTracker {
            activity,
            limits,
            failures: AtomicU32::new(0),
            streak: Mutex::new(Streak::default()),
        }
    }

    /// Creates a tracker and registers its check as `<prefix>_failed_duration`.
    pub fn registered(
        registry: &Health,
        prefix: &str,
        activity: &'static str,
        limits: Thresholds,
    ) -> Arc<FailureTracker> {
        let t = Arc::new(FailureTracker::new(activity, limits));
        let name = format!("{prefix}_failed_duration");
        let (t2, log_name) = (t.clone(), name.clone());
        registry.register(&name, limits.interval, move || {
            Some(t2.evaluate(Instant::now(), &log_name))
        });
        t
    }

    pub fn add_failure(&self, err: &dyn std::fmt::Display) {
        let mut s = lock(&self.streak);
        s.last_error = err.to_string();
        if self.failures.load(Ordering::Relaxed) == 0 {
            s.since = Some(Instant::now());
        }
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_success(&self) {
        let mut s = lock(&self.streak);
        self.failures.store(0, Ordering::Relaxed);
        s.since = None;
        s.last_error.clear();
    }

    /// The check's result at `now`; threshold violations are logged as upstream does.
    pub fn evaluate(&self, now: Instant, name: &str) -> CheckResult {
        let s = lock(&self.streak);
        let Some(since) = s
            .since
            .filter(|_| self.failures.load(Ordering::Relaxed) > 0)
        else {
            return CheckResult::Ok;
        };
        let d = now.saturating_duration_since(since);
        let text = format!(
            "failed to {} for {} - last error: '{}'",
            self.activity,
            round_secs(d),
            s.last_error
        );
        if d >= self.limits.error {
            log::warn!(healthtracker = name; "failure for {} is violating the error threshold ({})",
                round_secs(d), GoDuration::from_std(self.limits.error));
            CheckResult::Fail(text)
        } else if d >= self.limits.warn {
            log::warn!(healthtracker = name; "failure for {} is violating the warning threshold ({})",
                round_secs(d), GoDuration::from_std(self.limits.warn));
            CheckResult::Warn(text)
        } else {
            CheckResult::Ok
        }
    }
}

/// Tracks whether a syncer's start-up is complete (upstream `starttracker`): the initial
/// listing, the initial snapshot (or knowing none is needed) and one complete main-loop pass.
pub struct StartTracker {
    listing: AtomicBool,
    store: AtomicBool,
    pass: AtomicBool,
    since: Instant,
}

impl StartTracker {
    pub fn new() -> StartTracker {
        StartTracker {
            listing: AtomicBool::new(false),
            store: AtomicBool::new(false),
            pass: AtomicBool::new(false),
            since: Instant::now(),
        }
    }

    /// Creates a tracker and registers `<db>_startup_in_progress` (and the `startup_<db>`
    /// metadata when `report_metadata`).
    pub fn registered(
        registry: &'static Health,
        db: &str,
        limits: Thresholds,
        report_healthz: bool,
        report_metadata: bool,
    ) -> Arc<StartTracker> {
        let t = Arc::new(StartTracker::new());
        let meta_key = format!("startup_{db}");
        if report_metadata {
            registry.set_meta(&meta_key, Value::Bool(false));
        }
        let t2 = t.clone();
        registry.register(
            &format!("{db}_startup_in_progress"),
            limits.interval,
            move || {
                let r = t2.evaluate(Instant::now(), limits, report_healthz);
                if r.is_none() {
                    if report_metadata {
                        registry.set_meta(&meta_key, Value::Bool(true));
                    }
                    log::info!(starttracker = meta_key.trim_start_matches("startup_"); "startup phase completed successfully");
                }
                r
            },
        );
        t
    }

    pub fn passed_initial_listing(&self) {
        self.listing.store(true, Ordering::Relaxed);
    }

    pub fn passed_initial_store(&self) {
        self.store.store(true, Ordering::Relaxed);
    }

    pub fn pass_completed(&self) {
        self.pass.store(true, Ordering::Relaxed);
    }

    pub fn is_complete(&self) -> bool {
        self.listing.load(Ordering::Relaxed)
            && self.store.load(Ordering::Relaxed)
            && self.pass.load(Ordering::Relaxed)
    }

    /// `None` once start-up is complete (the check then removes itself).
    pub fn evaluate(
        &self,
        now: Instant,
        limits: Thresholds,
        report_healthz: bool,
    ) -> Option<CheckResult> {
        if self.is_complete() {
            return None;
        }
        if !report_healthz {
            return Some(CheckResult::Ok);
        }
        let d = now.saturating_duration_since(self.since);
        let text = format!("successful startup pending after {}", round_secs(d));
        Some(if d >= limits.error {
            CheckResult::Fail(text)
        } else if d >= limits.warn {
            CheckResult::Warn(text)
        } else {
            CheckResult::Ok
        })
    }
}

impl Default for StartTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// The trackers of one syncer.
#[derive(Clone)]
pub struct DbHealth {
    pub list: Arc<FailureTracker>,
    pub load: Arc<FailureTracker>,
    pub store: Arc<FailureTracker>,
    pub start: Arc<StartTracker>,
}

impl DbHealth {
    /// Registers the four checks of db `db` with the configured thresholds.
    pub fn register(db: &str, cfg: &crate::config::HealthConfig) -> DbHealth {
        let t = |c: &crate::config::HealthCheckConfig| Thresholds {
            interval: c.interval.as_std(),
            warn: c.warn_duration.as_std(),
            error: c.error_duration.as_std(),
        };
        let h = health();
        DbHealth {
            list: FailureTracker::registered(
                h,
                &format!("{db}_storage_list"),
                "list snapshots on storage backend",
                t(&cfg.storage_list),
            ),
            load: FailureTracker::registered(
                h,
                &format!("{db}_storage_load"),
                "load a snapshot from storage backend",
                t(&cfg.storage_load),
            ),
            store: FailureTracker::registered(
                h,
                &format!("{db}_storage_store"),
                "write to storage backend",
                t(&cfg.storage_store),
            ),
            start: StartTracker::registered(
                h,
                db,
                Thresholds {
                    interval: cfg.start.interval.as_std(),
                    warn: cfg.start.warn_duration.as_std(),
                    error: cfg.start.error_duration.as_std(),
                },
                cfg.start.report_healthz,
                cfg.start.report_metadata,
            ),
        }
    }

    /// Trackers registered nowhere, for code paths and tests without a health report.
    pub fn detached() -> DbHealth {
        let t = Thresholds {
            interval: MIN_INTERVAL,
            warn: Duration::MAX,
            error: Duration::MAX,
        };
        DbHealth {
            list: Arc::new(FailureTracker::new("list", t)),
            load: Arc::new(FailureTracker::new("load", t)),
            store: Arc::new(FailureTracker::new("store", t)),
            start: Arc::new(StartTracker::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Thresholds {
        Thresholds {
            interval: Duration::from_secs(1),
            warn: Duration::from_secs(5),
            error: Duration::from_secs(60),
        }
    }

    #[test]
    fn failure_tracker_goes_warn_then_error_and_resets_on_success() {
        let t = FailureTracker::new("list snapshots on storage backend", limits());
        let t0 = Instant::now();
        assert_eq!(t.evaluate(t0, "x"), CheckResult::Ok);
        t.add_failure(&"connection refused");
        let since = lock(&t.streak).since.unwrap();
        assert_eq!(
            t.evaluate(since + Duration::from_secs(1), "x"),
            CheckResult::Ok
        );
        t.add_failure(&"timeout");
        assert_eq!(
            t.evaluate(since + Duration::from_secs(6), "x"),
            CheckResult::Warn(
                "failed to list snapshots on storage backend for 6s - last error: 'timeout'".into()
            )
        );
        assert_eq!(
            t.evaluate(since + Duration::from_secs(65), "x"),
            CheckResult::Fail(
                "failed to list snapshots on storage backend for 1m5s - last error: 'timeout'"
                    .into()
            )
        );
        t.add_success();
        assert_eq!(
            t.evaluate(since + Duration::from_secs(66), "x"),
            CheckResult::Ok
        );
    }

    #[test]
    fn start_tracker_needs_all_three_steps() {
        let t = StartTracker::new();
        let l = limits();
        assert_eq!(t.evaluate(t.since, l, true), Some(CheckResult::Ok));
        assert!(matches!(
            t.evaluate(t.since + Duration::from_secs(10), l, true),
            Some(CheckResult::Warn(m)) if m == "successful startup pending after 10s"
        ));
        assert!(matches!(
            t.evaluate(t.since + Duration::from_secs(61), l, true),
            Some(CheckResult::Fail(_))
        ));
        assert_eq!(
            t.evaluate(t.since + Duration::from_secs(61), l, false),
            Some(CheckResult::Ok)
        );
        t.passed_initial_listing();
        t.passed_initial_store();
        assert!(t.evaluate(t.since, l, true).is_some());
        t.pass_completed();
        assert_eq!(t.evaluate(t.since, l, true), None);
    }

    #[test]
    fn report_shape_and_status_codes() {
        let h = Health::new();
        let (code, body) = h.report();
        assert_eq!(code, 200);
        assert_eq!(body["status"], "OK");
        assert!(body["failures"].as_object().unwrap().is_empty());
        assert!(body["runtime"]["goroutines_count"].as_u64().unwrap() >= 1);
        assert_eq!(body["metadata"]["version"], crate::base::VERSION);

        let mut result = CheckResult::Warn("slow".into());
        h.register("a_check", Duration::from_secs(1), move || {
            Some(std::mem::replace(
                &mut result,
                CheckResult::Fail("down".into()),
            ))
        });
        // Before its first evaluation a check is pending, which is a failure.
        let (code, body) = h.report();
        assert_eq!((code, &body["status"]), (503, &json!("Unavailable")));
        assert_eq!(body["failures"]["a_check"], "pending");
        let t0 = Instant::now();
        h.evaluate_due(t0);
        let (code, body) = h.report();
        assert_eq!((code, &body["status"]), (200, &json!("Warning")));
        assert_eq!(body["has_warnings"], true);
        // Not due again within its interval.
        h.evaluate_due(t0 + Duration::from_millis(500));
        assert_eq!(h.report().0, 200);
        h.evaluate_due(t0 + Duration::from_secs(1));
        let (code, body) = h.report();
        assert_eq!((code, &body["failures"]["a_check"]), (503, &json!("down")));
        h.deregister("a_check");
        assert_eq!(h.report().0, 200);
    }
}
