//! The local folder connector: a folder on this machine, backed up as one account
//! ([`ACCOUNT`]) like any other source, through the engine's `Connector` contract (restic
//! treats a folder and stdin alike as a source; so does Lifeboat). A restore into the
//! source writes into the folder itself: by default into a new `Lifeboat Restore
//! <timestamp>` folder inside it, in place when asked.
//!
//! The folder has no change feed, so the cursor is unused: an incremental backup compares
//! each file's size, modification time, inode and change time with its entry in the
//! previous snapshot, and reads only the files that differ (see `backup.rs`).
//!
//! **Architecture invariant:** `domain` and `engine` of ours; nothing else names this
//! connector but the connector list of the binaries.

mod backup;
mod restore;

use async_trait::async_trait;
use domain::{AccountId, Service};
use engine::{
    AccountInfo, AccountTree, Connector, Error, RestoreContent, Result, SourceConfig,
    SourceRestore, SourceRestoreReport, TaskRecord,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of this connector in a task's [`SourceConfig`].
pub const CONNECTOR: &str = "folder";

/// The one account of a folder task.
pub const ACCOUNT: &str = "folder";

/// A folder task's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSettings {
    /// The folder, as an absolute path.
    pub path: PathBuf,
}

impl FolderSettings {
    /// The settings of a task backing up `path`, made absolute (symbolic links resolved),
    /// so the task backs up the same folder whatever the working directory of later runs.
    ///
    /// # Errors
    /// `Io` when the path does not exist or cannot be resolved.
    pub fn new(path: &Path) -> Result<Self> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| Error::io(format!("cannot use {} as a source", path.display()), e))?;
        Ok(FolderSettings { path })
    }

    /// The source of a task with these settings.
    pub fn to_source(&self) -> SourceConfig {
        SourceConfig::new(
            CONNECTOR,
            serde_json::to_value(self).expect("settings serialise"),
        )
    }
}

/// A folder on this machine as a source.
pub struct FolderConnector {
    settings: FolderSettings,
}

impl FolderConnector {
    /// The connector of a folder task.
    ///
    /// # Errors
    /// `Invalid` for settings that are not a folder task's, or a relative path.
    pub fn open(task: &TaskRecord) -> Result<Self> {
        let settings: FolderSettings = serde_json::from_value(task.source.settings.clone())
            .map_err(|e| {
                Error::Invalid(format!(
                    "task {} has settings a folder task cannot use: {e}",
                    task.name
                ))
            })?;
        if !settings.path.is_absolute() {
            return Err(Error::Invalid(format!(
                "task {} names the folder {}, which is not an absolute path",
                task.name,
                settings.path.display()
            )));
        }
        Ok(FolderConnector { settings })
    }

    /// Opens the connector for the connector list.
    ///
    /// # Errors
    /// As [`FolderConnector::open`]; `Invalid` when given a credential (a folder has none).
    pub fn open_dyn(
        task: &TaskRecord,
        secret: Option<zeroize::Zeroizing<String>>,
    ) -> Result<Arc<dyn Connector>> {
        if secret.is_some() {
            return Err(Error::Invalid(format!(
                "task {} reads a local folder, which takes no credential",
                task.name
            )));
        }
        Ok(Arc::new(FolderConnector::open(task)?))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.settings.path
    }

    /// The folder must be there and be a folder, or the whole backup fails: an empty
    /// snapshot of a folder that is missing (an unmounted disk) would look like everything
    /// was deleted.
    fn check_folder(&self) -> Result<()> {
        let path = self.path();
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot read the folder {}", path.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a folder; a folder task backs up a folder",
                path.display()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for FolderConnector {
    async fn check(&self) -> Result<()> {
        self.check_folder()
    }

    async fn accounts(&self) -> Result<Vec<AccountInfo>> {
        Ok(vec![AccountInfo {
            id: AccountId::new(ACCOUNT)?,
            name: self.path().display().to_string(),
            services: vec![Service::Files],
        }])
    }

    async fn backup(
        &self,
        account: &AccountInfo,
        _cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> Result<Option<String>> {
        if account.id.as_str() != ACCOUNT {
            return Err(Error::NotFound(format!(
                "a folder task has one account, {ACCOUNT}, not {}",
                account.id
            )));
        }
        self.check_folder()?;
        backup::walk(tree, self.path(), &domain::ItemPath::root()).await?;
        Ok(None)
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> Result<SourceRestoreReport> {
        self.check_folder()?;
        restore::restore(self.path(), job, content).await
    }
}
