//! Damaging stored objects on purpose, as a failing disk or a bucket tampered with would,
//! on a [`TestEnv`]'s file store: tests show that damage is found and reported, never
//! returned as data, and that restores save everything else.
//!
//! The helpers know nothing of the vault's format: to damage one blob (a folder's node, a
//! chunk of a file) a test flips stored bytes one at a time until what it asks the engine
//! shows exactly the damage it wants ([`damage_first`]), so they hold whatever the format.

use crate::env::TestEnv;
use std::future::Future;
use std::path::{Path, PathBuf};

/// The object files of `task` of `tenant` with their sizes, smallest first.
///
/// # Panics
/// When the store's directory cannot be read: this is test set-up.
pub fn objects(env: &TestEnv, tenant: &str, task: &str) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.expect("a directory entry");
            if e.file_name().to_string_lossy().starts_with('.') {
                continue; // a temp file of the store, no object
            }
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                walk(&e.path(), out);
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &env.store.root().join("t").join(tenant).join(task),
        &mut out,
    );
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

/// Flips every bit of the byte at `at` of the file at `path`; flipping it again undoes it.
///
/// # Panics
/// When the file cannot be read or written, or is shorter.
pub fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("an object file");
    bytes[at as usize] ^= 0xff;
    std::fs::write(path, bytes).expect("an object file written back");
}

/// Flips the bytes at `candidates` (file, offset) one at a time, undoing each, until
/// `shows` answers true with it flipped; that byte stays flipped and is returned. `None`
/// when no candidate shows the damage (everything is then as it was).
pub async fn damage_first<F, Fut>(
    candidates: impl IntoIterator<Item = (PathBuf, u64)>,
    mut shows: F,
) -> Option<(PathBuf, u64)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for (path, at) in candidates {
        flip_byte(&path, at);
        if shows().await {
            return Some((path, at));
        }
        flip_byte(&path, at);
    }
    None
}

/// Every `step`-th byte of every object of `task`, smallest objects first: for damage
/// that lies in a small object (a folder's node among the trees). A sealed record is
/// longer than its nonce and tag (28 bytes), so a step of 16 meets every one.
pub fn every_nth_byte(env: &TestEnv, tenant: &str, task: &str, step: u64) -> Vec<(PathBuf, u64)> {
    objects(env, tenant, task)
        .into_iter()
        .flat_map(|(path, len)| {
            (0..len)
                .step_by(step.max(1) as usize)
                .map(move |at| (path.clone(), at))
        })
        .collect()
}

/// The middle byte of every object of `task`, largest objects first: for damage inside a
/// large file's data, which fills the largest objects.
pub fn middles(env: &TestEnv, tenant: &str, task: &str) -> Vec<(PathBuf, u64)> {
    let mut all = objects(env, tenant, task);
    all.reverse();
    all.into_iter()
        .filter(|(_, len)| *len > 0)
        .map(|(path, len)| (path, len / 2))
        .collect()
}
