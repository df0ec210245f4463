//! What is specific to Lifeboat's end-to-end folder tests: sample folders, a byte-exact
//! picture of a folder tree to compare a restore with its source, and shortcuts that add a
//! `folder` task and back it up through the engine's one entry point. The installation
//! itself (an engine on the embedded adapters in a temp directory, with a clock the test
//! moves) is the one every crate's tests use, [`testkit::env::TestEnv`].

use domain::TaskId;
use engine::{BackupOptions, Engine, NewTask, SnapshotRecord, TaskRecord};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use testkit::env::{t0, TestEnv};

/// Adds a `folder` task named `name` over `path`, opened by the connectors every runner
/// opens tasks with.
///
/// # Panics
/// When the engine refuses it: this is test set-up.
pub async fn folder_task(engine: &Engine, name: &str, path: &Path) -> TaskRecord {
    let source = folder::FolderSettings::new(path)
        .expect("a folder to back up")
        .to_source();
    engine
        .add_task(
            NewTask {
                name: TaskId::new(name).expect("a valid task name"),
                source,
                secret: None,
                backup_hour: None,
            },
            &connectors::BuiltIn,
        )
        .await
        .expect("task added")
}

/// Backs up the one account of a folder task, as a runner does: opens its connector,
/// records the accounts it lists, and backs up the folder to the end.
///
/// # Panics
/// When the backup fails: the tests that expect a failure call the engine themselves.
pub async fn backup(engine: &Engine, task: &TaskRecord) -> SnapshotRecord {
    let connector = engine
        .connector(task, &connectors::BuiltIn)
        .await
        .expect("the connector opens");
    let accounts = engine
        .refresh_accounts(task, connector.as_ref())
        .await
        .expect("accounts listed");
    assert_eq!(accounts.len(), 1, "a folder task has one account");
    assert_eq!(accounts[0].id.as_str(), folder::ACCOUNT);
    engine
        .backup(
            task,
            &accounts[0].id,
            connector.as_ref(),
            &BackupOptions::default(),
        )
        .await
        .and_then(|end| end.into_snapshot())
        .expect("backup")
}

/// What is at one path of a folder tree.
#[derive(Clone, PartialEq, Eq)]
pub enum Item {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Large contents are summarised: a failure message stays readable.
            Item::File(d) if d.len() > 64 => {
                write!(f, "File({} bytes, digest {})", d.len(), &digest(d)[..16])
            }
            Item::File(d) => write!(f, "File({:?})", String::from_utf8_lossy(d)),
            Item::Dir => f.write_str("Dir"),
            Item::Link(t) => write!(f, "Link({:?})", String::from_utf8_lossy(t)),
        }
    }
}

fn digest(d: &[u8]) -> String {
    // A tiny FNV-1a digest is enough to tell two contents apart in a message.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in d {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{:08x}", d.len())
}

/// A folder tree: relative path (raw bytes, `/`-joined) to what is there.
pub type Tree = BTreeMap<Vec<u8>, Item>;

/// Reads the tree under `root` (not following links).
pub fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, &mut Vec::new(), &mut out);
    out
}

fn walk(dir: &Path, rel: &mut Vec<u8>, out: &mut Tree) {
    for ent in fs::read_dir(dir).expect("readable folder") {
        let ent = ent.expect("entry");
        let name = ent.file_name();
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let path = ent.path();
        let meta = fs::symlink_metadata(&path).expect("metadata");
        if meta.file_type().is_symlink() {
            let t = fs::read_link(&path).expect("link");
            out.insert(rel.clone(), Item::Link(t.as_os_str().as_bytes().to_vec()));
        } else if meta.is_dir() {
            out.insert(rel.clone(), Item::Dir);
            walk(&path, rel, out);
        } else {
            out.insert(rel.clone(), Item::File(fs::read(&path).expect("file")));
        }
        rel.truncate(len);
    }
}

/// Modification time (ns) and permission bits of every file and folder under `root`.
pub fn read_meta(root: &Path) -> BTreeMap<Vec<u8>, (i64, u32)> {
    let mut out = BTreeMap::new();
    for path in read_tree(root).keys() {
        let m = fs::symlink_metadata(root.join(OsStr::from_bytes(path))).expect("metadata");
        if m.file_type().is_symlink() {
            continue;
        }
        let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        out.insert(path.clone(), (mtime, m.permissions().mode() & 0o7777));
    }
    out
}

/// `path` (bytes) under `root`.
pub fn at(root: &Path, path: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(path))
}

/// Writes `data` at `root/rel`, creating folders on the way.
pub fn write(root: &Path, rel: &[u8], data: &[u8]) {
    let p = at(root, rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("folders");
    }
    fs::write(&p, data).expect("write");
}

/// Deterministic incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The day-1 sample folder: nested folders, an empty file, an empty folder, a name that is
/// not UTF-8, a link and a dangling link, an executable, and large files that are chunked.
pub fn make_day1(root: &Path) {
    write(root, b"docs/report.txt", b"quarterly report, version 1\n");
    write(root, b"docs/notes/b.md", b"# notes\n\nsome notes\n");
    write(root, b"docs/notes/deep/a.txt", b"deep down\n");
    write(root, b"docs/run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(at(root, b"docs/run.sh"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
    write(root, b"empty.txt", b"");
    fs::create_dir_all(at(root, b"Empty folder")).expect("empty folder");
    write(root, b"caf\xe9", b"a name that is not UTF-8\n");
    std::os::unix::fs::symlink("docs/report.txt", at(root, b"link")).expect("link");
    std::os::unix::fs::symlink("nowhere/at/all", at(root, b"dangling")).expect("link");
    write(root, b"to_delete.txt", b"delete me\n");
    write(root, b"to_rename.txt", b"rename me\n");
    write(root, b"to_edit.txt", b"edit me\n");
    // Larger than a single-blob item, so it is chunked and an edit stores one chunk.
    write(root, b"big.bin", &random_bytes(6_500_000, 42));
    // Zeros chunk into repeats of one maximal chunk: one blob at several offsets of a file.
    let mut zeros = vec![0u8; 9 * 1024 * 1024];
    zeros.extend_from_slice(b"tail");
    write(root, b"zeros.img", &zeros);
}
