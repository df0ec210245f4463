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

/// A location as held in memory: the pack interned (an index of 1,000,000 blobs in a few
/// hundred packs would otherwise repeat 32-byte pack names a million times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
    kind: BlobKind,
    damaged: bool,
}

/// A pack found holding nothing any snapshot or checkpoint needs: it is deleted by a
/// prune at or after `not_before` (milliseconds since the epoch) if it is still dead then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condemned {
    pub at: i64,
    pub not_before: i64,
}

/// One account's merged index.
#[derive(Default, Debug)]
pub struct AccountIndex {
    packs: Vec<PackId>,
    /// When each pack was first indexed (ms since the epoch), parallel to `packs`.
    born: Vec<i64>,
    pack_ix: HashMap<PackId, u32>,
    map: HashMap<BlobId, Slot>,
    condemned: HashMap<PackId, Condemned>,
    dropped: HashSet<PackId>,
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

    /// Where the blob lies (possibly a damaged location: check [`Loc::damaged`]).
    pub fn get(&self, id: &BlobId) -> Option<Loc> {
        self.map.get(id).map(|s| self.loc(s))
    }

    /// Whether a sound copy of the blob, of this kind, is stored where it will stay: what a
    /// writer may reuse. A condemned pack's copy is not reused (a prune may delete it
    /// before the writer's snapshot is recorded); the content is stored again.
    pub fn has_sound(&self, id: &BlobId, kind: BlobKind) -> bool {
        self.map.get(id).is_some_and(|s| {
            !s.damaged
                && s.kind == kind
                && (self.condemned.is_empty()
                    || !self.condemned.contains_key(&self.packs[s.pack as usize]))
        })
    }

    /// Every known blob and its location.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, Loc)> + '_ {
        self.map.iter().map(|(id, s)| (*id, self.loc(s)))
    }

    /// Adds a location (a blob this run stored): a later sound location wins. A location
    /// in a dropped pack is ignored (a stale damage mark, written after the drop).
    pub fn insert(&mut self, id: BlobId, loc: Loc) {
        if !self.dropped.is_empty() && self.dropped.contains(&loc.pack) {
            return;
        }
        let pack = self.intern(loc.pack);
        let slot = Slot {
            pack,
            offset: loc.offset,
            len: loc.len,
            raw_len: loc.raw_len,
            kind: loc.kind,
            damaged: loc.damaged,
        };
        match self.map.get(&id) {
            Some(old) if old.pack == slot.pack && old.offset == slot.offset => {
                // One location: damage, once known, stays.
                let damaged = old.damaged || slot.damaged;
                self.map.insert(id, Slot { damaged, ..slot });
            }
            Some(old) if slot.damaged && !old.damaged => {}
            _ => {
                self.map.insert(id, slot);
            }
        }
    }

    /// Applies one segment (segments are applied in name order); `written` is the time its
    /// name gives, for packs it does not date itself.
    fn apply(&mut self, seg: SegmentWire, written: i64, damaged_at: &mut HashSet<(PackId, u32)>) {
        for (i, p) in seg.packs.iter().enumerate() {
            if !self.dropped.contains(p) {
                let born = seg.born.get(i).copied().filter(|b| *b > 0);
                self.note_born(*p, born.unwrap_or(written));
            }
        }
        for e in &seg.entries {
            let pack = seg.packs[e.pack as usize];
            let damaged = e.damaged || damaged_at.contains(&(pack, e.offset));
            if e.damaged {
                damaged_at.insert((pack, e.offset));
            }
            self.insert(
                BlobId(e.id),
                Loc {
                    pack,
                    offset: e.offset,
                    len: e.len,
                    raw_len: e.raw_len,
                    kind: e.kind,
                    damaged,
                },
            );
        }
        for (p, c) in seg.condemned {
            if !self.dropped.contains(&p) {
                self.condemned.entry(p).or_insert(c);
            }
        }
        for p in &seg.revived {
            self.condemned.remove(p);
        }
        if !seg.dropped.is_empty() {
            let dropped: HashSet<u32> = seg
                .dropped
                .iter()
                .filter_map(|p| self.pack_ix.get(p).copied())
                .collect();
            self.map.retain(|_, s| !dropped.contains(&s.pack));
            for p in &seg.dropped {
                self.condemned.remove(p);
                self.dropped.insert(*p);
            }
        }
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

    /// Everything a merged index knows, as one segment (compaction): locations with their
    /// packs' dates, verdicts on packs, and the packs dropped (so that an older compaction
    /// left behind by a concurrent one cannot bring their locations back).
    pub fn of(index: &AccountIndex) -> Segment {
        let mut s = Segment::default();
        let mut all: Vec<(BlobId, Loc)> = index.iter().collect();
        all.sort_by_key(|(id, _)| *id);
        for (id, loc) in all {
            s.pack(loc.pack, index.born(&loc.pack).unwrap_or(0));
            s.add(id, loc);
        }
        let mut condemned: Vec<_> = index.all_condemned().collect();
        condemned.sort_by_key(|(p, _)| *p);
        s.wire.condemned = condemned;
        let mut dropped: Vec<PackId> = index.dropped.iter().copied().collect();
        dropped.sort();
        s.wire.dropped = dropped;
        s
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

    async fn read_segment(&self, name: &str) -> Result<SegmentWire> {
        let key = self.segment_key(name);
        let sealed = self.store().get(&key).await?;
        let what = format!("index segment {key}");
        let plain = self
            .keys()
            .open(SealKind::IndexSegment, &seal_id(name), &sealed, &what)?;
        let wire: SegmentWire = postcard::from_bytes(&plain)
            .map_err(|e| Error::damaged(&what, format!("does not parse: {e}")))?;
        if wire.v != SEGMENT_VERSION {
            return Err(Error::Format(format!(
                "{what}: format {} is not one this build reads",
                wire.v
            )));
        }
        if wire
            .entries
            .iter()
            .any(|e| e.pack as usize >= wire.packs.len())
        {
            return Err(Error::damaged(what, "names a pack it does not list"));
        }
        Ok(wire)
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
            let mut damaged_at = HashSet::new();
            for group in names.chunks(LOAD_PARALLEL) {
                let mut reads = tokio::task::JoinSet::new();
                for (i, name) in group.iter().enumerate() {
                    let this = self.clone();
                    let name = name.clone();
                    reads.spawn(async move { (i, this.read_segment(&name).await) });
                }
                let mut got: Vec<Option<SegmentWire>> = (0..group.len()).map(|_| None).collect();
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
                    if let Some(seg) = seg {
                        index.apply(seg, segment_time(name), &mut damaged_at);
                    }
                }
            }
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
                    Ok(s) => s,
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

    /// Merges the segments `index` was loaded from into one and deletes them. Safe beside
    /// readers (they list again when a segment goes) and beside writers (their segments
    /// are newer and not touched).
    pub(crate) async fn compact_index(&self, index: &AccountIndex) -> Result<()> {
        let Some(last) = index.segments.last() else {
            return Ok(());
        };
        if index.segments.len() < 2 {
            return Ok(());
        }
        // Sorts right after the newest segment it replaces, before anything written later.
        let name = format!("{last}c");
        self.put_segment(&name, Segment::of(index)).await?;
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

    #[test]
    fn damage_sticks_to_its_location_and_a_sound_copy_wins() {
        let id = BlobId([9; 32]);
        let mut damaged_at = HashSet::new();
        let mut ix = AccountIndex::default();
        let seg = |entries: Vec<Loc>, dropped: Vec<u8>| {
            let mut s = Segment::default();
            for l in entries {
                s.add(id, l);
            }
            for p in dropped {
                s.drop_pack(PackId([p; 32]));
            }
            s.wire
        };
        ix.apply(seg(vec![loc(1, 8, false)], vec![]), 1, &mut damaged_at);
        assert!(ix.has_sound(&id, BlobKind::Data));
        assert!(!ix.has_sound(&id, BlobKind::Tree));
        ix.apply(seg(vec![loc(1, 8, true)], vec![]), 1, &mut damaged_at);
        assert!(!ix.has_sound(&id, BlobKind::Data));
        // A later segment that still lists the damaged location does not heal it.
        ix.apply(seg(vec![loc(1, 8, false)], vec![]), 1, &mut damaged_at);
        assert!(!ix.has_sound(&id, BlobKind::Data));
        // A new copy elsewhere does.
        ix.apply(seg(vec![loc(2, 8, false)], vec![]), 1, &mut damaged_at);
        assert_eq!(ix.get(&id).unwrap().pack, PackId([2; 32]));
        assert!(ix.has_sound(&id, BlobKind::Data));
        // A damage mark on the old location no longer matters.
        ix.apply(seg(vec![loc(1, 8, true)], vec![]), 1, &mut damaged_at);
        assert!(ix.has_sound(&id, BlobKind::Data));
        // Dropping the pack forgets the blob.
        ix.apply(seg(vec![], vec![2]), 1, &mut damaged_at);
        assert!(ix.get(&id).is_none());
    }

    #[test]
    fn verdicts_on_packs_merge_and_survive_compaction() {
        let a = BlobId([1; 32]);
        let b = BlobId([2; 32]);
        let (p1, p2) = (PackId([1; 32]), PackId([2; 32]));
        let mut damaged_at = HashSet::new();
        let mut ix = AccountIndex::default();
        let mut s = Segment::default();
        s.add(a, loc(1, 8, false));
        s.add(b, loc(2, 8, false));
        ix.apply(s.wire, 1_000, &mut damaged_at);
        assert_eq!(ix.born(&p1), Some(1_000));

        // Condemned: still readable, never reused.
        let c = Condemned {
            at: 2_000,
            not_before: 3_000,
        };
        let mut s = Segment::default();
        s.condemn(p1, c);
        s.condemn(p2, c);
        ix.apply(s.wire, 2_000, &mut damaged_at);
        assert!(ix.get(&a).is_some());
        assert!(!ix.has_sound(&a, BlobKind::Data));
        assert_eq!(ix.condemned(&p1), Some(c));

        // Revived: reusable again. Dropped: forgotten for good.
        let mut s = Segment::default();
        s.revive(p2);
        s.drop_pack(p1);
        ix.apply(s.wire, 4_000, &mut damaged_at);
        assert!(ix.has_sound(&b, BlobKind::Data));
        assert!(ix.get(&a).is_none());
        assert!(ix.is_dropped(&p1));
        assert_eq!(ix.condemned(&p1), None);

        // A compaction keeps the dates and the drop: an older compaction's locations in
        // the dropped pack, merged before it, do not come back.
        let compacted = Segment::of(&ix).wire;
        let mut again = AccountIndex::default();
        let mut stale = Segment::default();
        stale.add(a, loc(1, 8, false));
        again.apply(stale.wire, 1_500, &mut damaged_at);
        again.apply(compacted, 9_000, &mut damaged_at);
        assert!(again.get(&a).is_none());
        assert!(again.has_sound(&b, BlobKind::Data));
        assert_eq!(again.born(&p2), Some(1_000));
        // A damage mark written late for a dropped pack changes nothing.
        let mut late = Segment::default();
        late.add(a, loc(1, 8, true));
        again.apply(late.wire, 9_500, &mut damaged_at);
        assert!(again.get(&a).is_none());
    }
}
