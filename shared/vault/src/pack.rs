//! Pack objects: many sealed blobs in one object, so a backup makes one object write per
//! several MiB rather than one per item.
//!
//! ```text
//! "LBPACK\0\x02"                      8-byte magic and format version
//! record*                             nonce(12) || AES-GCM(codec || payload) || tag(16)
//! index                               sealed postcard list of IndexEntry
//! index_len: u32 LE, "LBPX"           trailer
//! ```
//! A pack's name is random and chosen before the first record goes in, so every blob's
//! location is known the moment it is added. (Naming packs by content would buy nothing:
//! nonces are random, so no two packs are ever equal.) The index is sealed with the pack's
//! name as associated data, and every record carries its own tag, so any changed byte is
//! detected. The index at the end lets a pack be understood on its own (verification,
//! repacking) with two small ranged reads.
//!
//! A record is sealed for its blob's kind and id, not for its place: a repack copies
//! records into a new pack byte for byte, and the account's location index says where
//! each blob now is.

use crate::crypto::{BlobId, SealKind, TaskKeys};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"LBPACK\0\x02";
const TRAILER_MAGIC: &[u8; 4] = b"LBPX";
pub const TRAILER_LEN: u64 = 8;

/// A pack closes once it holds this much; a large chunk may overshoot by one chunk.
pub const PACK_TARGET: usize = 8 * 1024 * 1024;

/// The name of a pack: 256 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("the system random generator works");
        PackId(b)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(PackId(b))
    }
}

impl std::fmt::Debug for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pack {}", &self.to_hex()[..16])
    }
}

/// What a blob is: item content, a tree node, or a snapshot's side data. Part of every
/// blob's seal, so one kind is never read as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
    Meta,
}

impl BlobKind {
    pub fn seal_kind(self) -> SealKind {
        match self {
            BlobKind::Data => SealKind::Data,
            BlobKind::Tree => SealKind::Tree,
            BlobKind::Meta => SealKind::Meta,
        }
    }
}

/// Where one blob lives in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub id: [u8; 32],
    pub kind: BlobKind,
    pub offset: u32,
    pub len: u32,
    pub raw_len: u32,
}

/// Accumulates sealed records in memory until the pack is full.
pub struct PackBuilder {
    id: PackId,
    buf: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl PackBuilder {
    /// A new, empty pack with a fresh random name.
    pub fn open() -> Self {
        let mut buf = Vec::with_capacity(PACK_TARGET + 1024 * 1024);
        buf.extend_from_slice(MAGIC);
        PackBuilder {
            id: PackId::random(),
            buf,
            entries: Vec::new(),
        }
    }

    pub fn id(&self) -> PackId {
        self.id
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends one sealed record; returns its offset and length in the pack.
    pub fn push(&mut self, id: BlobId, kind: BlobKind, raw_len: u32, sealed: &[u8]) -> (u32, u32) {
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(sealed);
        let e = IndexEntry {
            id: id.0,
            kind,
            offset,
            len: sealed.len() as u32,
            raw_len,
        };
        self.entries.push(e);
        (offset, e.len)
    }

    /// Seals the index and appends the trailer.
    pub fn finish(mut self, keys: &TaskKeys) -> Result<(PackId, Vec<u8>, Vec<IndexEntry>)> {
        let plain = postcard::to_allocvec(&self.entries)
            .map_err(|e| Error::Format(format!("pack index: {e}")))?;
        let before = self.buf.len();
        keys.seal_into(SealKind::PackIndex, &self.id.0, &plain, &mut self.buf)?;
        let index_len = (self.buf.len() - before) as u32;
        self.buf.extend_from_slice(&index_len.to_le_bytes());
        self.buf.extend_from_slice(TRAILER_MAGIC);
        Ok((self.id, self.buf, self.entries))
    }
}

/// Parses a pack trailer; returns the byte range of the sealed index.
///
/// # Errors
/// `Damaged` when the trailer is malformed.
pub fn index_range(trailer: &[u8], pack_len: u64, what: &str) -> Result<(u64, u64)> {
    if trailer.len() != TRAILER_LEN as usize || &trailer[4..] != TRAILER_MAGIC {
        return Err(Error::damaged(what, "pack trailer is malformed"));
    }
    let len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as u64;
    let end = pack_len - TRAILER_LEN;
    if len > end.saturating_sub(MAGIC.len() as u64) {
        return Err(Error::damaged(what, "pack index length is out of range"));
    }
    Ok((end - len, end))
}

/// Opens a pack's sealed index.
///
/// # Errors
/// `Damaged` when it fails authentication or does not parse, or an entry points outside the
/// pack's record area.
pub fn open_index(
    keys: &TaskKeys,
    id: &PackId,
    sealed: &[u8],
    records_end: u64,
    what: &str,
) -> Result<Vec<IndexEntry>> {
    let plain = keys.open(SealKind::PackIndex, &id.0, sealed, what)?;
    let entries: Vec<IndexEntry> = postcard::from_bytes(&plain)
        .map_err(|e| Error::damaged(what, format!("pack index does not parse: {e}")))?;
    for e in &entries {
        if (e.offset as u64) < MAGIC.len() as u64 || e.offset as u64 + e.len as u64 > records_end {
            return Err(Error::damaged(what, "pack index entry out of range"));
        }
    }
    Ok(entries)
}

/// Parses a whole pack held in memory: checks its magic, its index, and that the records
/// the index lists fill the record area exactly (no stray bytes).
///
/// # Errors
/// `Damaged` when any of that fails.
pub fn parse_whole(keys: &TaskKeys, id: &PackId, bytes: &[u8]) -> Result<Vec<IndexEntry>> {
    let what = format!("{id:?}");
    if bytes.len() < MAGIC.len() + TRAILER_LEN as usize || &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::damaged(&what, "not a pack (bad magic)"));
    }
    let n = bytes.len() as u64;
    let (s, e) = index_range(&bytes[(n - TRAILER_LEN) as usize..], n, &what)?;
    let entries = open_index(keys, id, &bytes[s as usize..e as usize], s, &what)?;
    let mut at = MAGIC.len() as u64;
    for e in &entries {
        if e.offset as u64 != at {
            return Err(Error::damaged(&what, "records do not tile the pack"));
        }
        at += e.len as u64;
    }
    if at != s {
        return Err(Error::damaged(&what, "records do not tile the pack"));
    }
    Ok(entries)
}
