//! `verify`: reads every pack of a task, checks every tag and id, then walks every snapshot
//! of the given accounts to name the ones that a damaged or missing blob affects. Damaged
//! data is reported, never returned.
//!
//! It goes account by account (a pack holds one account's blobs): the account's packs are
//! read against its index, keeping one mark per index entry (whether the record where the
//! index puts it is that blob) and where sound records start; then its snapshots are
//! walked, reading each folder's node as it comes. Nothing of a whole task, or a whole
//! account, is held decoded, so an account of a million items verifies in the memory of
//! its index.
//!
//! What it finds damaged it also records in the account's index, so that the next backup
//! stores those blobs again when the source hands them over (see [`crate::writer`]); the
//! snapshots that name them are then whole again, and a later `verify` no longer lists
//! them.

use crate::account::{AccountVault, DamagedRecord};
use crate::error::Result;
use crate::index::{AccountIndex, Loc, Segment};
use crate::pack::{self, PackId};
use crate::tree::{BlobRef, EntryKind, Piece};
use crate::{BlobId, BlobKind, Vault, PACK_KIND};
use domain::{escape, AccountId};
use ports::ObjectKey as Key;
use ports::{ObjectKey, ObjectStoreExt};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One damaged or missing object (or blob inside one), and what it affects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The object's key (and the blob, when only one record of a pack is damaged), or the
    /// catalog record.
    pub object: String,
    pub problem: String,
    /// `account snapshot path` of each item that cannot be restored because of it.
    pub affects: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub packs: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub snapshots: u64,
    pub damage: Vec<Damage>,
    /// `account snapshot` of every snapshot that cannot be restored whole.
    pub affected_snapshots: Vec<String>,
    /// Damaged blobs newly recorded in the accounts' indexes (the next backup stores them
    /// again from the source where it can).
    pub marked: u64,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.damage.is_empty()
    }
}

/// What reading one account's packs found (or the packs of no listed account).
#[derive(Default)]
struct Scan {
    /// Per entry of the account's index: the record where the index puts the blob is
    /// that blob, sound.
    sound: Vec<bool>,
    /// Where sound records start: (pack number, offset), sorted once the scan is done.
    starts: Vec<(u32, u32)>,
    pack_no: HashMap<PackId, u32>,
    /// Damaged records: (pack, offset) -> problem.
    bad: HashMap<(PackId, u32), String>,
    /// Packs that could not be read or parsed at all.
    bad_packs: HashMap<PackId, String>,
    /// Packs listed in the store.
    present: HashSet<PackId>,
}

impl Scan {
    fn starts_at(&self, pack: &PackId, offset: u32) -> bool {
        self.pack_no
            .get(pack)
            .is_some_and(|&n| self.starts.binary_search(&(n, offset)).is_ok())
    }
}

/// Collects damage by object.
#[derive(Default)]
struct Affects(BTreeMap<String, (String, Vec<String>)>);

impl Affects {
    fn add(&mut self, object: String, why: String, what: Option<String>) {
        let e = self.0.entry(object).or_insert_with(|| (why, Vec::new()));
        if let Some(w) = what {
            e.1.push(w);
        }
    }
}

/// A pack as listed: its key, size and id.
type Listed = (Key, u64, PackId);

impl Vault {
    /// Verifies this task: every pack, then every snapshot of `accounts`. `progress` is
    /// called with the bytes of each pack checked.
    ///
    /// # Errors
    /// Only when the store or catalog cannot be read at all; damage is in the report.
    pub async fn verify(
        &self,
        accounts: &[AccountId],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut affects = Affects::default();
        self.dict().await?;
        for (key, why) in self.check_dict_copies().await? {
            affects.add(key, why, None);
        }
        // Every pack, by the account tag its name starts with.
        let mut by_tag: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
        let prefix = ObjectKey::kind_prefix(self.tenant(), self.task(), PACK_KIND);
        for (key, size) in self.store().list_all(&prefix).await? {
            match Vault::parse_pack_name(key.id()) {
                Some((tag, id)) => {
                    let tag = tag.to_string();
                    by_tag.entry(tag).or_default().push((key, size, id));
                }
                None => {
                    report.packs += 1;
                    report.bytes += size;
                    affects.add(key.to_string(), "not a pack name".to_string(), None);
                }
            }
        }
        let mut affected: BTreeSet<String> = BTreeSet::new();
        for account in accounts {
            let av = self.account(account);
            let packs = by_tag.remove(av.tag()).unwrap_or_default();
            let (snaps, bad_records) = av.snapshots_checked().await?;
            for DamagedRecord { record, problem } in bad_records {
                affects.add(
                    format!("catalog record {record}"),
                    problem,
                    Some(format!("{account} (that snapshot)")),
                );
                affected.insert(format!("{account} {record}"));
            }
            let index = match av.index().await {
                Ok(ix) => ix,
                Err(e) if e.is_damage() => {
                    affects.add(
                        format!("index of account {account}"),
                        e.to_string(),
                        Some(format!("{account} (every snapshot)")),
                    );
                    report.snapshots += snaps.len() as u64;
                    affected.extend(snaps.iter().map(|s| format!("{account} {}", s.id)));
                    let scan = self.scan_packs(packs, None, &mut report, progress).await?;
                    self.name_damage(&scan, &mut affects);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let scan = self
                .scan_packs(packs, Some(&index), &mut report, progress)
                .await?;
            self.name_damage(&scan, &mut affects);
            let mut walker = Walker {
                v: self,
                av: &av,
                scan: &scan,
                index: &index,
                clean: HashSet::new(),
                damaged: HashMap::new(),
                affects: &mut affects,
            };
            for snap in &snaps {
                report.snapshots += 1;
                let label = format!("{account} {}", snap.id);
                let mut ok = walker
                    .walk(snap.root(), &mut Vec::new(), &label, true)
                    .await?;
                ok &= walker.check_one(&snap.meta.into(), BlobKind::Meta, &label, "(side data)");
                if !ok {
                    affected.insert(label);
                }
            }
            let newly = walker.damaged;
            drop(scan);
            report.marked += mark_damaged(&av, &index, newly).await?;
        }
        // Packs of no account listed: read and checked all the same.
        for (_, packs) in by_tag {
            let scan = self.scan_packs(packs, None, &mut report, progress).await?;
            self.name_damage(&scan, &mut affects);
        }
        report.damage = affects
            .0
            .into_iter()
            .map(|(object, (problem, mut affects))| {
                affects.sort();
                affects.dedup();
                Damage {
                    object,
                    problem,
                    affects,
                }
            })
            .collect();
        report.affected_snapshots = affected.into_iter().collect();
        Ok(report)
    }

    /// Damage found in packs is named even when no snapshot needs it any more (a copy
    /// stored since heals the snapshots, not the pack): a repack drops it.
    fn name_damage(&self, scan: &Scan, affects: &mut Affects) {
        for (id, why) in &scan.bad_packs {
            affects.add(format!("pack {}", id.to_hex()), why.clone(), None);
        }
        for ((p, off), why) in &scan.bad {
            affects.add(self.pack_object(p, *off), why.clone(), None);
        }
    }

    /// How damage in a pack is named: the pack, and the record's offset.
    fn pack_object(&self, pack: &PackId, offset: u32) -> String {
        format!("pack {} @{offset}", pack.to_hex())
    }

    /// Reads and checks `packs` (one account's, whose index is `index`), one at a time.
    async fn scan_packs(
        &self,
        packs: Vec<Listed>,
        index: Option<&AccountIndex>,
        report: &mut VerifyReport,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Scan> {
        let mut scan = Scan {
            sound: vec![false; index.map_or(0, AccountIndex::len)],
            ..Default::default()
        };
        for (key, size, id) in packs {
            report.packs += 1;
            report.bytes += size;
            scan.present.insert(id);
            let bytes = match self.store().get(&key).await {
                Ok(b) => b,
                Err(e) => {
                    scan.bad_packs.insert(id, format!("cannot be read: {e}"));
                    continue;
                }
            };
            progress(size);
            let entries = match pack::parse_whole(self.keys(), &id, &bytes) {
                Ok(e) => e,
                Err(e) => {
                    scan.bad_packs.insert(id, e.to_string());
                    continue;
                }
            };
            let this = self.clone();
            let checked: Vec<_> = tokio::task::spawn_blocking(move || {
                entries
                    .par_iter()
                    .map(|e| {
                        let r = BlobRef {
                            id: BlobId(e.id),
                            raw_len: e.raw_len,
                        };
                        let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
                        // A tree node must parse too; it is read again, alone, by the walk.
                        let opened = this.open_blob(&r, e.kind, sealed).and_then(|plain| {
                            if e.kind == BlobKind::Tree {
                                Piece::decode(&plain, &format!("tree {}", r.id)).map(drop)
                            } else {
                                Ok(())
                            }
                        });
                        (*e, opened)
                    })
                    .collect()
            })
            .await
            .map_err(|e| crate::Error::Format(format!("verify worker failed: {e}")))?;
            let next = scan.pack_no.len() as u32;
            let no = *scan.pack_no.entry(id).or_insert(next);
            for (e, res) in checked {
                report.blobs += 1;
                if let Err(err) = res {
                    scan.bad.insert((id, e.offset), err.to_string());
                    continue;
                }
                scan.starts.push((no, e.offset));
                let Some(ix) = index else { continue };
                if let Some(i) = ix.position(&BlobId(e.id), e.kind) {
                    let l = ix.at(i);
                    if l.pack == id && l.offset == e.offset && l.len == e.len {
                        scan.sound[i] = true;
                    }
                }
            }
        }
        scan.starts.sort_unstable();
        Ok(scan)
    }
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Walks an account's snapshots against the scan of its packs.
struct Walker<'a> {
    v: &'a Vault,
    av: &'a AccountVault,
    scan: &'a Scan,
    index: &'a AccountIndex,
    /// Folder nodes whose whole subtree is sound.
    clean: HashSet<BlobId>,
    /// Blobs found damaged (id and kind -> location), for the index.
    damaged: HashMap<(BlobId, BlobKind), Loc>,
    affects: &'a mut Affects,
}

fn show(path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.iter().map(|s| escape(s)).collect::<Vec<_>>().join("/")
    }
}

impl Walker<'_> {
    /// Checks one reference: `None` when sound, else the object and problem.
    fn check(&mut self, r: &BlobRef, kind: BlobKind) -> Option<(String, String)> {
        let Some(i) = self.index.position(&r.id, kind) else {
            return Some((
                format!("blob {}", r.id),
                "missing: the account's index does not know it".into(),
            ));
        };
        if self.scan.sound[i] {
            return None;
        }
        let loc = self.index.at(i);
        let key = format!("pack {}", loc.pack.to_hex());
        let problem = if let Some(why) = self.scan.bad_packs.get(&loc.pack) {
            (key, why.clone())
        } else if !self.scan.present.contains(&loc.pack) {
            (
                key,
                "missing: the index names a pack that is not there".into(),
            )
        } else if self.scan.starts_at(&loc.pack, loc.offset) {
            (
                self.v.pack_object(&loc.pack, loc.offset),
                "the index names a record that is another blob".into(),
            )
        } else {
            (
                self.v.pack_object(&loc.pack, loc.offset),
                self.scan
                    .bad
                    .get(&(loc.pack, loc.offset))
                    .cloned()
                    .unwrap_or_else(|| "no record starts there".into()),
            )
        };
        self.damaged.insert((r.id, kind), loc);
        Some(problem)
    }

    fn check_one(&mut self, r: &BlobRef, kind: BlobKind, label: &str, what: &str) -> bool {
        match self.check(r, kind) {
            None => true,
            Some((obj, why)) => {
                self.affects.add(obj, why, Some(format!("{label} {what}")));
                false
            }
        }
    }

    /// Walks a folder's node (all its pieces) and everything below, reading each node
    /// as it comes; returns whether all of it is sound.
    ///
    /// # Errors
    /// Only a store that cannot be read (damage is reported, not an error).
    fn walk<'b>(
        &'b mut self,
        node: BlobRef,
        path: &'b mut Vec<Vec<u8>>,
        label: &'b str,
        top: bool,
    ) -> Boxed<'b, Result<bool>> {
        Box::pin(async move {
            if top && self.clean.contains(&node.id) {
                return Ok(true);
            }
            let whole = |path: &[Vec<u8>]| Some(format!("{label} {} (whole folder)", show(path)));
            if let Some((obj, why)) = self.check(&node, BlobKind::Tree) {
                self.affects.add(obj, why, whole(path));
                return Ok(false);
            }
            let piece = match self.av.read_piece(&node).await {
                Ok(p) => p,
                // Sound when the pack was read, not now: named all the same.
                Err(e) if e.is_damage() => {
                    self.affects
                        .add(format!("blob {}", node.id), e.to_string(), whole(path));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            let mut ok = true;
            match piece {
                Piece::Branch(children) => {
                    for c in children {
                        ok &= self.walk(c.node, path, label, false).await?;
                    }
                }
                Piece::Leaf(entries) => {
                    // The items first; the subfolders once this node is let go of.
                    let mut below = Vec::new();
                    for e in entries {
                        path.push(e.name);
                        for c in &e.content {
                            if let Some((obj, why)) = self.check(c, BlobKind::Data) {
                                ok = false;
                                self.affects
                                    .add(obj, why, Some(format!("{label} {}", show(path))));
                            }
                        }
                        let name = path.pop().expect("pushed");
                        if let (EntryKind::Dir, Some(s)) = (e.kind, e.subtree) {
                            below.push((name, s));
                        }
                    }
                    for (name, s) in below {
                        path.push(name);
                        ok &= self.walk(s, path, label, true).await?;
                        path.pop();
                    }
                }
            }
            if ok && top {
                self.clean.insert(node.id);
            }
            Ok(ok)
        })
    }
}

/// Records in the account's index the damaged blobs it does not know as damaged yet.
async fn mark_damaged(
    av: &AccountVault,
    index: &AccountIndex,
    found: HashMap<(BlobId, BlobKind), Loc>,
) -> Result<u64> {
    let mut seg = Segment::default();
    for ((id, _), loc) in found {
        if index.get(&id, loc.kind).is_some_and(|l| !l.damaged) {
            seg.add(
                id,
                Loc {
                    damaged: true,
                    ..loc
                },
            );
        }
    }
    let n = seg.len() as u64;
    if n > 0 {
        av.vault().write_segment(av.tag(), seg).await?;
        av.reload_index().await?;
    }
    Ok(n)
}
