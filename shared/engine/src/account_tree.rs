//! The account tree: the account as its previous snapshot left it, which a connector edits
//! into the new snapshot (see [`crate::connector`] for the conventions every connector
//! follows). Only the folders that changed are stored again; small items are sealed in
//! parallel batches, large ones streamed through the chunker, so memory stays bounded
//! whatever the account's size.

use crate::{Error, ItemInfo, Progress, Result};
use bytes::Bytes;
use domain::ItemPath;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use vault::{
    BlobKind, BlobRef, Entry, EntryKind, Node, SnapshotRecord, SnapshotWriter, SMALL_ITEM,
};

/// Small items are sealed together in batches of about this size (both cores busy, memory
/// bounded).
const BATCH_BYTES: usize = 32 * 1024 * 1024;
const BATCH_ITEMS: usize = 2048;

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
                let mut e = e.clone();
                if e.content.iter().any(|c| !w.is_sound(&c.id, BlobKind::Data)) {
                    // Its stored content is damaged: an entry without a fingerprint is
                    // one the connector reads again, and the fresh bytes are stored anew.
                    e.fingerprint = 0;
                }
                f.items.insert(e.name.clone(), e);
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

impl AccountTree {
    /// Opens the tree on a writer whose parent is the account's previous snapshot, at
    /// `start` (a paused run's checkpoint, already adopted by the writer) or else at the
    /// parent's root.
    pub(crate) fn open(
        writer: SnapshotWriter,
        start: Option<BlobRef>,
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
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
        let entry = Self::item_entry(path, info)?;
        self.put_entry(path, entry, content).await
    }

    /// As [`AccountTree::put_item`] for an item whose entry the connector builds itself
    /// (a local file's permissions, a link's target): `entry`'s name, size and content are
    /// set here from `path` and `content`.
    ///
    /// # Errors
    /// As [`AccountTree::put_item`].
    pub async fn put_entry(
        &mut self,
        path: &ItemPath,
        mut entry: Entry,
        content: Bytes,
    ) -> Result<()> {
        if content.len() > SMALL_ITEM {
            let len = content.len() as u64;
            return match self
                .put_entry_stream(path, entry, std::io::Cursor::new(content))
                .await?
            {
                Some(n) if n == len => Ok(()),
                _ => Err(Error::Invalid(format!(
                    "{path}: content changed while stored"
                ))),
            };
        }
        let (parent, name) = self.check_item_path(path).await?;
        entry.name = name.to_vec();
        entry.size = content.len() as u64;
        entry.content.clear();
        self.fetched_bytes += content.len() as u64;
        self.items_read += 1;
        self.progress.advance(content.len() as u64);
        if !content.is_empty() {
            self.pending_bytes += content.len();
            self.pending_paths.insert(path.clone());
            self.pending.push(Pending {
                path: path.clone(),
                content,
            });
        }
        self.folder_mut(&parent, true)
            .expect("created")
            .items
            .insert(name.to_vec(), entry);
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
        let entry = Self::item_entry(path, info)?;
        let (parent, name) = self.check_item_path(path).await?;
        let Some((content, size)) = self.store_stream(path, reader).await? else {
            return Ok(());
        };
        if size != expected {
            self.record_error(
                path,
                format!("the source sent {size} bytes of an item of {expected}; kept the previous version"),
            );
            return Ok(());
        }
        self.insert_streamed(&parent, name, entry, content, size);
        Ok(())
    }

    /// As [`AccountTree::put_item_stream`] for a source that announces no size (a local
    /// file, whose length is whatever reading it gives): `entry` is stored with the size
    /// read, which is returned. `None` when the reader failed: the failure is recorded and
    /// the item keeps its previous version, if it had one.
    ///
    /// # Errors
    /// `Invalid` when a folder has that name; a storage failure.
    pub async fn put_entry_stream<R: Read + Send + 'static>(
        &mut self,
        path: &ItemPath,
        entry: Entry,
        reader: R,
    ) -> Result<Option<u64>> {
        let (parent, name) = self.check_item_path(path).await?;
        let Some((content, size)) = self.store_stream(path, reader).await? else {
            return Ok(None);
        };
        self.insert_streamed(&parent, name, entry, content, size);
        Ok(Some(size))
    }

    fn item_entry(path: &ItemPath, info: ItemInfo) -> Result<Entry> {
        let (_, name) = Self::split(path)?;
        let mut e = Entry::new(name.to_vec(), EntryKind::File);
        e.mtime_ns = info.mtime_ns;
        e.fingerprint = info.fingerprint;
        e.meta = info.meta;
        Ok(e)
    }

    /// Checks that an item may be put at `path` and sends content still waiting under it
    /// (it would otherwise land on the new entry).
    async fn check_item_path<'p>(&mut self, path: &'p ItemPath) -> Result<(ItemPath, &'p [u8])> {
        let (parent, name) = Self::split(path)?;
        self.check_no_item_on_the_way(&parent)?;
        if self.folder(path).is_some() {
            return Err(Error::Invalid(format!("{path} is a folder, not an item")));
        }
        if self.pending_paths.contains(path) {
            self.flush().await?;
        }
        Ok((parent, name))
    }

    /// Streams content into the vault; `None` (and the failure recorded) when the reader
    /// failed.
    async fn store_stream<R: Read + Send + 'static>(
        &mut self,
        path: &ItemPath,
        reader: R,
    ) -> Result<Option<(Vec<BlobRef>, u64)>> {
        match self.writer.store_stream(reader, path.to_string()).await {
            Ok(v) => Ok(Some(v)),
            Err(vault::Error::Source { source, .. }) => {
                let kept = if self.item(path).is_some() {
                    "; the previous version is kept"
                } else {
                    ""
                };
                self.record_error(
                    path,
                    format!("could not be read from the source: {source}{kept}"),
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn insert_streamed(
        &mut self,
        parent: &ItemPath,
        name: &[u8],
        mut entry: Entry,
        content: Vec<BlobRef>,
        size: u64,
    ) {
        self.fetched_bytes += size;
        self.items_read += 1;
        self.progress.advance(size);
        entry.name = name.to_vec();
        entry.size = size;
        entry.content = content;
        self.folder_mut(parent, true)
            .expect("created")
            .items
            .insert(name.to_vec(), entry);
    }

    /// Stores a symbolic link (a local folder's; no SaaS source has them).
    ///
    /// # Errors
    /// `Invalid` when a folder has that name.
    pub async fn put_link(
        &mut self,
        path: &ItemPath,
        mut entry: Entry,
        target: Vec<u8>,
    ) -> Result<()> {
        let (parent, name) = self.check_item_path(path).await?;
        entry.name = name.to_vec();
        entry.kind = EntryKind::Symlink;
        entry.size = 0;
        entry.content.clear();
        entry.link = Some(target);
        self.folder_mut(&parent, true)
            .expect("created")
            .items
            .insert(name.to_vec(), entry);
        Ok(())
    }

    /// Changes a folder's own entry (a local folder's time and permissions), creating the
    /// folder if needed; the folder is stored again only if something changed.
    ///
    /// # Errors
    /// `Invalid` for the root or when an item has that name, or if `change` alters the
    /// name or kind.
    pub fn update_folder(
        &mut self,
        path: &ItemPath,
        change: impl FnOnce(&mut Entry),
    ) -> Result<()> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid("the account root has no entry".into()))?;
        let before = self
            .folder(path)
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
        self.ensure_folder(path)?;
        let f = self.folder_mut(path, false).expect("just ensured");
        f.entry = Some(after);
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
        self.pending_paths.clear();
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
    pub(crate) async fn checkpoint(
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

pub(crate) type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn store_folder(w: &mut SnapshotWriter, f: Folder) -> Boxed<'_, Result<BlobRef>> {
    Box::pin(async move {
        if let Some(r) = f.unchanged {
            // A node found damaged is written again from the entries held here.
            if w.is_sound(&r.id, BlobKind::Tree) {
                return Ok(r);
            }
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
