//! The vault: Lifeboat's storage format and engine. Items are identified by a keyed hash,
//! compressed with zstd, sealed with AES-256-GCM, packed into multi-MiB pack objects, and
//! organised per snapshot as a tree of folder nodes that name blobs by id; each account's
//! location index says where each blob lies. A snapshot becomes visible with one
//! conditional catalog write after everything it references is durable.
//!
//! **Architecture invariant:** the vault talks to storage only through the `ports` traits;
//! it knows nothing of AWS, HTTP or any source.

mod account;
mod chunker;
pub mod codec;
pub mod crypto;
mod dict;
mod error;
mod idset;
pub mod index;
pub mod pack;
mod prune;
mod read;
pub mod snapshot;
pub mod tree;
mod verify;
mod writer;

pub use account::{AccountVault, DamagedRecord};
pub use crypto::{BlobId, TaskKeys};
pub use dict::{DICT_COPIES, DICT_KIND};
pub use error::{Error, Result};
pub use pack::{BlobKind, PackId};
pub use prune::{PruneOptions, PruneReport, DEFAULT_GRACE};
pub use snapshot::{
    Checkpoint, ItemError, SnapshotMeta, SnapshotRecord, SnapshotStats, TreeTotals,
};
pub use tree::{BlobRef, Entry, EntryKind, Node, PackedEntries};
pub use verify::{Damage, VerifyReport};
pub use writer::{EachLeaf, SnapshotWriter, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, SMALL_ITEM};

use domain::{AccountId, TaskId, TenantId};
use ports::{catalog_keys, Catalog, Condition, ObjectKey, ObjectStore, Record};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Object kind of packs in the store (`t/<tenant>/<task>/pack/<account tag>-<id>`).
pub const PACK_KIND: &str = "pack";

/// The vault format this build writes and reads. Version 2: trees name blobs by id,
/// per-account location indexes, folders split into pieces, bounded records, one
/// dictionary per task, per-record subkeys.
pub const FORMAT: u32 = 2;

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
    dict: dict::DictCell,
    format_checked: tokio::sync::OnceCell<()>,
}

/// The task's format record. Not sealed: it holds nothing but a version, and everything
/// read after it is authenticated on its own, so a forged one can only make a build
/// refuse the task.
#[derive(Serialize, Deserialize)]
struct FormatRecord {
    format: u32,
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
                dict: Default::default(),
                format_checked: tokio::sync::OnceCell::new(),
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

    /// One account's part of the vault: its snapshots, its index, its packs.
    pub fn account(&self, account: &AccountId) -> AccountVault {
        AccountVault::new(self.clone(), account.clone())
    }

    /// The key of a pack of the account with tag `tag`.
    pub fn pack_key(&self, tag: &str, id: &PackId) -> ObjectKey {
        ObjectKey::new(
            &self.inner.tenant,
            &self.inner.task,
            PACK_KIND,
            &format!("{tag}-{}", id.to_hex()),
        )
    }

    /// Parses a pack key's name into its account tag and pack id.
    pub fn parse_pack_name(name: &str) -> Option<(&str, PackId)> {
        let (tag, hex) = name.split_once('-')?;
        Some((tag, PackId::from_hex(hex)?))
    }

    /// Checks the task's format record (once per handle). With `create`, a vault that has
    /// none gets one (the first write to a task); otherwise a missing record means an
    /// empty vault.
    ///
    /// # Errors
    /// `Format` for a vault of another format; a catalog failure.
    pub async fn check_format(&self, create: bool) -> Result<()> {
        if self.inner.format_checked.initialized() {
            return Ok(());
        }
        let key = catalog_keys::vault_format(self.tenant(), self.task());
        let found = match self.catalog().get(&key.pk, &key.sk).await? {
            Some(rec) => Some(
                serde_json::from_slice::<FormatRecord>(&rec.value)
                    .map_err(|e| {
                        Error::damaged(
                            format!("format record {}/{}", key.pk, key.sk),
                            e.to_string(),
                        )
                    })?
                    .format,
            ),
            None if create => {
                let value = serde_json::to_vec(&FormatRecord { format: FORMAT })
                    .map_err(|e| Error::Format(e.to_string()))?;
                match self
                    .catalog()
                    .put(Record::new(&key.pk, &key.sk, value), Condition::Absent)
                    .await
                {
                    Ok(()) => Some(FORMAT),
                    Err(e) if e.kind() == ports::ErrorKind::ConditionFailed => {
                        return Box::pin(self.check_format(false)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => return Ok(()),
        };
        match found {
            Some(FORMAT) => {
                let _ = self.inner.format_checked.set(());
                Ok(())
            }
            Some(other) => Err(Error::Format(format!(
                "task {} is stored in vault format {other}; this build reads format {FORMAT} only",
                self.task()
            ))),
            None => Ok(()),
        }
    }
}
