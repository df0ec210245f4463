//! Snapshot trees: one node per folder, each node a blob of its own. A node that did not
//! change between two backups serialises to the same bytes, gets the same id and is not
//! stored again, so a daily snapshot costs only the folders that changed.
//!
//! References name blobs by id only; where a blob lies is the account's location index's
//! business (see [`crate::index`]), so packs can be rewritten without touching any tree.
//!
//! **Large folders are split.** A folder whose node would pass [`PIECE_MAX`] is stored as
//! leaf pieces under a branch node that lists them with their first names. Piece ends are
//! chosen by content (a hash of the entry's name), so adding, changing or removing one
//! entry of a folder of 100,000 rewrites one piece of a few dozen KiB and the branch, not
//! the whole folder; the branch is split the same way when it is itself large.

use crate::crypto::BlobId;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A blob by id, with its plaintext length (which bounds its decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobRef {
    pub id: BlobId,
    pub raw_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One item or folder in a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Exact bytes of the name (a local file name need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Content length in bytes (files); 0 for folders.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch (or the source's change time).
    pub mtime_ns: i64,
    /// Unix permission bits for local files; 0 when the source has none.
    pub mode: u32,
    /// A source-specific change fingerprint (inode and ctime for local files, a change key
    /// for SaaS items): equal fingerprint and size mean the content need not be read again.
    pub fingerprint: u64,
    /// The content, chunk by chunk, in order.
    pub content: Vec<BlobRef>,
    /// The folder's node.
    pub subtree: Option<BlobRef>,
    /// A symbolic link's target.
    pub link: Option<Vec<u8>>,
    /// Source metadata (read state, categories, received time, labels, …).
    pub meta: Vec<(String, String)>,
}

impl Entry {
    pub fn new(name: Vec<u8>, kind: EntryKind) -> Self {
        Entry {
            name,
            kind,
            size: 0,
            mtime_ns: 0,
            mode: 0,
            fingerprint: 0,
            content: Vec::new(),
            subtree: None,
            link: None,
            meta: Vec::new(),
        }
    }

    /// About how many bytes this entry takes in a node (for choosing piece ends).
    pub fn weight(&self) -> usize {
        32 + self.name.len()
            + self.content.len() * 37
            + self.link.as_ref().map_or(0, Vec::len)
            + self
                .meta
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
    }
}

/// One folder: its entries sorted by name, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub entries: Vec<Entry>,
}

impl Node {
    /// Sorts entries by name; call before storing. Later duplicates of a name are dropped
    /// (a folder cannot hold two items of one name).
    pub fn normalise(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.entries.dedup_by(|a, b| a.name == b.name);
    }

    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Every blob this node references directly (content and subtrees).
    pub fn refs(&self) -> impl Iterator<Item = &BlobRef> {
        self.entries
            .iter()
            .flat_map(|e| e.content.iter().chain(e.subtree.iter()))
    }
}

/// A piece of a folder's node as stored: entries, or the pieces below a branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Leaf(Vec<Entry>),
    Branch(Vec<Child>),
}

/// One piece below a branch: its first entry's name, its node, how many entries it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub first: Vec<u8>,
    pub node: BlobRef,
    pub entries: u64,
}

/// A folder's node is split once it would pass this many bytes.
pub const PIECE_MAX: usize = 128 * 1024;
/// A piece ends at a content-defined point only after this many bytes.
const PIECE_MIN: usize = 8 * 1024;
/// One entry in this many ends a piece (past [`PIECE_MIN`]): pieces of ~16-70 KiB.
const PIECE_ODDS: u64 = 128;

/// A stable 64-bit hash of a name (FNV-1a): piece ends must fall on the same names in
/// every build, so this is spelled out here rather than taken from a hasher that may change.
fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// Splits a sorted list into runs: a run ends after an item whose name hashes to a cut
/// point once the run is [`PIECE_MIN`] bytes long, or when it reaches [`PIECE_MAX`].
/// Returns the end index of each run. A list lighter than [`PIECE_MAX`] is one run.
pub fn cut_points<T>(
    items: &[T],
    name: impl Fn(&T) -> &[u8],
    weight: impl Fn(&T) -> usize,
) -> Vec<usize> {
    let total: usize = items.iter().map(&weight).sum();
    if total <= PIECE_MAX {
        return vec![items.len()];
    }
    let mut ends = Vec::new();
    let mut acc = 0;
    for (i, it) in items.iter().enumerate() {
        acc += weight(it);
        if ends_piece(acc, name(it)) {
            ends.push(i + 1);
            acc = 0;
        }
    }
    if ends.last() != Some(&items.len()) {
        ends.push(items.len());
    }
    ends
}

/// Whether a piece of `acc` bytes so far ends after the entry named `name`.
fn ends_piece(acc: usize, name: &[u8]) -> bool {
    (acc >= PIECE_MIN && name_hash(name).is_multiple_of(PIECE_ODDS)) || acc >= PIECE_MAX
}

/// Splits a folder's entries into leaf pieces (see the module doc).
pub fn leaf_pieces(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut cutter = LeafCutter::default();
    let mut out = Vec::new();
    for e in entries {
        out.extend(cutter.push(e));
    }
    out.extend(cutter.finish());
    out
}

/// Cuts a folder's entries into leaf pieces as they come, in name order, exactly where
/// [`cut_points`] would cut the whole list: a folder of a million entries is stored
/// without ever being held whole. Entries are held until the folder is known to need
/// more than one piece (heavier than [`PIECE_MAX`]), then one piece at a time.
#[derive(Default)]
pub struct LeafCutter {
    piece: Vec<Entry>,
    /// Weight of `piece`.
    acc: usize,
    /// Whether the folder is known to be split (so `piece` is the current piece only).
    split: bool,
}

impl LeafCutter {
    /// Adds the next entry; returns the pieces it completes (several when it is the one
    /// that makes the folder heavier than a piece: the entries held until then are cut).
    pub fn push(&mut self, e: Entry) -> Vec<Vec<Entry>> {
        self.acc += e.weight();
        self.piece.push(e);
        if self.split {
            let last = self.piece.last().expect("just pushed");
            if ends_piece(self.acc, &last.name) {
                self.acc = 0;
                return vec![std::mem::take(&mut self.piece)];
            }
            return Vec::new();
        }
        if self.acc <= PIECE_MAX {
            return Vec::new();
        }
        // Heavier than one piece: cut what is held as `cut_points` would.
        self.split = true;
        let held = std::mem::take(&mut self.piece);
        self.acc = 0;
        let mut done = Vec::new();
        for e in held {
            self.acc += e.weight();
            let ends = ends_piece(self.acc, &e.name);
            self.piece.push(e);
            if ends {
                self.acc = 0;
                done.push(std::mem::take(&mut self.piece));
            }
        }
        done
    }

    /// The last piece (the only one of a folder that needs no split; an empty folder is
    /// one empty piece).
    pub fn finish(self) -> Option<Vec<Entry>> {
        (!self.piece.is_empty() || !self.split).then_some(self.piece)
    }
}

/// Splits a branch's children the same way.
pub fn branch_pieces(children: Vec<Child>) -> Vec<Vec<Child>> {
    let ends = cut_points(&children, |c| &c.first, |c| c.first.len() + 52);
    split_at_ends(children, &ends)
}

fn split_at_ends<T>(items: Vec<T>, ends: &[usize]) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(ends.len());
    let mut it = items.into_iter();
    let mut at = 0;
    for &end in ends {
        out.push(it.by_ref().take(end - at).collect());
        at = end;
    }
    out
}

// ---- wire form: postcard ----

/// Version 2: references by id; folders split into pieces.
const NODE_VERSION: u8 = 2;

#[derive(Serialize, Deserialize)]
struct RefWire {
    id: [u8; 32],
    raw_len: u32,
}

impl From<&BlobRef> for RefWire {
    fn from(r: &BlobRef) -> Self {
        RefWire {
            id: r.id.0,
            raw_len: r.raw_len,
        }
    }
}

impl From<RefWire> for BlobRef {
    fn from(r: RefWire) -> Self {
        BlobRef {
            id: BlobId(r.id),
            raw_len: r.raw_len,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EntryWire {
    name: Vec<u8>,
    kind: EntryKind,
    size: u64,
    mtime_ns: i64,
    mode: u32,
    fingerprint: u64,
    content: Vec<RefWire>,
    subtree: Option<RefWire>,
    link: Option<Vec<u8>>,
    meta: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct ChildWire {
    first: Vec<u8>,
    node: RefWire,
    entries: u64,
}

#[derive(Serialize, Deserialize)]
enum PieceWire {
    Leaf(Vec<EntryWire>),
    Branch(Vec<ChildWire>),
}

#[derive(Serialize, Deserialize)]
struct NodeWire {
    v: u8,
    piece: PieceWire,
}

fn entry_wire(e: &Entry) -> EntryWire {
    EntryWire {
        name: e.name.clone(),
        kind: e.kind,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        fingerprint: e.fingerprint,
        content: e.content.iter().map(RefWire::from).collect(),
        subtree: e.subtree.as_ref().map(RefWire::from),
        link: e.link.clone(),
        meta: e.meta.clone(),
    }
}

fn entry_from(e: EntryWire) -> Entry {
    Entry {
        name: e.name,
        kind: e.kind,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        fingerprint: e.fingerprint,
        content: e.content.into_iter().map(BlobRef::from).collect(),
        subtree: e.subtree.map(BlobRef::from),
        link: e.link,
        meta: e.meta,
    }
}

/// Entries held in their node's wire form, in name order: what a backup keeps of a folder
/// it has read (some 80 bytes a small file, where an [`Entry`] value takes about 250),
/// decoded one at a time when asked for.
#[derive(Clone, Debug, Default)]
pub struct PackedEntries {
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`.
    starts: Vec<u32>,
}

impl PackedEntries {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Appends an entry, which must sort after the last one.
    ///
    /// # Errors
    /// `Format` once the entries pass 4 GiB (tens of millions of entries in one folder).
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        debug_assert!(self.is_empty() || self.name(self.len() - 1) < e.name.as_slice());
        let start = u32::try_from(self.bytes.len())
            .map_err(|_| Error::Format("a folder of more than 4 GiB of entries".into()))?;
        postcard::to_extend(&entry_wire(e), std::mem::take(&mut self.bytes))
            .map(|b| self.bytes = b)
            .map_err(|e| Error::Format(format!("entry does not serialise: {e}")))?;
        self.starts.push(start);
        Ok(())
    }

    fn raw(&self, i: usize) -> &[u8] {
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.bytes.len(), |&e| e as usize);
        &self.bytes[self.starts[i] as usize..end]
    }

    /// The name of entry `i`, read without decoding the entry (it comes first, as its
    /// length in postcard's varint and its bytes).
    pub fn name(&self, i: usize) -> &[u8] {
        let raw = self.raw(i);
        let (mut len, mut at, mut shift) = (0usize, 0, 0);
        loop {
            let b = raw[at];
            len |= ((b & 0x7f) as usize) << shift;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        &raw[at..at + len]
    }

    /// Entry `i`, decoded.
    pub fn get(&self, i: usize) -> Entry {
        let (w, _) = postcard::take_from_bytes::<EntryWire>(self.raw(i))
            .expect("entries held here were encoded here");
        entry_from(w)
    }

    /// Where the entry named `name` is (`Ok`), or would go (`Err`).
    pub fn find(&self, name: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Every entry, decoded one at a time, in name order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Bytes held (for accounting).
    pub fn held(&self) -> usize {
        self.bytes.capacity() + self.starts.capacity() * 4
    }

    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.starts.shrink_to_fit();
    }
}

impl Piece {
    pub fn encode(&self) -> Vec<u8> {
        let piece = match self {
            Piece::Leaf(entries) => PieceWire::Leaf(entries.iter().map(entry_wire).collect()),
            Piece::Branch(children) => PieceWire::Branch(
                children
                    .iter()
                    .map(|c| ChildWire {
                        first: c.first.clone(),
                        node: RefWire::from(&c.node),
                        entries: c.entries,
                    })
                    .collect(),
            ),
        };
        postcard::to_allocvec(&NodeWire {
            v: NODE_VERSION,
            piece,
        })
        .expect("tree nodes always serialise")
    }

    /// # Errors
    /// `Damaged` when the bytes do not parse or a branch is out of order; `Format` for a
    /// node written by a newer format version.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Piece> {
        let w: NodeWire = postcard::from_bytes(bytes)
            .map_err(|e| Error::damaged(what, format!("tree node does not parse: {e}")))?;
        if w.v != NODE_VERSION {
            return Err(Error::Format(format!(
                "{what}: tree node format {} is not one this build reads",
                w.v
            )));
        }
        Ok(match w.piece {
            PieceWire::Leaf(entries) => Piece::Leaf(entries.into_iter().map(entry_from).collect()),
            PieceWire::Branch(children) => {
                let children: Vec<Child> = children
                    .into_iter()
                    .map(|c| Child {
                        first: c.first,
                        node: c.node.into(),
                        entries: c.entries,
                    })
                    .collect();
                if children.windows(2).any(|w| w[0].first >= w[1].first) {
                    return Err(Error::damaged(what, "tree branch is out of order"));
                }
                Piece::Branch(children)
            }
        })
    }
}

impl Node {
    /// The node as one leaf piece (a folder small enough not to be split).
    pub fn encode(&self) -> Vec<u8> {
        Piece::Leaf(self.entries.clone()).encode()
    }

    /// Decodes a node stored as one leaf piece.
    ///
    /// # Errors
    /// As [`Piece::decode`]; `Damaged` for a branch (which needs its pieces read).
    pub fn decode(bytes: &[u8], what: &str) -> Result<Node> {
        match Piece::decode(bytes, what)? {
            Piece::Leaf(entries) => Ok(Node { entries }),
            Piece::Branch(_) => Err(Error::damaged(what, "a branch where a leaf was expected")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        let mut e = Entry::new(format!("file-{i:07}.txt").into_bytes(), EntryKind::File);
        e.size = i as u64;
        e.content = vec![BlobRef {
            id: BlobId([i as u8; 32]),
            raw_len: i as u32,
        }];
        e
    }

    #[test]
    fn small_folders_are_one_piece_and_large_ones_split_stably() {
        let small: Vec<Entry> = (0..100).map(entry).collect();
        assert_eq!(leaf_pieces(small).len(), 1);

        let big: Vec<Entry> = (0..100_000).map(entry).collect();
        let before = leaf_pieces(big.clone());
        assert!(before.len() > 20, "{} pieces", before.len());
        assert!(before.iter().all(|p| !p.is_empty()));
        assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 100_000);
        for p in &before {
            let bytes = Piece::Leaf(p.clone()).encode().len();
            assert!(bytes <= 2 * PIECE_MAX, "piece of {bytes} bytes");
        }
        // One entry changed: only the piece holding it differs.
        let mut changed = big.clone();
        changed[54_321].size += 1;
        let after = leaf_pieces(changed);
        let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(before.len(), after.len());
        assert_eq!(differing, 1);
        // One entry added: the pieces far from it are the same.
        let mut grown = big;
        grown.insert(500, {
            let mut e = entry(500);
            e.name = b"file-0000500a.txt".to_vec();
            e
        });
        let after = leaf_pieces(grown);
        let same = after.iter().filter(|p| before.contains(p)).count();
        assert!(
            same + 2 >= before.len(),
            "{same} of {} pieces kept",
            before.len()
        );
    }

    /// The cutter, fed one entry at a time, cuts where the whole-list rule cuts.
    #[test]
    fn the_streaming_cutter_cuts_where_the_whole_list_is_cut() {
        for n in [0usize, 1, 100, 1_500, 1_600, 5_000, 40_000] {
            let entries: Vec<Entry> = (0..n)
                .map(|i| {
                    let mut e = entry(i);
                    // Some heavy entries, so that pieces also end at PIECE_MAX.
                    if i % 977 == 0 {
                        e.meta = vec![("k".into(), "v".repeat(20_000))];
                    }
                    e
                })
                .collect();
            let ends = cut_points(&entries, |e| &e.name, Entry::weight);
            let whole = split_at_ends(entries.clone(), &ends);
            assert_eq!(leaf_pieces(entries), whole, "{n} entries");
        }
    }

    #[test]
    fn packed_entries_read_back_and_are_found_by_name() {
        let mut p = PackedEntries::default();
        let mut all = Vec::new();
        for i in 0..300 {
            let mut e = entry(i);
            // Names longer than 127 bytes take two bytes of length.
            e.name = format!("{i:04}-{}", "n".repeat(i % 200)).into_bytes();
            e.meta = vec![("seen".into(), i.to_string())];
            p.push(&e).unwrap();
            all.push(e);
        }
        assert_eq!(p.len(), 300);
        assert_eq!(p.iter().collect::<Vec<_>>(), all);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(p.name(i), e.name.as_slice());
            assert_eq!(p.find(&e.name), Ok(i));
        }
        assert_eq!(p.find(b"0000"), Err(0));
        assert_eq!(p.find(b"9999"), Err(300));
    }

    #[test]
    fn pieces_round_trip_and_a_disordered_branch_is_damage() {
        let leaf = Piece::Leaf((0..10).map(entry).collect());
        assert_eq!(Piece::decode(&leaf.encode(), "t").unwrap(), leaf);
        let child = |n: &str| Child {
            first: n.as_bytes().to_vec(),
            node: BlobRef {
                id: BlobId([1; 32]),
                raw_len: 9,
            },
            entries: 3,
        };
        let branch = Piece::Branch(vec![child("a"), child("b")]);
        assert_eq!(Piece::decode(&branch.encode(), "t").unwrap(), branch);
        let bad = Piece::Branch(vec![child("b"), child("a")]);
        assert!(Piece::decode(&bad.encode(), "t").unwrap_err().is_damage());
    }
}
