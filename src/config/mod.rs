//! The YAML configuration of the Go version (spec/config.md), parsed strictly: environment
//! expansion over the raw text, Go defaults, YAML 1.1 scalars, unknown keys rejected, and the
//! validation rules with the Go messages. Every error names the file, the key and its line, and
//! is raised before anything opens an LMDB. Backend options (`storage.options`) are kept raw and
//! parsed by the backend that needs them, as upstream does.

mod azure;
mod expand;
mod types;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

pub use azure::AzureOptions;
pub use expand::expand_env;
pub use types::{
    GoDuration, dbi_flags_string, format_size, parse_dbi_flags, parse_size, parse_yaml11_int,
};
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

/// Options of the `fs` backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FsOptions {
    #[serde(deserialize_with = "de_string")]
    pub root_path: String,
}

/// TLS settings of the S3 backend (go-tlsconfig's keys).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    #[serde(default, deserialize_with = "de_string")]
    pub ca_file: String,
    #[serde(default, deserialize_with = "de_string")]
    pub ca: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub add_system_ca_pool: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub cert_file: String,
    #[serde(default, deserialize_with = "de_string")]
    pub cert: String,
    #[serde(default, deserialize_with = "de_string")]
    pub key_file: String,
    #[serde(default, deserialize_with = "de_string")]
    pub key: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub watch_certs: bool,
    #[serde(default = "d_5s")]
    pub watch_certs_poll_interval: GoDuration,
    #[serde(default, deserialize_with = "de_bool")]
    pub require_client_cert: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub insecure_skip_verify: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub insecure_key_log_file: String,
}

/// Options of the `s3` backend (spec/config.md §6.1), with the Go defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    #[serde(default, deserialize_with = "de_string")]
    pub access_key: String,
    #[serde(default, deserialize_with = "de_string")]
    pub secret_key: String,
    #[serde(default, deserialize_with = "de_string")]
    pub access_key_file: String,
    #[serde(default, deserialize_with = "de_string")]
    pub secret_key_file: String,
    #[serde(default = "d_15s")]
    pub secrets_refresh_interval: GoDuration,
    #[serde(default = "us_east_1", deserialize_with = "de_string")]
    pub region: String,
    #[serde(default, deserialize_with = "de_string")]
    pub bucket: String,
    #[serde(default, deserialize_with = "de_string")]
    pub storage_class: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub create_bucket: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub global_prefix: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub prefix_folders: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub hide_folders: bool,
    #[serde(default = "aws_endpoint", deserialize_with = "de_string")]
    pub endpoint_url: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub disable_send_content_md5: bool,
    #[serde(default, deserialize_with = "de_u32")]
    pub num_minio_threads: u32,
    #[serde(default = "defaults", deserialize_with = "null_is_zero")]
    pub tls: TlsOptions,
    #[serde(default = "d_20s")]
    pub init_timeout: GoDuration,
    #[serde(default = "d_90s")]
    pub idle_conn_timeout: GoDuration,
    #[serde(default = "hundred", deserialize_with = "de_i64")]
    pub max_idle_conns: i64,
    #[serde(default = "d_10s")]
    pub dial_timeout: GoDuration,
    #[serde(default = "d_10s")]
    pub dial_keep_alive: GoDuration,
    #[serde(default = "d_10s")]
    pub tls_handshake_timeout: GoDuration,
    #[serde(default = "d_15m")]
    pub client_timeout: GoDuration,
    #[serde(default, deserialize_with = "de_bool")]
    pub use_update_marker: bool,
    #[serde(default = "d_5m")]
    pub update_marker_force_list_interval: GoDuration,
}

fn us_east_1() -> String {
    "us-east-1".into()
}
fn aws_endpoint() -> String {
    "https://s3.amazonaws.com".into()
}
fn hundred() -> i64 {
    100
}

/// Finds the line of a dotted key path in YAML text (block or flow style): the first line at or
/// after the parent's line where `key:` appears. Good enough to point a person at the spot.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    for part in path.split('.') {
        let found = (from..lines.len()).find(|&i| {
            let l = lines[i].split(" #").next().unwrap_or("");
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{part}:"))
                || l.contains(&format!("{{{part}:"))
                || l.contains(&format!(" {part}:"))
                || t.starts_with(&format!("\"{part}\":"))
        })?;
        from = found;
    }
    Some(from + 1)
}

struct Source<'a> {
    file: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: Some(key.to_string()),
            line: locate(self.text, key),
            column: None,
            message: message.into(),
        }
    }

    fn yaml_error(&self, e: serde_path_to_error::Error<serde_norway::Error>) -> ConfigError {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let mut message = inner.to_string();
        // serde_norway appends " at line L column C"; we print the location ourselves.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let mut key = (path != "." && !path.is_empty()).then_some(path);
        // For unknown fields the path is the enclosing mapping; point at the field itself.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .or_else(|| message.split(": unknown field `").nth(1))
            .and_then(|m| m.split('`').next())
        {
            key = Some(match key {
                Some(k) => format!("{k}.{field}"),
                None => field.to_string(),
            });
        }
        // The line of the key when we can find it; serde_norway's location otherwise (it is
        // exact for syntax errors but points at the document start for value errors).
        let found = key.as_deref().and_then(|k| locate(self.text, k));
        let (line, column) = match (found, &loc) {
            (Some(l), _) => (Some(l), None),
            (None, Some(loc)) => (Some(loc.line()), Some(loc.column())),
            (None, None) => (None, None),
        };
        ConfigError {
            file: self.file.to_string(),
            key,
            line,
            column,
            message,
        }
    }
}

/// Reads, expands, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: None,
        line: None,
        column: None,
        message: format!("open yaml file: {e}"),
    })?;
    parse_str(&text, &file)
}

/// As [`load`] on text already read; `source` names the file in messages.
pub fn parse_str(text: &str, source: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, source, |k| std::env::var(k).ok())
}

/// As [`parse_str`] with an explicit environment (tests never touch the process environment).
pub fn parse_with_env(
    text: &str,
    source: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let expanded = expand_env(text, env);
    let src = Source {
        file: source,
        text: &expanded,
    };
    // An empty document is an empty config, not an error.
    let mut cfg: Config = if expanded.trim().is_empty() {
        defaults()
    } else {
        serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&expanded))
            .map_err(|e| src.yaml_error(e))?
    };
    cfg.validate_in(&src)?;
    if !cfg.storage.root_path.is_empty() {
        log::warn!("storage.root_path is deprecated, use storage.options.root_path");
        cfg.storage.options.insert(
            serde_norway::Value::String("root_path".into()),
            serde_norway::Value::String(cfg.storage.root_path.clone()),
        );
    }
    cfg.source = ConfigSource {
        file: source.to_string(),
        text: expanded,
    };
    Ok(cfg)
}

fn check_mask(src: &Source, key: &str, v: u32) -> Result<(), ConfigError> {
    if v > 0o777 {
        let short = key.rsplit('.').next().unwrap_or(key);
        return Err(src.error(
            key,
            format!("lmdb.options.{short}: too large value, possible use of decimal ({v}) instead of octal ({v:#o})")
                .replace("0o", "0"),
        ));
    }
    Ok(())
}

/// Go's `net.SplitHostPort` acceptance: `host:port`, `[v6]:port`, `:port`.
fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {addr}: missing ']' in address"))?;
        let p = p
            .strip_prefix(':')
            .ok_or_else(|| format!("address {addr}: missing port in address"))?;
        (h, p)
    } else {
        let (h, p) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("address {addr}: missing port in address"))?;
        if h.contains(':') {
            return Err(format!("address {addr}: too many colons in address"));
        }
        (h, p)
    };
    // Go accepts empty host and port parts; so do we.
    let _ = (host, port);
    Ok(())
}

impl Config {
    /// The validation of spec/config.md §10, in Go's order and with its messages.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(&Source {
            file: "config",
            text: "",
        })
    }

    fn validate_in(&self, src: &Source) -> Result<(), ConfigError> {
        if crate::logging::parse_level(&self.log.level).is_err() {
            return Err(src.error(
                "log.level",
                "log.level: must be one of: debug, info, warning, error, fatal",
            ));
        }
        if crate::logging::parse_format(&self.log.format).is_err() {
            return Err(src.error(
                "log.format",
                "log.format: must be one of: human, logfmt, json",
            ));
        }
        if crate::logging::parse_timestamp(&self.log.timestamp).is_err() {
            return Err(src.error(
                "log.timestamp",
                "log.timestamp: must be one of: short, disable, full",
            ));
        }
        if self.lmdbs.is_empty() {
            return Err(src.error("lmdbs", "no LMDBs configured"));
        }
        for (name, l) in &self.lmdbs {
            let key = |k: &str| format!("lmdbs.{name}.{k}");
            if l.path.is_empty() {
                return Err(src.error(
                    &format!("lmdbs.{name}"),
                    format!("lmdb {name:?}: no path configured"),
                ));
            }
            check_mask(src, &key("options.file_mask"), l.options.file_mask)?;
            check_mask(src, &key("options.dir_mask"), l.options.dir_mask)?;
            if l.schema_tracks_changes && l.dupsort_hack {
                return Err(src.error(
                    &key("dupsort_hack"),
                    "lmdb.schema_tracks_changes: cannot be used together with the dupsort_hack option",
                ));
            }
        }
        if !self.http.address.is_empty() {
            check_host_port(&self.http.address)
                .map_err(|e| src.error("http.address", format!("http.address: {e}")))?;
        }
        let min = GoDuration::from_millis(100);
        for (k, v) in [
            ("lmdb_poll_interval", self.lmdb_poll_interval),
            ("storage_poll_interval", self.storage_poll_interval),
            ("storage_retry_interval", self.storage_retry_interval),
        ] {
            if v < min {
                return Err(src.error(k, format!("{k}: too short interval")));
            }
        }
        for (k, v) in [
            ("merge_lock_duration", self.merge_lock_duration),
            ("merge_release_duration", self.merge_release_duration),
        ] {
            if v.0 < 0 {
                return Err(src.error(k, format!("{k}: must not be negative")));
            }
        }
        if self.deltas.enabled {
            if self.deltas.full_snapshot_interval < GoDuration::from_secs(1) {
                return Err(src.error(
                    "deltas.full_snapshot_interval",
                    "deltas.full_snapshot_interval: too short interval (minimum 1s)",
                ));
            }
            if self.deltas.max_deltas < 1 {
                return Err(src.error(
                    "deltas.max_deltas",
                    "deltas.max_deltas: positive number required",
                ));
            }
        }
        let f = self.storage_force_snapshot_interval;
        if !f.is_zero() && f < GoDuration::from_secs(60) {
            return Err(src.error(
                "storage_force_snapshot_interval",
                "storage_force_snapshot_interval: too short interval (minimum 1m if enabled)",
            ));
        }
        for (k, v) in [
            ("storage_retry_count", self.storage_retry_count),
            (
                "memory_downloaded_snapshots",
                self.memory_downloaded_snapshots,
            ),
            (
                "memory_decompressed_snapshots",
                self.memory_decompressed_snapshots,
            ),
        ] {
            if v < 1 {
                return Err(src.error(k, format!("{k}: positive number required")));
            }
        }
        Ok(())
    }

    /// The effective config as YAML for `--log-config`: Go-style durations and sizes, and the
    /// secret option keys masked.
    pub fn effective_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("(cannot print config: {e})"))
    }
}

impl Config {
    fn storage_options<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
    ) -> Result<T, ConfigError> {
        let src = Source {
            file: &self.source.file,
            text: &self.source.text,
        };
        serde_norway::from_value(serde_norway::Value::Mapping(self.storage.options.clone()))
            .map_err(|e| {
                let msg = e.to_string();
                // Point at the offending option when the message names one.
                let key = msg
                    .split('`')
                    .nth(1)
                    .map(|k| format!("storage.options.{k}"))
                    .unwrap_or_else(|| "storage.options".into());
                src.error(&key, format!("{what} backend options: {msg}"))
            })
    }

    fn storage_error(&self, key: &str, message: &str) -> ConfigError {
        Source {
            file: &self.source.file,
            text: &self.source.text,
        }
        .error(&format!("storage.options.{key}"), message)
    }

    /// The `fs` backend's options.
    pub fn fs_options(&self) -> Result<FsOptions, ConfigError> {
        let o: FsOptions = self.storage_options("fs")?;
        if o.root_path.is_empty() {
            return Err(self.storage_error(
                "root_path",
                "options.root_path must be set for the fs backend",
            ));
        }
        Ok(o)
    }

    /// The `s3` backend's options, checked as the Go backend checks them at start-up.
    pub fn s3_options(&self) -> Result<S3Options, ConfigError> {
        let o: S3Options = self.storage_options("s3")?;
        let err = |key: &str, message: &str| self.storage_error(key, message);
        let static_keys = !o.access_key.is_empty() && !o.secret_key.is_empty();
        let key_files = !o.access_key_file.is_empty() && !o.secret_key_file.is_empty();
        if !static_keys && !key_files {
            return Err(err(
                "access_key",
                "credentials are required: set access_key and secret_key, or access_key_file and secret_key_file",
            ));
        }
        if key_files
            && o.secrets_refresh_interval < GoDuration::from_secs(1)
            && !o.secrets_refresh_interval.is_zero()
        {
            return Err(err(
                "secrets_refresh_interval",
                "secrets_refresh_interval must be at least 1s",
            ));
        }
        if o.bucket.is_empty() {
            return Err(err("bucket", "s3 storage bucket not set"));
        }
        if !(o.endpoint_url.starts_with("http://") || o.endpoint_url.starts_with("https://")) {
            return Err(err(
                "endpoint_url",
                "endpoint_url must start with http:// or https://",
            ));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests;
