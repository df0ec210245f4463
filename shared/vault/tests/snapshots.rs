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
        let av = v.account(&account);
        let mut w = av.writer(av.latest().await.unwrap()).await.unwrap();
        let r = w.store_batch(vec![vec![k; 10]]).await.unwrap();
        let mut e = Entry::new(b"f".to_vec(), EntryKind::File);
        e.size = 10;
        e.content = r;
        let root = w.store_tree(Node { entries: vec![e] }).await.unwrap();
        let rec = w.commit(root, taken_at, None).await.unwrap();
        let latest = av.latest().await.unwrap().unwrap();
        assert_eq!(latest.id, rec.id, "after commit {k}");
    }
}

/// What grows with the source lives beside the record, not in it: a 2 MB cursor and 200
/// errors of 4 KiB round-trip, through a checkpoint and a snapshot, and both catalog
/// records stay small.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_cursor_and_many_long_errors_round_trip_in_small_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsObjectStore::new(dir.path().join("objects")).unwrap());
    let catalog = Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).unwrap());
    let v = Vault::new(
        TenantId::new("acme").unwrap(),
        TaskId::new("mail").unwrap(),
        &[4; 32],
        store,
        catalog.clone(),
    );
    let account = AccountId::new("anna@example.com").unwrap();
    let av = v.account(&account);
    let cursor: String = (0..2_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let message = |i: usize| format!("{i:04}: {}", "the server said no. ".repeat(205));
    let path =
        |i: usize| domain::ItemPath::parse(format!("Folder {i}/item.eml").as_bytes()).unwrap();
    let taken_at = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap();

    // A paused run: 100 errors, the cursor so far.
    let mut w = av.writer(None).await.unwrap();
    for i in 0..100 {
        w.record_error(&path(i), message(i));
    }
    let root = w.store_tree(Node::default()).await.unwrap();
    w.checkpoint(
        root,
        vault::TreeTotals::default(),
        Some(cursor.clone()),
        taken_at,
        1,
    )
    .await
    .unwrap();
    let cp = av.checkpoint(None).await.unwrap().expect("a checkpoint");
    let key = ports::catalog_keys::checkpoint(v.tenant(), v.task(), &account);
    let rec = ports::Catalog::get(catalog.as_ref(), &key.pk, &key.sk)
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.value.len() < 2048,
        "checkpoint record of {} bytes",
        rec.value.len()
    );
    let meta = av.meta(&cp.meta.into()).await.unwrap();
    assert_eq!(meta.cursor.as_deref(), Some(cursor.as_str()));
    assert_eq!(meta.errors.len(), 100);

    // The resumed run carries them on, adds 100 more, and commits.
    let mut w = av.writer(None).await.unwrap();
    w.resume_errors(meta.errors, cp.error_count);
    for i in 100..200 {
        w.record_error(&path(i), message(i));
    }
    let root = w.store_tree(Node::default()).await.unwrap();
    let snap = w
        .commit(root, taken_at, Some(cursor.clone()))
        .await
        .unwrap();
    assert_eq!(snap.error_count, 200);
    let key = ports::catalog_keys::snapshot(v.tenant(), v.task(), &account, &snap.id);
    let rec = ports::Catalog::get(catalog.as_ref(), &key.pk, &key.sk)
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.value.len() < 2048,
        "snapshot record of {} bytes",
        rec.value.len()
    );
    let meta = av.meta(&snap.meta.into()).await.unwrap();
    assert_eq!(meta.cursor.as_deref(), Some(cursor.as_str()));
    assert_eq!(meta.errors.len(), 200);
    for (i, e) in meta.errors.iter().enumerate() {
        assert_eq!(e.path, path(i).to_string());
        assert_eq!(e.message, message(i), "error {i} came back changed");
        assert!(e.message.len() > 4096);
    }
}
