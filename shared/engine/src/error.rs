//! The engine's error type: what went wrong, on which task, snapshot or path, and whether a
//! retry can help. Messages are one line and never hold a secret.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Vault(#[from] vault::Error),
    #[error(transparent)]
    Port(#[from] ports::Error),
    /// A task, snapshot or path that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked (a name taken, an ambiguous snapshot).
    #[error("{0}")]
    Invalid(String),
    /// The source (a SaaS API, a mail server) refused or failed; the message names the
    /// source and what to do, never a credential.
    #[error("{message}")]
    Source {
        kind: crate::SourceErrorKind,
        message: String,
    },
    /// A local file or folder could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What an error means to whoever must act on it, without naming the layer it came from:
/// the API turns it into a status, the command line into an exit status, jobs into an
/// event's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A task, account, snapshot or path that does not exist.
    NotFound,
    /// A request that cannot be carried out as asked.
    Invalid,
    /// The source refused or failed.
    Source(crate::SourceErrorKind),
    /// A local file or folder could not be read or written.
    Io,
    /// Storage is busy or unreachable; a retry can help.
    StorageUnavailable,
    /// Stored data failed its integrity checks: never returned, to be verified.
    Damaged,
    /// Any other storage failure.
    Storage,
}

impl ErrorKind {
    /// The kind as events and logs name it.
    pub fn reason(self) -> &'static str {
        use crate::SourceErrorKind as S;
        match self {
            ErrorKind::Source(S::Auth) => "source_auth",
            ErrorKind::Source(S::Throttled) => "source_throttled",
            ErrorKind::Source(S::Unavailable) => "source_unavailable",
            ErrorKind::Source(S::NotFound) => "source_not_found",
            ErrorKind::Source(S::Protocol) => "source_protocol",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Io => "io",
            ErrorKind::StorageUnavailable => "storage_unavailable",
            ErrorKind::Damaged => "storage_damaged",
            ErrorKind::Storage => "storage",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) | Error::Vault(vault::Error::NotFound(_)) => ErrorKind::NotFound,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Source { kind, .. } => ErrorKind::Source(*kind),
            Error::Io { .. } => ErrorKind::Io,
            e if e.is_retryable() => ErrorKind::StorageUnavailable,
            Error::Vault(_) => ErrorKind::Damaged,
            Error::Port(p) if p.kind() == ports::ErrorKind::Integrity => ErrorKind::Damaged,
            Error::Port(_) => ErrorKind::Storage,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Vault(e) => e.is_retryable(),
            Error::Port(e) => e.is_retryable(),
            Error::Source { kind, .. } => matches!(
                kind,
                crate::SourceErrorKind::Throttled | crate::SourceErrorKind::Unavailable
            ),
            _ => false,
        }
    }
}

impl Error {
    /// A source error of `kind`.
    pub fn source(kind: crate::SourceErrorKind, message: impl Into<String>) -> Self {
        Error::Source {
            kind,
            message: message.into(),
        }
    }
}

impl From<domain::IdError> for Error {
    fn from(e: domain::IdError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl From<domain::PathError> for Error {
    fn from(e: domain::PathError) -> Self {
        Error::Invalid(e.to_string())
    }
}
