//! Putting items into the account tree: small content batched and sealed in parallel
//! batches, large content streamed through the chunker, links; and the batch's flush,
//! which gives the entries put their content.

use super::{split, AccountTree, Pending, BATCH_BYTES, BATCH_ITEMS};
use crate::{Error, ItemInfo, Result};
use bytes::Bytes;
use domain::ItemPath;
use std::io::Read;
use vault::{BlobRef, Entry, EntryKind, SMALL_ITEM};

impl AccountTree {
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
        self.put_in(&parent, entry).await?;
        if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_ITEMS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Puts `entry` into the folder `parent`, creating it if needed.
    pub(super) async fn put_in(&mut self, parent: &ItemPath, entry: Entry) -> Result<()> {
        let f = self.folder_mut(parent, true).await?.expect("created");
        f.items.as_mut().expect("read whole").put(entry)
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
        self.insert_streamed(&parent, name, entry, content, size)
            .await
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
        self.insert_streamed(&parent, name, entry, content, size)
            .await?;
        Ok(Some(size))
    }

    fn item_entry(path: &ItemPath, info: ItemInfo) -> Result<Entry> {
        let (_, name) = split(path)?;
        let mut e = Entry::new(name.to_vec(), EntryKind::File);
        e.mtime_ns = info.mtime_ns;
        e.fingerprint = info.fingerprint;
        e.meta = info.meta;
        Ok(e)
    }

    /// Checks that an item may be put at `path` and sends content still waiting under it
    /// (it would otherwise land on the new entry).
    async fn check_item_path<'p>(&mut self, path: &'p ItemPath) -> Result<(ItemPath, &'p [u8])> {
        let (parent, name) = split(path)?;
        self.check_no_item_on_the_way(&parent).await?;
        if self.has_folder(path).await? {
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
                let kept = if self.item(path).await?.is_some() {
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

    async fn insert_streamed(
        &mut self,
        parent: &ItemPath,
        name: &[u8],
        mut entry: Entry,
        content: Vec<BlobRef>,
        size: u64,
    ) -> Result<()> {
        self.fetched_bytes += size;
        self.items_read += 1;
        self.progress.advance(size);
        entry.name = name.to_vec();
        entry.size = size;
        entry.content = content;
        self.put_in(parent, entry).await
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
        self.put_in(&parent, entry).await
    }

    pub(super) async fn flush(&mut self) -> Result<()> {
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
            let (parent, name) = split(&p.path)?;
            // Every path still pending exists: removing or moving one sends it first.
            if let Some(f) = self.folder_mut(&parent, false).await? {
                let items = f.items.as_mut().expect("read whole");
                if let Some(mut e) = items.get(name) {
                    e.content = vec![r];
                    items.put(e)?;
                }
            }
        }
        Ok(())
    }
}
