//! Writing one snapshot: content-addressed blobs into packs, folder nodes into tree packs,
//! then one commit.
//!
//! Work is done in batches: a batch of items is hashed in parallel, the ones the vault does
//! not hold yet are compressed and sealed in parallel, then appended to the open pack. A
//! full pack is written in the background (at most [`MAX_INFLIGHT_PUTS`] at once); once
//! durable, its blobs' locations are written as an index segment of their own, so a
//! crashed run's uploads are reused by the next attempt. A pause or a commit merges the
//! account's segments when there are many, so a resumed run starts from a bounded number
//! of reads.
//!
//! A blob is reused only if the account's index holds a sound copy of it: a blob that
//! `verify` found damaged is stored again when the source hands it over again, and the
//! index then points every snapshot that names it at the new copy.

use crate::account::AccountVault;
use crate::chunker::{chunk_windows, STREAM_QUEUE};
use crate::codec::{self, Dict, DICT_MAX_ITEM};
use crate::crypto::BlobId;
use crate::error::{Error, Result};
use crate::idset::IdSet;
use crate::index::{AccountIndex, Loc, Segment, COMPACT_FROM, COMPACT_PART};
use crate::pack::{BlobKind, PackBuilder, PackId, PACK_TARGET};
use crate::snapshot::{
    self, ItemError, SnapshotMeta, SnapshotRecord, SnapshotStats, TreeTotals, MAX_ERROR_BYTES,
    MAX_RECORDED_ERRORS, RECORD_VERSION,
};
use crate::tree::BlobRef;
use crate::Vault;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::{AccountId, ItemPath, SnapshotId};
use ports::{catalog_keys, Condition, ErrorKind, Record};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use tokio::task::JoinSet;

mod trees;

pub use trees::EachLeaf;

/// Items up to this size are stored as one blob; larger ones are chunked. As large as the
/// largest chunk: an item this small gains nothing from chunking (an edit would change
/// most of its chunks anyway), and skipping the chunker saves its CPU on every attachment.
pub const SMALL_ITEM: usize = 4 * 1024 * 1024;
/// FastCDC bounds for large items. 1 MiB average chunks keep the per-chunk overhead (index
/// entries, tree references) small while a change to a large file costs about one chunk.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// Bytes of stored copies a run reads back at most to confirm them before reusing them
/// for content the source handed over fresh (see `SnapshotWriter::confirm_reused`).
pub const CONFIRM_BUDGET: u64 = 1 << 30;

/// Pack uploads in flight per writer: enough to overlap upload with hashing and
/// compression; each holds one pack (~8 MiB) in memory.
pub const MAX_INFLIGHT_PUTS: usize = 2;

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

/// One item after the sealing pass: its id, its length, and its sealed record unless the
/// vault already held it.
type Sealed = (BlobId, u32, Option<Result<Vec<u8>>>);

/// Builds one snapshot of one account. Dropping it without [`SnapshotWriter::commit`] leaves
/// no visible trace; what it uploaded and indexed is reused by the next attempt.
pub struct SnapshotWriter {
    av: AccountVault,
    parent: Option<SnapshotRecord>,
    /// The account's index as this run found it (read again only to read back a folder
    /// node this run stored, see `read_folder`).
    index: Arc<AccountIndex>,
    /// Blobs stored by this run (in a pack being built or uploaded).
    added: IdSet<(BlobId, BlobKind)>,
    /// Blobs whose stored copy was read back sound this run.
    confirmed: IdSet<(BlobId, BlobKind)>,
    /// Blobs whose stored copy was found damaged this run: stored again.
    distrusted: HashSet<(BlobId, BlobKind)>,
    /// Bytes read back to confirm stored copies this run.
    confirm_spent: u64,
    data: Option<PackBuilder>,
    trees: Option<PackBuilder>,
    inflight: JoinSet<Result<String>>,
    /// Damage marks found by this run, for its last segment.
    segment: Segment,
    /// The index segments this run wrote.
    own_segments: HashSet<String>,
    /// Packs this run wrote or reused blobs from (beyond its parent's): none of them may
    /// have been pruned under it when it records its checkpoint or snapshot.
    used_packs: HashSet<PackId>,
    stats: SnapshotStats,
    errors: Vec<ItemError>,
    error_count: u64,
    dict: DictState,
}

impl SnapshotWriter {
    pub(crate) async fn open(av: AccountVault, parent: Option<SnapshotRecord>) -> Result<Self> {
        let index = av.index().await?;
        let dict = match av.vault().dict().await? {
            Some(d) => DictState::Using(d),
            None => DictState::Collecting {
                data: Vec::new(),
                sizes: Vec::new(),
            },
        };
        Ok(SnapshotWriter {
            av,
            parent,
            index,
            added: IdSet::default(),
            confirmed: IdSet::default(),
            distrusted: Default::default(),
            confirm_spent: 0,
            data: None,
            trees: None,
            inflight: JoinSet::new(),
            segment: Segment::default(),
            own_segments: HashSet::new(),
            used_packs: HashSet::new(),
            stats: SnapshotStats::default(),
            errors: Vec::new(),
            error_count: 0,
            dict,
        })
    }

    pub fn vault(&self) -> &Vault {
        self.av.vault()
    }

    pub fn account(&self) -> &AccountId {
        self.av.account()
    }

    pub fn parent(&self) -> Option<&SnapshotRecord> {
        self.parent.as_ref()
    }

    pub fn stats_mut(&mut self) -> &mut SnapshotStats {
        &mut self.stats
    }

    pub fn stats(&self) -> &SnapshotStats {
        &self.stats
    }

    /// Records an item that could not be backed up. Such failures
    /// are reported with the snapshot; they do not fail it.
    pub fn record_error(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.error_count += 1;
        self.push_problem(path, message.into(), false);
    }

    /// Records something to know about an item that is not a failure (it vanished from the
    /// source before it could be read; it was stored with a caveat): reported with the
    /// snapshot, not counted in its errors.
    pub fn record_note(&mut self, path: &ItemPath, message: impl Into<String>) {
        self.push_problem(path, message.into(), true);
    }

    fn push_problem(&mut self, path: &ItemPath, message: String, note: bool) {
        if self.errors.len() < MAX_RECORDED_ERRORS {
            let mut message = message;
            if message.len() > MAX_ERROR_BYTES {
                let mut cut = MAX_ERROR_BYTES;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push('…');
            }
            self.errors.push(ItemError {
                path: path.to_string(),
                message,
                note,
            });
        }
    }

    /// Carries the failures of the earlier runs of a paused backup into this one.
    pub fn resume_errors(&mut self, errors: Vec<ItemError>, count: u64) {
        self.errors = errors;
        self.errors.truncate(MAX_RECORDED_ERRORS);
        let failures = self.errors.iter().filter(|e| !e.note).count() as u64;
        self.error_count = count.max(failures);
    }

    pub fn errors(&self) -> &[ItemError] {
        &self.errors
    }

    /// Stores a batch of small items (each at most a few MiB) and returns one reference per
    /// item, in order. Items the vault already holds are not stored again.
    ///
    /// # Errors
    /// A failed pack upload (from this or an earlier batch) or index write.
    pub async fn store_batch<B: Into<Bytes>>(&mut self, items: Vec<B>) -> Result<Vec<BlobRef>> {
        self.store(items.into_iter().map(Into::into).collect(), BlobKind::Data)
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
            refs.extend(self.store(chunks, BlobKind::Data).await?);
        }
        chunker
            .await
            .map_err(|e| Error::Format(format!("chunker failed: {e}")))?;
        Ok((refs, total))
    }

    /// Whether a sound copy of the blob is stored, or stored by this run: what may be
    /// reused (the account tree reuses a folder node of the previous snapshot only then).
    pub fn is_sound(&self, id: &BlobId, kind: BlobKind) -> bool {
        (self.index.has_sound(id, kind) && !self.distrusted.contains(&(*id, kind)))
            || self.added.contains(&(*id, kind))
    }

    /// Content handed over fresh by the source that the vault already holds from an
    /// earlier run is reused only once the stored copy is read back and found sound (up
    /// to [`CONFIRM_BUDGET`] bytes a run): a damaged copy, never yet found by `verify`,
    /// must not be carried into one more snapshot when the source just gave us the bytes.
    /// A copy that does not read back is stored again from these bytes, and its old
    /// location recorded as damaged.
    async fn confirm_reused(
        &mut self,
        items: &[Bytes],
        done: &mut [Sealed],
        kind: BlobKind,
        dict: Option<&Dict>,
    ) -> Result<()> {
        let mut check: Vec<BlobRef> = Vec::new();
        let mut at: HashMap<BlobId, Vec<usize>> = HashMap::new();
        for (i, (id, raw_len, sealed)) in done.iter().enumerate() {
            let from_earlier = sealed.is_none()
                && !self.added.contains(&(*id, kind))
                && !self.confirmed.contains(&(*id, kind));
            if !from_earlier || self.confirm_spent >= CONFIRM_BUDGET {
                continue;
            }
            if !at.contains_key(id) {
                self.confirm_spent += *raw_len as u64;
                check.push(BlobRef {
                    id: *id,
                    raw_len: *raw_len,
                });
            }
            at.entry(*id).or_default().push(i);
        }
        if check.is_empty() {
            return Ok(());
        }
        let mut bad = Vec::new();
        let mut good = Vec::new();
        self.av
            .read_many_in(&self.index, check, kind, |r, got| {
                match got {
                    Ok(_) => good.push(r.id),
                    Err(e) if e.is_damage() => bad.push(r.id),
                    // Could not be read just now: reused unconfirmed, as before.
                    Err(e) => tracing::warn!(blob = %r.id, error = %e, "stored copy not confirmed"),
                }
                Ok(())
            })
            .await?;
        self.confirmed.extend(good.into_iter().map(|id| (id, kind)));
        for id in bad {
            tracing::warn!(blob = %id, "a stored copy is damaged; storing it again from the source");
            if let Some(loc) = self.index.get(&id, kind) {
                self.segment.add(
                    id,
                    Loc {
                        damaged: true,
                        ..loc
                    },
                );
            }
            self.distrusted.insert((id, kind));
            let seal = kind.seal_kind();
            for &i in &at[&id] {
                let (codec, payload) = codec::encode(&items[i], dict);
                done[i].2 = Some(self.vault().keys().seal_parts(
                    seal,
                    &id.0,
                    &[&[codec], &payload],
                ));
            }
        }
        Ok(())
    }

    async fn store(&mut self, items: Vec<Bytes>, kind: BlobKind) -> Result<Vec<BlobRef>> {
        self.reap_finished().await?;
        if kind == BlobKind::Data && matches!(self.dict, DictState::Collecting { .. }) {
            // Until the task has a dictionary, new items are looked at before sealing, so
            // that the batch which completes the training set is already compressed with it.
            let v = self.vault().clone();
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
                .filter(|&i| !self.is_sound(&ids[i], kind) && seen.insert(ids[i]))
                .collect();
            self.collect_samples(&items, &todo).await?;
        }
        let dict = match (&self.dict, kind) {
            (DictState::Using(d), BlobKind::Data) => Some(d.clone()),
            _ => None,
        };
        // One parallel pass hashes every item and compresses and seals those the vault does
        // not hold. The map of this run's blobs travels into the pass and back (a move).
        let v = self.vault().clone();
        let index = self.index.clone();
        let added = std::mem::take(&mut self.added);
        let distrusted = std::mem::take(&mut self.distrusted);
        let seal = kind.seal_kind();
        let dict_for_pass = dict.clone();
        let (items, added, distrusted, mut done) = tokio::task::spawn_blocking(move || {
            let dict = dict_for_pass;
            let done: Vec<Sealed> = items
                .par_iter()
                .map(|item| {
                    let id = v.keys().blob_id(item);
                    let raw_len = item.len() as u32;
                    let known = (index.has_sound(&id, kind) && !distrusted.contains(&(id, kind)))
                        || added.contains(&(id, kind));
                    if known {
                        return (id, raw_len, None);
                    }
                    let (codec, payload) = codec::encode(item, dict.as_ref());
                    let sealed = v.keys().seal_parts(seal, &id.0, &[&[codec], &payload]);
                    (id, raw_len, Some(sealed))
                })
                .collect();
            (items, added, distrusted, done)
        })
        .await
        .map_err(|e| Error::Format(format!("sealing worker failed: {e}")))?;
        self.added = added;
        self.distrusted = distrusted;
        self.confirm_reused(&items, &mut done, kind, dict.as_ref())
            .await?;
        let mut refs = Vec::with_capacity(done.len());
        for (id, raw_len, sealed) in done {
            let r = BlobRef { id, raw_len };
            if self.is_sound(&id, kind) {
                // Known before this batch, or sealed twice within it: keep the first.
                if !self.added.contains(&(id, kind)) {
                    if let Some(l) = self.index.get(&id, kind) {
                        self.used_packs.insert(l.pack);
                    }
                }
                refs.push(r);
                continue;
            }
            let s = sealed.expect("unknown items are sealed")?;
            self.append(id, kind, raw_len, &s).await?;
            self.added.insert((id, kind));
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
            // The task's one dictionary: ours, or the one a concurrent first backup
            // stored first.
            Ok(dict) => self.dict = DictState::Using(self.vault().offer_dict(dict).await?),
            Err(e) => tracing::info!(error = %e, "no compression dictionary for this task"),
        }
        Ok(())
    }

    async fn append(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let tree = kind != BlobKind::Data;
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
        slot.get_or_insert_with(PackBuilder::open)
            .push(id, kind, raw_len, sealed);
        Ok(())
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
        let (id, bytes, entries) = p.finish(self.vault().keys())?;
        while self.inflight.len() >= MAX_INFLIGHT_PUTS {
            self.join_one().await?;
        }
        self.stats.packs_written += 1;
        self.used_packs.insert(id);
        let v = self.vault().clone();
        let tag = self.av.tag().to_string();
        self.inflight.spawn(async move {
            match v
                .store()
                .put_if_absent(&v.pack_key(&tag, &id), bytes.into())
                .await
            {
                Ok(()) => {}
                // Pack names are random: "already there" means an earlier attempt of this
                // very upload succeeded (a retried request), so the pack is durable.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            // The pack is durable: its locations go into the index at once, so that a
            // run killed from here on has this pack reused by the next one.
            let mut seg = Segment::default();
            for e in entries {
                seg.add(
                    BlobId(e.id),
                    Loc {
                        pack: id,
                        offset: e.offset,
                        len: e.len,
                        raw_len: e.raw_len,
                        kind: e.kind,
                        damaged: false,
                    },
                );
            }
            v.write_segment(&tag, seg).await
        });
        Ok(())
    }

    /// A finished upload: its pack and segment are durable.
    async fn uploaded(&mut self, segment: String) {
        self.own_segments.insert(segment);
        // Readers through this handle must see the new locations.
        self.av.forget_index().await;
    }

    /// Writes the damage marks found by this run, if any.
    async fn write_segment(&mut self) -> Result<()> {
        let seg = std::mem::take(&mut self.segment);
        if !seg.is_empty() {
            let name = self.vault().write_segment(self.av.tag(), seg).await?;
            self.own_segments.insert(name);
            self.av.forget_index().await;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.inflight.join_next().await {
            Some(Ok(r)) => {
                self.uploaded(r?).await;
                Ok(())
            }
            Some(Err(e)) => Err(Error::Format(format!("pack upload task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Surfaces an upload failure early instead of at commit.
    async fn reap_finished(&mut self) -> Result<()> {
        while let Some(done) = self.inflight.try_join_next() {
            let name =
                done.map_err(|e| Error::Format(format!("pack upload task failed: {e}")))??;
            self.uploaded(name).await;
        }
        Ok(())
    }

    /// Makes everything stored so far durable and indexed.
    async fn settle(&mut self) -> Result<()> {
        self.flush(false).await?;
        self.flush(true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        self.write_segment().await
    }

    /// See [`crate::prune::check_not_pruned`].
    async fn check_not_pruned(&self) -> Result<()> {
        crate::prune::check_not_pruned(&self.av, &self.index, &self.own_segments, &self.used_packs)
            .await
    }

    /// Stores the side data (cursor, errors) as a blob of its own.
    async fn store_meta(&mut self, cursor: Option<String>) -> Result<BlobRef> {
        let meta = SnapshotMeta {
            cursor,
            errors: self.errors.clone(),
        };
        let mut r = self
            .store(vec![Bytes::from(meta.encode())], BlobKind::Meta)
            .await?;
        Ok(r.pop().expect("one item in, one reference out"))
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
        totals: TreeTotals,
        cursor: Option<String>,
        started_at: DateTime<Utc>,
        pauses: u32,
    ) -> Result<()> {
        let meta = self.store_meta(cursor).await?;
        self.settle().await?;
        self.check_not_pruned().await?;
        let v = self.vault().clone();
        let key = catalog_keys::checkpoint(v.tenant(), v.task(), self.account());
        let cp = snapshot::Checkpoint {
            v: RECORD_VERSION,
            root: root.into(),
            meta: meta.into(),
            started_at,
            parent: self.parent.as_ref().map(|p| p.id.clone()),
            pauses,
            error_count: self.error_count,
            totals: Some(totals),
        };
        let value = snapshot::seal_record(v.keys(), &key.pk, &key.sk, &cp)?;
        v.catalog()
            .put(Record::new(key.pk, key.sk, value), Condition::None)
            .await?;
        self.compact_if_many().await;
        Ok(())
    }

    /// Makes everything durable and indexed, then makes the snapshot visible with one
    /// conditional catalog write. Until that write, no reader sees any part of this
    /// snapshot.
    ///
    /// # Errors
    /// Any upload or catalog failure; the snapshot is then not visible, and a rerun reuses
    /// what was uploaded and indexed.
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
        let meta = self.store_meta(cursor).await?;
        self.settle().await?;
        self.check_not_pruned().await?;
        let v = self.vault().clone();
        // Snapshot ids sort by time to the millisecond; a snapshot never sorts before its
        // parent, even when a clock says the same millisecond (or goes back).
        let mut taken_at = taken_at;
        if let Some(p) = &self.parent {
            if taken_at <= p.taken_at {
                taken_at = p.taken_at + chrono::Duration::milliseconds(1);
            }
        }
        let mut rec = SnapshotRecord {
            v: RECORD_VERSION,
            id: SnapshotId::generate(taken_at, rand_u32()),
            account: self.account().clone(),
            taken_at,
            root: root.into(),
            parent: self.parent.as_ref().map(|p| p.id.clone()),
            stats: self.stats.clone(),
            error_count: self.error_count,
            meta: meta.into(),
        };
        let mut attempts = 0;
        loop {
            // Which account the id belongs to first: harmless if the commit then fails (it
            // points at nothing), and a snapshot is never visible without it.
            let owner = catalog_keys::snapshot_owner(v.tenant(), v.task(), &rec.id);
            v.catalog()
                .put(
                    Record::new(
                        owner.pk,
                        owner.sk,
                        self.account().as_str().as_bytes().to_vec(),
                    ),
                    Condition::None,
                )
                .await?;
            let key = catalog_keys::snapshot(v.tenant(), v.task(), self.account(), &rec.id);
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
        self.compact_if_many().await;
        Ok(rec)
    }

    /// Many segments make every open of the account slower (a resumed run's above all):
    /// merges them. Runs after the checkpoint or snapshot is recorded, so a failure costs
    /// nothing but a warning; the next run tries again. The run is over: what it kept of
    /// the index and of its blobs goes before the index is read again whole.
    async fn compact_if_many(self) {
        // An index of many blobs is several segments even when compacted.
        let parts = self.index.len().div_ceil(COMPACT_PART);
        let own_since = self
            .own_segments
            .iter()
            .filter(|n| !self.index.segments.contains(n))
            .count();
        if self.index.segments.len() + own_since <= COMPACT_FROM + parts {
            return;
        }
        let av = self.av.clone();
        drop(self);
        let done = async {
            let fresh = av.reload_index().await?;
            av.vault().compact_index(&fresh).await?;
            av.forget_index().await;
            Ok::<_, Error>(())
        };
        if let Err(e) = done.await {
            tracing::warn!(error = %e, "index compaction failed; the next run tries again");
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random generator works");
    u32::from_le_bytes(b)
}
