//! The `s3` backend: presigned requests built by rusty-s3 (which signs and parses but does no
//! I/O) sent with a blocking ureq agent, so no async runtime is involved. It follows the Go
//! backend (simpleblob s3) where a mixed fleet can observe it: object keys are `global_prefix +
//! name`, listings strip the prefix and hide the `update-marker` object, and the marker is
//! rewritten after every store and delete. Transfers stream in both directions; transient
//! failures (5xx, throttling, network errors) are retried with backoff, client errors never.
//!
//! This file builds the client and checks the bucket; the rest is one file per concern:
//! [`credentials`], [`tls`], [`request`] (one request: errors, retries, metrics), [`list`]
//! (listings and the update marker) and [`upload`] (single and multipart PUTs).

mod credentials;
mod list;
mod request;
mod tls;
pub(crate) use tls::tls_config;
mod upload;

use std::io::Read;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use ureq::Agent;

use super::marker::MarkerCache;
use super::{ErrorKind, ObjectInfo, ReadSeek, Result, Storage, StorageError};
use crate::config::S3Options;
use credentials::CredentialSource;
use request::{body_text, parse_error_xml};

/// Name of the marker object (after the global prefix).
pub use super::marker::UPDATE_MARKER;
/// Presigned URLs only need to be valid when the request starts.
const SIGN_FOR: Duration = Duration::from_secs(3600);
/// Objects above this size go up in parts (a single PUT is limited to 5 GiB by S3).
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
const DEFAULT_PART_SIZE: u64 = 64 << 20;

pub struct S3Storage {
    agent: Agent,
    bucket: Bucket,
    creds: CredentialSource,
    opts: S3Options,
    multipart_threshold: u64,
    part_size: u64,
    cache: MarkerCache,
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

impl S3Storage {
    /// Builds the client and checks the bucket (creating it with `create_bucket`).
    pub fn new(opts: S3Options) -> std::result::Result<S3Storage, StorageError> {
        let init_err =
            |message: String| StorageError::new(ErrorKind::Config, "init", &opts.bucket, message);
        let endpoint: url::Url = opts
            .endpoint_url
            .parse()
            .map_err(|e| init_err(format!("endpoint_url {:?}: {e}", opts.endpoint_url)))?;
        let style = url_style(&endpoint, &opts.bucket);
        let bucket = Bucket::new(endpoint, style, opts.bucket.clone(), opts.region.clone())
            .map_err(|e| init_err(format!("bucket {:?}: {e}", opts.bucket)))?;
        let creds = if !opts.access_key_file.is_empty() {
            CredentialSource::files(
                &opts.access_key_file,
                &opts.secret_key_file,
                opts.secrets_refresh_interval.as_std(),
            )
            .map_err(|e| init_err(e.to_string()))?
        } else {
            CredentialSource::Static(Credentials::new(
                opts.access_key.clone(),
                opts.secret_key.clone(),
            ))
        };
        let tls = tls::tls_config(&opts.tls).map_err(|e| init_err(e.to_string()))?;
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
            cache: MarkerCache::default(),
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
            return Err(StorageError::new(
                ErrorKind::Config,
                "init",
                &bucket,
                format!("bucket {bucket:?} does not exist (create it, or set create_bucket: true)"),
            ));
        }
        Ok(())
    }
}

impl Storage for S3Storage {
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_cached(prefix)
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
            return Err(StorageError::invalid_name("", "empty name"));
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
