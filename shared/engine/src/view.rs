//! What the outside sees of tasks, snapshots and entries: one JSON shape each, rendered by
//! the command line's `--json`, the HTTP API and events alike, so that a script written
//! against one works against the other. Views leave out what is not the customer's
//! business or must not leave the catalog: sealed credentials, wrapped keys, a source's
//! cursor, storage references.

use crate::TaskRecord;
use chrono::{DateTime, Utc};
use domain::{escape, AccountId, ItemPath, SnapshotId, TaskId};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use vault::{Entry, EntryKind, ItemError, SnapshotRecord, SnapshotStats};

/// A task as shown: its connector and settings, never its credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskView {
    pub name: TaskId,
    /// The connector (`folder`, `imap`, `m365`, …).
    pub kind: String,
    /// The connector's own settings (never secret).
    pub settings: Value,
    pub created_at: DateTime<Utc>,
    pub backup_hour_utc: u8,
}

impl From<&TaskRecord> for TaskView {
    fn from(t: &TaskRecord) -> Self {
        TaskView {
            name: t.name.clone(),
            kind: t.source.kind().to_string(),
            settings: t.source.settings.clone(),
            created_at: t.created_at,
            backup_hour_utc: t.backup_hour,
        }
    }
}

/// A snapshot as shown: its counts and item problems; not the source's cursor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotView {
    pub id: SnapshotId,
    pub account: AccountId,
    pub taken_at: DateTime<Utc>,
    pub parent: Option<SnapshotId>,
    pub items: u64,
    pub folders: u64,
    pub bytes: u64,
    /// What this backup read and stored.
    pub stats: SnapshotStats,
    pub error_count: u64,
    /// The first item problems (the count is in `error_count`), where they were asked for:
    /// they are kept beside the snapshot's record, not in it, so lists leave them out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
}

impl SnapshotView {
    /// The view with the snapshot's item problems ([`crate::Engine::snapshot_errors`]).
    pub fn with_errors(mut self, errors: Vec<ItemError>) -> Self {
        self.errors = errors;
        self
    }
}

impl From<&SnapshotRecord> for SnapshotView {
    fn from(s: &SnapshotRecord) -> Self {
        SnapshotView {
            id: s.id.clone(),
            account: s.account.clone(),
            taken_at: s.taken_at,
            parent: s.parent.clone(),
            items: s.stats.items,
            folders: s.stats.folders,
            bytes: s.stats.bytes,
            stats: s.stats.clone(),
            error_count: s.error_count,
            errors: Vec::new(),
        }
    }
}

/// What an entry of a snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKindView {
    /// A message, contact, event, task, file, page or record.
    Item,
    Folder,
    /// A symbolic link (local folders only).
    Link,
}

/// An item or folder of a snapshot as shown.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntryView {
    /// The name, escaped where it is not UTF-8 (`\xe9`).
    pub name: String,
    /// The path in the snapshot, escaped likewise.
    pub path: String,
    pub kind: EntryKindView,
    pub size: u64,
    /// The item's own time (received, modified).
    pub modified: DateTime<Utc>,
    /// A link's target, escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The source's metadata (sender, subject, flags, labels, …).
    pub meta: BTreeMap<String, String>,
}

impl EntryView {
    /// The view of `entry`, found at `path`.
    pub fn new(path: &ItemPath, entry: &Entry) -> Self {
        EntryView {
            name: escape(&entry.name),
            path: path.to_string(),
            kind: match entry.kind {
                EntryKind::File => EntryKindView::Item,
                EntryKind::Dir => EntryKindView::Folder,
                EntryKind::Symlink => EntryKindView::Link,
            },
            size: entry.size,
            modified: DateTime::<Utc>::from_timestamp_nanos(entry.mtime_ns),
            link: entry.link.as_deref().map(escape),
            meta: entry.meta.iter().cloned().collect(),
        }
    }
}
