//! The Prometheus metrics of spec/observability.md §3, under the Go version's names, types and
//! labels so that existing dashboards and alert rules keep working. They live in the `prometheus`
//! crate's default registry, created on first use; `gather_text()` renders the registry plus the
//! per-scrape LMDB figures (`lmdb_*`, see `status::collect_lmdb`) in the text exposition format.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use prometheus::{
    Counter, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, TextEncoder,
};

/// Every metric the daemon updates. `lmdb` is the db name from the config.
pub struct Metrics {
    // Syncer: snapshot creation and store (§3.1).
    pub snapshots_generated: IntCounterVec,
    pub snapshots_generated_last_unix: GaugeVec,
    pub snapshots_generated_last_size: IntGaugeVec,
    pub store_calls: IntCounter,
    pub store_failed_attempts: IntCounterVec,
    pub store_failed_permanently: IntCounterVec,
    pub store_bytes: Counter,
    // Receiver: listing and downloads (§3.2).
    pub list_calls: IntCounter,
    pub list_failed: IntCounterVec,
    pub load_calls: IntCounter,
    pub load_failed: IntCounterVec,
    pub load_bytes: Counter,
    pub in_storage_count: IntGaugeVec,
    pub in_storage_bytes: IntGaugeVec,
    pub last_received: GaugeVec,
    pub last_received_age: HistogramVec,
    /// Ours: the time of each instance's snapshot or delta merged (or adopted) here last;
    /// `last_received_seconds` minus this is how far behind that instance this one is.
    pub last_merged: GaugeVec,
    // Concurrency limiters (§3.3): `limit_name` is `download` or `decompress`.
    pub climit_limit: IntGaugeVec,
    pub climit_waiting: IntGaugeVec,
    pub climit_active: IntGaugeVec,
    pub climit_acquired: IntCounterVec,
    pub climit_active_seconds: HistogramVec,
    pub climit_waiting_seconds: HistogramVec,
    // Cleaner and sweeper (§3.4).
    pub cleaner_list_calls: IntCounter,
    pub cleaner_list_failed: IntCounter,
    pub cleaner_delete: IntCounterVec,
    pub cleaner_delete_failed: IntCounter,
    pub sweeper_cleaned: IntCounterVec,
    pub sweeper_stats_available: IntGaugeVec,
    pub sweeper_stats_total_entries: IntGaugeVec,
    pub sweeper_stats_deleted_entries: IntGaugeVec,
    /// Upstream's summary without quantiles: sum and count of sweep durations per db.
    pub sweeper_duration: Mutex<BTreeMap<String, (f64, u64)>>,
    // S3 backend calls (§3.6); `method` is list, load, store, delete or create-bucket.
    pub s3_calls: IntCounterVec,
    pub s3_call_timestamp: GaugeVec,
    pub s3_call_duration: HistogramVec,
    pub s3_call_errors: IntCounterVec,
    pub s3_call_errors_by_type: IntCounterVec,
    // Azure backend calls, upstream's `storage_azure_*`; `method` is list, load, store, delete
    // or create-container.
    pub azure_calls: IntCounterVec,
    pub azure_call_timestamp: GaugeVec,
    pub azure_call_duration: HistogramVec,
    pub azure_call_errors: IntCounterVec,
    pub azure_call_errors_by_type: IntCounterVec,
    // Ours, not upstream's: the /healthz checks as a metric, for alerting without a prober.
    pub health_check_status: IntGaugeVec,
    // Ours: deltas (stored, merged, and chains found broken).
    pub deltas_stored: IntCounterVec,
    pub deltas_loaded: IntCounterVec,
    pub delta_chain_gaps: IntCounterVec,
    // Ours: how long merging a remote snapshot or delta took, and how long of that the LMDB
    // write lock was held (what PowerDNS writers wait for).
    pub merge_duration: HistogramVec,
    pub merge_write_lock: HistogramVec,
    // Ours: encrypted objects fetched, by outcome.
    pub encrypted_objects: IntCounterVec,
    // Ours: retention (objects and bytes kept under the retained prefix, copies and prunes).
    pub retention_objects: IntGaugeVec,
    pub retention_bytes: IntGaugeVec,
    pub retention_copied: IntCounterVec,
    pub retention_pruned: IntCounterVec,
}

/// Buckets of `lightningstream_receiver_snapshots_last_received_age_seconds`.
const AGE_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    21600.0, 43200.0, 86400.0, 259200.0, 604800.0, 1209600.0, 2592000.0,
];

/// Buckets of the merge durations: from a one-key delta to a multi-million-record snapshot.
const MERGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets of `storage_s3_call_duration_seconds` and `storage_azure_call_duration_seconds`
/// (the same in upstream).
const S3_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    prometheus::default_registry()
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    reg(IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    reg(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric"),
    )
}

fn float_counter(name: &str, help: &str) -> Counter {
    reg(Counter::new(name, help).expect("valid metric"))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let lmdb = &["lmdb"];
    let climit = &["lmdb", "limit_name"];
    Metrics {
        snapshots_generated: counter_vec(
            "lightningstream_syncer_snapshots_generated_total",
            "Number of snapshots generated",
            lmdb,
        ),
        snapshots_generated_last_unix: float_gauge_vec(
            "lightningstream_syncer_snapshots_generated_last_unix_seconds",
            "Timestamp of the last snapshot generated",
            lmdb,
        ),
        snapshots_generated_last_size: gauge_vec(
            "lightningstream_syncer_snapshots_generated_last_size_bytes",
            "Compressed size of the last snapshot generated",
            lmdb,
        ),
        store_calls: counter(
            "lightningstream_syncer_snapshots_store_calls_total",
            "Number of snapshot store attempts",
        ),
        store_failed_attempts: counter_vec(
            "lightningstream_syncer_snapshots_store_failed_attempts_total",
            "Number of failed snapshot store attempts",
            lmdb,
        ),
        store_failed_permanently: counter_vec(
            "lightningstream_syncer_snapshots_store_failed_permanently_total",
            "Number of snapshot stores given up after all retries",
            lmdb,
        ),
        store_bytes: float_counter(
            "lightningstream_syncer_snapshots_store_bytes_total",
            "Bytes of snapshots stored successfully",
        ),
        list_calls: counter(
            "lightningstream_syncer_snapshots_list_calls_total",
            "Number of snapshot list calls",
        ),
        list_failed: counter_vec(
            "lightningstream_syncer_snapshots_list_failed_total",
            "Number of failed snapshot list calls",
            lmdb,
        ),
        load_calls: counter(
            "lightningstream_syncer_snapshots_load_calls_total",
            "Number of snapshot download attempts",
        ),
        load_failed: counter_vec(
            "lightningstream_syncer_snapshots_load_failed_total",
            "Number of failed snapshot downloads",
            &["lmdb", "syncer_instance"],
        ),
        load_bytes: float_counter(
            "lightningstream_syncer_snapshots_load_bytes_total",
            "Bytes of snapshots downloaded successfully",
        ),
        in_storage_count: gauge_vec(
            "lightningstream_receiver_snapshots_in_storage_count",
            "Number of snapshots in storage in the last listing",
            lmdb,
        ),
        in_storage_bytes: gauge_vec(
            "lightningstream_receiver_snapshots_in_storage_bytes",
            "Total size of the snapshots in storage in the last listing",
            lmdb,
        ),
        last_received: float_gauge_vec(
            "lightningstream_receiver_snapshots_last_received_seconds",
            "Timestamp of the newest snapshot seen per instance",
            &["lmdb", "syncer_instance"],
        ),
        last_received_age: histogram_vec(
            "lightningstream_receiver_snapshots_last_received_age_seconds",
            "Age of a newly detected snapshot at detection",
            &["lmdb", "syncer_instance"],
            AGE_BUCKETS.to_vec(),
        ),
        last_merged: float_gauge_vec(
            "lightningstream_receiver_snapshots_last_merged_seconds",
            "Timestamp of the newest snapshot merged here per instance",
            &["lmdb", "syncer_instance"],
        ),
        climit_limit: gauge_vec(
            "lightningstream_climit_limit",
            "Configured number of tokens",
            climit,
        ),
        climit_waiting: gauge_vec(
            "lightningstream_climit_waiting",
            "Tasks waiting for a token",
            climit,
        ),
        climit_active: gauge_vec("lightningstream_climit_active", "Tokens held", climit),
        climit_acquired: counter_vec(
            "lightningstream_climit_acquired_total",
            "Tokens acquired",
            climit,
        ),
        climit_active_seconds: histogram_vec(
            "lightningstream_climit_active_seconds",
            "Time a token was held",
            climit,
            prometheus::DEFAULT_BUCKETS.to_vec(),
        ),
        climit_waiting_seconds: histogram_vec(
            "lightningstream_climit_waiting_seconds",
            "Time spent waiting for a token",
            climit,
            prometheus::DEFAULT_BUCKETS.to_vec(),
        ),
        cleaner_list_calls: counter(
            "lightningstream_cleaner_list_calls_total",
            "Number of cleaner list calls",
        ),
        cleaner_list_failed: counter(
            "lightningstream_cleaner_list_failed_total",
            "Number of failed cleaner list calls",
        ),
        cleaner_delete: counter_vec(
            "lightningstream_cleaner_delete_total",
            "Number of snapshot delete attempts by the cleaner",
            &["lmdb", "reason"],
        ),
        cleaner_delete_failed: counter(
            "lightningstream_cleaner_delete_failed_total",
            "Number of failed snapshot deletes by the cleaner",
        ),
        sweeper_cleaned: counter_vec(
            "lightningstream_sweeper_cleaned_total",
            "Number of stale deleted entries removed",
            lmdb,
        ),
        sweeper_stats_available: gauge_vec(
            "lightningstream_sweeper_stats_available",
            "1 once a sweep has completed",
            lmdb,
        ),
        sweeper_stats_total_entries: gauge_vec(
            "lightningstream_sweeper_stats_total_entries",
            "Entries after the last sweep, live and kept deleted ones",
            lmdb,
        ),
        sweeper_stats_deleted_entries: gauge_vec(
            "lightningstream_sweeper_stats_deleted_entries",
            "Deleted entries kept after the last sweep",
            lmdb,
        ),
        sweeper_duration: Mutex::new(BTreeMap::new()),
        s3_calls: counter_vec("storage_s3_call_total", "S3 calls by method", &["method"]),
        s3_call_timestamp: float_gauge_vec(
            "storage_s3_call_timestamp_seconds",
            "Time of the last S3 call by method",
            &["method"],
        ),
        s3_call_duration: histogram_vec(
            "storage_s3_call_duration_seconds",
            "S3 call duration by method",
            &["method"],
            S3_BUCKETS.to_vec(),
        ),
        s3_call_errors: counter_vec(
            "storage_s3_call_error_total",
            "S3 call errors by method",
            &["method"],
        ),
        s3_call_errors_by_type: counter_vec(
            "storage_s3_call_error_by_type_total",
            "S3 call errors by method and error type",
            &["method", "error"],
        ),
        azure_calls: counter_vec(
            "storage_azure_call_total",
            "Azure API calls by method",
            &["method"],
        ),
        azure_call_timestamp: float_gauge_vec(
            "storage_azure_call_timestamp_seconds",
            "UNIX timestamp of last Azure API call by method",
            &["method"],
        ),
        azure_call_duration: histogram_vec(
            "storage_azure_call_duration_seconds",
            "Azure API call duration by method",
            &["method"],
            S3_BUCKETS.to_vec(),
        ),
        azure_call_errors: counter_vec(
            "storage_azure_call_error_total",
            "Azure API call errors by method",
            &["method"],
        ),
        azure_call_errors_by_type: counter_vec(
            "storage_azure_call_error_by_type_total",
            "Azure API call errors by method and error type",
            &["method", "error"],
        ),
        health_check_status: gauge_vec(
            "lightningstream_health_check_status",
            "Result of each /healthz check: 0 ok, 1 warning, 2 failing",
            &["check"],
        ),
        deltas_stored: counter_vec(
            "lightningstream_deltas_stored_total",
            "Number of delta objects stored (ours; also counted as generated snapshots)",
            lmdb,
        ),
        deltas_loaded: counter_vec(
            "lightningstream_deltas_loaded_total",
            "Number of delta objects of other instances merged",
            &["lmdb", "instance"],
        ),
        delta_chain_gaps: counter_vec(
            "lightningstream_deltas_chain_gaps_total",
            "Number of broken delta chains found (the instance's next full snapshot is awaited)",
            &["lmdb", "instance"],
        ),
        merge_duration: histogram_vec(
            "lightningstream_merge_duration_seconds",
            "Time to merge one remote snapshot or delta, by kind (snapshot or delta)",
            &["lmdb", "kind"],
            MERGE_BUCKETS.to_vec(),
        ),
        merge_write_lock: histogram_vec(
            "lightningstream_merge_write_lock_seconds",
            "Longest the LMDB write lock was held at once while merging one remote snapshot or delta",
            lmdb,
            MERGE_BUCKETS.to_vec(),
        ),
        encrypted_objects: counter_vec(
            "lightningstream_encrypted_objects_total",
            "Encrypted objects fetched, by result: decrypted, corrupt (failed authentication, never merged), no_identity or wrong_identity (skipped)",
            &["lmdb", "result"],
        ),
        retention_objects: gauge_vec(
            "lightningstream_retention_objects",
            "Number of objects kept under the retained prefix (ours)",
            lmdb,
        ),
        retention_bytes: gauge_vec(
            "lightningstream_retention_bytes",
            "Bytes of the objects kept under the retained prefix (ours)",
            lmdb,
        ),
        retention_copied: counter_vec(
            "lightningstream_retention_copied_total",
            "Number of objects copied to the retained prefix (ours)",
            lmdb,
        ),
        retention_pruned: counter_vec(
            "lightningstream_retention_pruned_total",
            "Number of retained objects removed once no retention window needed them (ours)",
            lmdb,
        ),
    }
});

/// The process's metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    pub fn observe_sweep(&self, db: &str, seconds: f64) {
        let mut m = self
            .sweeper_duration
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let e = m.entry(db.to_string()).or_insert((0.0, 0));
        e.0 += seconds;
        e.1 += 1;
    }

    fn sweeper_summary(&self) -> Option<prometheus::proto::MetricFamily> {
        use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Summary};
        let m = self
            .sweeper_duration
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if m.is_empty() {
            return None;
        }
        let mut family = MetricFamily::default();
        family.set_name("lightningstream_sweeper_duration_seconds".into());
        family.set_help("Duration of a sweep".into());
        family.set_field_type(MetricType::SUMMARY);
        for (db, (sum, count)) in m.iter() {
            let mut label = LabelPair::default();
            label.set_name("lmdb".into());
            label.set_value(db.clone());
            let mut summary = Summary::default();
            summary.set_sample_sum(*sum);
            summary.set_sample_count(*count);
            let mut metric = Metric::default();
            metric.set_label(vec![label]);
            metric.set_summary(summary);
            family.mut_metric().push(metric);
        }
        Some(family)
    }
}

/// The default registry plus `extra` families (computed per scrape) in the Prometheus text
/// format, sorted by name as the Go client does.
pub fn gather_text(extra: Vec<prometheus::proto::MetricFamily>) -> String {
    let mut families = prometheus::default_registry().gather();
    families.extend(metrics().sweeper_summary());
    families.extend(extra);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families.
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Seconds since the Unix epoch of a nanosecond timestamp, as Prometheus wants them.
pub fn unix_seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_render() {
        let m = metrics();
        m.snapshots_generated.with_label_values(&["t_main"]).inc();
        m.cleaner_delete
            .with_label_values(&["t_main", "newer snapshot"])
            .inc();
        m.observe_sweep("t_main", 0.5);
        let text = gather_text(Vec::new());
        assert!(text.contains("# TYPE lightningstream_syncer_snapshots_generated_total counter\n"));
        assert!(
            text.contains("lightningstream_syncer_snapshots_generated_total{lmdb=\"t_main\"} 1\n")
        );
        assert!(text.contains(
            "lightningstream_cleaner_delete_total{lmdb=\"t_main\",reason=\"newer snapshot\"} 1\n"
        ));
        assert!(text.contains("# TYPE lightningstream_sweeper_duration_seconds summary\n"));
        assert!(
            text.contains("lightningstream_sweeper_duration_seconds_count{lmdb=\"t_main\"} 1\n")
        );
    }
}
