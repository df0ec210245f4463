//! The partial files a restore writes before renaming a whole file to its name
//! (`.<name>.lifeboat-partial-<16 hex>`), as a restore killed midway leaves them: a backup of
//! the folder never stores them as the user's files, and an in-place rerun of a restore
//! clears those beside the names it covers, whether it writes them, skips them or restores
//! a copy beside them.

mod common;

use common::{folder_task, noise, Folders};
use domain::{restore_label, ItemPath, OnConflict, RESTORE_PREFIX};
use engine::{Destination, Engine, EntryKind, RestoreOptions, SnapshotRecord, TaskRecord};
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;
use testkit::env::{backup_all, TestEnv};

const TENANT: &str = "acme";
const TASK: &str = "docs";

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every path below `dir` (files, links, folders), links not followed.
fn names_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Every path of a snapshot, folders listed down to the bottom.
async fn snapshot_paths(
    engine: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut folders = vec![ItemPath::root()];
    while let Some(at) = folders.pop() {
        for e in engine.list(task, snap, &at).await.unwrap() {
            let p = at.join(&e.name).unwrap();
            out.insert(p.to_string());
            if e.kind == EntryKind::Dir {
                folders.push(p);
            }
        }
    }
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_leaves_out_the_partial_files_of_a_restore() {
    let env = TestEnv::new();
    let engine = env.engine(TENANT);
    let src = env.folder("src");
    write(&src.join("a.txt"), &noise(3000, 1));
    write(&src.join("sub/b.txt"), &noise(5000, 2));
    // What a restore into this folder, killed midway, leaves: zero-filled partial files
    // beside a file it was replacing in place and in its own restore folder, and a link
    // it was making.
    write(
        &src.join(".a.txt.lifeboat-partial-0123456789abcdef"),
        &[0; 4096],
    );
    let restore_folder = restore_label(RESTORE_PREFIX, env.now());
    write(
        &src.join(format!(
            "{restore_folder}/sub/.b.txt.lifeboat-partial-fedcba9876543210"
        )),
        &[0; 4096],
    );
    symlink("a.txt", src.join(".l.lifeboat-partial-00000000deadbeef")).unwrap();
    // Names a user may well have, close as they are: backed up.
    let look_alikes = [
        "a.txt.lifeboat-partial-0123456789abcdef",
        ".a.txt.lifeboat-partial-0123456789ABCDEF",
        ".a.txt.lifeboat-partial-01234",
        ".a.txt.lifeboat-partial-0123456789abcdef.txt",
        ".lifeboat-partial-0123456789abcdef",
    ];
    for n in look_alikes {
        write(&src.join(n), b"mine");
    }
    let task = folder_task(&engine, TASK, &src).await;
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();

    let mut want = set(&[
        "a.txt",
        "sub",
        "sub/b.txt",
        &restore_folder,
        &format!("{restore_folder}/sub"),
    ]);
    want.extend(look_alikes.iter().map(|n| n.to_string()));
    assert_eq!(snapshot_paths(&engine, &task, &snap).await, want);

    // The restore, run again, finishes its file: the next backup has it.
    std::fs::rename(
        src.join(format!(
            "{restore_folder}/sub/.b.txt.lifeboat-partial-fedcba9876543210"
        )),
        src.join(format!("{restore_folder}/sub/b.txt")),
    )
    .unwrap();
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();
    want.insert(format!("{restore_folder}/sub/b.txt"));
    assert_eq!(snapshot_paths(&engine, &task, &snap).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_rerun_clears_partial_files_beside_names_it_skips_or_copies() {
    let env = TestEnv::new();
    let engine = env.engine(TENANT);
    let src = env.folder("src");
    write(&src.join("a.txt"), &noise(3000, 1));
    write(&src.join("sub/b.txt"), &noise(5000, 2));
    symlink("a.txt", src.join("l")).unwrap();
    let task = folder_task(&engine, TASK, &src).await;
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();
    let before = names_under(&src);

    // An in-place restore that replaced every name was killed: each still has its own
    // version, and a partial file or link beside it. One partial file is of a name the
    // snapshot does not have: not this restore's to judge.
    write(
        &src.join(".a.txt.lifeboat-partial-0123456789abcdef"),
        &[0; 4096],
    );
    write(
        &src.join("sub/.b.txt.lifeboat-partial-fedcba9876543210"),
        &[0; 100],
    );
    symlink("a.txt", src.join(".l.lifeboat-partial-00000000deadbeef")).unwrap();
    let foreign = ".z.txt.lifeboat-partial-0123456789abcdef";
    write(&src.join(foreign), &[0; 10]);

    let restore = |on_conflict| {
        let opts = RestoreOptions {
            in_place: true,
            on_conflict,
            ..Default::default()
        };
        let (engine, task, snap) = (&engine, &task, &snap);
        async move {
            engine
                .restore(task, snap, &Destination::default(), &opts, &Folders)
                .await
                .unwrap()
        }
    };
    let report = restore(OnConflict::Skip).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.skipped, report.items), (3, 0));
    let mut want = before.clone();
    want.insert(foreign.to_string());
    assert_eq!(names_under(&src), want, "the stale partials are gone");

    // A restore of copies beside the files was killed too: its copies' partial files go
    // when a rerun writes those copies.
    write(
        &src.join(".a (Lifeboat Restore).txt.lifeboat-partial-0123456789abcdef"),
        &[0; 4096],
    );
    let report = restore(OnConflict::Copy).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.items, 3);
    want.extend(set(&[
        "a (Lifeboat Restore).txt",
        "sub/b (Lifeboat Restore).txt",
        "l (Lifeboat Restore)",
    ]));
    assert_eq!(names_under(&src), want);
    assert_eq!(
        std::fs::read(src.join("a (Lifeboat Restore).txt")).unwrap(),
        noise(3000, 1)
    );
}
