//! `verify`: reads every pack of a task, checks every tag and id, then walks every snapshot
//! of the given accounts to name the ones that a damaged or missing blob affects. Damaged
//! data is reported, never returned.
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

/// What reading every pack found.
#[derive(Default)]
struct Scan {
    /// Every sound record: (pack, offset) -> (id, kind, sealed len).
    good: HashMap<(PackId, u32), (BlobId, BlobKind, u32)>,
    /// Damaged records: (pack, offset) -> problem.
    bad: HashMap<(PackId, u32), String>,
    /// Packs that could not be read or parsed at all.
    bad_packs: HashMap<PackId, String>,
    /// Packs listed in the store.
    present: HashSet<PackId>,
    /// Objects that are not what their name says, by key.
    strays: Vec<(String, String)>,
    pieces: HashMap<BlobId, Piece>,
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
        let mut scan = Scan::default();
        self.dict().await?;
        scan.strays.extend(self.check_dict_copies().await?);
        self.scan_packs(&mut scan, &mut report, progress).await?;

        let mut affects = Affects::default();
        for (id, why) in &scan.bad_packs {
            affects.add(format!("pack {}", id.to_hex()), why.clone(), None);
        }
        for (key, why) in &scan.strays {
            affects.add(key.clone(), why.clone(), None);
        }
        // Damaged records are named even when no snapshot needs them any more (a copy
        // stored since heals the snapshots, not the pack): a repack drops them.
        for ((p, off), why) in &scan.bad {
            affects.add(self.pack_object(p, *off), why.clone(), None);
        }
        let mut affected: BTreeSet<String> = BTreeSet::new();
        for account in accounts {
            let av = self.account(account);
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
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut walker = Walker {
                v: self,
                scan: &scan,
                index: &index,
                clean: HashSet::new(),
                damaged: HashMap::new(),
                affects: &mut affects,
            };
            for snap in &snaps {
                report.snapshots += 1;
                let label = format!("{account} {}", snap.id);
                let mut ok = walker.walk(&snap.root(), &mut Vec::new(), &label, true);
                ok &= walker.check_one(&snap.meta.into(), BlobKind::Meta, &label, "(side data)");
                if !ok {
                    affected.insert(label);
                }
            }
            let newly = walker.damaged;
            report.marked += mark_damaged(&av, &index, newly).await?;
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

    /// How damage in a pack is named: the pack, and the record's offset.
    fn pack_object(&self, pack: &PackId, offset: u32) -> String {
        format!("pack {} @{offset}", pack.to_hex())
    }

    async fn scan_packs(
        &self,
        scan: &mut Scan,
        report: &mut VerifyReport,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<()> {
        let prefix = ObjectKey::kind_prefix(self.tenant(), self.task(), PACK_KIND);
        for (key, size) in self.store().list_all(&prefix).await? {
            report.packs += 1;
            report.bytes += size;
            let Some((_, id)) = Vault::parse_pack_name(key.id()) else {
                scan.strays
                    .push((key.to_string(), "not a pack name".to_string()));
                continue;
            };
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
                        let opened = this.open_blob(&r, e.kind, sealed).and_then(|plain| {
                            if e.kind == BlobKind::Tree {
                                Piece::decode(&plain, &format!("tree {}", r.id)).map(Some)
                            } else {
                                Ok(None)
                            }
                        });
                        (*e, opened)
                    })
                    .collect()
            })
            .await
            .map_err(|e| crate::Error::Format(format!("verify worker failed: {e}")))?;
            for (e, res) in checked {
                report.blobs += 1;
                match res {
                    Ok(piece) => {
                        scan.good
                            .insert((id, e.offset), (BlobId(e.id), e.kind, e.len));
                        if let Some(p) = piece {
                            scan.pieces.insert(BlobId(e.id), p);
                        }
                    }
                    Err(err) => {
                        scan.bad.insert((id, e.offset), err.to_string());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Walks an account's snapshots against the scan.
struct Walker<'a> {
    v: &'a Vault,
    scan: &'a Scan,
    index: &'a AccountIndex,
    /// Folder nodes whose whole subtree is sound.
    clean: HashSet<BlobId>,
    /// Blobs found damaged (id -> location), for the index.
    damaged: HashMap<(BlobId, BlobKind), Loc>,
    affects: &'a mut Affects,
}

impl Walker<'_> {
    /// Checks one reference: `None` when sound, else the object and problem.
    fn check(&mut self, r: &BlobRef, kind: BlobKind) -> Option<(String, String)> {
        let Some(loc) = self.index.get(&r.id, kind) else {
            return Some((
                format!("blob {}", r.id),
                "missing: the account's index does not know it".into(),
            ));
        };
        let key = format!("pack {}", loc.pack.to_hex());
        let problem = if let Some(why) = self.scan.bad_packs.get(&loc.pack) {
            Some((key, why.clone()))
        } else if !self.scan.present.contains(&loc.pack) {
            Some((
                key,
                "missing: the index names a pack that is not there".into(),
            ))
        } else {
            match self.scan.good.get(&(loc.pack, loc.offset)) {
                Some((id, k, len)) if *id == r.id && *k == kind && *len == loc.len => None,
                Some(_) => Some((
                    self.v.pack_object(&loc.pack, loc.offset),
                    "the index names a record that is another blob".into(),
                )),
                None => Some((
                    self.v.pack_object(&loc.pack, loc.offset),
                    self.scan
                        .bad
                        .get(&(loc.pack, loc.offset))
                        .cloned()
                        .unwrap_or_else(|| "no record starts there".into()),
                )),
            }
        };
        if problem.is_some() {
            self.damaged.insert((r.id, kind), loc);
        }
        problem
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

    /// Walks a folder's node (all its pieces) and everything below; returns whether all
    /// of it is sound.
    fn walk(&mut self, node: &BlobRef, path: &mut Vec<Vec<u8>>, label: &str, top: bool) -> bool {
        if top && self.clean.contains(&node.id) {
            return true;
        }
        let show = |path: &[Vec<u8>]| {
            if path.is_empty() {
                "/".to_string()
            } else {
                path.iter().map(|s| escape(s)).collect::<Vec<_>>().join("/")
            }
        };
        if let Some((obj, why)) = self.check(node, BlobKind::Tree) {
            self.affects.add(
                obj,
                why,
                Some(format!("{label} {} (whole folder)", show(path))),
            );
            return false;
        }
        let Some(piece) = self.scan.pieces.get(&node.id) else {
            return false;
        };
        let mut ok = true;
        match piece {
            Piece::Branch(children) => {
                for c in children {
                    ok &= self.walk(&c.node, path, label, false);
                }
            }
            Piece::Leaf(entries) => {
                for e in entries {
                    path.push(e.name.clone());
                    for c in &e.content {
                        if let Some((obj, why)) = self.check(c, BlobKind::Data) {
                            ok = false;
                            self.affects
                                .add(obj, why, Some(format!("{label} {}", show(path))));
                        }
                    }
                    if let (EntryKind::Dir, Some(s)) = (e.kind, &e.subtree) {
                        ok &= self.walk(s, path, label, true);
                    }
                    path.pop();
                }
            }
        }
        if ok && top {
            self.clean.insert(node.id);
        }
        ok
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
