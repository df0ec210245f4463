//! What a failed Graph request means for the run: one item recorded as failed, the
//! collection enumerated again, or the whole run stopped; and how it reads in a report.

use engine::SourceErrorKind;
use reqwest::Response;
use serde_json::Value;

/// Why a request failed, before it becomes an [`engine::Error`].
#[derive(Debug, Clone)]
pub enum Fail {
    /// Graph answered with an error status and body.
    Status {
        status: u16,
        code: String,
        message: String,
        what: String,
    },
    Auth(String),
    /// 403: the app may not read this resource (an item flagged as malware, a message or
    /// a site it is denied). It costs that item or that site, not the run.
    Denied {
        code: String,
        message: String,
    },
    Throttled(String),
    Unavailable(String),
    Protocol(String),
    /// A download that broke off more often than it is resumed: it costs that file, which
    /// is asked for again next run, not the run.
    Broken(String),
}

impl Fail {
    pub fn status(&self) -> Option<u16> {
        match self {
            Fail::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A collection deleted since it was listed: Exchange has no sync state for a folder
    /// that is gone (`ErrorSyncFolderNotFound`), and answers 404 for it.
    pub fn is_collection_gone(&self) -> bool {
        match self {
            Fail::Status { status, code, .. } => {
                *status == 404 || code.eq_ignore_ascii_case("ErrorSyncFolderNotFound")
            }
            _ => false,
        }
    }

    /// Whether the failure costs only the item it was about: the item is recorded as
    /// failed and retried on the next run. Graph's 4xx and 5xx answers to one item's
    /// request and a 403 for it (malware, access denied) do; losing the token, or
    /// throttling beyond what the run can wait, do not.
    pub fn costs_one_item(&self) -> bool {
        !self.is_fatal() || matches!(self, Fail::Denied { .. })
    }

    /// Whether the run should stop here and go on later from a checkpoint: the service
    /// asked for more patience than this run has (`Retry-After` beyond its budget) or
    /// could not be reached. Nothing about the data is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(self, Fail::Throttled(_) | Fail::Unavailable(_))
    }

    /// A delta or sync token the service no longer accepts: the collection must be
    /// enumerated again.
    pub fn is_expired_token(&self) -> bool {
        match self {
            Fail::Status { status, code, .. } => {
                *status == 410
                    || code.eq_ignore_ascii_case("syncStateNotFound")
                    || code.eq_ignore_ascii_case("resyncRequired")
                    || code.eq_ignore_ascii_case("syncStateInvalid")
            }
            _ => false,
        }
    }

    /// Whether the whole run must stop (credentials, throttling beyond the cap, an
    /// unreachable service) rather than one item being recorded as failed.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Fail::Status { .. } | Fail::Protocol(_) | Fail::Broken(_)
        )
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Status {
                status,
                code,
                message,
                what,
            } => write!(
                f,
                "Microsoft Graph answered {status} {code} to {what}: {message}"
            ),
            Fail::Auth(m)
            | Fail::Throttled(m)
            | Fail::Unavailable(m)
            | Fail::Protocol(m)
            | Fail::Broken(m) => f.write_str(m),
            Fail::Denied { message, .. } => f.write_str(message),
        }
    }
}

impl From<Fail> for engine::Error {
    fn from(f: Fail) -> Self {
        let kind = match &f {
            Fail::Status { status: 404, .. } | Fail::Status { status: 410, .. } => {
                SourceErrorKind::NotFound
            }
            Fail::Status { status: 401, .. } | Fail::Status { status: 403, .. } => {
                SourceErrorKind::Auth
            }
            Fail::Status { status, .. } if *status >= 500 => SourceErrorKind::Unavailable,
            Fail::Status { .. } | Fail::Protocol(_) => SourceErrorKind::Protocol,
            Fail::Auth(_) | Fail::Denied { .. } => SourceErrorKind::Auth,
            Fail::Throttled(_) => SourceErrorKind::Throttled,
            Fail::Unavailable(_) | Fail::Broken(_) => SourceErrorKind::Unavailable,
        };
        engine::Error::source(kind, f.to_string())
    }
}

pub type FResult<T> = std::result::Result<T, Fail>;

/// Graph's error body: `{"error": {"code", "message"}}`; anything else is shown as text.
pub(super) async fn error_of(resp: Response, what: String) -> Fail {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<Value>(&text) {
        Ok(v) => (
            v.pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        Err(_) => (String::new(), text.chars().take(200).collect()),
    };
    Fail::Status {
        status,
        code,
        message,
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tokens_are_recognised_by_status_or_code() {
        let f = |status, code: &str| Fail::Status {
            status,
            code: code.into(),
            message: String::new(),
            what: String::new(),
        };
        assert!(f(410, "").is_expired_token());
        assert!(f(400, "syncStateNotFound").is_expired_token());
        assert!(f(400, "resyncRequired").is_expired_token());
        assert!(!f(404, "ErrorItemNotFound").is_expired_token());
    }
}
