//! The `s3` backend: presigned requests built by rusty-s3 (which signs and parses but does no
//! I/O) sent with a blocking ureq agent, so no async runtime is involved. It follows the Go
//! backend (simpleblob s3) where a mixed fleet can observe it: object keys are `global_prefix +
//! name`, listings strip the prefix and hide the `update-marker` object, and the marker is
//! rewritten after every store and delete. Transfers stream in both directions; transient
//! failures (5xx, throttling, network errors) are retried with backoff, client errors never.

use std::io::{self, Read, SeekFrom};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use md5::{Digest, Md5};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::Agent;
use ureq::http::Response;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{ObjectInfo, ReadSeek, Result, Storage, StorageError};
use crate::config::S3Options;

/// Name of the marker object (after the global prefix), as the Go backend names it.
pub const UPDATE_MARKER: &str = "update-marker";
/// Presigned URLs only need to be valid when the request starts.
const SIGN_FOR: Duration = Duration::from_secs(3600);
/// Objects above this size go up in parts (a single PUT is limited to 5 GiB by S3).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// Attempts for one operation on transient errors, with exponential backoff between them.
const ATTEMPTS: u32 = 5;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where credentials come from: fixed, or files re-read every `refresh`.
enum CredentialSource {
    Static(Credentials),
    Files {
        key_file: String,
        secret_file: String,
        refresh: Duration,
        current: Mutex<(Credentials, Instant)>,
    },
}

fn read_credentials(key_file: &str, secret_file: &str) -> io::Result<Credentials> {
    // Used verbatim, as the Go backend does: a trailing newline is part of the key.
    let key = std::fs::read_to_string(key_file).map_err(|e| {
        io::Error::new(e.kind(), format!("reading access_key_file {key_file}: {e}"))
    })?;
    let secret = std::fs::read_to_string(secret_file).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("reading secret_key_file {secret_file}: {e}"),
        )
    })?;
    Ok(Credentials::new(key, secret))
}

impl CredentialSource {
    fn get(&self) -> Credentials {
        match self {
            CredentialSource::Static(c) => c.clone(),
            CredentialSource::Files {
                key_file,
                secret_file,
                refresh,
                current,
            } => {
                let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
                if cur.1.elapsed() >= *refresh {
                    match read_credentials(key_file, secret_file) {
                        Ok(c) => *cur = (c, Instant::now()),
                        Err(e) => {
                            // Keep the old keys: a file being rewritten must not stop syncing.
                            log::warn!(error = e.to_string(); "S3 credential refresh failed, keeping the previous credentials");
                            cur.1 = Instant::now();
                        }
                    }
                }
                cur.0.clone()
            }
        }
    }
}

/// The cached listing behind the update marker.
struct MarkerCache {
    marker: String,
    objects: Vec<ObjectInfo>,
    at: Instant,
}

pub struct S3Storage {
    agent: Agent,
    bucket: Bucket,
    creds: CredentialSource,
    opts: S3Options,
    multipart_threshold: u64,
    part_size: u64,
    cache: Mutex<Option<MarkerCache>>,
}

/// The `<Code>` and `<Message>` of an S3 error body.
fn parse_error_xml(body: &str) -> (String, String) {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        body.find(&open)
            .and_then(|i| {
                let rest = &body[i + open.len()..];
                rest.find(&close).map(|j| rest[..j].to_string())
            })
            .unwrap_or_default()
    };
    (tag("Code"), tag("Message"))
}

/// Removes signatures and credentials from anything that might contain a presigned URL.
fn redact(s: &str) -> String {
    let mut out = s.to_string();
    for param in [
        "X-Amz-Signature=",
        "X-Amz-Credential=",
        "X-Amz-Security-Token=",
    ] {
        let mut from = 0;
        while let Some(i) = out[from..].find(param) {
            let start = from + i + param.len();
            let end = out[start..]
                .find(|c: char| c == '&' || c.is_whitespace() || c == '"')
                .map_or(out.len(), |j| start + j);
            out.replace_range(start..end, "REDACTED");
            from = start + "REDACTED".len();
        }
    }
    out
}

/// Virtual-host addressing for Amazon and Google endpoints with DNS-safe bucket names, path
/// style for everything else (MinIO, Ceph, Garage), as minio-go chooses.
fn url_style(endpoint: &url::Url, bucket: &str) -> UrlStyle {
    let host = endpoint.host_str().unwrap_or("");
    let cloud = host.ends_with("amazonaws.com") || host == "storage.googleapis.com";
    let dns_safe = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-');
    if cloud && dns_safe {
        UrlStyle::VirtualHost
    } else {
        UrlStyle::Path
    }
}

fn pem_certs(pem: &[u8], what: &str) -> io::Result<Vec<Certificate<'static>>> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) =
            item.map_err(|e| io::Error::other(format!("{what}: {e}")))?
        {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(io::Error::other(format!("{what}: no certificate found")));
    }
    Ok(out)
}

fn read_file(path: &str, what: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{what} {path}: {e}")))
}

pub(crate) fn tls_config(o: &crate::config::TlsOptions) -> io::Result<TlsConfig> {
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    if !o.ca_file.is_empty() {
        roots.extend(pem_certs(
            &read_file(&o.ca_file, "tls.ca_file")?,
            "tls.ca_file",
        )?);
    }
    if !o.ca.is_empty() {
        roots.extend(pem_certs(o.ca.as_bytes(), "tls.ca")?);
    }
    // The system bundle when asked for, or when no CA is configured at all (Go's default).
    if roots.is_empty() || o.add_system_ca_pool {
        let bundle = std::env::var("SSL_CERT_FILE")
            .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_string());
        if let Ok(pem) = std::fs::read(&bundle) {
            roots.extend(pem_certs(&pem, "system CA bundle").unwrap_or_default());
        }
    }
    let root_certs = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    let cert_pem = match (o.cert_file.is_empty(), o.cert.is_empty()) {
        (false, _) => Some(read_file(&o.cert_file, "tls.cert_file")?),
        (true, false) => Some(o.cert.as_bytes().to_vec()),
        _ => None,
    };
    let key_pem = match (o.key_file.is_empty(), o.key.is_empty()) {
        (false, _) => Some(read_file(&o.key_file, "tls.key_file")?),
        (true, false) => Some(o.key.as_bytes().to_vec()),
        _ => None,
    };
    let client_cert = match (cert_pem, key_pem) {
        (Some(c), Some(k)) => {
            let chain = pem_certs(&c, "tls client certificate")?;
            let key = PrivateKey::from_pem(&k)
                .map_err(|e| io::Error::other(format!("tls client key: {e}")))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        (None, None) => None,
        _ => {
            return Err(io::Error::other(
                "tls: a client certificate needs both cert and key",
            ));
        }
    };
    Ok(TlsConfig::builder()
        .root_certs(root_certs)
        .client_cert(client_cert)
        .disable_verification(o.insecure_skip_verify)
        .build())
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

/// What one attempt of a request produced.
enum Outcome {
    Done(Response<ureq::Body>),
    /// Worth another attempt (server error, throttling, network trouble).
    Transient(String),
    Fatal(StorageError),
}

impl S3Storage {
    /// Builds the client and checks the bucket (creating it with `create_bucket`).
    pub fn new(opts: S3Options) -> std::result::Result<S3Storage, StorageError> {
        let init_err = |message: String| StorageError::Backend {
            op: "init",
            name: opts.bucket.clone(),
            message,
        };
        let endpoint: url::Url = opts
            .endpoint_url
            .parse()
            .map_err(|e| init_err(format!("endpoint_url {:?}: {e}", opts.endpoint_url)))?;
        let style = url_style(&endpoint, &opts.bucket);
        let bucket = Bucket::new(endpoint, style, opts.bucket.clone(), opts.region.clone())
            .map_err(|e| init_err(format!("bucket {:?}: {e}", opts.bucket)))?;
        let creds = if !opts.access_key_file.is_empty() {
            let refresh = if opts.secrets_refresh_interval.is_zero() {
                Duration::from_secs(15)
            } else {
                opts.secrets_refresh_interval.as_std()
            };
            let c = read_credentials(&opts.access_key_file, &opts.secret_key_file)
                .map_err(|e| init_err(e.to_string()))?;
            CredentialSource::Files {
                key_file: opts.access_key_file.clone(),
                secret_file: opts.secret_key_file.clone(),
                refresh,
                current: Mutex::new((c, Instant::now())),
            }
        } else {
            CredentialSource::Static(Credentials::new(
                opts.access_key.clone(),
                opts.secret_key.clone(),
            ))
        };
        let tls = tls_config(&opts.tls).map_err(|e| init_err(e.to_string()))?;
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(format!("lightningstream/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(opts.dial_timeout.as_std()).filter(|d| !d.is_zero()))
            .timeout_global(Some(opts.client_timeout.as_std()).filter(|d| !d.is_zero()))
            .max_idle_connections(usize::try_from(opts.max_idle_conns.max(1)).unwrap_or(100))
            .max_idle_age(opts.idle_conn_timeout.as_std())
            .tls_config(tls)
            .build();
        let s = S3Storage {
            agent: config.new_agent(),
            bucket,
            creds,
            opts,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            cache: Mutex::new(None),
        };
        s.init()?;
        Ok(s)
    }

    /// Changes when uploads switch to multipart (S3 requires parts of at least 5 MiB).
    pub fn set_multipart(&mut self, threshold: u64, part_size: u64) {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(5 << 20);
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.opts.global_prefix)
    }

    fn error(&self, op: &'static str, name: &str, message: impl Into<String>) -> StorageError {
        StorageError::Backend {
            op,
            name: name.to_string(),
            message: redact(&message.into()),
        }
    }

    /// Turns a non-success response into an error naming S3's code and message.
    fn status_error(
        &self,
        op: &'static str,
        name: &str,
        resp: Response<ureq::Body>,
    ) -> StorageError {
        let status = resp.status().as_u16();
        let body = body_text(resp, 64 << 10).unwrap_or_default();
        let (code, msg) = parse_error_xml(&body);
        if status == 404 && (code.is_empty() || code == "NoSuchKey") && op == "get" {
            return StorageError::NotFound {
                name: name.to_string(),
            };
        }
        let detail = match (code.is_empty(), msg.is_empty()) {
            (true, _) => format!("HTTP {status}"),
            (false, true) => format!("HTTP {status} {code}"),
            (false, false) => format!("HTTP {status} {code}: {msg}"),
        };
        let hint = match (status, code.as_str()) {
            (_, "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied")
            | (401 | 403, _) => " (check access_key/secret_key and the bucket's permissions)",
            (_, "NoSuchBucket") => " (create it, or set create_bucket: true)",
            _ => "",
        };
        self.error(op, name, format!("{detail}{hint}"))
    }

    /// Runs one request with retries (see [`Self::request_inner`]) and counts it in the
    /// `storage_s3_*` metrics under upstream's method names.
    fn request(
        &self,
        op: &'static str,
        name: &str,
        accept: &[u16],
        attempt: impl FnMut(&Credentials) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        let method = match op {
            "get" => "load",
            "head-bucket" => "create-bucket",
            other => other,
        };
        let m = crate::metrics::metrics();
        m.s3_calls.with_label_values(&[method]).inc();
        m.s3_call_timestamp
            .with_label_values(&[method])
            .set(crate::metrics::unix_seconds(crate::syncer::now_ns()));
        let t0 = Instant::now();
        let r = self.request_inner(op, name, accept, attempt);
        m.s3_call_duration
            .with_label_values(&[method])
            .observe(t0.elapsed().as_secs_f64());
        if let Err(e) = &r
            && !e.is_not_found()
        {
            m.s3_call_errors.with_label_values(&[method]).inc();
            m.s3_call_errors_by_type
                .with_label_values(&[method, &error_type(e)])
                .inc();
        }
        r
    }

    /// Runs one request with retries. `attempt` builds and sends it with fresh credentials
    /// (and rewinds any body); a response with a 2xx status, or one `accept` allows, is returned.
    fn request_inner(
        &self,
        op: &'static str,
        name: &str,
        accept: &[u16],
        mut attempt: impl FnMut(&Credentials) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        let mut backoff = BACKOFF_START;
        let mut last = String::new();
        for n in 1..=ATTEMPTS {
            let creds = self.creds.get();
            let outcome = match attempt(&creds) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() || accept.contains(&status) {
                        Outcome::Done(resp)
                    } else if status >= 500 || status == 429 {
                        Outcome::Transient(self.status_error(op, name, resp).to_string())
                    } else {
                        Outcome::Fatal(self.status_error(op, name, resp))
                    }
                }
                Err(ureq::Error::Io(e)) => Outcome::Transient(format!("network: {e}")),
                Err(
                    e @ (ureq::Error::Timeout(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound),
                ) => Outcome::Transient(e.to_string()),
                Err(e) => Outcome::Fatal(self.error(op, name, e.to_string())),
            };
            match outcome {
                Outcome::Done(r) => return Ok(r),
                Outcome::Fatal(e) => return Err(e),
                Outcome::Transient(msg) => {
                    last = msg;
                    if n < ATTEMPTS {
                        log::debug!(op = op, name = name, attempt = n, error = redact(&last); "S3 request failed, retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        Err(self.error(
            op,
            name,
            format!("{last} (gave up after {ATTEMPTS} attempts)"),
        ))
    }

    fn init(&self) -> Result<()> {
        let bucket = self.opts.bucket.clone();
        let timeout = Some(self.opts.init_timeout.as_std()).filter(|d| !d.is_zero());
        if self.opts.create_bucket {
            let resp = self.request("create-bucket", &bucket, &[409], |c| {
                let url = self.bucket.create_bucket(c).sign(SIGN_FOR);
                self.agent
                    .put(url.as_str())
                    .config()
                    .timeout_global(timeout)
                    .build()
                    .header("Content-Length", "0")
                    .send_empty()
            })?;
            if resp.status().as_u16() != 409 {
                return Ok(());
            }
            let body = body_text(resp, 64 << 10).unwrap_or_default();
            let (code, msg) = parse_error_xml(&body);
            if code == "BucketAlreadyOwnedByYou" {
                return Ok(());
            }
            // Some servers (s3s) say BucketAlreadyExists for a bucket we own: accept it when
            // our credentials can use it, which is what matters, and fail clearly otherwise.
            log::debug!(bucket = bucket, code = code, message = msg; "Bucket exists, checking access");
        }
        let resp = self.request("head-bucket", &bucket, &[404], |c| {
            let url = self.bucket.head_bucket(Some(c)).sign(SIGN_FOR);
            self.agent
                .head(url.as_str())
                .config()
                .timeout_global(timeout)
                .build()
                .call()
        })?;
        if resp.status().as_u16() == 404 {
            return Err(self.error(
                "init",
                &bucket,
                format!("bucket {bucket:?} does not exist (create it, or set create_bucket: true)"),
            ));
        }
        Ok(())
    }

    /// Lists every object under the global prefix + `prefix`, paging through the results.
    fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.key(prefix);
        let gp = self.opts.global_prefix.as_str();
        let marker = self.key(UPDATE_MARKER);
        let folders = self.opts.hide_folders || self.opts.prefix_folders;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self.request("list", &full, &[], |c| {
                let mut a: ListObjectsV2 = self.bucket.list_objects_v2(Some(c));
                a.with_prefix(full.as_str());
                if folders {
                    a.with_delimiter("/");
                }
                if let Some(t) = &token {
                    a.with_continuation_token(t.as_str());
                }
                self.agent.get(a.sign(SIGN_FOR).as_str()).call()
            })?;
            let body = body_text(resp, 64 << 20).map_err(|e| StorageError::io("list", &full, e))?;
            let page = ListObjectsV2::parse_response(&body)
                .map_err(|e| self.error("list", &full, format!("unreadable listing: {e}")))?;
            for o in page.contents {
                if o.key == marker || (self.opts.hide_folders && o.key.ends_with('/')) {
                    continue;
                }
                let Some(name) = o.key.strip_prefix(gp) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: o.size.unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
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

    /// Rewrites the marker after a change: `<key>:<etag>:<unix ns>:<deleted>`.
    fn write_marker(&self, name: &str, etag: &str, deleted: bool) -> Result<()> {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let body = format!("{}:{etag}:{ns}:{deleted}", self.key(name));
        self.put_single(
            UPDATE_MARKER,
            &mut io::Cursor::new(body.as_bytes()),
            body.len() as u64,
        )
        .map(|_| ())
    }

    fn put_single(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<String> {
        let key = self.key(name);
        let md5 = if self.opts.disable_send_content_md5 {
            None
        } else {
            Some(md5_of(body, len, name)?)
        };
        let resp = self.request("store", name, &[], |c| {
            let mut a = self.bucket.put_object(Some(c), &key);
            if let Some(m) = &md5 {
                a.headers_mut().insert("content-md5", m.clone());
            }
            if !self.opts.storage_class.is_empty() {
                a.headers_mut()
                    .insert("x-amz-storage-class", self.opts.storage_class.clone());
            }
            let mut req = self
                .agent
                .put(a.sign(SIGN_FOR).as_str())
                .header("Content-Length", len.to_string());
            if let Some(m) = &md5 {
                req = req.header("Content-MD5", m.as_str());
            }
            if !self.opts.storage_class.is_empty() {
                req = req.header("x-amz-storage-class", self.opts.storage_class.as_str());
            }
            body.seek(SeekFrom::Start(0)).map_err(ureq::Error::Io)?;
            let mut limited = (&mut *body).take(len);
            req.send(ureq::SendBody::from_reader(&mut limited))
        })?;
        Ok(etag_of(&resp))
    }

    fn put_multipart(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<String> {
        let key = self.key(name);
        let resp = self.request("store", name, &[], |c| {
            let a = self.bucket.create_multipart_upload(Some(c), &key);
            self.agent
                .post(a.sign(SIGN_FOR).as_str())
                .header("Content-Length", "0")
                .send_empty()
        })?;
        let text = body_text(resp, 1 << 20).map_err(|e| StorageError::io("store", name, e))?;
        let upload_id = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| self.error("store", name, format!("multipart upload not created: {e}")))?
            .upload_id()
            .to_string();
        let result = self.upload_parts(name, &key, &upload_id, body, len);
        if result.is_err() {
            // Leave no orphaned parts behind (best effort; the error that matters is returned).
            let _ = self.request("store", name, &[404], |c| {
                let a = self
                    .bucket
                    .abort_multipart_upload(Some(c), &key, &upload_id);
                self.agent.delete(a.sign(SIGN_FOR).as_str()).call()
            });
        }
        result
    }

    fn upload_parts(
        &self,
        name: &str,
        key: &str,
        upload_id: &str,
        body: &mut dyn ReadSeek,
        len: u64,
    ) -> Result<String> {
        let mut etags = Vec::new();
        let mut offset = 0u64;
        let mut part: u16 = 1;
        while offset < len {
            let size = self.part_size.min(len - offset);
            body.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io("store", name, e))?;
            let md5 = if self.opts.disable_send_content_md5 {
                None
            } else {
                Some(md5_of_range(body, offset, size, name)?)
            };
            let resp = self.request("store", name, &[], |c| {
                let a = self.bucket.upload_part(Some(c), key, part, upload_id);
                let mut req = self
                    .agent
                    .put(a.sign(SIGN_FOR).as_str())
                    .header("Content-Length", size.to_string());
                if let Some(m) = &md5 {
                    req = req.header("Content-MD5", m.as_str());
                }
                body.seek(SeekFrom::Start(offset))
                    .map_err(ureq::Error::Io)?;
                let mut limited = (&mut *body).take(size);
                req.send(ureq::SendBody::from_reader(&mut limited))
            })?;
            etags.push(etag_of(&resp));
            offset += size;
            part = part
                .checked_add(1)
                .ok_or_else(|| self.error("store", name, "object needs more than 65535 parts"))?;
        }
        let resp = self.request("store", name, &[], |c| {
            let a = self.bucket.complete_multipart_upload(
                Some(c),
                key,
                upload_id,
                etags.iter().map(String::as_str),
            );
            let url = a.sign(SIGN_FOR);
            let xml = a.body();
            self.agent.post(url.as_str()).send(xml.as_bytes())
        })?;
        let text = body_text(resp, 1 << 20).map_err(|e| StorageError::io("store", name, e))?;
        // S3 may report a failed completion inside a 200 response.
        let (code, msg) = parse_error_xml(&text);
        if !code.is_empty() {
            return Err(self.error(
                "store",
                name,
                format!("completing multipart upload: {code}: {msg}"),
            ));
        }
        Ok(String::new())
    }
}

/// The `error` label of `storage_s3_call_error_by_type_total`: the S3 error code when the
/// server sent one, else the kind of network failure (upstream's categories).
fn error_type(e: &StorageError) -> String {
    let msg = match e {
        StorageError::NotFound { .. } => return "NotFound".into(),
        StorageError::Backend { message, .. } => message.as_str(),
        _ => return "Unknown".into(),
    };
    // Our status errors read "HTTP <status> <Code>: <message>".
    if let Some(rest) = msg.strip_prefix("HTTP ") {
        let mut words = rest.split_whitespace();
        let status = words.next().unwrap_or("");
        return match words.next().map(|w| w.trim_end_matches(':')) {
            Some(code) if code.chars().all(|c| c.is_ascii_alphanumeric()) && !code.is_empty() => {
                code.to_string()
            }
            _ => format!("HTTP{status}"),
        };
    }
    let lower = msg.to_ascii_lowercase();
    if lower.contains("timeout") || lower.contains("timed out") {
        "Timeout".into()
    } else if lower.contains("host not found") || lower.contains("dns") {
        "DNSError".into()
    } else if lower.starts_with("network") || lower.contains("connection") {
        "URLError".into()
    } else {
        "Unknown".into()
    }
}

fn etag_of(resp: &Response<ureq::Body>) -> String {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}

fn md5_of_range(body: &mut dyn ReadSeek, offset: u64, len: u64, name: &str) -> Result<String> {
    body.seek(SeekFrom::Start(offset))
        .map_err(|e| StorageError::io("store", name, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        let n = body
            .read(&mut buf[..want])
            .map_err(|e| StorageError::io("store", name, e))?;
        if n == 0 {
            return Err(StorageError::Backend {
                op: "store",
                name: name.to_string(),
                message: format!("body ended {left} bytes early"),
            });
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

fn md5_of(body: &mut dyn ReadSeek, len: u64, name: &str) -> Result<String> {
    md5_of_range(body, 0, len, name)
}

impl Storage for S3Storage {
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
        let key = self.key(name);
        let resp = self.request("get", name, &[], |c| {
            let url = self.bucket.get_object(Some(c), &key).sign(SIGN_FOR);
            self.agent.get(url.as_str()).call()
        })?;
        Ok(Box::new(resp.into_body().into_reader()))
    }

    fn put(&self, name: &str, body: &mut dyn ReadSeek, len: u64) -> Result<()> {
        if name.is_empty() {
            return Err(StorageError::InvalidName {
                name: String::new(),
                reason: "empty name",
            });
        }
        let etag = if len > self.multipart_threshold {
            self.put_multipart(name, body, len)?
        } else {
            self.put_single(name, body, len)?
        };
        if self.opts.use_update_marker {
            self.write_marker(name, &etag, false)?;
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        self.request("delete", name, &[404], |c| {
            let url = self.bucket.delete_object(Some(c), &key).sign(SIGN_FOR);
            self.agent.delete(url.as_str()).call()
        })?;
        if self.opts.use_update_marker {
            self.write_marker(name, "", true)?;
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(
            parse_error_xml(xml),
            (
                "SignatureDoesNotMatch".into(),
                "The request signature we calculated does not match".into()
            )
        );
        assert_eq!(parse_error_xml("garbage"), (String::new(), String::new()));
    }

    #[test]
    fn signatures_never_shown() {
        let s = "GET http://h/b/k?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=abcdef0123 failed";
        let r = redact(s);
        assert!(!r.contains("abcdef0123") && !r.contains("AKIA"), "{r}");
    }

    #[test]
    fn error_types_for_metrics() {
        let be = |m: &str| StorageError::Backend {
            op: "list",
            name: "x".into(),
            message: m.into(),
        };
        assert_eq!(
            error_type(&be("HTTP 503 SlowDown: Please reduce")),
            "SlowDown"
        );
        assert_eq!(
            error_type(&be("HTTP 403 AccessDenied (check access_key/secret_key)")),
            "AccessDenied"
        );
        assert_eq!(error_type(&be("HTTP 500")), "HTTP500");
        assert_eq!(
            error_type(&be(
                "network: Connection refused (gave up after 5 attempts)"
            )),
            "URLError"
        );
        assert_eq!(error_type(&be("timeout: global")), "Timeout");
        assert_eq!(error_type(&be("host not found")), "DNSError");
        assert_eq!(
            error_type(&StorageError::NotFound { name: "x".into() }),
            "NotFound"
        );
    }

    #[test]
    fn addressing_style() {
        let aws: url::Url = "https://s3.amazonaws.com".parse().unwrap();
        let minio: url::Url = "http://127.0.0.1:9000".parse().unwrap();
        assert!(matches!(
            url_style(&aws, "my-bucket"),
            UrlStyle::VirtualHost
        ));
        assert!(matches!(url_style(&aws, "My_Bucket"), UrlStyle::Path));
        assert!(matches!(url_style(&minio, "my-bucket"), UrlStyle::Path));
    }
}
