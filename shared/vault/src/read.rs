//! Reading an account's blobs: ids resolved through the location index, nearby records of
//! one pack fetched with one ranged read, every record checked against its id. Damaged
//! data is reported, never returned.

use crate::account::AccountVault;
use crate::codec;
use crate::index::{AccountIndex, Loc};
use crate::tree::{BlobRef, Entry, EntryKind, Node, Piece};
use crate::{BlobId, BlobKind, Error, PackId, Result, Vault};
use domain::ItemPath;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Reads that lie closer than this within one pack are fetched with one ranged read: a
/// round trip to S3 costs more than reading a few hundred KiB more.
const COALESCE_GAP: u64 = 256 * 1024;
/// Upper bound of one coalesced read (memory bound of a restore worker).
const COALESCE_MAX: u64 = 16 * 1024 * 1024;

/// A blob and where it lies.
type Located = (BlobRef, Loc);

/// Nearby records of one pack, read with one ranged read.
#[derive(Clone)]
struct Run {
    pack: PackId,
    refs: Vec<(BlobRef, Loc)>,
}

impl Run {
    fn start(&self) -> u64 {
        self.refs[0].1.offset as u64
    }
    fn end(&self) -> u64 {
        self.refs
            .iter()
            .map(|(_, l)| l.offset as u64 + l.len as u64)
            .max()
            .unwrap_or(0)
    }
}

/// Groups located blobs by pack and, within a pack, into runs of nearby records.
fn coalesce(mut refs: Vec<(BlobRef, Loc)>) -> Vec<Run> {
    refs.sort_by_key(|(_, l)| (l.pack, l.offset));
    refs.dedup_by_key(|(_, l)| (l.pack, l.offset));
    let mut out: Vec<Run> = Vec::new();
    for (r, l) in refs {
        match out.last_mut() {
            Some(run)
                if run.pack == l.pack
                    && (l.offset as u64) <= run.end() + COALESCE_GAP
                    && l.offset as u64 + l.len as u64 - run.start() <= COALESCE_MAX =>
            {
                run.refs.push((r, l))
            }
            _ => out.push(Run {
                pack: l.pack,
                refs: vec![(r, l)],
            }),
        }
    }
    out
}

fn missing(r: &BlobRef) -> Error {
    Error::damaged(
        format!("blob {}", r.id),
        "missing: the account's index does not know it",
    )
}

impl Vault {
    /// Opens a sealed record of `kind` read from a pack, and checks it is what its id says.
    ///
    /// # Errors
    /// `Damaged` when the record fails authentication, does not decompress, or its content
    /// does not hash to its id.
    pub fn open_blob(&self, r: &BlobRef, kind: BlobKind, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = format!("blob {}", r.id);
        let encoded = self.keys().open(kind.seal_kind(), &r.id.0, sealed, &what)?;
        let dict = self.dict_now();
        let find = move |id: u32| dict.clone().filter(|d| d.id == id);
        let plain = codec::decode(&encoded, r.raw_len as usize, &find, &what)?;
        if self.keys().blob_id(&plain) != r.id {
            return Err(Error::damaged(what, "content does not match its id"));
        }
        Ok(plain)
    }
}

impl AccountVault {
    /// Where each ref lies; refs the index does not know come back as errors.
    fn locate(
        ix: &AccountIndex,
        refs: Vec<BlobRef>,
        kind: BlobKind,
    ) -> (Vec<Located>, Vec<(BlobRef, Error)>) {
        let mut found = Vec::with_capacity(refs.len());
        let mut lost = Vec::new();
        for r in refs {
            match ix.get(&r.id, kind) {
                Some(l) => found.push((r, l)),
                None => lost.push((r, missing(&r))),
            }
        }
        (found, lost)
    }

    async fn prepare(&self, kind: BlobKind) -> Result<Arc<AccountIndex>> {
        if kind == BlobKind::Data {
            self.vault().dict().await?;
        }
        self.index().await
    }

    async fn fetch(&self, pack: &PackId, start: u64, end: u64) -> Result<bytes::Bytes> {
        let key = self.vault().pack_key(self.tag(), pack);
        match self.vault().store().get_range(&key, start, end).await {
            Ok(b) if b.len() as u64 == end - start => Ok(b),
            Ok(_) => Err(Error::damaged(key.to_string(), "truncated")),
            Err(e) if e.is_not_found() => Err(Error::damaged(key.to_string(), "missing")),
            Err(e) if e.kind() == ports::ErrorKind::InvalidInput => {
                Err(Error::damaged(key.to_string(), "truncated"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one blob with one ranged read (after the index, loaded once per handle).
    ///
    /// # Errors
    /// `Damaged` when it is missing or its record is damaged; the bytes are never
    /// returned then.
    pub async fn read_blob(&self, r: &BlobRef, kind: BlobKind) -> Result<Vec<u8>> {
        let mut ix = self.prepare(kind).await?;
        for attempt in 0..2 {
            let Some(l) = ix.get(&r.id, kind) else {
                return Err(missing(r));
            };
            match self
                .fetch(&l.pack, l.offset as u64, l.offset as u64 + l.len as u64)
                .await
            {
                Ok(sealed) => return self.vault().open_blob(r, kind, &sealed),
                // A pack that has gone may have been repacked since the index was read.
                Err(e) if attempt == 0 && e.is_damage() => ix = self.reload_index().await?,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Reads one node piece.
    pub async fn read_piece(&self, r: &BlobRef) -> Result<Piece> {
        let bytes = self.read_blob(r, BlobKind::Tree).await?;
        Piece::decode(&bytes, &format!("tree {}", r.id))
    }

    /// Reads a folder's whole node (every piece of a split one, in order).
    ///
    /// # Errors
    /// A store failure or damage in any piece.
    pub async fn read_tree(&self, r: &BlobRef) -> Result<Node> {
        match self.read_piece(r).await? {
            Piece::Leaf(entries) => Ok(Node { entries }),
            Piece::Branch(children) => {
                let mut nodes = self
                    .load_pieces(children.iter().map(|c| c.node).collect())
                    .await?;
                let mut entries = Vec::new();
                for c in &children {
                    entries.extend(assemble(&nodes, &c.node.id, &format!("tree {}", r.id))?);
                }
                nodes.clear();
                Ok(Node { entries })
            }
        }
    }

    /// The entry named `name` in the folder whose node is `r`, reading only the pieces on
    /// the way to it.
    async fn find_in(&self, r: &BlobRef, name: &[u8]) -> Result<Option<Entry>> {
        let mut at = *r;
        loop {
            match self.read_piece(&at).await? {
                Piece::Leaf(entries) => {
                    return Ok(entries
                        .binary_search_by(|e| e.name.as_slice().cmp(name))
                        .ok()
                        .map(|i| entries[i].clone()))
                }
                Piece::Branch(children) => {
                    let i = children.partition_point(|c| c.first.as_slice() <= name);
                    if i == 0 {
                        return Ok(None);
                    }
                    at = children[i - 1].node;
                }
            }
        }
    }

    /// Finds the entry at `path` under `root`, reading the nodes (and pieces) on its path
    /// only. The root itself is returned as a folder entry named "".
    ///
    /// # Errors
    /// `NotFound` when a segment does not exist or a non-folder is traversed.
    pub async fn lookup(&self, root: &BlobRef, path: &ItemPath) -> Result<Entry> {
        let mut entry = Entry::new(Vec::new(), EntryKind::Dir);
        entry.subtree = Some(*root);
        let not_found = || Error::NotFound(format!("{path} not found in snapshot"));
        for seg in path.segments() {
            let folder = match (&entry.kind, &entry.subtree) {
                (EntryKind::Dir, Some(s)) => *s,
                _ => return Err(not_found()),
            };
            entry = self.find_in(&folder, seg).await?.ok_or_else(not_found)?;
        }
        Ok(entry)
    }

    /// Reads node pieces and everything below branches among them (not below folders).
    async fn load_pieces(&self, refs: Vec<BlobRef>) -> Result<HashMap<BlobId, Piece>> {
        let mut pieces: HashMap<BlobId, Piece> = HashMap::new();
        let mut level = refs;
        while !level.is_empty() {
            let mut next = Vec::new();
            self.read_many(level, BlobKind::Tree, |r, bytes| {
                let p = Piece::decode(&bytes?, &format!("tree {}", r.id))?;
                if let Piece::Branch(children) = &p {
                    next.extend(children.iter().map(|c| c.node));
                }
                pieces.insert(r.id, p);
                Ok(())
            })
            .await?;
            next.retain(|r| !pieces.contains_key(&r.id));
            next.sort();
            next.dedup();
            level = next;
        }
        Ok(pieces)
    }

    /// Reads many blobs with as few ranged reads as possible (nearby records of one pack
    /// are read together, the next read in flight while the current one is opened),
    /// opening them in parallel. Calls `sink` once per distinct blob, in no particular
    /// order. A blob that cannot be read (missing, damaged) reaches the sink as an error,
    /// so a restore can save everything else and report what it could not.
    ///
    /// # Errors
    /// Only what `sink` returns, or a failure to load the index.
    pub async fn read_many<F>(&self, refs: Vec<BlobRef>, kind: BlobKind, mut sink: F) -> Result<()>
    where
        F: FnMut(&BlobRef, Result<Vec<u8>>) -> Result<()>,
    {
        let ix = self.prepare(kind).await?;
        // What fails as damage is read once more after reloading the index: a repack may
        // have moved it and a prune deleted the pack since the index was read.
        let mut again = Vec::new();
        self.read_many_in(&ix, refs, kind, |r, got| match got {
            Err(e) if e.is_damage() => {
                again.push(*r);
                Ok(())
            }
            got => sink(r, got),
        })
        .await?;
        if again.is_empty() {
            return Ok(());
        }
        let ix = self.reload_index().await?;
        self.read_many_in(&ix, again, kind, sink).await
    }

    /// As [`AccountVault::read_many`], with the index the caller holds.
    pub(crate) async fn read_many_in<F>(
        &self,
        ix: &AccountIndex,
        refs: Vec<BlobRef>,
        kind: BlobKind,
        mut sink: F,
    ) -> Result<()>
    where
        F: FnMut(&BlobRef, Result<Vec<u8>>) -> Result<()>,
    {
        let (found, lost) = Self::locate(ix, refs, kind);
        for (r, e) in lost {
            sink(&r, Err(e))?;
        }
        let runs = coalesce(found);
        let mut next = runs.first().map(|r| self.start_fetch(r));
        for i in 0..runs.len() {
            let got = fetched(next.take().expect("started")).await;
            next = runs.get(i + 1).map(|r| self.start_fetch(r));
            let run = runs[i].clone();
            let bytes = match got {
                Ok(b) => b,
                Err(e) => {
                    for (r, _) in &run.refs {
                        sink(r, Err(failure_copy(&e)))?;
                    }
                    continue;
                }
            };
            let v = self.vault().clone();
            let opened: Vec<(BlobRef, Result<Vec<u8>>)> = tokio::task::spawn_blocking(move || {
                run.refs
                    .par_iter()
                    .map(|(r, l)| (*r, open_in_run(&v, &run, &bytes, r, l, kind)))
                    .collect()
            })
            .await
            .map_err(|e| Error::Format(format!("worker failed: {e}")))?;
            for (r, data) in opened {
                sink(&r, data)?;
            }
        }
        Ok(())
    }

    /// As [`AccountVault::read_many`], but `sink` runs on the worker threads, in parallel:
    /// for consumers whose own work per blob is heavy (a restore writing files).
    ///
    /// # Errors
    /// Only what `sink` returns (the first such error stops the read).
    pub async fn read_many_parallel<F>(
        &self,
        refs: Vec<BlobRef>,
        kind: BlobKind,
        sink: Arc<F>,
    ) -> Result<()>
    where
        F: Fn(&BlobRef, Result<Vec<u8>>) -> Result<()> + Send + Sync + 'static,
    {
        // As in `read_many`: what fails as damage is tried once more on a fresh index.
        let again = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = {
            let (sink, again) = (sink.clone(), again.clone());
            Arc::new(move |r: &BlobRef, got: Result<Vec<u8>>| match got {
                Err(e) if e.is_damage() => {
                    again.lock().expect("not poisoned").push(*r);
                    Ok(())
                }
                got => sink(r, got),
            })
        };
        let ix = self.prepare(kind).await?;
        self.read_many_parallel_in(&ix, refs, kind, first).await?;
        let again = std::mem::take(&mut *again.lock().expect("not poisoned"));
        if again.is_empty() {
            return Ok(());
        }
        let ix = self.reload_index().await?;
        self.read_many_parallel_in(&ix, again, kind, sink).await
    }

    async fn read_many_parallel_in<F>(
        &self,
        ix: &AccountIndex,
        refs: Vec<BlobRef>,
        kind: BlobKind,
        sink: Arc<F>,
    ) -> Result<()>
    where
        F: Fn(&BlobRef, Result<Vec<u8>>) -> Result<()> + Send + Sync + 'static,
    {
        let (found, lost) = Self::locate(ix, refs, kind);
        for (r, e) in lost {
            sink(&r, Err(e))?;
        }
        let runs = coalesce(found);
        // Two runs are opened at once: the worker threads go on with the next run while
        // the last blobs of the previous one (often one large chunk) finish, instead of
        // waiting at every run's end. With one more being fetched, at most three runs
        // (16 MiB each at most) are held.
        let workers = Arc::new(tokio::sync::Semaphore::new(2));
        let mut busy = tokio::task::JoinSet::new();
        let mut next = runs.first().map(|r| self.start_fetch(r));
        for i in 0..runs.len() {
            let got = fetched(next.take().expect("started")).await;
            next = runs.get(i + 1).map(|r| self.start_fetch(r));
            let permit = workers
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::Format(format!("worker pool closed: {e}")))?;
            while let Some(done) = busy.try_join_next() {
                joined(done)?;
            }
            let run = runs[i].clone();
            let v = self.vault().clone();
            let sink = sink.clone();
            busy.spawn_blocking(move || {
                let _permit = permit;
                match got {
                    Ok(bytes) => run
                        .refs
                        .par_iter()
                        .try_for_each(|(r, l)| sink(r, open_in_run(&v, &run, &bytes, r, l, kind))),
                    Err(e) => run
                        .refs
                        .iter()
                        .try_for_each(|(r, _)| sink(r, Err(failure_copy(&e)))),
                }
            });
        }
        while let Some(done) = busy.join_next().await {
            joined(done)?;
        }
        Ok(())
    }

    /// Starts reading one coalesced run, so that it is in flight while the previous run is
    /// being opened.
    fn start_fetch(&self, run: &Run) -> tokio::task::JoinHandle<Result<bytes::Bytes>> {
        let this = self.clone();
        let (pack, start, end) = (run.pack, run.start(), run.end());
        tokio::spawn(async move { this.fetch(&pack, start, end).await })
    }
}

/// A folder's entries from its pieces, in order.
fn assemble(pieces: &HashMap<BlobId, Piece>, id: &BlobId, what: &str) -> Result<Vec<Entry>> {
    match pieces.get(id) {
        Some(Piece::Leaf(entries)) => Ok(entries.clone()),
        Some(Piece::Branch(children)) => {
            let mut out = Vec::new();
            for c in children {
                out.extend(assemble(pieces, &c.node.id, what)?);
            }
            Ok(out)
        }
        None => Err(Error::damaged(what, "a piece of the folder is missing")),
    }
}

fn open_in_run(
    v: &Vault,
    run: &Run,
    bytes: &[u8],
    r: &BlobRef,
    l: &Loc,
    kind: BlobKind,
) -> Result<Vec<u8>> {
    if l.kind != kind {
        return Err(Error::damaged(
            format!("blob {}", r.id),
            "the index holds it as another kind",
        ));
    }
    let s = (l.offset as u64 - run.start()) as usize;
    v.open_blob(r, kind, &bytes[s..s + l.len as usize])
}

async fn fetched(handle: tokio::task::JoinHandle<Result<bytes::Bytes>>) -> Result<bytes::Bytes> {
    handle
        .await
        .map_err(|e| Error::Format(format!("read task failed: {e}")))?
}

fn joined(done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    done.map_err(|e| Error::Format(format!("worker failed: {e}")))?
}

fn failure_copy(e: &Error) -> Error {
    match e {
        Error::Damaged { what, why } => Error::damaged(what.clone(), why.clone()),
        Error::Port(p) => Error::Port(ports::Error::new(p.kind(), p.to_string())),
        other => Error::Format(other.to_string()),
    }
}
