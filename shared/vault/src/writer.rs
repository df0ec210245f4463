//! Writing one snapshot: content-addressed blobs into packs, folder nodes into tree packs,
//! then one commit.
//!
//! Work is done in batches: a batch of items is hashed in parallel, the ones the vault does
//! not hold yet are compressed and sealed in parallel, then appended to the open pack. A
//! full pack is written in the background (at most [`MAX_INFLIGHT_PUTS`] at once) and
//! journalled in the catalog as pending, so that a crashed run's packs are found and reused
//! by the next attempt instead of being uploaded again.

use crate::codec;
use crate::crypto::{BlobId, SealKind};
use crate::error::{Error, Result};
use crate::pack::{self, IndexEntry, PackBuilder, PackId, PACK_TARGET};
use crate::snapshot::{self, ItemError, SnapshotRecord, SnapshotStats, MAX_RECORDED_ERRORS};
use crate::tree::{BlobRef, Node};
use crate::Vault;
use chrono::{DateTime, Utc};
use domain::{AccountId, ItemPath, SnapshotId};
use ports::{CatalogExt, Condition, ErrorKind, Record};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Items up to this size are stored as one blob; larger ones are chunked.
pub const SMALL_ITEM: usize = 1024 * 1024;
/// FastCDC bounds for large items. 1 MiB average chunks keep the per-chunk overhead (index
/// entries, tree references) small while a change to a large file costs about one chunk.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// Pack uploads in flight per writer: enough to overlap upload with hashing and
/// compression; each holds one pack (~8 MiB) in memory.
pub const MAX_INFLIGHT_PUTS: usize = 2;

/// A large item's chunks are processed in batches of this many bytes.
const STREAM_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Chunks buffered between the chunker thread and the writer (memory bound).
const STREAM_QUEUE: usize = 4;

type KnownKey = (BlobId, bool);

/// Builds one snapshot of one account. Dropping it without [`SnapshotWriter::commit`] leaves
/// no visible trace: the packs it wrote are journalled as pending and reused by the next
/// attempt.
pub struct SnapshotWriter {
    vault: Vault,
    account: AccountId,
    parent: Option<SnapshotRecord>,
    parent_nodes: HashMap<BlobId, Arc<Node>>,
    known: HashMap<KnownKey, BlobRef>,
    data: Option<PackBuilder>,
    trees: Option<PackBuilder>,
    inflight: JoinSet<Result<()>>,
    stats: SnapshotStats,
    errors: Vec<ItemError>,
    error_count: u64,
}

impl SnapshotWriter {
    pub(crate) async fn open(
        vault: Vault,
        account: AccountId,
        parent: Option<SnapshotRecord>,
    ) -> Result<Self> {
        let mut w = SnapshotWriter {
            vault,
            account,
            parent,
            parent_nodes: HashMap::new(),
            known: HashMap::new(),
            data: None,
            trees: None,
            inflight: JoinSet::new(),
            stats: SnapshotStats::default(),
            errors: Vec::new(),
            error_count: 0,
        };
        if let Some(p) = w.parent.clone() {
            let root = p.root();
            w.known.insert((root.id, true), root);
            w.parent_nodes = w.vault.load_trees(&root).await?;
            for node in w.parent_nodes.values() {
                for e in &node.entries {
                    for c in &e.content {
                        w.known.insert((c.id, false), *c);
                    }
                    if let Some(s) = e.subtree {
                        w.known.insert((s.id, true), s);
                    }
                }
            }
        }
        w.recover_pending().await?;
        Ok(w)
    }

    /// Adds the blobs of packs that an earlier, unfinished run of this account wrote, so
    /// that a rerun stores nothing twice.
    async fn recover_pending(&mut self) -> Result<()> {
        let v = &self.vault;
        let pk = snapshot::pending_pk(v.tenant(), v.task(), &self.account);
        for rec in v.catalog().query_all(&pk, "").await? {
            let Some(id) = PackId::from_hex(&rec.sk) else {
                continue;
            };
            match read_pack_index(v, &id).await {
                Ok(entries) => {
                    for e in entries {
                        let r = BlobRef {
                            id: BlobId(e.id),
                            pack: id,
                            offset: e.offset,
                            len: e.len,
                            raw_len: e.raw_len,
                        };
                        self.known.entry((r.id, e.tree)).or_insert(r);
                    }
                }
                Err(e) => {
                    // A journalled pack that cannot be read is not reused; its blobs are
                    // simply stored again.
                    tracing::warn!(pack = %id.to_hex(), error = %e, "pending pack not reusable");
                }
            }
        }
        Ok(())
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn parent(&self) -> Option<&SnapshotRecord> {
        self.parent.as_ref()
    }

    /// The parent snapshot's node with this id, if the parent has it.
    pub fn parent_node(&self, id: &BlobId) -> Option<Arc<Node>> {
        self.parent_nodes.get(id).cloned()
    }

    pub fn stats_mut(&mut self) -> &mut SnapshotStats {
        &mut self.stats
    }

    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }

    /// Records an item that could not be backed up (or only with a caveat). Such failures
    /// are reported with the snapshot; they do not fail it.
    pub fn record_error(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_RECORDED_ERRORS {
            self.errors.push(ItemError {
                path: path.to_string(),
                message: message.into(),
            });
        }
    }

    pub fn errors(&self) -> &[ItemError] {
        &self.errors
    }

    /// Stores a batch of small items (each at most a few MiB) and returns one reference per
    /// item, in order. Items the vault already holds are not stored again.
    ///
    /// # Errors
    /// A failed pack upload (from this or an earlier batch) or catalog write.
    pub async fn store_batch(&mut self, items: Vec<Vec<u8>>) -> Result<Vec<BlobRef>> {
        self.store(items, false).await
    }

    /// Stores an item of any size read from `reader`, chunked by content so that a changed
    /// large item stores only its changed chunks. Memory stays bounded whatever the size.
    /// Returns the chunks in order and the item's length.
    ///
    /// # Errors
    /// `Source` when reading fails (nothing of the item is then referenced), or a storage
    /// failure.
    pub async fn store_stream<R: Read + Send + 'static>(
        &mut self,
        reader: R,
        what: String,
    ) -> Result<(Vec<BlobRef>, u64)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(STREAM_QUEUE);
        let chunker = tokio::task::spawn_blocking(move || {
            let cdc = fastcdc::v2020::StreamCDC::new(reader, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
            for chunk in cdc {
                let item = chunk.map(|c| c.data).map_err(|e| match e {
                    fastcdc::v2020::Error::IoError(io) => io,
                    other => std::io::Error::other(other.to_string()),
                });
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        let mut refs = Vec::new();
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let mut total = 0u64;
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|source| Error::Source {
                what: what.clone(),
                source,
            })?;
            total += chunk.len() as u64;
            batch_bytes += chunk.len();
            batch.push(chunk);
            if batch_bytes >= STREAM_BATCH_BYTES {
                refs.extend(self.store(std::mem::take(&mut batch), false).await?);
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            refs.extend(self.store(batch, false).await?);
        }
        chunker
            .await
            .map_err(|e| Error::Format(format!("chunker failed: {e}")))?;
        Ok((refs, total))
    }

    /// Stores a folder node (sorted first) and returns its reference. An unchanged folder
    /// gets the parent's reference back and nothing is written.
    pub async fn store_tree(&mut self, mut node: Node) -> Result<BlobRef> {
        node.normalise();
        let bytes = node.encode();
        let mut r = self.store(vec![bytes], true).await?;
        Ok(r.pop().expect("one item in, one reference out"))
    }

    async fn store(&mut self, items: Vec<Vec<u8>>, tree: bool) -> Result<Vec<BlobRef>> {
        self.reap_finished()?;
        let v = self.vault.clone();
        let (items, ids) = tokio::task::spawn_blocking(move || {
            let ids: Vec<BlobId> = items.par_iter().map(|d| v.keys().blob_id(d)).collect();
            (items, ids)
        })
        .await
        .map_err(|e| Error::Format(format!("hashing worker failed: {e}")))?;

        let mut seen = HashSet::new();
        let todo: Vec<usize> = (0..ids.len())
            .filter(|&i| !self.known.contains_key(&(ids[i], tree)) && seen.insert(ids[i]))
            .collect();
        if !todo.is_empty() {
            let v = self.vault.clone();
            let kind = if tree { SealKind::Tree } else { SealKind::Data };
            let ids2 = ids.clone();
            let sealed: Vec<(usize, u32, Result<Vec<u8>>)> =
                tokio::task::spawn_blocking(move || {
                    todo.par_iter()
                        .map(|&i| {
                            let encoded = codec::encode(&items[i]);
                            let raw_len = items[i].len() as u32;
                            (i, raw_len, v.keys().seal(kind, &ids2[i].0, &encoded))
                        })
                        .collect()
                })
                .await
                .map_err(|e| Error::Format(format!("sealing worker failed: {e}")))?;
            for (i, raw_len, s) in sealed {
                let s = s?;
                let r = self.append(ids[i], tree, raw_len, &s).await?;
                self.known.insert((ids[i], tree), r);
                self.stats.new_blobs += 1;
                self.stats.new_bytes += raw_len as u64;
                self.stats.stored_bytes += s.len() as u64;
            }
        }
        Ok(ids.iter().map(|id| self.known[&(*id, tree)]).collect())
    }

    async fn append(
        &mut self,
        id: BlobId,
        tree: bool,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<BlobRef> {
        let full = {
            let slot = if tree { &self.trees } else { &self.data };
            slot.as_ref()
                .is_some_and(|p| !p.is_empty() && p.len() + sealed.len() > PACK_TARGET)
        };
        if full {
            self.flush(tree).await?;
        }
        let slot = if tree {
            &mut self.trees
        } else {
            &mut self.data
        };
        let p = slot.get_or_insert_with(PackBuilder::open);
        let (offset, len) = p.push(id, tree, raw_len, sealed);
        Ok(BlobRef {
            id,
            pack: p.id(),
            offset,
            len,
            raw_len,
        })
    }

    /// Closes the open pack of one kind and uploads it in the background.
    async fn flush(&mut self, tree: bool) -> Result<()> {
        let slot = if tree {
            &mut self.trees
        } else {
            &mut self.data
        };
        let Some(p) = slot.take() else {
            return Ok(());
        };
        let (id, bytes, _) = p.finish(self.vault.keys())?;
        while self.inflight.len() >= MAX_INFLIGHT_PUTS {
            self.join_one().await?;
        }
        self.stats.packs_written += 1;
        let v = self.vault.clone();
        let pk = snapshot::pending_pk(v.tenant(), v.task(), &self.account);
        self.inflight.spawn(async move {
            let key = v.pack_key(&id);
            match v.store().put_if_absent(&key, bytes.into()).await {
                Ok(()) => {}
                // Pack names are random: "already there" means an earlier attempt of this
                // very upload succeeded (a retried request), so the pack is durable.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            v.catalog()
                .put(Record::new(pk, id.to_hex(), Vec::new()), Condition::None)
                .await?;
            Ok(())
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.inflight.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(Error::Format(format!("pack upload task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Surfaces an upload failure early instead of at commit.
    fn reap_finished(&mut self) -> Result<()> {
        while let Some(done) = self.inflight.try_join_next() {
            done.map_err(|e| Error::Format(format!("pack upload task failed: {e}")))??;
        }
        Ok(())
    }

    /// Makes everything durable, then makes the snapshot visible with one conditional
    /// catalog write. Until that write, no reader sees any part of this snapshot.
    ///
    /// # Errors
    /// Any upload or catalog failure; the snapshot is then not visible, and a rerun reuses
    /// the packs already written.
    pub async fn commit(
        mut self,
        root: BlobRef,
        taken_at: DateTime<Utc>,
        cursor: Option<String>,
    ) -> Result<SnapshotRecord> {
        self.flush(false).await?;
        self.flush(true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        let v = self.vault.clone();
        let pk = snapshot::snapshots_pk(v.tenant(), v.task(), &self.account);
        let mut rec = SnapshotRecord {
            id: SnapshotId::generate(taken_at, rand_u32()),
            account: self.account.clone(),
            taken_at,
            root: root.into(),
            parent: self.parent.as_ref().map(|p| p.id.clone()),
            stats: self.stats.clone(),
            errors: std::mem::take(&mut self.errors),
            error_count: self.error_count,
            cursor,
        };
        let mut attempts = 0;
        loop {
            let sk = rec.id.to_string();
            let value = snapshot::seal_record(v.keys(), &pk, &sk, &rec)?;
            match v
                .catalog()
                .put(Record::new(pk.clone(), sk, value), Condition::Absent)
                .await
            {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::ConditionFailed && attempts < 3 => {
                    attempts += 1;
                    rec.id = SnapshotId::generate(taken_at, rand_u32());
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The journal of pending packs has served its purpose: everything it lists is now
        // either referenced by this snapshot or an orphan. Failing to clear it is harmless.
        let ppk = snapshot::pending_pk(v.tenant(), v.task(), &self.account);
        if let Ok(pending) = v.catalog().query_all(&ppk, "").await {
            for p in pending {
                let _ = v.catalog().delete(&ppk, &p.sk, Condition::None).await;
            }
        }
        Ok(rec)
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random generator works");
    u32::from_le_bytes(b)
}

/// Reads a pack's index with two ranged reads (trailer, then index).
pub(crate) async fn read_pack_index(v: &Vault, id: &PackId) -> Result<Vec<IndexEntry>> {
    let key = v.pack_key(id);
    let what = format!("{id:?}");
    let size = v.store().size(&key).await?;
    if size < (pack::MAGIC.len() as u64) + pack::TRAILER_LEN {
        return Err(Error::damaged(what, "too short to be a pack"));
    }
    let trailer = v
        .store()
        .get_range(&key, size - pack::TRAILER_LEN, size)
        .await?;
    let (s, e) = pack::index_range(&trailer, size, &what)?;
    let sealed = v.store().get_range(&key, s, e).await?;
    pack::open_index(v.keys(), id, &sealed, s, &what)
}
