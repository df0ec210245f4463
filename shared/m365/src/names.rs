//! How Graph objects are named in an account's tree, and the connector's cursor.
//!
//! Items are named from their immutable id (hashed, so a long id with `/` in it makes a
//! short, valid name) and keep that name when they move; folders keep the name people see,
//! with `/` (which Outlook allows in a folder name) shown as `∕`. A folder's original name
//! and Graph id go into its metadata, so a restore can recreate it exactly.

use domain::ItemPath;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a full re-enumeration keeps the previous content of a collection while it runs:
/// items found again are moved back from here (no download), and what is left when the
/// round ends was deleted at the source. Never part of a committed snapshot.
pub const STAGING: &str = ".resync";

/// A tree segment for a name shown by the source.
pub fn seg(name: &str) -> Vec<u8> {
    let s: String = name
        .chars()
        .map(|c| match c {
            '/' => '\u{2215}',
            '\0' => '\u{2400}',
            c => c,
        })
        .collect();
    match s.as_str() {
        "" => b"_".to_vec(),
        "." => "\u{ff0e}".as_bytes().to_vec(),
        ".." => "\u{ff0e}\u{ff0e}".as_bytes().to_vec(),
        _ => s.into_bytes(),
    }
}

/// The name a segment made by [`seg`] came from (for folders without recorded metadata).
pub fn unseg(seg: &[u8]) -> String {
    String::from_utf8_lossy(seg)
        .replace('\u{2215}', "/")
        .replace('\u{2400}', "")
}

/// An item's stable name: a hash of its immutable id, with the export format's extension.
pub fn item_name(id: &str, ext: &str) -> Vec<u8> {
    let h = blake3::hash(id.as_bytes());
    format!("{}.{ext}", &h.to_hex()[..24]).into_bytes()
}

/// A change key (etag, changeKey, content hash) as the 64-bit entry fingerprint.
pub fn fingerprint(key: &str) -> u64 {
    let h = blake3::hash(key.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A path from segments built by [`seg`] or stored in the cursor.
pub fn path<S: AsRef<[u8]>>(parts: &[S]) -> ItemPath {
    let mut p = ItemPath::root();
    for s in parts {
        p = p
            .join(s.as_ref())
            .expect("segments are made valid by seg()");
    }
    p
}

/// A path's segments as text, for the cursor.
pub fn parts(p: &ItemPath) -> Vec<String> {
    p.segments()
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The staging folder of one collection (see [`STAGING`]).
pub fn staging(key: &str) -> ItemPath {
    let h = blake3::hash(key.as_bytes());
    path(&[STAGING.as_bytes(), h.to_hex()[..16].as_bytes()])
}

/// Graph's time (`2026-01-05T08:00:00Z`, with or without fractions) in nanoseconds.
pub fn time_ns(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc().fixed_offset())
        })
        .and_then(|d| d.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// The delta state of one collection (a mail folder, a contact folder, a To Do list, a
/// drive): where it sits in the tree, and how far its change tracking has come.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Track {
    /// Its folder in the tree.
    pub p: Vec<String>,
    /// The delta link of the last completed round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// The next link of a round in progress (a paused run goes on from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Set while a full re-enumeration runs: the previous content waits in staging.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// A drive's root item id (delta pages name parents by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
}

/// The connector's cursor: its own JSON, versioned. Keys of `tracks` are
/// `<service>:<graph id>`; `folders` remembers the tree path of collections that are
/// listed rather than tracked by delta (calendars, SharePoint lists).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    pub v: u32,
    #[serde(default)]
    pub tracks: BTreeMap<String, Track>,
    #[serde(default)]
    pub folders: BTreeMap<String, Vec<String>>,
    /// Collections already brought up to date by the runs of a backup that paused: the
    /// next run goes on with the others instead of starting from the first again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub done: std::collections::BTreeSet<String>,
    /// Items that failed (a 500 on a message's MIME, a 403, a broken download), by the
    /// key of their collection: the delta link has moved past them, so they are asked for
    /// again on every run until stored. At most [`MAX_RETRY`] per collection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retry: BTreeMap<String, Vec<Retry>>,
    /// Collections with more failed items than the retry list keeps: enumerated again in
    /// full on the next run, which fetches whatever the tree lacks.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub rescan: std::collections::BTreeSet<String>,
}

/// Failed items kept per collection before the collection is enumerated again instead.
pub const MAX_RETRY: usize = 500;

/// An item to fetch again: its Graph id, and for a message what its delta row said (so
/// that a retry needs no listing).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<RetryInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetryInfo {
    pub t: i64,
    pub f: u64,
    pub m: Vec<(String, String)>,
    /// Read on its own rather than in a batch (it may be large).
    #[serde(default)]
    pub single: bool,
}

impl Cursor {
    /// Remembers a failed item of collection `key` for the next run; past [`MAX_RETRY`]
    /// the collection is enumerated again instead.
    pub fn retry_later(&mut self, key: &str, r: Retry) {
        if self.rescan.contains(key) {
            return;
        }
        let list = self.retry.entry(key.to_string()).or_default();
        if list.iter().any(|x| x.id == r.id) {
            return;
        }
        if list.len() >= MAX_RETRY {
            self.retry.remove(key);
            self.rescan.insert(key.to_string());
            return;
        }
        list.push(r);
    }

    /// Forgets a failed item once it is stored (or gone from the source).
    pub fn retried(&mut self, key: &str, id: &str) {
        if let Some(list) = self.retry.get_mut(key) {
            list.retain(|x| x.id != id);
            if list.is_empty() {
                self.retry.remove(key);
            }
        }
    }

    /// Whether collection `key` must be enumerated again in full (see [`Cursor::rescan`]);
    /// its retry list goes, since the enumeration finds every item the tree lacks.
    pub fn take_rescan(&mut self, key: &str) -> bool {
        if self.rescan.remove(key) {
            self.retry.remove(key);
            true
        } else {
            false
        }
    }
}

pub const CURSOR_VERSION: u32 = 1;

impl Cursor {
    /// The cursor a backup starts from; one it cannot read (another version, damage) is
    /// treated as none: every collection is enumerated again against the same tree, which
    /// stores nothing twice.
    pub fn parse(s: Option<&str>) -> Cursor {
        s.and_then(|s| serde_json::from_str::<Cursor>(s).ok())
            .filter(|c| c.v == CURSOR_VERSION)
            .unwrap_or(Cursor {
                v: CURSOR_VERSION,
                ..Default::default()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_segments() {
        assert_eq!(unseg(&seg("Q1/Q2 plans")), "Q1/Q2 plans");
        for s in ["", ".", "..", "a/b", "x\0y"] {
            assert!(ItemPath::check_segment(&seg(s)).is_ok(), "{s:?}");
        }
        assert_eq!(item_name("AAk/+=", "eml"), item_name("AAk/+=", "eml"));
        assert_ne!(item_name("a", "eml"), item_name("b", "eml"));
        assert!(ItemPath::check_segment(&item_name("a/b", "eml")).is_ok());
    }

    #[test]
    fn unreadable_cursors_start_over() {
        assert_eq!(Cursor::parse(Some("not json")).tracks.len(), 0);
        assert_eq!(Cursor::parse(Some(r#"{"v":99}"#)).v, CURSOR_VERSION);
        let mut c = Cursor::parse(None);
        c.tracks.insert(
            "mail:x".into(),
            Track {
                p: vec!["Mail".into()],
                d: Some("https://d".into()),
                ..Default::default()
            },
        );
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(Cursor::parse(Some(&s)), c);
    }

    #[test]
    fn the_retry_list_is_bounded_by_a_rescan() {
        let mut c = Cursor::parse(None);
        let r = |id: &str| Retry {
            id: id.into(),
            info: None,
        };
        c.retry_later("mail:a", r("1"));
        c.retry_later("mail:a", r("1"));
        assert_eq!(c.retry["mail:a"].len(), 1);
        c.retried("mail:a", "1");
        assert!(c.retry.is_empty());
        for i in 0..=MAX_RETRY {
            c.retry_later("mail:a", r(&i.to_string()));
        }
        assert!(c.retry.is_empty());
        assert!(c.rescan.contains("mail:a"));
        let s = serde_json::to_string(&c).unwrap();
        let mut back = Cursor::parse(Some(&s));
        assert_eq!(back, c);
        assert!(back.take_rescan("mail:a"));
        assert!(!back.take_rescan("mail:a"));
    }

    #[test]
    fn graph_times_parse() {
        assert_eq!(time_ns("1970-01-01T00:00:01Z"), 1_000_000_000);
        assert_eq!(time_ns("1970-01-01T00:00:01.0000000"), 1_000_000_000);
        assert_eq!(time_ns("garbage"), 0);
    }
}
