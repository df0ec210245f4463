//! Writing one snapshot: content-addressed blobs into packs, folder nodes into tree packs,
//! then one commit.
//!
//! Work is done in batches: a batch of items is hashed in parallel, the ones the vault does
//! not hold yet are compressed and sealed in parallel, then appended to the open pack. A
//! full pack is written in the background (at most [`MAX_INFLIGHT_PUTS`] at once) and
//! journalled in the catalog as pending, so that a crashed run's packs are found and reused
//! by the next attempt instead of being uploaded again.

use crate::codec::{self, Dict, DICT_MAX_ITEM};
use crate::crypto::{BlobId, SealKind};
use crate::error::{Error, Result};
use crate::pack::{self, IndexEntry, PackBuilder, PackId, PACK_TARGET};
use crate::snapshot::{self, ItemError, SnapshotRecord, SnapshotStats, MAX_RECORDED_ERRORS};
use crate::tree::{BlobRef, Node};
use crate::Vault;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::{AccountId, ItemPath, SnapshotId};
use ports::{catalog_keys, CatalogExt, Condition, ErrorKind, Record};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Items up to this size are stored as one blob; larger ones are chunked. As large as the
/// largest chunk: an item this small gains nothing from chunking (an edit would change
/// most of its chunks anyway), and skipping the chunker saves its CPU on every attachment.
pub const SMALL_ITEM: usize = 4 * 1024 * 1024;
/// FastCDC bounds for large items. 1 MiB average chunks keep the per-chunk overhead (index
/// entries, tree references) small while a change to a large file costs about one chunk.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// Pack uploads in flight per writer: enough to overlap upload with hashing and
/// compression; each holds one pack (~8 MiB) in memory.
pub const MAX_INFLIGHT_PUTS: usize = 2;

/// A large item is read in windows of this size and cut into chunks inside the window, so
/// chunks are slices of the window rather than copies. At least twice [`CHUNK_MAX`], so
/// every window yields chunks.
const STREAM_WINDOW: usize = 8 * 1024 * 1024;
/// Windows buffered between the reading thread and the writer (memory bound).
const STREAM_QUEUE: usize = 2;

/// A dictionary is trained on about this much of a task's first small items (measured on
/// mail: 2 MiB trains as good a dictionary as 16 MiB, in a twentieth of a second).
const TRAIN_BYTES: usize = 2 * 1024 * 1024;
/// Fewer samples than this make a dictionary that does not help.
const TRAIN_MIN_SAMPLES: usize = 64;
/// zstd's default dictionary size.
const DICT_SIZE: usize = 112_640;

/// Where the writer stands on the task's compression dictionary.
enum DictState {
    /// Compressing small items with this dictionary.
    Using(Dict),
    /// The task has none yet: copies of small items are collected to train one.
    Collecting { data: Vec<u8>, sizes: Vec<usize> },
    /// Training failed or had too little to work with; compress without.
    Without,
}

type KnownKey = (BlobId, bool);

/// One item after the sealing pass: its id, its length, and its sealed record unless the
/// vault already held it.
type Sealed = (BlobId, u32, Option<Result<Vec<u8>>>);

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
    dict: DictState,
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
            dict: DictState::Without,
        };
        w.vault.ensure_dicts().await?;
        w.dict = match w.vault.current_dict() {
            Some(d) => DictState::Using(d),
            None => DictState::Collecting {
                data: Vec::new(),
                sizes: Vec::new(),
            },
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
        let pk = catalog_keys::pending(v.tenant(), v.task(), &self.account).pk;
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
    pub async fn store_batch<B: Into<Bytes>>(&mut self, items: Vec<B>) -> Result<Vec<BlobRef>> {
        self.store(items.into_iter().map(Into::into).collect(), false)
            .await
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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<Bytes>>>(STREAM_QUEUE);
        let chunker = tokio::task::spawn_blocking(move || chunk_windows(reader, &tx));
        let mut refs = Vec::new();
        let mut total = 0u64;
        while let Some(chunks) = rx.recv().await {
            let chunks = chunks.map_err(|source| Error::Source {
                what: what.clone(),
                source,
            })?;
            total += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            refs.extend(self.store(chunks, false).await?);
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
        let mut r = self.store(vec![Bytes::from(bytes)], true).await?;
        Ok(r.pop().expect("one item in, one reference out"))
    }

    async fn store(&mut self, items: Vec<Bytes>, tree: bool) -> Result<Vec<BlobRef>> {
        self.reap_finished()?;
        if !tree && matches!(self.dict, DictState::Collecting { .. }) {
            // Until the task has a dictionary, new items are looked at before sealing, so
            // that the batch which completes the training set is already compressed with it.
            let v = self.vault.clone();
            let ids: Vec<BlobId> = {
                let items = items.clone();
                tokio::task::spawn_blocking(move || {
                    items.par_iter().map(|d| v.keys().blob_id(d)).collect()
                })
                .await
                .map_err(|e| Error::Format(format!("hashing worker failed: {e}")))?
            };
            let mut seen = HashSet::new();
            let todo: Vec<usize> = (0..ids.len())
                .filter(|&i| !self.known.contains_key(&(ids[i], false)) && seen.insert(ids[i]))
                .collect();
            self.collect_samples(&items, &todo).await?;
        }
        let dict = match (&self.dict, tree) {
            (DictState::Using(d), false) => Some(d.clone()),
            _ => None,
        };
        // One parallel pass hashes every item and compresses and seals those the vault does
        // not hold. The known-blob map travels into the pass and back (a move, not a copy).
        let v = self.vault.clone();
        let known = std::mem::take(&mut self.known);
        let kind = if tree { SealKind::Tree } else { SealKind::Data };
        let (known, done) = tokio::task::spawn_blocking(move || {
            let done: Vec<Sealed> = items
                .par_iter()
                .map(|item| {
                    let id = v.keys().blob_id(item);
                    let raw_len = item.len() as u32;
                    if known.contains_key(&(id, tree)) {
                        return (id, raw_len, None);
                    }
                    let (codec, payload) = codec::encode(item, dict.as_ref());
                    let sealed = v.keys().seal_parts(kind, &id.0, &[&[codec], &payload]);
                    (id, raw_len, Some(sealed))
                })
                .collect();
            (known, done)
        })
        .await
        .map_err(|e| Error::Format(format!("sealing worker failed: {e}")))?;
        self.known = known;
        let mut refs = Vec::with_capacity(done.len());
        for (id, raw_len, sealed) in done {
            if let Some(r) = self.known.get(&(id, tree)) {
                // Known before this batch, or sealed twice within it: keep the first.
                refs.push(*r);
                continue;
            }
            let s = sealed.expect("unknown items are sealed")?;
            let r = self.append(id, tree, raw_len, &s).await?;
            self.known.insert((id, tree), r);
            self.stats.new_blobs += 1;
            self.stats.new_bytes += raw_len as u64;
            self.stats.stored_bytes += s.len() as u64;
            refs.push(r);
        }
        Ok(refs)
    }

    /// While the task has no dictionary, keeps copies of new small items; once there are
    /// enough, trains one, so the rest of this backup and every later one use it.
    async fn collect_samples(&mut self, items: &[Bytes], todo: &[usize]) -> Result<()> {
        let DictState::Collecting { data, sizes } = &mut self.dict else {
            return Ok(());
        };
        for &i in todo {
            let item = &items[i];
            if data.len() >= TRAIN_BYTES {
                break;
            }
            if item.len() >= 64 && item.len() <= DICT_MAX_ITEM {
                data.extend_from_slice(item);
                sizes.push(item.len());
            }
        }
        if data.len() >= TRAIN_BYTES {
            self.train_dict().await?;
        }
        Ok(())
    }

    async fn train_dict(&mut self) -> Result<()> {
        let state = std::mem::replace(&mut self.dict, DictState::Without);
        let DictState::Collecting { data, sizes } = state else {
            self.dict = state;
            return Ok(());
        };
        if sizes.len() < TRAIN_MIN_SAMPLES {
            return Ok(());
        }
        let trained = tokio::task::spawn_blocking(move || Dict::train(&data, &sizes, DICT_SIZE))
            .await
            .map_err(|e| Error::Format(format!("training worker failed: {e}")))?;
        match trained {
            Ok(dict) => {
                self.vault.add_dict(dict.clone()).await?;
                self.dict = DictState::Using(dict);
            }
            Err(e) => tracing::info!(error = %e, "no compression dictionary for this task"),
        }
        Ok(())
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
        let pending = catalog_keys::pending_pack(v.tenant(), v.task(), &self.account, &id.to_hex());
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
                .put(
                    Record::new(pending.pk, pending.sk, Vec::new()),
                    Condition::None,
                )
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

    /// Adds a stored tree (a paused backup's checkpoint) to what this writer knows: its
    /// nodes become readable through [`SnapshotWriter::parent_node`] and its blobs are
    /// not stored again.
    ///
    /// # Errors
    /// A damaged or missing node.
    pub async fn adopt(&mut self, root: &BlobRef) -> Result<()> {
        self.known.insert((root.id, true), *root);
        let nodes = self.vault.load_trees(root).await?;
        for (id, node) in nodes {
            for e in &node.entries {
                for c in &e.content {
                    self.known.insert((c.id, false), *c);
                }
                if let Some(s) = e.subtree {
                    self.known.insert((s.id, true), s);
                }
            }
            self.parent_nodes.insert(id, node);
        }
        Ok(())
    }

    /// Pauses the backup: makes everything stored so far durable and records `root` and
    /// `cursor` as the account's checkpoint, from which the next run goes on. Nothing
    /// becomes visible.
    ///
    /// # Errors
    /// Any upload or catalog failure (the previous checkpoint, if any, then stands).
    pub async fn checkpoint(
        mut self,
        root: BlobRef,
        cursor: Option<String>,
        started_at: DateTime<Utc>,
        pauses: u32,
    ) -> Result<()> {
        self.flush(false).await?;
        self.flush(true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        let v = self.vault.clone();
        let key = catalog_keys::checkpoint(v.tenant(), v.task(), &self.account);
        let cp = snapshot::Checkpoint {
            root: root.into(),
            cursor,
            started_at,
            parent: self.parent.as_ref().map(|p| p.id.clone()),
            pauses,
        };
        let value = snapshot::seal_record(v.keys(), &key.pk, &key.sk, &cp)?;
        v.catalog()
            .put(Record::new(key.pk, key.sk, value), Condition::None)
            .await?;
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
        // A first backup too small to have trained a dictionary still leaves one for the
        // next backups when it saw enough small items.
        if matches!(&self.dict, DictState::Collecting { data, .. } if data.len() >= TRAIN_BYTES / 16)
        {
            self.train_dict().await?;
        }
        self.flush(false).await?;
        self.flush(true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        let v = self.vault.clone();
        // Snapshot ids sort by time to the millisecond; a snapshot never sorts before its
        // parent, even when a clock says the same millisecond (or goes back).
        let mut taken_at = taken_at;
        if let Some(p) = &self.parent {
            if taken_at <= p.taken_at {
                taken_at = p.taken_at + chrono::Duration::milliseconds(1);
            }
        }
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
            let key = catalog_keys::snapshot(v.tenant(), v.task(), &self.account, &rec.id);
            let value = snapshot::seal_record(v.keys(), &key.pk, &key.sk, &rec)?;
            match v
                .catalog()
                .put(Record::new(key.pk, key.sk, value), Condition::Absent)
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
        let ppk = catalog_keys::pending(v.tenant(), v.task(), &self.account).pk;
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

/// Reads `reader` in windows and cuts each window into content-defined chunks that are
/// slices of it (no copy per chunk). The last chunk of a window is only a candidate — the
/// data after the window may move its cut point — so it is carried into the next window;
/// the result is exactly what a streaming chunker would produce.
fn chunk_windows<R: Read>(
    mut reader: R,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<Bytes>>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(STREAM_WINDOW);
        buf.extend_from_slice(&carry);
        let want = (STREAM_WINDOW - buf.len()) as u64;
        if let Err(e) = reader.by_ref().take(want).read_to_end(&mut buf) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let eof = buf.len() < STREAM_WINDOW;
        if buf.is_empty() {
            return;
        }
        let window = Bytes::from(buf);
        let mut cuts: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(&window, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| (c.offset, c.length))
                .collect();
        carry = Vec::new();
        if !eof {
            if let Some((o, l)) = cuts.pop() {
                carry = window[o..o + l].to_vec();
            }
        }
        let chunks = cuts
            .into_iter()
            .map(|(o, l)| window.slice(o..o + l))
            .collect();
        if tx.blocking_send(Ok(chunks)).is_err() || eof {
            return;
        }
    }
}
