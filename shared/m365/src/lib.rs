//! The Microsoft 365 connector: Exchange Online mail, contacts, calendars and To Do,
//! OneDrive for Business, and SharePoint sites with all their sub-sites, read and written
//! through Microsoft Graph v1.0 with an app-only (client-credentials) token.
//!
//! Accounts are users (by user principal name) and sites (`site+<Graph site id>`). A user's
//! tree has `Mail/`, `Contacts/`, `Calendar/`, `Tasks/` and `OneDrive/`; a site's has
//! `Libraries/<library>/` and `Lists/<list>/`. Mail is stored as each message's MIME
//! (`.eml`), contacts as vCard, events and tasks as iCalendar, files as they are.
//!
//! A backup follows Graph's change tracking: per-folder delta for mail, contacts and To Do,
//! the drive delta feed for files. The cursor (this crate's own JSON, see
//! [`names::Cursor`]) keeps every folder's delta link, so a daily backup asks only for what
//! changed, and a run that is out of time pauses between pages with a cursor that goes on
//! from there.
//!
//! The crate is split the way the service is: a module per category ([`mail`],
//! [`contacts`], [`calendar`], [To Do](crate::todo), [`drive`] for OneDrive and document
//! libraries, [`sites`] for SharePoint sites and lists), each with its own backup, restore
//! and export format, so that a change to one category is made in one place; what the
//! categories share has modules of its own: the Graph client ([`client`]), the Outlook
//! pipeline that schedules a mailbox's requests ([`outlook`]), names and the cursor
//! ([`names`]), one backup run's state ([`run`]), the restore job's ([`restore`]) and the
//! export formats' common ground ([`formats`]).

pub mod calendar;
pub mod client;
pub mod contacts;
pub mod drive;
pub mod formats;
pub mod mail;
pub mod names;
pub mod outlook;
pub mod restore;
pub mod run;
pub mod sites;
pub mod todo;

use async_trait::async_trait;
use client::{Fail, Graph};
use domain::{AccountId, Service};
use engine::{
    AccountInfo, AccountTree, Connector, RestoreContent, SourceConfig, SourceRestore,
    SourceRestoreReport, TaskRecord,
};
use run::{Flow, Run};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The name of this connector in a task's [`SourceConfig`].
pub const SOURCE: &str = "m365";

/// A Microsoft 365 task's settings, stored with the task (the client secret is not here:
/// it is sealed with the task's key and handed to [`open`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M365Settings {
    /// The directory (tenant) id or a verified domain of the organisation.
    pub tenant_id: String,
    /// The application (client) id of the app registration.
    pub client_id: String,
    /// Graph's base URL; national clouds and tests set their own.
    #[serde(default = "default_graph")]
    pub graph_url: String,
    /// The identity platform's base URL.
    #[serde(default = "default_login")]
    pub login_url: String,
    /// Only users of these domains; every user when empty.
    ///
    /// SharePoint sites belong to the whole organisation, not to a domain (their host is
    /// the tenant's `*.sharepoint.com` whatever domains it has), so a task narrowed to some
    /// domains (one subsidiary of a group, say) takes no site unless [`Self::sites`] names
    /// it: an admin who chose a subsidiary's users does not expect every other team's
    /// sites in its backups. With `domains` empty, `sites` alone decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Only these SharePoint sites (full URLs); every site and sub-site when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Service limits to keep under, when not Graph's documented defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<client::Throttle>,
}

fn default_graph() -> String {
    "https://graph.microsoft.com".into()
}

fn default_login() -> String {
    "https://login.microsoftonline.com".into()
}

impl M365Settings {
    /// Settings with the default endpoints.
    pub fn new(tenant_id: &str, client_id: &str) -> Self {
        M365Settings {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            graph_url: default_graph(),
            login_url: default_login(),
            domains: Vec::new(),
            sites: Vec::new(),
            throttle: None,
        }
    }

    /// # Errors
    /// `Invalid`, naming the setting, when one cannot work.
    pub fn validate(&self) -> engine::Result<()> {
        let bad = |m: String| Err(engine::Error::Invalid(m));
        for (name, v) in [
            ("tenant id", &self.tenant_id),
            ("client id", &self.client_id),
        ] {
            if v.trim().is_empty() || v.contains(['/', '?', '#', ' ']) {
                return bad(format!("the {name} {v:?} is not valid"));
            }
        }
        for (name, v) in [
            ("Graph URL", &self.graph_url),
            ("login URL", &self.login_url),
        ] {
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return bad(format!("the {name} {v:?} must start with https://"));
            }
        }
        for d in &self.domains {
            if d.is_empty() || d.contains(['@', '/', ' ']) {
                return bad(format!("{d:?} is not a domain name"));
            }
        }
        for s in &self.sites {
            if sites::split_site_url(s).is_none() {
                return bad(format!("{s:?} is not a SharePoint site URL"));
            }
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

/// Opens the connector for a task's settings and its unsealed client secret.
///
/// # Errors
/// `Invalid` for settings that do not parse or validate, or a missing secret.
pub fn open(
    settings: &Value,
    secret: Option<Zeroizing<String>>,
) -> engine::Result<Arc<dyn Connector>> {
    Ok(Arc::new(M365Connector::new(settings, secret)?))
}

/// Opens Microsoft 365 tasks for whoever runs backups (an [`engine::Connectors`] that
/// knows this one source; a program with several sources dispatches to [`open`]).
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
                "task {} is a {} task, not Microsoft 365",
                task.name,
                task.source.kind()
            )));
        }
        open(&task.source.settings, secret)
    }
}

pub struct M365Connector {
    settings: M365Settings,
    g: Graph,
}

impl M365Connector {
    /// # Errors
    /// As [`open`].
    pub fn new(settings: &Value, secret: Option<Zeroizing<String>>) -> engine::Result<Self> {
        let settings: M365Settings = serde_json::from_value(settings.clone()).map_err(|e| {
            engine::Error::Invalid(format!("the Microsoft 365 settings are not valid: {e}"))
        })?;
        settings.validate()?;
        let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
            engine::Error::Invalid("a Microsoft 365 task needs the app's client secret".into())
        })?;
        let mut g = Graph::new(
            &settings.graph_url,
            &settings.login_url,
            &settings.tenant_id,
            &settings.client_id,
            secret,
        )?;
        if let Some(t) = settings.throttle {
            g.throttle = t;
        }
        Ok(M365Connector { settings, g })
    }

    pub fn settings(&self) -> &M365Settings {
        &self.settings
    }

    /// The Graph client, for callers that tune its retry policy.
    pub fn graph_mut(&mut self) -> &mut Graph {
        &mut self.g
    }

    fn in_domains(&self, upn: &str) -> bool {
        if self.settings.domains.is_empty() {
            return true;
        }
        let domain = upn.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.settings
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    async fn users(&self) -> engine::Result<Vec<AccountInfo>> {
        let mut out = Vec::new();
        let mut next = Some(
            self.g
                .url("/users?$select=id,userPrincipalName,mail,displayName&$top=999"),
        );
        while let Some(url) = next {
            let page = self.g.get_json(&url, None).await?;
            let value = page
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| Fail::Protocol("a users page without a value".into()))?;
            for u in value {
                let upn = u["userPrincipalName"].as_str().unwrap_or("");
                let oid = u["id"].as_str().unwrap_or("");
                if upn.is_empty() || oid.is_empty() || !self.in_domains(upn) {
                    continue;
                }
                let has_mail = u["mail"].as_str().is_some_and(|m| !m.is_empty());
                let has_drive = if has_mail {
                    true
                } else {
                    match self.g.get_json(&format!("/users/{oid}/drive"), None).await {
                        Ok(_) => true,
                        Err(f) if f.is_not_found() => false,
                        Err(f @ Fail::Denied { .. }) => {
                            tracing::warn!(error = %f, "a user's OneDrive is closed to the app; skipped");
                            false
                        }
                        Err(f) => return Err(f.into()),
                    }
                };
                if !has_mail && !has_drive {
                    continue;
                }
                let Ok(id) = AccountId::new(upn).or_else(|_| AccountId::new(oid)) else {
                    tracing::warn!("a user whose ids cannot be account ids; skipped");
                    continue;
                };
                let mut services = Vec::new();
                if has_mail {
                    services.extend([
                        Service::Mail,
                        Service::Contacts,
                        Service::Calendar,
                        Service::Tasks,
                    ]);
                }
                services.push(Service::Drive);
                out.push(AccountInfo {
                    id,
                    name: upn.to_string(),
                    services,
                });
            }
            next = page
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Ok(out)
    }

    async fn backup_user(&self, run: &mut Run<'_>, account: &AccountInfo) -> engine::Result<Flow> {
        run.mailbox = Some(run.key.clone());
        let has = |s: Service| account.services.is_empty() || account.services.contains(&s);
        let u = run.key.clone();
        let drive_url = format!("/users/{u}/drive?$select=id,name");
        let first: Vec<(String, bool)> = [
            (Service::Mail, mail::root(&u), true),
            (Service::Contacts, contacts::root(&u), true),
            (Service::Calendar, calendar::root(&u), true),
            (Service::Tasks, todo::root(&u), true),
            (Service::Drive, drive_url.clone(), false),
        ]
        .into_iter()
        .filter(|(s, _, _)| has(*s))
        .map(|(_, url, outlook)| (url, outlook))
        .collect();
        run.prefetch(&first).await;
        if has(Service::Mail) && outlook::backup(run, outlook::Kind::Mail).await? == Flow::Paused {
            return Ok(Flow::Paused);
        }
        if has(Service::Contacts)
            && outlook::backup(run, outlook::Kind::Contacts).await? == Flow::Paused
        {
            return Ok(Flow::Paused);
        }
        if has(Service::Calendar) && calendar::backup::calendars(run).await? == Flow::Paused {
            return Ok(Flow::Paused);
        }
        if has(Service::Tasks) && outlook::backup(run, outlook::Kind::Tasks).await? == Flow::Paused
        {
            return Ok(Flow::Paused);
        }
        if has(Service::Drive) {
            let asked = match run.take_prefetched(&drive_url) {
                Some(a) => a,
                None => self.g.get_json(&drive_url, None).await,
            };
            let d = match asked {
                Ok(d) => Some(d),
                Err(f) if f.is_not_found() => None,
                Err(f) => return Err(f.into()),
            };
            if let Some(d) = d {
                let r = drive::DriveRef {
                    id: d["id"].as_str().unwrap_or("").to_string(),
                    path: names::path(&[b"OneDrive"]),
                    name: d["name"].as_str().unwrap_or("OneDrive").to_string(),
                };
                if !r.id.is_empty() && drive::backup(run, &r).await? == Flow::Paused {
                    return Ok(Flow::Paused);
                }
            }
        }
        Ok(Flow::Done)
    }
}

#[async_trait]
impl Connector for M365Connector {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        let mut out = self.users().await?;
        if self.settings.domains.is_empty() || !self.settings.sites.is_empty() {
            out.extend(sites::accounts(&self.g, &self.settings.sites).await?);
        }
        Ok(out)
    }

    async fn backup(
        &self,
        account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let cur = names::Cursor::parse(cursor);
        let site = sites::site_id(account.id.as_str());
        let key = site.clone().unwrap_or_else(|| account.id.to_string());
        let mut run = Run::new(&self.g, tree, cur, key).await?;
        let flow = match site {
            Some(_) => sites::backup(&mut run).await,
            None => self.backup_user(&mut run, account).await,
        };
        let flow = match flow {
            Ok(f) => f,
            // Graph asked for more patience than this run has (a `Retry-After` beyond its
            // budget) or could not be reached, or it failed after this run stored content:
            // what is stored is kept as a checkpoint, and the next run goes on from it
            // rather than from the start. A failure that persists meets the next run before
            // it stores anything, and is then returned, so pausing cannot go on for ever.
            Err(e)
                if run.worked
                    && (e.is_retryable()
                        || (matches!(e.kind(), engine::ErrorKind::Source(_))
                            && run.tree.fetched_bytes() > 0)) =>
            {
                tracing::warn!(error = %e, "the backup stops here and goes on next run");
                run.tree.pause();
                Flow::Paused
            }
            Err(e) => return Err(e),
        };
        if flow == Flow::Done {
            run.cur.done.clear();
            // Anything still in staging belongs to a collection that no longer exists.
            let staging = names::path(&[names::STAGING.as_bytes()]);
            if run.tree.has_folder(&staging).await? {
                run.tree.remove(&staging).await?;
            }
        }
        let cur = std::mem::take(&mut run.cur);
        Ok(Some(
            serde_json::to_string(&cur).expect("the cursor serialises"),
        ))
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        restore::restore(&self.g, job, content).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_default_and_validate() {
        let s: M365Settings =
            serde_json::from_value(json!({"tenant_id": "t", "client_id": "c"})).unwrap();
        assert_eq!(s.graph_url, "https://graph.microsoft.com");
        assert!(s.validate().is_ok());
        let bad = M365Settings {
            graph_url: "ftp://x".into(),
            ..s.clone()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_value::<M365Settings>(json!({"tenant_id": "t"})).is_err());
        assert!(open(&json!({"tenant_id": "t", "client_id": "c"}), None).is_err());
        assert!(open(
            &json!({"tenant_id": "t", "client_id": "c"}),
            Some(Zeroizing::new("s".into()))
        )
        .is_ok());
    }
}
