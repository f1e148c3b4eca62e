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
pub mod retry;
pub mod sign;
pub mod xml;

use std::io::{self, Read, SeekFrom};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use md5::{Digest, Md5};
use ureq::Agent;
use ureq::http::Response;

use self::auth::{Auth, Secret, TokenSource};
use self::retry::Verdict;
use self::sign::SharedKey;
use super::{ErrorKind, ObjectInfo, ReadSeek, Result, Storage, StorageError};
use crate::config::AzureOptions;

/// Name of the marker blob (after the global prefix), as the Go backend names it.
pub const UPDATE_MARKER: &str = "update-marker";
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

/// The cached listing behind the update marker.
struct MarkerCache {
    marker: String,
    objects: Vec<ObjectInfo>,
    at: Instant,
}

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
    cache: Mutex<Option<MarkerCache>>,
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
            cache: Mutex::new(None),
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

    /// The URL and headers of one attempt of `call`, authorized with current credentials.
    fn prepare(&self, call: &Call) -> std::result::Result<(String, Headers), AttemptError> {
        let mut path = format!(
            "{}/{}",
            self.base_path,
            sign::encode_path(&self.opts.container)
        );
        if let Some(b) = call.blob {
            path.push('/');
            path.push_str(&sign::encode_path(b));
        }
        let mut headers = call.headers.clone();
        headers.push(("x-ms-date", now_rfc1123()));
        headers.push(("x-ms-version", API_VERSION.to_string()));
        let mut query: Vec<String> = call
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", sign::encode_query(v)))
            .collect();
        match &self.auth {
            Auth::SharedKey(k) => {
                let key = k.get();
                let account = key.account();
                let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let qs: Vec<(&str, &str)> =
                    call.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let sts = sign::string_to_sign(call.method, &hs, account, &path, &qs);
                let sig = key.sign(&sts);
                headers.push(("Authorization", format!("SharedKey {account}:{sig}")));
            }
            Auth::Sas(t) => query.push(t.get().to_string()),
            Auth::Bearer(t) => {
                let token = t.token().map_err(AttemptError::Token)?;
                headers.push(("Authorization", format!("Bearer {token}")));
            }
        }
        let mut url = format!("{}{path}", self.origin);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        Ok((url, headers))
    }

    /// A request builder for one attempt of `call`.
    fn builder<B>(
        &self,
        call: &Call,
        make: impl FnOnce(&str) -> ureq::RequestBuilder<B>,
    ) -> std::result::Result<ureq::RequestBuilder<B>, AttemptError> {
        let (url, headers) = self.prepare(call)?;
        let mut rb = make(&url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        Ok(rb)
    }

    /// Runs one request with retries and counts it in the `storage_azure_*` metrics under
    /// upstream's method names.
    fn request(
        &self,
        op: &'static str,
        name: &str,
        blob: bool,
        accept: &[u16],
        attempt: impl FnMut() -> std::result::Result<Response<ureq::Body>, AttemptError>,
    ) -> Result<Response<ureq::Body>> {
        let method = match op {
            "get" => "load",
            "init" => "list",
            other => other,
        };
        let m = crate::metrics::metrics();
        m.azure_calls.with_label_values(&[method]).inc();
        m.azure_call_timestamp
            .with_label_values(&[method])
            .set(crate::metrics::unix_seconds(crate::base::now_ns()));
        let t0 = Instant::now();
        let r = self.request_inner(op, name, blob, accept, attempt);
        m.azure_call_duration
            .with_label_values(&[method])
            .observe(t0.elapsed().as_secs_f64());
        if let Err(e) = &r
            && !e.is_not_found()
        {
            m.azure_call_errors.with_label_values(&[method]).inc();
            m.azure_call_errors_by_type
                .with_label_values(&[method, &e.metric_label()])
                .inc();
        }
        r
    }

    /// Runs one request with retries (the shared helper, with this backend's classification):
    /// a 2xx response, or one `accept` allows, is returned; otherwise the last error, whose
    /// metric label is the service's error code or upstream's Timeout/DNSError/URLError/Unknown.
    fn request_inner(
        &self,
        op: &'static str,
        name: &str,
        blob: bool,
        accept: &[u16],
        mut attempt: impl FnMut() -> std::result::Result<Response<ureq::Body>, AttemptError>,
    ) -> Result<Response<ureq::Body>> {
        use crate::retry::{Attempts, Policy};
        const POLICY: Policy =
            Policy::exponential(Attempts::Max(ATTEMPTS), BACKOFF_START, BACKOFF_MAX, 2);
        let mut token_renewed = false;
        let result = crate::retry::run(
            &POLICY,
            || self.attempt_once(op, name, blob, accept, &mut attempt, &mut token_renewed),
            |(_, verdict)| match verdict {
                Verdict::Retry => crate::retry::Verdict::Retry,
                Verdict::Fail => crate::retry::Verdict::Fail,
            },
            |r| {
                log::debug!(op = op, name = name, attempt = r.attempt, error = r.error.0.to_string(); "Azure request failed, retrying");
            },
            crate::retry::sleep,
        );
        result.map_err(|f| {
            let attempts = f.attempts;
            let exhausted = f.reason == crate::retry::Reason::Exhausted;
            let (e, _) = f.into_error();
            if exhausted {
                e.gave_up_after(attempts)
            } else {
                e
            }
        })
    }

    /// One attempt of a request: the response, or the error with the verdict on retrying it.
    fn attempt_once(
        &self,
        op: &'static str,
        name: &str,
        blob: bool,
        accept: &[u16],
        attempt: &mut impl FnMut() -> std::result::Result<Response<ureq::Body>, AttemptError>,
        token_renewed: &mut bool,
    ) -> std::result::Result<Response<ureq::Body>, (StorageError, Verdict)> {
        match attempt() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() || accept.contains(&status) {
                    return Ok(resp);
                }
                let header_code = error_code_header(&resp);
                let body = body_text(resp, 64 << 10).unwrap_or_default();
                let (body_code, msg) = xml::parse_error(&body);
                let code = if header_code.is_empty() {
                    body_code
                } else {
                    header_code
                };
                if status == 404
                    && op == "get"
                    && matches!(
                        code.as_str(),
                        "BlobNotFound" | "ContainerNotFound" | "ResourceNotFound" | ""
                    )
                {
                    // Go reports all three as os.ErrNotExist on load.
                    return Err((StorageError::not_found(name), Verdict::Fail));
                }
                let detail = match (code.is_empty(), msg.is_empty()) {
                    (true, _) => format!("HTTP {status}"),
                    (false, true) => format!("HTTP {status} {code}"),
                    (false, false) => format!("HTTP {status} {code}: {msg}"),
                };
                if let (401, Auth::Bearer(t), false) = (status, &self.auth, *token_renewed) {
                    // A token revoked or expired early: one more attempt with a new one.
                    t.invalidate();
                    *token_renewed = true;
                    log::debug!(op = op, name = name; "Azure refused the bearer token, fetching a new one");
                    let e = self.error(op, name, blob, ErrorKind::Auth, &detail);
                    return Err((e.with_response(status, &code), Verdict::Retry));
                }
                let hint = match (status, code.as_str()) {
                    (_, "ContainerNotFound") => {
                        " (create it, or set create_container: true)".to_string()
                    }
                    (401 | 403, _)
                    | (
                        _,
                        "AuthenticationFailed"
                        | "AuthorizationFailure"
                        | "AuthorizationPermissionMismatch"
                        | "InvalidAuthenticationInfo",
                    ) => format!(" ({})", self.auth.hint()),
                    _ => String::new(),
                };
                let kind = ErrorKind::of_http(status, &code, op == "get");
                let e = self.error(op, name, blob, kind, &format!("{detail}{hint}"));
                Err((
                    e.with_response(status, &code),
                    retry::classify(Some(status), &code, None),
                ))
            }
            Err(AttemptError::Http(e)) => {
                let io_kind = retry::ureq_io_kind(&e);
                let kind = match (&e, io_kind) {
                    (ureq::Error::Timeout(_), _) | (_, Some(io::ErrorKind::TimedOut)) => {
                        ErrorKind::Timeout
                    }
                    (ureq::Error::HostNotFound, _) => ErrorKind::Dns,
                    (_, Some(_)) => ErrorKind::Network,
                    _ => ErrorKind::Protocol,
                };
                Err((
                    self.error(op, name, blob, kind, &format!("network: {e}")),
                    retry::classify(None, "", io_kind),
                ))
            }
            Err(AttemptError::Token(t)) => Err((
                self.error(
                    op,
                    name,
                    blob,
                    ErrorKind::Auth,
                    &format!("getting an Entra ID token: {}", t.message),
                ),
                if t.transient {
                    Verdict::Retry
                } else {
                    Verdict::Fail
                },
            )),
        }
    }

    /// Creates the container when asked to, then checks that it exists and that our
    /// credentials may list it (one List Blobs of one result, which a container-scoped SAS
    /// token allows too).
    fn init(&self) -> Result<()> {
        let container = self.opts.container.clone();
        let timeout = Some(self.opts.init_timeout.as_std()).filter(|d| !d.is_zero());
        if self.opts.create_container {
            let call = Call::new("PUT", None).query("restype", "container");
            let resp = self.request("create-container", &container, false, &[409], || {
                Ok(self
                    .builder(&call, |u| self.agent.put(u))?
                    .config()
                    .timeout_global(timeout)
                    .build()
                    .header("Content-Length", "0")
                    .send_empty()?)
            })?;
            if resp.status().as_u16() == 409 {
                let code = error_code_header(&resp);
                if code != "ContainerAlreadyExists" {
                    let body = body_text(resp, 64 << 10).unwrap_or_default();
                    let (c, msg) = xml::parse_error(&body);
                    let code = if code.is_empty() { c } else { code };
                    return Err(self
                        .error(
                            "init",
                            &container,
                            false,
                            ErrorKind::Client,
                            &format!("creating the container: HTTP 409 {code}: {msg}"),
                        )
                        .with_response(409, &code));
                }
            }
        }
        let call = Call::new("GET", None)
            .query("restype", "container")
            .query("comp", "list")
            .query("maxresults", "1");
        let resp = self.request("init", &container, false, &[404], || {
            Ok(self
                .builder(&call, |u| self.agent.get(u))?
                .config()
                .timeout_global(timeout)
                .build()
                .call()?)
        })?;
        if resp.status().as_u16() == 404 {
            return Err(self.error(
                "init",
                &container,
                false,
                ErrorKind::Config,
                &format!(
                    "container {container:?} does not exist (create it, or set create_container: true)"
                ),
            ));
        }
        // Read to the end so that the connection can be reused.
        let _ = body_text(resp, 1 << 20);
        Ok(())
    }

    /// Lists every blob under the global prefix + `prefix`, page by page.
    fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.blob_name(prefix);
        let gp = self.opts.global_prefix.as_str();
        let marker_blob = self.blob_name(UPDATE_MARKER);
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut call = Call::new("GET", None)
                .query("restype", "container")
                .query("comp", "list")
                .query("maxresults", LIST_PAGE_SIZE.to_string());
            if !full.is_empty() {
                call = call.query("prefix", full.clone());
            }
            if let Some(m) = &next {
                call = call.query("marker", m.clone());
            }
            let resp = self.request("list", &full, false, &[], || {
                Ok(self.builder(&call, |u| self.agent.get(u))?.call()?)
            })?;
            let body = body_text(resp, 64 << 20).map_err(|e| StorageError::io("list", &full, e))?;
            let page = xml::parse_list(&body).map_err(|e| {
                self.error(
                    "list",
                    &full,
                    false,
                    ErrorKind::Protocol,
                    &format!("unreadable listing: {e}"),
                )
            })?;
            for (blob, size) in page.blobs {
                if blob == marker_blob {
                    continue;
                }
                let Some(name) = blob.strip_prefix(gp) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size,
                });
            }
            match page.next_marker {
                Some(m) => next = Some(m),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_marker(&self) -> Result<Option<String>> {
        match self.get(UPDATE_MARKER) {
            Ok(mut r) => {
                let mut s = String::new();
                r.read_to_string(&mut s)
                    .map_err(|e| StorageError::io("get", UPDATE_MARKER, e))?;
                Ok(Some(s))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rewrites the marker after a change: `<blob>:<etag>:<unix ns>:<deleted>`, as Go writes it.
    fn write_marker(&self, name: &str, etag: &str, deleted: bool) -> Result<()> {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let body = format!("{}:{etag}:{ns}:{deleted}", self.blob_name(name));
        self.put_single(
            UPDATE_MARKER,
            &mut io::Cursor::new(body.as_bytes()),
            body.len() as u64,
        )
        .map(|_| ())
    }

    /// One Put Blob (block blob) streamed from `body`; returns the ETag.
    fn put_single(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<String> {
        let blob = self.blob_name(name);
        let md5 = md5_of_range(body, 0, len).map_err(|e| StorageError::io("store", name, e))?;
        let call = Call::new("PUT", Some(&blob))
            .header("Content-Length", len.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5)
            .header("x-ms-blob-type", "BlockBlob");
        let resp = self.request("store", name, true, &[], || {
            let rb = self.builder(&call, |u| self.agent.put(u))?;
            body.seek(SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(len);
            Ok(rb.send(ureq::SendBody::from_reader(&mut limited))?)
        })?;
        Ok(etag_of(&resp))
    }

    /// The block size for an object of `len` bytes: ours, or larger when the object would
    /// need more blocks than a blob can have.
    fn block_size_for(&self, len: u64) -> u64 {
        self.block_size.max(len.div_ceil(MAX_BLOCKS))
    }

    /// Staged blocks then Put Block List: the blob changes only at the commit, atomically.
    /// Blocks left uncommitted by a failure are discarded by the service (after a week, or
    /// at the next commit to the blob), so there is nothing to abort.
    fn put_blocks(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<String> {
        let blob = self.blob_name(name);
        let size = self.block_size_for(len);
        let count = len.div_ceil(size);
        let ids: Vec<String> = (0..count).map(block_id).collect();
        let workers = usize::try_from(self.opts.concurrency.max(1)).unwrap_or(1);
        if workers <= 1 {
            for (i, id) in ids.iter().enumerate() {
                let offset = i as u64 * size;
                let n = size.min(len - offset);
                self.put_block_from(name, &blob, id, body, offset, n)?;
            }
        } else {
            self.put_blocks_parallel(name, &blob, &ids, body, len, size, workers)?;
        }
        let xml = xml::block_list(&ids);
        let call = Call::new("PUT", Some(&blob))
            .query("comp", "blocklist")
            .header("Content-Length", xml.len().to_string())
            .header("Content-Type", "application/xml");
        let resp = self.request("store", name, true, &[], || {
            Ok(self
                .builder(&call, |u| self.agent.put(u))?
                .send(xml.as_bytes())?)
        })?;
        Ok(etag_of(&resp))
    }

    /// One Put Block streamed from `body` at `offset`.
    fn put_block_from(
        &self,
        name: &str,
        blob: &str,
        id: &str,
        body: &mut dyn ReadSeek,
        offset: u64,
        n: u64,
    ) -> Result<()> {
        let md5 = md5_of_range(body, offset, n).map_err(|e| StorageError::io("store", name, e))?;
        let call = Call::new("PUT", Some(blob))
            .query("comp", "block")
            .query("blockid", id)
            .header("Content-Length", n.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5);
        self.request("store", name, true, &[], || {
            let rb = self.builder(&call, |u| self.agent.put(u))?;
            body.seek(SeekFrom::Start(offset))
                .map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(n);
            Ok(rb.send(ureq::SendBody::from_reader(&mut limited))?)
        })?;
        Ok(())
    }

    /// One Put Block from a buffer.
    fn put_block_buf(&self, name: &str, blob: &str, id: &str, data: &[u8]) -> Result<()> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(data));
        let call = Call::new("PUT", Some(blob))
            .query("comp", "block")
            .query("blockid", id)
            .header("Content-Length", data.len().to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-MD5", md5);
        self.request("store", name, true, &[], || {
            Ok(self.builder(&call, |u| self.agent.put(u))?.send(data)?)
        })?;
        Ok(())
    }

    /// `workers` blocks in flight: this thread reads the body block by block into buffers
    /// handed over a rendezvous channel, so at most `workers + 1` blocks are in memory.
    #[allow(clippy::too_many_arguments)]
    fn put_blocks_parallel(
        &self,
        name: &str,
        blob: &str,
        ids: &[String],
        body: &mut dyn ReadSeek,
        len: u64,
        size: u64,
        workers: usize,
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<StorageError>> = Mutex::new(None);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(0);
        let rx = Mutex::new(rx);
        std::thread::scope(|scope| {
            for _ in 0..workers.min(ids.len()) {
                scope.spawn(|| {
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((i, data)) = job else { break };
                        if failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        if let Err(e) = self.put_block_buf(name, blob, &ids[i], &data) {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                });
            }
            let read = (|| -> io::Result<()> {
                body.seek(SeekFrom::Start(0))?;
                for (i, _) in ids.iter().enumerate() {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = size.min(len - i as u64 * size);
                    let mut data = vec![0u8; usize::try_from(n).map_err(io::Error::other)?];
                    body.read_exact(&mut data)?;
                    if tx.send((i, data)).is_err() {
                        break;
                    }
                }
                Ok(())
            })();
            drop(tx);
            if let Err(e) = read {
                failed.store(true, Ordering::Relaxed);
                first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(StorageError::io("store", name, e));
            }
        });
        match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Storage for AzureStorage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if !self.opts.use_update_marker {
            return self.list_all(prefix);
        }
        let marker = self.read_marker()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match (&*cache, &marker) {
            (Some(c), Some(m)) => {
                c.marker == *m
                    && c.at.elapsed() < self.opts.update_marker_force_list_interval.as_std()
            }
            _ => false,
        };
        if !fresh {
            let objects = self.list_all("")?;
            *cache = marker.map(|m| MarkerCache {
                marker: m,
                objects: objects.clone(),
                at: Instant::now(),
            });
            return Ok(objects
                .into_iter()
                .filter(|o| o.name.starts_with(prefix))
                .collect());
        }
        let c = cache
            .as_ref()
            .map(|c| c.objects.clone())
            .unwrap_or_default();
        Ok(c.into_iter()
            .filter(|o| o.name.starts_with(prefix))
            .collect())
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
            cache: Mutex::new(None),
        };
        assert_eq!(s.block_size_for(100 << 20), DEFAULT_BLOCK_SIZE);
        let huge = 1u64 << 40;
        let size = s.block_size_for(huge);
        assert!(huge.div_ceil(size) <= MAX_BLOCKS);
    }
}
