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
        kind: crate::source::SourceErrorKind,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Vault(e) => e.is_retryable(),
            Error::Port(e) => e.is_retryable(),
            Error::Source { kind, .. } => matches!(
                kind,
                crate::source::SourceErrorKind::Throttled
                    | crate::source::SourceErrorKind::Unavailable
            ),
            _ => false,
        }
    }
}

impl Error {
    /// A source error of `kind`.
    pub fn source(kind: crate::source::SourceErrorKind, message: impl Into<String>) -> Self {
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
