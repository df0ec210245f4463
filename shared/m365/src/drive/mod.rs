//! OneDrive and SharePoint document libraries: the drive's delta feed, file content
//! streamed from its pre-authenticated download URL into the vault's chunker (memory stays
//! bounded whatever the size), folders kept, moves and renames applied without a download;
//! files restored by upload, in place or into the label's folder.
//!
//! Delta pages name an item's parent by id only (`parentReference.path` is not part of a
//! delta answer), so every file and folder keeps its Graph id in its metadata, and the tree
//! itself is the map from id to path.

pub mod backup;
mod download;
pub mod restore;
mod upload;

pub use backup::backup;
pub use download::ChannelReader;
pub use upload::{child, ensure_folder, upload, FRAGMENT, SIMPLE_UPLOAD};

use domain::ItemPath;
use serde_json::Value;

fn s<'v>(v: &'v Value, ptr: &str) -> &'v str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// One drive to back up: its Graph id and the folder of the tree it fills.
pub struct DriveRef {
    pub id: String,
    pub path: ItemPath,
    pub name: String,
}
