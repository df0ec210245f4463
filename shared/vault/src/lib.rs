//! The vault: Lifeboat's storage format and engine. Items are identified by a keyed hash,
//! compressed with zstd, sealed with AES-256-GCM, packed into multi-MiB pack objects, and
//! organised per snapshot as a tree of folder nodes; a snapshot becomes visible with one
//! conditional catalog write after everything it references is durable.
//!
//! **Architecture invariant:** the vault talks to storage only through the `ports` traits;
//! it knows nothing of AWS, HTTP or any source.

mod codec;
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
pub use snapshot::{ItemError, SnapshotRecord, SnapshotStats};
pub use tree::{BlobRef, Entry, EntryKind, Node};
pub use verify::{Damage, VerifyReport};
pub use writer::{SnapshotWriter, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, SMALL_ITEM};

use crypto::SealKind;
use domain::{AccountId, ItemPath, SnapshotId, TaskId, TenantId};
use ports::{Catalog, CatalogExt, ObjectKey, ObjectStore};
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
}

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
            }),
        }
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
        let pk = snapshot::snapshots_pk(&self.inner.tenant, &self.inner.task, account);
        let recs = self.inner.catalog.query_all(&pk, "").await?;
        recs.iter()
            .map(|r| snapshot::open_record(&self.inner.keys, &pk, &r.sk, &r.value))
            .collect()
    }

    /// The newest committed snapshot of an account.
    pub async fn latest(&self, account: &AccountId) -> Result<Option<SnapshotRecord>> {
        let pk = snapshot::snapshots_pk(&self.inner.tenant, &self.inner.task, account);
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
        let pk = snapshot::snapshots_pk(&self.inner.tenant, &self.inner.task, account);
        match self.inner.catalog.get(&pk, id.as_str()).await? {
            Some(r) => snapshot::open_record(&self.inner.keys, &pk, &r.sk, &r.value),
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
        let plain = codec::decode(&encoded, r.raw_len as usize, &what)?;
        if self.inner.keys.blob_id(&plain) != r.id {
            return Err(Error::damaged(what, "content does not match its id"));
        }
        Ok(plain)
    }

    pub async fn read_tree(&self, r: &BlobRef) -> Result<Node> {
        let bytes = self.read_blob(r, true).await?;
        Node::decode(&bytes, &format!("tree {}", r.id))
    }

    /// Reads many blobs with as few ranged reads as possible (nearby records of one pack
    /// are read together), opening them in parallel. Calls `sink` once per distinct blob,
    /// in no particular order, holding at most one coalesced read in memory at a time.
    /// A blob that cannot be read (missing pack, damage) reaches the sink as an error, so
    /// a restore can save everything else and report what it could not.
    ///
    /// # Errors
    /// Only what `sink` returns.
    pub async fn read_many<F>(&self, refs: Vec<BlobRef>, tree: bool, mut sink: F) -> Result<()>
    where
        F: FnMut(&BlobRef, Result<Vec<u8>>) -> Result<()>,
    {
        for (pack, runs) in coalesce(refs) {
            let key = self.pack_key(&pack);
            for run in runs {
                let (start, end) = (run[0].offset as u64, run_end(&run));
                let got = self.inner.store.get_range(&key, start, end).await;
                let got = match got {
                    Ok(b) if b.len() as u64 != end - start => Err(ports::Error::new(
                        ports::ErrorKind::InvalidInput,
                        format!("{key} is shorter than the snapshot says"),
                    )),
                    other => other,
                };
                let bytes = match got {
                    Ok(b) => b,
                    Err(e) => {
                        let msg = e.to_string();
                        for r in &run {
                            let err = if e.is_not_found() {
                                Error::damaged(format!("{:?}", r.pack), "missing")
                            } else if e.kind() == ports::ErrorKind::InvalidInput {
                                Error::damaged(format!("{:?}", r.pack), "truncated")
                            } else {
                                Error::Port(ports::Error::new(e.kind(), msg.clone()))
                            };
                            sink(r, Err(err))?;
                        }
                        continue;
                    }
                };
                let this = self.clone();
                let opened: Vec<(BlobRef, Result<Vec<u8>>)> =
                    tokio::task::spawn_blocking(move || {
                        run.par_iter()
                            .map(|r| {
                                let s = (r.offset as u64 - start) as usize;
                                let sealed = &bytes[s..s + r.len as usize];
                                (*r, this.open_blob(r, tree, sealed))
                            })
                            .collect()
                    })
                    .await
                    .map_err(|e| Error::Format(format!("worker failed: {e}")))?;
                for (r, data) in opened {
                    sink(&r, data)?;
                }
            }
        }
        Ok(())
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

fn run_end(run: &[BlobRef]) -> u64 {
    run.iter()
        .map(|r| r.offset as u64 + r.len as u64)
        .max()
        .unwrap_or(0)
}

/// Groups blobs by pack and, within a pack, into runs of nearby records.
fn coalesce(mut refs: Vec<BlobRef>) -> Vec<(PackId, Vec<Vec<BlobRef>>)> {
    refs.sort_by_key(|r| (r.pack, r.offset));
    refs.dedup_by_key(|r| (r.pack, r.offset));
    let mut out: Vec<(PackId, Vec<Vec<BlobRef>>)> = Vec::new();
    for r in refs {
        match out.last_mut() {
            Some((p, runs)) if *p == r.pack => {
                let run = runs.last_mut().expect("a pack group has a run");
                let start = run[0].offset as u64;
                let end = run_end(run);
                if (r.offset as u64) <= end + COALESCE_GAP
                    && r.offset as u64 + r.len as u64 - start <= COALESCE_MAX
                {
                    run.push(r);
                } else {
                    runs.push(vec![r]);
                }
            }
            _ => out.push((r.pack, vec![vec![r]])),
        }
    }
    out
}
