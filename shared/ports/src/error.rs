//! The one error type every port returns. Adapters map their backend's errors onto these
//! kinds, so the engine decides on meaning (`NotFound`, `AlreadyExists`, a failed
//! condition, retry or not) without ever knowing which backend it runs on.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object, record or message does not exist.
    NotFound,
    /// A write-once object already exists under that key.
    AlreadyExists,
    /// A conditional write's condition did not hold (including a cancelled transaction).
    ConditionFailed,
    /// The request itself is wrong (bad range, too many items, too large): retrying the
    /// same request cannot succeed.
    InvalidInput,
    /// Decryption or authentication failed: wrong context, wrong key, or tampered data.
    Integrity,
    /// The backend asked us to slow down; retry later.
    Throttled,
    /// A transient fault (I/O, network, 5xx): retry.
    Unavailable,
    /// Anything else; not retried.
    Other,
}

/// A port error: a kind, and a message that names the object or record involved but never
/// a secret.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::new(ErrorKind::NotFound, format!("{what} not found"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}
