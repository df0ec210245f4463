//! Exchange Online mail: the whole folder tree, hidden folders included, each folder
//! tracked by its own message delta and each message stored as its MIME (`.eml`); a restore
//! recreates a message that is not a draft and keeps its received time and read state.
//! The delta rounds and message fetches run in the shared Outlook pipeline
//! ([`crate::outlook`]); this module says which folders there are, what a message's
//! metadata is, and how one is written back.

pub mod backup;
pub mod restore;

/// The first request of the service for user `u`: what a backup asks for first.
pub fn root(u: &str) -> String {
    format!("/users/{u}/mailFolders?includeHiddenFolders=true&$top=250")
}
