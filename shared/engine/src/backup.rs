//! Backing up one account: the one entry point every runner (the command line, the local
//! worker, a Lambda fetcher) calls, whatever the source.

use crate::account_tree::AccountTree;
use crate::{BackupEnd, Connector, Connectors, Engine, NoProgress, Progress, Result, TaskRecord};
use domain::AccountId;
use std::sync::Arc;
use std::time::Instant;
use vault::{BlobRef, SnapshotRecord};

/// How a backup runs.
#[derive(Clone)]
pub struct BackupOptions {
    /// Where progress goes (a progress bar on a terminal; nowhere in a function).
    pub progress: Arc<dyn Progress>,
    /// When the run must stop: a run that reaches it pauses, what it stored is kept as the
    /// account's checkpoint, and the next run goes on from there (a Lambda function
    /// re-queues itself before its 15 minutes are up). `None`: run to the end.
    pub deadline: Option<Instant>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            progress: Arc::new(NoProgress),
            deadline: None,
        }
    }
}

impl Engine {
    /// The connector of a task, with its unsealed credential.
    ///
    /// # Errors
    /// What unsealing the credential or opening the connector returns (`Invalid` for a
    /// connector this build does not have).
    pub async fn connector(
        &self,
        task: &TaskRecord,
        connectors: &dyn Connectors,
    ) -> Result<Arc<dyn Connector>> {
        let secret = self.task_secret(task).await?;
        connectors.open(task, secret)
    }

    /// The newest committed snapshot of an account, if it has one.
    pub async fn latest_snapshot(
        &self,
        task: &TaskRecord,
        account: &AccountId,
    ) -> Result<Option<SnapshotRecord>> {
        Ok(self.vault(task).await?.latest(account).await?)
    }

    /// Backs up one account of `task` through its `connector`, incrementally from the
    /// previous snapshot's cursor, as a new snapshot; or, when `opts.deadline` comes first,
    /// as a checkpoint the next run goes on from. The snapshot that finally commits
    /// carries the time the first run started.
    ///
    /// # Errors
    /// `NotFound` for an account the task does not have; what the connector returns
    /// (credentials, an unreachable source) or a storage failure. Nothing of a failed run
    /// is visible; a checkpoint already stored stays for the next run, and a rerun reuses
    /// what was uploaded.
    pub async fn backup(
        &self,
        task: &TaskRecord,
        account: &AccountId,
        connector: &dyn Connector,
        opts: &BackupOptions,
    ) -> Result<BackupEnd> {
        let info = self.account(task, account).await?;
        let progress = &opts.progress;
        let vault = self.vault(task).await?;
        let parent = vault.latest(&info.id).await?;
        let checkpoint = vault
            .checkpoint(&info.id, parent.as_ref().map(|p| &p.id))
            .await?;
        let (taken_at, cursor, pauses) = match &checkpoint {
            Some(cp) => (cp.started_at, cp.cursor.clone(), cp.pauses),
            None => (
                self.ports.clock.now(),
                parent.as_ref().and_then(|p| p.cursor.clone()),
                0,
            ),
        };
        let mut writer = vault.writer(info.id.clone(), parent).await?;
        let start = checkpoint.as_ref().map(|cp| BlobRef::from(cp.root));
        if let Some(root) = &start {
            writer.adopt(root).await?;
        }
        let mut tree = AccountTree::open(writer, start, progress.clone())?;
        tree.deadline = opts.deadline;
        progress.status("fetching changes");
        let next = connector
            .backup(&info, cursor.as_deref(), &mut tree)
            .await?;
        if tree.paused {
            progress.status("pausing");
            let items = tree.items_read;
            tree.checkpoint(taken_at, next, pauses + 1).await?;
            return Ok(BackupEnd::Paused {
                items_this_run: items,
                pauses: pauses + 1,
            });
        }
        progress.status("committing");
        Ok(BackupEnd::Committed(Box::new(
            tree.finish(taken_at, next).await?,
        )))
    }
}
