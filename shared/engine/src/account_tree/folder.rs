//! The folders of an account tree, read as a connector looks into them. A folder not looked
//! into yet is its stored node's reference and nothing more; its subfolders, or all of
//! it, are read on first use. A folder read whole keeps its items in their stored form
//! ([`PackedEntries`], decoded one at a time) plus the items changed since, so a folder of
//! 100,000 files costs some 8 MB, not the 25 of decoded entries.
//!
//! **Invariant:** a changed folder is read whole (items and subfolders), so that it can be
//! stored again; an unread part of a folder is exactly what its stored node holds.

use crate::account_tree::Boxed;
use crate::Result;
use std::collections::BTreeMap;
use vault::{BlobKind, BlobRef, Entry, EntryKind, PackedEntries, SnapshotWriter, TreeTotals};

/// Changed items kept decoded before they are packed with the others: the bound on the
/// folder's decoded entries (a first backup puts every item of a folder).
const PACK_CHANGES_FROM: usize = 4096;

/// One folder of the tree.
pub(super) struct Folder {
    /// The folder's entry in its parent (metadata, time); `None` for the root. Its
    /// `subtree` is filled when the parent is stored.
    pub entry: Option<Entry>,
    /// The stored node its unread parts are read from; `None` for a folder new to this
    /// run (read whole, empty, from the start).
    pub stored: Option<BlobRef>,
    /// Whether the folder or anything below it changed since `stored`: it is then stored
    /// again, else its node is reused.
    pub changed: bool,
    /// Its subfolders, once read.
    pub folders: Option<BTreeMap<Vec<u8>, Folder>>,
    /// Its items, once read.
    pub items: Option<Items>,
}

/// What of a folder a caller needs read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// Nothing of its own (its entry is in its parent).
    Nothing,
    /// Its subfolders.
    Folders,
    /// Items and subfolders.
    All,
}

impl Folder {
    /// A folder new to this run.
    pub fn new(entry: Option<Entry>) -> Self {
        Folder {
            entry,
            stored: None,
            changed: true,
            folders: Some(BTreeMap::new()),
            items: Some(Items::default()),
        }
    }

    /// A folder as stored, nothing of it read yet (`stored`: its node, `None` for an
    /// empty one).
    pub fn unread(entry: Option<Entry>, stored: Option<BlobRef>) -> Self {
        match stored {
            Some(r) => Folder {
                entry,
                stored: Some(r),
                changed: false,
                folders: None,
                items: None,
            },
            None => Folder {
                changed: false,
                ..Folder::new(entry)
            },
        }
    }

    /// Its items and subfolders' counts as the tree holds them now (of the parts read).
    pub fn direct(&self) -> Delta {
        let mut d = Delta::default();
        if let Some(it) = &self.items {
            d.items += it.count as i64;
            d.bytes += it.bytes as i64;
        }
        if let Some(f) = &self.folders {
            d.folders += f.len() as i64;
        }
        d
    }

    /// What of the parts of this folder and below that are read the tree holds now.
    pub fn read_totals(&self) -> Delta {
        let mut d = self.direct();
        for f in self.folders.iter().flat_map(|m| m.values()) {
            d.add(f.read_totals());
        }
        d
    }

    /// The parts of this folder and below that are not read: what a removal of it takes
    /// out of the stored tree's totals, to be counted from the stored nodes.
    pub fn unread_parts(&self, out: &mut Vec<Unread>) {
        let Some(node) = self.stored else { return };
        let (items, deep) = (self.items.is_none(), self.folders.is_none());
        if items || deep {
            out.push(Unread { node, items, deep });
        }
        for f in self.folders.iter().flat_map(|m| m.values()) {
            f.unread_parts(out);
        }
    }
}

/// A part of the stored tree taken out without being read: the items of `node`, and
/// (`deep`) its subfolders with everything below them.
pub(super) struct Unread {
    pub node: BlobRef,
    pub items: bool,
    pub deep: bool,
}

/// Counts that move as the tree changes: what the tree holds is the stored tree's totals
/// plus these (see `AccountTree::totals`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub items: i64,
    pub folders: i64,
    pub bytes: i64,
}

impl Delta {
    pub fn add(&mut self, o: Delta) {
        self.items += o.items;
        self.folders += o.folders;
        self.bytes += o.bytes;
    }

    pub fn sub(&mut self, o: Delta) {
        self.items -= o.items;
        self.folders -= o.folders;
        self.bytes -= o.bytes;
    }

    /// `base` moved by this.
    pub fn apply(self, base: TreeTotals) -> TreeTotals {
        let at = |b: u64, d: i64| u64::try_from(b as i64 + d).unwrap_or(0);
        TreeTotals {
            items: at(base.items, self.items),
            folders: at(base.folders, self.folders),
            bytes: at(base.bytes, self.bytes),
        }
    }
}

/// A folder's items: as read (packed), with the changes since on top.
#[derive(Default)]
pub(super) struct Items {
    base: PackedEntries,
    /// Changed items by name: `None` where an item of `base` was removed.
    changes: BTreeMap<Vec<u8>, Option<Entry>>,
    pub count: u64,
    pub bytes: u64,
}

impl Items {
    pub fn get(&self, name: &[u8]) -> Option<Entry> {
        match self.changes.get(name) {
            Some(e) => e.clone(),
            None => self.base.find(name).ok().map(|i| self.base.get(i)),
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        match self.changes.get(name) {
            Some(e) => e.is_some(),
            None => self.base.find(name).is_ok(),
        }
    }

    /// Puts (or replaces) an item.
    ///
    /// # Errors
    /// A folder too large to hold (see [`PackedEntries::push`]).
    pub fn put(&mut self, e: Entry) -> Result<()> {
        if let Some(old) = self.get(&e.name) {
            self.count -= 1;
            self.bytes -= old.size;
        }
        self.count += 1;
        self.bytes += e.size;
        self.changes.insert(e.name.clone(), Some(e));
        if self.changes.len() >= PACK_CHANGES_FROM.max(self.base.len() / 2) {
            self.pack()?;
        }
        Ok(())
    }

    /// Removes an item; returns it.
    pub fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let old = self.get(name)?;
        self.count -= 1;
        self.bytes -= old.size;
        if self.base.find(name).is_ok() {
            self.changes.insert(name.to_vec(), None);
        } else {
            self.changes.remove(name);
        }
        Some(old)
    }

    /// Every item, in name order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        Merge {
            base: &self.base,
            at: 0,
            changes: self.changes.iter().peekable(),
        }
    }

    /// Packs the changes with the items as read (a folder filling up).
    fn pack(&mut self) -> Result<()> {
        let mut packed = PackedEntries::default();
        for e in self.iter() {
            packed.push(&e)?;
        }
        packed.shrink_to_fit();
        self.base = packed;
        self.changes.clear();
        Ok(())
    }
}

/// The items as read merged with the changes, in name order.
struct Merge<'a> {
    base: &'a PackedEntries,
    at: usize,
    changes: std::iter::Peekable<std::collections::btree_map::Iter<'a, Vec<u8>, Option<Entry>>>,
}

impl Iterator for Merge<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            let base_name = (self.at < self.base.len()).then(|| self.base.name(self.at));
            let take_change = match (base_name, self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(b), Some((c, _))) => {
                    if b == c.as_slice() {
                        // Replaced or removed: the change stands for it.
                        self.at += 1;
                    }
                    c.as_slice() <= b
                }
            };
            if take_change {
                let (_, e) = self.changes.next().expect("peeked");
                if let Some(e) = e {
                    return Some(e.clone());
                }
            } else {
                self.at += 1;
                return Some(self.base.get(self.at - 1));
            }
        }
    }
}

/// Reads what `need` asks of `f` that is not read yet, through the writer (see
/// [`SnapshotWriter::read_folder`]); the counts of what is read leave `delta` (what the
/// tree holds of them is counted from the folder from now on).
///
/// # Errors
/// A storage failure or damage in the folder's node.
pub(super) async fn read(
    w: &mut SnapshotWriter,
    f: &mut Folder,
    need: Need,
    delta: &mut Delta,
) -> Result<()> {
    let want_items = need == Need::All && f.items.is_none();
    let want_folders = need != Need::Nothing && f.folders.is_none();
    if !want_items && !want_folders {
        return Ok(());
    }
    let r = f
        .stored
        .expect("a folder with unread parts has a stored node");
    let mut items = want_items.then(PackedEntries::default);
    let mut folders = want_folders.then(BTreeMap::new);
    let (mut count, mut bytes) = (0u64, 0u64);
    w.read_folder(&r, &mut |leaf| {
        for e in leaf {
            if e.kind == EntryKind::Dir {
                if let Some(m) = folders.as_mut() {
                    let stored = e.subtree;
                    m.insert(e.name.clone(), Folder::unread(Some(e), stored));
                }
            } else if let Some(p) = items.as_mut() {
                p.push(&e)?;
                count += 1;
                bytes += e.size;
            }
        }
        Ok(())
    })
    .await?;
    if let Some(mut p) = items {
        p.shrink_to_fit();
        delta.items -= count as i64;
        delta.bytes -= bytes as i64;
        f.items = Some(Items {
            base: p,
            changes: BTreeMap::new(),
            count,
            bytes,
        });
    }
    if let Some(m) = folders {
        delta.folders -= m.len() as i64;
        f.folders = Some(m);
    }
    Ok(())
}

/// Stores `f` and what changed below it; returns its node. A folder that did not change
/// keeps its node, unless that node is found damaged: it is then read and stored again.
///
/// # Errors
/// A storage failure, or damage in a node that must be read to be stored again.
pub(super) fn store<'a>(
    w: &'a mut SnapshotWriter,
    f: &'a mut Folder,
    delta: &'a mut Delta,
) -> Boxed<'a, Result<BlobRef>> {
    Box::pin(async move {
        if let (false, Some(r)) = (f.changed, f.stored) {
            if w.is_sound(&r.id, BlobKind::Tree) {
                return Ok(r);
            }
        }
        if f.stored.is_some() {
            read(w, f, Need::All, delta).await?;
        }
        let mut dirs: Vec<Entry> = Vec::new();
        for (name, child) in f.folders.as_mut().expect("read whole") {
            let mut e = child
                .entry
                .clone()
                .unwrap_or_else(|| super::dir_entry(name));
            e.subtree = Some(store(w, child, delta).await?);
            dirs.push(e);
        }
        let items = f.items.as_ref().expect("read whole");
        // Items and subfolders are each in name order; one name is never both, but should
        // it be, the item wins, as it always has.
        let merged = MergeDirs {
            items: items.iter().peekable(),
            dirs: dirs.into_iter().peekable(),
        };
        Ok(w.store_entries(merged).await?)
    })
}

struct MergeDirs<I: Iterator<Item = Entry>, D: Iterator<Item = Entry>> {
    items: std::iter::Peekable<I>,
    dirs: std::iter::Peekable<D>,
}

impl<I: Iterator<Item = Entry>, D: Iterator<Item = Entry>> Iterator for MergeDirs<I, D> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        match (self.items.peek(), self.dirs.peek()) {
            (Some(i), Some(d)) if d.name < i.name => self.dirs.next(),
            (Some(_), _) => self.items.next(),
            (None, _) => self.dirs.next(),
        }
    }
}

/// Counts what a stored part holds (see [`Unread`]), reading its nodes one at a time.
///
/// # Errors
/// A storage failure or damage in a node.
pub(super) fn count_unread<'a>(
    w: &'a mut SnapshotWriter,
    part: Unread,
) -> Boxed<'a, Result<Delta>> {
    Box::pin(async move {
        let mut d = Delta::default();
        let mut below = Vec::new();
        w.read_folder(&part.node, &mut |leaf| {
            for e in leaf {
                if e.kind == EntryKind::Dir {
                    if part.deep {
                        d.folders += 1;
                        below.extend(e.subtree);
                    }
                } else if part.items {
                    d.items += 1;
                    d.bytes += e.size as i64;
                }
            }
            Ok(())
        })
        .await?;
        for node in below {
            let all = Unread {
                node,
                items: true,
                deep: true,
            };
            d.add(count_unread(w, all).await?);
        }
        Ok(d)
    })
}
