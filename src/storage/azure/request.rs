//! One request to the Blob service: the URL and authorization headers of an attempt (Shared
//! Key, SAS or bearer token), and the retries around it through the shared retry helper with
//! this backend's classification, each failure turned into an error naming the container and
//! blob and counted in the `storage_azure_*` metrics.

use super::*;

impl AzureStorage {
    /// The URL and headers of one attempt of `call`, authorized with current credentials.
    pub(super) fn prepare(
        &self,
        call: &Call,
    ) -> std::result::Result<(String, Headers), AttemptError> {
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
    pub(super) fn builder<B>(
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
    pub(super) fn request(
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
    pub(super) fn request_inner(
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
    pub(super) fn attempt_once(
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
}
