//! Sources: what every SaaS connector (IMAP, Microsoft 365, Google, Salesforce) implements,
//! and the account tree through which it records what it found.
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
//! Connectors live in their own crates (they speak HTTP or IMAP, which the engine does not);
//! the engine only sees this trait.
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

use crate::restore::OnConflict;
use crate::{Engine, Error, Progress, Result, SourceConfig, TaskRecord};
use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use vault::{BlobRef, Entry, EntryKind, Node, SnapshotRecord, SnapshotWriter, Vault, SMALL_ITEM};
use zeroize::Zeroizing;

/// Small items are sealed together in batches of about this size (both cores busy, memory
/// bounded), as the files source does.
const BATCH_BYTES: usize = 32 * 1024 * 1024;
const BATCH_ITEMS: usize = 2048;

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
}

// ---- the account tree -------------------------------------------------------------------

#[derive(Default)]
struct Folder {
    /// The folder's entry in its parent (metadata, time; `subtree` is filled at finish).
    entry: Option<Entry>,
    items: BTreeMap<Vec<u8>, Entry>,
    folders: BTreeMap<Vec<u8>, Folder>,
    /// The node the previous snapshot had here, reused while nothing below changed.
    unchanged: Option<BlobRef>,
}

impl Folder {
    fn load(w: &SnapshotWriter, node_ref: Option<BlobRef>, entry: Option<Entry>) -> Result<Self> {
        let mut f = Folder {
            entry,
            unchanged: node_ref,
            ..Default::default()
        };
        let Some(r) = node_ref else {
            return Ok(f);
        };
        let node = w.parent_node(&r.id).ok_or_else(|| {
            Error::Vault(vault::Error::damaged(
                format!("tree {}", r.id),
                "a folder of the previous snapshot is missing",
            ))
        })?;
        for e in &node.entries {
            if e.kind == EntryKind::Dir {
                let child = Folder::load(w, e.subtree, Some(e.clone()))?;
                f.folders.insert(e.name.clone(), child);
            } else {
                f.items.insert(e.name.clone(), e.clone());
            }
        }
        Ok(f)
    }

    /// Items, folders and content bytes below this folder.
    fn count(&self) -> (u64, u64, u64) {
        let mut items = self.items.len() as u64;
        let mut folders = self.folders.len() as u64;
        let mut bytes: u64 = self.items.values().map(|e| e.size).sum();
        for f in self.folders.values() {
            let (i, d, b) = f.count();
            items += i;
            folders += d;
            bytes += b;
        }
        (items, folders, bytes)
    }
}

/// A small item waiting for the next batch: its path and content.
struct Pending {
    path: ItemPath,
    content: Bytes,
}

/// The account being backed up: the previous snapshot's items, edited by the connector.
/// See the module doc for the naming conventions.
pub struct AccountTree {
    writer: SnapshotWriter,
    root: Folder,
    pending: Vec<Pending>,
    pending_bytes: usize,
    fetched_bytes: u64,
    items_read: u64,
    /// When the run must stop and checkpoint (a Lambda run's time limit).
    deadline: Option<std::time::Instant>,
    paused: bool,
}

fn dir_entry(name: &[u8]) -> Entry {
    Entry::new(name.to_vec(), EntryKind::Dir)
}

impl AccountTree {
    /// Opens the tree on a writer whose parent is the account's previous snapshot, at
    /// `start` (a paused run's checkpoint, already adopted by the writer) or else at the
    /// parent's root.
    pub(crate) fn open(writer: SnapshotWriter, start: Option<BlobRef>) -> Result<Self> {
        let root_ref = start.or_else(|| writer.parent().map(|p| p.root()));
        let mut root = Folder::load(&writer, root_ref, None)?;
        if start.is_some() {
            // A checkpoint's tree is not the parent's: it must be stored with the snapshot.
            root.unchanged = None;
        }
        Ok(AccountTree {
            writer,
            root,
            pending: Vec::new(),
            pending_bytes: 0,
            fetched_bytes: 0,
            items_read: 0,
            deadline: None,
            paused: false,
        })
    }

    /// Whether the run's time is up: a connector checks this between batches and, when
    /// it is, calls [`AccountTree::pause`] and returns the cursor of what it has applied
    /// so far. The next run goes on from there with this same tree.
    pub fn time_is_up(&self) -> bool {
        self.deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// Marks this run as paused: the cursor the connector returns describes a tree that
    /// is not complete yet, so it is kept as a checkpoint rather than made a snapshot.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// The snapshot this backup starts from, if any.
    pub fn parent(&self) -> Option<&SnapshotRecord> {
        self.writer.parent()
    }

    fn folder(&self, path: &ItemPath) -> Option<&Folder> {
        let mut f = &self.root;
        for seg in path.segments() {
            f = f.folders.get(seg)?;
        }
        Some(f)
    }

    /// The folder at `path` for a change: every folder on the way loses its "unchanged"
    /// mark, so that finishing stores it again. Creates missing folders when `create`.
    fn folder_mut(&mut self, path: &ItemPath, create: bool) -> Option<&mut Folder> {
        let mut f = &mut self.root;
        f.unchanged = None;
        for seg in path.segments() {
            if !f.folders.contains_key(seg) {
                if !create {
                    return None;
                }
                f.folders.insert(
                    seg.clone(),
                    Folder {
                        entry: Some(dir_entry(seg)),
                        ..Default::default()
                    },
                );
            }
            f = f.folders.get_mut(seg).expect("present");
            f.unchanged = None;
        }
        Some(f)
    }

    fn split(path: &ItemPath) -> Result<(ItemPath, &[u8])> {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => Ok((parent, name)),
            _ => Err(Error::Invalid(
                "an item needs a name; the root is a folder".into(),
            )),
        }
    }

    /// Whether a folder exists at `path` (the root always does).
    pub fn has_folder(&self, path: &ItemPath) -> bool {
        self.folder(path).is_some()
    }

    /// Every folder below the root, parents before children.
    pub fn folder_paths(&self) -> Vec<ItemPath> {
        fn walk(f: &Folder, at: &ItemPath, out: &mut Vec<ItemPath>) {
            for (name, child) in &f.folders {
                let p = at.join(name).expect("names in a tree are valid segments");
                out.push(p.clone());
                walk(child, &p, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &ItemPath::root(), &mut out);
        out
    }

    /// The names of the folders directly in `path`.
    pub fn subfolders(&self, path: &ItemPath) -> Vec<Vec<u8>> {
        self.folder(path)
            .map(|f| f.folders.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The items (not folders) directly in `path`, by name.
    pub fn items(&self, path: &ItemPath) -> impl Iterator<Item = &Entry> {
        self.folder(path).into_iter().flat_map(|f| f.items.values())
    }

    /// The item at `path`, if there is one.
    pub fn item(&self, path: &ItemPath) -> Option<&Entry> {
        let (parent, name) = Self::split(path).ok()?;
        self.folder(&parent)?.items.get(name)
    }

    /// The metadata of the folder at `path`.
    pub fn folder_meta(&self, path: &ItemPath) -> Option<&[(String, String)]> {
        self.folder(path)?.entry.as_ref().map(|e| e.meta.as_slice())
    }

    /// Creates the folder at `path` and any missing parents.
    ///
    /// # Errors
    /// `Invalid` when an item already has that name.
    pub fn ensure_folder(&mut self, path: &ItemPath) -> Result<()> {
        if self.has_folder(path) {
            return Ok(());
        }
        self.check_no_item_on_the_way(path)?;
        self.folder_mut(path, true);
        Ok(())
    }

    fn check_no_item_on_the_way(&self, path: &ItemPath) -> Result<()> {
        let mut f = &self.root;
        for (i, seg) in path.segments().iter().enumerate() {
            if f.items.contains_key(seg) {
                let mut at = ItemPath::root();
                for s in &path.segments()[..=i] {
                    at = at.join(s)?;
                }
                return Err(Error::Invalid(format!(
                    "{at} is an item, so it cannot also be a folder"
                )));
            }
            match f.folders.get(seg) {
                Some(next) => f = next,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Sets a folder's metadata (creating the folder if needed); no change if equal.
    pub fn set_folder_meta(&mut self, path: &ItemPath, meta: Vec<(String, String)>) -> Result<()> {
        if path.is_root() {
            return Err(Error::Invalid("the account root has no metadata".into()));
        }
        if self.folder_meta(path) == Some(meta.as_slice()) {
            return Ok(());
        }
        self.ensure_folder(path)?;
        let f = self.folder_mut(path, false).expect("just ensured");
        if let Some(e) = f.entry.as_mut() {
            e.meta = meta;
        }
        Ok(())
    }

    /// Stores an item with its content (replacing whatever had that path). Content up to a
    /// few MiB is batched with other small items; larger content is chunked by content.
    ///
    /// # Errors
    /// `Invalid` when a folder has that name; a storage failure.
    pub async fn put_item(
        &mut self,
        path: &ItemPath,
        info: ItemInfo,
        content: Bytes,
    ) -> Result<()> {
        if content.len() > SMALL_ITEM {
            let len = content.len();
            return self
                .put_item_stream(path, info, std::io::Cursor::new(content), len as u64)
                .await;
        }
        let (parent, name) = Self::split(path)?;
        self.check_no_item_on_the_way(&parent)?;
        if self.folder(path).is_some() {
            return Err(Error::Invalid(format!("{path} is a folder, not an item")));
        }
        // Content still waiting under this path would land on the new entry: send it now.
        if self.pending.iter().any(|p| &p.path == path) {
            self.flush().await?;
        }
        let mut e = Entry::new(name.to_vec(), EntryKind::File);
        e.size = content.len() as u64;
        e.mtime_ns = info.mtime_ns;
        e.fingerprint = info.fingerprint;
        e.meta = info.meta;
        self.fetched_bytes += content.len() as u64;
        self.items_read += 1;
        self.pending_bytes += content.len();
        self.pending.push(Pending {
            path: path.clone(),
            content,
        });
        self.folder_mut(&parent, true)
            .expect("created")
            .items
            .insert(name.to_vec(), e);
        if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_ITEMS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Stores an item read from `reader` (of any size: memory stays bounded). `expected`
    /// is the size the source announced; a read that ends early or runs long is recorded
    /// as an error for this item, which keeps its previous version if it had one.
    ///
    /// # Errors
    /// `Invalid` when a folder has that name; a storage failure.
    pub async fn put_item_stream<R: Read + Send + 'static>(
        &mut self,
        path: &ItemPath,
        info: ItemInfo,
        reader: R,
        expected: u64,
    ) -> Result<()> {
        let (parent, name) = Self::split(path)?;
        self.check_no_item_on_the_way(&parent)?;
        if self.folder(path).is_some() {
            return Err(Error::Invalid(format!("{path} is a folder, not an item")));
        }
        if self.pending.iter().any(|p| &p.path == path) {
            self.flush().await?;
        }
        let (content, size) = match self.writer.store_stream(reader, path.to_string()).await {
            Ok(v) => v,
            Err(vault::Error::Source { source, .. }) => {
                self.record_error(path, format!("could not be read from the source: {source}"));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if size != expected {
            self.record_error(
                path,
                format!("the source sent {size} bytes of an item of {expected}; kept the previous version"),
            );
            return Ok(());
        }
        self.fetched_bytes += size;
        self.items_read += 1;
        let mut e = Entry::new(name.to_vec(), EntryKind::File);
        e.size = size;
        e.mtime_ns = info.mtime_ns;
        e.fingerprint = info.fingerprint;
        e.meta = info.meta;
        e.content = content;
        self.folder_mut(&parent, true)
            .expect("created")
            .items
            .insert(name.to_vec(), e);
        Ok(())
    }

    /// Changes an item's metadata (flags, labels, its folder-independent fields) without
    /// touching its content. Returns whether the item exists; the folder is stored again
    /// only if `change` actually changed something.
    ///
    /// # Errors
    /// `Invalid` if `change` alters the content, size or name (use `put_item` for that).
    pub fn update_item(
        &mut self,
        path: &ItemPath,
        change: impl FnOnce(&mut Entry),
    ) -> Result<bool> {
        let Some(before) = self.item(path).cloned() else {
            return Ok(false);
        };
        let mut after = before.clone();
        change(&mut after);
        if after.name != before.name
            || after.kind != before.kind
            || after.size != before.size
            || after.content != before.content
        {
            return Err(Error::Invalid(format!(
                "{path}: a metadata update cannot change the item's name or content"
            )));
        }
        if after != before {
            let (parent, name) = Self::split(path)?;
            let f = self.folder_mut(&parent, false).expect("the item exists");
            f.items.insert(name.to_vec(), after);
        }
        Ok(true)
    }

    /// Removes the item or folder (with everything in it) at `path`. Returns whether
    /// there was one.
    ///
    /// # Errors
    /// A storage failure while sending batched content.
    pub async fn remove(&mut self, path: &ItemPath) -> Result<bool> {
        let Ok((parent, name)) = Self::split(path) else {
            return Err(Error::Invalid("the account root cannot be removed".into()));
        };
        if self.item(path).is_none() && self.folder(path).is_none() {
            return Ok(false);
        }
        if self.pending.iter().any(|p| p.path.starts_with(path)) {
            self.flush().await?;
        }
        let f = self.folder_mut(&parent, false).expect("exists");
        Ok(f.items.remove(name).is_some() || f.folders.remove(name).is_some())
    }

    /// Moves an item or a folder to `to` (a mail moved to another folder keeps its
    /// content; nothing is fetched or stored again). Replaces what was at `to`.
    ///
    /// # Errors
    /// `NotFound` when nothing is at `from`; `Invalid` when moving a folder into itself.
    pub async fn rename(&mut self, from: &ItemPath, to: &ItemPath) -> Result<()> {
        let (from_parent, from_name) = Self::split(from)?;
        let (to_parent, to_name) = Self::split(to)?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(from) {
            return Err(Error::Invalid(format!(
                "{from} cannot be moved into itself"
            )));
        }
        if self.item(from).is_none() && self.folder(from).is_none() {
            return Err(Error::NotFound(format!("{from} is not in the account")));
        }
        self.check_no_item_on_the_way(&to_parent)?;
        if self
            .pending
            .iter()
            .any(|p| p.path.starts_with(from) || p.path.starts_with(to))
        {
            self.flush().await?;
        }
        let src = self.folder_mut(&from_parent, false).expect("exists");
        let item = src.items.remove(from_name);
        let folder = src.folders.remove(from_name);
        let dst = self.folder_mut(&to_parent, true).expect("created");
        dst.items.remove(to_name);
        dst.folders.remove(to_name);
        if let Some(mut e) = item {
            e.name = to_name.to_vec();
            dst.items.insert(to_name.to_vec(), e);
        }
        if let Some(mut f) = folder {
            if let Some(e) = f.entry.as_mut() {
                e.name = to_name.to_vec();
            }
            f.unchanged = f.unchanged.filter(|_| from_name == to_name);
            dst.folders.insert(to_name.to_vec(), f);
        }
        Ok(())
    }

    /// Records that an item could not be backed up this time (it keeps its previous
    /// version, if it had one); shown with the snapshot.
    pub fn record_error(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.writer.record_error(path, message);
    }

    /// Bytes of content the connector handed over in this run.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let refs = self
            .writer
            .store_batch(batch.iter().map(|p| p.content.clone()).collect())
            .await?;
        for (p, r) in batch.iter().zip(refs) {
            let (parent, name) = Self::split(&p.path)?;
            // Every path still pending exists: removing or moving one sends it first.
            if let Some(e) = self
                .folder_mut(&parent, false)
                .and_then(|f| f.items.get_mut(name))
            {
                e.content = vec![r];
            }
        }
        Ok(())
    }

    /// Stores the tree so far and records it, with `cursor`, as the account's checkpoint.
    async fn checkpoint(
        mut self,
        started_at: chrono::DateTime<chrono::Utc>,
        cursor: Option<String>,
        pauses: u32,
    ) -> Result<()> {
        self.flush().await?;
        let root = std::mem::take(&mut self.root);
        let root_ref = store_folder(&mut self.writer, root).await?;
        Ok(self
            .writer
            .checkpoint(root_ref, cursor, started_at, pauses)
            .await?)
    }

    /// Stores the changed folders and commits the snapshot with `cursor`.
    pub(crate) async fn finish(
        mut self,
        taken_at: chrono::DateTime<chrono::Utc>,
        cursor: Option<String>,
    ) -> Result<SnapshotRecord> {
        self.flush().await?;
        let (items, folders, bytes) = self.root.count();
        let root = std::mem::take(&mut self.root);
        let root_ref = store_folder(&mut self.writer, root).await?;
        let read = self.items_read;
        let stats = self.writer.stats_mut();
        stats.items = items;
        stats.folders = folders;
        stats.bytes = bytes;
        stats.items_read = read;
        Ok(self.writer.commit(root_ref, taken_at, cursor).await?)
    }
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn store_folder(w: &mut SnapshotWriter, f: Folder) -> Boxed<'_, Result<BlobRef>> {
    Box::pin(async move {
        if let Some(r) = f.unchanged {
            return Ok(r);
        }
        let mut node = Node::default();
        node.entries.extend(f.items.into_values());
        for (name, child) in f.folders {
            let mut e = child.entry.clone().unwrap_or_else(|| dir_entry(&name));
            e.subtree = Some(store_folder(w, child).await?);
            node.entries.push(e);
        }
        Ok(w.store_tree(node).await?)
    })
}

// ---- restore into a source ---------------------------------------------------------------

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
    vault: Vault,
}

impl RestoreContent {
    /// The whole content of `entry`, checked against its ids.
    ///
    /// # Errors
    /// `Damaged` when a stored blob fails its checks: the item is then not restored.
    pub async fn read(&self, entry: &Entry) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(entry.size as usize);
        for c in &entry.content {
            out.extend_from_slice(&self.vault.read_blob(c, false).await?);
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
            sink(self.vault.read_blob(c, false).await?)?;
        }
        Ok(())
    }
}

impl Engine {
    /// Records the accounts a connector reports for `task` (new ones are added; names are
    /// refreshed) and returns them.
    pub async fn refresh_accounts(
        &self,
        task: &TaskRecord,
        connector: &dyn Connector,
    ) -> Result<Vec<AccountInfo>> {
        let found = connector.accounts().await?;
        for a in &found {
            let value = serde_json::to_vec(a).expect("account info serialises");
            self.ports
                .catalog
                .put(
                    ports::Record::new(
                        format!("t#{}", self.tenant),
                        format!("account#{}#{}", task.name, a.id),
                        value,
                    ),
                    ports::Condition::None,
                )
                .await?;
        }
        Ok(found)
    }

    /// The accounts of a task with what is known of them.
    pub async fn account_infos(&self, task: &TaskRecord) -> Result<Vec<AccountInfo>> {
        use ports::CatalogExt;
        let prefix = format!("account#{}#", task.name);
        let recs = self
            .ports
            .catalog
            .query_all(&format!("t#{}", self.tenant), &prefix)
            .await?;
        recs.iter()
            .map(|r| {
                let id = AccountId::new(&r.sk[prefix.len()..])?;
                Ok(
                    serde_json::from_slice::<AccountInfo>(&r.value).unwrap_or(AccountInfo {
                        name: id.to_string(),
                        id,
                        services: Vec::new(),
                    }),
                )
            })
            .collect()
    }

    /// The connector of a connector task.
    ///
    /// # Errors
    /// `Invalid` for a files task; what unsealing the credential or opening returns.
    pub async fn connector(
        &self,
        task: &TaskRecord,
        connectors: &dyn Connectors,
    ) -> Result<Arc<dyn Connector>> {
        if matches!(task.source, SourceConfig::Files { .. }) {
            return Err(Error::Invalid(format!(
                "task {} reads a local folder, not a connector source",
                task.name
            )));
        }
        let secret = self.task_secret(task).await?;
        connectors.open(task, secret)
    }

    /// The accounts to back up now: a files task's one account, or what the connector
    /// lists (recorded, so that browsing and billing see them).
    pub async fn current_accounts(
        &self,
        task: &TaskRecord,
        connectors: &dyn Connectors,
    ) -> Result<Vec<AccountId>> {
        match task.source {
            SourceConfig::Files { .. } => self.accounts(task).await,
            SourceConfig::Source { .. } => {
                let c = self.connector(task, connectors).await?;
                Ok(self
                    .refresh_accounts(task, c.as_ref())
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect())
            }
        }
    }

    /// Backs up one account of any task: a files task's folder, or a connector's account.
    ///
    /// # Errors
    /// `NotFound` for an account the task does not have; what the backup returns.
    pub async fn backup_any(
        &self,
        task: &TaskRecord,
        account: &AccountId,
        connectors: &dyn Connectors,
        progress: &dyn Progress,
    ) -> Result<SnapshotRecord> {
        match self
            .backup_any_until(task, account, connectors, progress, None)
            .await?
        {
            BackupEnd::Committed(s) => Ok(*s),
            BackupEnd::Paused { .. } => Err(Error::Invalid(
                "the connector paused a backup that had no time limit".into(),
            )),
        }
    }

    /// As [`Engine::backup_any`], but connector runs stop at `deadline` and checkpoint
    /// (see [`Engine::backup_source_until`]). A files task always runs to the end.
    ///
    /// # Errors
    /// As [`Engine::backup_any`].
    pub async fn backup_any_until(
        &self,
        task: &TaskRecord,
        account: &AccountId,
        connectors: &dyn Connectors,
        progress: &dyn Progress,
        deadline: Option<std::time::Instant>,
    ) -> Result<BackupEnd> {
        match task.source {
            SourceConfig::Files { .. } => Ok(BackupEnd::Committed(Box::new(
                self.backup_account(task, account, progress).await?,
            ))),
            SourceConfig::Source { .. } => {
                let info = self
                    .account_infos(task)
                    .await?
                    .into_iter()
                    .find(|a| &a.id == account)
                    .ok_or_else(|| {
                        Error::NotFound(format!("task {} has no account {account}", task.name))
                    })?;
                let c = self.connector(task, connectors).await?;
                self.backup_source_until(task, &info, c.as_ref(), progress, deadline)
                    .await
            }
        }
    }

    /// Backs up one account of a connector task as a new snapshot, incrementally from the
    /// previous snapshot's cursor.
    ///
    /// # Errors
    /// What the connector returns (credentials, an unreachable source) or a storage
    /// failure; nothing of the run is then visible.
    pub async fn backup_source(
        &self,
        task: &TaskRecord,
        account: &AccountInfo,
        connector: &dyn Connector,
        progress: &dyn Progress,
    ) -> Result<SnapshotRecord> {
        match self
            .backup_source_until(task, account, connector, progress, None)
            .await?
        {
            BackupEnd::Committed(s) => Ok(*s),
            BackupEnd::Paused { .. } => Err(Error::Invalid(
                "the connector paused a backup that had no time limit".into(),
            )),
        }
    }

    /// As [`Engine::backup_source`], but a run that reaches `deadline` pauses: what it
    /// stored is kept as the account's checkpoint, and the next run goes on from there
    /// (a Lambda function re-queues itself before its 15 minutes are up). A snapshot is
    /// committed only when a run completes the account, with the time the first run
    /// started.
    ///
    /// # Errors
    /// As [`Engine::backup_source`]; a checkpoint already stored stays for the next run.
    pub async fn backup_source_until(
        &self,
        task: &TaskRecord,
        account: &AccountInfo,
        connector: &dyn Connector,
        progress: &dyn Progress,
        deadline: Option<std::time::Instant>,
    ) -> Result<BackupEnd> {
        let vault = self.vault(task).await?;
        let parent = vault.latest(&account.id).await?;
        let checkpoint = vault
            .checkpoint(&account.id, parent.as_ref().map(|p| &p.id))
            .await?;
        let (taken_at, cursor, pauses) = match &checkpoint {
            Some(cp) => (cp.started_at, cp.cursor.clone(), cp.pauses),
            None => (
                self.ports.clock.now(),
                parent.as_ref().and_then(|p| p.cursor.clone()),
                0,
            ),
        };
        let mut writer = vault.writer(account.id.clone(), parent).await?;
        let start = checkpoint.as_ref().map(|cp| BlobRef::from(cp.root));
        if let Some(root) = &start {
            writer.adopt(root).await?;
        }
        let mut tree = AccountTree::open(writer, start)?;
        tree.deadline = deadline;
        progress.status("fetching changes");
        let next = connector
            .backup(account, cursor.as_deref(), &mut tree)
            .await?;
        progress.advance(tree.fetched_bytes());
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

    /// Restores items of `snap` into a source through its connector: by default into a new
    /// `Lifeboat Restore <timestamp>` folder of the account `to` (the snapshot's own account
    /// when `None`), in place when `opts.in_place`.
    ///
    /// # Errors
    /// A path not in the snapshot, or what the connector returns.
    pub async fn restore_to_source(
        &self,
        task: &TaskRecord,
        snap: &SnapshotRecord,
        to: Option<AccountId>,
        opts: &crate::RestoreOptions,
        connector: &dyn Connector,
    ) -> Result<SourceRestoreReport> {
        let vault = self.vault(task).await?;
        let prefix = if opts.label.is_empty() {
            domain::RESTORE_PREFIX
        } else {
            &opts.label
        };
        let label = (!opts.in_place).then(|| {
            domain::restore_label(prefix, opts.at.unwrap_or_else(|| self.ports.clock.now()))
        });
        let mut items = Vec::new();
        for inc in crate::browse::selection(&opts.include) {
            let entry = if inc.is_root() {
                let mut e = dir_entry(b"");
                e.subtree = Some(snap.root());
                e
            } else {
                vault
                    .lookup(&snap.root(), &inc)
                    .await
                    .map_err(crate::browse::not_found)?
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
            collect(&vault, inc, entry, &mut items).await?;
        }
        if !opts.filter.is_empty() {
            items = filtered(items, &opts.filter);
        }
        let job = SourceRestore {
            from: snap.account.clone(),
            to: to.unwrap_or_else(|| snap.account.clone()),
            label,
            on_conflict: opts.on_conflict,
            items,
        };
        connector.restore(&job, &RestoreContent { vault }).await
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

/// Lists `entry` and, for a folder, everything below it, parents first.
fn collect<'a>(
    vault: &'a Vault,
    at: ItemPath,
    entry: Entry,
    out: &'a mut Vec<(ItemPath, Entry)>,
) -> Boxed<'a, Result<()>> {
    Box::pin(async move {
        let subtree = entry.subtree;
        let is_dir = entry.kind == EntryKind::Dir;
        if !at.is_root() {
            out.push((at.clone(), entry));
        }
        if let (true, Some(sub)) = (is_dir, subtree) {
            let node = vault.read_tree(&sub).await?;
            for child in node.entries {
                let p = at.join(&child.name)?;
                collect(vault, p, child, out).await?;
            }
        }
        Ok(())
    })
}
