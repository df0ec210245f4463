//! A writer's folder nodes: stored from their entries as these come, one piece at a time
//! (a folder of any size is never held whole, decoded or encoded), and read back for the
//! account tree when a connector first looks into a folder, through the index the run
//! opened with (see [`SnapshotWriter::read_folder`]).

use super::SnapshotWriter;
use crate::error::{Error, Result};
use crate::pack::BlobKind;
use crate::tree::{branch_pieces, BlobRef, Child, Entry, LeafCutter, Node, Piece};
use crate::BlobId;
use bytes::Bytes;
use std::collections::HashMap;

/// Encoded pieces are stored together once they reach this many bytes (sealed in
/// parallel, as a batch of items is).
const PIECE_BATCH: usize = 4 * 1024 * 1024;

/// Pieces of a split folder read with one coalesced read, at most (each at most
/// [`crate::tree::PIECE_MAX`] or so: a few MiB).
const READ_GROUP: usize = 32;

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a reader of a folder does with each leaf piece's entries, in order.
pub type EachLeaf<'a> = dyn FnMut(Vec<Entry>) -> Result<()> + Send + 'a;

impl SnapshotWriter {
    /// Stores a folder node (sorted first) and returns its reference. A large folder is
    /// stored as pieces under branch nodes (see [`crate::tree`]); an unchanged folder, or
    /// piece, gets the reference it had and nothing is written.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn store_tree(&mut self, mut node: Node) -> Result<BlobRef> {
        node.normalise();
        self.store_entries(node.entries.into_iter()).await
    }

    /// As [`SnapshotWriter::store_tree`], for entries handed over in name order (a later
    /// one of a name already seen is dropped, as `Node::normalise` drops it): cut into
    /// pieces as they come, so that memory holds one piece and one batch of encoded
    /// pieces, whatever the folder's size. The pieces are those `store_tree` makes of the
    /// same entries.
    ///
    /// # Errors
    /// `Format` when the entries are out of order; a storage failure.
    pub async fn store_entries<I>(&mut self, entries: I) -> Result<BlobRef>
    where
        I: Iterator<Item = Entry> + Send,
    {
        let mut cutter = LeafCutter::default();
        let mut batch = Batch::default();
        let mut level: Vec<Child> = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for e in entries {
            if let Some(l) = &last {
                match e.name.as_slice().cmp(l) {
                    std::cmp::Ordering::Greater => {}
                    std::cmp::Ordering::Equal => continue,
                    std::cmp::Ordering::Less => {
                        return Err(Error::Format(
                            "a folder's entries were handed over out of order".into(),
                        ))
                    }
                }
            }
            match &mut last {
                Some(l) => {
                    l.clear();
                    l.extend_from_slice(&e.name);
                }
                None => last = Some(e.name.clone()),
            }
            for piece in cutter.push(e) {
                batch.push(piece);
                if batch.bytes >= PIECE_BATCH {
                    level.extend(self.store_batch_of_pieces(&mut batch).await?);
                }
            }
        }
        if let Some(piece) = cutter.finish() {
            batch.push(piece);
        }
        level.extend(self.store_batch_of_pieces(&mut batch).await?);
        while level.len() > 1 {
            let mut branches = Batch::default();
            for g in branch_pieces(level) {
                let first = g[0].first.clone();
                let entries = g.iter().map(|c| c.entries).sum();
                branches.add(first, entries, Piece::Branch(g));
            }
            level = self.store_batch_of_pieces(&mut branches).await?;
        }
        Ok(level[0].node)
    }

    /// Stores the pieces of `batch` (emptying it) and returns them as the children of
    /// the level above.
    async fn store_batch_of_pieces(&mut self, batch: &mut Batch) -> Result<Vec<Child>> {
        let b = std::mem::take(batch);
        let refs = self.store(b.encoded, BlobKind::Tree).await?;
        Ok(b.heads
            .into_iter()
            .zip(refs)
            .map(|((first, entries), node)| Child {
                first,
                node,
                entries,
            })
            .collect())
    }

    /// Reads the folder node `r` (a node of the parent snapshot, of a checkpoint's tree,
    /// or one this run stored) and hands `each` its entries, leaf piece by leaf piece, in
    /// name order: a large folder is never held whole here. Pieces are read through the
    /// index this run opened with, nearby ones together.
    ///
    /// # Errors
    /// A store failure, or damage in any piece.
    pub async fn read_folder(&mut self, r: &BlobRef, each: &mut EachLeaf<'_>) -> Result<()> {
        let top = self.read_pieces(vec![*r]).await?.remove(&r.id);
        let top = top.ok_or_else(|| Error::damaged(format!("tree {}", r.id), "not read"))?;
        self.each_leaf(top, each).await
    }

    fn each_leaf<'a>(
        &'a mut self,
        piece: Piece,
        each: &'a mut EachLeaf<'_>,
    ) -> Boxed<'a, Result<()>> {
        Box::pin(async move {
            match piece {
                Piece::Leaf(entries) => each(entries),
                Piece::Branch(children) => {
                    for group in children.chunks(READ_GROUP) {
                        let mut got = self
                            .read_pieces(group.iter().map(|c| c.node).collect())
                            .await?;
                        for c in group {
                            let p = got.remove(&c.node.id).ok_or_else(|| {
                                Error::damaged(
                                    format!("tree {}", c.node.id),
                                    "a piece of the folder is missing",
                                )
                            })?;
                            self.each_leaf(p, each).await?;
                        }
                    }
                    Ok(())
                }
            }
        })
    }

    async fn read_pieces(&mut self, refs: Vec<BlobRef>) -> Result<HashMap<BlobId, Piece>> {
        if refs.iter().any(|r| self.only_stored_here(&r.id)) {
            self.make_own_readable().await?;
        }
        let mut out = HashMap::new();
        let ix = self.index.clone();
        self.av
            .read_many_in(&ix, refs, BlobKind::Tree, |r, bytes| {
                let p = Piece::decode(&bytes?, &format!("tree {}", r.id))?;
                out.insert(r.id, p);
                Ok(())
            })
            .await?;
        Ok(out)
    }

    /// Whether the node's only usable copy is one this run stored (a folder stored and
    /// let go of, then looked into again): the index the run opened with does not say
    /// where it is.
    fn only_stored_here(&self, id: &BlobId) -> bool {
        let key = (*id, BlobKind::Tree);
        let indexed = self.index.has_sound(id, BlobKind::Tree) && !self.distrusted.contains(&key);
        self.added.contains(&key) && !indexed
    }

    /// Makes what this run stored readable: uploads the open tree pack, waits for every
    /// upload (each writes its pack's index segment), and reads the index again. Rare: a
    /// connector seldom looks again into a folder it said it was done with.
    async fn make_own_readable(&mut self) -> Result<()> {
        self.flush(true).await?;
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        self.write_segment().await?;
        // The segments this run wrote are among the index's now (see `compact_if_many`).
        self.index = self.av.reload_index().await?;
        Ok(())
    }
}

/// Encoded pieces waiting to be stored, with their first names and entry counts.
#[derive(Default)]
struct Batch {
    heads: Vec<(Vec<u8>, u64)>,
    encoded: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, leaf: Vec<Entry>) {
        let first = leaf.first().map(|e| e.name.clone()).unwrap_or_default();
        let n = leaf.len() as u64;
        self.add(first, n, Piece::Leaf(leaf));
    }

    fn add(&mut self, first: Vec<u8>, entries: u64, piece: Piece) {
        let bytes = piece.encode();
        self.bytes += bytes.len();
        self.heads.push((first, entries));
        self.encoded.push(Bytes::from(bytes));
    }
}
