//! Sending one S3 request: each attempt is signed afresh (credentials may have been rotated) by
//! a caller-supplied closure, the response or transport failure becomes a typed
//! [`StorageError`] (HTTP status, S3's `<Code>`, a `Retry-After`), transient failures are
//! retried through [`crate::retry`], and every call is counted in the `storage_s3_*` metrics
//! under upstream's method names and error labels.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use rusty_s3::Credentials;
use ureq::http::Response;

use super::S3Storage;
use crate::retry::{self, Attempts, Policy, Reason};
use crate::storage::{ErrorKind, Result, StorageError};

/// Attempts of one request on transient errors (5xx, throttling, network trouble), with
/// exponential backoff between them: 200 ms, 400 ms, 800 ms, 1.6 s.
const RETRY: Policy = Policy::exponential(
    Attempts::Max(5),
    Duration::from_millis(200),
    Duration::from_secs(5),
    2,
);

/// The body of a small response (XML), at most `limit` bytes.
pub(super) fn body_text(resp: Response<ureq::Body>, limit: u64) -> io::Result<String> {
    let mut text = String::new();
    resp.into_body()
        .into_with_config()
        .limit(limit)
        .reader()
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The `<Code>` and `<Message>` of an S3 error body.
pub(super) fn parse_error_xml(body: &str) -> (String, String) {
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

/// A `Retry-After` in seconds (S3 sends no HTTP-date form, and one would only be ignored).
fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub(super) fn etag_of(resp: &Response<ureq::Body>) -> String {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}

/// A non-success response as an error carrying S3's code and message.
fn status_error(op: &'static str, name: &str, resp: Response<ureq::Body>) -> StorageError {
    let status = resp.status().as_u16();
    let after = retry_after(&resp);
    let body = body_text(resp, 64 << 10).unwrap_or_default();
    let (code, msg) = parse_error_xml(&body);
    StorageError::http(op, name, status, &code, &msg, after)
}

/// A failure to get any response. Network trouble, timeouts and unresolved names are worth
/// another attempt; the rest (TLS, protocol, a bad URL) would fail the same way again.
fn transport_error(op: &'static str, name: &str, e: ureq::Error) -> StorageError {
    let (kind, message) = match e {
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
            (ErrorKind::Timeout, format!("network: {e}"))
        }
        ureq::Error::Io(e) => (ErrorKind::Network, format!("network: {e}")),
        e @ ureq::Error::Timeout(_) => (ErrorKind::Timeout, e.to_string()),
        e @ ureq::Error::HostNotFound => (ErrorKind::Dns, e.to_string()),
        e @ ureq::Error::ConnectionFailed => (ErrorKind::Network, e.to_string()),
        e => (ErrorKind::Protocol, e.to_string()),
    };
    StorageError::new(kind, op, name, message)
}

impl S3Storage {
    /// Runs one request with retries (see [`Self::send_with_retries`]) and counts it in the
    /// `storage_s3_*` metrics under upstream's method names; a missing object is no error there.
    pub(super) fn request(
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
            .set(crate::metrics::unix_seconds(crate::base::now_ns()));
        let t0 = Instant::now();
        let r = self.send_with_retries(op, name, accept, attempt);
        m.s3_call_duration
            .with_label_values(&[method])
            .observe(t0.elapsed().as_secs_f64());
        if let Err(e) = &r
            && !e.is_not_found()
        {
            m.s3_call_errors.with_label_values(&[method]).inc();
            m.s3_call_errors_by_type
                .with_label_values(&[method, &e.metric_label()])
                .inc();
        }
        r
    }

    /// `attempt` builds and sends the request with fresh credentials (and rewinds any body); a
    /// response with a 2xx status, or one `accept` allows, is returned. The error after the last
    /// attempt says that it gave up.
    fn send_with_retries(
        &self,
        op: &'static str,
        name: &str,
        accept: &[u16],
        mut attempt: impl FnMut(&Credentials) -> std::result::Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>> {
        let once = || match attempt(&self.creds.get()) {
            Ok(resp) if resp.status().is_success() || accept.contains(&resp.status().as_u16()) => {
                Ok(resp)
            }
            Ok(resp) => Err(status_error(op, name, resp)),
            Err(e) => Err(transport_error(op, name, e)),
        };
        let report = |r: &retry::Retrying<'_, StorageError>| {
            log::debug!(op = op, name = name, attempt = r.attempt, error = r.error.to_string(); "S3 request failed, retrying");
        };
        retry::run(&RETRY, once, StorageError::verdict, report, retry::sleep).map_err(|f| {
            match f.reason {
                Reason::Exhausted => f.error.gave_up_after(f.attempts),
                Reason::NotRetryable | Reason::Stopped => f.error,
            }
        })
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

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<ureq::Body> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(ureq::Body::builder().data(body.to_string()))
            .unwrap()
    }

    #[test]
    fn responses_become_typed_errors() {
        let xml = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let e = status_error(
            "store",
            "main__a",
            response(503, &[("Retry-After", "3")], xml),
        );
        assert_eq!(
            (e.kind(), e.status(), e.code()),
            (ErrorKind::Throttled, Some(503), Some("SlowDown"))
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            e.to_string(),
            "store \"main__a\": HTTP 503 SlowDown: Please reduce your request rate."
        );
        let e = status_error(
            "get",
            "main__a",
            response(503, &[("Retry-After", "soon")], ""),
        );
        assert_eq!((e.kind(), e.retry_after()), (ErrorKind::Server, None));
        let e = status_error("get", "main__a", response(404, &[], ""));
        assert!(e.is_not_found(), "{e}");
        assert_eq!(etag_of(&response(200, &[("ETag", "\"abc\"")], "")), "abc");
    }

    #[test]
    fn transport_failures_are_classified() {
        let t = |e| transport_error("list", "main__", e);
        let refused = t(ureq::Error::Io(io::ErrorKind::ConnectionRefused.into()));
        assert_eq!(refused.kind(), ErrorKind::Network);
        assert_eq!(refused.metric_label(), "URLError");
        assert!(
            refused
                .to_string()
                .starts_with("list \"main__\": network: "),
            "{refused}"
        );
        let timed_out = t(ureq::Error::Io(io::ErrorKind::TimedOut.into()));
        assert_eq!(timed_out.metric_label(), "Timeout");
        assert_eq!(t(ureq::Error::HostNotFound).metric_label(), "DNSError");
        assert_eq!(t(ureq::Error::ConnectionFailed).metric_label(), "URLError");
        let tls = t(ureq::Error::Tls("no certificate"));
        assert!(!tls.is_retryable());
        assert_eq!(tls.metric_label(), "Unknown");
    }
}
