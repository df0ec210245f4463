//! The embedded installation under a home folder, and what every command parses the same
//! way: paths, accounts, the task and snapshot a command names, credentials, selections.

use anyhow::{bail, Context, Result};
use domain::{AccountId, ItemPath, TenantId};
use engine::{Engine, Ports, SnapshotRecord, TaskRecord};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tenant of a single-machine installation.
pub const LOCAL_TENANT: &str = "local";

/// `$XDG_DATA_HOME/lifeboat`, else `~/.local/share/lifeboat`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("lifeboat"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/lifeboat")),
        None => bail!("no home folder: pass --home DIR or set LIFEBOAT_HOME"),
    }
}

/// Opens (creating if needed) the embedded installation at `home`: objects in a
/// directory, the catalog in SQLite, the master key in a 0600 file.
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
pub fn parse_path(s: &str) -> Result<ItemPath> {
    Ok(ItemPath::parse(&domain::unescape(s)?)?)
}

/// Paths as the user typed them.
pub fn parse_paths(v: &[String]) -> Result<Vec<ItemPath>> {
    v.iter().map(|p| parse_path(p)).collect()
}

pub fn parse_account(a: &Option<String>) -> Result<Option<AccountId>> {
    Ok(a.as_deref().map(AccountId::new).transpose()?)
}

/// The task and snapshot a command names (`latest`, an id or a unique prefix).
pub async fn task_and_snapshot(
    eng: &Engine,
    task: &str,
    snapshot: &str,
    account: &Option<String>,
) -> Result<(TaskRecord, SnapshotRecord)> {
    let task = eng.task(task).await?;
    let snap = eng
        .resolve_snapshot(&task, snapshot, parse_account(account)?.as_ref())
        .await?;
    Ok((task, snap))
}

/// Reads a credential from the environment variable the user named.
pub fn secret_from_env(var: &str) -> Result<zeroize::Zeroizing<String>> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(zeroize::Zeroizing::new(v)),
        Ok(_) => bail!("the environment variable {var} is empty; set it to the credential"),
        Err(_) => bail!("the environment variable {var} is not set; set it to the credential"),
    }
}

/// A selection of items by their metadata, for restores and exports of mail and the like.
#[derive(clap::Args, Debug, Default)]
pub struct Select {
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
    pub fn filter(self) -> domain::ItemFilter {
        domain::ItemFilter {
            sender: self.sender,
            subject: self.subject,
            since: self.since,
            until: self.until,
        }
    }
}

/// Prints `v` as pretty JSON on standard output.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
