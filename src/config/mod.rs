//! The YAML configuration of the Go version (spec/config.md), parsed strictly: environment
//! expansion over the raw text, Go defaults, YAML 1.1 scalars, unknown keys rejected, and the
//! validation rules with the Go messages. Every error names the file, the key and its line, and
//! is raised before anything opens an LMDB. Backend options (`storage.options`) are kept raw and
//! parsed by the backend that needs them, as upstream does.

mod azure;
mod backends;
mod expand;
mod load;
mod types;

use std::collections::BTreeMap;

use crate::core::flags::dbi_flags_string;
use serde::{Deserialize, Deserializer, Serialize};

pub use azure::AzureOptions;
pub use backends::{FsOptions, S3Options, TlsOptions};
pub use expand::expand_env;
pub use load::{load, parse_str, parse_with_env};
pub use types::{GoDuration, format_size, parse_days, parse_size, parse_yaml11_int};
use types::{de_bool, de_dbi_flags, de_f32, de_i64, de_size, de_string, de_u32};

/// A config problem, located as precisely as possible.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path, e.g. `lmdbs.main.options.file_mask`.
    pub key: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = format!("config file {:?}", self.file);
        match (self.line, self.column) {
            (Some(l), Some(c)) => s.push_str(&format!(", line {l} column {c}")),
            (Some(l), None) => s.push_str(&format!(", line {l}")),
            _ => {}
        }
        s.push_str(": ");
        if let Some(k) = self
            .key
            .as_ref()
            .filter(|k| !self.message.starts_with(k.as_str()))
        {
            s.push_str(&format!("{k}: "));
        }
        s.push_str(&self.message);
        s
    }
}

fn defaults<T: serde::de::DeserializeOwned>() -> T {
    // Every section type fills all its fields from per-field defaults, so an empty mapping
    // always deserializes; the unit tests exercise each.
    serde_norway::from_str("{}").expect("config section defaults deserialize from {}")
}

/// A section given as an explicit null (`sweeper:` with nothing under it) takes zero values,
/// as in Go's yaml.v2; an absent section keeps the defaults (the field's serde default).
fn null_is_zero<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_is_empty_map<'de, D: Deserializer<'de>>(d: D) -> Result<serde_norway::Mapping, D::Error> {
    Ok(Option::<serde_norway::Mapping>::deserialize(d)?.unwrap_or_default())
}

fn null_is_empty<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    null_is_zero(d)
}

macro_rules! dur {
    ($name:ident, $ns:expr) => {
        fn $name() -> GoDuration {
            GoDuration($ns)
        }
    };
}
const S: i64 = 1_000_000_000;
dur!(d_2ms, S / 500);

fn max_uncompressed() -> u64 {
    16 << 30
}
dur!(d_50ms, S / 20);
dur!(d_1s, S);
dur!(d_5s, 5 * S);
dur!(d_10s, 10 * S);
dur!(d_15s, 15 * S);
dur!(d_20s, 20 * S);
dur!(d_90s, 90 * S);
dur!(d_1m, 60 * S);
dur!(d_5m, 300 * S);
dur!(d_10m, 600 * S);
dur!(d_15m, 900 * S);
dur!(d_30m, 1800 * S);
dur!(d_4h, 4 * 3600 * S);
dur!(d_6h, 6 * 3600 * S);
dur!(d_168h, 168 * 3600 * S);
pub(crate) fn hundred() -> i64 {
    100
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "de_string")]
    pub instance: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub lmdbs: BTreeMap<String, LmdbConfig>,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub sweeper: SweeperConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub storage: StorageConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub http: HttpConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub log: LogConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub health: HealthConfig,
    #[serde(default = "d_1s")]
    pub lmdb_poll_interval: GoDuration,
    #[serde(default = "d_30m")]
    pub lmdb_log_stats_interval: GoDuration,
    #[serde(default = "yes", deserialize_with = "de_bool")]
    pub lmdb_scrape_smaps: bool,
    #[serde(default = "d_1s")]
    pub storage_poll_interval: GoDuration,
    #[serde(default = "d_5s")]
    pub storage_retry_interval: GoDuration,
    #[serde(default = "retry_count", deserialize_with = "de_i64")]
    pub storage_retry_count: i64,
    #[serde(default, deserialize_with = "de_bool")]
    pub storage_retry_forever: bool,
    #[serde(default = "d_4h")]
    pub storage_force_snapshot_interval: GoDuration,
    #[serde(default = "two", deserialize_with = "de_i64")]
    pub memory_downloaded_snapshots: i64,
    #[serde(default = "three", deserialize_with = "de_i64")]
    pub memory_decompressed_snapshots: i64,
    #[serde(default, deserialize_with = "de_bool")]
    pub only_once: bool,
    /// Ours: snapshots that decompress to more than this are refused as corrupt (gzip bombs).
    #[serde(
        default = "max_uncompressed",
        deserialize_with = "de_size",
        serialize_with = "ser_size"
    )]
    pub snapshot_max_uncompressed_size: u64,
    /// Ours (the Go version has no such key): the longest a native-mode merge holds the LMDB
    /// write lock before committing what it has and letting other writers in; 0 = unbounded.
    #[serde(default = "d_50ms")]
    pub merge_lock_duration: GoDuration,
    /// Ours: the pause between two write transactions of one merge.
    #[serde(default = "d_2ms")]
    pub merge_release_duration: GoDuration,
    /// Ours: delta objects between full snapshots. Left out of the printed config while off,
    /// so that a config without it prints as before.
    #[serde(
        default = "defaults",
        deserialize_with = "null_is_zero",
        skip_serializing_if = "DeltaConfig::is_off"
    )]
    pub deltas: DeltaConfig,
    /// Ours: client-side encryption of stored objects (age). Left out of the printed config
    /// while unset, so that a config without it prints as before.
    #[serde(
        default = "defaults",
        deserialize_with = "null_is_zero",
        skip_serializing_if = "EncryptionConfig::is_off"
    )]
    pub encryption: EncryptionConfig,
    /// Ours: point-in-time retention of snapshots and deltas (`restore`, `pdns restore-zone`).
    /// Left out of the printed config while off.
    #[serde(
        default = "defaults",
        deserialize_with = "null_is_zero",
        skip_serializing_if = "RetentionConfig::is_off"
    )]
    pub retention: RetentionConfig,
    /// Where the config came from, to locate errors found later (backend options).
    #[serde(skip)]
    pub source: ConfigSource,
}

#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub file: String,
    pub text: String,
}

fn retry_count() -> i64 {
    100
}
fn two() -> i64 {
    2
}
fn three() -> i64 {
    3
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmdbConfig {
    #[serde(deserialize_with = "de_string")]
    pub path: String,
    #[serde(deserialize_with = "null_is_zero")]
    pub options: LmdbOptions,
    #[serde(deserialize_with = "de_bool")]
    pub schema_tracks_changes: bool,
    #[serde(deserialize_with = "de_bool")]
    pub dupsort_hack: bool,
    #[serde(deserialize_with = "de_bool")]
    pub header_extra_padding_block: bool,
    #[serde(deserialize_with = "null_is_empty")]
    pub dbi_options: BTreeMap<String, DbiOptions>,
}

/// 0 means "the default" for masks, map size and max_dbs, as in Go.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmdbOptions {
    #[serde(deserialize_with = "de_bool")]
    pub no_subdir: bool,
    #[serde(deserialize_with = "de_bool")]
    pub create: bool,
    #[serde(deserialize_with = "de_u32")]
    pub dir_mask: u32,
    #[serde(deserialize_with = "de_u32")]
    pub file_mask: u32,
    #[serde(deserialize_with = "de_size", serialize_with = "ser_size")]
    pub map_size: u64,
    #[serde(deserialize_with = "de_u32")]
    pub max_dbs: u32,
}

fn ser_size<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_size(*v))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbiOptions {
    /// Presence matters: `Some(0)` is a valid override.
    #[serde(deserialize_with = "de_dbi_flags", serialize_with = "ser_flags")]
    pub override_create_flags: Option<u32>,
}

fn ser_flags<S: serde::Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(f) => s.serialize_str(&dbi_flags_string(u64::from(*f))),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweeperConfig {
    #[serde(default, deserialize_with = "de_bool")]
    pub enabled: bool,
    #[serde(default = "retention_days", deserialize_with = "de_f32")]
    pub retention_days: f32,
    #[serde(default = "d_6h")]
    pub interval: GoDuration,
    #[serde(default = "d_10m")]
    pub first_interval: GoDuration,
    #[serde(default = "d_50ms")]
    pub lock_duration: GoDuration,
    #[serde(default = "d_50ms")]
    pub release_duration: GoDuration,
    #[serde(default)]
    pub retention_load_cutoff_duration: GoDuration,
}

fn retention_days() -> f32 {
    370.0
}

impl SweeperConfig {
    /// `float32(days) * float32(24h)` truncated, exactly as the Go code computes it.
    pub fn retention_duration_ns(&self) -> i64 {
        let day = 86_400_000_000_000i64 as f32;
        (self.retention_days * day) as i64
    }

    /// The retention minus the load-time cutoff buffer (merge.md §2.1).
    pub fn retention_duration_minus_cutoff_ns(&self) -> i64 {
        let r = self.retention_duration_ns();
        let c = self.retention_load_cutoff_duration.0;
        if c > 0 {
            r - c.min(r.saturating_mul(3) / 4)
        } else {
            r - r / 100
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(rename = "type", default, deserialize_with = "de_string")]
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "null_is_empty_map",
        serialize_with = "ser_redacted"
    )]
    pub options: serde_norway::Mapping,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub cleanup: CleanupConfig,
    #[serde(default, deserialize_with = "de_string")]
    pub root_path: String,
}

/// Option keys whose values never appear in logs.
const SECRET_KEYS: [&str; 5] = [
    "secret_key",
    "secret",
    "password",
    "account_key",
    "sas_token",
];

fn ser_redacted<S: serde::Serializer>(m: &serde_norway::Mapping, s: S) -> Result<S::Ok, S::Error> {
    let mut out = m.clone();
    for (k, v) in out.iter_mut() {
        let secret = k.as_str().is_some_and(|k| SECRET_KEYS.contains(&k));
        if secret && v.as_str().is_some_and(|s| !s.is_empty()) {
            *v = serde_norway::Value::String("***".into());
        }
    }
    out.serialize(s)
}

/// `deltas:` (ours). Off by default: Go instances see only full snapshots, so a fleet that
/// mixes them keeps its old propagation delay only while this stays off.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    #[serde(default, deserialize_with = "de_bool")]
    pub enabled: bool,
    /// A full snapshot at least this often (when anything changed).
    #[serde(default = "d_10m")]
    pub full_snapshot_interval: GoDuration,
    /// A full snapshot after this many deltas.
    #[serde(default = "hundred", deserialize_with = "de_i64")]
    pub max_deltas: i64,
}

impl DeltaConfig {
    fn is_off(&self) -> bool {
        !self.enabled
    }
}

/// Ours: objects are encrypted to every `recipients` entry (age X25519 public keys, `age1...`)
/// and decrypted with any identity of the `identity_files` (age identity files, which must not
/// be accessible to other users). Either list may be empty: without recipients objects are
/// stored in the clear, without identity files encrypted objects are skipped.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub recipients: Vec<String>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub identity_files: Vec<String>,
}

impl EncryptionConfig {
    fn is_off(&self) -> bool {
        self.recipients.is_empty() && self.identity_files.is_empty()
    }
}

/// `retention:` (ours). Three windows measured back from now, each at least as long as the one
/// before when set: within `all` every object is kept (any moment can be rebuilt exactly),
/// within `hourly` the objects that rebuild each UTC hour boundary, within `daily` each UTC
/// midnight. Durations are Go durations, or whole days with a `d` suffix (`7d`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default, deserialize_with = "types::de_days")]
    pub all: GoDuration,
    #[serde(default, deserialize_with = "types::de_days")]
    pub hourly: GoDuration,
    #[serde(default, deserialize_with = "types::de_days")]
    pub daily: GoDuration,
}

impl RetentionConfig {
    pub fn is_off(&self) -> bool {
        self.all.is_zero() && self.hourly.is_zero() && self.daily.is_zero()
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupConfig {
    #[serde(default, deserialize_with = "de_bool")]
    pub enabled: bool,
    #[serde(default = "d_5m")]
    pub interval: GoDuration,
    #[serde(default = "d_10m")]
    pub must_keep_interval: GoDuration,
    #[serde(default = "d_168h")]
    pub remove_old_instances_interval: GoDuration,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "de_string")]
    pub address: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "info", deserialize_with = "de_string")]
    pub level: String,
    #[serde(default = "human", deserialize_with = "de_string")]
    pub format: String,
    #[serde(default = "short", deserialize_with = "de_string")]
    pub timestamp: String,
}

fn info() -> String {
    "info".into()
}
fn human() -> String {
    "human".into()
}
fn short() -> String {
    "short".into()
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub storage_list: HealthCheckConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub storage_load: HealthCheckConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub storage_store: HealthCheckConfig,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub start: StartCheckConfig,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "d_5s")]
    pub interval: GoDuration,
    #[serde(default = "d_1m")]
    pub warn_duration: GoDuration,
    #[serde(default = "d_5m")]
    pub error_duration: GoDuration,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartCheckConfig {
    #[serde(default = "d_1s")]
    pub interval: GoDuration,
    #[serde(default = "d_1m")]
    pub warn_duration: GoDuration,
    #[serde(default = "d_5m")]
    pub error_duration: GoDuration,
    #[serde(default, deserialize_with = "de_bool")]
    pub report_healthz: bool,
    #[serde(default = "yes", deserialize_with = "de_bool")]
    pub report_metadata: bool,
}

#[cfg(test)]
mod tests;
