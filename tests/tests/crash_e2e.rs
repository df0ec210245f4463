//! A backup that dies before its commit: nothing becomes visible, the vault stays sound,
//! and the next backup reuses the packs the dead one had already uploaded.

use async_trait::async_trait;
use domain::ItemPath;
use engine::{
    AccountInfo, AccountTree, BackupOptions, Connector, NoProgress, RestoreContent, RestoreOptions,
    SourceRestore, SourceRestoreReport,
};
use lifeboat_tests::{backup, folder_task, random_bytes, read_tree, write, TestEnv};
use ports::{catalog_keys, Catalog, CatalogExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The folder connector of a process that dies in the middle of a backup: once the folder
/// has been read into the tree and `packs` packs of the run are journalled as uploaded
/// (uploads run in the background), the run ends before its commit, its writer dropped
/// with whatever was still in flight.
struct DiesBeforeCommit {
    inner: Arc<dyn Connector>,
    catalog: Arc<dyn Catalog>,
    /// The partition where the account's uploaded, uncommitted packs are journalled.
    pending: String,
    packs: usize,
}

#[async_trait]
impl Connector for DiesBeforeCommit {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        self.inner.accounts().await
    }

    async fn backup(
        &self,
        account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        self.inner.backup(account, cursor, tree).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.catalog.query_all(&self.pending, "").await?.len() < self.packs {
            assert!(Instant::now() < deadline, "no pack was uploaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(engine::Error::Invalid(
            "the process died before the commit".into(),
        ))
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        self.inner.restore(job, content).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_backup_leaves_nothing_visible_and_its_packs_are_reused() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"small.txt", b"there before\n");
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    let account = s1.account.clone();

    // A large file is added, and a backup of it dies once two packs are uploaded.
    const DATA: usize = 20 * 1024 * 1024;
    write(&src, b"big.bin", &random_bytes(DATA, 11));
    env.advance(chrono::Duration::hours(1));
    let pending = catalog_keys::pending(eng.tenant(), &task.name, &account).pk;
    let dying = DiesBeforeCommit {
        inner: eng
            .connector(&task, &connectors::BuiltIn)
            .await
            .expect("the connector opens"),
        catalog: env.catalog.clone(),
        pending: pending.clone(),
        packs: 2,
    };
    let died = eng
        .backup(&task, &account, &dying, &BackupOptions::default())
        .await;
    assert!(died.is_err(), "the dead run committed: {died:?}");
    assert!(
        env.catalog.query_all(&pending, "").await.unwrap().len() >= 2,
        "the dead run's packs are journalled"
    );

    // Nothing is visible, and verification passes (the orphan packs are sound).
    assert_eq!(
        eng.account_snapshots(&task, &account).await.unwrap(),
        vec![s1.clone()]
    );
    assert_eq!(eng.snapshots(&task).await.unwrap(), vec![s1.clone()]);
    let report = eng.verify(&task, &NoProgress).await.unwrap();
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
    assert!(env
        .catalog
        .query_all(&pending, "")
        .await
        .unwrap()
        .is_empty());
    let big = eng
        .list(&task, &s2, &ItemPath::parse(b"big.bin").unwrap())
        .await
        .unwrap();
    assert_eq!(big[0].size as usize, DATA);

    // And what it references in those packs reads back whole.
    let out = env.folder("out");
    let r = eng
        .restore_to_dir(&task, &s2, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(read_tree(&r.target) == read_tree(&src), "restore differs");
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
}
