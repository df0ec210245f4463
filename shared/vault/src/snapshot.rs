//! Snapshot records: the one catalog write that makes a snapshot visible. The record is
//! sealed with the task's key and bound to its own catalog keys, so a record copied under
//! another account or task does not open. It holds a fixed set of small fields; the
//! source's cursor and the item errors, which grow with the source, are in a sealed blob
//! the record names, so a record stays far under the catalog's 400 KB whatever the
//! account.

use crate::crypto::{BlobId, SealKind, TaskKeys};
use crate::error::{Error, Result};
use crate::tree::BlobRef;
use chrono::{DateTime, Utc};
use domain::{AccountId, SnapshotId};
use serde::{Deserialize, Serialize};

/// At most this many item failures are kept with a snapshot (the count is exact). They
/// live in the snapshot's side-data blob, not in its catalog record, so the record stays
/// small however many there are.
pub const MAX_RECORDED_ERRORS: usize = 1000;
/// An error message is cut at this many bytes.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// Version of snapshot and checkpoint records; a record of another version is refused.
pub const RECORD_VERSION: u8 = 2;

/// An item that could not be backed up, or was backed up with a caveat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// The item's path, shown escaped.
    pub path: String,
    pub message: String,
    /// Not a failure, and not in the snapshot's `error_count`: an item that left the
    /// source between its listing and its reading, or one stored with a caveat (a size
    /// other than the listed one). Reported so that nothing changes without a word.
    #[serde(default)]
    pub note: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub items: u64,
    pub folders: u64,
    /// Total plaintext size of the items.
    pub bytes: u64,
    /// Items whose content was read from the source this time (not carried from the parent).
    pub items_read: u64,
    /// Blobs new to the vault, and their plaintext and stored (sealed) sizes.
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub packs_written: u64,
}

/// A blob reference in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefJson {
    #[serde(with = "hex32")]
    pub id: [u8; 32],
    pub raw_len: u32,
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(&s, &mut b).map_err(serde::de::Error::custom)?;
        Ok(b)
    }
}

impl From<BlobRef> for RefJson {
    fn from(r: BlobRef) -> Self {
        RefJson {
            id: r.id.0,
            raw_len: r.raw_len,
        }
    }
}

impl From<RefJson> for BlobRef {
    fn from(r: RefJson) -> Self {
        BlobRef {
            id: BlobId(r.id),
            raw_len: r.raw_len,
        }
    }
}

/// A snapshot's catalog record: small and of bounded size whatever the account (what
/// grows with the source is in the side-data blob it names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub v: u8,
    pub id: SnapshotId,
    pub account: AccountId,
    pub taken_at: DateTime<Utc>,
    pub root: RefJson,
    pub parent: Option<SnapshotId>,
    pub stats: SnapshotStats,
    pub error_count: u64,
    /// The side data: the source's cursor and the item errors ([`SnapshotMeta`]).
    pub meta: RefJson,
}

impl SnapshotRecord {
    pub fn root(&self) -> BlobRef {
        self.root.into()
    }
}

/// What a snapshot carries besides its tree, kept in a blob of its own: the source's change
/// cursor after this snapshot (a delta link, a history id, an IMAP state of thousands of
/// folders), so the next backup asks only for what changed since, and the first
/// [`MAX_RECORDED_ERRORS`] item failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub cursor: Option<String>,
    pub errors: Vec<ItemError>,
}

/// The first byte of side data written with notes beside errors. Side data of earlier
/// builds starts with the cursor's option tag, 0 or 1, and is read as it was written.
const META_V2: u8 = 2;

/// Side data as builds before notes wrote it.
#[derive(Deserialize)]
struct MetaV1 {
    cursor: Option<String>,
    errors: Vec<ItemErrorV1>,
}

#[derive(Deserialize)]
struct ItemErrorV1 {
    path: String,
    message: String,
}

impl SnapshotMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![META_V2]).expect("side data always serialises")
    }

    pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let bad =
            |e: postcard::Error| Error::damaged(what, format!("side data does not parse: {e}"));
        match bytes.split_first() {
            Some((&META_V2, rest)) => postcard::from_bytes(rest).map_err(bad),
            _ => {
                let v1: MetaV1 = postcard::from_bytes(bytes).map_err(bad)?;
                Ok(SnapshotMeta {
                    cursor: v1.cursor,
                    errors: v1
                        .errors
                        .into_iter()
                        .map(|e| ItemError {
                            path: e.path,
                            message: e.message,
                            note: false,
                        })
                        .collect(),
                })
            }
        }
    }
}

#[cfg(test)]
mod meta_tests {
    use super::*;

    #[test]
    fn side_data_of_earlier_builds_still_reads() {
        #[derive(Serialize)]
        struct V1<'a> {
            cursor: Option<&'a str>,
            errors: Vec<(&'a str, &'a str)>,
        }
        let old = postcard::to_allocvec(&V1 {
            cursor: Some("c"),
            errors: vec![("/a", "failed")],
        })
        .unwrap();
        let m = SnapshotMeta::decode(&old, "t").unwrap();
        assert_eq!(m.cursor.as_deref(), Some("c"));
        assert_eq!(m.errors[0].message, "failed");
        assert!(!m.errors[0].note);
        let none = postcard::to_allocvec(&V1 {
            cursor: None,
            errors: vec![],
        })
        .unwrap();
        assert_eq!(
            SnapshotMeta::decode(&none, "t").unwrap(),
            SnapshotMeta::default()
        );
        let new = SnapshotMeta {
            cursor: None,
            errors: vec![ItemError {
                path: "/b".into(),
                message: "vanished".into(),
                note: true,
            }],
        };
        assert_eq!(SnapshotMeta::decode(&new.encode(), "t").unwrap(), new);
    }
}

fn record_id(pk: &str, sk: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(pk.as_bytes());
    h.update(&[0]);
    h.update(sk.as_bytes());
    *h.finalize().as_bytes()
}

/// Seals a catalog record's JSON, bound to its keys (a record copied under other keys
/// does not open).
pub(crate) fn seal_record<T: Serialize>(
    keys: &TaskKeys,
    pk: &str,
    sk: &str,
    rec: &T,
) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(rec).map_err(|e| Error::Format(e.to_string()))?;
    keys.seal(SealKind::Record, &record_id(pk, sk), &json)
}

pub(crate) fn open_record<T: serde::de::DeserializeOwned>(
    keys: &TaskKeys,
    pk: &str,
    sk: &str,
    value: &[u8],
) -> Result<T> {
    let what = format!("catalog record {pk}/{sk}");
    let json = keys.open(SealKind::Record, &record_id(pk, sk), value, &what)?;
    serde_json::from_slice(&json).map_err(|e| Error::damaged(what, e.to_string()))
}

/// Checks a record's version after it opened.
pub(crate) fn check_version(v: u8, what: &str) -> Result<()> {
    if v == RECORD_VERSION {
        Ok(())
    } else {
        Err(Error::Format(format!(
            "{what}: record format {v} is not one this build reads"
        )))
    }
}

/// A backup paused before its end (a Lambda run's time was up): the tree as far as it got
/// and the source's cursor at that point. Not a snapshot: nothing of it is visible until
/// a later run resumes from it and commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u8,
    pub root: RefJson,
    /// The cursor and the errors so far ([`SnapshotMeta`]).
    pub meta: RefJson,
    /// When the paused backup started; the snapshot that completes it carries this time.
    pub started_at: DateTime<Utc>,
    /// The snapshot the paused backup started from. A checkpoint whose parent is no longer
    /// the account's latest snapshot is stale and ignored.
    pub parent: Option<SnapshotId>,
    /// How many times this backup has paused.
    pub pauses: u32,
    /// Item failures so far (the first ones are in the side data).
    pub error_count: u64,
    /// What the checkpoint's tree holds, so that the run going on from it counts the
    /// snapshot's items without reading every folder. Absent from checkpoints of builds
    /// before it (the tree is then counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<TreeTotals>,
}

/// What a tree holds: items, folders (the root not counted) and the items' bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeTotals {
    pub items: u64,
    pub folders: u64,
    pub bytes: u64,
}

impl SnapshotStats {
    /// What the snapshot's tree holds.
    pub fn totals(&self) -> TreeTotals {
        TreeTotals {
            items: self.items,
            folders: self.folders,
            bytes: self.bytes,
        }
    }
}
