//! The object store port: what S3 gives, write-once.

use crate::Result;
use async_trait::async_trait;
use bytes::Bytes;
use domain::{TaskId, TenantId};
use std::fmt;

/// The key of an object. Keys are built only by the constructors below, always start with
/// the tenant (design decision 7) and are `(kind, id)` pairs, never free-form paths:
/// `t/<tenant>/<task>/<kind>/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The prefix holding every object of a tenant (`t/<tenant>/`).
    pub fn tenant_prefix(tenant: &TenantId) -> String {
        format!("t/{tenant}/")
    }

    /// The prefix holding every object of one task (`t/<tenant>/<task>/`).
    pub fn task_prefix(tenant: &TenantId, task: &TaskId) -> String {
        format!("t/{tenant}/{task}/")
    }

    /// The prefix of all objects of one kind of one task.
    pub fn kind_prefix(tenant: &TenantId, task: &TaskId, kind: &str) -> String {
        format!("t/{tenant}/{task}/{kind}/")
    }

    /// An object of `kind` (a short lowercase word such as `pack` or `dict`) named `id`
    /// (lowercase hex or another id without `/`).
    ///
    /// # Panics
    /// When `kind` or `id` holds a character outside `[a-z0-9_-]`: both come from our own
    /// code (hashes, constants), never from user input.
    pub fn new(tenant: &TenantId, task: &TaskId, kind: &str, id: &str) -> Self {
        assert!(
            Self::part_ok(kind) && Self::part_ok(id),
            "object key parts must be [a-z0-9_-]"
        );
        ObjectKey(format!("t/{tenant}/{task}/{kind}/{id}"))
    }

    fn part_ok(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }

    /// Rebuilds a key listed by [`ObjectStore::list`]; `None` when the text is not one of
    /// ours (a foreign object in the bucket is ignored, never parsed as ours).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 5 || parts[0] != "t" || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        TenantId::new(parts[1]).ok()?;
        TaskId::new(parts[2]).ok()?;
        if !Self::part_ok(parts[3]) || !Self::part_ok(parts[4]) {
            return None;
        }
        Some(ObjectKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last part of the key (the id given to [`ObjectKey::new`]).
    pub fn id(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The kind given to [`ObjectKey::new`].
    pub fn kind(&self) -> &str {
        self.0.split('/').nth(3).unwrap_or("")
    }

    /// Whether the store deletes this object by itself some days after it is written (see
    /// [`EXPIRING_KINDS`]).
    pub fn expires(&self) -> bool {
        EXPIRING_KINDS.contains(&self.kind())
    }
}

/// The kind of an export's zip: its download links last a week at most, and then it is
/// of no more use.
pub const EXPORT_KIND: &str = "export";

/// Kinds of object that are copies handed out, not backups: a store deletes them by itself
/// once every link to them has expired (on S3, a lifecycle rule on the tag the store sets),
/// so that they are not paid for as long as the tenant stays. Everything else is kept until
/// Lifeboat deletes it.
pub const EXPIRING_KINDS: [&str; 1] = [EXPORT_KIND];

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a listing, in ascending key order.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub keys: Vec<(ObjectKey, u64)>,
    /// Pass back to [`ObjectStore::list`] for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A store of immutable objects. Objects are written once and never overwritten (S3
/// `If-None-Match: *`); this is what makes a crash or a duplicate delivery harmless.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes `data` under `key` only if nothing is there. When `Ok` is returned the object
    /// is durable.
    ///
    /// # Errors
    /// `AlreadyExists` when an object is there (whatever its content).
    async fn put_if_absent(&self, key: &ObjectKey, data: Bytes) -> Result<()>;

    /// Writes an object of any size read from `source`, only if nothing is under `key`,
    /// holding at most a part of it in memory at a time where the store allows (S3's
    /// multipart upload, a temporary file for the local store); returns its size. An
    /// interrupted write leaves no object. The default gathers the whole object and calls
    /// [`ObjectStore::put_if_absent`]: right only for stores that hold little (test
    /// doubles), since an export may be many GB.
    ///
    /// # Errors
    /// `AlreadyExists` as [`ObjectStore::put_if_absent`]; what `source` returns.
    async fn put_stream_if_absent(
        &self,
        key: &ObjectKey,
        source: &mut dyn ByteSource,
    ) -> Result<u64> {
        let mut all = Vec::new();
        loop {
            let part = source.next_part(STREAM_PART_BYTES).await?;
            if part.is_empty() {
                break;
            }
            all.extend_from_slice(&part);
        }
        let len = all.len() as u64;
        self.put_if_absent(key, all.into()).await?;
        Ok(len)
    }

    /// # Errors
    /// `NotFound`.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// Bytes `[start, end)` of the object.
    ///
    /// # Errors
    /// `NotFound`; `InvalidInput` when the range is empty or ends past the object.
    async fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Bytes>;

    /// The size of an object in bytes.
    ///
    /// # Errors
    /// `NotFound`.
    async fn size(&self, key: &ObjectKey) -> Result<u64>;

    /// Keys (with sizes) starting with `prefix`, in ascending order, one page at a time.
    /// `after` is the `next` of the previous page.
    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<ListPage>;

    /// Removes an object. Deleting what is not there succeeds (as S3 does).
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// A link that lets anyone holding it download the object until `expires` has passed
    /// (S3's presigned GET), or `None` when this store has no such links: the caller then
    /// serves the object itself.
    async fn presign_get(
        &self,
        _key: &ObjectKey,
        _expires: std::time::Duration,
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

/// How much of a streamed object is read at a time: one part of an S3 multipart upload
/// (S3 wants at least 5 MiB for every part but the last).
pub const STREAM_PART_BYTES: usize = 8 << 20;

/// The bytes of an object being written by [`ObjectStore::put_stream_if_absent`], read in
/// order, a part at a time.
#[async_trait]
pub trait ByteSource: Send {
    /// Up to `max` next bytes, fewer only at the end; empty once everything was read.
    ///
    /// # Errors
    /// A read that failed (the write is then abandoned).
    async fn next_part(&mut self, max: usize) -> Result<Bytes>;
}

/// A [`ByteSource`] over anything readable (a file being exported). Reads block the
/// calling thread, which is what a local file read does anyway.
pub struct ReadSource<R>(pub R);

#[async_trait]
impl<R: std::io::Read + Send> ByteSource for ReadSource<R> {
    async fn next_part(&mut self, max: usize) -> Result<Bytes> {
        let mut buf = vec![0u8; max];
        let mut filled = 0;
        while filled < max {
            match self.0.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(crate::Error::new(
                        crate::ErrorKind::Unavailable,
                        format!("cannot read the object's content: {e}"),
                    ))
                }
            }
        }
        buf.truncate(filled);
        Ok(buf.into())
    }
}

/// Convenience methods for any store.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Every key under `prefix`, all pages.
    async fn list_all(&self, prefix: &str) -> Result<Vec<(ObjectKey, u64)>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(prefix, after.as_deref()).await?;
            out.extend(page.keys);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_foreign_keys_are_refused() {
        let t = TenantId::new("acme").unwrap();
        let k = TaskId::new("mail").unwrap();
        let key = ObjectKey::new(&t, &k, "pack", "00ff");
        assert_eq!(ObjectKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(key.kind(), "pack");
        assert_eq!(key.id(), "00ff");
        for bad in [
            "t/acme/mail/../x",
            "t/acme/mail/pack/",
            "x/acme/mail/pack/1",
            "t/acme/mail/pack/A",
            "t/acme/mail/pack/1/2",
        ] {
            assert_eq!(ObjectKey::parse(bad), None, "{bad}");
        }
    }
}
