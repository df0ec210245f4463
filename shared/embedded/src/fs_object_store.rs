//! `FsObjectStore`: the object store port on a local directory, one file per object, with
//! S3's write-once and listing semantics.

use crate::{blocking, io_error, sync_dir, temp_name};
use async_trait::async_trait;
use bytes::Bytes;
use ports::{
    ByteSource, Error, ErrorKind, ListPage, ObjectKey, ObjectStore, Result, STREAM_PART_BYTES,
};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Names of files being written; never a key segment (keys never start with '.').
const TMP_PREFIX: &str = ".tmp-";

/// Keys per list page: S3's maximum, so that paging code is exercised the same way.
pub(crate) const PAGE_SIZE: usize = 1000;

/// Objects as files under a root directory: key `t/a/b/pack/ff` is the file
/// `<root>/t/a/b/pack/ff`.
///
/// A put writes a temp file beside the target (`.tmp-…`), fsyncs it, hard-links it to the
/// key's name — which fails if the name exists, so an object is never overwritten and
/// readers never see a partial one — and fsyncs the directory: `Ok` means durable. A crash
/// leaves at most a stale temp file, which listing skips. Empty directories left by deletes
/// stay; listing ignores them.
///
/// A streamed put (exports of any size) goes the same way, its temp file filled a part at
/// a time as the source hands them out: at most one part is held in memory.
#[derive(Debug, Clone)]
pub struct FsObjectStore {
    root: PathBuf,
}

impl FsObjectStore {
    /// A store in `root`, created if missing.
    ///
    /// # Errors
    /// `Unavailable` when the directory cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| io_error(e, format_args!("object directory {}", root.display())))?;
        Ok(FsObjectStore { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`.
    ///
    /// # Errors
    /// `InvalidInput` for a key with an empty or dot-led segment: `ObjectKey::parse` admits
    /// `..` as a kind, which must never become a path.
    fn path_of(&self, key: &ObjectKey) -> Result<PathBuf> {
        let mut path = self.root.clone();
        for seg in key.as_str().split('/') {
            if seg.is_empty() || seg.starts_with('.') || seg.contains(['\\', '\0']) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("object key {key} has a segment unfit for a file name"),
                ));
            }
            path.push(seg);
        }
        Ok(path)
    }
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        let key = key.clone();
        blocking(move || put_blocking(&root, &path, &key, &data)).await
    }

    async fn put_stream_if_absent(
        &self,
        key: &ObjectKey,
        source: &mut dyn ByteSource,
    ) -> Result<u64> {
        let path = self.path_of(key)?;
        // Refused before a byte is read when the key is taken (an export run again): the
        // link at the end is what decides, this only spares reading the source in vain.
        if fs::symlink_metadata(&path).is_ok() {
            return Err(already_exists(key));
        }
        let (root, k) = (self.root.clone(), key.clone());
        let p = path.clone();
        let (tmp, mut file) = blocking(move || create_temp(&root, &p, &k)).await?;
        // Removes the temp file on every way out but success, a dropped future included.
        let guard = TempFile(Some(tmp.clone()));
        let mut len = 0u64;
        loop {
            let part = source.next_part(STREAM_PART_BYTES).await?;
            if part.is_empty() {
                break;
            }
            len += part.len() as u64;
            let k = key.clone();
            file = blocking(move || {
                file.write_all(&part)
                    .map(|()| file)
                    .map_err(|e| io_error(e, format_args!("object {k}")))
            })
            .await?;
        }
        let key = key.clone();
        blocking(move || {
            file.sync_all()
                .map_err(|e| io_error(e, format_args!("object {key}")))?;
            publish(&tmp, &path, &key)
        })
        .await?;
        guard.disarm();
        Ok(len)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let key = key.clone();
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_error(e, format_args!("object {key}")))
        })
        .await
    }

    async fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Bytes> {
        if start >= end {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("empty range {start}..{end} of object {key}"),
            ));
        }
        let path = self.path_of(key)?;
        let key = key.clone();
        blocking(move || {
            let what = format_args!("object {key}");
            let mut file = File::open(&path).map_err(|e| io_error(e, what))?;
            let size = file.metadata().map_err(|e| io_error(e, what))?.len();
            if end > size {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("range {start}..{end} ends past object {key} of {size} bytes"),
                ));
            }
            // A range comes back whole in memory, as `get` returns a whole object.
            let len = usize::try_from(end - start).map_err(|_| {
                Error::new(ErrorKind::InvalidInput, format!("range of {key} too large"))
            })?;
            let mut buf = vec![0; len];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| io_error(e, what))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn size(&self, key: &ObjectKey) -> Result<u64> {
        let path = self.path_of(key)?;
        let key = key.clone();
        blocking(move || {
            let meta =
                fs::metadata(&path).map_err(|e| io_error(e, format_args!("object {key}")))?;
            if !meta.is_file() {
                return Err(Error::not_found(format_args!("object {key}")));
            }
            Ok(meta.len())
        })
        .await
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<ListPage> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let after = after.map(str::to_string);
        blocking(move || list_blocking(&root, &prefix, after.as_deref(), PAGE_SIZE)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path_of(key)?;
        let key = key.clone();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(io_error(e, format_args!("object {key}"))),
        })
        .await
    }
}

/// Write-once put: temp file, fsync, hard link (fails if the name is taken), fsync dir.
fn put_blocking(root: &Path, path: &Path, key: &ObjectKey, data: &[u8]) -> Result<()> {
    let (tmp, mut f) = create_temp(root, path, key)?;
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(e, format_args!("object {key}")));
    }
    publish(&tmp, path, key)
}

/// A new temp file beside `path` (its directory created if missing), for a put to fill.
fn create_temp(root: &Path, path: &Path, key: &ObjectKey) -> Result<(PathBuf, File)> {
    let what = format_args!("object {key}");
    let dir = path.parent().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("object key {key} has no directory"),
        )
    })?;
    ensure_dir(root, dir).map_err(|e| io_error(e, what))?;
    let tmp = dir.join(temp_name(TMP_PREFIX));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_error(e, what))?;
    Ok((tmp, f))
}

/// Gives the durable temp file `tmp` the key's name, only if no object has it: a hard
/// link fails when the name is taken, where a rename would overwrite. Then the temp name
/// goes and the directory is made durable. The temp file is gone whatever the outcome.
fn publish(tmp: &Path, path: &Path, key: &ObjectKey) -> Result<()> {
    let linked = fs::hard_link(tmp, path);
    // The temp name is only a handle now; if removing it fails, list skips it anyway.
    let _ = fs::remove_file(tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(already_exists(key)),
        Err(e) => return Err(io_error(e, format_args!("object {key}"))),
    }
    let dir = path.parent().unwrap_or(path);
    sync_dir(dir).map_err(|e| io_error(e, format_args!("object {key}")))
}

fn already_exists(key: &ObjectKey) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("object {key} already exists"),
    )
}

/// A temp file removed when dropped: a streamed put that fails, or whose future is
/// dropped midway, leaves nothing. Disarmed once published (`publish` removed it).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// Creates `dir` (under `root`) if missing, and makes the new directory entries durable up
/// to `root`, so that a durable object is never in a directory a crash forgets.
fn ensure_dir(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut d = dir;
    while d != root {
        match d.parent() {
            Some(p) => {
                sync_dir(p)?;
                d = p;
            }
            None => break,
        }
    }
    Ok(())
}

/// One page of keys starting with `prefix` and greater than `after`, in byte order.
///
/// Walks only the directory the prefix names and below, and skips whole subdirectories
/// that lie before `after`, so a page costs about one page of entries, not the whole tree.
pub(crate) fn list_blocking(
    root: &Path,
    prefix: &str,
    after: Option<&str>,
    page_size: usize,
) -> Result<ListPage> {
    let (dir_part, name_start) = match prefix.rfind('/') {
        Some(i) => (&prefix[..=i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    // A prefix naming a directory no key can be in (dot-led or empty segment) matches
    // nothing; it must not become a path outside the store.
    let mut dir = root.to_path_buf();
    if let Some(d) = dir_part.strip_suffix('/') {
        for seg in d.split('/') {
            if seg.is_empty() || seg.starts_with('.') || seg.contains(['\\', '\0']) {
                return Ok(ListPage::default());
            }
            dir.push(seg);
        }
    }
    let mut out = Vec::new();
    let walk = Walk {
        after,
        limit: page_size + 1,
    };
    walk.dir(&dir, dir_part, Some(name_start), &mut out)
        .map_err(|e| io_error(e, format_args!("listing of {prefix}")))?;
    let next = if out.len() > page_size {
        out.truncate(page_size);
        out.last()
            .map(|(k, _): &(ObjectKey, u64)| k.as_str().to_string())
    } else {
        None
    };
    Ok(ListPage { keys: out, next })
}

struct Walk<'a> {
    after: Option<&'a str>,
    limit: usize,
}

impl Walk<'_> {
    /// Appends the keys under `dir` (whose keys start with `key_prefix`) in byte order,
    /// keeping only names starting with `name_start` at this level.
    fn dir(
        &self,
        dir: &Path,
        key_prefix: &str,
        name_start: Option<&str>,
        out: &mut Vec<(ObjectKey, u64)>,
    ) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(it) => it,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        // Each entry sorts by what its keys start with: a directory `d` by `d/`, so that
        // `d-x` (before '/') and `d_x` (after it) land on the right side of `d/…`.
        let mut items: Vec<(String, fs::DirEntry, bool)> = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: not one of ours
            };
            if name.starts_with('.') || name_start.is_some_and(|s| !name.starts_with(s)) {
                continue; // temp files, and names outside the prefix
            }
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if ft.is_dir() {
                items.push((format!("{key_prefix}{name}/"), entry, true));
            } else if ft.is_file() {
                items.push((format!("{key_prefix}{name}"), entry, false));
            }
        }
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        for (sort_key, entry, is_dir) in items {
            if out.len() >= self.limit {
                break;
            }
            if is_dir {
                // Every key inside starts with `sort_key`; all lie at or before `after`
                // when `after` is past `sort_key` without starting with it.
                if self
                    .after
                    .is_some_and(|a| a > sort_key.as_str() && !a.starts_with(&sort_key))
                {
                    continue;
                }
                self.dir(&entry.path(), &sort_key, None, out)?;
            } else {
                if self.after.is_some_and(|a| sort_key.as_str() <= a) {
                    continue;
                }
                let Some(key) = ObjectKey::parse(&sort_key) else {
                    continue; // a foreign file, not an object of ours
                };
                let size = match entry.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(e) => return Err(e),
                };
                out.push((key, size));
            }
        }
        Ok(())
    }
}
