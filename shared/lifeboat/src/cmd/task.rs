//! `lifeboat task`: add a task (each connector has its own settings), list them, replace a
//! credential. Adding and replacing sign in first, so that a wrong host, secret or
//! permission shows now and not at the first nightly backup.

use crate::home::{print_json, secret_from_env};
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use connectors::BuiltIn;
use domain::TaskId;
use engine::{Engine, NewTask, SourceConfig, TaskView};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Add a task.
    Add {
        #[command(subcommand)]
        source: AddSource,
    },
    /// List tasks.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace a task's credential (a renewed client secret, a changed password or token):
    /// checked by signing in first, then sealed with the task's key in place of the old.
    SetSecret {
        name: String,
        /// The environment variable that holds the new secret.
        #[arg(long, value_name = "VAR")]
        secret_env: String,
    },
}

#[derive(Subcommand)]
pub enum AddSource {
    /// Back up a local folder as one account.
    #[command(alias = "files")]
    Folder { name: String, path: PathBuf },
    /// Back up a mailbox over IMAP (Gmail, Yahoo Mail, any server) as one account.
    #[command(group(clap::ArgGroup::new("credential").required(true).args(["password_env", "oauth_token_env"])))]
    Imap {
        name: String,
        #[arg(long)]
        host: String,
        /// [default: 993 with implicit TLS, else 143]
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        user: String,
        /// The environment variable that holds the password (an app password for Gmail
        /// and Yahoo). The password is sealed with the task's key, never stored in clear.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The environment variable that holds an OAuth 2 access token (XOAUTH2).
        #[arg(long, value_name = "VAR")]
        oauth_token_env: Option<String>,
        #[arg(long, value_enum, default_value = "implicit")]
        tls: Tls,
        /// A PEM file of CA certificates to trust besides the public roots.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Back up a Microsoft 365 organisation (mail, contacts, calendars, To Do, OneDrive,
    /// SharePoint sites): every user and site is an account.
    M365 {
        name: String,
        /// The directory (tenant) id or a verified domain of the organisation.
        #[arg(long)]
        tenant_id: String,
        /// The application (client) id of the app registration.
        #[arg(long)]
        client_id: String,
        /// The environment variable that holds the app's client secret. It is sealed with
        /// the task's key, never stored in clear.
        #[arg(long, value_name = "VAR")]
        client_secret_env: String,
        /// Graph's base URL (national clouds, a simulator).
        #[arg(long, value_name = "URL")]
        graph_url: Option<String>,
        /// The identity platform's base URL.
        #[arg(long, value_name = "URL")]
        login_url: Option<String>,
        /// Only users of this domain (repeatable); every user when absent. SharePoint
        /// sites belong to no domain: with a domain, only the sites named by `--sites`.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Only this SharePoint site (repeatable, full URL); every site when absent.
        #[arg(long = "sites", value_name = "URL")]
        sites: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Tls {
    Implicit,
    Starttls,
    /// No TLS: the password crosses the network in clear. For a local test server only.
    NoneForTests,
}

/// A task to add, as the command line describes it: its name, source and credential, and
/// how to tell the user what it protects.
struct Adding {
    name: String,
    source: SourceConfig,
    secret: Option<Zeroizing<String>>,
    what: String,
}

fn adding(source: AddSource) -> Result<Adding> {
    Ok(match source {
        AddSource::Folder { name, path } => {
            let settings = folder::FolderSettings::new(&path)?;
            Adding {
                name,
                what: format!("backs up {}", settings.path.display()),
                source: settings.to_source(),
                secret: None,
            }
        }
        AddSource::Imap {
            name,
            host,
            port,
            user,
            password_env,
            oauth_token_env,
            tls,
            ca_file,
        } => {
            let tls = match tls {
                Tls::Implicit => imap::TlsMode::Implicit,
                Tls::Starttls => imap::TlsMode::Starttls,
                Tls::NoneForTests => imap::TlsMode::NoneForTests,
            };
            let (auth, var) = match (password_env, oauth_token_env) {
                (Some(v), None) => (imap::AuthKind::Password, v),
                (None, Some(v)) => (imap::AuthKind::Oauth2, v),
                _ => bail!("give one of --password-env and --oauth-token-env"),
            };
            let ca_file = ca_file
                .map(|f| {
                    std::fs::canonicalize(&f)
                        .with_context(|| format!("cannot use {} as a CA file", f.display()))
                })
                .transpose()?;
            let settings = imap::ImapSettings {
                host,
                port: port.unwrap_or(tls.default_port()),
                user,
                tls,
                auth,
                ca_file,
            };
            Adding {
                name,
                what: format!(
                    "backs up the mailbox {} on {}:{}",
                    settings.user, settings.host, settings.port
                ),
                source: settings.source_config(),
                secret: Some(secret_from_env(&var)?),
            }
        }
        AddSource::M365 {
            name,
            tenant_id,
            client_id,
            client_secret_env,
            graph_url,
            login_url,
            domains,
            sites,
        } => {
            let mut settings = m365::M365Settings::new(&tenant_id, &client_id);
            if let Some(u) = graph_url {
                settings.graph_url = u;
            }
            if let Some(u) = login_url {
                settings.login_url = u;
            }
            settings.domains = domains;
            settings.sites = sites;
            settings.validate()?;
            Adding {
                name,
                what: format!("backs up the users and sites of {}", settings.tenant_id),
                source: settings.to_source(),
                secret: Some(secret_from_env(&client_secret_env)?),
            }
        }
    })
}

pub async fn run(eng: &Engine, cmd: TaskCmd) -> Result<u8> {
    match cmd {
        TaskCmd::Add { source } => {
            let a = adding(source)?;
            let t = eng
                .add_task(
                    NewTask {
                        name: TaskId::new(a.name)?,
                        source: a.source,
                        secret: a.secret,
                        backup_hour: None,
                    },
                    &BuiltIn,
                )
                .await?;
            println!("task {} added: {}", t.name, a.what);
        }
        TaskCmd::SetSecret { name, secret_env } => {
            let secret = secret_from_env(&secret_env)?;
            eng.replace_secret(&name, &secret, &BuiltIn).await?;
            println!("task {name}: credential replaced (checked by signing in)");
        }
        TaskCmd::List { json } => {
            let tasks: Vec<TaskView> = eng.tasks().await?.iter().map(TaskView::from).collect();
            if json {
                print_json(&tasks)?;
            } else {
                for t in tasks {
                    println!("{}\t{}\t{}", t.name, t.kind, t.settings);
                }
            }
        }
    }
    Ok(0)
}
