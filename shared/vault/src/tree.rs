//! Snapshot trees: one node per folder, each node a blob of its own. A node that did not
//! change between two backups serialises to the same bytes, gets the same id and is not
//! stored again, so a daily snapshot costs only the folders that changed.
//!
//! Every reference to a blob carries its location (pack, offset, length), so reading one
//! item needs the nodes along its path and then a single ranged read.

use crate::crypto::BlobId;
use crate::error::{Error, Result};
use crate::pack::PackId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Where a blob is and how large it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub id: BlobId,
    pub pack: PackId,
    pub offset: u32,
    /// Sealed length in the pack.
    pub len: u32,
    /// Plaintext length.
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

// ---- wire form: packs interned per node, postcard ----

const NODE_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct RefWire {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
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
struct NodeWire {
    v: u8,
    packs: Vec<PackId>,
    entries: Vec<EntryWire>,
}

impl Node {
    pub fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<PackId> = Vec::new();
        let mut pack_ix: HashMap<PackId, u32> = HashMap::new();
        let mut wire_ref = |r: &BlobRef| {
            let ix = *pack_ix.entry(r.pack).or_insert_with(|| {
                packs.push(r.pack);
                (packs.len() - 1) as u32
            });
            RefWire {
                id: r.id.0,
                pack: ix,
                offset: r.offset,
                len: r.len,
                raw_len: r.raw_len,
            }
        };
        let entries = self
            .entries
            .iter()
            .map(|e| EntryWire {
                name: e.name.clone(),
                kind: e.kind,
                size: e.size,
                mtime_ns: e.mtime_ns,
                mode: e.mode,
                fingerprint: e.fingerprint,
                content: e.content.iter().map(&mut wire_ref).collect(),
                subtree: e.subtree.as_ref().map(&mut wire_ref),
                link: e.link.clone(),
                meta: e.meta.clone(),
            })
            .collect();
        postcard::to_allocvec(&NodeWire {
            v: NODE_VERSION,
            packs,
            entries,
        })
        .expect("tree nodes always serialise")
    }

    /// # Errors
    /// `Damaged` when the bytes do not parse or reference a pack the node does not list;
    /// `Format` for a node written by a newer format version.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Node> {
        let w: NodeWire = postcard::from_bytes(bytes)
            .map_err(|e| Error::damaged(what, format!("tree node does not parse: {e}")))?;
        if w.v != NODE_VERSION {
            return Err(Error::Format(format!(
                "{what}: tree node format {} is newer than this build reads",
                w.v
            )));
        }
        let resolve = |r: RefWire| -> Result<BlobRef> {
            let pack = *w
                .packs
                .get(r.pack as usize)
                .ok_or_else(|| Error::damaged(what, "tree node names an unknown pack"))?;
            Ok(BlobRef {
                id: BlobId(r.id),
                pack,
                offset: r.offset,
                len: r.len,
                raw_len: r.raw_len,
            })
        };
        let mut entries = Vec::with_capacity(w.entries.len());
        for e in w.entries {
            entries.push(Entry {
                name: e.name,
                kind: e.kind,
                size: e.size,
                mtime_ns: e.mtime_ns,
                mode: e.mode,
                fingerprint: e.fingerprint,
                content: e.content.into_iter().map(resolve).collect::<Result<_>>()?,
                subtree: e.subtree.map(resolve).transpose()?,
                link: e.link,
                meta: e.meta,
            });
        }
        Ok(Node { entries })
    }
}
