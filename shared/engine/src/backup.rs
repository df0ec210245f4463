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
        Ok(self.vault(task).await?.account(account).latest().await?)
    }

    /// The item problems recorded with a snapshot (the first
    /// [`vault::snapshot::MAX_RECORDED_ERRORS`]; the count is in the record).
    ///
    /// # Errors
    /// A storage failure, or damage of the snapshot's side data.
    pub async fn snapshot_errors(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
    ) -> Result<Vec<vault::ItemError>> {
        Ok(self.snapshot_meta(task, snap).await?.errors)
    }

    /// What a snapshot keeps beside its tree: the source's cursor and the item problems.
    ///
    /// # Errors
    /// A storage failure, or damage of the snapshot's side data.
    pub async fn snapshot_meta(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
    ) -> Result<vault::SnapshotMeta> {
        let av = self.vault(task).await?.account(&snap.account);
        Ok(av.meta(&snap.meta.into()).await?)
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
        let av = self.vault(task).await?.account(&info.id);
        let parent = av.latest().await?;
        let checkpoint = av.checkpoint(parent.as_ref().map(|p| &p.id)).await?;
        let (taken_at, cursor, pauses, earlier_errors) = match &checkpoint {
            Some(cp) => {
                let meta = av.meta(&cp.meta.into()).await?;
                let errors = (meta.errors, cp.error_count);
                (cp.started_at, meta.cursor, cp.pauses, Some(errors))
            }
            None => (
                self.ports.clock.now(),
                parent_cursor(&av, parent.as_ref()).await?,
                0,
                None,
            ),
        };
        let mut writer = av.writer(parent).await?;
        if let Some((errors, count)) = earlier_errors {
            writer.resume_errors(errors, count);
        }
        let start = checkpoint
            .as_ref()
            .map(|cp| (BlobRef::from(cp.root), cp.totals));
        let mut tree = AccountTree::open(writer, start, progress.clone()).await?;
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

/// The cursor the previous snapshot left. Should its side data be damaged, the backup
/// starts over from the source's full listing (which stores only what is not already
/// held) rather than failing every day.
async fn parent_cursor(
    av: &vault::AccountVault,
    parent: Option<&SnapshotRecord>,
) -> Result<Option<String>> {
    let Some(p) = parent else {
        return Ok(None);
    };
    match av.meta(&p.meta.into()).await {
        Ok(m) => Ok(m.cursor),
        Err(e) if e.is_damage() => {
            tracing::warn!(snapshot = %p.id, error = %e, "the previous snapshot's cursor is damaged; listing the source in full");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
