//! Options of the `azure` backend (spec/config.md §6.3): the Go backend's option names and
//! defaults (simpleblob `backends/azure`), plus our `sas_token` / `sas_token_file` for
//! operators who hand out container-scoped SAS tokens instead of the account key. Checked at
//! start-up with the Go messages, so that a config the Go version refuses is refused here too.
//! The struct's `Debug` hides the account key and the SAS token: options end up in error
//! contexts and debug logs, secrets must not.

use serde::Deserialize;

use super::types::{de_bool, de_i64, de_string};
use super::{
    Config, ConfigError, GoDuration, TlsOptions, d_5m, d_10s, d_15m, d_15s, d_20s, d_90s, defaults,
    hundred, null_is_zero,
};

/// Options of the `azure` backend, with the Go defaults (a zero duration or count means the
/// default there, and is turned into it by [`Config::azure_options`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureOptions {
    #[serde(default, deserialize_with = "de_string")]
    pub account_name: String,
    #[serde(default, deserialize_with = "de_string")]
    pub account_key: String,
    #[serde(default, deserialize_with = "de_string")]
    pub account_key_file: String,
    #[serde(default = "d_15s")]
    pub secrets_refresh_interval: GoDuration,
    #[serde(default, deserialize_with = "de_bool")]
    pub use_shared_key: bool,
    #[serde(default, deserialize_with = "de_string")]
    pub container: String,
    #[serde(default, deserialize_with = "de_bool")]
    pub create_container: bool,
    /// Empty: `https://<account_name>.blob.core.windows.net`.
    #[serde(default, deserialize_with = "de_string")]
    pub endpoint_url: String,
    #[serde(default, deserialize_with = "de_string")]
    pub global_prefix: String,
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
    /// Blocks uploaded in parallel for a large object (Go: azblob's UploadStream concurrency,
    /// 0 meaning 1).
    #[serde(default, deserialize_with = "de_i64")]
    pub concurrency: i64,
    /// Ours: a SAS token (the query string, with or without its leading `?`).
    #[serde(default, deserialize_with = "de_string")]
    pub sas_token: String,
    /// Ours: a file holding the SAS token, re-read every `secrets_refresh_interval`.
    #[serde(default, deserialize_with = "de_string")]
    pub sas_token_file: String,
}

impl std::fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |s: &str| if s.is_empty() { "" } else { "***" };
        f.debug_struct("AzureOptions")
            .field("account_name", &self.account_name)
            .field("account_key", &hide(&self.account_key))
            .field("account_key_file", &self.account_key_file)
            .field("use_shared_key", &self.use_shared_key)
            .field("container", &self.container)
            .field("create_container", &self.create_container)
            .field("endpoint_url", &self.endpoint_url)
            .field("global_prefix", &self.global_prefix)
            .field("client_timeout", &self.client_timeout)
            .field("use_update_marker", &self.use_update_marker)
            .field("concurrency", &self.concurrency)
            .field("sas_token", &hide(&self.sas_token))
            .field("sas_token_file", &self.sas_token_file)
            .finish_non_exhaustive()
    }
}

impl AzureOptions {
    /// The endpoint, defaulted from the account name as the Go backend does.
    pub fn endpoint(&self) -> String {
        if self.endpoint_url.is_empty() {
            format!("https://{}.blob.core.windows.net", self.account_name)
        } else {
            self.endpoint_url.clone()
        }
    }
}

/// Go's `getOpt`: a zero value means the default.
fn or_default(d: &mut GoDuration, default: GoDuration) {
    if d.is_zero() {
        *d = default;
    }
}

impl Config {
    /// The `azure` backend's options, defaulted and checked as the Go backend does at start-up
    /// (`Options.Check`), plus the checks of our SAS options.
    pub fn azure_options(&self) -> Result<AzureOptions, ConfigError> {
        let mut o: AzureOptions = self.storage_options("azure")?;
        let err = |key: &str, message: &str| self.storage_error(key, message);
        or_default(&mut o.init_timeout, d_20s());
        or_default(&mut o.update_marker_force_list_interval, d_5m());
        or_default(&mut o.secrets_refresh_interval, d_15s());
        or_default(&mut o.idle_conn_timeout, d_90s());
        or_default(&mut o.dial_timeout, d_10s());
        or_default(&mut o.dial_keep_alive, d_10s());
        or_default(&mut o.tls_handshake_timeout, d_10s());
        or_default(&mut o.client_timeout, d_15m());
        if o.max_idle_conns == 0 {
            o.max_idle_conns = hundred();
        }
        if o.container.is_empty() {
            return Err(err(
                "container",
                "azure storage.options: container is required",
            ));
        }
        if o.account_name.is_empty() && o.endpoint_url.is_empty() {
            return Err(err(
                "account_name",
                "azure storage.options: account_name is required if endpoint_url is not set",
            ));
        }
        let key_file = !o.account_key_file.is_empty();
        if o.use_shared_key {
            if o.account_name.is_empty() || (o.account_key.is_empty() && !key_file) {
                return Err(err(
                    "use_shared_key",
                    "azure storage.options: account_name and either account_key or account_key_file are required when use_shared_key is true",
                ));
            }
            if key_file && o.secrets_refresh_interval < GoDuration::from_secs(1) {
                return Err(err(
                    "secrets_refresh_interval",
                    "azure storage.options: field secrets_refresh_interval must be at least 1s",
                ));
            }
        }
        let sas = !o.sas_token.is_empty() || !o.sas_token_file.is_empty();
        if !o.sas_token.is_empty() && !o.sas_token_file.is_empty() {
            return Err(err(
                "sas_token",
                "azure storage.options: set sas_token or sas_token_file, not both",
            ));
        }
        if sas && o.use_shared_key {
            return Err(err(
                "sas_token",
                "azure storage.options: sas_token/sas_token_file and use_shared_key: true exclude each other",
            ));
        }
        if !o.sas_token_file.is_empty() && o.secrets_refresh_interval < GoDuration::from_secs(1) {
            return Err(err(
                "secrets_refresh_interval",
                "azure storage.options: field secrets_refresh_interval must be at least 1s",
            ));
        }
        if o.concurrency < 0 {
            return Err(err(
                "concurrency",
                "azure storage.options: concurrency must not be negative",
            ));
        }
        let endpoint = o.endpoint();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(err(
                "endpoint_url",
                "azure storage.options: endpoint_url must start with http:// or https://",
            ));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(options: &str) -> Result<AzureOptions, ConfigError> {
        let text = format!(
            "lmdbs:\n  main:\n    path: /tmp/x\nstorage:\n  type: azure\n  options:\n{options}"
        );
        super::super::parse_with_env(&text, "test.yaml", |_| None)
            .unwrap()
            .azure_options()
    }

    #[test]
    fn go_defaults() {
        let o = azure("    account_name: acct\n    container: c\n").unwrap();
        assert_eq!(o.endpoint(), "https://acct.blob.core.windows.net");
        assert!(!o.use_shared_key && !o.create_container && !o.use_update_marker);
        assert_eq!(o.init_timeout, GoDuration::from_secs(20));
        assert_eq!(o.secrets_refresh_interval, GoDuration::from_secs(15));
        assert_eq!(
            o.update_marker_force_list_interval,
            GoDuration::from_secs(300)
        );
        assert_eq!(o.client_timeout, GoDuration::from_secs(900));
        assert_eq!(o.max_idle_conns, 100);
        assert_eq!(o.concurrency, 0);
        // Zero means the default, as Go's getOpt has it.
        let o = azure("    account_name: a\n    container: c\n    init_timeout: 0s\n    client_timeout: 0\n    max_idle_conns: 0\n").unwrap();
        assert_eq!(o.init_timeout, GoDuration::from_secs(20));
        assert_eq!(o.client_timeout, GoDuration::from_secs(900));
        assert_eq!(o.max_idle_conns, 100);
        // A path-style endpoint without an account name.
        let o =
            azure("    container: c\n    endpoint_url: http://127.0.0.1:10000/devstoreaccount1\n")
                .unwrap();
        assert_eq!(o.endpoint(), "http://127.0.0.1:10000/devstoreaccount1");
    }

    #[test]
    fn go_checks_with_lines() {
        let e = azure("    account_name: a\n").unwrap_err().to_string();
        assert!(e.contains("container is required"), "{e}");
        let e = azure("    container: c\n").unwrap_err().to_string();
        assert!(
            e.contains("account_name is required if endpoint_url is not set"),
            "{e}"
        );
        let e = azure("    container: c\n    account_name: a\n    use_shared_key: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("either account_key or account_key_file"), "{e}");
        assert!(e.contains("line 9"), "{e}");
        let e = azure("    container: c\n    account_name: a\n    use_shared_key: true\n    account_key_file: /k\n    secrets_refresh_interval: 500ms\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 1s") && e.contains("line 11"), "{e}");
        // Unknown keys are rejected with their line, like the other backends' options.
        let e = azure("    container: c\n    account_name: a\n    bucket: b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bucket") && e.contains("line 9"), "{e}");
        let e = azure("    container: c\n    account_name: a\n    sas_token: 'sig=x'\n    sas_token_file: /t\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = azure("    container: c\n    account_name: a\n    sas_token: 'sig=x'\n    use_shared_key: true\n    account_key: k\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exclude each other"), "{e}");
        let e = azure("    container: c\n    endpoint_url: ftp://x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }

    #[test]
    fn secrets_never_shown() {
        let o = azure(
            "    container: c\n    account_name: a\n    use_shared_key: true\n    account_key: 'S3CRETKEY=='\n    sas_token_file: /t\n",
        );
        // (refused for mixing, but the Debug of a valid one must hide the key)
        assert!(o.is_err());
        let o = azure("    container: c\n    account_name: a\n    use_shared_key: true\n    account_key: 'S3CRETKEY=='\n").unwrap();
        assert!(!format!("{o:?}").contains("S3CRETKEY"));
        let o =
            azure("    container: c\n    account_name: a\n    sas_token: 'sv=1&sig=S3CRETSIG'\n")
                .unwrap();
        assert!(!format!("{o:?}").contains("S3CRETSIG"));
        let text = "lmdbs:\n  main:\n    path: /tmp/x\nstorage:\n  type: azure\n  options: {container: c, account_name: a, account_key: 'S3CRETKEY==', sas_token: 'sv=1&sig=S3CRETSIG'}\n";
        let y = super::super::parse_with_env(text, "t.yaml", |_| None)
            .unwrap()
            .effective_yaml();
        assert!(
            !y.contains("S3CRET") && y.contains("account_key: '***'"),
            "{y}"
        );
    }
}
