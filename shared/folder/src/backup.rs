//! Backing up a folder into its account tree. This is what the vault benchmark measures, so
//! its hot path matters: a file whose size, modification time, inode and change time equal
//! its entry in the previous snapshot is not read at all (and a folder where nothing
//! changed is not stored again); small files are read in parallel batches and sealed in
//! parallel by the tree; large files are streamed through the chunker.
//!
//! Nothing is lost to a read failure: an unreadable file or folder keeps its previous
//! version, and the failure is recorded with the snapshot. The partial files of a restore
//! into the folder (running, or killed) are never backed up (see [`walk`]).
//!
//! Memory follows the folder being walked, not the whole folder tree: a directory is
//! listed as names only, and a subfolder the walk has finished is handed back to the tree
//! (`AccountTree::done_with`), which stores it and lets go of it.

use bytes::Bytes;
use domain::ItemPath;
use engine::{partial, AccountTree, Entry, EntryKind, Error, Result, SMALL_ITEM};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Small files are read together in batches of about this many bytes: large enough to
/// keep both cores busy, small enough to bound memory (the tree holds as much again
/// while it seals).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
const BATCH_FILES: usize = 2048;

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

fn mode(m: &Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

fn file_entry(name: &[u8], m: &Metadata) -> Entry {
    let mut e = Entry::new(name.to_vec(), EntryKind::File);
    e.size = m.len();
    e.mtime_ns = mtime_ns(m);
    e.mode = mode(m);
    e.fingerprint = fingerprint(m);
    e
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && mtime_ns(a) == mtime_ns(b) && a.ino() == b.ino()
}

/// A small file waiting to be read in the next batch.
struct Pending {
    path: PathBuf,
    item: ItemPath,
    meta: Metadata,
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Brings the tree's folder `at` up to date with the directory `dir`, and everything below.
///
/// Partial files (`.<name>.lifeboat-partial-<16 hex>`, [`partial::is_partial_name`]) are
/// left out, and one a previous snapshot holds is dropped: they are what a restore into
/// this folder writes before renaming a whole file to its name, so one found here is a
/// file being restored or the leftover of a restore that was killed, never the user's.
pub(crate) fn walk<'a>(
    tree: &'a mut AccountTree,
    dir: &'a Path,
    at: &'a ItemPath,
) -> Boxed<'a, Result<()>> {
    Box::pin(async move {
        let mut names: Vec<Vec<u8>> = match fs::read_dir(dir) {
            Ok(rd) => {
                let mut v = Vec::new();
                for ent in rd {
                    match ent {
                        Ok(ent) if partial::is_partial_name(ent.file_name().as_bytes()) => {}
                        Ok(ent) => v.push(ent.file_name().as_bytes().to_vec()),
                        Err(e) => {
                            // An entry that cannot be listed cannot be told from a deleted
                            // one: keep the folder as it was.
                            tree.record_error(at, format!("folder listing failed: {e}"));
                            return Ok(());
                        }
                    }
                }
                v
            }
            Err(e) => {
                // An unreadable folder keeps its content from the previous snapshot.
                tree.record_error(at, format!("folder cannot be read: {e}"));
                return Ok(());
            }
        };
        names.sort_unstable();
        names.shrink_to_fit();
        let listed = |n: &Vec<u8>| names.binary_search(n).is_ok();
        let mut gone: Vec<Vec<u8>> = tree
            .items(at)
            .await?
            .map(|e| e.name)
            .filter(|n| !listed(n))
            .collect();
        gone.extend(
            tree.subfolders(at)
                .await?
                .into_iter()
                .filter(|n| !listed(n)),
        );
        for name in gone {
            tree.remove(&at.join(&name)?).await?;
        }

        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_bytes = 0usize;
        for name in names {
            let path = dir.join(OsStr::from_bytes(&name));
            let item = match at.join(&name) {
                Ok(p) => p,
                Err(e) => {
                    tree.record_error(at, format!("skipped a name that cannot be stored: {e}"));
                    continue;
                }
            };
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let msg = kept(tree, &item, format!("cannot be read: {e}")).await?;
                    tree.record_error(&item, msg);
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if tree.item(&item).await?.is_some() {
                    tree.remove(&item).await?;
                }
                tree.update_folder(&item, |e| {
                    e.mtime_ns = mtime_ns(&meta);
                    e.mode = mode(&meta);
                })
                .await?;
                walk(tree, &path, &item).await?;
                tree.done_with(&item).await?;
            } else if ft.is_symlink() {
                link(tree, &path, &item, &meta).await?;
            } else if ft.is_file() {
                if tree.has_folder(&item).await? {
                    tree.remove(&item).await?;
                }
                let e = file_entry(&name, &meta);
                let unchanged = tree.item(&item).await?.filter(|p| {
                    p.kind == EntryKind::File
                        && p.size == e.size
                        && p.mtime_ns == e.mtime_ns
                        && p.fingerprint == e.fingerprint
                });
                if let Some(p) = unchanged {
                    let size = p.size;
                    if p.mode != e.mode {
                        tree.update_item(&item, |p| p.mode = e.mode).await?;
                    }
                    tree.advance(size);
                } else if (e.size as usize) <= SMALL_ITEM {
                    pending_bytes += e.size as usize;
                    pending.push(Pending { path, item, meta });
                    if pending_bytes >= BATCH_BYTES || pending.len() >= BATCH_FILES {
                        store_small(tree, std::mem::take(&mut pending)).await?;
                        pending_bytes = 0;
                    }
                } else {
                    store_large(tree, &path, &item, &meta).await?;
                }
            } else {
                tree.remove(&item).await?;
                tree.record_error(
                    &item,
                    "skipped: not a regular file, folder or link (device, socket or pipe)",
                );
            }
        }
        if !pending.is_empty() {
            store_small(tree, pending).await?;
        }
        Ok(())
    })
}

/// `message`, saying so when the item keeps its previous version.
async fn kept(tree: &mut AccountTree, item: &ItemPath, message: String) -> Result<String> {
    Ok(
        if tree.item(item).await?.is_some() || tree.has_folder(item).await? {
            format!("{message}; the previous version is kept")
        } else {
            message
        },
    )
}

async fn link(tree: &mut AccountTree, path: &Path, item: &ItemPath, meta: &Metadata) -> Result<()> {
    let target = match fs::read_link(path) {
        Ok(t) => t.as_os_str().as_bytes().to_vec(),
        Err(e) => {
            let msg = kept(tree, item, format!("link cannot be read: {e}")).await?;
            tree.record_error(item, msg);
            return Ok(());
        }
    };
    let same = tree.item(item).await?.is_some_and(|p| {
        p.kind == EntryKind::Symlink
            && p.link.as_deref() == Some(target.as_slice())
            && p.mtime_ns == mtime_ns(meta)
    });
    if same {
        return Ok(());
    }
    if tree.has_folder(item).await? {
        tree.remove(item).await?;
    }
    let mut e = Entry::new(Vec::new(), EntryKind::Symlink);
    e.mtime_ns = mtime_ns(meta);
    tree.put_link(item, e, target).await
}

/// A file read whole: its bytes, its metadata after the read, and whether it held still.
type StableRead = (Vec<u8>, Metadata, bool);

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

const UNSETTLED: &str =
    "changed while being read; stored as read, the next backup takes the settled version";

async fn store_small(tree: &mut AccountTree, batch: Vec<Pending>) -> Result<()> {
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
    for (p, r) in read {
        match r {
            Ok((data, after, stable)) => {
                let name = p.item.file_name().unwrap_or_default();
                let mut e = file_entry(name, &after);
                if !stable {
                    tree.record_error(&p.item, UNSETTLED);
                    // Never let an unsettled read pass as unchanged next time.
                    e.fingerprint = 0;
                }
                tree.put_entry(&p.item, e, Bytes::from(data)).await?;
            }
            Err(err) => {
                let msg = kept(tree, &p.item, format!("cannot be read: {err}")).await?;
                tree.record_error(&p.item, msg);
            }
        }
    }
    Ok(())
}

async fn store_large(
    tree: &mut AccountTree,
    path: &Path,
    item: &ItemPath,
    before: &Metadata,
) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let msg = kept(tree, item, format!("cannot be read: {e}")).await?;
            tree.record_error(item, msg);
            return Ok(());
        }
    };
    let reader = file
        .try_clone()
        .map_err(|e| Error::io(item.to_string(), e))?;
    let name = item.file_name().unwrap_or_default();
    let Some(len) = tree
        .put_entry_stream(item, file_entry(name, before), reader)
        .await?
    else {
        return Ok(());
    };
    let after = file
        .metadata()
        .map_err(|e| Error::io(item.to_string(), e))?;
    let stable = same_version(before, &after) && len == after.len();
    if !stable {
        tree.record_error(item, UNSETTLED);
    }
    tree.update_item(item, |e| {
        e.mtime_ns = mtime_ns(&after);
        e.mode = mode(&after);
        e.fingerprint = if stable { fingerprint(&after) } else { 0 };
    })
    .await?;
    Ok(())
}
