//! The one error type of every storage backend: what kind of failure it was, the operation and
//! the object (or prefix, or bucket) it concerned, and for S3 the HTTP status, S3's error code
//! and a server-given `Retry-After`. Callers decide from the typed fields (missing object,
//! worth a retry, metric label) and never from the text; the text is for people, always names
//! the object, and never carries a presigned signature or credential (backends pass anything
//! that might contain a URL through [`redact`]).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::retry::Verdict;

/// What went wrong, independent of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The name is not one a backend can store.
    InvalidName,
    /// Credentials refused or not allowed (HTTP 401/403).
    Auth,
    /// The server asks us to slow down (HTTP 429, 503 `SlowDown`).
    Throttled,
    /// The server failed (HTTP 5xx).
    Server,
    /// The server refused the request (any other HTTP 4xx).
    Client,
    /// The connection could not be made or broke off.
    Network,
    /// A connection or transfer took longer than allowed.
    Timeout,
    /// The server's name did not resolve.
    Dns,
    /// A local file operation failed.
    Io,
    /// A body shorter or longer than announced, or too long to upload.
    BodyLength,
    /// A response we could not use (unreadable XML, an unexpected status, a TLS failure).
    Protocol,
    /// The configuration cannot work (endpoint, credentials files, TLS files, missing bucket).
    Config,
}

/// A failed storage operation. Boxed inside so that `Result<T, StorageError>` stays one word.
pub struct StorageError(Box<Inner>);

impl ErrorKind {
    /// The kind of a failed HTTP response: its status and the service's error code (a 404
    /// without a more specific code is [`ErrorKind::NotFound`] for a `get`).
    pub fn of_http(status: u16, code: &str, get: bool) -> ErrorKind {
        match (status, code) {
            (404, "" | "NoSuchKey" | "BlobNotFound") if get => ErrorKind::NotFound,
            (429, _) | (_, "SlowDown" | "Throttling" | "RequestLimitExceeded" | "ServerBusy") => {
                ErrorKind::Throttled
            }
            (401 | 403, _) => ErrorKind::Auth,
            (500.., _) => ErrorKind::Server,
            (400..=499, _) => ErrorKind::Client,
            _ => ErrorKind::Protocol,
        }
    }
}

struct Inner {
    kind: ErrorKind,
    op: &'static str,
    name: String,
    status: Option<u16>,
    code: Option<String>,
    /// S3's `<Message>`, or the text of the failure for errors without a status.
    message: String,
    retry_after: Option<Duration>,
    /// Set when the operation was retried and every attempt failed.
    gave_up_after: Option<u32>,
    source: Option<io::Error>,
    /// The message already says everything, status and hints included (a backend that
    /// words its own errors, like Azure's naming container and blob).
    described: bool,
}

impl StorageError {
    /// A failure described by `message` (redacted here, since it may quote a URL).
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        name: &str,
        message: impl Into<String>,
    ) -> StorageError {
        StorageError(Box::new(Inner {
            kind,
            op,
            name: name.to_string(),
            status: None,
            code: None,
            message: redact(&message.into()),
            retry_after: None,
            gave_up_after: None,
            source: None,
            described: false,
        }))
    }

    /// A failure a backend has worded completely (`message`, redacted here); the HTTP status
    /// and the service's error code are kept for metrics and retry decisions.
    pub fn described(
        kind: ErrorKind,
        op: &'static str,
        name: &str,
        status: Option<u16>,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> StorageError {
        let mut e = StorageError::new(kind, op, name, message);
        e.0.status = status;
        e.0.code = code.filter(|c| !c.is_empty()).map(str::to_string);
        e.0.described = true;
        e
    }

    pub fn not_found(name: &str) -> StorageError {
        StorageError::new(ErrorKind::NotFound, "get", name, "")
    }

    pub fn invalid_name(name: &str, reason: &'static str) -> StorageError {
        StorageError::new(ErrorKind::InvalidName, "put", name, reason)
    }

    /// A local I/O failure; a missing file on `get` is [`ErrorKind::NotFound`].
    pub fn io(op: &'static str, name: &str, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::NotFound && op == "get" {
            return StorageError::not_found(name);
        }
        StorageError::stream(op, name, source)
    }

    /// A failure while streaming a body: never [`ErrorKind::NotFound`], whatever the I/O error's
    /// own kind says, since the object was found and opened.
    pub fn stream(op: &'static str, name: &str, source: io::Error) -> StorageError {
        let mut e = StorageError::new(ErrorKind::Io, op, name, "");
        e.0.source = Some(source);
        e
    }

    /// An HTTP response that is not a success: the kind follows from the status and S3's code.
    pub fn http(
        op: &'static str,
        name: &str,
        status: u16,
        code: &str,
        message: &str,
        retry_after: Option<Duration>,
    ) -> StorageError {
        let kind = ErrorKind::of_http(status, code, op == "get");
        let mut e = StorageError::new(kind, op, name, message);
        e.0.status = Some(status);
        e.0.code = Some(code.to_string()).filter(|c| !c.is_empty());
        e.0.retry_after = retry_after;
        e
    }

    /// The same error with the HTTP response it came from (status and error code), for
    /// metrics and retry decisions.
    pub fn with_response(mut self, status: u16, code: &str) -> StorageError {
        self.0.status = Some(status);
        self.0.code = Some(code.to_string()).filter(|c| !c.is_empty());
        self
    }

    /// The same error, marked as the last of `attempts` that all failed.
    pub fn gave_up_after(mut self, attempts: u32) -> StorageError {
        self.0.gave_up_after = Some(attempts);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn is_not_found(&self) -> bool {
        self.0.kind == ErrorKind::NotFound
    }

    /// Whether the same request may succeed later: throttling, server and network trouble.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.0.kind,
            ErrorKind::Throttled
                | ErrorKind::Server
                | ErrorKind::Network
                | ErrorKind::Timeout
                | ErrorKind::Dns
        )
    }

    /// [`Self::is_retryable`] as the retry helper's decision, with the server's delay if any.
    pub fn verdict(&self) -> Verdict {
        match (self.is_retryable(), self.0.retry_after) {
            (false, _) => Verdict::Fail,
            (true, None) => Verdict::Retry,
            (true, Some(d)) => Verdict::RetryAfter(d),
        }
    }

    /// The operation (`get`, `put`, `list`, `store`, `delete`, `init`…).
    pub fn op(&self) -> &'static str {
        self.0.op
    }

    /// The object, prefix or bucket concerned.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The HTTP status of the failed response, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// The backend's error code (S3's `<Code>`), if it sent one.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// How long the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The `error` label of `storage_s3_call_error_by_type_total`, upstream's categories: the
    /// S3 error code when the server sent a usable one, else `HTTP<status>`, else the kind of
    /// network failure.
    pub fn metric_label(&self) -> String {
        let e = &self.0;
        if e.kind == ErrorKind::NotFound {
            return "NotFound".into();
        }
        if let Some(status) = e.status {
            return match e.code.as_deref() {
                Some(c) if c.chars().all(|c| c.is_ascii_alphanumeric()) => c.to_string(),
                _ => format!("HTTP{status}"),
            };
        }
        match e.kind {
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Dns => "DNSError",
            ErrorKind::Network => "URLError",
            _ => "Unknown",
        }
        .into()
    }

    /// A hint for the errors people most often have to fix themselves.
    fn hint(&self) -> &'static str {
        match (self.0.status, self.0.code.as_deref()) {
            (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied"))
            | (Some(401 | 403), _) => " (check access_key/secret_key and the bucket's permissions)",
            (_, Some("NoSuchBucket")) => " (create it, or set create_bucket: true)",
            _ => "",
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        match e.kind {
            ErrorKind::NotFound => return write!(f, "object {:?} does not exist", e.name),
            ErrorKind::InvalidName => {
                return write!(f, "invalid object name {:?}: {}", e.name, e.message);
            }
            _ => write!(f, "{} {:?}: ", e.op, e.name)?,
        }
        if e.described {
            f.write_str(&e.message)?;
        } else if let Some(status) = e.status {
            write!(f, "HTTP {status}")?;
            if let Some(code) = &e.code {
                write!(f, " {code}")?;
                if !e.message.is_empty() {
                    write!(f, ": {}", e.message)?;
                }
            }
            f.write_str(self.hint())?;
        } else if let Some(source) = &e.source {
            write!(f, "{source}")?;
        } else {
            f.write_str(&e.message)?;
        }
        if let Some(n) = e.gave_up_after {
            write!(f, " (gave up after {n} attempts)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.0;
        f.debug_struct("StorageError")
            .field("kind", &e.kind)
            .field("op", &e.op)
            .field("name", &e.name)
            .field("status", &e.status)
            .field("code", &e.code)
            .field("message", &e.message)
            .field("retry_after", &e.retry_after)
            .field("gave_up_after", &e.gave_up_after)
            .field("source", &e.source)
            .finish()
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Removes signatures and credentials from anything that might contain a presigned URL.
pub(crate) fn redact(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_http_statuses() {
        let h = |op, status, code| StorageError::http(op, "main__x", status, code, "", None).kind();
        assert_eq!(h("get", 404, "NoSuchKey"), ErrorKind::NotFound);
        assert_eq!(h("get", 404, ""), ErrorKind::NotFound);
        assert_eq!(h("list", 404, "NoSuchBucket"), ErrorKind::Client);
        assert_eq!(h("get", 404, "NoSuchBucket"), ErrorKind::Client);
        assert_eq!(h("store", 403, "AccessDenied"), ErrorKind::Auth);
        assert_eq!(h("store", 503, "SlowDown"), ErrorKind::Throttled);
        assert_eq!(h("store", 429, ""), ErrorKind::Throttled);
        assert_eq!(h("store", 500, "InternalError"), ErrorKind::Server);
        assert_eq!(h("store", 400, "BadDigest"), ErrorKind::Client);
        assert_eq!(h("store", 301, ""), ErrorKind::Protocol);
        assert!(StorageError::http("list", "", 503, "", "", None).is_retryable());
        assert!(!StorageError::http("list", "", 403, "", "", None).is_retryable());
    }

    #[test]
    fn messages_name_the_object_and_hint_at_the_fix() {
        let e = StorageError::http("list", "main__", 503, "SlowDown", "Please reduce", None);
        assert_eq!(
            e.to_string(),
            "list \"main__\": HTTP 503 SlowDown: Please reduce"
        );
        assert_eq!(
            e.gave_up_after(5).to_string(),
            "list \"main__\": HTTP 503 SlowDown: Please reduce (gave up after 5 attempts)"
        );
        let e = StorageError::http("init", "bkt", 403, "", "", None);
        assert_eq!(
            e.to_string(),
            "init \"bkt\": HTTP 403 (check access_key/secret_key and the bucket's permissions)"
        );
        let e = StorageError::http("list", "bkt", 404, "NoSuchBucket", "", None);
        assert_eq!(
            e.to_string(),
            "list \"bkt\": HTTP 404 NoSuchBucket (create it, or set create_bucket: true)"
        );
        assert_eq!(
            StorageError::not_found("main__a").to_string(),
            "object \"main__a\" does not exist"
        );
        assert_eq!(
            StorageError::invalid_name("", "empty name").to_string(),
            "invalid object name \"\": empty name"
        );
        let e = StorageError::io("put", "main__a", io::Error::other("disk full"));
        assert_eq!(e.to_string(), "put \"main__a\": disk full");
        assert!(std::error::Error::source(&e).is_some());
        assert!(StorageError::io("get", "x", io::ErrorKind::NotFound.into()).is_not_found());
        assert!(!StorageError::io("put", "x", io::ErrorKind::NotFound.into()).is_not_found());
    }

    #[test]
    fn metric_labels_come_from_the_fields() {
        let h = |status, code| StorageError::http("list", "x", status, code, "m", None);
        assert_eq!(
            h(503, "SlowDown").gave_up_after(5).metric_label(),
            "SlowDown"
        );
        assert_eq!(h(403, "AccessDenied").metric_label(), "AccessDenied");
        assert_eq!(h(500, "").metric_label(), "HTTP500");
        assert_eq!(h(400, "Odd-Code").metric_label(), "HTTP400");
        let k = |kind| StorageError::new(kind, "list", "x", "boom").metric_label();
        assert_eq!(k(ErrorKind::Network), "URLError");
        assert_eq!(k(ErrorKind::Timeout), "Timeout");
        assert_eq!(k(ErrorKind::Dns), "DNSError");
        assert_eq!(k(ErrorKind::Protocol), "Unknown");
        assert_eq!(StorageError::not_found("x").metric_label(), "NotFound");
    }

    #[test]
    fn retry_verdicts_carry_the_server_delay() {
        let slow = StorageError::http(
            "store",
            "x",
            503,
            "SlowDown",
            "",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(slow.verdict(), Verdict::RetryAfter(Duration::from_secs(2)));
        assert_eq!(slow.retry_after(), Some(Duration::from_secs(2)));
        let net = StorageError::new(ErrorKind::Network, "get", "x", "network: refused");
        assert_eq!(net.verdict(), Verdict::Retry);
        assert_eq!(StorageError::not_found("x").verdict(), Verdict::Fail);
    }

    #[test]
    fn signatures_never_shown() {
        let s = "GET http://h/b/k?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=abcdef0123 failed";
        let r = redact(s);
        assert!(!r.contains("abcdef0123") && !r.contains("AKIA"), "{r}");
        let e = StorageError::new(ErrorKind::Protocol, "get", "k", s);
        assert!(!e.to_string().contains("abcdef0123"), "{e}");
    }
}
