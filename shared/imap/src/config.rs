//! Where a mailbox is and how to log in to it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// TLS from the first byte (port 993): what Gmail and Yahoo offer.
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (port 143); refused if the
    /// server does not offer it, never silently left in plaintext.
    Starttls,
    /// No TLS at all. Only for a server on this machine in tests: a password would cross
    /// the network in the clear.
    NoneForTests,
}

impl TlsMode {
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::NoneForTests => 143,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::NoneForTests => "none-for-tests",
        }
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "implicit" => Ok(TlsMode::Implicit),
            "starttls" => Ok(TlsMode::Starttls),
            "none-for-tests" => Ok(TlsMode::NoneForTests),
            _ => Err(format!(
                "unknown TLS mode {s:?}: use implicit, starttls or none-for-tests"
            )),
        }
    }
}

/// A password or token: zeroised when dropped, never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

#[derive(Clone, Debug)]
pub enum Credentials {
    /// LOGIN with a password (for Gmail and Yahoo, an app password).
    Password(Secret),
    /// AUTHENTICATE XOAUTH2 with an OAuth 2 access token (Gmail, Yahoo, Outlook.com).
    OAuth2Token(Secret),
}

#[derive(Clone, Debug)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub credentials: Credentials,
    pub tls: TlsMode,
    /// PEM certificates trusted besides the public roots (a private or test CA).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// How long one network step (connect, a command, one response) may take.
    pub timeout: Duration,
}

impl ImapConfig {
    pub fn new(host: impl Into<String>, user: impl Into<String>, credentials: Credentials) -> Self {
        ImapConfig {
            host: host.into(),
            port: TlsMode::Implicit.default_port(),
            user: user.into(),
            credentials,
            tls: TlsMode::Implicit,
            extra_roots_pem: None,
            timeout: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = ImapConfig::new(
            "h",
            "u",
            Credentials::Password(Secret::new("hunter2-very-secret")),
        );
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("redacted"));
    }

    #[test]
    fn tls_modes_parse() {
        assert_eq!("implicit".parse::<TlsMode>().unwrap(), TlsMode::Implicit);
        assert_eq!("starttls".parse::<TlsMode>().unwrap(), TlsMode::Starttls);
        assert_eq!(
            "none-for-tests".parse::<TlsMode>().unwrap(),
            TlsMode::NoneForTests
        );
        assert!("none".parse::<TlsMode>().is_err());
        assert_eq!(TlsMode::Implicit.default_port(), 993);
        assert_eq!(TlsMode::Starttls.default_port(), 143);
    }
}
