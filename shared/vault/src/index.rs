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
//! compaction, and later by a repack (new locations, packs dropped). Reading merges them
//! in name order:
//!
//! - a location known as damaged stays damaged, whichever segment says so;
//! - of two sound locations of one blob the later wins (both hold the same bytes);
//! - locations in dropped packs are forgotten.
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

const SEGMENT_VERSION: u8 = 1;

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

/// One account's merged index: every blob once, sorted by id.
#[derive(Default, Debug)]
pub struct AccountIndex {
    packs: Vec<PackId>,
    pack_ix: HashMap<PackId, u32>,
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
        let ix = (self.packs.len() - 1) as u32;
        self.pack_ix.insert(p, ix);
        ix
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

    /// Whether a sound copy of the blob, of this kind, is stored: what a writer may reuse.
    pub fn has_sound(&self, id: &BlobId, kind: BlobKind) -> bool {
        self.slot(id, kind).is_some_and(|s| !s.damaged)
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

    /// Appends one location as the next in order (see [`AccountIndex::settle`]).
    fn push(&mut self, id: BlobId, loc: Loc) {
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
    fn apply_plain(&mut self, plain: &[u8], what: &str) -> Result<()> {
        let bad = |e: postcard::Error| Error::damaged(what, format!("does not parse: {e}"));
        let (v, rest) = postcard::take_from_bytes::<u8>(plain).map_err(bad)?;
        if v != SEGMENT_VERSION {
            return Err(Error::Format(format!(
                "{what}: format {v} is not one this build reads"
            )));
        }
        let (packs, rest) = postcard::take_from_bytes::<Vec<PackId>>(rest).map_err(bad)?;
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
        let (dropped, _) = postcard::take_from_bytes::<Vec<PackId>>(rest).map_err(bad)?;
        if !dropped.is_empty() {
            // Every location known so far in a dropped pack is forgotten: merged first,
            // so that "known so far" means each blob's location after this segment.
            self.settle();
            let dropped: HashSet<u32> = dropped
                .iter()
                .filter_map(|p| self.pack_ix.get(p).copied())
                .collect();
            self.slots.retain(|s| !dropped.contains(&s.pack));
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

#[derive(Serialize, Deserialize, Default)]
struct SegmentWire {
    v: u8,
    packs: Vec<PackId>,
    entries: Vec<EntryWire>,
    /// Packs deleted (by a prune or repack): every location in them is forgotten.
    dropped: Vec<PackId>,
}

/// A segment being put together: new locations, damage marks, dropped packs.
#[derive(Default)]
pub struct Segment {
    wire: SegmentWire,
    pack_ix: HashMap<PackId, u32>,
}

impl Segment {
    pub fn is_empty(&self) -> bool {
        self.wire.entries.is_empty() && self.wire.dropped.is_empty()
    }

    pub fn len(&self) -> usize {
        self.wire.entries.len()
    }

    pub fn add(&mut self, id: BlobId, loc: Loc) {
        let next = self.wire.packs.len() as u32;
        let pack = *self.pack_ix.entry(loc.pack).or_insert_with(|| {
            self.wire.packs.push(loc.pack);
            next
        });
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

    /// Everything a merged index knows, as segments of at most [`COMPACT_PART`] entries
    /// each (compaction): a segment is read whole into memory, so a million blobs are
    /// not written as one.
    pub fn parts_of(index: &AccountIndex) -> impl Iterator<Item = Segment> + '_ {
        index.slots.chunks(COMPACT_PART).map(|part| {
            let mut s = Segment::default();
            for slot in part {
                s.add(slot.id, index.loc(slot));
            }
            s
        })
    }
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
                for (plain, what) in got.into_iter().flatten() {
                    index.apply_plain(&plain, &what)?;
                }
            }
            index.settle();
            index.damaged_at = HashSet::new();
            index.segments = names;
            return Ok(index);
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
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u32, damaged: bool) -> Loc {
        Loc {
            pack: PackId([pack; 32]),
            offset,
            len: 10,
            raw_len: 5,
            kind: BlobKind::Data,
            damaged,
        }
    }

    /// A segment's plaintext, as written.
    fn plain(s: Segment) -> Vec<u8> {
        let mut wire = s.wire;
        wire.v = SEGMENT_VERSION;
        postcard::to_allocvec(&wire).unwrap()
    }

    fn apply(ix: &mut AccountIndex, s: Segment) {
        ix.apply_plain(&plain(s), "test").unwrap();
        ix.settle();
    }

    #[test]
    fn damage_sticks_to_its_location_and_a_sound_copy_wins() {
        let id = BlobId([9; 32]);
        let mut ix = AccountIndex::default();
        let seg = |entries: Vec<Loc>, dropped: Vec<u8>| {
            let mut s = Segment::default();
            for l in entries {
                s.add(id, l);
            }
            for p in dropped {
                s.drop_pack(PackId([p; 32]));
            }
            s
        };
        apply(&mut ix, seg(vec![loc(1, 8, false)], vec![]));
        assert!(ix.has_sound(&id, BlobKind::Data));
        assert!(!ix.has_sound(&id, BlobKind::Tree));
        apply(&mut ix, seg(vec![loc(1, 8, true)], vec![]));
        assert!(!ix.has_sound(&id, BlobKind::Data));
        // A later segment that still lists the damaged location does not heal it.
        apply(&mut ix, seg(vec![loc(1, 8, false)], vec![]));
        assert!(!ix.has_sound(&id, BlobKind::Data));
        // A new copy elsewhere does.
        apply(&mut ix, seg(vec![loc(2, 8, false)], vec![]));
        assert_eq!(ix.get(&id, BlobKind::Data).unwrap().pack, PackId([2; 32]));
        assert!(ix.has_sound(&id, BlobKind::Data));
        // A damage mark on the old location no longer matters.
        apply(&mut ix, seg(vec![loc(1, 8, true)], vec![]));
        assert!(ix.has_sound(&id, BlobKind::Data));
        // Dropping the pack forgets the blob.
        apply(&mut ix, seg(vec![], vec![2]));
        assert!(ix.get(&id, BlobKind::Data).is_none());
    }

    /// Merging many segments at once (one sort) gives what applying them one by one
    /// does, drops included; and the parts a compaction writes load back the same.
    #[test]
    fn merging_at_once_equals_applying_in_order_and_parts_load_back() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let segs: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                let mut s = Segment::default();
                for _ in 0..400 {
                    let id = BlobId([next(60) as u8; 32]);
                    let l = loc(next(4) as u8, next(3) as u32 * 8, next(5) == 0);
                    s.add(id, l);
                }
                if i == 6 {
                    s.drop_pack(PackId([1; 32]));
                }
                plain(s)
            })
            .collect();
        let mut one_by_one = AccountIndex::default();
        for s in &segs {
            one_by_one.apply_plain(s, "t").unwrap();
            one_by_one.settle();
        }
        let mut at_once = AccountIndex::default();
        for s in &segs {
            at_once.apply_plain(s, "t").unwrap();
        }
        at_once.settle();
        let all = |ix: &AccountIndex| ix.iter().collect::<Vec<_>>();
        assert_eq!(all(&one_by_one), all(&at_once));
        assert!(at_once.len() > 30, "{}", at_once.len());

        let mut reloaded = AccountIndex::default();
        for part in Segment::parts_of(&at_once) {
            reloaded.apply_plain(&plain(part), "t").unwrap();
        }
        reloaded.settle();
        assert_eq!(all(&reloaded), all(&at_once));
    }

    #[test]
    fn a_segment_that_names_an_unlisted_pack_or_is_cut_short_is_damage() {
        let mut s = Segment::default();
        s.add(BlobId([1; 32]), loc(1, 8, false));
        let mut bytes = plain(s);
        let mut ix = AccountIndex::default();
        assert!(ix
            .apply_plain(&bytes[..bytes.len() - 3], "t")
            .unwrap_err()
            .is_damage());
        // The entry's pack number (after id and kind) points past the one pack listed.
        let at = 1 + 1 + 32 + 1 + 32 + 1;
        bytes[at] = 7;
        let mut ix = AccountIndex::default();
        assert!(ix.apply_plain(&bytes, "t").unwrap_err().is_damage());
    }
}
