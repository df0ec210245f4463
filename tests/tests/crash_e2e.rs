//! A backup that fails before its commit: nothing becomes visible, the vault stays sound,
//! and the next backup reuses what the failed one had uploaded and indexed. (Killed
//! processes are tested in `shared/lifeboat/tests/crash.rs`, with SIGKILL.)

use async_trait::async_trait;
use domain::ItemPath;
use engine::{
    AccountInfo, AccountTree, BackupOptions, Connector, NoProgress, RestoreContent, RestoreOptions,
    SourceRestore, SourceRestoreReport,
};
use lifeboat_tests::{backup, folder_task, random_bytes, read_tree, write, TestEnv};
use ports::{ObjectKey, ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The folder connector of a run that fails in the middle of a backup: once the folder has
/// been read into the tree and an index segment of the run's uploads is stored (uploads
/// run in the background), the run ends with an error before its commit, its writer
/// dropped with whatever was still in flight.
struct FailsBeforeCommit {
    inner: Arc<dyn Connector>,
    store: Arc<dyn ObjectStore>,
    /// Where the account's index segments are.
    segments: String,
    /// How many there were before the run.
    before: usize,
}

#[async_trait]
impl Connector for FailsBeforeCommit {
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
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.store.list_all(&self.segments).await?.len() <= self.before {
            assert!(Instant::now() < deadline, "no index segment was written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(engine::Error::Invalid(
            "the run failed before its commit".into(),
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
async fn a_failed_backup_leaves_nothing_visible_and_its_indexed_uploads_are_reused() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"small.txt", b"there before\n");
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    let account = s1.account.clone();

    // A large file is added, and a backup of it fails once the first of its packs is
    // durable and indexed.
    const DATA: usize = 40 * 1024 * 1024;
    write(&src, b"big.bin", &random_bytes(DATA, 11));
    env.advance(chrono::Duration::hours(1));
    let segments = ObjectKey::kind_prefix(eng.tenant(), &task.name, vault::index::SEGMENT_KIND);
    let store: Arc<dyn ObjectStore> = env.store.clone();
    let before = store.list_all(&segments).await.unwrap().len();
    let failing = FailsBeforeCommit {
        inner: eng
            .connector(&task, &connectors::BuiltIn)
            .await
            .expect("the connector opens"),
        store: store.clone(),
        segments,
        before,
    };
    let died = eng
        .backup(&task, &account, &failing, &BackupOptions::default())
        .await;
    assert!(died.is_err(), "the failed run committed: {died:?}");

    // Nothing is visible, and verification passes (the orphan packs are sound).
    assert_eq!(
        eng.account_snapshots(&task, &account).await.unwrap(),
        vec![s1.clone()]
    );
    assert_eq!(eng.snapshots(&task).await.unwrap(), vec![s1.clone()]);
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert!(
        report.packs >= 3,
        "the packs of s1 and the failed run's: {report:?}"
    );

    // The next backup stores only what the dead one had not uploaded yet.
    env.advance(chrono::Duration::hours(1));
    let s2 = backup(&eng, &task).await;
    assert_eq!(s2.error_count, 0);
    eprintln!(
        "after the failure: {} of {DATA} bytes stored again",
        s2.stats.stored_bytes
    );
    let indexed = (vault::pack::PACK_TARGET as u64) * 9 / 10;
    assert!(
        s2.stats.stored_bytes <= DATA as u64 - indexed,
        "stored {} of {DATA} bytes again, though a pack was indexed",
        s2.stats.stored_bytes
    );
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
