//! The connector contract: a source brings the previous snapshot's tree up to date from its
//! cursor, and the engine stores only what changed. Exercised with the one fake connector
//! ([`testkit::fake::FakeSource`]): a mailbox source that keeps a change log, as IMAP and
//! Graph delta do.

use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service, TaskId};
use engine::{
    AccountInfo, AccountTree, BackupEnd, BackupOptions, ChangeKind, Connector, Destination, Engine,
    Error, ErrorKind, ItemInfo, NewTask, RestoreContent, RestoreOptions, SnapshotRecord,
    SourceErrorKind, SourceRestore, SourceRestoreReport, TaskRecord,
};
use std::sync::Arc;
use testkit::env::{backup_all, fake_task, TestEnv};
use testkit::fake::{FakeConnectors, FakeItem, FakeSource};
use zeroize::Zeroizing;

const ANNA: &str = "anna@example.com";
const SECRET: &str = "correct horse battery staple";

/// A message with its read state, as a mail source reports it.
fn msg(folder: &str, body: &[u8]) -> FakeItem {
    FakeItem::new(folder, body).with_meta(&[("seen", "false")])
}

/// Opens every fake task on `src` with `secret` as the only credential it accepts.
fn with_secret(src: &Arc<FakeSource>, secret: &str) -> FakeConnectors {
    FakeConnectors {
        secret: Some(secret.to_string()),
        ..FakeConnectors::new(src)
    }
}

/// Anna's mailbox, and a task over it that signs in with a credential.
async fn setup(env: &TestEnv) -> (Engine, TaskRecord, Arc<FakeSource>, FakeConnectors) {
    let engine = env.engine("acme");
    let src = FakeSource::new();
    src.add_account(ANNA);
    src.set_account_name(ANNA, "Anna");
    let connectors = with_secret(&src, SECRET);
    let task = fake_task(&engine, "anna-mail", &connectors).await;
    (engine, task, src, connectors)
}

/// Backs up Anna's mailbox to the end.
async fn backup(engine: &Engine, task: &TaskRecord, connectors: &FakeConnectors) -> SnapshotRecord {
    let mut snaps = backup_all(engine, task, connectors).await;
    assert_eq!(snaps.len(), 1, "one account");
    snaps.remove(0)
}

fn anna() -> AccountId {
    AccountId::new(ANNA).unwrap()
}

#[tokio::test]
async fn incremental_backups_store_only_what_changed() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    for uid in 1..=40u32 {
        let folder = if uid % 2 == 0 {
            "Inbox"
        } else {
            "Archive/2026"
        };
        src.put(
            ANNA,
            uid,
            msg(
                folder,
                format!("Subject: message {uid}\r\n\r\nbody {uid}\r\n").as_bytes(),
            ),
        );
    }
    let s1 = backup(&engine, &task, &connectors).await;
    assert_eq!(s1.stats.items, 40);
    assert_eq!(s1.stats.folders, 3, "Inbox, Archive and Archive/2026");
    let meta = engine.snapshot_meta(&task, &s1).await.unwrap();
    assert_eq!(meta.cursor.as_deref(), Some("40"));
    assert_eq!(engine.account_infos(&task).await.unwrap()[0].name, "Anna");

    // Day 2: one new message, a read flag, a move, a deletion.
    env.advance(chrono::Duration::days(1));
    src.put(ANNA, 41, msg("Inbox", b"Subject: new\r\n\r\nhello\r\n"));
    src.set_meta(ANNA, 2, &[("seen", "true")]);
    src.move_item(ANNA, 4, "Archive/2026");
    src.delete(ANNA, 6);
    let fetches_before = src.fetched();
    let s2 = backup(&engine, &task, &connectors).await;
    assert_eq!(
        src.fetched() - fetches_before,
        1,
        "only the new message is fetched"
    );
    assert_eq!(
        src.backups().last(),
        Some(&(anna(), Some("40".to_string()))),
        "day 2 starts from day 1's cursor"
    );
    assert_eq!(s2.stats.items, 40);
    assert_eq!(s2.stats.items_read, 1);
    assert_eq!(s2.parent.as_ref(), Some(&s1.id));
    // The new message, the three changed folder nodes (Inbox, Archive/2026, Archive) plus
    // the root, and the side data with the new cursor: nothing else is written.
    assert_eq!(s2.stats.new_blobs, 1 + 4 + 1, "{:?}", s2.stats);

    let mut changes: Vec<_> = engine
        .diff(&task, &s1, &s2)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.path))
        .collect();
    changes.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        changes,
        vec![
            (ChangeKind::Added, "Archive/2026/4.eml".to_string()),
            (ChangeKind::Changed, "Inbox/2.eml".to_string()),
            (ChangeKind::Removed, "Inbox/4.eml".to_string()),
            (ChangeKind::Added, "Inbox/41.eml".to_string()),
            (ChangeKind::Removed, "Inbox/6.eml".to_string()),
        ]
    );
    let inbox = engine
        .list(&task, &s2, &ItemPath::parse(b"Inbox").unwrap())
        .await
        .unwrap();
    let two = inbox.iter().find(|e| e.name == b"2.eml").unwrap();
    assert_eq!(two.meta, vec![("seen".to_string(), "true".to_string())]);

    // A quiet day: nothing changes, nothing is written but the snapshot record.
    env.advance(chrono::Duration::days(1));
    let s3 = backup(&engine, &task, &connectors).await;
    assert_eq!(s3.stats.new_blobs, 0);
    assert_eq!(s3.root, s2.root);
}

#[tokio::test]
async fn a_forgotten_cursor_resyncs_without_storing_twice() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    for uid in 1..=20u32 {
        src.put(ANNA, uid, msg("Inbox", format!("message {uid}").as_bytes()));
    }
    let s1 = backup(&engine, &task, &connectors).await;
    src.delete(ANNA, 3);
    src.forget_cursors(ANNA);
    env.advance(chrono::Duration::days(1));
    let s2 = backup(&engine, &task, &connectors).await;
    assert_eq!(s2.stats.items, 19);
    assert_eq!(
        s2.stats.items_read, 19,
        "a full enumeration fetches everything"
    );
    assert_eq!(
        s2.stats.new_blobs, 3,
        "but stores only the changed Inbox and root nodes, and the side data with its new cursor"
    );
    let changes = engine.diff(&task, &s1, &s2).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, "Inbox/3.eml");
}

#[tokio::test]
async fn item_errors_are_reported_and_run_errors_leave_nothing_visible() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    for uid in 1..=10u32 {
        src.put(ANNA, uid, msg("Inbox", format!("message {uid}").as_bytes()));
    }
    src.break_item(ANNA, 7, true);
    let s1 = backup(&engine, &task, &connectors).await;
    assert_eq!(s1.stats.items, 9);
    assert_eq!(s1.error_count, 1);
    let errors = engine.snapshot_errors(&task, &s1).await.unwrap();
    assert_eq!(errors[0].path, "Inbox/7.eml");

    // The connection drops halfway through the next run: the run fails, no snapshot appears,
    // and the rerun completes from the same cursor.
    for uid in 11..=20u32 {
        src.put(ANNA, uid, msg("Inbox", format!("message {uid}").as_bytes()));
    }
    src.fail_after(Some(5));
    let connector = engine.connector(&task, &connectors).await.unwrap();
    let accounts = engine
        .refresh_accounts(&task, connector.as_ref())
        .await
        .unwrap();
    let err = engine
        .backup(
            &task,
            &accounts[0].id,
            connector.as_ref(),
            &BackupOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(engine.snapshots(&task).await.unwrap().len(), 1);
    src.fail_after(None);
    let s2 = backup(&engine, &task, &connectors).await;
    assert_eq!(s2.stats.items, 19);
    assert_eq!(s2.parent.as_ref(), Some(&s1.id));
    let cursors: Vec<_> = src.backups().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        cursors,
        [None, Some("10".to_string()), Some("10".to_string())],
        "the rerun starts from the cursor the failed run started from"
    );
}

/// The account tree's own rules, which no source can break: exercised by a connector
/// that tries (the fake only puts well-formed mail, so it cannot ask for these).
#[tokio::test]
async fn the_tree_refuses_what_cannot_be() {
    let env = TestEnv::new();
    let (engine, task, _, _) = setup(&env).await;

    struct Odd;
    #[async_trait]
    impl Connector for Odd {
        async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
            Ok(vec![AccountInfo {
                id: anna(),
                name: "Anna".into(),
                services: vec![Service::Mail],
            }])
        }
        async fn backup(
            &self,
            _: &AccountInfo,
            _: Option<&str>,
            tree: &mut AccountTree,
        ) -> engine::Result<Option<String>> {
            let p = |s: &str| ItemPath::parse(s.as_bytes()).unwrap();
            tree.put_item(&p("a/b"), ItemInfo::default(), Bytes::from_static(b"x"))
                .await?;
            assert!(tree
                .put_item(&p("a/b/c"), ItemInfo::default(), Bytes::new())
                .await
                .is_err());
            assert!(tree.ensure_folder(&p("a/b/c")).await.is_err());
            assert!(tree
                .put_item(&p("a"), ItemInfo::default(), Bytes::new())
                .await
                .is_err());
            assert!(tree.rename(&p("a"), &p("a/d")).await.is_err());
            assert!(tree.rename(&p("nope"), &p("x")).await.is_err());
            assert!(tree.update_item(&p("a/b"), |e| e.size = 99).await.is_err());
            assert!(!tree.update_item(&p("a/zz"), |_| {}).await.unwrap());
            // A large item is chunked; a source that sends fewer bytes than it announced
            // keeps nothing of it.
            let big = vec![7u8; 9 << 20];
            tree.put_item_stream(
                &p("big.bin"),
                ItemInfo::default(),
                std::io::Cursor::new(big.clone()),
                big.len() as u64,
            )
            .await?;
            tree.put_item_stream(
                &p("short.bin"),
                ItemInfo::default(),
                std::io::Cursor::new(vec![1u8; 10]),
                11,
            )
            .await?;
            assert!(tree.item(&p("short.bin")).await?.is_none());
            // Moving a folder keeps what is in it, pending content included.
            tree.rename(&p("a"), &p("e")).await?;
            assert!(tree.item(&p("e/b")).await?.is_some());
            Ok(None)
        }
        async fn restore(
            &self,
            _: &SourceRestore,
            _: &RestoreContent,
        ) -> engine::Result<SourceRestoreReport> {
            unreachable!()
        }
    }
    let accounts = engine.refresh_accounts(&task, &Odd).await.unwrap();
    let s = engine
        .backup(&task, &accounts[0].id, &Odd, &BackupOptions::default())
        .await
        .and_then(BackupEnd::into_snapshot)
        .unwrap();
    assert_eq!(s.stats.items, 2);
    assert_eq!(s.error_count, 1);
    let errors = engine.snapshot_errors(&task, &s).await.unwrap();
    assert!(
        errors[0].message.contains("10 bytes of an item of 11"),
        "{errors:?}",
    );
    let e = engine
        .list(&task, &s, &ItemPath::parse(b"e").unwrap())
        .await
        .unwrap();
    assert_eq!(e.len(), 1);
    let big = engine.list(&task, &s, &ItemPath::root()).await.unwrap();
    let big = big.iter().find(|e| e.name == b"big.bin").unwrap();
    assert!(big.content.len() > 1, "a large item is chunked");
}

#[tokio::test]
async fn restores_hand_the_connector_a_labelled_selection() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    src.put(ANNA, 1, msg("Inbox", b"one"));
    src.put(ANNA, 2, msg("Inbox/Sub", b"two"));
    src.put(ANNA, 3, msg("Sent", b"three"));
    let s = backup(&engine, &task, &connectors).await;

    let opts = RestoreOptions {
        include: vec![
            ItemPath::parse(b"Inbox/Sub/2.eml").unwrap(),
            ItemPath::parse(b"Sent").unwrap(),
        ],
        ..Default::default()
    };
    let report = engine
        .restore(&task, &s, &Destination::default(), &opts, &connectors)
        .await
        .unwrap();
    assert!(
        report.target.starts_with("Lifeboat Restore 2026-11-25"),
        "{}",
        report.target
    );
    assert_eq!((report.items, report.folders, report.bytes), (2, 3, 8));
    let restored = src.restored();
    let paths: Vec<_> = restored
        .iter()
        .map(|r| r.path.split_once('/').unwrap().1.to_string())
        .collect();
    assert_eq!(paths, ["Inbox/Sub/2.eml", "Sent/3.eml"]);
    assert!(restored
        .iter()
        .all(|r| r.account == anna() && r.path.starts_with(&report.target)));
    assert_eq!(restored[0].body, b"two");
    assert_eq!(
        restored[0].meta,
        vec![("seen".to_string(), "false".to_string())]
    );

    let missing = RestoreOptions {
        include: vec![ItemPath::parse(b"Inbox/404.eml").unwrap()],
        ..Default::default()
    };
    let err = engine
        .restore(&task, &s, &Destination::default(), &missing, &connectors)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    assert_eq!(src.restored().len(), 2, "nothing more was restored");
}

#[tokio::test]
async fn credentials_are_sealed_and_replaceable() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    let raw = serde_json::to_string(&task).unwrap();
    assert!(
        !raw.contains("battery"),
        "the task record holds the credential in clear: {raw}"
    );
    // The catalog's bytes on disk: the database and its write-ahead log, where SQLite keeps
    // recent writes until a checkpoint. The task's name is there: the scan sees the record.
    let mut db = Vec::new();
    for file in ["catalog.db", "catalog.db-wal"] {
        match std::fs::read(env.dir.path().join(file)) {
            Ok(bytes) => db.extend(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{file}: {e}"),
        }
    }
    assert!(
        db.windows(b"anna-mail".len()).any(|w| w == b"anna-mail"),
        "the task record is not in the catalog's files"
    );
    assert!(!db.windows(7).any(|w| w == b"battery"));
    // The connector is opened with the credential unsealed, exactly.
    engine.connector(&task, &connectors).await.unwrap();
    assert_eq!(src.credentials().last(), Some(&Some(SECRET.to_string())));

    let new_secret = Zeroizing::new("new secret".to_string());
    // A credential the source refuses is not stored.
    let err = engine
        .replace_secret("anna-mail", &new_secret, &connectors)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Source(SourceErrorKind::Auth),
        "{err}"
    );
    assert_eq!(engine.task("anna-mail").await.unwrap(), task);
    let renewed = with_secret(&src, "new secret");
    let task = engine
        .replace_secret("anna-mail", &new_secret, &renewed)
        .await
        .unwrap();
    let stored = engine.task("anna-mail").await.unwrap();
    assert_eq!(stored, task);
    engine.connector(&stored, &renewed).await.unwrap();
    assert_eq!(
        src.credentials().last(),
        Some(&Some("new secret".to_string()))
    );
    let err = engine.connector(&stored, &connectors).await.err().unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::Source(SourceErrorKind::Auth),
        "{err}"
    );

    // A sealed credential moved to another task does not open.
    let open = FakeConnectors::new(&src);
    let other = fake_task(&engine, "other", &open).await;
    engine.connector(&other, &open).await.unwrap();
    assert_eq!(src.credentials().last(), Some(&None), "other has none");
    let mut moved = other.clone();
    moved.source = stored.source.clone();
    let opened = src.credentials().len();
    assert!(engine.connector(&moved, &open).await.is_err());
    assert_eq!(src.credentials().len(), opened, "nothing was unsealed");

    // A folder task has none.
    let files = env.folder("files");
    let err = engine
        .add_task(
            NewTask {
                name: TaskId::new("f").unwrap(),
                source: folder::FolderSettings::new(&files).unwrap().to_source(),
                secret: Some(Zeroizing::new("x".to_string())),
                backup_hour: None,
            },
            &connectors::BuiltIn,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(engine
        .replace_secret("nope", &Zeroizing::new("x".to_string()), &renewed)
        .await
        .is_err());
}

#[tokio::test]
async fn a_run_out_of_time_pauses_and_the_next_run_goes_on() {
    let env = TestEnv::new();
    let (engine, task, src, connectors) = setup(&env).await;
    src.put(ANNA, 1, msg("Inbox", b"first"));
    let s1 = backup(&engine, &task, &connectors).await;
    for uid in 2..=5u32 {
        src.put(ANNA, uid, msg("Inbox", format!("message {uid}").as_bytes()));
    }
    env.advance(chrono::Duration::hours(1));
    let started = env.now() + chrono::Duration::minutes(15);
    let connector = engine.connector(&task, &connectors).await.unwrap();
    let account = engine
        .refresh_accounts(&task, connector.as_ref())
        .await
        .unwrap()
        .remove(0)
        .id;
    // Every run's time is already up: each applies one change, then pauses.
    let out_of_time = || BackupOptions {
        deadline: Some(std::time::Instant::now()),
        ..BackupOptions::default()
    };
    let mut runs = 0;
    let snap = loop {
        runs += 1;
        env.advance(chrono::Duration::minutes(15));
        let end = engine
            .backup(&task, &account, connector.as_ref(), &out_of_time())
            .await
            .unwrap();
        match end {
            BackupEnd::Paused {
                items_this_run,
                pauses,
            } => {
                assert_eq!((items_this_run, pauses), (1, runs));
                // Nothing of a paused run is visible.
                assert_eq!(engine.snapshots(&task).await.unwrap().len(), 1);
            }
            BackupEnd::Committed(s) => break *s,
        }
    };
    assert_eq!(runs, 4);
    assert_eq!(snap.stats.items, 5);
    assert_eq!(snap.parent.as_ref(), Some(&s1.id));
    assert_eq!(
        snap.taken_at, started,
        "the snapshot carries the first run's start"
    );
    let meta = engine.snapshot_meta(&task, &snap).await.unwrap();
    assert_eq!(meta.cursor.as_deref(), Some("5"));
    assert_eq!(src.fetched(), 1 + 4, "each message fetched once");
    let changes = engine.diff(&task, &s1, &snap).await.unwrap();
    assert_eq!(changes.len(), 4);

    // A checkpoint left behind by a run whose account was then backed up another way is
    // stale and ignored.
    src.put(ANNA, 6, msg("Inbox", b"six"));
    src.put(ANNA, 7, msg("Inbox", b"seven"));
    let end = engine
        .backup(&task, &account, connector.as_ref(), &out_of_time())
        .await
        .unwrap();
    assert!(matches!(end, BackupEnd::Paused { .. }));
    let full = backup(&engine, &task, &connectors).await;
    assert_eq!(full.stats.items, 7);
    src.put(ANNA, 8, msg("Inbox", b"eight"));
    let next = backup(&engine, &task, &connectors).await;
    assert_eq!(next.stats.items, 8);
    assert_eq!(next.parent.as_ref(), Some(&full.id));
}
