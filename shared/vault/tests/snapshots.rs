//! Snapshot records over the embedded adapters: which one is the latest.

use domain::{AccountId, TaskId, TenantId};
use embedded::{FsObjectStore, SqliteCatalog};
use std::sync::Arc;
use vault::{Entry, EntryKind, Node, Vault};

/// `latest` takes the greatest id; ids sort by time to the millisecond, and a snapshot is
/// never given a time at or before its parent's, so even a clock that says the same instant
/// for every backup keeps `latest` the last one committed.
#[tokio::test(flavor = "multi_thread")]
async fn latest_is_the_last_committed_even_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsObjectStore::new(dir.path().join("objects")).unwrap());
    let catalog = Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).unwrap());
    let v = Vault::new(
        TenantId::new("acme").unwrap(),
        TaskId::new("files").unwrap(),
        &[3; 32],
        store,
        catalog,
    );
    let account = AccountId::new("folder").unwrap();
    let taken_at = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap();
    for k in 0..8u8 {
        let mut w = v
            .writer(account.clone(), v.latest(&account).await.unwrap())
            .await
            .unwrap();
        let r = w.store_batch(vec![vec![k; 10]]).await.unwrap();
        let mut e = Entry::new(b"f".to_vec(), EntryKind::File);
        e.size = 10;
        e.content = r;
        let root = w.store_tree(Node { entries: vec![e] }).await.unwrap();
        let rec = w.commit(root, taken_at, None).await.unwrap();
        let latest = v.latest(&account).await.unwrap().unwrap();
        assert_eq!(latest.id, rec.id, "after commit {k}");
    }
}
