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

/// The most of a server's own words an error keeps. Errors go into logs, events, snapshot
/// errors and job state: a server that answers with a whole message (or a misbehaving one
/// that sends mail where a status line belongs) must not put that mail there.
pub const MAX_SERVER_TEXT: usize = 300;

/// `s` cut to [`MAX_SERVER_TEXT`] bytes (at a character boundary), with control characters
/// shown as spaces so that a log line stays one line.
pub(crate) fn clip(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SERVER_TEXT + 3));
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_SERVER_TEXT {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The server's own words from the client's `code: …, info: Some("…")` rendering, clipped.
pub(crate) fn server_text(s: &str) -> String {
    if let Some(i) = s.find(", info: Some(\"") {
        let rest = &s[i + ", info: Some(\"".len()..];
        let rest = rest.strip_suffix("\")").unwrap_or(rest);
        return clip(&rest.replace("\\\"", "\""));
    }
    if s.starts_with("code: ") && s.ends_with("info: None") {
        return "no reason given".into();
    }
    clip(s)
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
            E::Io(io) => read_failure(command, &io),
            E::ConnectionLost => Error::ConnectionLost(format!("during {command}")),
            E::No(text) | E::Bad(text) => Error::Server {
                command: command.to_string(),
                text: server_text(&text),
            },
            // The client's parse errors quote the response, which may be mail.
            E::Parse(_) => Error::Protocol(format!(
                "the server's answer to {command} is not valid IMAP"
            )),
            // What was invalid is ours (a folder name), never the secret: LOGIN maps its
            // own validation errors before this.
            E::Validate(v) => Error::Invalid(clip(&format!("{command}: {v}"))),
            E::Append => Error::Server {
                command: command.to_string(),
                text: "the message was not accepted".into(),
            },
            _ => Error::Protocol(format!("{command}: the server's answer was not understood")),
        }
    }
}

/// A failure of the response reader. Its text is never kept: the client's parse errors
/// quote the whole buffered response (a body of any size, the mail itself); only the kind
/// of failure is. Either way the stream is out of step, so the connection is lost.
pub(crate) fn read_failure(command: &str, e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::Other {
        Error::ConnectionLost(format!(
            "the server's answer to {command} is not valid IMAP"
        ))
    } else {
        Error::ConnectionLost(format!("{command}: {}", e.kind()))
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

    #[test]
    fn server_words_are_bounded_and_one_line() {
        let long = format!("code: None, info: Some(\"{}\")", "é".repeat(10_000));
        let t = server_text(&long);
        assert!(t.len() <= MAX_SERVER_TEXT + '…'.len_utf8(), "{}", t.len());
        assert!(t.ends_with('…'));
        assert_eq!(clip("a\r\nb"), "a  b");
    }

    #[test]
    fn read_failures_never_quote_the_response() {
        let mail = "Subject: private\r\n\r\nsecret body";
        let io = std::io::Error::other(format!("Error during parsing of {mail:?}"));
        let e = read_failure("UID FETCH", &io);
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.is_retryable());
        let e = Error::from_imap(
            "UID FETCH",
            async_imap::error::Error::Parse(async_imap::error::ParseError::Unexpected(
                mail.to_string(),
            )),
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
