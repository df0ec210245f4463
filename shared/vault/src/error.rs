//! The vault's error type. Damage (a tag that fails, an id that does not match, a pack that
//! cannot be parsed) is its own kind so that callers report it and never return the bytes.

use ports::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port failed (storage, catalog); carries the port's kind.
    #[error(transparent)]
    Port(#[from] ports::Error),
    /// Stored data failed authentication or does not match its id.
    #[error("damaged {what}: {why}")]
    Damaged { what: String, why: String },
    /// Something asked for does not exist (snapshot, path).
    #[error("{0}")]
    NotFound(String),
    /// Another writer committed first (a snapshot id taken, a task record changed).
    #[error("{0}")]
    Conflict(String),
    /// Reading the source failed (a local file, a connector stream).
    #[error("{what}: {source}")]
    Source {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A format or limit violation in our own data that is not damage (an unknown format
    /// version written by a newer build).
    #[error("{0}")]
    Format(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn damaged(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Damaged {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Whether retrying the same operation can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Port(e) if e.is_retryable())
    }

    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Damaged { .. })
            || matches!(self, Error::Port(e) if e.kind() == ErrorKind::Integrity)
    }
}
