//! End to end on the embedded adapters, through the engine's use cases: a folder task is
//! backed up twice, compared, restored (to a new folder, in place, selectively) and
//! exported, and each result is checked byte for byte against the folder it came from.

use domain::{escape, restore_label, ItemPath, RESTORE_PREFIX};
use engine::{
    ChangeKind, Engine, ExportFormat, ExportOptions, ExportReport, NoProgress, OnConflict,
    RestoreOptions, SnapshotRecord, TaskRecord,
};
use lifeboat_tests::{
    at, backup, folder_task, make_day1, random_bytes, read_meta, read_tree, write, Item, TestEnv,
    Tree,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

fn restore_opts(include: &[&[u8]], in_place: bool, on_conflict: OnConflict) -> RestoreOptions {
    RestoreOptions {
        include: include
            .iter()
            .map(|p| ItemPath::parse(p).unwrap())
            .collect(),
        in_place,
        on_conflict,
        ..Default::default()
    }
}

/// The part of `tree` at the paths in `keep` and below them.
fn subtree(tree: &Tree, keep: &[&[u8]]) -> Tree {
    tree.iter()
        .filter(|(p, _)| {
            keep.iter()
                .any(|k| p.as_slice() == *k || (p.starts_with(k) && p.get(k.len()) == Some(&b'/')))
        })
        .map(|(p, i)| (p.clone(), i.clone()))
        .collect()
}

/// Exports `include` of `snap` (everything when empty) as a zip at `path`.
async fn export_zip(
    eng: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
    path: &Path,
    include: &[ItemPath],
) -> engine::Result<ExportReport> {
    let opts = ExportOptions {
        format: ExportFormat::Zip,
        include: include.to_vec(),
        ..Default::default()
    };
    eng.export(task, snap, path, &opts, &NoProgress).await
}

fn file(tree: &Tree, path: &[u8]) -> Vec<u8> {
    match tree.get(path) {
        Some(Item::File(d)) => d.clone(),
        other => panic!("{} is {other:?}", String::from_utf8_lossy(path)),
    }
}

/// Day 1 backed up, the folder changed, day 2 backed up.
struct TwoDays {
    env: TestEnv,
    eng: Engine,
    task: TaskRecord,
    src: std::path::PathBuf,
    day1: Tree,
    day1_meta: BTreeMap<Vec<u8>, (i64, u32)>,
    day2: Tree,
    s1: SnapshotRecord,
    s2: SnapshotRecord,
}

async fn two_days() -> TwoDays {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    make_day1(&src);
    let day1 = read_tree(&src);
    let day1_meta = read_meta(&src);
    let task = folder_task(&eng, "laptop", &src).await;
    let s1 = backup(&eng, &task).await;

    env.advance(chrono::Duration::days(1));
    write(&src, b"to_edit.txt", b"edited on day two, and longer\n");
    let mut big = fs::read(src.join("big.bin")).unwrap();
    big[1_200_000..1_200_100].fill(0xAA);
    fs::write(src.join("big.bin"), &big).unwrap();
    write(&src, b"new.txt", b"new on day two\n");
    write(&src, b"newdir/x.txt", b"x\n");
    fs::remove_file(src.join("to_delete.txt")).unwrap();
    fs::rename(src.join("to_rename.txt"), src.join("renamed.txt")).unwrap();
    let day2 = read_tree(&src);
    let s2 = backup(&eng, &task).await;
    env.advance(chrono::Duration::hours(1));
    TwoDays {
        env,
        eng,
        task,
        src,
        day1,
        day1_meta,
        day2,
        s1,
        s2,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backups_diff_exactly_and_day1_restores_byte_for_byte() {
    let TwoDays {
        env,
        eng,
        task,
        src,
        day1,
        day1_meta,
        day2,
        s1,
        s2,
    } = two_days().await;

    // Day 1: 11 files and 2 links in 4 folders below the root (docs, docs/notes,
    // docs/notes/deep, Empty folder), nothing failed.
    assert_eq!(s1.error_count, 0);
    assert_eq!((s1.stats.items, s1.stats.folders), (13, 4));
    let day1_bytes: usize = day1
        .values()
        .map(|i| match i {
            Item::File(d) => d.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(s1.stats.bytes, day1_bytes as u64);

    // Day 2 read only what changed, and stored only the changed chunk of the large file.
    assert_eq!(s2.error_count, 0);
    assert_eq!(s2.parent.as_ref(), Some(&s1.id));
    assert_eq!(
        s2.stats.items_read, 5,
        "edited, big, new, newdir/x and renamed"
    );
    assert!(s2.stats.new_bytes < 6_500_000 / 2, "{:?}", s2.stats);
    assert_eq!(
        eng.snapshots(&task).await.unwrap(),
        vec![s1.clone(), s2.clone()]
    );
    let zeros = eng
        .list(&task, &s1, &ItemPath::parse(b"zeros.img").unwrap())
        .await
        .unwrap();
    let distinct: std::collections::HashSet<_> = zeros[0].content.iter().map(|c| c.id).collect();
    assert!(
        distinct.len() < zeros[0].content.len(),
        "zeros.img repeats a chunk"
    );

    let mut changes: Vec<(String, ChangeKind)> = eng
        .diff(&task, &s1, &s2)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("big.bin", ChangeKind::Changed),
        ("new.txt", ChangeKind::Added),
        ("newdir/", ChangeKind::Added),
        ("newdir/x.txt", ChangeKind::Added),
        ("renamed.txt", ChangeKind::Added),
        ("to_delete.txt", ChangeKind::Removed),
        ("to_edit.txt", ChangeKind::Changed),
        ("to_rename.txt", ChangeKind::Removed),
    ]
    .map(|(p, k)| (p.to_string(), k));
    assert_eq!(changes, expected);
    let back = eng.diff(&task, &s2, &s1).await.unwrap();
    assert_eq!(back.len(), expected.len());
    assert!(eng.diff(&task, &s1, &s1).await.unwrap().is_empty());

    // Snapshot 1 restored into `Lifeboat Restore <now>`: names, contents, links, empty
    // folders, modes and modification times as on day 1.
    let out = env.folder("restores");
    let none = RestoreOptions::default();
    let r1 = eng
        .restore_to_dir(&task, &s1, &out, &none, &NoProgress)
        .await
        .unwrap();
    let label = restore_label(RESTORE_PREFIX, env.now());
    assert_eq!(label, "Lifeboat Restore 2026-11-26 03-00-00 UTC");
    assert_eq!(r1.target, out.join(&label));
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    assert_eq!((r1.files, r1.folders), (11, 5));
    assert_eq!(r1.bytes, day1_bytes as u64);
    assert_eq!(read_tree(&r1.target), day1);
    assert_eq!(read_meta(&r1.target), day1_meta);

    // A second restore in the same second does not touch the first; a later one goes to a
    // folder of its own.
    let again = eng
        .restore_to_dir(&task, &s1, &out, &none, &NoProgress)
        .await;
    assert!(again.is_err(), "a second restore reused {}", label);
    assert_eq!(read_tree(&r1.target), day1);
    env.advance(chrono::Duration::seconds(1));
    let r2 = eng
        .restore_to_dir(&task, &s1, &out, &none, &NoProgress)
        .await
        .unwrap();
    assert_ne!(r2.target, r1.target);
    assert_eq!(read_tree(&r2.target), day1);
    assert_eq!(read_tree(&r1.target), day1);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 2);

    // Snapshot 2 restores day 2, and nothing of this touched the source.
    env.advance(chrono::Duration::seconds(1));
    let r3 = eng
        .restore_to_dir(&task, &s2, &out, &none, &NoProgress)
        .await
        .unwrap();
    assert_eq!(read_tree(&r3.target), day2);
    assert_eq!(read_tree(&src), day2);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_restore_skips_copies_or_replaces_as_told() {
    let TwoDays {
        env,
        eng,
        task,
        src,
        day1,
        day2,
        s1,
        ..
    } = two_days().await;
    let edited = b"to_edit.txt".as_slice();

    // Skip: the edited file is left alone, and nothing else is written.
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &src,
            &restore_opts(&[edited], true, OnConflict::Skip),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(r.target, src);
    assert_eq!((r.skipped, r.files, r.copies), (1, 0, 0));
    assert_eq!(read_tree(&src), day2);

    // Copy: day 1's version beside it, as `name (Lifeboat Restore …).ext`.
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &src,
            &restore_opts(&[edited], true, OnConflict::Copy),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!((r.skipped, r.files, r.copies), (0, 1, 1));
    let copy = format!("to_edit ({}).txt", restore_label(RESTORE_PREFIX, env.now()));
    let mut expected = day2.clone();
    expected.insert(copy.clone().into_bytes(), Item::File(file(&day1, edited)));
    assert_eq!(read_tree(&src), expected);

    // Skip over everything: what was deleted comes back, nothing existing is touched.
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &src,
            &restore_opts(&[], true, OnConflict::Skip),
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.files, r.skipped), (2, 11));
    for gone in [b"to_delete.txt".as_slice(), b"to_rename.txt"] {
        expected.insert(gone.to_vec(), Item::File(file(&day1, gone)));
    }
    assert_eq!(read_tree(&src), expected);

    // Replace: overwritten (a chunked file too), with no temporary file left behind.
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &src,
            &restore_opts(&[edited, b"big.bin"], true, OnConflict::Replace),
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.files, r.skipped, r.copies), (2, 0, 0));
    for p in [edited, b"big.bin"] {
        expected.insert(p.to_vec(), Item::File(file(&day1, p)));
    }
    assert_eq!(read_tree(&src), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn selective_restore_writes_only_what_was_asked() {
    let TwoDays {
        env,
        eng,
        task,
        day1,
        s1,
        ..
    } = two_days().await;
    let out = env.folder("selected");
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &out,
            &restore_opts(
                &[b"docs/report.txt", b"docs/notes"],
                false,
                OnConflict::Skip,
            ),
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut expected = subtree(&day1, &[b"docs/report.txt", b"docs/notes"]);
    expected.insert(b"docs".to_vec(), Item::Dir);
    assert_eq!(read_tree(&r.target), expected);
    assert_eq!(r.files, 3);

    // A path that is not in the snapshot fails before anything is written.
    let before = read_tree(&out);
    env.advance(chrono::Duration::seconds(1));
    let bad = eng
        .restore_to_dir(
            &task,
            &s1,
            &out,
            &restore_opts(
                &[b"docs/report.txt", b"no/such/file"],
                true,
                OnConflict::Skip,
            ),
            &NoProgress,
        )
        .await;
    assert!(matches!(bad, Err(engine::Error::NotFound(_))), "{bad:?}");
    assert_eq!(read_tree(&out), before);
}

/// A restore refused for a mistyped path leaves nothing behind, not even an empty
/// `Lifeboat Restore <time>` folder (it once created that folder before the lookups).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_restore_leaves_no_restore_folder() {
    let TwoDays {
        env, eng, task, s1, ..
    } = two_days().await;
    let out = env.folder("typo");
    let bad = eng
        .restore_to_dir(
            &task,
            &s1,
            &out,
            &restore_opts(&[b"no/such/file"], false, OnConflict::Skip),
            &NoProgress,
        )
        .await;
    assert!(matches!(bad, Err(engine::Error::NotFound(_))), "{bad:?}");
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a refused restore left {left:?}");
}

/// The snapshot's root has no metadata of its own (`Vault::lookup` returns it as a folder
/// entry with `mtime_ns: 0`); a restore must not apply that to the folder it restores into
/// (it once dated the `Lifeboat Restore …` folder, or in place the user's own, 1970-01-01).
#[tokio::test(flavor = "multi_thread")]
async fn restoring_a_whole_snapshot_does_not_date_the_target_1970() {
    let TwoDays {
        env,
        eng,
        task,
        src,
        s1,
        ..
    } = two_days().await;
    let epoch = std::time::UNIX_EPOCH;
    let out = env.folder("whole");
    let r = eng
        .restore_to_dir(&task, &s1, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    let label_time = fs::metadata(&r.target).unwrap().modified().unwrap();
    let r = eng
        .restore_to_dir(
            &task,
            &s1,
            &src,
            &restore_opts(&[], true, OnConflict::Skip),
            &NoProgress,
        )
        .await
        .unwrap();
    let src_time = fs::metadata(&r.target).unwrap().modified().unwrap();
    assert!(
        label_time != epoch && src_time != epoch,
        "restore folder dated {label_time:?}, in-place target dated {src_time:?}"
    );
}

/// The zip as path -> item; folders without their trailing `/`.
fn read_zip(path: &Path) -> (BTreeMap<String, Item>, BTreeMap<String, u32>) {
    let mut za = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    let mut items = BTreeMap::new();
    let mut modes = BTreeMap::new();
    for i in 0..za.len() {
        let mut f = za.by_index(i).unwrap();
        let name = f.name().to_string();
        if let Some(m) = f.unix_mode() {
            modes.insert(name.trim_end_matches('/').to_string(), m);
        }
        let item = if f.is_dir() {
            Item::Dir
        } else {
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            if f.is_symlink() {
                Item::Link(data)
            } else {
                Item::File(data)
            }
        };
        let prev = items.insert(name.trim_end_matches('/').to_string(), item);
        assert!(prev.is_none(), "{name} is twice in the zip");
    }
    (items, modes)
}

/// How a tree's paths are named in a zip (escaped where not UTF-8).
fn zip_names(tree: &Tree) -> BTreeMap<String, Item> {
    tree.iter()
        .map(|(p, i)| {
            let name = p
                .split(|b| *b == b'/')
                .map(escape)
                .collect::<Vec<_>>()
                .join("/");
            (name, i.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_zip_holds_every_entry_with_its_content() {
    let TwoDays {
        env,
        eng,
        task,
        day1,
        s1,
        ..
    } = two_days().await;
    let zip_path = env.dir.path().join("day1.zip");
    let rep = export_zip(&eng, &task, &s1, &zip_path, &[]).await.unwrap();
    assert_eq!((rep.items, rep.folders), (11, 4));
    let (items, modes) = read_zip(&zip_path);
    assert_eq!(items, zip_names(&day1));
    assert!(
        items.contains_key("caf\\xe9"),
        "the non-UTF-8 name is escaped"
    );
    assert_eq!(modes["docs/run.sh"] & 0o777, 0o755);
    assert!(!env.dir.path().join("day1.zip.partial").exists());

    // An existing file is never overwritten.
    let len = fs::metadata(&zip_path).unwrap().len();
    let again = export_zip(&eng, &task, &s1, &zip_path, &[]).await;
    assert!(again.is_err());
    assert_eq!(fs::metadata(&zip_path).unwrap().len(), len);

    // A selection exports just that folder.
    let part = env.dir.path().join("notes.zip");
    let notes = ItemPath::parse(b"docs/notes").unwrap();
    export_zip(&eng, &task, &s1, &part, &[notes]).await.unwrap();
    let (items, _) = read_zip(&part);
    assert_eq!(items, zip_names(&subtree(&day1, &[b"docs/notes"])));
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_files_and_folders_round_trip() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"empty.txt", b"");
    write(&src, b"nested/also-empty", b"");
    for d in [&b"Empty folder"[..], b"nested/empty/deeper"] {
        fs::create_dir_all(at(&src, d)).unwrap();
    }
    let tree = read_tree(&src);
    let task = folder_task(&eng, "empties", &src).await;
    let s = backup(&eng, &task).await;
    assert_eq!(s.error_count, 0);
    // Empty folder, nested, nested/empty and nested/empty/deeper: the root is not counted.
    assert_eq!((s.stats.items, s.stats.folders, s.stats.bytes), (2, 4, 0));

    let out = env.folder("out");
    let r = eng
        .restore_to_dir(&task, &s, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(read_tree(&r.target), tree);
    let zip_path = env.dir.path().join("e.zip");
    export_zip(&eng, &task, &s, &zip_path, &[]).await.unwrap();
    assert_eq!(read_zip(&zip_path).0, zip_names(&tree));

    // A folder with nothing in it at all.
    let bare = env.folder("bare");
    let task = folder_task(&eng, "bare", &bare).await;
    let s = backup(&eng, &task).await;
    assert_eq!((s.stats.items, s.stats.folders), (0, 0));
    env.advance(chrono::Duration::seconds(1));
    let r = eng
        .restore_to_dir(&task, &s, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(read_tree(&r.target).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_growing_during_backup_is_flagged_and_settled_next_time() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const START: usize = 12 * 1024 * 1024;
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    let log = src.join("growing.log");
    fs::write(&log, random_bytes(START, 7)).unwrap();
    write(&src, b"steady.txt", b"steady\n");
    let task = folder_task(&eng, "logs", &src).await;

    // Appends 4 KiB every millisecond from before the backup starts until it has returned,
    // so the file grows between the backup's look at it and the end of its read, whenever
    // those are (at most a minute, 240 MiB: far longer than the backup takes).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 60_000 {
                f.write_all(&random_bytes(4096, 1000 + n)).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            n
        })
    };
    let s1 = backup(&eng, &task).await;
    stop.store(true, Ordering::Relaxed);
    let appends = writer.join().unwrap();
    assert!(appends > 0 && appends < 60_000, "{appends} appends");

    // The backup succeeded, and flagged the growing file, by name, and nothing else.
    let errors = eng.snapshot_errors(&task, &s1).await.unwrap();
    assert_eq!(s1.error_count, 1, "{errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let flagged = &errors[0];
    assert_eq!(flagged.path, "growing.log", "{flagged:?}");
    assert!(
        flagged.message.contains("changed while being read"),
        "{flagged:?}"
    );

    // The next backup reads it again (and only it) and takes the settled version, whole.
    env.advance(chrono::Duration::hours(1));
    let settled = fs::read(&log).unwrap();
    assert!(
        settled.len() > START,
        "the file grew: {} bytes",
        settled.len()
    );
    let s2 = backup(&eng, &task).await;
    let errors = eng.snapshot_errors(&task, &s2).await.unwrap();
    assert_eq!(s2.error_count, 0, "{errors:?}");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s2.stats.items_read, 1, "{:?}", s2.stats);
    let entry = eng
        .list(&task, &s2, &ItemPath::parse(b"growing.log").unwrap())
        .await
        .unwrap();
    assert_eq!(entry.len(), 1, "{entry:?}");
    assert_eq!(entry[0].size, settled.len() as u64);
    let out = env.folder("out");
    let r = eng
        .restore_to_dir(
            &task,
            &s2,
            &out,
            &restore_opts(&[b"growing.log"], false, OnConflict::Skip),
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let restored = fs::read(r.target.join("growing.log")).unwrap();
    let on_disk = fs::read(&log).unwrap();
    assert_eq!(restored.len(), on_disk.len());
    assert!(
        restored == on_disk,
        "the settled version did not restore byte for byte"
    );
}
