//! Errors of the IMAP source. Messages say what failed and what to do; none ever holds a
//! password or token (the server's own words are kept, and servers do not echo secrets).

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the IMAP server {host}:{port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("TLS with the IMAP server {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("the IMAP server refused the login of {user}: {reason}; check the user name and the password or token (an expired OAuth token needs renewing)")]
    Auth { user: String, reason: String },
    #[error("the IMAP server does not offer {0}")]
    Unsupported(String),
    #[error("the IMAP server answered {command} with an error: {text}")]
    Server { command: String, text: String },
    #[error("the connection to the IMAP server was lost: {0}")]
    ConnectionLost(String),
    #[error("the IMAP server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the IMAP server sent something unexpected: {0}")]
    Protocol(String),
    #[error(
        "the folder {0} was replaced on the server (its UIDVALIDITY changed) while it was read"
    )]
    UidValidityChanged(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Sink(String),
}

/// The server's own words from the client's `code: …, info: Some("…")` rendering.
pub(crate) fn server_text(s: &str) -> String {
    if let Some(i) = s.find(", info: Some(\"") {
        let rest = &s[i + ", info: Some(\"".len()..];
        let rest = rest.strip_suffix("\")").unwrap_or(rest);
        return rest.replace("\\\"", "\"");
    }
    if s.starts_with("code: ") && s.ends_with("info: None") {
        return "no reason given".into();
    }
    s.to_string()
}

/// What kind of failure, for callers that decide whether to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Tls,
    Auth,
    Unsupported,
    Server,
    ConnectionLost,
    Timeout,
    Protocol,
    Invalid,
    Sink,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Server { .. } => ErrorKind::Server,
            Error::ConnectionLost(_) => ErrorKind::ConnectionLost,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::UidValidityChanged(_) => ErrorKind::Protocol,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Sink(_) => ErrorKind::Sink,
        }
    }

    /// Whether a new connection may succeed where this one failed: drops, time-outs and
    /// unreachable servers, not refusals.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Connect | ErrorKind::ConnectionLost | ErrorKind::Timeout
        )
    }

    /// Maps a client error met while running `command` (a verb, never with arguments that
    /// could hold a secret).
    pub(crate) fn from_imap(command: &str, e: async_imap::error::Error) -> Error {
        use async_imap::error::Error as E;
        match e {
            E::Io(io) => Error::ConnectionLost(format!("{command}: {io}")),
            E::ConnectionLost => Error::ConnectionLost(format!("during {command}")),
            E::No(text) | E::Bad(text) => Error::Server {
                command: command.to_string(),
                text: server_text(&text),
            },
            E::Parse(p) => Error::Protocol(format!("{command}: {p}")),
            E::Validate(v) => Error::Invalid(format!("{command}: {v}")),
            E::Append => Error::Server {
                command: command.to_string(),
                text: "the message was not accepted".into(),
            },
            other => Error::Protocol(format!("{command}: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_words_are_kept_plain() {
        assert_eq!(
            server_text(
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(server_text("code: None, info: None"), "no reason given");
        assert_eq!(server_text("plain"), "plain");
    }
}
