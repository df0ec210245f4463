//! The connector contract: what every connector (a local folder, IMAP, Microsoft 365,
//! Google, Salesforce) implements to back up its source's accounts and restore into them.
//!
//! A connector knows its service's API and change tracking; the engine knows the vault.
//! They meet in [`AccountTree`]: the account as the previous snapshot left it, which the
//! connector brings up to date from its own cursor (a delta link, UIDVALIDITY and
//! HIGHESTMODSEQ, a history id) by putting, updating, moving and removing items. The engine
//! then stores only the folders that changed and commits the snapshot with the connector's
//! new cursor in one atomic write. Because the tree starts from the previous snapshot, an
//! incremental backup fetches only what the source reports as changed, and a snapshot is
//! still a complete picture of the account.
//!
//! Connectors live in their own crates (they speak HTTP, IMAP or the local file system,
//! which the engine does not); the engine only sees this trait.
//!
//! Conventions every connector follows, so that browsing, diff, export and search work the
//! same for every source:
//! - a folder of the source (a mail folder, a calendar, a drive folder) is a folder of the
//!   tree, named as the user sees it; the service is the top folder when an account has
//!   several (`Mail/Inbox/…`, `Calendar/…`, `OneDrive/…`);
//! - an item's name is stable while the item exists (derived from the source's immutable
//!   id, not from a subject that can change), and ends with the extension its export format
//!   has: `.eml` for mail (RFC 822 bytes exactly as the source has them), `.vcf`, `.ics`,
//!   or the file's own name for files;
//! - metadata (flags, labels, read state, received time, sender, subject) goes into the
//!   entry's `meta` pairs; a metadata-only change does not store the content again;
//! - the entry's `fingerprint` is the source's change key (etag, MODSEQ, cTag hashed to 64
//!   bits): equal fingerprint means the content need not be fetched again.

use crate::{AccountTree, Error, OnConflict, Result, TaskRecord};
use async_trait::async_trait;
use domain::{AccountId, ItemPath, Service};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vault::{AccountVault, BlobKind, Entry, SnapshotRecord};
use zeroize::Zeroizing;

/// The metadata key of the time a message was received (RFC 3339), which every mail
/// connector sets: the mbox export dates its separator lines with it.
pub const META_RECEIVED: &str = "received";

/// One account a source protects (a mailbox, a user, a site): the billing unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub id: AccountId,
    /// How people know it: an address, a site URL. Shown in listings, never logged.
    pub name: String,
    /// The services backed up for it.
    pub services: Vec<Service>,
}

/// Why a source failed, so that callers can tell "fix your credentials" from "try later".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// Credentials refused or expired beyond refreshing: an administrator must act.
    Auth,
    /// The source asked us to slow down longer than a run can wait.
    Throttled,
    /// The source is down or the connection failed.
    Unavailable,
    /// The account or folder no longer exists at the source.
    NotFound,
    /// The source answered something we cannot use (a protocol error, a bad response).
    Protocol,
}

/// Metadata of an item being put into the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemInfo {
    /// The item's own time (received, modified), nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// The source's change key hashed to 64 bits; see the module doc.
    pub fingerprint: u64,
    pub meta: Vec<(String, String)>,
}

/// A source of backups and target of restores.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Checks that the source is reachable with the task's settings and credential (signs
    /// in), so that a wrong host, secret or permission shows when the task is added or its
    /// credential replaced, not at the first nightly backup. By default, lists accounts.
    ///
    /// # Errors
    /// What signing in returns: `Source { kind: Auth, .. }` for refused credentials.
    async fn check(&self) -> Result<()> {
        self.accounts().await.map(|_| ())
    }

    /// Lists the accounts the task protects now. An account that disappeared at the source
    /// keeps its snapshots; it is simply not backed up again.
    async fn accounts(&self) -> Result<Vec<AccountInfo>>;

    /// Brings `tree` (the account as its previous snapshot left it; empty on the first
    /// backup) up to date, starting from `cursor` (what this method returned last time,
    /// `None` on the first backup), and returns the cursor for the next backup.
    ///
    /// An item that cannot be fetched (corrupt, gone between listing and fetching) is
    /// recorded with [`AccountTree::record_error`] and the backup goes on; an error
    /// returned from here fails the whole run, and nothing of it becomes visible (a rerun
    /// reuses what was already stored). A cursor the source no longer accepts means a full
    /// enumeration against the same tree: content already stored is not stored again.
    async fn backup(
        &self,
        account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> Result<Option<String>>;

    /// Writes items of a snapshot back into the source, as [`SourceRestore`] describes.
    /// Items that cannot be written are listed in the report; the rest goes on.
    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> Result<SourceRestoreReport>;
}

/// How a time-limited backup run ended.
#[derive(Debug)]
pub enum BackupEnd {
    /// The account is complete: a new snapshot.
    Committed(Box<SnapshotRecord>),
    /// Time was up: the run's work is kept as a checkpoint for the next run.
    Paused { items_this_run: u64, pauses: u32 },
}

impl BackupEnd {
    /// The snapshot of a run that had no time limit.
    ///
    /// # Errors
    /// `Invalid` when the run paused anyway (a connector that pauses without a deadline).
    pub fn into_snapshot(self) -> Result<SnapshotRecord> {
        match self {
            BackupEnd::Committed(s) => Ok(*s),
            BackupEnd::Paused { .. } => Err(Error::Invalid(
                "the connector paused a backup that had no time limit".into(),
            )),
        }
    }
}

/// Opens the connector of a task. Whoever runs backups (the CLI, a Lambda function) holds
/// one that knows every connector crate; the engine knows none of them.
pub trait Connectors: Send + Sync {
    /// A connector for `task`, with its unsealed credential.
    ///
    /// # Errors
    /// `Invalid` for a source this build does not know, or settings it cannot use.
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> Result<Arc<dyn Connector>>;

    /// Whether this list has the connector named `connector`: a caller that offers only
    /// some (the HTTP API offers no local folder) refuses the others' tasks up front.
    fn offers(&self, connector: &str) -> bool;
}

/// What to write back into a source.
#[derive(Clone, Debug)]
pub struct SourceRestore {
    /// The account the items were backed up from.
    pub from: AccountId,
    /// The account that receives them: the same one, or another of this or another task.
    pub to: AccountId,
    /// The folder created to receive the items (`Lifeboat Restore <timestamp>`), keeping
    /// their folder structure inside it; `None` restores in place.
    pub label: Option<String>,
    /// For in-place restores: what to do when the item is already there.
    pub on_conflict: OnConflict,
    /// The selected items with their paths in the snapshot, parents before children.
    /// Folders appear as their own entries before their content.
    pub items: Vec<(ItemPath, Entry)>,
}

/// What a source restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceRestoreReport {
    /// Where the items went, as the source names it (a folder path, a site URL).
    pub target: String,
    pub items: u64,
    pub folders: u64,
    pub bytes: u64,
    pub skipped: u64,
    /// Items that could not be restored, with why.
    pub errors: Vec<String>,
}

/// Reads items' content from the snapshot for a connector's restore.
pub struct RestoreContent {
    pub(crate) vault: AccountVault,
}

impl RestoreContent {
    /// The whole content of `entry`, checked against its ids.
    ///
    /// # Errors
    /// `Damaged` when a stored blob fails its checks: the item is then not restored.
    pub async fn read(&self, entry: &Entry) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(entry.size as usize);
        for c in &entry.content {
            out.extend_from_slice(&self.vault.read_blob(c, BlobKind::Data).await?);
        }
        Ok(out)
    }

    /// The content of `entry`, chunk by chunk, for items too large to hold at once.
    pub async fn read_chunks(
        &self,
        entry: &Entry,
        mut sink: impl FnMut(Vec<u8>) -> Result<()> + Send,
    ) -> Result<()> {
        for c in &entry.content {
            sink(self.vault.read_blob(c, BlobKind::Data).await?)?;
        }
        Ok(())
    }
}
