//! The Google connector (connector `google`): a Google Workspace signed in to through its
//! service account with domain-wide delegation, or one personal Google account signed in
//! to through the refresh token its owner's consent gave.
//!
//! Accounts are the Workspace's users from the Directory API (suspended users are left
//! out: Google refuses to impersonate them, and they are not billed), or the personal
//! account itself. This first slice backs up Gmail ([`gmail`]): every message as its raw
//! RFC 822 bytes under `Mail/<message id>.eml`, labels as metadata, incrementally by
//! history ids. Drive, Calendar, Contacts and Tasks, and every restore, come later; a
//! restore asked of this connector now is refused with a message saying so.
//!
//! The cursor is this crate's own versioned JSON ([`Cursor`]): per service, where its
//! change tracking stands and which items failed and must be fetched again.

pub mod auth;
pub mod client;
pub mod gmail;

use async_trait::async_trait;
use auth::{Credential, RefreshSecret, ServiceAccountKey, Tokens};
use client::{Fail, Google, Method, Quota, RetryPolicy, Who};
use domain::{AccountId, Service};
use engine::{
    AccountInfo, AccountTree, Connector, RestoreContent, SourceConfig, SourceRestore,
    SourceRestoreReport, TaskRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The name of this connector in a task's [`SourceConfig`].
pub const SOURCE: &str = "google";

/// Read-only scopes a backup asks for: the administrator delegates exactly these.
pub const SCOPE_GMAIL_READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";
pub const SCOPE_DIRECTORY_USERS_READONLY: &str =
    "https://www.googleapis.com/auth/admin.directory.user.readonly";

/// A Google task's settings, stored with the task. The credential is not here: a
/// Workspace's service account key file, or a personal account's `{"client_secret",
/// "refresh_token"}`, is sealed with the task's key and handed to [`open`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    /// A Workspace: the administrator impersonated to list the users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    /// Only users of these domains of the Workspace; every user when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// A personal account: the OAuth client id of the app its owner consented to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default = "default_token_url")]
    pub token_url: String,
    #[serde(default = "default_gmail_url")]
    pub gmail_url: String,
    #[serde(default = "default_directory_url")]
    pub directory_url: String,
    /// Retries when Google throttles or fails, when not the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Gmail's per-user quota, when not the documented 15,000 units a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

fn default_token_url() -> String {
    "https://oauth2.googleapis.com/token".into()
}

fn default_gmail_url() -> String {
    "https://gmail.googleapis.com".into()
}

fn default_directory_url() -> String {
    "https://admin.googleapis.com".into()
}

impl GoogleSettings {
    /// A Workspace task's settings with Google's endpoints.
    pub fn workspace(admin_email: &str) -> Self {
        GoogleSettings {
            admin_email: Some(admin_email.to_string()),
            domains: Vec::new(),
            client_id: None,
            token_url: default_token_url(),
            gmail_url: default_gmail_url(),
            directory_url: default_directory_url(),
            retry: None,
            quota: None,
        }
    }

    /// A personal account's settings with Google's endpoints.
    pub fn personal(client_id: &str) -> Self {
        GoogleSettings {
            admin_email: None,
            client_id: Some(client_id.to_string()),
            ..Self::workspace("")
        }
    }

    /// # Errors
    /// `Invalid`, naming the setting, when one cannot work.
    pub fn validate(&self) -> engine::Result<()> {
        let bad = |m: String| Err(engine::Error::Invalid(m));
        match (&self.admin_email, &self.client_id) {
            (Some(a), None) if a.contains('@') && !a.contains(['/', ' ']) => {}
            (Some(_), None) => return bad("the administrator must be an email address".into()),
            (None, Some(c)) if !c.trim().is_empty() => {}
            _ => {
                return bad(
                    "a Google task is either a Workspace (admin_email) or a personal account (client_id)"
                        .into(),
                )
            }
        }
        for (name, v) in [
            ("token URL", &self.token_url),
            ("Gmail URL", &self.gmail_url),
            ("Directory URL", &self.directory_url),
        ] {
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return bad(format!("the {name} {v:?} must start with https://"));
            }
        }
        for d in &self.domains {
            if d.is_empty() || d.contains(['@', '/', ' ', '&', '?']) {
                return bad(format!("{d:?} is not a domain name"));
            }
        }
        if self.retry.is_some_and(|r| r.attempts == 0) {
            return bad("retries need at least one attempt".into());
        }
        if self.quota.is_some_and(|q| q.window_ms == 0) {
            return bad("the quota window cannot be empty".into());
        }
        Ok(())
    }

    /// The settings as stored in a task.
    pub fn to_source(&self) -> SourceConfig {
        SourceConfig::new(
            SOURCE,
            serde_json::to_value(self).expect("settings serialise"),
        )
    }
}

/// Where every service of one account stands (this crate's cursor, versioned).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub v: u32,
    #[serde(default)]
    pub gmail: gmail::GmailCursor,
}

const CURSOR_VERSION: u32 = 1;

impl Cursor {
    /// The cursor a backup returned, or a fresh one. One this build cannot read (another
    /// version, damage) starts over with a full listing, which fetches nothing stored.
    pub fn parse(text: Option<&str>) -> Cursor {
        let fresh = Cursor {
            v: CURSOR_VERSION,
            ..Cursor::default()
        };
        match text.map(serde_json::from_str::<Cursor>) {
            Some(Ok(c)) if c.v == CURSOR_VERSION => c,
            Some(_) => {
                tracing::warn!("a Google cursor this build cannot read; listing again");
                fresh
            }
            None => fresh,
        }
    }
}

/// Opens the connector for a task's settings and its unsealed credential.
///
/// # Errors
/// `Invalid` for settings that do not parse or validate, or a missing or unusable secret.
pub fn open(
    settings: &Value,
    secret: Option<Zeroizing<String>>,
) -> engine::Result<Arc<dyn Connector>> {
    Ok(Arc::new(GoogleConnector::new(settings, secret)?))
}

/// Opens Google tasks (an [`engine::Connectors`] that knows this one source).
pub struct Opener;

impl engine::Connectors for Opener {
    fn offers(&self, connector: &str) -> bool {
        connector == SOURCE
    }

    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        if task.source.kind() != SOURCE {
            return Err(engine::Error::Invalid(format!(
                "task {} is a {} task, not Google",
                task.name,
                task.source.kind()
            )));
        }
        open(&task.source.settings, secret)
    }
}

pub struct GoogleConnector {
    settings: GoogleSettings,
    g: Google,
}

impl GoogleConnector {
    /// # Errors
    /// As [`open`].
    pub fn new(settings: &Value, secret: Option<Zeroizing<String>>) -> engine::Result<Self> {
        let settings: GoogleSettings = serde_json::from_value(settings.clone()).map_err(|e| {
            engine::Error::Invalid(format!("the Google settings are not valid: {e}"))
        })?;
        settings.validate()?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            engine::Error::Invalid(
                "a Google task needs its service account key or its refresh token".into(),
            )
        })?;
        let cred = match &settings.client_id {
            None => Credential::ServiceAccount(Box::new(
                ServiceAccountKey::from_json(&secret).map_err(engine::Error::Invalid)?,
            )),
            Some(client_id) => {
                let s = RefreshSecret::from_json(&secret).ok_or_else(|| {
                    engine::Error::Invalid(
                        "a personal Google account's secret is {\"client_secret\", \"refresh_token\"}"
                            .into(),
                    )
                })?;
                Credential::Refresh {
                    client_id: client_id.clone(),
                    client_secret: s.client_secret,
                    refresh_token: s.refresh_token,
                }
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| engine::Error::Invalid(format!("cannot build an HTTP client: {e}")))?;
        let tokens = Tokens::new(http.clone(), &settings.token_url, cred);
        let mut g = Google::new(http, tokens, &settings.token_url);
        if let Some(r) = settings.retry {
            g.policy = r;
        }
        if let Some(q) = settings.quota {
            g.quota = q;
        }
        Ok(GoogleConnector { settings, g })
    }

    pub fn settings(&self) -> &GoogleSettings {
        &self.settings
    }

    /// The Workspace's users, from the Directory API as the administrator sees them.
    async fn workspace_users(&self, admin: &str) -> engine::Result<Vec<AccountInfo>> {
        let who = Who {
            user: admin.to_string(),
            scopes: SCOPE_DIRECTORY_USERS_READONLY,
        };
        let root = format!(
            "{}/admin/directory/v1/users",
            self.settings.directory_url.trim_end_matches('/')
        );
        let scopes: Vec<String> = if self.settings.domains.is_empty() {
            vec!["customer=my_customer".into()]
        } else {
            self.settings
                .domains
                .iter()
                .map(|d| format!("domain={d}"))
                .collect()
        };
        let mut out = Vec::new();
        let mut suspended = 0usize;
        for scope in scopes {
            let mut page: Option<String> = None;
            loop {
                let mut url = format!("{root}?{scope}&maxResults=500");
                if let Some(p) = &page {
                    url.push_str(&format!("&pageToken={}", enc(p)));
                }
                let v = self.g.get_json(&who, Method::Directory, &url).await?;
                for u in v["users"].as_array().into_iter().flatten() {
                    let email = u["primaryEmail"].as_str().unwrap_or("").to_lowercase();
                    if email.is_empty() {
                        continue;
                    }
                    if u["suspended"].as_bool() == Some(true) {
                        suspended += 1;
                        continue;
                    }
                    let Ok(id) = AccountId::new(&email) else {
                        tracing::warn!("a user whose address cannot be an account id; skipped");
                        continue;
                    };
                    out.push(AccountInfo {
                        id,
                        name: email,
                        services: vec![Service::Mail],
                    });
                }
                match v["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
                    Some(t) => page = Some(t.to_string()),
                    None => break,
                }
            }
        }
        if suspended > 0 {
            tracing::info!(suspended, "suspended users are not backed up");
        }
        Ok(out)
    }

    /// The personal account: the address of the refresh token's owner.
    async fn personal_account(&self) -> engine::Result<Vec<AccountInfo>> {
        let who = Who {
            user: "me".into(),
            scopes: SCOPE_GMAIL_READONLY,
        };
        let url = format!(
            "{}/gmail/v1/users/me/profile",
            self.settings.gmail_url.trim_end_matches('/')
        );
        let p = self.g.get_json(&who, Method::Profile, &url).await?;
        let email = p["emailAddress"].as_str().unwrap_or("").to_lowercase();
        let id = AccountId::new(&email).map_err(|_| {
            engine::Error::from(Fail::Protocol(
                "Gmail's profile has no usable address".into(),
            ))
        })?;
        Ok(vec![AccountInfo {
            id,
            name: email,
            services: vec![Service::Mail],
        }])
    }
}

#[async_trait]
impl Connector for GoogleConnector {
    /// Lists the accounts, then, for a Workspace, asks for a Gmail token of the first
    /// user: a service account whose Gmail scope was not delegated shows when the task
    /// is added, not at the first backup.
    async fn check(&self) -> engine::Result<()> {
        let accounts = self.accounts().await?;
        if let (Some(_), Some(first)) = (&self.settings.admin_email, accounts.first()) {
            self.g
                .tokens
                .get(first.id.as_str(), SCOPE_GMAIL_READONLY)
                .await?;
        }
        Ok(())
    }

    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        match &self.settings.admin_email {
            Some(admin) => self.workspace_users(admin).await,
            None => self.personal_account().await,
        }
    }

    async fn backup(
        &self,
        account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let mut cur = Cursor::parse(cursor);
        let who = Who {
            // A personal account's token is the refresh token's whatever the user; the
            // address still keys the quota pace.
            user: account.id.to_string(),
            scopes: SCOPE_GMAIL_READONLY,
        };
        let has_mail = account.services.is_empty() || account.services.contains(&Service::Mail);
        if has_mail {
            gmail::Run::new(&self.g, who, &self.settings.gmail_url, tree, &mut cur.gmail)
                .backup()
                .await?;
        }
        Ok(Some(
            serde_json::to_string(&cur).expect("the cursor serialises"),
        ))
    }

    async fn restore(
        &self,
        _job: &SourceRestore,
        _content: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        Err(engine::Error::Invalid(
            "restoring into Google is not available yet; export the snapshot or restore it to a folder"
                .into(),
        ))
    }
}

/// Percent-encodes a query value.
fn enc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_a_workspace_or_a_personal_account() {
        assert!(GoogleSettings::workspace("admin@example.com")
            .validate()
            .is_ok());
        assert!(
            GoogleSettings::personal("client.apps.googleusercontent.com")
                .validate()
                .is_ok()
        );
        let both = GoogleSettings {
            client_id: Some("c".into()),
            ..GoogleSettings::workspace("admin@example.com")
        };
        assert!(both.validate().is_err());
        assert!(GoogleSettings::workspace("admin").validate().is_err());
        let s: GoogleSettings = serde_json::from_value(json!({"admin_email": "a@b.c"})).unwrap();
        assert_eq!(s.token_url, "https://oauth2.googleapis.com/token");
        assert!(open(&json!({"admin_email": "a@b.c"}), None).is_err());
        assert!(open(
            &json!({"admin_email": "a@b.c"}),
            Some(Zeroizing::new("{}".into()))
        )
        .is_err());
    }

    #[test]
    fn a_cursor_of_another_version_starts_over() {
        let c = Cursor::parse(Some(
            r#"{"v":1,"gmail":{"history_id":"42","failed":["a"]}}"#,
        ));
        assert_eq!(c.gmail.history_id.as_deref(), Some("42"));
        assert!(c.gmail.failed.contains("a"));
        let c = Cursor::parse(Some(r#"{"v":9,"gmail":{"history_id":"42"}}"#));
        assert_eq!(c.gmail.history_id, None);
        assert_eq!(Cursor::parse(Some("garbage")).v, CURSOR_VERSION);
    }
}
