//! The folder connector's restore into its own folder when stored data is damaged: a
//! folder whose listing is damaged and a file with a damaged chunk are reported, the rest
//! is restored byte for byte, nothing appears under its name without all of its content,
//! and a rerun into the same restore folder (a restore job delivered again) clears what
//! an interrupted run left. And in place, a link where the snapshot has a folder is not
//! followed.

mod common;

use common::{files_under, folder_task, noise, Folders};
use domain::{restore_label, ItemPath, OnConflict, RESTORE_PREFIX};
use engine::{Destination, Engine, ErrorKind, NoProgress, RestoreOptions};
use std::collections::BTreeMap;
use testkit::damage;
use testkit::env::{backup_all, TestEnv};

const TENANT: &str = "acme";
const TASK: &str = "docs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_the_folder_reports_damage_and_a_rerun_clears_leftovers() {
    let env = TestEnv::new();
    let engine: Engine = env.engine(TENANT);
    let src = env.folder("src");
    let files: BTreeMap<String, Vec<u8>> = [
        ("a/1.txt", noise(3000, 1)),
        ("a/2.txt", noise(4000, 2)),
        ("big.bin", noise(20 << 20, 3)),
        ("bad/x.txt", noise(5000, 4)),
        ("bad/y.txt", noise(6000, 5)),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), b))
    .collect();
    for (p, body) in &files {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let task = folder_task(&engine, TASK, &src).await;
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();
    let (engine, task, snap) = (&engine, &task, &snap);

    // A chunk of the large file: a restore elsewhere shows which file a byte belongs to.
    let scratch = env.folder("scratch");
    let chunk = damage::damage_first(damage::middles(&env, TENANT, TASK), || {
        let scratch = scratch.clone();
        async move {
            let r = engine
                .restore_to_dir(
                    task,
                    snap,
                    &scratch,
                    &RestoreOptions::default(),
                    &NoProgress,
                )
                .await;
            let _ = std::fs::remove_dir_all(&scratch);
            matches!(&r, Ok(r) if r.errors.len() == 1 && r.errors[0].starts_with("big.bin"))
        }
    })
    .await;
    assert!(chunk.is_some(), "some stored byte is in a chunk of big.bin");
    // The listing of `bad`, and nothing else on the way.
    let listing = damage::damage_first(
        damage::every_nth_byte(&env, TENANT, TASK, 16),
        || async move {
            let bad = engine
                .list(task, snap, &ItemPath::parse(b"bad").unwrap())
                .await;
            matches!(&bad, Err(e) if e.kind() == ErrorKind::Damaged)
                && engine.list(task, snap, &ItemPath::root()).await.is_ok()
                && engine
                    .list(task, snap, &ItemPath::parse(b"a").unwrap())
                    .await
                    .is_ok()
        },
    )
    .await;
    assert!(listing.is_some(), "some stored byte is the listing of bad");

    // What an interrupted run of the same restore job left in its restore folder.
    let at = env.now();
    let target = src.join(restore_label(RESTORE_PREFIX, at));
    std::fs::create_dir_all(target.join("a")).unwrap();
    let stale = target.join("a/.1.txt.lifeboat-partial-0123456789abcdef");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();

    let opts = RestoreOptions {
        at: Some(at),
        ..Default::default()
    };
    let report = engine
        .restore(task, snap, &Destination::default(), &opts, &Folders)
        .await
        .expect("the restore goes on past damage");
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(
        report.errors.iter().any(|e| e.starts_with("big.bin")),
        "{:?}",
        report.errors
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.starts_with("bad: folder not restored")),
        "{:?}",
        report.errors
    );
    assert_eq!(report.items, 2);
    assert_eq!(
        files_under(&target),
        files
            .iter()
            .filter(|(p, _)| p.starts_with("a/"))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect::<BTreeMap<_, _>>(),
        "the sound files byte for byte; no partial file, stale or new; nothing of big.bin"
    );
    assert!(!target.join("bad").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_never_writes_through_a_link_in_a_folders_place() {
    let env = TestEnv::new();
    let engine = env.engine(TENANT);
    let src = env.folder("src");
    for (p, body) in [
        ("docs/a.txt", noise(3000, 1)),
        ("docs/b.txt", noise(4000, 2)),
    ] {
        std::fs::create_dir_all(src.join("docs")).unwrap();
        std::fs::write(src.join(p), body).unwrap();
    }
    std::fs::write(src.join("top.txt"), noise(500, 3)).unwrap();
    let task = folder_task(&engine, TASK, &src).await;
    let snap = backup_all(&engine, &task, &Folders).await.pop().unwrap();

    // Since the backup, docs has become a link to another folder, whose a.txt is not the
    // snapshot's.
    let elsewhere = env.folder("elsewhere");
    std::fs::write(elsewhere.join("a.txt"), b"not to be replaced").unwrap();
    std::fs::remove_dir_all(src.join("docs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, src.join("docs")).unwrap();
    std::fs::remove_file(src.join("top.txt")).unwrap();

    let opts = RestoreOptions {
        in_place: true,
        on_conflict: OnConflict::Replace,
        ..Default::default()
    };
    let report = engine
        .restore(&task, &snap, &Destination::default(), &opts, &Folders)
        .await
        .unwrap();
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("docs: folder not restored"),
        "{:?}",
        report.errors
    );
    assert_eq!(report.items, 1, "top.txt only");
    assert_eq!(
        files_under(&elsewhere),
        BTreeMap::from([("a.txt".to_string(), b"not to be replaced".to_vec())]),
        "nothing written through the link"
    );
    assert!(src.join("docs").symlink_metadata().unwrap().is_symlink());
}
