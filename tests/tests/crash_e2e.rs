//! A backup that dies before its commit: nothing becomes visible, the vault stays sound,
//! and the next backup reuses the packs the dead one had already uploaded.

use engine::{NoProgress, RestoreOptions};
use lifeboat_tests::{backup, files_task, random_bytes, read_tree, write, Env};
use ports::CatalogExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_backup_leaves_nothing_visible_and_its_packs_are_reused() {
    let env = Env::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"small.txt", b"there before\n");
    let task = files_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    let account = s1.account.clone();

    // A large file is added, and a backup of it dies once two packs are uploaded.
    const DATA: usize = 20 * 1024 * 1024;
    write(&src, b"big.bin", &random_bytes(DATA, 11));
    env.advance(chrono::Duration::hours(1));
    let vault = eng.vault(&task).await.unwrap();
    let pending = vault::snapshot::pending_pk(vault.tenant(), vault.task(), &account);
    {
        let mut w = vault
            .writer(account.clone(), Some(s1.clone()))
            .await
            .unwrap();
        let f = std::fs::File::open(src.join("big.bin")).unwrap();
        let (_, n) = w.store_stream(f, "big.bin".into()).await.unwrap();
        assert_eq!(n as usize, DATA);
        // Uploads run in the background; wait until two are journalled, then "crash".
        let deadline = Instant::now() + Duration::from_secs(20);
        while vault.catalog().query_all(&pending, "").await.unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "no pack was uploaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(w);
    }

    // Nothing is visible, and verification passes (the orphan packs are sound).
    assert_eq!(vault.snapshots(&account).await.unwrap(), vec![s1.clone()]);
    assert_eq!(eng.snapshots(&task).await.unwrap(), vec![s1.clone()]);
    let report = vault
        .verify(std::slice::from_ref(&account), &|_| {})
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert!(
        report.packs >= 4,
        "two packs of s1 and two orphans: {report:?}"
    );

    // The next backup stores only what the dead one had not uploaded yet.
    env.advance(chrono::Duration::hours(1));
    let s2 = backup(&eng, &task).await;
    assert!(s2.errors.is_empty(), "{:?}", s2.errors);
    eprintln!(
        "after the crash: {} of {DATA} bytes stored again",
        s2.stats.stored_bytes
    );
    assert!(
        s2.stats.stored_bytes < (DATA / 2) as u64,
        "stored {} of {DATA} bytes again",
        s2.stats.stored_bytes
    );
    assert!(vault
        .catalog()
        .query_all(&pending, "")
        .await
        .unwrap()
        .is_empty());

    // And what it references in those packs reads back whole.
    let out = env.folder("out");
    let r = eng
        .restore_to_dir(&task, &s2, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(read_tree(&r.target) == read_tree(&src), "restore differs");
    let report = vault.verify(&[account], &|_| {}).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
}
