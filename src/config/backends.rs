//! The options of each storage backend (`storage.options`), kept raw in [`Config`] and parsed
//! here when the backend is opened, as the Go version does: with the Go defaults, unknown keys
//! rejected with their line, and secrets never printed.

use serde::Deserialize;

use super::load::Source;
use super::types::{de_bool, de_i64, de_string, de_u32};
use super::*;

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

impl Config {
    pub(super) fn storage_options<T: serde::de::DeserializeOwned>(
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

    pub(super) fn storage_error(&self, key: &str, message: &str) -> ConfigError {
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
