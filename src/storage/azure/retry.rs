//! Which failures of an Azure request are worth another attempt: the same classification as
//! the S3 backend (server errors, throttling, timeouts and broken connections are transient;
//! client errors, above all refused credentials, are not), written as pure functions of what a
//! failure carries (HTTP status and the service's error code, or the kind of I/O error) so
//! that one shared retry helper can take them over.

use std::io::ErrorKind;

/// A failure of one attempt, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Fail,
}

/// The verdict on a failed attempt: an HTTP `status` with the `x-ms-error-code` (or `<Code>`)
/// the service sent, or a network failure of `io` kind; neither means an error of ours
/// (a bad URL, a TLS configuration problem), which no retry fixes.
pub fn classify(status: Option<u16>, code: &str, io: Option<ErrorKind>) -> Verdict {
    let retry = match (status, io) {
        (Some(s), _) => status_is_transient(s, code),
        (None, Some(kind)) => io_kind_is_transient(kind),
        (None, None) => false,
    };
    if retry { Verdict::Retry } else { Verdict::Fail }
}

/// 408 and 429 (timeouts and throttling) and every 5xx; the codes Azure documents for
/// throttling and server-side timeouts whatever their status. Authentication and
/// authorization failures (401, 403) never: another attempt cannot succeed and only delays
/// the error.
pub fn status_is_transient(status: u16, code: &str) -> bool {
    if matches!(
        code,
        "AuthenticationFailed"
            | "AuthorizationFailure"
            | "AuthorizationPermissionMismatch"
            | "InvalidAuthenticationInfo"
            | "invalid_client"
            | "unauthorized_client"
            | "invalid_request"
    ) {
        return false;
    }
    matches!(status, 408 | 429 | 500..=599)
        || matches!(code, "ServerBusy" | "OperationTimedOut" | "InternalError")
}

/// Connection refused, reset or aborted, timeouts, bodies cut short, unreachable hosts:
/// what a restarting server, a load balancer or a flaky link produce. Not: permission or
/// invalid-input errors, which come from our side.
pub fn io_kind_is_transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
            | ErrorKind::UnexpectedEof
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::AddrNotAvailable
            | ErrorKind::Other
    )
}

/// The I/O kind of a ureq error, for [`classify`]: its own kinds for network failures, and
/// `None` for errors of request construction, TLS or protocol.
pub fn ureq_io_kind(e: &ureq::Error) -> Option<ErrorKind> {
    match e {
        ureq::Error::Io(io) => Some(io.kind()),
        ureq::Error::Timeout(_) => Some(ErrorKind::TimedOut),
        ureq::Error::ConnectionFailed => Some(ErrorKind::ConnectionRefused),
        ureq::Error::HostNotFound => Some(ErrorKind::HostUnreachable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [500, 502, 503, 504, 408, 429] {
            assert_eq!(classify(Some(s), "", None), Verdict::Retry, "{s}");
        }
        assert_eq!(classify(Some(503), "ServerBusy", None), Verdict::Retry);
        for (s, code) in [
            (403, "AuthenticationFailed"),
            (403, "AuthorizationPermissionMismatch"),
            (401, "InvalidAuthenticationInfo"),
            (404, "BlobNotFound"),
            (404, "ContainerNotFound"),
            (400, "InvalidBlockList"),
            (409, "ContainerBeingDeleted"),
            (400, "invalid_client"),
        ] {
            assert_eq!(classify(Some(s), code, None), Verdict::Fail, "{s} {code}");
        }
        // Even a 5xx saying the credentials are wrong is final.
        assert_eq!(
            classify(Some(500), "AuthenticationFailed", None),
            Verdict::Fail
        );
    }

    #[test]
    fn network() {
        for k in [
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionRefused,
            ErrorKind::TimedOut,
            ErrorKind::UnexpectedEof,
            ErrorKind::BrokenPipe,
        ] {
            assert_eq!(classify(None, "", Some(k)), Verdict::Retry, "{k:?}");
        }
        for k in [
            ErrorKind::PermissionDenied,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidData,
        ] {
            assert_eq!(classify(None, "", Some(k)), Verdict::Fail, "{k:?}");
        }
        assert_eq!(classify(None, "", None), Verdict::Fail);
        assert_eq!(
            ureq_io_kind(&ureq::Error::ConnectionFailed),
            Some(ErrorKind::ConnectionRefused)
        );
        assert_eq!(ureq_io_kind(&ureq::Error::BadUri("x".into())), None);
    }
}
