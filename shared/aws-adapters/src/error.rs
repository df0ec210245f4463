//! How an AWS SDK failure becomes a port error: a kind the engine can act on (retry, give
//! up, treat as missing) and a one-line message naming the resource and AWS's error code.
//!
//! Messages are built from the error code, the service's own message (cut short) and the
//! resource name only. The SDK error itself is never formatted with `Debug` nor kept as a
//! source: its raw response and request parts are not ours to print.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use ports::{Error, ErrorKind};
use std::fmt::Display;

/// The longest service message quoted in an error line.
const MAX_MESSAGE_CHARS: usize = 200;

/// Error codes that mean "slow down" on any of the five services.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "LimitExceededException",
];

/// Error codes that mean the credentials or the permissions are wrong: retrying cannot help.
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
];

/// What one failed call told us, before the caller decides what it means.
pub(crate) struct Failure {
    /// AWS's error code (`NoSuchKey`, `ConditionalCheckFailedException`, …), when the
    /// service answered.
    pub code: Option<String>,
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The generic mapping of this failure, used unless the caller knows better.
    pub error: Error,
}

impl Failure {
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Classifies a failed SDK call on `what` (a bucket and key, a table and record: never data).
pub(crate) fn failure<E>(
    err: SdkError<E, HttpResponse>,
    service: &str,
    what: impl Display,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().map(str::to_string);
            let message = e.message().map(short);
            let error = from_code(service, what, code.as_deref(), message.as_deref(), status);
            Failure {
                code,
                status,
                error,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            code: None,
            status: None,
            error: Error::new(
                ErrorKind::Unavailable,
                format!("{what}: {service} did not answer in time"),
            ),
        },
        SdkError::DispatchFailure(d) => {
            // The connector's error chain says what failed (refused, DNS, TLS) and holds
            // neither headers nor bodies.
            let cause = d
                .as_connector_error()
                .map(|c| chain(c))
                .unwrap_or_else(|| "connection failed".to_string());
            Failure {
                code: None,
                status: None,
                error: Error::new(
                    ErrorKind::Unavailable,
                    format!("{what}: could not reach {service}: {cause}"),
                ),
            }
        }
        SdkError::ResponseError(_) => Failure {
            code: None,
            status,
            error: Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{what}: {service} sent a response that could not be read (HTTP {})",
                    status.map_or("?".to_string(), |s| s.to_string())
                ),
            ),
        },
        SdkError::ConstructionFailure(_) => Failure {
            code: None,
            status: None,
            error: Error::new(
                ErrorKind::Other,
                format!("{what}: the {service} request could not be built"),
            ),
        },
        _ => Failure {
            code: None,
            status,
            error: Error::new(ErrorKind::Other, format!("{what}: {service} call failed")),
        },
    }
}

/// The generic mapping of a service's answer.
pub(crate) fn from_code(
    service: &str,
    what: impl Display,
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
) -> Error {
    let kind = match (code, status) {
        (Some(c), _) if THROTTLING_CODES.contains(&c) => ErrorKind::Throttled,
        (Some(c), _) if ACCESS_CODES.contains(&c) => ErrorKind::Other,
        (_, Some(429 | 503)) => ErrorKind::Throttled,
        (_, Some(s)) if s >= 500 => ErrorKind::Unavailable,
        (Some(c), _) if c.contains("Internal") || c.contains("Unavailable") => {
            ErrorKind::Unavailable
        }
        (Some("ValidationException" | "InvalidParameterValue" | "InvalidArgument"), _) => {
            ErrorKind::InvalidInput
        }
        _ => ErrorKind::Other,
    };
    let code = code.unwrap_or("error");
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    let message = message.map(|m| format!(": {m}")).unwrap_or_default();
    Error::new(kind, format!("{what}: {service} {code}{status}{message}"))
}

/// A service message cut to a bounded length, on one line.
fn short(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if s.chars().count() > MAX_MESSAGE_CHARS {
        format!("{one_line}…")
    } else {
        one_line
    }
}

/// An error and its sources, joined on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    short(&parts.join(": "))
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        let kind = |code: Option<&str>, status: Option<u16>| {
            from_code("S3", "x", code, None, status).kind()
        };
        assert_eq!(
            kind(Some("ProvisionedThroughputExceededException"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(
            kind(Some("ThrottlingException"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(
            kind(Some("RequestLimitExceeded"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(kind(Some("SlowDown"), Some(503)), ErrorKind::Throttled);
        assert_eq!(kind(None, Some(500)), ErrorKind::Unavailable);
        assert_eq!(kind(Some("AccessDenied"), Some(403)), ErrorKind::Other);
        assert_eq!(
            kind(Some("ValidationException"), Some(400)),
            ErrorKind::InvalidInput
        );
        assert!(!from_code("S3", "x", Some("A"), None, None).is_retryable());
    }

    #[test]
    fn long_messages_are_cut_to_one_line() {
        let long = format!("line one\nline two {}", "y".repeat(500));
        let e = from_code("KMS", "key k", Some("Oops"), Some(&short(&long)), Some(400));
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.chars().count() < 300, "{text}");
        assert!(
            text.starts_with("key k: KMS Oops (HTTP 400): line one line two"),
            "{text}"
        );
    }
}
