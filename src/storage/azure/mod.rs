//! The `azure` backend: Azure Blob Storage through its REST API, with requests signed here
//! (`sign`) and sent with a blocking ureq agent, so no async runtime and no Azure SDK. It
//! follows the Go backend (simpleblob `backends/azure`) wherever a mixed fleet can observe it:
//! blob names are `global_prefix + name`, listings strip the prefix and hide the
//! `update-marker` blob, the marker is rewritten after every store and delete, and the metrics
//! are upstream's `storage_azure_*`. Like the S3 backend it streams both ways (a download is
//! read as it arrives; an upload is one Put Blob up to 32 MiB, else 8 MiB blocks streamed from
//! the body and committed with Put Block List, `concurrency` blocks at a time from bounded
//! buffers), retries transient failures with backoff (`retry`), and names the container and
//! blob in every error. Unlike the Go version it checks at start-up that the container exists.

pub mod auth;
mod list;
mod request;
pub mod retry;
pub mod sign;
mod upload;
pub mod xml;

use std::io::{self, Read, SeekFrom};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use ureq::Agent;
use ureq::http::Response;

use self::auth::{Auth, Secret, TokenSource};
use self::retry::Verdict;
use self::sign::SharedKey;
use super::marker::{MarkerCache, read_marker};
use super::{ErrorKind, ObjectInfo, ReadSeek, Result, Storage, StorageError};
use crate::config::AzureOptions;

/// Name of the marker blob (after the global prefix).
pub use super::marker::UPDATE_MARKER;
/// The Blob service version we speak (bearer tokens need 2017-11-09 or later).
pub const API_VERSION: &str = "2021-12-02";
/// Objects up to this size go up in one Put Blob (the service takes up to 5000 MiB).
pub const DEFAULT_SINGLE_PUT_MAX: u64 = 32 << 20;
/// Block size of larger objects: a failed block costs one block, and memory stays bounded.
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// A blob has at most this many committed blocks; larger objects get larger blocks.
const MAX_BLOCKS: u64 = 50_000;
/// The largest page List Blobs returns.
const LIST_PAGE_SIZE: u32 = 5000;
/// Attempts for one request on transient errors, with exponential backoff between them.
const ATTEMPTS: u32 = 5;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct AzureStorage {
    agent: Agent,
    /// Scheme, host and port of the endpoint.
    origin: String,
    /// The endpoint's path, percent-encoded, without a trailing slash: empty for Azure, the
    /// account name for path-style endpoints (`http://127.0.0.1:10000/devstoreaccount1`).
    base_path: String,
    auth: Auth,
    opts: AzureOptions,
    single_put_max: u64,
    block_size: u64,
    cache: MarkerCache,
}

/// What one attempt produced besides a response.
enum AttemptError {
    Http(ureq::Error),
    Token(auth::TokenError),
}

impl From<ureq::Error> for AttemptError {
    fn from(e: ureq::Error) -> Self {
        AttemptError::Http(e)
    }
}

/// Request headers, names as sent.
type Headers = Vec<(&'static str, String)>;

/// One request: its method, the blob (or the container itself), query and headers to sign.
struct Call<'a> {
    method: &'static str,
    blob: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    headers: Headers,
}

impl<'a> Call<'a> {
    fn new(method: &'static str, blob: Option<&'a str>) -> Self {
        Call {
            method,
            blob,
            query: Vec::new(),
            headers: Vec::new(),
        }
    }
    fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

/// The service's error code: the `x-ms-error-code` header (the only place a HEAD or a
/// body-less answer has it), else the `<Code>` of the XML body.
fn error_code_header(resp: &Response<ureq::Body>) -> String {
    resp.headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The body of a small response (XML), at most `limit` bytes.
fn body_text(resp: Response<ureq::Body>, limit: u64) -> io::Result<String> {
    let mut text = String::new();
    resp.into_body()
        .into_with_config()
        .limit(limit)
        .reader()
        .read_to_string(&mut text)?;
    Ok(text)
}

fn etag_of(resp: &Response<ureq::Body>) -> String {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn now_rfc1123() -> String {
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
        .unwrap_or_default()
}

/// The block ID of block `i`: base64 of a fixed-length string, as every ID of a blob must
/// have the same length.
fn block_id(i: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("lsblock-{i:08}"))
}

/// MD5 of `len` bytes of `body` from `offset`, base64 (the Content-MD5 the service checks).
fn md5_of_range(body: &mut dyn ReadSeek, offset: u64, len: u64) -> io::Result<String> {
    body.seek(SeekFrom::Start(offset))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        let n = body.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {left} bytes early"),
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

/// `len` must be the whole rest of the body: a longer one would be cut short silently.
fn check_no_more(body: &mut dyn ReadSeek, len: u64) -> io::Result<bool> {
    body.seek(SeekFrom::Start(len))?;
    let mut probe = [0u8; 1];
    Ok(body.read(&mut probe)? == 0)
}

impl AzureStorage {
    /// Builds the client, reads the credentials and checks the container (creating it with
    /// `create_container`).
    pub fn new(opts: AzureOptions) -> std::result::Result<AzureStorage, StorageError> {
        let init_err = |message: String| {
            StorageError::described(
                ErrorKind::Config,
                "init",
                &opts.container,
                None,
                None,
                format!("azure container {:?}: {message}", opts.container),
            )
        };
        let endpoint_text = opts.endpoint();
        let endpoint: url::Url = endpoint_text
            .parse()
            .map_err(|e| init_err(format!("endpoint_url {endpoint_text:?}: {e}")))?;
        let origin = endpoint[..url::Position::BeforePath].to_string();
        let base_path = endpoint.path().trim_end_matches('/').to_string();
        let tls = super::s3::tls_config(&opts.tls).map_err(|e| init_err(e.to_string()))?;
        let refresh = opts.secrets_refresh_interval.as_std();
        let auth = if !opts.sas_token.is_empty() {
            Auth::Sas(Secret::inline(
                "sas_token",
                auth::parse_sas(&opts.sas_token)
                    .map_err(|e| init_err(format!("sas_token: {e}")))?,
            ))
        } else if !opts.sas_token_file.is_empty() {
            Auth::Sas(
                Secret::file(
                    "sas_token_file",
                    &opts.sas_token_file,
                    refresh,
                    auth::parse_sas,
                )
                .map_err(init_err)?,
            )
        } else if opts.use_shared_key {
            if opts.account_key_file.is_empty() {
                Auth::SharedKey(Secret::inline(
                    "account_key",
                    SharedKey::new(&opts.account_name, &opts.account_key)
                        .map_err(|e| init_err(format!("account_key: {e}")))?,
                ))
            } else {
                // The key file wins over an inline key, as in Go.
                let account = opts.account_name.clone();
                let s = Secret::file(
                    "account_key_file",
                    &opts.account_key_file,
                    refresh,
                    move |text| SharedKey::new(&account, text),
                )
                .map_err(init_err)?;
                Auth::SharedKey(s)
            }
        } else {
            if !opts.account_key.is_empty() || !opts.account_key_file.is_empty() {
                // The Go version ignores the key silently in this case; say so.
                log::warn!(container = opts.container; "Azure: account_key/account_key_file are ignored without use_shared_key: true; using Entra ID");
            }
            Auth::Bearer(TokenSource::from_env(
                |k| std::env::var(k).ok(),
                tls.clone(),
            ))
        };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("lightningstream/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(opts.dial_timeout.as_std()).filter(|d| !d.is_zero()))
            .timeout_global(Some(opts.client_timeout.as_std()).filter(|d| !d.is_zero()))
            .max_idle_connections(usize::try_from(opts.max_idle_conns.max(1)).unwrap_or(100))
            .max_idle_age(opts.idle_conn_timeout.as_std())
            .tls_config(tls)
            .build();
        let s = AzureStorage {
            agent: config.new_agent(),
            origin,
            base_path,
            auth,
            opts,
            single_put_max: DEFAULT_SINGLE_PUT_MAX,
            block_size: DEFAULT_BLOCK_SIZE,
            cache: MarkerCache::default(),
        };
        s.init()?;
        Ok(s)
    }

    /// Changes when uploads switch to blocks, and the block size.
    pub fn set_block_upload(&mut self, single_put_max: u64, block_size: u64) {
        self.single_put_max = single_put_max;
        self.block_size = block_size.max(1);
    }

    fn blob_name(&self, name: &str) -> String {
        format!("{}{name}", self.opts.global_prefix)
    }

    /// An error naming the container and, for blob operations, the blob.
    fn error(
        &self,
        op: &'static str,
        name: &str,
        blob: bool,
        kind: ErrorKind,
        message: &str,
    ) -> StorageError {
        let place = if blob {
            format!(
                "azure container {:?}, blob {:?}",
                self.opts.container,
                self.blob_name(name)
            )
        } else {
            format!("azure container {:?}", self.opts.container)
        };
        StorageError::described(
            kind,
            op,
            name,
            None,
            None,
            sign::redact(&format!("{place}: {message}")),
        )
    }
}

impl Storage for AzureStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if !self.opts.use_update_marker {
            return self.list_all(prefix);
        }
        let marker = read_marker(self)?;
        let force = self.opts.update_marker_force_list_interval.as_std();
        self.cache.list(prefix, marker, force, || self.list_all(""))
    }

    fn get(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        let blob = self.blob_name(name);
        let call = Call::new("GET", Some(&blob));
        let resp = self.request("get", name, true, &[], || {
            Ok(self.builder(&call, |u| self.agent.get(u))?.call()?)
        })?;
        Ok(Box::new(resp.into_body().into_reader()))
    }

    fn put(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<()> {
        if name.is_empty() {
            return Err(StorageError::invalid_name("", "empty name"));
        }
        // A body longer than announced is refused before anything is stored.
        if !check_no_more(body, len).map_err(|e| StorageError::io("store", name, e))? {
            return Err(StorageError::new(
                ErrorKind::BodyLength,
                "store",
                name,
                format!("body is longer than the announced {len} bytes"),
            ));
        }
        let etag = if len > self.single_put_max {
            self.put_blocks(name, body, len)?
        } else {
            self.put_single(name, body, len)?
        };
        if self.opts.use_update_marker {
            self.write_marker(name, &etag, false)?;
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let blob = self.blob_name(name);
        let call = Call::new("DELETE", Some(&blob));
        self.request("delete", name, true, &[404], || {
            Ok(self.builder(&call, |u| self.agent.delete(u))?.call()?)
        })?;
        if self.opts.use_update_marker {
            self.write_marker(name, "", true)?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "azure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_have_one_length() {
        let a = block_id(0);
        let b = block_id(49_999);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
    }

    #[test]
    fn large_objects_get_larger_blocks() {
        let s = AzureStorage {
            agent: Agent::new_with_defaults(),
            origin: String::new(),
            base_path: String::new(),
            auth: Auth::Sas(Secret::inline("sas_token", "sig=x".into())),
            opts: crate::config::parse_str(
                "lmdbs: {main: {path: /x}}\nstorage: {type: azure, options: {container: c, account_name: a}}\n",
                "t.yaml",
            )
            .unwrap()
            .azure_options()
            .unwrap(),
            single_put_max: DEFAULT_SINGLE_PUT_MAX,
            block_size: DEFAULT_BLOCK_SIZE,
            cache: MarkerCache::default(),
        };
        assert_eq!(s.block_size_for(100 << 20), DEFAULT_BLOCK_SIZE);
        let huge = 1u64 << 40;
        let size = s.block_size_for(huge);
        assert!(huge.div_ceil(size) <= MAX_BLOCKS);
    }
}
