//! What a task stores about its mailbox (never the secret, which is sealed apart), and how
//! that and the secret become a connection's configuration.

use super::SOURCE;
use crate::config::{Credentials, ImapConfig, Secret, TlsMode};
use engine::{Error, Result, SourceConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Password,
    Oauth2,
}

/// A task's settings (never secret: the password or token is sealed apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub tls: TlsMode,
    pub auth: AuthKind,
    /// A PEM file of CA certificates to trust besides the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl ImapSettings {
    pub fn source_config(&self) -> SourceConfig {
        SourceConfig::new(
            SOURCE,
            serde_json::to_value(self).expect("settings serialise"),
        )
    }

    /// # Errors
    /// `Invalid` when the CA file cannot be read.
    pub fn to_config(&self, secret: &str) -> Result<ImapConfig> {
        let secret = Secret::new(secret);
        let mut c = ImapConfig::new(
            &self.host,
            &self.user,
            match self.auth {
                AuthKind::Password => Credentials::Password(secret),
                AuthKind::Oauth2 => Credentials::OAuth2Token(secret),
            },
        );
        c.port = self.port;
        c.tls = self.tls;
        if let Some(f) = &self.ca_file {
            c.extra_roots_pem =
                Some(std::fs::read(f).map_err(|e| {
                    Error::io(format!("cannot read the CA file {}", f.display()), e)
                })?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_hold_no_secret() {
        let s = ImapSettings {
            host: "imap.example.com".into(),
            port: 993,
            user: "u".into(),
            tls: TlsMode::Implicit,
            auth: AuthKind::Password,
            ca_file: None,
        };
        let v = serde_json::to_string(&s).unwrap();
        assert_eq!(
            v,
            r#"{"host":"imap.example.com","port":993,"user":"u","tls":"implicit","auth":"password"}"#
        );
        let c = s.to_config("hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
