//! The account tree: the account as its previous snapshot left it, which a connector edits
//! into the new snapshot (see [`crate::connector`] for the conventions every connector
//! follows). Only the folders that changed are stored again; small items are sealed in
//! parallel batches, large ones streamed through the chunker.
//!
//! Memory follows the change, not the account: a folder is read from the vault when the
//! connector first looks into it (every accessor is async for that reason, so a folder not
//! read yet never looks empty), and a folder the connector is done with
//! ([`AccountTree::done_with`]) is stored and let go of. What is held is the folders being
//! worked on, each in its stored form, plus the batches of content on their way.

mod folder;
mod put;

use crate::{Error, Progress, Result};
use bytes::Bytes;
use domain::ItemPath;
use folder::{Delta, Folder, Need, Unread};
use std::collections::HashSet;
use std::sync::Arc;
use vault::{BlobKind, BlobRef, Entry, EntryKind, SnapshotRecord, SnapshotWriter, TreeTotals};

/// Small items are sealed together in batches of about this size (both cores busy, memory
/// bounded).
const BATCH_BYTES: usize = 32 * 1024 * 1024;
const BATCH_ITEMS: usize = 2048;

/// A small item waiting for the next batch: its path and content.
struct Pending {
    path: ItemPath,
    content: Bytes,
}

/// The account being backed up: the previous snapshot's items, edited by the connector.
/// See the module doc for how little of it is held.
pub struct AccountTree {
    writer: SnapshotWriter,
    root: Folder,
    /// What the stored tree this run starts from holds (the parent's or the checkpoint's).
    base: TreeTotals,
    /// How the tree's counts moved: what the parts read held leaves it when they are
    /// read, what the parts let go of hold comes back into it (see `store_root`).
    delta: Delta,
    /// Parts of the stored tree removed without being read: counted at the end.
    removed: Vec<Unread>,
    pending: Vec<Pending>,
    /// The paths in `pending`, so that a put checks for one in constant time (a folder of
    /// 100,000 files puts 100,000 items).
    pending_paths: HashSet<ItemPath>,
    pending_bytes: usize,
    fetched_bytes: u64,
    pub(crate) items_read: u64,
    /// When the run must stop and checkpoint (a Lambda run's time limit).
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) paused: bool,
    progress: Arc<dyn Progress>,
}

pub(crate) fn dir_entry(name: &[u8]) -> Entry {
    Entry::new(name.to_vec(), EntryKind::Dir)
}

/// An entry as a connector sees it: one whose stored content is damaged has no
/// fingerprint, so the connector reads it again and the fresh bytes are stored anew.
fn healed(w: &SnapshotWriter, mut e: Entry) -> Entry {
    if e.content.iter().any(|c| !w.is_sound(&c.id, BlobKind::Data)) {
        e.fingerprint = 0;
    }
    e
}

fn split(path: &ItemPath) -> Result<(ItemPath, &[u8])> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(Error::Invalid(
            "an item needs a name; the root is a folder".into(),
        )),
    }
}

/// The folder at `path` with `need` of it read (and the subfolders of every folder on the
/// way); `None` when there is none.
async fn walk_to<'a>(
    w: &mut SnapshotWriter,
    root: &'a mut Folder,
    delta: &mut Delta,
    path: &ItemPath,
    need: Need,
) -> Result<Option<&'a mut Folder>> {
    let mut f = root;
    for seg in path.segments() {
        folder::read(w, f, Need::Folders, delta).await?;
        match f.folders.as_mut().expect("read").get_mut(seg) {
            Some(child) => f = child,
            None => return Ok(None),
        }
    }
    folder::read(w, f, need, delta).await?;
    Ok(Some(f))
}

impl AccountTree {
    /// Opens the tree on a writer whose parent is the account's previous snapshot, at
    /// `start` (a paused run's checkpoint: its tree, and what that holds when known) or
    /// else at the parent's root. Reads nothing of the tree but, for a checkpoint of an
    /// earlier build, its counts.
    ///
    /// # Errors
    /// A storage failure or damage while counting a checkpoint's tree.
    pub(crate) async fn open(
        mut writer: SnapshotWriter,
        start: Option<(BlobRef, Option<TreeTotals>)>,
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
        let (root_ref, base) = match start {
            Some((r, Some(t))) => (Some(r), t),
            Some((r, None)) => {
                let all = Unread {
                    node: r,
                    items: true,
                    deep: true,
                };
                let d = folder::count_unread(&mut writer, all).await?;
                (Some(r), d.apply(TreeTotals::default()))
            }
            None => (
                writer.parent().map(|p| p.root()),
                writer
                    .parent()
                    .map(|p| p.stats.totals())
                    .unwrap_or_default(),
            ),
        };
        Ok(AccountTree {
            writer,
            root: Folder::unread(None, root_ref),
            base,
            delta: Delta::default(),
            removed: Vec::new(),
            pending: Vec::new(),
            pending_paths: HashSet::new(),
            pending_bytes: 0,
            fetched_bytes: 0,
            items_read: 0,
            deadline: None,
            paused: false,
            progress,
        })
    }

    /// Whether the run's time is up: a connector checks this between batches and, when
    /// it is, calls [`AccountTree::pause`] and returns the cursor of what it has applied
    /// so far. The next run goes on from there with this same tree.
    pub fn time_is_up(&self) -> bool {
        self.deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// Whether this run has a deadline, and so may end paused: a connector that loses its
    /// source part way (after progress) keeps that progress by pausing only when the run
    /// can pause; one without a deadline (a backup from the command line) must fail.
    pub fn can_pause(&self) -> bool {
        self.deadline.is_some()
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

    async fn folder_at(&mut self, path: &ItemPath, need: Need) -> Result<Option<&mut Folder>> {
        walk_to(
            &mut self.writer,
            &mut self.root,
            &mut self.delta,
            path,
            need,
        )
        .await
    }

    /// The folder at `path` as read so far: call only after [`AccountTree::folder_at`]
    /// read the way to it.
    fn read_so_far(&self, path: &ItemPath) -> Option<&Folder> {
        let mut f = &self.root;
        for seg in path.segments() {
            f = f.folders.as_ref()?.get(seg)?;
        }
        Some(f)
    }

    /// The folder at `path` for a change: it and every folder on the way are read whole
    /// and marked changed, so that finishing stores them again. Creates missing folders
    /// when `create`.
    async fn folder_mut(&mut self, path: &ItemPath, create: bool) -> Result<Option<&mut Folder>> {
        let AccountTree {
            writer,
            root,
            delta,
            ..
        } = self;
        let mut f = root;
        folder::read(writer, f, Need::All, delta).await?;
        f.changed = true;
        for seg in path.segments() {
            let folders = f.folders.as_mut().expect("read whole");
            if !folders.contains_key(seg) {
                if !create {
                    return Ok(None);
                }
                folders.insert(seg.clone(), Folder::new(Some(dir_entry(seg))));
            }
            f = folders.get_mut(seg).expect("present");
            folder::read(writer, f, Need::All, delta).await?;
            f.changed = true;
        }
        Ok(Some(f))
    }

    /// The entry of the folder at `path` (which exists), to change it: only the folders
    /// above it change (a folder's own entry is stored in its parent), so the folder is
    /// not read.
    async fn folder_entry_mut(&mut self, path: &ItemPath) -> Result<&mut Option<Entry>> {
        let (parent, name) = split(path)?;
        let p = self.folder_mut(&parent, false).await?.expect("it exists");
        let f = p.folders.as_mut().expect("read whole");
        Ok(&mut f.get_mut(name).expect("it exists").entry)
    }

    /// Whether a folder exists at `path` (the root always does).
    ///
    /// # Errors
    /// A storage failure or damage while reading the folders above it.
    pub async fn has_folder(&mut self, path: &ItemPath) -> Result<bool> {
        Ok(self.folder_at(path, Need::Nothing).await?.is_some())
    }

    /// Every folder below the root, parents before children. Reads every folder's list of
    /// subfolders, none of their items.
    ///
    /// # Errors
    /// A storage failure or damage in a folder's node.
    pub async fn folder_paths(&mut self) -> Result<Vec<ItemPath>> {
        let mut out = Vec::new();
        self.collect_folders(ItemPath::root(), &mut out).await?;
        Ok(out)
    }

    fn collect_folders<'a>(
        &'a mut self,
        at: ItemPath,
        out: &'a mut Vec<ItemPath>,
    ) -> Boxed<'a, Result<()>> {
        Box::pin(async move {
            for name in self.subfolders(&at).await? {
                let p = at.join(&name)?;
                out.push(p.clone());
                self.collect_folders(p, out).await?;
            }
            Ok(())
        })
    }

    /// The names of the folders directly in `path`.
    ///
    /// # Errors
    /// A storage failure or damage while reading the folders.
    pub async fn subfolders(&mut self, path: &ItemPath) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .folder_at(path, Need::Folders)
            .await?
            .and_then(|f| f.folders.as_ref())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// The items (not folders) directly in `path`, by name; decoded one at a time, so a
    /// folder of any size can be gone through.
    ///
    /// # Errors
    /// A storage failure or damage while reading the folder.
    pub async fn items(&mut self, path: &ItemPath) -> Result<impl Iterator<Item = Entry> + '_> {
        self.folder_at(path, Need::All).await?;
        let this: &Self = self;
        Ok(this
            .read_so_far(path)
            .and_then(|f| f.items.as_ref())
            .into_iter()
            .flat_map(|items| items.iter())
            .map(move |e| healed(&this.writer, e)))
    }

    /// The item at `path`, if there is one.
    ///
    /// # Errors
    /// A storage failure or damage while reading its folder.
    pub async fn item(&mut self, path: &ItemPath) -> Result<Option<Entry>> {
        let Ok((parent, name)) = split(path) else {
            return Ok(None);
        };
        let e = match self.folder_at(&parent, Need::All).await? {
            Some(f) => f.items.as_ref().expect("read").get(name),
            None => None,
        };
        Ok(e.map(|e| healed(&self.writer, e)))
    }

    /// The metadata of the folder at `path`.
    ///
    /// # Errors
    /// A storage failure or damage while reading the folders above it.
    pub async fn folder_meta(&mut self, path: &ItemPath) -> Result<Option<Vec<(String, String)>>> {
        Ok(self
            .folder_at(path, Need::Nothing)
            .await?
            .and_then(|f| f.entry.as_ref())
            .map(|e| e.meta.clone()))
    }

    /// Creates the folder at `path` and any missing parents.
    ///
    /// # Errors
    /// `Invalid` when an item already has that name.
    pub async fn ensure_folder(&mut self, path: &ItemPath) -> Result<()> {
        if self.has_folder(path).await? {
            return Ok(());
        }
        self.check_no_item_on_the_way(path).await?;
        self.folder_mut(path, true).await?;
        Ok(())
    }

    async fn check_no_item_on_the_way(&mut self, path: &ItemPath) -> Result<()> {
        let AccountTree {
            writer,
            root,
            delta,
            ..
        } = self;
        let mut f = root;
        for (i, seg) in path.segments().iter().enumerate() {
            folder::read(writer, f, Need::Folders, delta).await?;
            if !f.folders.as_ref().expect("read").contains_key(seg) {
                folder::read(writer, f, Need::All, delta).await?;
                if f.items.as_ref().expect("read").contains(seg) {
                    let mut at = ItemPath::root();
                    for s in &path.segments()[..=i] {
                        at = at.join(s)?;
                    }
                    return Err(Error::Invalid(format!(
                        "{at} is an item, so it cannot also be a folder"
                    )));
                }
                return Ok(());
            }
            f = f
                .folders
                .as_mut()
                .expect("read")
                .get_mut(seg)
                .expect("present");
        }
        Ok(())
    }

    /// Sets a folder's metadata (creating the folder if needed); no change if equal.
    ///
    /// # Errors
    /// `Invalid` for the root or when an item has that name.
    pub async fn set_folder_meta(
        &mut self,
        path: &ItemPath,
        meta: Vec<(String, String)>,
    ) -> Result<()> {
        if path.is_root() {
            return Err(Error::Invalid("the account root has no metadata".into()));
        }
        if self.folder_meta(path).await?.as_ref() == Some(&meta) {
            return Ok(());
        }
        self.ensure_folder(path).await?;
        if let Some(e) = self.folder_entry_mut(path).await?.as_mut() {
            e.meta = meta;
        }
        Ok(())
    }

    /// Changes a folder's own entry (a local folder's time and permissions), creating the
    /// folder if needed; the folder is stored again only if something changed.
    ///
    /// # Errors
    /// `Invalid` for the root or when an item has that name, or if `change` alters the
    /// name or kind.
    pub async fn update_folder(
        &mut self,
        path: &ItemPath,
        change: impl FnOnce(&mut Entry),
    ) -> Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid("the account root has no entry".into()))?;
        let before = self
            .folder_at(path, Need::Nothing)
            .await?
            .map(|f| f.entry.clone().unwrap_or_else(|| dir_entry(name)));
        let mut after = before.clone().unwrap_or_else(|| dir_entry(name));
        change(&mut after);
        if after.name != name || after.kind != EntryKind::Dir {
            return Err(Error::Invalid(format!(
                "{path}: a folder update cannot change its name or kind"
            )));
        }
        if before.as_ref() == Some(&after) {
            return Ok(());
        }
        self.ensure_folder(path).await?;
        *self.folder_entry_mut(path).await? = Some(after);
        Ok(())
    }

    /// Reports progress for content the connector found unchanged (not read, still in the
    /// snapshot), so that a progress bar counts the whole account.
    pub fn advance(&self, bytes: u64) {
        self.progress.advance(bytes);
    }

    /// Changes an item's metadata (flags, labels, its folder-independent fields) without
    /// touching its content. Returns whether the item exists; the folder is stored again
    /// only if `change` actually changed something.
    ///
    /// # Errors
    /// `Invalid` if `change` alters the content, size or name (use `put_item` for that).
    pub async fn update_item(
        &mut self,
        path: &ItemPath,
        change: impl FnOnce(&mut Entry),
    ) -> Result<bool> {
        let Some(before) = self.item(path).await? else {
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
            let (parent, _) = split(path)?;
            self.put_in(&parent, after).await?;
        }
        Ok(true)
    }

    /// Removes the item or folder (with everything in it) at `path`. Returns whether
    /// there was one.
    ///
    /// # Errors
    /// A storage failure while sending batched content or reading the folder above.
    pub async fn remove(&mut self, path: &ItemPath) -> Result<bool> {
        let Ok((parent, name)) = split(path) else {
            return Err(Error::Invalid("the account root cannot be removed".into()));
        };
        if self.item(path).await?.is_none() && !self.has_folder(path).await? {
            return Ok(false);
        }
        if self.pending.iter().any(|p| p.path.starts_with(path)) {
            self.flush().await?;
        }
        let f = self.folder_mut(&parent, false).await?.expect("exists");
        if f.items.as_mut().expect("read whole").remove(name).is_some() {
            return Ok(true);
        }
        let gone = f.folders.as_mut().expect("read whole").remove(name);
        if let Some(gone) = &gone {
            gone.unread_parts(&mut self.removed);
        }
        Ok(gone.is_some())
    }

    /// Moves an item or a folder to `to` (a mail moved to another folder keeps its
    /// content; nothing is fetched or stored again, and a folder moved is not read).
    /// Replaces what was at `to`.
    ///
    /// # Errors
    /// `NotFound` when nothing is at `from`; `Invalid` when moving a folder into itself.
    pub async fn rename(&mut self, from: &ItemPath, to: &ItemPath) -> Result<()> {
        let (from_parent, from_name) = split(from)?;
        let (to_parent, to_name) = split(to)?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(from) {
            return Err(Error::Invalid(format!(
                "{from} cannot be moved into itself"
            )));
        }
        if self.item(from).await?.is_none() && !self.has_folder(from).await? {
            return Err(Error::NotFound(format!("{from} is not in the account")));
        }
        self.check_no_item_on_the_way(&to_parent).await?;
        if self
            .pending
            .iter()
            .any(|p| p.path.starts_with(from) || p.path.starts_with(to))
        {
            self.flush().await?;
        }
        let src = self.folder_mut(&from_parent, false).await?.expect("exists");
        let item = src.items.as_mut().expect("read whole").remove(from_name);
        let folder = src.folders.as_mut().expect("read whole").remove(from_name);
        let dst = self.folder_mut(&to_parent, true).await?.expect("created");
        let (items, folders) = (
            dst.items.as_mut().expect("read whole"),
            dst.folders.as_mut().expect("read whole"),
        );
        items.remove(to_name);
        let replaced = folders.remove(to_name);
        if let Some(mut e) = item {
            e.name = to_name.to_vec();
            items.put(e)?;
        }
        if let Some(mut f) = folder {
            if let Some(e) = f.entry.as_mut() {
                e.name = to_name.to_vec();
            }
            folders.insert(to_name.to_vec(), f);
        }
        if let Some(replaced) = replaced {
            replaced.unread_parts(&mut self.removed);
        }
        Ok(())
    }

    /// Tells the tree the connector is done with the folder at `path` for this run: what
    /// changed in it is stored now (content still batched under it first), and it is let
    /// go of, so that a walk of a large account holds only the folders on its way. Looking
    /// into it again later reads it back. The root is stored at the end, not here.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn done_with(&mut self, path: &ItemPath) -> Result<()> {
        if path.is_root() {
            return Ok(());
        }
        if self.pending.iter().any(|p| p.path.starts_with(path)) {
            self.flush().await?;
        }
        let AccountTree {
            writer,
            root,
            delta,
            ..
        } = self;
        let Some(f) = walk_to(writer, root, delta, path, Need::Nothing).await? else {
            return Ok(());
        };
        if f.folders.is_none() && f.items.is_none() {
            return Ok(());
        }
        let r = folder::store(writer, f, delta).await?;
        // What it holds now goes back into the counts with it.
        delta.add(f.read_totals());
        *f = Folder::unread(f.entry.take(), Some(r));
        Ok(())
    }

    /// Records that an item could not be backed up this time (it keeps its previous
    /// version, if it had one); shown with the snapshot.
    pub fn record_error(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.writer.record_error(path, message);
    }

    /// Records what a report should say about an item that is not a failure (it vanished
    /// from the source between listing and reading; it was stored with a caveat): shown
    /// with the snapshot, not counted among its errors.
    pub fn record_note(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.writer.record_note(path, message);
    }

    /// Bytes of content the connector handed over in this run.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes
    }

    /// Stores the tree and returns its root and what it holds: the stored tree's counts,
    /// moved by what was read, let go of and removed.
    async fn store_root(&mut self) -> Result<(BlobRef, TreeTotals)> {
        self.flush().await?;
        let root = folder::store(&mut self.writer, &mut self.root, &mut self.delta).await?;
        for part in std::mem::take(&mut self.removed) {
            let gone = folder::count_unread(&mut self.writer, part).await?;
            self.delta.sub(gone);
        }
        let mut d = self.delta;
        d.add(self.root.read_totals());
        Ok((root, d.apply(self.base)))
    }

    /// Stores the tree so far and records it, with `cursor`, as the account's checkpoint.
    pub(crate) async fn checkpoint(
        mut self,
        started_at: chrono::DateTime<chrono::Utc>,
        cursor: Option<String>,
        pauses: u32,
    ) -> Result<()> {
        let (root, totals) = self.store_root().await?;
        Ok(self
            .writer
            .checkpoint(root, totals, cursor, started_at, pauses)
            .await?)
    }

    /// Stores the changed folders and commits the snapshot with `cursor`.
    pub(crate) async fn finish(
        mut self,
        taken_at: chrono::DateTime<chrono::Utc>,
        cursor: Option<String>,
    ) -> Result<SnapshotRecord> {
        let (root, totals) = self.store_root().await?;
        let read = self.items_read;
        let stats = self.writer.stats_mut();
        stats.items = totals.items;
        stats.folders = totals.folders;
        stats.bytes = totals.bytes;
        stats.items_read = read;
        Ok(self.writer.commit(root, taken_at, cursor).await?)
    }
}

pub(crate) type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
