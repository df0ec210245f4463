//! The vault: Lifeboat's storage format and engine. Items are identified by a keyed hash,
//! compressed with zstd, sealed with AES-256-GCM, packed into multi-MiB pack objects, and
//! organised per snapshot as a tree of folder nodes; a snapshot becomes visible with one
//! conditional catalog write after everything it references is durable.
//!
//! **Architecture invariant:** the vault talks to storage only through the `ports` traits;
//! it knows nothing of AWS, HTTP or any source.

pub mod codec;
pub mod crypto;
mod error;
pub mod pack;
pub mod snapshot;
pub mod tree;
mod verify;
mod writer;

pub use crypto::{BlobId, TaskKeys};
pub use error::{Error, Result};
pub use pack::PackId;
pub use snapshot::{Checkpoint, ItemError, SnapshotRecord, SnapshotStats};
pub use tree::{BlobRef, Entry, EntryKind, Node};
pub use verify::{Damage, VerifyReport};
pub use writer::{SnapshotWriter, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, SMALL_ITEM};

use codec::Dict;
use crypto::SealKind;
use domain::{AccountId, ItemPath, SnapshotId, TaskId, TenantId};
use ports::{catalog_keys, Catalog, CatalogExt, ObjectKey, ObjectStore, ObjectStoreExt};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Object kind of packs in the store (`t/<tenant>/<task>/pack/<id>`).
pub const PACK_KIND: &str = "pack";

/// Reads that lie closer than this within one pack are fetched with one ranged read: a
/// round trip to S3 costs more than reading a few hundred KiB more.
const COALESCE_GAP: u64 = 256 * 1024;
/// Upper bound of one coalesced read (memory bound of a restore worker).
const COALESCE_MAX: u64 = 16 * 1024 * 1024;

/// One task's vault. Cloning is cheap (shared handles).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    tenant: TenantId,
    task: TaskId,
    keys: TaskKeys,
    store: Arc<dyn ObjectStore>,
    catalog: Arc<dyn Catalog>,
    /// The task's compression dictionaries, by zstd dictionary id; loaded once.
    dicts: std::sync::RwLock<HashMap<u32, Dict>>,
    dicts_loaded: tokio::sync::OnceCell<()>,
    dict_damage: std::sync::Mutex<Vec<(String, String)>>,
}

/// Object kind of compression dictionaries (`t/<tenant>/<task>/dict/<id>[-<copy>]`).
pub const DICT_KIND: &str = "dict";

/// Copies kept of each dictionary: it is small (~110 KB) and every small item of the task
/// depends on it, so one damaged object must not make them unreadable.
pub const DICT_COPIES: u32 = 2;

impl Vault {
    /// A vault over a task's data key (unwrapped by the key service).
    pub fn new(
        tenant: TenantId,
        task: TaskId,
        data_key: &[u8; 32],
        store: Arc<dyn ObjectStore>,
        catalog: Arc<dyn Catalog>,
    ) -> Self {
        let keys = TaskKeys::derive(data_key, tenant.as_str(), task.as_str());
        Vault {
            inner: Arc::new(Inner {
                tenant,
                task,
                keys,
                store,
                catalog,
                dicts: Default::default(),
                dicts_loaded: tokio::sync::OnceCell::new(),
                dict_damage: Default::default(),
            }),
        }
    }

    // ---- dictionaries ----

    /// Copy `copy` of dictionary `id`: `dict/<id>`, `dict/<id>-2`, …
    fn dict_key(&self, id: u32, copy: u32) -> ObjectKey {
        let name = if copy == 1 {
            format!("{id:08x}")
        } else {
            format!("{id:08x}-{copy}")
        };
        ObjectKey::new(&self.inner.tenant, &self.inner.task, DICT_KIND, &name)
    }

    fn dict_seal_id(id: u32) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&id.to_le_bytes());
        b
    }

    /// Loads the task's dictionaries (once per vault handle). Each is stored in
    /// [`DICT_COPIES`] objects, since every small item compressed with it depends on it;
    /// the first copy that opens is used. A damaged copy is reported by
    /// [`Vault::dict_damage`]; were every copy damaged, the items that need the dictionary
    /// fail to read, as damage, never as wrong bytes.
    ///
    /// # Errors
    /// A store failure.
    pub async fn ensure_dicts(&self) -> Result<()> {
        self.inner
            .dicts_loaded
            .get_or_try_init(|| async {
                let prefix =
                    ObjectKey::kind_prefix(&self.inner.tenant, &self.inner.task, DICT_KIND);
                for (key, _) in self.inner.store.list_all(&prefix).await? {
                    let id_part = key.id().split('-').next().unwrap_or_default();
                    let loaded = match u32::from_str_radix(id_part, 16) {
                        Ok(id) => self.load_dict(&key, id).await,
                        Err(_) => Err(Error::damaged(key.to_string(), "not a dictionary name")),
                    };
                    match loaded {
                        Ok(dict) => {
                            self.dicts_write().insert(dict.id, dict);
                        }
                        Err(e) if e.is_damage() => {
                            tracing::warn!(object = %key, error = %e, "damaged dictionary");
                            self.inner
                                .dict_damage
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((key.to_string(), e.to_string()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok::<_, Error>(())
            })
            .await?;
        Ok(())
    }

    async fn load_dict(&self, key: &ObjectKey, id: u32) -> Result<Dict> {
        let sealed = self.inner.store.get(key).await?;
        let bytes = self.inner.keys.open(
            SealKind::Dictionary,
            &Self::dict_seal_id(id),
            &sealed,
            &format!("dictionary {key}"),
        )?;
        Dict::from_bytes(bytes)
            .filter(|d| d.id == id)
            .ok_or_else(|| Error::damaged(key.to_string(), "not a dictionary"))
    }

    /// Dictionary objects found damaged by [`Vault::ensure_dicts`]: (object, problem).
    pub fn dict_damage(&self) -> Vec<(String, String)> {
        self.inner
            .dict_damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn dicts_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Dict>> {
        self.inner.dicts.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A loaded dictionary by id.
    pub fn dict(&self, id: u32) -> Option<Dict> {
        let g = self.inner.dicts.read().unwrap_or_else(|e| e.into_inner());
        g.get(&id).cloned()
    }

    /// The dictionary new items are compressed with: the lowest id, so that every writer
    /// of a task picks the same one.
    pub fn current_dict(&self) -> Option<Dict> {
        let g = self.inner.dicts.read().unwrap_or_else(|e| e.into_inner());
        g.iter().min_by_key(|(id, _)| **id).map(|(_, d)| d.clone())
    }

    /// Stores a new dictionary (sealed: it is made of the task's content) in
    /// [`DICT_COPIES`] objects and makes it available to readers. Durable before any item
    /// compressed with it is committed.
    pub async fn add_dict(&self, dict: Dict) -> Result<()> {
        for copy in 1..=DICT_COPIES {
            // Sealed separately: each copy has its own nonce, so the copies are two
            // independent records, not one record twice.
            let sealed = self.inner.keys.seal(
                SealKind::Dictionary,
                &Self::dict_seal_id(dict.id),
                &dict.bytes,
            )?;
            match self
                .inner
                .store
                .put_if_absent(&self.dict_key(dict.id, copy), sealed.into())
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == ports::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.dicts_write().insert(dict.id, dict);
        Ok(())
    }

    pub fn tenant(&self) -> &TenantId {
        &self.inner.tenant
    }
    pub fn task(&self) -> &TaskId {
        &self.inner.task
    }
    pub fn keys(&self) -> &TaskKeys {
        &self.inner.keys
    }
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.inner.catalog
    }

    pub fn pack_key(&self, id: &PackId) -> ObjectKey {
        ObjectKey::new(
            &self.inner.tenant,
            &self.inner.task,
            PACK_KIND,
            &id.to_hex(),
        )
    }

    /// Starts a snapshot of `account`; `parent` (normally the account's latest snapshot)
    /// lets unchanged items and folders be reused without reading or storing them again.
    ///
    /// # Errors
    /// A port failure or a damaged parent tree.
    pub async fn writer(
        &self,
        account: AccountId,
        parent: Option<SnapshotRecord>,
    ) -> Result<SnapshotWriter> {
        SnapshotWriter::open(self.clone(), account, parent).await
    }

    // ---- snapshots ----

    /// Every committed snapshot of an account, oldest first.
    pub async fn snapshots(&self, account: &AccountId) -> Result<Vec<SnapshotRecord>> {
        let pk = catalog_keys::snapshots(&self.inner.tenant, &self.inner.task, account).pk;
        let recs = self.inner.catalog.query_all(&pk, "").await?;
        recs.iter()
            .map(|r| snapshot::open_record(&self.inner.keys, &pk, &r.sk, &r.value))
            .collect()
    }

    /// The account's checkpoint (a paused backup), if it has one that still applies: a
    /// checkpoint made from another snapshot than the latest is stale and not returned.
    ///
    /// # Errors
    /// A catalog failure, or `Damaged` when the record does not open.
    pub async fn checkpoint(
        &self,
        account: &AccountId,
        latest: Option<&SnapshotId>,
    ) -> Result<Option<snapshot::Checkpoint>> {
        let key = catalog_keys::checkpoint(&self.inner.tenant, &self.inner.task, account);
        let Some(rec) = self.inner.catalog.get(&key.pk, &key.sk).await? else {
            return Ok(None);
        };
        let cp: snapshot::Checkpoint =
            snapshot::open_record(&self.inner.keys, &key.pk, &key.sk, &rec.value)?;
        Ok((cp.parent.as_ref() == latest).then_some(cp))
    }

    /// The newest committed snapshot of an account.
    pub async fn latest(&self, account: &AccountId) -> Result<Option<SnapshotRecord>> {
        let pk = catalog_keys::snapshots(&self.inner.tenant, &self.inner.task, account).pk;
        let page = self.inner.catalog.query(&pk, "", None, 1, true).await?;
        match page.records.first() {
            Some(r) => Ok(Some(snapshot::open_record(
                &self.inner.keys,
                &pk,
                &r.sk,
                &r.value,
            )?)),
            None => Ok(None),
        }
    }

    pub async fn snapshot(&self, account: &AccountId, id: &SnapshotId) -> Result<SnapshotRecord> {
        let key = catalog_keys::snapshot(&self.inner.tenant, &self.inner.task, account, id);
        match self.inner.catalog.get(&key.pk, &key.sk).await? {
            Some(r) => snapshot::open_record(&self.inner.keys, &key.pk, &r.sk, &r.value),
            None => Err(Error::NotFound(format!(
                "snapshot {id} of account {account} not found"
            ))),
        }
    }

    // ---- reading ----

    /// Reads one blob with one ranged read, and checks it is what its id says.
    ///
    /// # Errors
    /// `Damaged` when the record fails authentication, does not decompress, or its content
    /// does not hash to its id; the bytes are never returned then.
    pub async fn read_blob(&self, r: &BlobRef, tree: bool) -> Result<Vec<u8>> {
        self.ensure_dicts().await?;
        let key = self.pack_key(&r.pack);
        let sealed = self
            .inner
            .store
            .get_range(&key, r.offset as u64, r.offset as u64 + r.len as u64)
            .await?;
        self.open_blob(r, tree, &sealed)
    }

    /// Opens a sealed record already read from its pack.
    pub fn open_blob(&self, r: &BlobRef, tree: bool, sealed: &[u8]) -> Result<Vec<u8>> {
        let kind = if tree { SealKind::Tree } else { SealKind::Data };
        let what = format!("blob {} in {:?}", r.id, r.pack);
        let encoded = self.inner.keys.open(kind, &r.id.0, sealed, &what)?;
        let plain = codec::decode(&encoded, r.raw_len as usize, &|id| self.dict(id), &what)?;
        if self.inner.keys.blob_id(&plain) != r.id {
            return Err(Error::damaged(what, "content does not match its id"));
        }
        Ok(plain)
    }

    pub async fn read_tree(&self, r: &BlobRef) -> Result<Node> {
        let bytes = self.read_blob(r, true).await?;
        Node::decode(&bytes, &format!("tree {}", r.id))
    }

    /// Starts reading one coalesced run, so that it is in flight while the previous run is
    /// being opened.
    fn start_fetch(&self, run: &Run) -> tokio::task::JoinHandle<Result<bytes::Bytes>> {
        let store = self.inner.store.clone();
        let key = self.pack_key(&run.pack);
        let (start, end) = (run.start(), run.end());
        tokio::spawn(async move {
            match store.get_range(&key, start, end).await {
                Ok(b) if b.len() as u64 == end - start => Ok(b),
                Ok(_) => Err(Error::damaged(key.to_string(), "truncated")),
                Err(e) if e.is_not_found() => Err(Error::damaged(key.to_string(), "missing")),
                Err(e) if e.kind() == ports::ErrorKind::InvalidInput => {
                    Err(Error::damaged(key.to_string(), "truncated"))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    async fn fetched(
        handle: tokio::task::JoinHandle<Result<bytes::Bytes>>,
    ) -> Result<bytes::Bytes> {
        handle
            .await
            .map_err(|e| Error::Format(format!("read task failed: {e}")))?
    }

    fn failure_copy(e: &Error) -> Error {
        match e {
            Error::Damaged { what, why } => Error::damaged(what.clone(), why.clone()),
            Error::Port(p) => Error::Port(ports::Error::new(p.kind(), p.to_string())),
            other => Error::Format(other.to_string()),
        }
    }

    /// Reads many blobs with as few ranged reads as possible (nearby records of one pack
    /// are read together, the next read in flight while the current one is opened), opening
    /// them in parallel. Calls `sink` once per distinct blob, in no particular order. A blob
    /// that cannot be read (missing pack, damage) reaches the sink as an error, so a restore
    /// can save everything else and report what it could not.
    ///
    /// # Errors
    /// Only what `sink` returns.
    pub async fn read_many<F>(&self, refs: Vec<BlobRef>, tree: bool, mut sink: F) -> Result<()>
    where
        F: FnMut(&BlobRef, Result<Vec<u8>>) -> Result<()>,
    {
        self.ensure_dicts().await?;
        let runs = coalesce(refs);
        let mut next = runs.first().map(|r| self.start_fetch(r));
        for i in 0..runs.len() {
            let got = Self::fetched(next.take().expect("started")).await;
            next = runs.get(i + 1).map(|r| self.start_fetch(r));
            let run = runs[i].clone();
            let bytes = match got {
                Ok(b) => b,
                Err(e) => {
                    for r in &run.refs {
                        sink(r, Err(Self::failure_copy(&e)))?;
                    }
                    continue;
                }
            };
            let this = self.clone();
            let opened: Vec<(BlobRef, Result<Vec<u8>>)> = tokio::task::spawn_blocking(move || {
                run.refs
                    .par_iter()
                    .map(|r| (*r, this.open_in_run(&run, &bytes, r, tree)))
                    .collect()
            })
            .await
            .map_err(|e| Error::Format(format!("worker failed: {e}")))?;
            for (r, data) in opened {
                sink(&r, data)?;
            }
        }
        Ok(())
    }

    /// As [`Vault::read_many`], but `sink` runs on the worker threads, in parallel: for
    /// consumers whose own work per blob is heavy (a restore writing files).
    ///
    /// # Errors
    /// Only what `sink` returns (the first such error stops the read).
    pub async fn read_many_parallel<F>(
        &self,
        refs: Vec<BlobRef>,
        tree: bool,
        sink: Arc<F>,
    ) -> Result<()>
    where
        F: Fn(&BlobRef, Result<Vec<u8>>) -> Result<()> + Send + Sync + 'static,
    {
        self.ensure_dicts().await?;
        let runs = coalesce(refs);
        // Two runs are opened at once: the worker threads go on with the next run while
        // the last blobs of the previous one (often one large chunk) finish, instead of
        // waiting at every run's end. With one more being fetched, at most three runs
        // (16 MiB each at most) are held.
        let workers = Arc::new(tokio::sync::Semaphore::new(2));
        let mut busy = tokio::task::JoinSet::new();
        let mut next = runs.first().map(|r| self.start_fetch(r));
        for i in 0..runs.len() {
            let got = Self::fetched(next.take().expect("started")).await;
            next = runs.get(i + 1).map(|r| self.start_fetch(r));
            let permit = workers
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::Format(format!("worker pool closed: {e}")))?;
            while let Some(done) = busy.try_join_next() {
                Self::joined(done)?;
            }
            let run = runs[i].clone();
            let this = self.clone();
            let sink = sink.clone();
            busy.spawn_blocking(move || {
                let _permit = permit;
                match got {
                    Ok(bytes) => run
                        .refs
                        .par_iter()
                        .try_for_each(|r| sink(r, this.open_in_run(&run, &bytes, r, tree))),
                    Err(e) => run
                        .refs
                        .iter()
                        .try_for_each(|r| sink(r, Err(Self::failure_copy(&e)))),
                }
            });
        }
        while let Some(done) = busy.join_next().await {
            Self::joined(done)?;
        }
        Ok(())
    }

    fn joined(done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
        done.map_err(|e| Error::Format(format!("worker failed: {e}")))?
    }

    fn open_in_run(&self, run: &Run, bytes: &[u8], r: &BlobRef, tree: bool) -> Result<Vec<u8>> {
        let s = (r.offset as u64 - run.start()) as usize;
        self.open_blob(r, tree, &bytes[s..s + r.len as usize])
    }

    /// Finds the entry at `path` under `root`. The root itself is returned as a folder
    /// entry named "".
    ///
    /// # Errors
    /// `NotFound` when a segment does not exist or a non-folder is traversed.
    pub async fn lookup(&self, root: &BlobRef, path: &ItemPath) -> Result<Entry> {
        let mut entry = Entry::new(Vec::new(), EntryKind::Dir);
        entry.subtree = Some(*root);
        for seg in path.segments() {
            let node = match (&entry.kind, &entry.subtree) {
                (EntryKind::Dir, Some(s)) => self.read_tree(s).await?,
                _ => return Err(Error::NotFound(format!("{path} not found in snapshot"))),
            };
            entry = node
                .find(seg)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("{path} not found in snapshot")))?;
        }
        Ok(entry)
    }

    /// Loads every node of a tree, breadth first, with coalesced reads. Returns them keyed
    /// by id.
    pub async fn load_trees(&self, root: &BlobRef) -> Result<HashMap<BlobId, Arc<Node>>> {
        let mut nodes: HashMap<BlobId, Arc<Node>> = HashMap::new();
        let mut level = vec![*root];
        while !level.is_empty() {
            let mut decoded = Vec::new();
            self.read_many(level, true, |r, bytes| {
                decoded.push((r.id, Node::decode(&bytes?, &format!("tree {}", r.id))?));
                Ok(())
            })
            .await?;
            let mut next = Vec::new();
            for (id, node) in decoded {
                for e in &node.entries {
                    if let Some(s) = e.subtree {
                        if !nodes.contains_key(&s.id) {
                            next.push(s);
                        }
                    }
                }
                nodes.insert(id, Arc::new(node));
            }
            next.sort_by_key(|r| r.id);
            next.dedup_by_key(|r| r.id);
            level = next;
        }
        Ok(nodes)
    }
}

/// Nearby records of one pack, read with one ranged read.
#[derive(Clone)]
struct Run {
    pack: PackId,
    refs: Vec<BlobRef>,
}

impl Run {
    fn start(&self) -> u64 {
        self.refs[0].offset as u64
    }
    fn end(&self) -> u64 {
        self.refs
            .iter()
            .map(|r| r.offset as u64 + r.len as u64)
            .max()
            .unwrap_or(0)
    }
}

/// Groups blobs by pack and, within a pack, into runs of nearby records.
fn coalesce(mut refs: Vec<BlobRef>) -> Vec<Run> {
    refs.sort_by_key(|r| (r.pack, r.offset));
    refs.dedup_by_key(|r| (r.pack, r.offset));
    let mut out: Vec<Run> = Vec::new();
    for r in refs {
        match out.last_mut() {
            Some(run)
                if run.pack == r.pack
                    && (r.offset as u64) <= run.end() + COALESCE_GAP
                    && r.offset as u64 + r.len as u64 - run.start() <= COALESCE_MAX =>
            {
                run.refs.push(r)
            }
            _ => out.push(Run {
                pack: r.pack,
                refs: vec![r],
            }),
        }
    }
    out
}
