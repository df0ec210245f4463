//! Reclaiming space: `prune` deletes packs nothing needs any more (left by crashed runs,
//! emptied by a repack); `repack` moves the live blobs of small or mostly dead packs into
//! new, full packs, so that those packs can go. Both work on one account at a time and are
//! safe beside a running backup of that account.
//!
//! A pack is deleted in two phases, as restic and kopia do it:
//!
//! 1. **Condemn.** A pack that holds no blob a snapshot or checkpoint of the account
//!    needs, and that was indexed more than the grace period ago (or is not indexed at
//!    all: a crashed run's upload), is condemned with a date, `not_before` = now + grace.
//!    Writers stop reusing its blobs at once (content they meet again is stored afresh).
//! 2. **Sweep.** A later prune, at or after `not_before`, looks again: still dead, the pack
//!    is recorded as dropped and then deleted; needed after all (a backup that had reused
//!    one of its blobs before the verdict committed since), it is revived.
//!
//! A writer that reused a blob before the verdict checks, just before it records its
//! checkpoint or snapshot, that no pack it used is dropped or condemned with less than a
//! minute (a quarter of the grace, if less) left; if one is, it records nothing and fails,
//! and the next run stores that content again. Otherwise its record is in the catalog
//! before any sweep can look, so the sweep sees the pack as needed. With the default grace
//! of a day only a backup that runs for most of a day beside a prune can meet that.
//!
//! Every step is ordered so that a prune or repack killed at any point loses nothing: new
//! packs are durable before their locations are indexed, locations are indexed before
//! old packs are condemned, and a pack is recorded as dropped before it is deleted (a
//! pack dropped but not deleted is deleted by the next prune).

use crate::account::AccountVault;
use crate::crypto::BlobId;
use crate::error::{Error, Result};
use crate::index::{AccountIndex, Condemned, Loc, Segment, COMPACT_FROM};
use crate::pack::{self, BlobKind, PackBuilder, PackId, PACK_TARGET};
use crate::snapshot::{self, Checkpoint};
use crate::tree::{BlobRef, Piece};
use crate::{Vault, PACK_KIND};
use ports::{catalog_keys, ErrorKind, ObjectKey, ObjectStoreExt};
use std::collections::{HashMap, HashSet};

/// How long a condemned pack waits before it is deleted, unless told otherwise.
pub const DEFAULT_GRACE: chrono::Duration = chrono::Duration::hours(24);

/// A live pack smaller than this is merged with others by a repack.
pub const SMALL_PACK: u64 = (PACK_TARGET / 4) as u64;
/// A live pack whose live records fill less than this share of it is rewritten.
pub const MOSTLY_DEAD: f64 = 0.5;

/// A writer records nothing that uses a condemned pack due for deletion within this long
/// (ms), or within a quarter of its grace if that is less.
const COMMIT_MARGIN: i64 = 60_000;

/// What a prune or repack is asked to do.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// The time the verdicts are dated with (now, outside tests of time).
    pub now: chrono::DateTime<chrono::Utc>,
    /// How long a condemned pack waits before it is deleted. Zero deletes dead packs at
    /// once: safe only when no backup of the task is running.
    pub grace: chrono::Duration,
    /// Also move live blobs out of small and mostly dead packs.
    pub repack: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            now: chrono::Utc::now(),
            grace: DEFAULT_GRACE,
            repack: false,
        }
    }
}

/// What a prune or repack of one account did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Packs of the account before, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Packs holding something a snapshot or checkpoint needs.
    pub live_packs: u64,
    /// Bytes of records no snapshot needs, in packs that are kept (what a repack frees).
    pub dead_bytes_in_live_packs: u64,
    /// Packs rewritten by a repack, their bytes, and the blobs and packs written for them.
    pub repacked: u64,
    pub repacked_bytes: u64,
    pub moved_blobs: u64,
    pub new_packs: u64,
    /// Packs condemned by this run (deleted by a prune once their grace has passed).
    pub condemned: u64,
    pub condemned_bytes: u64,
    /// Condemned packs that a snapshot turned out to need.
    pub revived: u64,
    /// Packs deleted, and their bytes.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Condemned packs still waiting for their date.
    pub waiting: u64,
    /// Why nothing was condemned or deleted for this account, when so (a snapshot that
    /// cannot be read hides what it needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

/// A pack of the account as listed in the store.
struct Listed {
    id: PackId,
    key: ObjectKey,
    size: u64,
}

impl AccountVault {
    /// Prunes the account (and repacks it, when asked). See the module doc for the
    /// protocol.
    ///
    /// # Errors
    /// A store or catalog failure; damage that makes liveness unknowable is reported in
    /// [`PruneReport::held_back`] instead, and nothing is deleted then.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let listed = self.list_packs().await?;
        report.packs = listed.len() as u64;
        report.bytes = listed.iter().map(|p| p.size).sum();
        let mut index = self.reload_index().await?;
        let live = match self.live_blobs(&index).await {
            Ok(live) => live,
            Err(Held(why)) => {
                report.held_back = Some(why);
                report.live_packs = report.packs;
                return Ok(report);
            }
        };
        if opts.repack {
            let moved = self.repack(&index, &live, &listed, &mut report).await?;
            if moved {
                index = self.reload_index().await?;
            }
        }
        let (live_packs, live_bytes) = live_packs(&index, &live);
        report.live_packs = live_packs.len() as u64;
        report.dead_bytes_in_live_packs = listed
            .iter()
            .filter(|p| live_packs.contains(&p.id))
            .map(|p| {
                p.size
                    .saturating_sub(live_bytes.get(&p.id).copied().unwrap_or(0))
            })
            .sum();

        let now = opts.now.timestamp_millis();
        let grace = opts.grace.num_milliseconds().max(0);
        let mut seg = Segment::default();
        let mut delete: Vec<&Listed> = Vec::new();
        let sizes: HashMap<PackId, &Listed> = listed.iter().map(|p| (p.id, p)).collect();

        // Verdicts already given: sweep the due ones, revive the needed ones.
        let mut judged: HashSet<PackId> = HashSet::new();
        for (p, c) in index.all_condemned() {
            judged.insert(p);
            if live_packs.contains(&p) {
                seg.revive(p);
                report.revived += 1;
            } else if c.not_before <= now {
                seg.drop_pack(p);
                if let Some(l) = sizes.get(&p) {
                    delete.push(l);
                }
            } else {
                report.waiting += 1;
            }
        }
        // New verdicts on dead packs.
        for l in &listed {
            if live_packs.contains(&l.id) || judged.contains(&l.id) {
                continue;
            }
            if index.is_dropped(&l.id) {
                // Dropped by a prune killed before it deleted the object.
                delete.push(l);
                continue;
            }
            let old_enough = index.born(&l.id).is_none_or(|born| born + grace <= now);
            if !old_enough {
                continue;
            }
            let verdict = Condemned {
                at: now,
                not_before: now + grace,
            };
            report.condemned += 1;
            report.condemned_bytes += l.size;
            if verdict.not_before <= now {
                // No grace: condemned and dropped in one step.
                seg.drop_pack(l.id);
                delete.push(l);
            } else {
                seg.condemn(l.id, verdict);
                report.waiting += 1;
            }
        }
        if !seg.is_empty() {
            // The verdicts are durable before any object goes.
            self.vault().write_segment(self.tag(), seg).await?;
            self.forget_index().await;
        }
        for l in delete {
            match self.vault().store().delete(&l.key).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            report.deleted += 1;
            report.deleted_bytes += l.size;
        }
        let fresh = self.reload_index().await?;
        if fresh.segments.len() > COMPACT_FROM {
            self.vault().compact_index(&fresh).await?;
            self.forget_index().await;
        }
        Ok(report)
    }

    /// The account's packs in the store.
    async fn list_packs(&self) -> Result<Vec<Listed>> {
        let v = self.vault();
        let prefix = format!(
            "{}{}-",
            ObjectKey::kind_prefix(v.tenant(), v.task(), PACK_KIND),
            self.tag()
        );
        let mut out = Vec::new();
        for (key, size) in v.store().list_all(&prefix).await? {
            if let Some((tag, id)) = Vault::parse_pack_name(key.id()) {
                if tag == self.tag() {
                    out.push(Listed { id, key, size });
                }
            }
        }
        Ok(out)
    }

    /// The account's checkpoint record, whatever snapshot it was made from: a prune keeps
    /// what any checkpoint needs.
    async fn any_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let v = self.vault();
        let key = catalog_keys::checkpoint(v.tenant(), v.task(), self.account());
        let Some(rec) = v.catalog().get(&key.pk, &key.sk).await? else {
            return Ok(None);
        };
        let cp: Checkpoint = snapshot::open_record(v.keys(), &key.pk, &key.sk, &rec.value)?;
        Ok(Some(cp))
    }

    /// Every blob a snapshot or checkpoint of the account needs: trees (every piece),
    /// content and side data. Tree pieces are read a level at a time, nearby ones together.
    async fn live_blobs(
        &self,
        index: &AccountIndex,
    ) -> std::result::Result<HashSet<(BlobId, BlobKind)>, Held> {
        let (snaps, bad) = self.snapshots_checked().await.map_err(Held::from)?;
        if let Some(b) = bad.first() {
            return Err(Held(format!(
                "snapshot record {} does not open ({}); run `lifeboat verify`",
                b.record, b.problem
            )));
        }
        let mut roots: Vec<BlobRef> = Vec::new();
        let mut live: HashSet<(BlobId, BlobKind)> = HashSet::new();
        for s in &snaps {
            roots.push(s.root());
            live.insert((BlobId(s.meta.id), BlobKind::Meta));
        }
        match self.any_checkpoint().await {
            Ok(Some(cp)) => {
                roots.push(cp.root.into());
                live.insert((BlobRef::from(cp.meta).id, BlobKind::Meta));
            }
            Ok(None) => {}
            Err(e) => return Err(Held(format!("the account's checkpoint does not open: {e}"))),
        }
        let mut frontier: Vec<BlobRef> = Vec::new();
        for r in roots {
            if live.insert((r.id, BlobKind::Tree)) {
                frontier.push(r);
            }
        }
        while !frontier.is_empty() {
            let mut next: Vec<BlobRef> = Vec::new();
            let mut failed: Option<String> = None;
            self.read_many_in(
                index,
                std::mem::take(&mut frontier),
                BlobKind::Tree,
                |r, got| {
                    let piece = got.and_then(|b| Piece::decode(&b, &format!("tree {}", r.id)));
                    match piece {
                        Ok(Piece::Branch(children)) => {
                            for c in children {
                                if live.insert((c.node.id, BlobKind::Tree)) {
                                    next.push(c.node);
                                }
                            }
                        }
                        Ok(Piece::Leaf(entries)) => {
                            for e in entries {
                                live.extend(e.content.iter().map(|c| (c.id, BlobKind::Data)));
                                if let Some(s) = e.subtree {
                                    if live.insert((s.id, BlobKind::Tree)) {
                                        next.push(s);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            failed
                                .get_or_insert_with(|| format!("tree {} does not read: {e}", r.id));
                        }
                    }
                    Ok(())
                },
            )
            .await
            .map_err(Held::from)?;
            if let Some(why) = failed {
                return Err(Held(format!("{why}; run `lifeboat verify`")));
            }
            frontier = next;
        }
        Ok(live)
    }

    /// Moves the live blobs of small and mostly dead packs into new packs and indexes
    /// them there; the old packs, now dead, are condemned by the prune that follows.
    /// Returns whether anything moved.
    async fn repack(
        &self,
        index: &AccountIndex,
        live: &HashSet<(BlobId, BlobKind)>,
        listed: &[Listed],
        report: &mut PruneReport,
    ) -> Result<bool> {
        let (live_packs, live_bytes) = live_packs(index, live);
        // Content packs and tree packs are kept apart (as a backup writes them), so small
        // ones are merged with their own kind.
        let holds_data: HashSet<PackId> = live
            .iter()
            .filter_map(|(id, kind)| index.get(id, *kind))
            .filter(|l| l.kind == BlobKind::Data)
            .map(|l| l.pack)
            .collect();
        let mut small: [Vec<&Listed>; 2] = [Vec::new(), Vec::new()];
        let mut sparse = Vec::new();
        for l in listed {
            if !live_packs.contains(&l.id) || index.condemned(&l.id).is_some() {
                continue;
            }
            let used = live_bytes.get(&l.id).copied().unwrap_or(0);
            if (used as f64) < l.size as f64 * MOSTLY_DEAD {
                sparse.push(l);
            } else if l.size < SMALL_PACK {
                small[usize::from(holds_data.contains(&l.id))].push(l);
            }
        }
        // Merging one small pack into one new pack gains nothing.
        let small = small.into_iter().filter(|s| s.len() >= 2).flatten();
        let todo: Vec<&Listed> = sparse.into_iter().chain(small).collect();
        if todo.is_empty() {
            return Ok(false);
        }
        // Which records to move: each live blob whose current location is in a pack
        // being rewritten, and sound.
        let mut wanted: HashMap<PackId, HashMap<u32, BlobId>> = HashMap::new();
        for (id, kind) in live {
            if let Some(l) = index.get(id, *kind) {
                if !l.damaged {
                    wanted.entry(l.pack).or_default().insert(l.offset, *id);
                }
            }
        }
        let v = self.vault().clone();
        let mut out = Repacker::new(self);
        for l in todo {
            let bytes = match v.store().get(&l.key).await {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let entries = match pack::parse_whole(v.keys(), &l.id, &bytes) {
                Ok(e) => e,
                // A damaged pack is left for `verify` to report; its sound records are
                // still found through the index.
                Err(e) if e.is_damage() => {
                    tracing::warn!(pack = ?l.id, error = %e, "not repacked: damaged");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let here = wanted.remove(&l.id).unwrap_or_default();
            let mut moved_all = true;
            for e in entries {
                let Some(id) = here.get(&e.offset) else {
                    continue;
                };
                if id.0 != e.id {
                    moved_all = false;
                    continue;
                }
                let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
                let what = format!("blob {id}");
                if v.keys()
                    .open(e.kind.seal_kind(), &e.id, sealed, &what)
                    .is_err()
                {
                    // A damaged record stays where it is, known to `verify`.
                    moved_all = false;
                    continue;
                }
                out.push(*id, e.kind, e.raw_len, sealed).await?;
            }
            if moved_all {
                report.repacked += 1;
                report.repacked_bytes += l.size;
            }
        }
        out.finish(report).await?;
        Ok(report.moved_blobs > 0)
    }
}

/// Why a prune held back for an account: liveness is unknowable.
struct Held(String);

impl From<Error> for Held {
    fn from(e: Error) -> Self {
        Held(e.to_string())
    }
}

/// The packs holding the current location of a live blob, and the live bytes in each.
fn live_packs(
    index: &AccountIndex,
    live: &HashSet<(BlobId, BlobKind)>,
) -> (HashSet<PackId>, HashMap<PackId, u64>) {
    let mut packs = HashSet::new();
    let mut bytes: HashMap<PackId, u64> = HashMap::new();
    for (id, kind) in live {
        if let Some(l) = index.get(id, *kind) {
            packs.insert(l.pack);
            *bytes.entry(l.pack).or_default() += l.len as u64;
        }
    }
    (packs, bytes)
}

/// Writes moved records into new packs (content apart from trees and side data, as a
/// backup does), each pack durable before its segment.
struct Repacker<'a> {
    av: &'a AccountVault,
    data: Option<PackBuilder>,
    trees: Option<PackBuilder>,
    moved: u64,
    packs: u64,
}

impl<'a> Repacker<'a> {
    fn new(av: &'a AccountVault) -> Self {
        Repacker {
            av,
            data: None,
            trees: None,
            moved: 0,
            packs: 0,
        }
    }

    async fn push(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let tree = kind != BlobKind::Data;
        let slot = if tree {
            &mut self.trees
        } else {
            &mut self.data
        };
        if slot
            .as_ref()
            .is_some_and(|p| !p.is_empty() && p.len() + sealed.len() > PACK_TARGET)
        {
            let full = slot.take().expect("checked");
            self.write(full).await?;
        }
        let slot = if tree {
            &mut self.trees
        } else {
            &mut self.data
        };
        slot.get_or_insert_with(PackBuilder::open)
            .push(id, kind, raw_len, sealed);
        self.moved += 1;
        Ok(())
    }

    async fn write(&mut self, p: PackBuilder) -> Result<()> {
        self.packs += 1;
        let v = self.av.vault();
        let (id, bytes, entries) = p.finish(v.keys())?;
        match v
            .store()
            .put_if_absent(&v.pack_key(self.av.tag(), &id), bytes.into())
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
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
        v.write_segment(self.av.tag(), seg).await?;
        Ok(())
    }

    async fn finish(mut self, report: &mut PruneReport) -> Result<()> {
        for p in [self.data.take(), self.trees.take()].into_iter().flatten() {
            self.write(p).await?;
        }
        report.moved_blobs += self.moved;
        report.new_packs += self.packs;
        Ok(())
    }
}

/// Checks, right before a writer records a checkpoint or snapshot, that no pack it wrote or
/// reused from (`used`) was pruned under it: dropped, or condemned with less than
/// [`COMMIT_MARGIN`] (a quarter of its grace, if less) to go. A sweep cannot come sooner,
/// so the record is in the catalog before any sweep looks. `index` is the writer's view,
/// `own` the segments it wrote.
///
/// # Errors
/// `Conflict` when one was: nothing is recorded, and the next run stores that content
/// again.
pub(crate) async fn check_not_pruned(
    av: &AccountVault,
    index: &AccountIndex,
    own: &HashSet<String>,
    used: &HashSet<PackId>,
) -> Result<()> {
    let (condemned, dropped) = av.vault().verdicts_since(av.tag(), index, own).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let lost = used.iter().find(|p| {
        dropped.contains(*p)
            || index
                .condemned(p)
                .or_else(|| condemned.get(*p).copied())
                .is_some_and(|c| c.not_before - now < COMMIT_MARGIN.min((c.not_before - c.at) / 4))
    });
    if let Some(p) = lost {
        return Err(Error::Conflict(format!(
            "{p:?}, which this backup used, was pruned while it ran; nothing was recorded, \
             and the next run stores that content again"
        )));
    }
    Ok(())
}
