//! One account's part of a task's vault: its snapshot records, its checkpoint, its location
//! index and its packs. Every read and write of an account's data goes through here.

use crate::index::AccountIndex;
use crate::snapshot::{self, Checkpoint, SnapshotMeta, SnapshotRecord};
use crate::tree::BlobRef;
use crate::writer::SnapshotWriter;
use crate::{BlobKind, Error, Result, Vault};
use domain::{AccountId, SnapshotId};
use ports::{catalog_keys, CatalogExt};
use std::sync::Arc;

/// One account's vault. Cloning is cheap; the index is loaded once per handle (and again
/// when a pack turns out to have moved).
#[derive(Clone)]
pub struct AccountVault {
    pub(crate) inner: Arc<AccountInner>,
}

pub(crate) struct AccountInner {
    pub(crate) vault: Vault,
    pub(crate) account: AccountId,
    /// The account's name in object keys.
    pub(crate) tag: String,
    pub(crate) index: tokio::sync::RwLock<Option<Arc<AccountIndex>>>,
}

/// A snapshot record that does not open: listed beside the sound ones, so one damaged
/// record costs only itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRecord {
    /// The record's catalog keys.
    pub record: String,
    pub problem: String,
}

impl AccountVault {
    pub(crate) fn new(vault: Vault, account: AccountId) -> Self {
        let tag = vault.keys().account_tag(account.as_str());
        AccountVault {
            inner: Arc::new(AccountInner {
                vault,
                account,
                tag,
                index: Default::default(),
            }),
        }
    }

    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    pub fn account(&self) -> &AccountId {
        &self.inner.account
    }

    /// The account's name in object keys (a keyed hash of its id).
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }

    /// The account's location index, loaded on first use.
    ///
    /// # Errors
    /// A store failure or a damaged segment.
    pub async fn index(&self) -> Result<Arc<AccountIndex>> {
        if let Some(ix) = self.inner.index.read().await.as_ref() {
            return Ok(ix.clone());
        }
        let mut slot = self.inner.index.write().await;
        if let Some(ix) = slot.as_ref() {
            return Ok(ix.clone());
        }
        let ix = Arc::new(self.vault().load_index(self.tag()).await?);
        *slot = Some(ix.clone());
        Ok(ix)
    }

    /// Forgets the loaded index (a pack it names has gone: a repack moved its blobs).
    pub(crate) async fn reload_index(&self) -> Result<Arc<AccountIndex>> {
        self.forget_index().await;
        self.index().await
    }

    /// Forgets the loaded index: this handle wrote segments of its own since.
    pub(crate) async fn forget_index(&self) {
        *self.inner.index.write().await = None;
    }

    /// Every committed snapshot of the account that opens, oldest first, and the records
    /// that do not (each named, so `verify` can report it; the others stay usable).
    ///
    /// # Errors
    /// A catalog failure, or a vault of another format.
    pub async fn snapshots_checked(&self) -> Result<(Vec<SnapshotRecord>, Vec<DamagedRecord>)> {
        let v = self.vault();
        v.check_format(false).await?;
        let pk = catalog_keys::snapshots(v.tenant(), v.task(), self.account()).pk;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in v.catalog().query_all(&pk, "").await? {
            match self.open_snapshot(&pk, &r.sk, &r.value) {
                Ok(s) => good.push(s),
                Err(e) => {
                    tracing::warn!(record = %format!("{pk}/{}", r.sk), error = %e, "snapshot record does not open");
                    bad.push(DamagedRecord {
                        record: format!("{pk}/{}", r.sk),
                        problem: e.to_string(),
                    });
                }
            }
        }
        Ok((good, bad))
    }

    /// Every committed snapshot of the account that opens, oldest first.
    ///
    /// # Errors
    /// As [`AccountVault::snapshots_checked`].
    pub async fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        Ok(self.snapshots_checked().await?.0)
    }

    fn open_snapshot(&self, pk: &str, sk: &str, value: &[u8]) -> Result<SnapshotRecord> {
        let what = format!("snapshot record {pk}/{sk}");
        let s: SnapshotRecord = snapshot::open_record(self.vault().keys(), pk, sk, value)?;
        snapshot::check_version(s.v, &what)?;
        if s.id.as_str() != sk || &s.account != self.account() {
            return Err(Error::damaged(what, "names another snapshot"));
        }
        Ok(s)
    }

    /// The newest committed snapshot that opens. A damaged newest record is passed over
    /// (and reported by `verify`): the next backup then starts from the one before.
    ///
    /// # Errors
    /// A catalog failure.
    pub async fn latest(&self) -> Result<Option<SnapshotRecord>> {
        self.newest(None).await
    }

    /// One snapshot, by id: one catalog read.
    ///
    /// # Errors
    /// `NotFound`; `Damaged` when its record does not open.
    pub async fn snapshot(&self, id: &SnapshotId) -> Result<SnapshotRecord> {
        let v = self.vault();
        v.check_format(false).await?;
        let key = catalog_keys::snapshot(v.tenant(), v.task(), self.account(), id);
        match v.catalog().get(&key.pk, &key.sk).await? {
            Some(r) => self.open_snapshot(&key.pk, &r.sk, &r.value),
            None => Err(Error::NotFound(format!(
                "snapshot {id} of account {} not found",
                self.account()
            ))),
        }
    }

    /// The newest snapshot taken at or before `at`: one catalog query (snapshot ids begin
    /// with their time), passing over records that do not open.
    ///
    /// # Errors
    /// A catalog failure.
    pub async fn snapshot_at(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<SnapshotRecord>> {
        self.newest(Some(at)).await
    }

    /// The newest snapshot that opens, of all or of those taken at or before `at`.
    async fn newest(
        &self,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<SnapshotRecord>> {
        let v = self.vault();
        v.check_format(false).await?;
        let pk = catalog_keys::snapshots(v.tenant(), v.task(), self.account()).pk;
        // Everything sorting before the first id of the next millisecond.
        let mut after = at
            .map(|at| SnapshotId::generate(at + chrono::Duration::milliseconds(1), 0).to_string());
        loop {
            let page = v
                .catalog()
                .query(&pk, "", after.as_deref(), 4, true)
                .await?;
            for r in &page.records {
                if let Ok(s) = self.open_snapshot(&pk, &r.sk, &r.value) {
                    if at.is_none_or(|at| s.taken_at <= at) {
                        return Ok(Some(s));
                    }
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(None),
            }
        }
    }

    /// The account's checkpoint (a paused backup), if it has one that still applies: a
    /// checkpoint made from another snapshot than the latest is stale and not returned.
    ///
    /// # Errors
    /// A catalog failure, or `Damaged` when the record does not open.
    pub async fn checkpoint(&self, latest: Option<&SnapshotId>) -> Result<Option<Checkpoint>> {
        let v = self.vault();
        let key = catalog_keys::checkpoint(v.tenant(), v.task(), self.account());
        let Some(rec) = v.catalog().get(&key.pk, &key.sk).await? else {
            return Ok(None);
        };
        let cp: Checkpoint = snapshot::open_record(v.keys(), &key.pk, &key.sk, &rec.value)?;
        snapshot::check_version(cp.v, &format!("checkpoint {}/{}", key.pk, key.sk))?;
        Ok((cp.parent.as_ref() == latest).then_some(cp))
    }

    /// A snapshot's or checkpoint's side data: cursor and item errors.
    ///
    /// # Errors
    /// A store failure or damage.
    pub async fn meta(&self, r: &BlobRef) -> Result<SnapshotMeta> {
        let bytes = self.read_blob(r, BlobKind::Meta).await?;
        SnapshotMeta::decode(&bytes, &format!("side data {}", r.id))
    }

    /// Starts a snapshot of the account; `parent` (normally its latest snapshot) lets
    /// unchanged items and folders be reused without reading or storing them again.
    ///
    /// # Errors
    /// A port failure, a damaged index or parent tree.
    pub async fn writer(&self, parent: Option<SnapshotRecord>) -> Result<SnapshotWriter> {
        self.vault().check_format(true).await?;
        SnapshotWriter::open(self.clone(), parent).await
    }
}
