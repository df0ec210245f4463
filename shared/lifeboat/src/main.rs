//! The `lifeboat` command: Lifeboat on one machine, with embedded storage under a home
//! folder (objects in a directory, the catalog in SQLite, a local master key). The same
//! engine runs on AWS; only the adapters differ.

mod demo;
mod demo_m365;
mod progress;
mod serve;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use domain::{escape, ItemPath, TaskId, TenantId};
use engine::{Engine, OnConflict, Ports, RestoreOptions, SourceConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use vault::{EntryKind, SnapshotRecord};

/// The tenant of a single-machine installation.
const LOCAL_TENANT: &str = "local";
/// Exit status when the work finished but some items could not be handled (as restic's 3).
const EXIT_PARTIAL: u8 = 3;
/// Exit status when `verify` finds damage.
const EXIT_DAMAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Back up and restore SaaS and local data, with every daily snapshot kept."
)]
struct Cli {
    /// Where Lifeboat keeps its data [default: $LIFEBOAT_HOME, else the platform data dir].
    #[arg(long, global = true, env = "LIFEBOAT_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// A selection of items by their metadata, for restores and exports of mail and the like.
#[derive(clap::Args, Debug, Default)]
struct Select {
    /// Only items whose sender contains this (any case).
    #[arg(long, value_name = "TEXT")]
    sender: Option<String>,
    /// Only items whose subject contains this (any case).
    #[arg(long, value_name = "TEXT")]
    subject: Option<String>,
    /// Only items of this day (UTC) or later.
    #[arg(long, value_name = "YYYY-MM-DD")]
    since: Option<chrono::NaiveDate>,
    /// Only items of this day (UTC) or earlier.
    #[arg(long, value_name = "YYYY-MM-DD")]
    until: Option<chrono::NaiveDate>,
}

impl Select {
    fn filter(self) -> domain::ItemFilter {
        domain::ItemFilter {
            sender: self.sender,
            subject: self.subject,
            since: self.since,
            until: self.until,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage backup tasks (connected sources).
    Task {
        #[command(subcommand)]
        cmd: TaskCmd,
    },
    /// Back up every account of a task, or one.
    Backup {
        task: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a task's snapshots, oldest first.
    Snapshots {
        task: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a folder of a snapshot.
    Ls {
        task: String,
        /// A snapshot id (or unique prefix), or `latest`.
        snapshot: String,
        path: Option<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a new "Lifeboat Restore <time>" folder (or in place): files
    /// into a local folder, mail back into its mailbox or another task's.
    Restore {
        task: String,
        #[arg(long)]
        snapshot: String,
        /// The local folder to restore files into (files tasks).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Restore into the source of this other task (another mailbox) instead of the
        /// task's own.
        #[arg(long, value_name = "TASK", conflicts_with = "to")]
        to_task: Option<String>,
        /// Restore into this account (another user, of this task or of --to-task's).
        #[arg(long, value_name = "ACCOUNT", conflicts_with = "to")]
        to_account: Option<String>,
        /// Restore only these paths (repeatable).
        #[arg(long, value_name = "PATH")]
        include: Vec<String>,
        /// Restore into DIR itself instead of a new labelled folder.
        #[arg(long)]
        in_place: bool,
        /// What an in-place restore does with items that exist.
        #[arg(long, value_enum, default_value = "skip", requires = "in_place")]
        on_conflict: Conflict,
        #[command(flatten)]
        select: Select,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Export a snapshot (or some paths of it) as a zip, or its mail as an mbox file.
    #[command(group(clap::ArgGroup::new("format").required(true).args(["zip", "mbox"])))]
    Export {
        task: String,
        #[arg(long)]
        snapshot: String,
        #[arg(long, value_name = "FILE")]
        zip: Option<PathBuf>,
        /// Every message (`.eml` item) as one mboxrd file.
        #[arg(long, value_name = "FILE")]
        mbox: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        include: Vec<String>,
        #[command(flatten)]
        select: Select,
        #[arg(long)]
        account: Option<String>,
    },
    /// Show what was added, changed and removed between two snapshots.
    Diff {
        task: String,
        snap_a: String,
        snap_b: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Read every stored object and check it; exit status 2 on any damage.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Delete this installation's tenant: its keys first, then all its data.
    DeleteTenant {
        /// Confirms that every backup is to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Serve the HTTP API (the same one Lifeboat runs on AWS), run queued jobs and the
    /// daily schedule, until stopped.
    Serve {
        /// Address to listen on (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Print a bearer token for the local API.
    Token {
        /// The tenant the token acts for.
        #[arg(long, default_value = LOCAL_TENANT)]
        tenant: String,
        /// How long the token stays valid.
        #[arg(long, default_value_t = 12)]
        hours: i64,
    },
    /// Run the local demo: a simulated Microsoft 365 organisation (or, with --files, a
    /// sample folder) backed up, changed, backed up again, browsed, restored and exported,
    /// every restore checked byte for byte.
    Demo {
        /// Where to put the demo's home, sample and restores [default: a new temp folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Demonstrate a local-folder task instead of Microsoft 365.
        #[arg(long)]
        files: bool,
    },
}

#[derive(Subcommand)]
enum TaskCmd {
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
enum AddSource {
    /// Back up a local folder as one account.
    Files { name: String, path: PathBuf },
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
enum Tls {
    Implicit,
    Starttls,
    /// No TLS: the password crosses the network in clear. For a local test server only.
    NoneForTests,
}

/// Reads a credential from the environment variable the user named.
fn secret_from_env(var: &str) -> Result<zeroize::Zeroizing<String>> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(zeroize::Zeroizing::new(v)),
        Ok(_) => bail!("the environment variable {var} is empty; set it to the credential"),
        Err(_) => bail!("the environment variable {var} is not set; set it to the credential"),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Conflict {
    Skip,
    Copy,
    Replace,
}

fn main() -> ExitCode {
    // Like any Unix tool, end quietly when the reader of our output goes away
    // (`lifeboat snapshots x | head`) instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: what failed and why, outermost context first.
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_home() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("lifeboat"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/lifeboat")),
        None => bail!("no home folder: pass --home DIR or set LIFEBOAT_HOME"),
    }
}

/// Opens (creating if needed) the embedded installation at `home`.
pub fn open_home(home: &Path) -> Result<Engine> {
    std::fs::create_dir_all(home)
        .with_context(|| format!("cannot create the Lifeboat home {}", home.display()))?;
    let store = embedded::FsObjectStore::new(home.join("objects"))
        .with_context(|| format!("cannot open the object store in {}", home.display()))?;
    let catalog = embedded::SqliteCatalog::open(home.join("catalog.db"))
        .with_context(|| format!("cannot open the catalog in {}", home.display()))?;
    let keys = embedded::FileKeyService::open(home.join("master.key"))
        .with_context(|| format!("cannot open the master key in {}", home.display()))?;
    let ports = Ports {
        store: Arc::new(store),
        catalog: Arc::new(catalog),
        keys: Arc::new(keys),
        clock: Arc::new(ports::SystemClock),
    };
    Ok(Engine::new(ports, TenantId::new(LOCAL_TENANT)?))
}

/// A path as the user typed it; names shown escaped (`caf\xe9.txt`) may be typed so.
fn parse_path(s: &str) -> Result<ItemPath> {
    Ok(ItemPath::parse(&domain::unescape(s)?)?)
}

/// The task and snapshot a command names (`latest`, an id or a unique prefix).
async fn task_and_snapshot(
    eng: &Engine,
    task: &str,
    snapshot: &str,
    account: &Option<String>,
) -> Result<(engine::TaskRecord, SnapshotRecord)> {
    let task = eng.task(task).await?;
    let snap = eng
        .resolve_snapshot(&task, snapshot, parse_account(account)?.as_ref())
        .await?;
    Ok((task, snap))
}

fn parse_account(a: &Option<String>) -> Result<Option<domain::AccountId>> {
    Ok(a.as_deref().map(domain::AccountId::new).transpose()?)
}

async fn run(cli: Cli) -> Result<u8> {
    if let Cmd::Demo { dir, files } = &cli.cmd {
        return demo::run(dir.clone(), *files).await;
    }
    let home = match cli.home {
        Some(h) => h,
        None => default_home()?,
    };
    let eng = open_home(&home)?;
    match cli.cmd {
        Cmd::Demo { .. } => unreachable!("handled above"),
        Cmd::Serve { listen } => {
            serve::serve(eng.ports().clone(), &home, &listen).await?;
            Ok(0)
        }
        Cmd::Token { tenant, hours } => {
            if hours <= 0 {
                bail!("--hours must be at least 1");
            }
            println!("{}", serve::token(&home, &tenant, hours)?);
            Ok(0)
        }
        Cmd::Task { cmd } => match cmd {
            TaskCmd::Add {
                source: AddSource::Files { name, path },
            } => {
                let path = std::fs::canonicalize(&path)
                    .with_context(|| format!("cannot use {} as a source", path.display()))?;
                if !path.is_dir() {
                    bail!(
                        "{} is not a folder; a files task backs up a folder",
                        path.display()
                    );
                }
                let t = eng
                    .add_task(
                        TaskId::new(name)?,
                        SourceConfig::Files { path: path.clone() },
                    )
                    .await?;
                println!("task {} added: backs up {}", t.name, path.display());
                Ok(0)
            }
            TaskCmd::Add {
                source:
                    AddSource::Imap {
                        name,
                        host,
                        port,
                        user,
                        password_env,
                        oauth_token_env,
                        tls,
                        ca_file,
                    },
            } => {
                let tls = match tls {
                    Tls::Implicit => imap_source::TlsMode::Implicit,
                    Tls::Starttls => imap_source::TlsMode::Starttls,
                    Tls::NoneForTests => imap_source::TlsMode::NoneForTests,
                };
                let (auth, var) = match (password_env, oauth_token_env) {
                    (Some(v), None) => (imap_source::AuthKind::Password, v),
                    (None, Some(v)) => (imap_source::AuthKind::Oauth2, v),
                    _ => bail!("give one of --password-env and --oauth-token-env"),
                };
                let secret = secret_from_env(&var)?;
                let ca_file = ca_file
                    .map(|f| {
                        std::fs::canonicalize(&f)
                            .with_context(|| format!("cannot use {} as a CA file", f.display()))
                    })
                    .transpose()?;
                let settings = imap_source::ImapSettings {
                    host,
                    port: port.unwrap_or(tls.default_port()),
                    user,
                    tls,
                    auth,
                    ca_file,
                };
                // Log in once now, so a wrong host, password or certificate shows here and
                // not at the first nightly backup.
                let cfg = settings.to_config(&secret)?;
                imap_source::ImapConnector::from_config(settings.clone(), cfg)
                    .check()
                    .await?;
                let t = eng
                    .add_task_with_secret(
                        TaskId::new(name)?,
                        settings.source_config(),
                        Some(&secret),
                    )
                    .await?;
                println!(
                    "task {} added: backs up the mailbox {} on {}:{}",
                    t.name, settings.user, settings.host, settings.port
                );
                Ok(0)
            }
            TaskCmd::Add {
                source:
                    AddSource::M365 {
                        name,
                        tenant_id,
                        client_id,
                        client_secret_env,
                        graph_url,
                        login_url,
                        domains,
                        sites,
                    },
            } => {
                let secret = secret_from_env(&client_secret_env)?;
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
                // Sign in and list the accounts now, so a wrong id, secret or permission
                // shows here and not at the first nightly backup.
                let connector =
                    m365::open(&serde_json::to_value(&settings)?, Some(secret.clone()))?;
                let accounts = connector.accounts().await?;
                let t = eng
                    .add_task_with_secret(TaskId::new(name)?, settings.to_source(), Some(&secret))
                    .await?;
                eng.refresh_accounts(&t, connector.as_ref()).await?;
                println!(
                    "task {} added: {} accounts (users and sites) of {}",
                    t.name,
                    accounts.len(),
                    settings.tenant_id
                );
                Ok(0)
            }
            TaskCmd::SetSecret { name, secret_env } => {
                let secret = secret_from_env(&secret_env)?;
                let task = eng.task(&name).await?;
                // Sign in with the new secret before it replaces the old one: a typo must
                // not stop tonight's backups.
                match task.source.kind() {
                    imap_source::connector::SOURCE => {
                        imap_source::ImapConnector::open(&task, Some(secret.clone()))?
                            .check()
                            .await?
                    }
                    "files" => bail!("task {name} reads a local folder and has no credential"),
                    _ => {
                        use engine::Connectors as _;
                        sources::BuiltIn
                            .open(&task, Some(secret.clone()))?
                            .accounts()
                            .await?;
                    }
                }
                eng.replace_secret(&name, &secret).await?;
                println!("task {name}: credential replaced (checked by signing in)");
                Ok(0)
            }
            TaskCmd::List { json } => {
                let tasks = eng.tasks().await?;
                if json {
                    let v: Vec<_> = tasks
                        .iter()
                        .map(|t| {
                            // The settings only: the sealed credential stays out of listings.
                            let source = match &t.source {
                                SourceConfig::Files { path } => serde_json::json!({"path": path}),
                                SourceConfig::Source { settings, .. } => settings.clone(),
                            };
                            serde_json::json!({"name": t.name, "kind": t.source.kind(), "source": source, "created_at": t.created_at, "backup_hour_utc": t.backup_hour})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for t in tasks {
                        match &t.source {
                            SourceConfig::Files { path } => {
                                println!("{}\tfiles\t{}", t.name, path.display())
                            }
                            SourceConfig::Source { source, .. } => {
                                println!("{}\t{source}", t.name)
                            }
                        }
                    }
                }
                Ok(0)
            }
        },
        Cmd::Backup {
            task,
            account,
            json,
        } => {
            let task = eng.task(&task).await?;
            let accounts = match parse_account(&account)? {
                Some(a) => vec![a],
                None => eng.current_accounts(&task, &sources::BuiltIn).await?,
            };
            let mut code = 0;
            let mut out = Vec::new();
            for a in accounts {
                let bar = progress::Bar::bytes(&format!("backup {}/{a}", task.name));
                let snap = eng.backup_any(&task, &a, &sources::BuiltIn, &bar).await?;
                bar.finish();
                if snap.error_count > 0 {
                    code = EXIT_PARTIAL;
                }
                if json {
                    out.push(snapshot_json(&snap));
                } else {
                    print_backup(&task.name, &snap);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(code)
        }
        Cmd::Snapshots {
            task,
            account,
            json,
        } => {
            let task = eng.task(&task).await?;
            let mut snaps = eng.snapshots(&task).await?;
            if let Some(a) = parse_account(&account)? {
                snaps.retain(|s| s.account == a);
            }
            if json {
                let v: Vec<_> = snaps.iter().map(snapshot_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<27} {:<20} {:<10} {:>8} {:>12}",
                    "ID", "TAKEN (UTC)", "ACCOUNT", "ITEMS", "BYTES"
                );
                for s in snaps {
                    println!(
                        "{:<27} {:<20} {:<10} {:>8} {:>12}",
                        s.id,
                        s.taken_at.format("%Y-%m-%d %H:%M:%S"),
                        s.account,
                        s.stats.items,
                        s.stats.bytes
                    );
                }
            }
            Ok(0)
        }
        Cmd::Ls {
            task,
            snapshot,
            path,
            account,
            json,
        } => {
            let (task, snap) = task_and_snapshot(&eng, &task, &snapshot, &account).await?;
            let path = parse_path(path.as_deref().unwrap_or(""))?;
            let entries = eng.list(&task, &snap, &path).await?;
            if json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| serde_json::json!({
                        "name": escape(&e.name),
                        "kind": match e.kind { EntryKind::File => "file", EntryKind::Dir => "folder", EntryKind::Symlink => "link" },
                        "size": e.size,
                        "modified": chrono::DateTime::from_timestamp_nanos(e.mtime_ns),
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in entries {
                    let t = chrono::DateTime::from_timestamp_nanos(e.mtime_ns);
                    let name = match e.kind {
                        EntryKind::Dir => format!("{}/", escape(&e.name)),
                        EntryKind::Symlink => format!(
                            "{} -> {}",
                            escape(&e.name),
                            escape(e.link.as_deref().unwrap_or_default())
                        ),
                        EntryKind::File => escape(&e.name),
                    };
                    println!("{:>12}  {}  {name}", e.size, t.format("%Y-%m-%d %H:%M"));
                }
            }
            Ok(0)
        }
        Cmd::Restore {
            task,
            snapshot,
            to,
            to_task,
            to_account,
            include,
            in_place,
            on_conflict,
            select,
            account,
            json,
        } => {
            let (task, snap) = task_and_snapshot(&eng, &task, &snapshot, &account).await?;
            let filter = select.filter();
            let opts = RestoreOptions {
                include: include
                    .iter()
                    .map(|p| parse_path(p))
                    .collect::<Result<_>>()?,
                in_place,
                on_conflict: match on_conflict {
                    Conflict::Skip => OnConflict::Skip,
                    Conflict::Copy => OnConflict::Copy,
                    Conflict::Replace => OnConflict::Replace,
                },
                label: String::new(),
                at: None,
                filter,
            };
            if let SourceConfig::Source { .. } = &task.source {
                return restore_to_source(&eng, &task, &snap, to_task, to_account, &opts, json)
                    .await;
            }
            if to_task.is_some() || to_account.is_some() {
                bail!(
                    "task {} backs up a local folder; restore it with --to DIR",
                    task.name
                );
            }
            if !opts.filter.is_empty() {
                bail!(
                    "--sender, --subject, --since and --until select mail and the like; task {} backs up a local folder: choose with --include",
                    task.name
                );
            }
            let Some(to) = to else {
                bail!("give --to DIR: the folder to restore into");
            };
            let bar = progress::Bar::bytes("restore");
            let report = eng.restore_to_dir(&task, &snap, &to, &opts, &bar).await?;
            bar.finish();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "restored snapshot {} into {}: {} files, {} folders, {} bytes{}{}",
                    snap.id,
                    report.target.display(),
                    report.files,
                    report.folders,
                    report.bytes,
                    if report.skipped > 0 {
                        format!(", {} skipped (exist)", report.skipped)
                    } else {
                        String::new()
                    },
                    if report.copies > 0 {
                        format!(
                            ", {} restored as copies beside existing items",
                            report.copies
                        )
                    } else {
                        String::new()
                    },
                );
                for e in &report.errors {
                    eprintln!("lifeboat: {e}");
                }
            }
            Ok(if report.errors.is_empty() {
                0
            } else {
                EXIT_PARTIAL
            })
        }
        Cmd::Export {
            task,
            snapshot,
            zip,
            mbox,
            include,
            select,
            account,
        } => {
            let (task, snap) = task_and_snapshot(&eng, &task, &snapshot, &account).await?;
            let include: Vec<ItemPath> = include
                .iter()
                .map(|p| parse_path(p))
                .collect::<Result<_>>()?;
            let filter = select.filter();
            if let Some(mbox) = mbox {
                if !filter.is_empty() {
                    bail!("--sender, --subject, --since and --until narrow a zip export (--zip FILE), not an mbox; select the mbox's folders with --include");
                }
                let r = imap_source::mbox::export_mbox(&eng, &task, &snap, &mbox, &include).await?;
                println!(
                    "exported snapshot {} to {}: {} messages, {} bytes",
                    snap.id,
                    mbox.display(),
                    r.messages,
                    r.bytes
                );
                return Ok(0);
            }
            let Some(zip) = zip else {
                bail!("give --zip FILE or --mbox FILE");
            };
            let bar = progress::Bar::bytes("export");
            let r = eng
                .export_zip_selected(&task, &snap, &zip, &include, &filter, &bar)
                .await?;
            bar.finish();
            println!(
                "exported snapshot {} to {}: {} files, {} folders, {} bytes",
                snap.id,
                zip.display(),
                r.files,
                r.folders,
                r.bytes
            );
            Ok(0)
        }
        Cmd::Diff {
            task,
            snap_a,
            snap_b,
            account,
            json,
        } => {
            let task = eng.task(&task).await?;
            let acc = parse_account(&account)?;
            let a = eng.resolve_snapshot(&task, &snap_a, acc.as_ref()).await?;
            let b = eng.resolve_snapshot(&task, &snap_b, acc.as_ref()).await?;
            let changes = eng.diff(&task, &a, &b).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&changes)?);
            } else {
                for c in &changes {
                    let sign = match c.kind {
                        engine::ChangeKind::Added => '+',
                        engine::ChangeKind::Changed => 'M',
                        engine::ChangeKind::Removed => '-',
                    };
                    println!("{sign} {}", c.path);
                }
                let count = |k| changes.iter().filter(|c| c.kind == k).count();
                println!(
                    "{} added, {} changed, {} removed",
                    count(engine::ChangeKind::Added),
                    count(engine::ChangeKind::Changed),
                    count(engine::ChangeKind::Removed)
                );
            }
            Ok(0)
        }
        Cmd::Verify { json } => {
            let mut all_ok = true;
            let mut out = Vec::new();
            for task in eng.tasks().await? {
                let vault = eng.vault(&task).await?;
                let accounts = eng.accounts(&task).await?;
                let bar = progress::Bar::bytes(&format!("verify {}", task.name));
                let report = vault.verify(&accounts, &|n| bar.inc(n)).await?;
                bar.finish();
                all_ok &= report.is_ok();
                if json {
                    out.push(serde_json::json!({
                        "task": task.name,
                        "packs": report.packs,
                        "blobs": report.blobs,
                        "bytes": report.bytes,
                        "snapshots": report.snapshots,
                        "damage": report.damage.iter().map(|d| serde_json::json!({"object": d.object, "problem": d.problem, "affects": d.affects})).collect::<Vec<_>>(),
                    }));
                } else {
                    println!(
                        "task {}: {} packs, {} blobs, {} bytes, {} snapshots checked: {}",
                        task.name,
                        report.packs,
                        report.blobs,
                        report.bytes,
                        report.snapshots,
                        if report.is_ok() {
                            "no damage".to_string()
                        } else {
                            format!("{} damaged objects", report.damage.len())
                        }
                    );
                    for d in &report.damage {
                        println!("  DAMAGED {}: {}", d.object, d.problem);
                        for a in &d.affects {
                            println!("    affects {a}");
                        }
                        if d.affects.is_empty() {
                            println!("    affects no snapshot");
                        }
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(if all_ok { 0 } else { EXIT_DAMAGE })
        }
        Cmd::DeleteTenant { yes } => {
            if !yes {
                bail!(
                    "this destroys every backup in {}; run again with --yes to confirm",
                    home.display()
                );
            }
            eng.delete_tenant().await?;
            println!("tenant deleted: its keys are destroyed and its data removed");
            Ok(0)
        }
    }
}

/// Restores a connector task's snapshot into its source (or another task's), in a new
/// labelled folder unless in place.
async fn restore_to_source(
    eng: &Engine,
    task: &engine::TaskRecord,
    snap: &SnapshotRecord,
    to_task: Option<String>,
    to_account: Option<String>,
    opts: &RestoreOptions,
    json: bool,
) -> Result<u8> {
    let dest = match &to_task {
        Some(name) => eng.task(name).await?,
        None => task.clone(),
    };
    if dest.source.kind() != task.source.kind() {
        bail!(
            "task {} is a {} task and cannot receive {} items",
            dest.name,
            dest.source.kind(),
            task.source.kind()
        );
    }
    let to = match (&to_account, &to_task) {
        (Some(a), _) => {
            let known = eng.account_infos(&dest).await?;
            let Some(found) = known.into_iter().find(|k| k.id.as_str() == a) else {
                bail!(
                    "task {} has no account {a}; `lifeboat --home … snapshots {}` lists those backed up",
                    dest.name,
                    dest.name
                );
            };
            Some(found.id)
        }
        (None, Some(_)) => eng
            .account_infos(&dest)
            .await?
            .into_iter()
            .next()
            .map(|a| a.id),
        (None, None) => None,
    };
    let connector = eng.connector(&dest, &sources::BuiltIn).await?;
    let report = eng
        .restore_to_source(task, snap, to, opts, connector.as_ref())
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored snapshot {} into {} of task {}: {} items, {} folders, {} bytes",
            snap.id, report.target, dest.name, report.items, report.folders, report.bytes
        );
        for e in &report.errors {
            eprintln!("lifeboat: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn snapshot_json(s: &SnapshotRecord) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "account": s.account,
        "taken_at": s.taken_at,
        "parent": s.parent,
        "stats": s.stats,
        "error_count": s.error_count,
        "errors": s.errors,
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

fn print_backup(task: &TaskId, s: &SnapshotRecord) {
    let st = &s.stats;
    println!(
        "snapshot {} of {task}/{}: {} items ({} read), {} folders, {} bytes; stored {} new bytes in {} blobs, {} packs",
        s.id, s.account, st.items, st.items_read, st.folders, st.bytes, st.stored_bytes, st.new_blobs, st.packs_written
    );
    if s.error_count > 0 {
        eprintln!("lifeboat: {} items had problems:", s.error_count);
        for e in &s.errors {
            eprintln!("  {}: {}", e.path, e.message);
        }
        if s.error_count as usize > s.errors.len() {
            eprintln!("  … and {} more", s.error_count as usize - s.errors.len());
        }
    }
}
