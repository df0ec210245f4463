//! The `files` source: a local folder backed up as one account. Also what the benchmark
//! measures, so its hot path matters: unchanged files (same size, modification time, inode
//! and change time as in the parent snapshot) are not read at all, small files are read and
//! sealed in parallel batches, large files are streamed through the chunker.

use crate::tasks::FILES_ACCOUNT;
use crate::{Engine, Error, Progress, Result, SourceConfig, TaskRecord};
use domain::{AccountId, ItemPath};
use rayon::prelude::*;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vault::{BlobRef, Entry, EntryKind, Node, SnapshotRecord, SnapshotWriter, SMALL_ITEM};

/// Small files are read and sealed together in batches of about this many bytes: large
/// enough to keep both cores busy, small enough to bound memory.
const BATCH_BYTES: usize = 32 * 1024 * 1024;
const BATCH_FILES: usize = 2048;

impl Engine {
    /// Backs up one account of a task (for a `files` task, its folder) as a new snapshot.
    ///
    /// # Errors
    /// When the folder itself cannot be read, or storage fails. Single unreadable items
    /// are recorded in the snapshot's error list and do not fail it.
    pub async fn backup_account(
        &self,
        task: &TaskRecord,
        account: &AccountId,
        progress: &dyn Progress,
    ) -> Result<SnapshotRecord> {
        let vault = self.vault(task).await?;
        let parent = vault.latest(account).await?;
        let taken_at = self.ports.clock.now();
        match &task.source {
            SourceConfig::Source { source, .. } => Err(Error::Invalid(format!(
                "task {} backs up a {source} source; back it up through its connector",
                task.name
            ))),
            SourceConfig::Files { path } => {
                if account.as_str() != FILES_ACCOUNT {
                    return Err(Error::NotFound(format!(
                        "task {} has one account, {FILES_ACCOUNT}",
                        task.name
                    )));
                }
                let meta = fs::metadata(path).map_err(|e| {
                    Error::io(format!("cannot read the folder {}", path.display()), e)
                })?;
                if !meta.is_dir() {
                    return Err(Error::Invalid(format!(
                        "{} is not a folder; a files task backs up a folder",
                        path.display()
                    )));
                }
                let mut w = vault.writer(account.clone(), parent).await?;
                let parent_root = w
                    .parent()
                    .map(|p| p.root())
                    .and_then(|r| w.parent_node(&r.id));
                let root =
                    backup_dir(&mut w, path, &ItemPath::root(), parent_root, progress).await?;
                Ok(w.commit(root, taken_at, None).await?)
            }
        }
    }
}

/// What changes when a file's content changes: used to skip unchanged files.
fn fingerprint(m: &Metadata) -> u64 {
    let mut h = blake3::Hasher::new();
    for v in [m.dev(), m.ino(), m.ctime() as u64, m.ctime_nsec() as u64] {
        h.update(&v.to_le_bytes());
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

fn file_entry(name: &[u8], m: &Metadata) -> Entry {
    let mut e = Entry::new(name.to_vec(), EntryKind::File);
    e.size = m.len();
    e.mtime_ns = mtime_ns(m);
    e.mode = m.permissions().mode() & 0o7777;
    e.fingerprint = fingerprint(m);
    e
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && mtime_ns(a) == mtime_ns(b) && a.ino() == b.ino()
}

/// A small file waiting to be read in the next batch.
struct Pending {
    slot: usize,
    path: PathBuf,
    item: ItemPath,
    meta: Metadata,
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn backup_dir<'a>(
    w: &'a mut SnapshotWriter,
    dir: &'a Path,
    at: &'a ItemPath,
    parent: Option<Arc<Node>>,
    progress: &'a dyn Progress,
) -> Boxed<'a, Result<BlobRef>> {
    Box::pin(async move {
        let mut names: Vec<(Vec<u8>, PathBuf)> = match fs::read_dir(dir) {
            Ok(rd) => {
                let mut v = Vec::new();
                for ent in rd {
                    match ent {
                        Ok(ent) => v.push((ent.file_name().as_bytes().to_vec(), ent.path())),
                        Err(e) => w.record_error(at, format!("folder listing failed: {e}")),
                    }
                }
                v
            }
            Err(e) => {
                // Nothing lost: an unreadable folder keeps its content from the parent
                // snapshot, and the failure is reported.
                w.record_error(at, format!("folder cannot be read: {e}"));
                if let Some(p) = parent {
                    return w.store_tree((*p).clone()).await.map_err(Into::into);
                }
                return w.store_tree(Node::default()).await.map_err(Into::into);
            }
        };
        names.sort();
        w.stats_mut().folders += 1;

        let mut slots: Vec<Option<Entry>> = Vec::with_capacity(names.len());
        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_bytes = 0usize;
        for (name, path) in names {
            let item = match at.join(&name) {
                Ok(p) => p,
                Err(e) => {
                    w.record_error(at, format!("skipped a name that cannot be stored: {e}"));
                    continue;
                }
            };
            let prev = parent.as_ref().and_then(|p| p.find(&name)).cloned();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    w.record_error(&item, format!("cannot be read: {e}"));
                    count_kept(w, prev.as_ref());
                    slots.push(prev);
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let sub_parent = prev
                    .as_ref()
                    .filter(|p| p.kind == EntryKind::Dir)
                    .and_then(|p| p.subtree)
                    .and_then(|r| w.parent_node(&r.id));
                let sub = backup_dir(w, &path, &item, sub_parent, progress).await?;
                let mut e = Entry::new(name, EntryKind::Dir);
                e.mtime_ns = mtime_ns(&meta);
                e.mode = meta.permissions().mode() & 0o7777;
                e.subtree = Some(sub);
                slots.push(Some(e));
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(target) => {
                        let mut e = Entry::new(name, EntryKind::Symlink);
                        e.mtime_ns = mtime_ns(&meta);
                        e.link = Some(target.as_os_str().as_bytes().to_vec());
                        w.stats_mut().items += 1;
                        slots.push(Some(e));
                    }
                    Err(e) => {
                        w.record_error(&item, format!("link cannot be read: {e}"));
                        count_kept(w, prev.as_ref());
                        slots.push(prev);
                    }
                }
            } else if ft.is_file() {
                let e = file_entry(&name, &meta);
                if let Some(p) = prev.as_ref().filter(|p| {
                    p.kind == EntryKind::File
                        && p.size == e.size
                        && p.mtime_ns == e.mtime_ns
                        && p.fingerprint == e.fingerprint
                }) {
                    let mut reused = p.clone();
                    reused.mode = e.mode;
                    let st = w.stats_mut();
                    st.items += 1;
                    st.bytes += e.size;
                    progress.advance(e.size);
                    slots.push(Some(reused));
                } else if (e.size as usize) <= SMALL_ITEM {
                    pending_bytes += e.size as usize;
                    pending.push(Pending {
                        slot: slots.len(),
                        path,
                        item,
                        meta,
                    });
                    slots.push(Some(e));
                    if pending_bytes >= BATCH_BYTES || pending.len() >= BATCH_FILES {
                        store_small(
                            w,
                            std::mem::take(&mut pending),
                            &mut slots,
                            &parent,
                            progress,
                        )
                        .await?;
                        pending_bytes = 0;
                    }
                } else {
                    let stored = store_large(w, &path, &item, &meta, prev, progress).await?;
                    slots.push(stored);
                }
            } else {
                w.record_error(
                    &item,
                    "skipped: not a regular file, folder or link (device, socket or pipe)",
                );
            }
        }
        if !pending.is_empty() {
            store_small(w, pending, &mut slots, &parent, progress).await?;
        }
        let node = Node {
            entries: slots.into_iter().flatten().collect(),
        };
        Ok(w.store_tree(node).await?)
    })
}

/// A file read whole: its bytes, its metadata after the read, and whether it held still.
type StableRead = (Vec<u8>, Metadata, bool);

/// Counts an item kept from the parent snapshot in place of one that could not be read
/// (a kept folder counts as one folder: its content is not walked again).
fn count_kept(w: &mut SnapshotWriter, prev: Option<&Entry>) {
    let Some(e) = prev else { return };
    let st = w.stats_mut();
    match e.kind {
        EntryKind::Dir => st.folders += 1,
        _ => {
            st.items += 1;
            st.bytes += e.size;
        }
    }
}

/// Reads a file whole and checks it held still while being read (its metadata just after
/// opening equals its metadata after reading), retrying once.
fn read_stable(path: &Path, expected_len: u64) -> std::io::Result<StableRead> {
    let mut last = None;
    for _ in 0..2 {
        let mut f = File::open(path)?;
        let opened = f.metadata()?;
        let mut buf = Vec::with_capacity(opened.len().max(expected_len) as usize + 1);
        f.read_to_end(&mut buf)?;
        let after = f.metadata()?;
        if same_version(&opened, &after) && buf.len() as u64 == after.len() {
            return Ok((buf, after, true));
        }
        last = Some((buf, after));
    }
    let (buf, after) = last.expect("the loop ran");
    Ok((buf, after, false))
}

async fn store_small(
    w: &mut SnapshotWriter,
    batch: Vec<Pending>,
    slots: &mut [Option<Entry>],
    parent: &Option<Arc<Node>>,
    progress: &dyn Progress,
) -> Result<()> {
    let read: Vec<(Pending, std::io::Result<StableRead>)> =
        tokio::task::spawn_blocking(move || {
            batch
                .into_par_iter()
                .map(|p| {
                    let r = read_stable(&p.path, p.meta.len());
                    (p, r)
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Invalid(format!("file reader failed: {e}")))?;
    let mut datas = Vec::new();
    let mut targets = Vec::new();
    for (p, r) in read {
        match r {
            Ok((data, after, stable)) => {
                if !stable {
                    w.record_error(
                        &p.item,
                        "changed while being read; stored as read, the next backup takes the settled version",
                    );
                }
                let name = p.item.file_name().unwrap_or_default().to_vec();
                let mut e = file_entry(&name, &after);
                e.size = data.len() as u64;
                if !stable {
                    // Never let an unsettled read pass as unchanged next time.
                    e.fingerprint = 0;
                }
                slots[p.slot] = Some(e);
                targets.push(p.slot);
                datas.push(data);
            }
            Err(err) => {
                let name = p.item.file_name().unwrap_or_default();
                let prev = parent.as_ref().and_then(|n| n.find(name)).cloned();
                let kept = if prev.is_some() {
                    "; the previous version is kept"
                } else {
                    ""
                };
                w.record_error(&p.item, format!("cannot be read: {err}{kept}"));
                count_kept(w, prev.as_ref());
                slots[p.slot] = prev;
            }
        }
    }
    let sizes: Vec<u64> = datas.iter().map(|d| d.len() as u64).collect();
    let refs = w.store_batch(datas).await?;
    for ((slot, r), size) in targets.into_iter().zip(refs).zip(sizes) {
        if let Some(e) = slots[slot].as_mut() {
            e.content = if size == 0 { Vec::new() } else { vec![r] };
        }
        let st = w.stats_mut();
        st.items += 1;
        st.items_read += 1;
        st.bytes += size;
        progress.advance(size);
    }
    Ok(())
}

async fn store_large(
    w: &mut SnapshotWriter,
    path: &Path,
    item: &ItemPath,
    before: &Metadata,
    prev: Option<Entry>,
    progress: &dyn Progress,
) -> Result<Option<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let kept = if prev.is_some() {
                "; the previous version is kept"
            } else {
                ""
            };
            w.record_error(item, format!("cannot be read: {e}{kept}"));
            count_kept(w, prev.as_ref());
            return Ok(prev);
        }
    };
    let reader = file
        .try_clone()
        .map_err(|e| Error::io(item.to_string(), e))?;
    match w.store_stream(reader, item.to_string()).await {
        Ok((refs, len)) => {
            let after = file
                .metadata()
                .map_err(|e| Error::io(item.to_string(), e))?;
            let stable = same_version(before, &after) && len == after.len();
            if !stable {
                w.record_error(
                    item,
                    "changed while being read; stored as read, the next backup takes the settled version",
                );
            }
            let name = item.file_name().unwrap_or_default().to_vec();
            let mut e = file_entry(&name, &after);
            if !stable {
                e.fingerprint = 0;
            }
            e.size = len;
            e.content = refs;
            let st = w.stats_mut();
            st.items += 1;
            st.items_read += 1;
            st.bytes += len;
            progress.advance(len);
            Ok(Some(e))
        }
        Err(vault::Error::Source { source, .. }) => {
            let kept = if prev.is_some() {
                "; the previous version is kept"
            } else {
                ""
            };
            w.record_error(item, format!("cannot be read: {source}{kept}"));
            count_kept(w, prev.as_ref());
            Ok(prev)
        }
        Err(e) => Err(e.into()),
    }
}
