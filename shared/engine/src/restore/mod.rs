//! Restores: into the source through its connector (by default into a new `Lifeboat
//! Restore <timestamp>` folder of the same or another account), or into a local folder.
//! The rules for where a restore may go are here, once, for the command line, the API and
//! restore jobs alike.
//!
//! A folder whose stored listing is damaged or missing does not stop a restore: it is
//! reported with the items that could not be restored, and everything else is restored.

mod to_dir;

pub use to_dir::RestoreReport;

use crate::account_tree::{dir_entry, Boxed};
use crate::snapshots::{not_found, selection};
use crate::{
    Connectors, Engine, Error, RestoreContent, Result, SourceRestore, SourceRestoreReport,
    TaskRecord,
};
use domain::{restore_label, AccountId, ItemPath, OnConflict, TaskId, RESTORE_PREFIX};
use vault::{AccountVault, Entry, EntryKind, SnapshotRecord};

/// Where a restore into a source writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    /// Another task of the same connector (another domain, another mailbox's task);
    /// `None`: the snapshot's own task.
    pub task: Option<TaskId>,
    /// Another account; `None`: the snapshot's own account (or, in another task, its
    /// first account).
    pub account: Option<AccountId>,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Paths to restore; empty means everything.
    pub include: Vec<ItemPath>,
    pub in_place: bool,
    pub on_conflict: OnConflict,
    /// Prefix of the restore folder's label; `Lifeboat Restore` when empty.
    pub label: String,
    /// The time in the label; now when `None`. A job run again after a crash passes its
    /// creation time, so it restores into the same folder, not a second one.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Within `include`, only the items these metadata select (sender, subject, days);
    /// folders come along only above a selected item. Restores into a source and zip
    /// exports only.
    pub filter: domain::ItemFilter,
    /// Restores into a local folder: wait until every restored file is on the disk before
    /// answering (a power cut after the answer loses nothing). Slower, so asked for: like
    /// `cp`, a restore otherwise leaves the last of the writing to the system. Either way
    /// a file gets its name only once it is whole.
    pub sync: bool,
}

impl Engine {
    /// Restores items of `snap` into a source through its connector: by default into a new
    /// `Lifeboat Restore <timestamp>` folder of the snapshot's own account, or of the
    /// account `to` names (see [`Destination`]); in place when `opts.in_place`.
    ///
    /// # Errors
    /// A destination the rules refuse, a path not in the snapshot, or what the connector
    /// returns.
    pub async fn restore(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        to: &Destination,
        opts: &RestoreOptions,
        connectors: &dyn Connectors,
    ) -> Result<SourceRestoreReport> {
        let (dest, to) = self.destination(task, snap, to).await?;
        let connector = self.connector(&dest, connectors).await?;
        self.check_owned(task, snap).await?;
        let vault = self.vault(task).await?.account(&snap.account);
        let prefix = if opts.label.is_empty() {
            RESTORE_PREFIX
        } else {
            &opts.label
        };
        let label = (!opts.in_place)
            .then(|| restore_label(prefix, opts.at.unwrap_or_else(|| self.ports.clock.now())));
        let mut items = Vec::new();
        let mut damaged = Vec::new();
        for inc in selection(&opts.include) {
            let entry = if inc.is_root() {
                let mut e = dir_entry(b"");
                e.subtree = Some(snap.root());
                e
            } else {
                vault.lookup(&snap.root(), &inc).await.map_err(not_found)?
            };
            // The folders above a selected item come along (empty but for it), so that it
            // lands in its own folder inside the restore folder.
            let mut above = ItemPath::root();
            if let Some(parent) = inc.parent() {
                for seg in parent.segments() {
                    above = above.join(seg)?;
                    if !items.iter().any(|(p, _): &(ItemPath, Entry)| p == &above) {
                        items.push((above.clone(), dir_entry(seg)));
                    }
                }
            }
            collect(&vault, inc, entry, &mut items, &mut damaged).await?;
        }
        if !opts.filter.is_empty() {
            items = filtered(items, &opts.filter);
        }
        let job = SourceRestore {
            from: snap.account.clone(),
            to,
            label,
            on_conflict: opts.on_conflict,
            items,
        };
        let mut report = connector.restore(&job, &RestoreContent { vault }).await?;
        report.errors.extend(damaged);
        Ok(report)
    }

    /// The task and account a restore writes into: the snapshot's own task and account
    /// by default; another account of the same task; or an account of another task of
    /// the same connector (its first account when none is named).
    ///
    /// # Errors
    /// `Invalid` for a task of another connector; `NotFound` for an account the
    /// destination task does not have.
    async fn destination(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        to: &Destination,
    ) -> Result<(TaskRecord, AccountId)> {
        let dest = match &to.task {
            Some(name) if name != &task.name => self.task(name.as_str()).await?,
            _ => task.clone(),
        };
        if dest.source.kind() != task.source.kind() {
            return Err(Error::Invalid(format!(
                "task {} is a {} task and cannot receive {} items",
                dest.name,
                dest.source.kind(),
                task.source.kind()
            )));
        }
        let account = match (&to.account, dest.name == task.name) {
            (Some(a), _) => {
                if !self.accounts(&dest).await?.contains(a) {
                    return Err(Error::NotFound(format!(
                        "task {} has no account {a}; its accounts are those its backups list",
                        dest.name
                    )));
                }
                a.clone()
            }
            (None, true) => snap.account.clone(),
            (None, false) => self
                .accounts(&dest)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "task {} has no accounts yet; back it up once first",
                        dest.name
                    ))
                })?,
        };
        Ok((dest, account))
    }
}

/// The items `filter` selects, and the folders above them (no others: a restore by
/// sender or date does not recreate every empty folder of the mailbox).
fn filtered(items: Vec<(ItemPath, Entry)>, filter: &domain::ItemFilter) -> Vec<(ItemPath, Entry)> {
    let kept: Vec<(ItemPath, Entry)> = items
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir || filter.matches(&e.meta, e.mtime_ns))
        .collect();
    let mut above = std::collections::HashSet::new();
    for (p, e) in &kept {
        if e.kind != EntryKind::Dir {
            let mut q = p.parent();
            while let Some(d) = q {
                if d.is_root() || !above.insert(d.clone()) {
                    break;
                }
                q = d.parent();
            }
        }
    }
    kept.into_iter()
        .filter(|(p, e)| e.kind != EntryKind::Dir || above.contains(p))
        .collect()
}

/// Lists `entry` and, for a folder, everything below it, parents first. A folder whose
/// listing is damaged is left out (not even created empty) and reported in `damaged`.
///
/// # Errors
/// Storage that fails otherwise (unreachable: a retry can help).
fn collect<'a>(
    vault: &'a AccountVault,
    at: ItemPath,
    entry: Entry,
    out: &'a mut Vec<(ItemPath, Entry)>,
    damaged: &'a mut Vec<String>,
) -> Boxed<'a, Result<()>> {
    Box::pin(async move {
        let node = match (entry.kind, entry.subtree) {
            (EntryKind::Dir, Some(sub)) => match vault.read_tree(&sub).await {
                Ok(node) => Some(node),
                Err(e) if stored_damage(&e) => {
                    damaged.push(folder_damaged(&at, &e));
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            },
            _ => None,
        };
        if !at.is_root() {
            out.push((at.clone(), entry));
        }
        for child in node.into_iter().flat_map(|n| n.entries) {
            let p = at.join(&child.name)?;
            collect(vault, p, child, out, damaged).await?;
        }
        Ok(())
    })
}

/// Whether a failed read means the stored data is damaged or gone (a restore reports the
/// item and goes on), not that storage is unavailable (the restore fails, to be retried).
pub(crate) fn stored_damage(e: &vault::Error) -> bool {
    e.is_damage() || matches!(e, vault::Error::Port(p) if p.is_not_found())
}

/// The report line of a folder whose stored listing could not be read: nothing in it is
/// restored.
pub(crate) fn folder_damaged(item: &ItemPath, e: &vault::Error) -> String {
    format!(
        "{item}: folder not restored, nor anything in it: its stored listing is damaged or missing ({e}); run `lifeboat verify`"
    )
}
