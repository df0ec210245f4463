//! The location index of one account: which pack, offset and length hold each blob the
//! account's snapshots name. Trees name blobs by id only, so a pack can be rewritten
//! (merged, emptied of dead blobs, deleted) by writing new locations here.
//!
//! The index of a task is kept per account: a blob is only ever referenced by its own
//! account's snapshots (deduplication runs within an account's history), so one account's
//! backup or restore reads only its own part, however many accounts the task has, and one
//! person's data can be erased without reading anyone else's.
//!
//! It is a set of immutable, sealed segments (`idx/<account tag>-<time>-<random>`), each
//! written once: by a backup for each pack once it is durable (so a crashed run's uploads
//! are known to the next one), by a backup or `verify` for locations found damaged, by a
//! compaction, and by `prune` and `repack` (new locations, packs condemned, revived and
//! dropped; see `prune.rs`). Reading merges them in name order:
//!
//! - a location known as damaged stays damaged, whichever segment says so;
//! - of two sound locations of one blob the later wins (both hold the same bytes);
//! - a condemned pack's blobs are still read but never reused by a writer, until the pack
//!   is revived or dropped;
//! - locations in dropped packs are forgotten, and stay forgotten.
//!
//! Compaction merges every segment into one, written under a name that sorts just after
//! the newest it replaces, then deletes the ones it replaced; a reader that meets a
//! segment deleted under it lists again.

use crate::crypto::{BlobId, SealKind};
use crate::error::{Error, Result};
use crate::pack::{BlobKind, PackId};
use crate::Vault;
use ports::{ObjectKey, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Object kind of index segments.
pub const SEGMENT_KIND: &str = "idx";
/// A backup that pauses or commits with more segments than this compacts them, so that
/// opening the account (a resumed run above all) reads a bounded number of segments.
pub const COMPACT_FROM: usize = 8;
/// Segments read at once while loading.
const LOAD_PARALLEL: usize = 8;
/// Entries of one segment written by a compaction, at most: about 5 MiB sealed, so that
/// loading reads a large index in parts of bounded size.
pub const COMPACT_PART: usize = 128 * 1024;

const SEGMENT_VERSION: u8 = 2;

/// Where a blob lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub pack: PackId,
    pub offset: u32,
    /// Sealed length.
    pub len: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
    /// `verify` found the record at this location damaged.
    pub damaged: bool,
}

/// A blob's location as held in memory: its id beside it, the pack interned (an index of
/// 1,000,000 blobs in a few hundred packs would otherwise repeat 32-byte pack names a
/// million times). 52 bytes a blob, held in one sorted vector: a hash map of the same
/// entries takes twice that, and three times while it grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    id: BlobId,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
    kind: BlobKind,
    damaged: bool,
}

impl Slot {
    /// Applies a later location of the same blob (see the module doc): damage, once known
    /// at a location, stays; a damaged location never displaces a sound one; otherwise
    /// the later wins.
    fn apply(&mut self, later: &Slot) {
        if self.pack == later.pack && self.offset == later.offset {
            let damaged = self.damaged || later.damaged;
            *self = Slot { damaged, ..*later };
        } else if !later.damaged || self.damaged {
            *self = *later;
        }
    }
}

/// A pack found holding nothing any snapshot or checkpoint needs: it is deleted by a
/// prune at or after `not_before` (milliseconds since the epoch) if it is still dead then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condemned {
    pub at: i64,
    pub not_before: i64,
}

/// One account's merged index: every blob once, sorted by id.
#[derive(Default, Debug)]
pub struct AccountIndex {
    packs: Vec<PackId>,
    /// When each pack was first indexed (ms since the epoch; 0 unknown), as `packs`.
    born: Vec<i64>,
    pack_ix: HashMap<PackId, u32>,
    condemned: HashMap<PackId, Condemned>,
    dropped: HashSet<PackId>,
    /// Sorted by id and one per blob once settled; while segments are applied, their
    /// locations are appended in the order applied and merged by [`AccountIndex::settle`].
    slots: Vec<Slot>,
    /// Whether `slots` holds appended locations not merged yet.
    unsettled: bool,
    /// Locations marked damaged by a segment applied so far (few): a later segment that
    /// names the same location does not heal it.
    damaged_at: HashSet<(u32, u32)>,
    /// The segments merged, by name, in order.
    pub(crate) segments: Vec<String>,
}

impl AccountIndex {
    fn intern(&mut self, p: PackId) -> u32 {
        if let Some(ix) = self.pack_ix.get(&p) {
            return *ix;
        }
        self.packs.push(p);
        self.born.push(0);
        let ix = (self.packs.len() - 1) as u32;
        self.pack_ix.insert(p, ix);
        ix
    }

    /// Notes when a pack was first indexed: the earliest time any segment gives.
    fn note_born(&mut self, p: PackId, ms: i64) {
        if ms <= 0 {
            return;
        }
        let ix = self.intern(p) as usize;
        if self.born[ix] == 0 || ms < self.born[ix] {
            self.born[ix] = ms;
        }
    }

    /// When the pack was first indexed (ms since the epoch), if the index knows it.
    pub fn born(&self, p: &PackId) -> Option<i64> {
        self.pack_ix
            .get(p)
            .map(|ix| self.born[*ix as usize])
            .filter(|ms| *ms > 0)
    }

    /// Whether (and until when) the pack is condemned.
    pub fn condemned(&self, p: &PackId) -> Option<Condemned> {
        self.condemned.get(p).copied()
    }

    /// Every condemned pack.
    pub fn all_condemned(&self) -> impl Iterator<Item = (PackId, Condemned)> + '_ {
        self.condemned.iter().map(|(p, c)| (*p, *c))
    }

    /// Whether a prune deleted the pack.
    pub fn is_dropped(&self, p: &PackId) -> bool {
        self.dropped.contains(p)
    }

    fn loc(&self, s: &Slot) -> Loc {
        Loc {
            pack: self.packs[s.pack as usize],
            offset: s.offset,
            len: s.len,
            raw_len: s.raw_len,
            kind: s.kind,
            damaged: s.damaged,
        }
    }

    fn slot(&self, id: &BlobId, kind: BlobKind) -> Option<&Slot> {
        self.position(id, kind).map(|i| &self.slots[i])
    }

    /// Where the blob of this kind lies (possibly a damaged location: check
    /// [`Loc::damaged`]). A blob is its id and its kind: the same bytes stored as an
    /// item and as side data (two zero bytes are both) are two blobs.
    pub fn get(&self, id: &BlobId, kind: BlobKind) -> Option<Loc> {
        self.slot(id, kind).map(|s| self.loc(s))
    }

    /// Where the blob's entry is in the index (for a caller keeping a mark per entry).
    pub(crate) fn position(&self, id: &BlobId, kind: BlobKind) -> Option<usize> {
        debug_assert!(!self.unsettled, "an index is read only once settled");
        self.slots
            .binary_search_by(|s| (&s.id, s.kind).cmp(&(id, kind)))
            .ok()
    }

    /// The location of the entry at `position`.
    pub(crate) fn at(&self, position: usize) -> Loc {
        self.loc(&self.slots[position])
    }

    /// Whether a sound copy of the blob, of this kind, is stored where it will stay: what a
    /// writer may reuse. A condemned pack's copy is not reused (a prune may delete it
    /// before the writer's snapshot is recorded); the content is stored again.
    pub fn has_sound(&self, id: &BlobId, kind: BlobKind) -> bool {
        self.slot(id, kind).is_some_and(|s| {
            !s.damaged
                && (self.condemned.is_empty()
                    || !self.condemned.contains_key(&self.packs[s.pack as usize]))
        })
    }

    /// How many blobs the index knows.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every known blob and its location, in id (then kind) order.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, Loc)> + '_ {
        self.slots.iter().map(|s| (s.id, self.loc(s)))
    }

    /// Appends one location as the next in order (see [`AccountIndex::settle`]). A
    /// location in a dropped pack is ignored (a stale damage mark, written after the drop).
    fn push(&mut self, id: BlobId, loc: Loc) {
        if !self.dropped.is_empty() && self.dropped.contains(&loc.pack) {
            return;
        }
        let pack = self.intern(loc.pack);
        let at = (pack, loc.offset);
        let damaged = loc.damaged || self.damaged_at.contains(&at);
        if loc.damaged {
            self.damaged_at.insert(at);
        }
        self.slots.push(Slot {
            id,
            pack,
            offset: loc.offset,
            len: loc.len,
            raw_len: loc.raw_len,
            kind: loc.kind,
            damaged,
        });
        self.unsettled = true;
    }

    /// Merges the locations appended since the last call: a stable sort by id and kind
    /// keeps each blob's locations in the order applied, and folding them in that order gives what
    /// applying them one by one would (see [`Slot::apply`]). Sorts in place: no second
    /// copy of the index.
    fn settle(&mut self) {
        if !self.unsettled {
            return;
        }
        self.slots.sort_by_key(|s| (s.id, s.kind));
        self.slots.dedup_by(|later, kept| {
            if (later.id, later.kind) != (kept.id, kept.kind) {
                return false;
            }
            kept.apply(later);
            true
        });
        self.slots.shrink_to_fit();
        self.unsettled = false;
    }

    /// Applies one segment, given as its plaintext (segments are applied in name order),
    /// entry by entry as it is parsed: a segment of a million entries is never held
    /// decoded beside the index.
    ///
    /// # Errors
    /// `Damaged` when it does not parse or names a pack it does not list; `Format` for a
    /// segment of a newer version.
    fn apply_plain(&mut self, plain: &[u8], what: &str, written: i64) -> Result<()> {
        let bad = |e: postcard::Error| Error::damaged(what, format!("does not parse: {e}"));
        let (v, rest) = postcard::take_from_bytes::<u8>(plain).map_err(bad)?;
        if v != SEGMENT_VERSION {
            return Err(Error::Format(format!(
                "{what}: format {v} is not one this build reads"
            )));
        }
        let (packs, rest) = postcard::take_from_bytes::<Vec<PackId>>(rest).map_err(bad)?;
        let (born, rest) = postcard::take_from_bytes::<Vec<i64>>(rest).map_err(bad)?;
        for (i, p) in packs.iter().enumerate() {
            if !self.dropped.contains(p) {
                let b = born.get(i).copied().filter(|b| *b > 0);
                self.note_born(*p, b.unwrap_or(written));
            }
        }
        // A sequence is its length then its elements (postcard's wire form), so the
        // entries are read one at a time.
        let (n, mut rest) = postcard::take_from_bytes::<u64>(rest).map_err(bad)?;
        if n > rest.len() as u64 {
            return Err(Error::damaged(what, "entry count is out of range"));
        }
        self.slots.reserve(n as usize);
        for _ in 0..n {
            let (e, r) = postcard::take_from_bytes::<EntryWire>(rest).map_err(bad)?;
            rest = r;
            let Some(&pack) = packs.get(e.pack as usize) else {
                return Err(Error::damaged(what, "names a pack it does not list"));
            };
            self.push(
                BlobId(e.id),
                Loc {
                    pack,
                    offset: e.offset,
                    len: e.len,
                    raw_len: e.raw_len,
                    kind: e.kind,
                    damaged: e.damaged,
                },
            );
        }
        let (condemned, rest) =
            postcard::take_from_bytes::<Vec<(PackId, Condemned)>>(rest).map_err(bad)?;
        let (revived, rest) = postcard::take_from_bytes::<Vec<PackId>>(rest).map_err(bad)?;
        let (dropped, _) = postcard::take_from_bytes::<Vec<PackId>>(rest).map_err(bad)?;
        for (p, c) in condemned {
            if !self.dropped.contains(&p) {
                self.condemned.entry(p).or_insert(c);
            }
        }
        for p in &revived {
            self.condemned.remove(p);
        }
        if !dropped.is_empty() {
            // Every location known so far in a dropped pack is forgotten: merged first,
            // so that "known so far" means each blob's location after this segment.
            self.settle();
            let ixs: HashSet<u32> = dropped
                .iter()
                .filter_map(|p| self.pack_ix.get(p).copied())
                .collect();
            self.slots.retain(|s| !ixs.contains(&s.pack));
            for p in dropped {
                self.condemned.remove(&p);
                self.dropped.insert(p);
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct EntryWire {
    id: [u8; 32],
    kind: BlobKind,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
    damaged: bool,
}

/// A segment on the wire. The order of the fields is what `apply_plain` reads.
#[derive(Serialize, Deserialize, Default)]
struct SegmentWire {
    v: u8,
    packs: Vec<PackId>,
    /// When each of `packs` was first indexed, where known (0: the segment's own time).
    born: Vec<i64>,
    entries: Vec<EntryWire>,
    /// Packs found dead by a prune, to be deleted once their time has come.
    condemned: Vec<(PackId, Condemned)>,
    /// Condemned packs that a snapshot needs after all (a backup that ran beside the prune).
    revived: Vec<PackId>,
    /// Packs deleted (by a prune): every location in them is forgotten.
    dropped: Vec<PackId>,
}

/// A segment being put together: new locations, damage marks, pack verdicts.
#[derive(Default)]
pub struct Segment {
    wire: SegmentWire,
    pack_ix: HashMap<PackId, u32>,
}

impl Segment {
    pub fn is_empty(&self) -> bool {
        self.wire.entries.is_empty()
            && self.wire.dropped.is_empty()
            && self.wire.condemned.is_empty()
            && self.wire.revived.is_empty()
    }

    pub fn len(&self) -> usize {
        self.wire.entries.len()
    }

    fn pack(&mut self, p: PackId, born: i64) -> u32 {
        let next = self.wire.packs.len() as u32;
        *self.pack_ix.entry(p).or_insert_with(|| {
            self.wire.packs.push(p);
            self.wire.born.push(born);
            next
        })
    }

    pub fn add(&mut self, id: BlobId, loc: Loc) {
        let pack = self.pack(loc.pack, 0);
        self.wire.entries.push(EntryWire {
            id: id.0,
            kind: loc.kind,
            pack,
            offset: loc.offset,
            len: loc.len,
            raw_len: loc.raw_len,
            damaged: loc.damaged,
        });
    }

    pub fn drop_pack(&mut self, p: PackId) {
        self.wire.dropped.push(p);
    }

    pub fn condemn(&mut self, p: PackId, c: Condemned) {
        self.wire.condemned.push((p, c));
    }

    pub fn revive(&mut self, p: PackId) {
        self.wire.revived.push(p);
    }

    /// Everything a merged index knows, as segments of at most [`COMPACT_PART`] entries
    /// each (compaction): a segment is read whole into memory, so a million blobs are
    /// not written as one. Locations keep their packs' dates; the first part also carries
    /// the verdicts on packs and the packs dropped (so that an older compaction left
    /// behind by a concurrent one cannot bring their locations back).
    pub fn parts_of(index: &AccountIndex) -> impl Iterator<Item = Segment> + '_ {
        let mut first = Segment::default();
        let mut condemned: Vec<_> = index.all_condemned().collect();
        condemned.sort_by_key(|(p, _)| *p);
        first.wire.condemned = condemned;
        let mut dropped: Vec<PackId> = index.dropped.iter().copied().collect();
        dropped.sort();
        first.wire.dropped = dropped;
        let mut first = Some(first);
        let parts = index.slots.chunks(COMPACT_PART);
        let n = parts.len().max(1);
        (0..n).map(move |i| {
            let mut s = first.take().unwrap_or_default();
            for slot in index.slots.chunks(COMPACT_PART).nth(i).unwrap_or(&[]) {
                let p = index.packs[slot.pack as usize];
                s.pack(p, index.born(&p).unwrap_or(0));
                s.add(slot.id, index.loc(slot));
            }
            s
        })
    }
}

/// The time a segment's name gives (`<tag>-<ms>-<random>`), 0 if none.
pub(crate) fn segment_time(name: &str) -> i64 {
    name.split('-')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn seal_id(name: &str) -> [u8; 32] {
    *blake3::hash(name.as_bytes()).as_bytes()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random generator works");
    hex::encode(b)
}

impl Vault {
    fn segment_key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(self.tenant(), self.task(), SEGMENT_KIND, name)
    }

    fn segment_prefix(&self, tag: &str) -> String {
        format!(
            "{}{tag}-",
            ObjectKey::kind_prefix(self.tenant(), self.task(), SEGMENT_KIND)
        )
    }

    /// Writes a segment for the account with tag `tag`; returns its name. Names sort by
    /// the time they were written.
    pub(crate) async fn write_segment(&self, tag: &str, seg: Segment) -> Result<String> {
        let ms = chrono::Utc::now().timestamp_millis().max(0);
        let name = format!("{tag}-{ms:013}-{}", random_hex(4));
        self.put_segment(&name, seg).await?;
        Ok(name)
    }

    async fn put_segment(&self, name: &str, seg: Segment) -> Result<()> {
        let mut wire = seg.wire;
        wire.v = SEGMENT_VERSION;
        let plain = postcard::to_allocvec(&wire)
            .map_err(|e| Error::Format(format!("index segment: {e}")))?;
        let sealed = self
            .keys()
            .seal(SealKind::IndexSegment, &seal_id(name), &plain)?;
        match self
            .store()
            .put_if_absent(&self.segment_key(name), sealed.into())
            .await
        {
            Ok(()) => Ok(()),
            // The same compaction done by someone else: the same content.
            Err(e) if e.kind() == ports::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A segment's plaintext, opened and authenticated (parsed as it is applied).
    async fn read_segment(&self, name: &str) -> Result<(Vec<u8>, String)> {
        let key = self.segment_key(name);
        let sealed = self.store().get(&key).await?;
        let what = format!("index segment {key}");
        let plain = self
            .keys()
            .open(SealKind::IndexSegment, &seal_id(name), &sealed, &what)?;
        Ok((plain, what))
    }

    /// The names of an account's segments, in order.
    pub(crate) async fn segment_names(&self, tag: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .store()
            .list_all(&self.segment_prefix(tag))
            .await?
            .into_iter()
            .map(|(k, _)| k.id().to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Loads and merges an account's index: one listing and the segments, read in
    /// parallel. A segment deleted while we read (a compaction) makes us list again.
    ///
    /// # Errors
    /// A store failure, or `Damaged` for a segment that does not open: an index that
    /// cannot be read whole is not guessed at.
    pub(crate) async fn load_index(&self, tag: &str) -> Result<AccountIndex> {
        let mut attempts = 0;
        'again: loop {
            let names = self.segment_names(tag).await?;
            let mut index = AccountIndex::default();
            for group in names.chunks(LOAD_PARALLEL) {
                let mut reads = tokio::task::JoinSet::new();
                for (i, name) in group.iter().enumerate() {
                    let this = self.clone();
                    let name = name.clone();
                    reads.spawn(async move { (i, this.read_segment(&name).await) });
                }
                let mut got: Vec<Option<(Vec<u8>, String)>> =
                    (0..group.len()).map(|_| None).collect();
                while let Some(done) = reads.join_next().await {
                    let (i, seg) =
                        done.map_err(|e| Error::Format(format!("index read failed: {e}")))?;
                    match seg {
                        Ok(s) => got[i] = Some(s),
                        Err(Error::Port(e)) if e.is_not_found() && attempts < 5 => {
                            attempts += 1;
                            continue 'again;
                        }
                        Err(e) => return Err(e),
                    }
                }
                for (name, seg) in group.iter().zip(got) {
                    if let Some((plain, what)) = seg {
                        index.apply_plain(&plain, &what, segment_time(name))?;
                    }
                }
            }
            index.settle();
            index.damaged_at = HashSet::new();
            index.segments = names;
            return Ok(index);
        }
    }

    /// The verdicts on packs given since `index` was loaded: condemned packs (still
    /// condemned) and dropped ones, from every segment `index` did not merge, except those
    /// in `skip` (a writer's own). What a writer checks before it records anything.
    ///
    /// # Errors
    /// A store failure or a damaged segment.
    pub(crate) async fn verdicts_since(
        &self,
        tag: &str,
        index: &AccountIndex,
        skip: &HashSet<String>,
    ) -> Result<(HashMap<PackId, Condemned>, HashSet<PackId>)> {
        let known: HashSet<&String> = index.segments.iter().collect();
        let mut attempts = 0;
        'again: loop {
            let mut condemned = HashMap::new();
            let mut dropped = HashSet::new();
            for name in self.segment_names(tag).await? {
                if known.contains(&name) || skip.contains(&name) {
                    continue;
                }
                let seg = match self.read_segment(&name).await {
                    Ok((plain, what)) => postcard::from_bytes::<SegmentWire>(&plain)
                        .map_err(|e| Error::damaged(what, format!("does not parse: {e}")))?,
                    // Compacted away meanwhile: its content is in the compaction.
                    Err(Error::Port(e)) if e.is_not_found() && attempts < 5 => {
                        attempts += 1;
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                };
                for (p, c) in seg.condemned {
                    condemned.entry(p).or_insert(c);
                }
                for p in &seg.revived {
                    condemned.remove(p);
                }
                for p in seg.dropped {
                    condemned.remove(&p);
                    dropped.insert(p);
                }
            }
            return Ok((condemned, dropped));
        }
    }

    /// Merges the segments `index` was loaded from into as few as hold it (see
    /// [`COMPACT_PART`]) and deletes them. Safe beside readers (they list again when a
    /// segment goes) and beside writers (their segments are newer and not touched).
    pub(crate) async fn compact_index(&self, index: &AccountIndex) -> Result<()> {
        let Some(last) = index.segments.last() else {
            return Ok(());
        };
        if index.segments.len() < 2 {
            return Ok(());
        }
        // Sorts right after the newest segment it replaces, before anything written later
        // (the parts in order).
        for (i, part) in Segment::parts_of(index).enumerate() {
            self.put_segment(&format!("{last}c{i:04}"), part).await?;
        }
        for old in &index.segments {
            match self.store().delete(&self.segment_key(old)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
