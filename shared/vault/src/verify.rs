//! `verify`: reads every object of a task, checks every tag and id, then walks every
//! snapshot to name the ones that a damaged or missing object affects. Damaged data is
//! reported, never returned.

use crate::error::Result;
use crate::pack::{self, PackId};
use crate::tree::{BlobRef, EntryKind, Node};
use crate::{BlobId, Vault, PACK_KIND};
use domain::{escape, AccountId};
use ports::{ObjectKey, ObjectStoreExt};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One damaged or missing object (or blob inside one), and what it affects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The object's key (and the blob, when only one record of a pack is damaged).
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
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.damage.is_empty()
    }
}

#[derive(Default)]
struct Scan {
    /// Every good record: (pack, offset) -> (id, tree, sealed len).
    good: HashMap<(PackId, u32), (BlobId, bool, u32)>,
    /// Bad records: (pack, offset) -> problem.
    bad: HashMap<(PackId, u32), String>,
    /// Packs that could not be read or parsed at all.
    bad_packs: HashMap<PackId, String>,
    /// Objects under the pack prefix that are not packs at all, by key.
    strays: Vec<(String, String)>,
    nodes: HashMap<BlobId, Arc<Node>>,
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
        self.ensure_dicts().await?;
        scan.strays.extend(self.dict_damage());
        let prefix = ObjectKey::kind_prefix(self.tenant(), self.task(), PACK_KIND);
        let objects = self.store().list_all(&prefix).await?;
        for (key, size) in objects {
            report.packs += 1;
            report.bytes += size;
            let Some(id) = PackId::from_hex(key.id()) else {
                scan.bad_packs
                    .insert(PackId([0; 32]), format!("{key}: not a pack name"));
                continue;
            };
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
                            pack: id,
                            offset: e.offset,
                            len: e.len,
                            raw_len: e.raw_len,
                        };
                        let sealed = &bytes[e.offset as usize..(e.offset + e.len) as usize];
                        let opened = this.open_blob(&r, e.tree, sealed).and_then(|plain| {
                            if e.tree {
                                Node::decode(&plain, &format!("tree {}", r.id)).map(Some)
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
                    Ok(node) => {
                        scan.good
                            .insert((id, e.offset), (BlobId(e.id), e.tree, e.len));
                        if let Some(n) = node {
                            scan.nodes.insert(BlobId(e.id), Arc::new(n));
                        }
                    }
                    Err(err) => {
                        scan.bad.insert((id, e.offset), err.to_string());
                    }
                }
            }
        }

        // Which objects each snapshot needs, and whether they are sound.
        let mut affects: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for (id, why) in &scan.bad_packs {
            affects
                .entry(self.pack_key(id).to_string())
                .or_insert_with(|| (why.clone(), Vec::new()));
        }
        for (key, why) in &scan.strays {
            affects
                .entry(key.clone())
                .or_insert_with(|| (why.clone(), Vec::new()));
        }
        for ((p, off), why) in &scan.bad {
            affects
                .entry(format!("{} @{off}", self.pack_key(p)))
                .or_insert_with(|| (why.clone(), Vec::new()));
        }
        for account in accounts {
            for snap in self.snapshots(account).await? {
                report.snapshots += 1;
                let label = format!("{account} {}", snap.id);
                let mut clean: HashSet<BlobId> = HashSet::new();
                walk(
                    self,
                    &scan,
                    &snap.root(),
                    true,
                    &mut Vec::new(),
                    &label,
                    &mut clean,
                    &mut affects,
                );
            }
        }
        report.damage = affects
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
        Ok(report)
    }
}

/// Checks one reference against the scan; returns the object key and problem if bad.
fn check(v: &Vault, scan: &Scan, r: &BlobRef, tree: bool) -> Option<(String, String)> {
    let key = v.pack_key(&r.pack).to_string();
    if let Some(why) = scan.bad_packs.get(&r.pack) {
        return Some((key, why.clone()));
    }
    match scan.good.get(&(r.pack, r.offset)) {
        Some((id, t, len)) if *id == r.id && *t == tree && *len == r.len => None,
        Some(_) => Some((
            format!("{key} @{}", r.offset),
            "reference does not match the record there".into(),
        )),
        None => match scan.bad.get(&(r.pack, r.offset)) {
            Some(why) => Some((format!("{key} @{}", r.offset), why.clone())),
            None => Some((
                key,
                "missing: the snapshot references an object that is not there".into(),
            )),
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    v: &Vault,
    scan: &Scan,
    node_ref: &BlobRef,
    _is_tree: bool,
    path: &mut Vec<Vec<u8>>,
    label: &str,
    clean: &mut HashSet<BlobId>,
    affects: &mut BTreeMap<String, (String, Vec<String>)>,
) -> bool {
    if clean.contains(&node_ref.id) {
        return true;
    }
    let show = |path: &[Vec<u8>]| {
        if path.is_empty() {
            "/".to_string()
        } else {
            path.iter().map(|s| escape(s)).collect::<Vec<_>>().join("/")
        }
    };
    if let Some((obj, why)) = check(v, scan, node_ref, true) {
        affects
            .entry(obj)
            .or_insert_with(|| (why, Vec::new()))
            .1
            .push(format!("{label} {} (whole folder)", show(path)));
        return false;
    }
    let Some(node) = scan.nodes.get(&node_ref.id).cloned() else {
        return false;
    };
    let mut ok = true;
    for e in &node.entries {
        path.push(e.name.clone());
        for c in &e.content {
            if let Some((obj, why)) = check(v, scan, c, false) {
                ok = false;
                affects
                    .entry(obj)
                    .or_insert_with(|| (why, Vec::new()))
                    .1
                    .push(format!("{label} {}", show(path)));
            }
        }
        if let (EntryKind::Dir, Some(s)) = (e.kind, &e.subtree) {
            ok &= walk(v, scan, s, true, path, label, clean, affects);
        }
        path.pop();
    }
    if ok {
        clean.insert(node_ref.id);
    }
    ok
}
