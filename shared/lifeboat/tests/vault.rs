//! The vault's limits as the command line meets them: a snapshot whose side data is large
//! still commits, and one damaged snapshot record costs only that snapshot.

mod common;

use common::*;
use domain::{AccountId, SnapshotId, TaskId, TenantId};
use ports::{catalog_keys, Catalog, Condition, Record};
use std::path::Path;
use std::process::Command;

/// 250 named pipes under a deep path: each is reported (exit 3, a partial backup), and
/// the snapshot commits, though its errors alone pass the catalog's 400 KB item.
#[test]
fn a_folder_of_250_fifos_under_a_deep_path_backs_up_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut deep = src.clone();
    for level in 0..12 {
        deep = deep.join(format!(
            "{level:02}-{}",
            "a-rather-long-folder-name".repeat(4)
        ));
    }
    std::fs::create_dir_all(&deep).unwrap();
    write(&deep.join("note.txt"), b"the one regular file\n");
    for i in 0..250 {
        let fifo = deep.join(format!("pipe-{i:03}-{}", "x".repeat(120)));
        let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(ok.success(), "mkfifo failed");
    }
    let lb = Lifeboat::new(dir.path().join("home"));
    lb.add_folder_task("pipes", &src);
    let snap = lb.backup_json("pipes", 3);
    assert_eq!(snap["error_count"], 250, "{snap}");
    assert_eq!(snap["items"], 1, "{snap}");
    assert!(
        snap["errors"]
            .as_array()
            .is_some_and(|e| e.len() == 250 && e[0]["message"].as_str().unwrap().contains("pipe")),
        "{snap}"
    );
    assert_eq!(lb.snapshot_ids("pipes").len(), 1);
    // The next backup reads its cursor and errors back from the side data.
    let again = lb.backup_json("pipes", 3);
    assert_eq!(again["error_count"], 250);
    assert_eq!(lb.snapshot_ids("pipes").len(), 2);
    lb.ok(["verify"]);
}

fn flip_record(home: &Path, task: &str, id: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let catalog = embedded::SqliteCatalog::open(home.join("catalog.db")).unwrap();
        let key = catalog_keys::snapshot(
            &TenantId::new("local").unwrap(),
            &TaskId::new(task).unwrap(),
            &AccountId::new(folder::ACCOUNT).unwrap(),
            &SnapshotId::new(id).unwrap(),
        );
        let mut rec = catalog.get(&key.pk, &key.sk).await.unwrap().unwrap();
        let n = rec.value.len();
        rec.value[n / 3] ^= 0x10;
        catalog
            .put(Record::new(key.pk, key.sk, rec.value), Condition::None)
            .await
            .unwrap();
    });
}

/// The oldest snapshot record damaged: the others are listed and restore, `verify`
/// exits 2 naming it.
#[test]
fn a_damaged_snapshot_record_is_named_by_verify_and_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lb = Lifeboat::new(dir.path().join("home"));
    write(&src.join("a.txt"), b"one\n");
    lb.add_folder_task("docs", &src);
    for (i, name) in ["b.txt", "c.txt"].iter().enumerate() {
        lb.backup_json("docs", 0);
        write(&src.join(name), format!("{i}\n").as_bytes());
    }
    lb.backup_json("docs", 0);
    let ids = lb.snapshot_ids("docs");
    assert_eq!(ids.len(), 3);
    flip_record(&dir.path().join("home"), "docs", &ids[0]);

    assert_eq!(lb.snapshot_ids("docs"), ids[1..].to_vec());
    let r = lb.expect(2, ["verify"]);
    assert!(r.show().contains(&ids[0]), "{}", r.show());
    let out = dir.path().join("out");
    lb.ok(["restore", "docs", "--snapshot", &ids[2], "--to", ps(&out)]);
    let restored = only_restore_folder(&out);
    assert_same_tree(&src, &restored);
}
