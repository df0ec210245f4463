//! The connector contract: a source brings the previous snapshot's tree up to date from its
//! cursor, and the engine stores only what changed. Exercised with a small in-process
//! mailbox source that keeps a change log, as IMAP and Graph delta do.

use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service, TaskId};
use engine::{
    AccountInfo, AccountTree, ChangeKind, Connector, Error, ItemInfo, NoProgress, RestoreContent,
    RestoreOptions, SourceConfig, SourceErrorKind, SourceRestore, SourceRestoreReport,
};
use lifeboat_tests::Env;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Clone, Debug)]
struct Msg {
    folder: String,
    body: Vec<u8>,
    seen: bool,
}

#[derive(Clone, Debug)]
enum Change {
    Put(u32),
    Flags(u32),
    Moved(u32, String),
    Gone(u32, String),
}

/// A mailbox with a change log; the cursor is the log position. A cursor older than
/// `forget_before` is refused, as an expired delta token is.
#[derive(Default)]
struct Mailbox {
    msgs: BTreeMap<u32, Msg>,
    log: Vec<Change>,
    forget_before: usize,
    /// Messages whose fetch fails (a corrupt item at the source).
    broken: Vec<u32>,
    /// Fail the whole run after this many fetches (a dropped connection).
    fail_after: Option<usize>,
    fetches: usize,
    restored: Vec<Restored>,
}

/// A restored message: where it went, its bytes and its metadata.
type Restored = (String, Vec<u8>, Vec<(String, String)>);

struct MemSource(Mutex<Mailbox>);

fn item_path(folder: &str, uid: u32) -> ItemPath {
    ItemPath::parse(format!("{folder}/{uid}.eml").as_bytes()).unwrap()
}

fn info(m: &Msg) -> ItemInfo {
    ItemInfo {
        mtime_ns: 0,
        fingerprint: 0,
        meta: vec![("seen".into(), m.seen.to_string())],
    }
}

impl MemSource {
    fn new() -> Self {
        MemSource(Mutex::new(Mailbox::default()))
    }
    fn with<T>(&self, f: impl FnOnce(&mut Mailbox) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
    fn deliver(&self, uid: u32, folder: &str, body: &[u8]) {
        self.with(|m| {
            m.msgs.insert(
                uid,
                Msg {
                    folder: folder.into(),
                    body: body.to_vec(),
                    seen: false,
                },
            );
            m.log.push(Change::Put(uid));
        })
    }
    fn fetch(&self, uid: u32) -> Result<Option<Msg>, Error> {
        self.with(|m| {
            m.fetches += 1;
            if m.fail_after.is_some_and(|n| m.fetches > n) {
                return Err(Error::source(
                    SourceErrorKind::Unavailable,
                    "the server closed the connection",
                ));
            }
            if m.broken.contains(&uid) {
                return Ok(None);
            }
            Ok(m.msgs.get(&uid).cloned())
        })
    }
}

#[async_trait]
impl Connector for MemSource {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Ok(vec![AccountInfo {
            id: AccountId::new("anna@example.com")?,
            name: "Anna".into(),
            services: vec![Service::Mail],
        }])
    }

    async fn backup(
        &self,
        _account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let (log, forget) = self.with(|m| (m.log.clone(), m.forget_before));
        let from = cursor.and_then(|c| c.parse::<usize>().ok());
        match from {
            Some(pos) if pos >= forget => {
                for ch in &log[pos..] {
                    match ch {
                        Change::Put(uid) => {
                            let Some(msg) = self.fetch(*uid)? else {
                                continue;
                            };
                            tree.put_item(
                                &item_path(&msg.folder, *uid),
                                info(&msg),
                                Bytes::from(msg.body.clone()),
                            )
                            .await?;
                        }
                        Change::Flags(uid) => {
                            let msg = self.with(|m| m.msgs[uid].clone());
                            let seen = msg.seen.to_string();
                            tree.update_item(&item_path(&msg.folder, *uid), |e| {
                                e.meta = vec![("seen".into(), seen)]
                            })?;
                        }
                        Change::Moved(uid, from) => {
                            let to = self.with(|m| m.msgs[uid].folder.clone());
                            tree.rename(&item_path(from, *uid), &item_path(&to, *uid))
                                .await?;
                        }
                        Change::Gone(uid, folder) => {
                            tree.remove(&item_path(folder, *uid)).await?;
                        }
                    }
                }
            }
            // First backup, or a cursor the source forgot: enumerate everything against the
            // same tree; content already stored is not stored again.
            _ => {
                let all = self.with(|m| m.msgs.clone());
                for f in tree.folder_paths() {
                    for e in tree.items(&f).map(|e| e.name.clone()).collect::<Vec<_>>() {
                        let uid: u32 = std::str::from_utf8(&e)
                            .unwrap()
                            .trim_end_matches(".eml")
                            .parse()
                            .unwrap();
                        if all.get(&uid).is_none_or(|m| f.to_string() != m.folder) {
                            tree.remove(&f.join(&e)?).await?;
                        }
                    }
                }
                for (uid, _) in all {
                    let path = item_path(&self.with(|m| m.msgs[&uid].folder.clone()), uid);
                    match self.fetch(uid)? {
                        Some(msg) => {
                            tree.put_item(&path, info(&msg), Bytes::from(msg.body.clone()))
                                .await?
                        }
                        None => tree.record_error(&path, "the server could not read this message"),
                    }
                }
            }
        }
        Ok(Some(log.len().to_string()))
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        let mut report = SourceRestoreReport {
            target: job.label.clone().unwrap_or_default(),
            ..Default::default()
        };
        for (path, entry) in &job.items {
            if entry.kind == vault::EntryKind::Dir {
                report.folders += 1;
                continue;
            }
            let body = content.read(entry).await?;
            report.items += 1;
            report.bytes += body.len() as u64;
            let dest = format!("{}/{}", report.target, path);
            self.with(|m| m.restored.push((dest, body, entry.meta.clone())));
        }
        Ok(report)
    }
}

async fn setup(env: &Env) -> (engine::Engine, engine::TaskRecord) {
    let engine = env.engine("acme");
    let task = engine
        .add_task_with_secret(
            TaskId::new("anna-mail").unwrap(),
            SourceConfig::source("memory", serde_json::json!({"host": "mail.example.com"})),
            Some("correct horse battery staple"),
        )
        .await
        .unwrap();
    (engine, task)
}

async fn backup(
    engine: &engine::Engine,
    task: &engine::TaskRecord,
    src: &MemSource,
) -> vault::SnapshotRecord {
    let accounts = engine.refresh_accounts(task, src).await.unwrap();
    engine
        .backup_source(task, &accounts[0], src, &NoProgress)
        .await
        .unwrap()
}

#[tokio::test]
async fn incremental_backups_store_only_what_changed() {
    let env = Env::new();
    let (engine, task) = setup(&env).await;
    let src = MemSource::new();
    for uid in 1..=40u32 {
        let folder = if uid % 2 == 0 {
            "Inbox"
        } else {
            "Archive/2026"
        };
        src.deliver(
            uid,
            folder,
            format!("Subject: message {uid}\r\n\r\nbody {uid}\r\n").as_bytes(),
        );
    }
    let s1 = backup(&engine, &task, &src).await;
    assert_eq!(s1.stats.items, 40);
    assert_eq!(s1.stats.folders, 3, "Inbox, Archive and Archive/2026");
    assert_eq!(s1.cursor.as_deref(), Some("40"));
    assert_eq!(engine.account_infos(&task).await.unwrap()[0].name, "Anna");

    // Day 2: one new message, a read flag, a move, a deletion.
    env.advance(chrono::Duration::days(1));
    src.deliver(41, "Inbox", b"Subject: new\r\n\r\nhello\r\n");
    src.with(|m| {
        m.msgs.get_mut(&2).unwrap().seen = true;
        m.log.push(Change::Flags(2));
        m.msgs.get_mut(&4).unwrap().folder = "Archive/2026".into();
        m.log.push(Change::Moved(4, "Inbox".into()));
        m.msgs.remove(&6);
        m.log.push(Change::Gone(6, "Inbox".into()));
    });
    let fetches_before = src.with(|m| m.fetches);
    let s2 = backup(&engine, &task, &src).await;
    assert_eq!(
        src.with(|m| m.fetches) - fetches_before,
        1,
        "only the new message is fetched"
    );
    assert_eq!(s2.stats.items, 40);
    assert_eq!(s2.stats.items_read, 1);
    assert_eq!(s2.parent.as_ref(), Some(&s1.id));
    // The new message, and the three changed folder nodes (Inbox, Archive/2026, Archive)
    // plus the root: nothing else is written.
    assert_eq!(s2.stats.new_blobs, 1 + 4, "{:?}", s2.stats);

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
    let s3 = backup(&engine, &task, &src).await;
    assert_eq!(s3.stats.new_blobs, 0);
    assert_eq!(s3.root, s2.root);
}

#[tokio::test]
async fn a_forgotten_cursor_resyncs_without_storing_twice() {
    let env = Env::new();
    let (engine, task) = setup(&env).await;
    let src = MemSource::new();
    for uid in 1..=20u32 {
        src.deliver(uid, "Inbox", format!("message {uid}").as_bytes());
    }
    let s1 = backup(&engine, &task, &src).await;
    src.with(|m| {
        m.msgs.remove(&3);
        m.log.push(Change::Gone(3, "Inbox".into()));
        m.forget_before = m.log.len();
    });
    env.advance(chrono::Duration::days(1));
    let s2 = backup(&engine, &task, &src).await;
    assert_eq!(s2.stats.items, 19);
    assert_eq!(
        s2.stats.items_read, 19,
        "a full enumeration fetches everything"
    );
    assert_eq!(
        s2.stats.new_blobs, 2,
        "but stores only the changed Inbox and root nodes"
    );
    let changes = engine.diff(&task, &s1, &s2).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, "Inbox/3.eml");
}

#[tokio::test]
async fn item_errors_are_reported_and_run_errors_leave_nothing_visible() {
    let env = Env::new();
    let (engine, task) = setup(&env).await;
    let src = MemSource::new();
    for uid in 1..=10u32 {
        src.deliver(uid, "Inbox", format!("message {uid}").as_bytes());
    }
    src.with(|m| m.broken = vec![7]);
    let s1 = backup(&engine, &task, &src).await;
    assert_eq!(s1.stats.items, 9);
    assert_eq!(s1.error_count, 1);
    assert_eq!(s1.errors[0].path, "Inbox/7.eml");

    // The connection drops halfway through the next run: the run fails, no snapshot appears,
    // and the rerun completes from the same cursor.
    for uid in 11..=20u32 {
        src.deliver(uid, "Inbox", format!("message {uid}").as_bytes());
    }
    src.with(|m| m.fail_after = Some(m.fetches + 5));
    let accounts = engine.refresh_accounts(&task, &src).await.unwrap();
    let err = engine
        .backup_source(&task, &accounts[0], &src, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(engine.snapshots(&task).await.unwrap().len(), 1);
    src.with(|m| m.fail_after = None);
    let s2 = backup(&engine, &task, &src).await;
    assert_eq!(s2.stats.items, 19);
    assert_eq!(s2.parent.as_ref(), Some(&s1.id));
}

#[tokio::test]
async fn the_tree_refuses_what_cannot_be() {
    let env = Env::new();
    let (engine, task) = setup(&env).await;

    struct Odd;
    #[async_trait]
    impl Connector for Odd {
        async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
            MemSource::new().accounts().await
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
            assert!(tree.ensure_folder(&p("a/b/c")).is_err());
            assert!(tree
                .put_item(&p("a"), ItemInfo::default(), Bytes::new())
                .await
                .is_err());
            assert!(tree.rename(&p("a"), &p("a/d")).await.is_err());
            assert!(tree.rename(&p("nope"), &p("x")).await.is_err());
            assert!(tree.update_item(&p("a/b"), |e| e.size = 99).is_err());
            assert!(!tree.update_item(&p("a/zz"), |_| {}).unwrap());
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
            assert!(tree.item(&p("short.bin")).is_none());
            // Moving a folder keeps what is in it, pending content included.
            tree.rename(&p("a"), &p("e")).await?;
            assert!(tree.item(&p("e/b")).is_some());
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
        .backup_source(&task, &accounts[0], &Odd, &NoProgress)
        .await
        .unwrap();
    assert_eq!(s.stats.items, 2);
    assert_eq!(s.error_count, 1);
    assert!(
        s.errors[0].message.contains("10 bytes of an item of 11"),
        "{:?}",
        s.errors
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
    let env = Env::new();
    let (engine, task) = setup(&env).await;
    let src = MemSource::new();
    src.deliver(1, "Inbox", b"one");
    src.deliver(2, "Inbox/Sub", b"two");
    src.deliver(3, "Sent", b"three");
    let s = backup(&engine, &task, &src).await;

    let opts = RestoreOptions {
        include: vec![
            ItemPath::parse(b"Inbox/Sub/2.eml").unwrap(),
            ItemPath::parse(b"Sent").unwrap(),
        ],
        ..Default::default()
    };
    let report = engine
        .restore_to_source(&task, &s, None, &opts, &src)
        .await
        .unwrap();
    assert!(
        report.target.starts_with("Lifeboat Restore 2026-11-25"),
        "{}",
        report.target
    );
    assert_eq!((report.items, report.folders, report.bytes), (2, 3, 8));
    let restored = src.with(|m| m.restored.clone());
    let paths: Vec<_> = restored
        .iter()
        .map(|r| r.0.split_once('/').unwrap().1.to_string())
        .collect();
    assert_eq!(paths, ["Inbox/Sub/2.eml", "Sent/3.eml"]);
    assert_eq!(restored[0].1, b"two");
    assert_eq!(
        restored[0].2,
        vec![("seen".to_string(), "false".to_string())]
    );

    let missing = RestoreOptions {
        include: vec![ItemPath::parse(b"Inbox/404.eml").unwrap()],
        ..Default::default()
    };
    let err = engine
        .restore_to_source(&task, &s, None, &missing, &src)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[tokio::test]
async fn credentials_are_sealed_and_replaceable() {
    let env = Env::new();
    let (engine, task) = setup(&env).await;
    let raw = serde_json::to_string(&task).unwrap();
    assert!(
        !raw.contains("battery"),
        "the task record holds the credential in clear: {raw}"
    );
    let db = std::fs::read(env.dir.path().join("catalog.db")).unwrap();
    assert!(!db.windows(7).any(|w| w == b"battery"));
    assert_eq!(
        engine.task_secret(&task).await.unwrap().unwrap().as_str(),
        "correct horse battery staple"
    );
    let task = engine
        .replace_secret("anna-mail", "new secret")
        .await
        .unwrap();
    let stored = engine.task("anna-mail").await.unwrap();
    assert_eq!(stored, task);
    assert_eq!(
        engine.task_secret(&stored).await.unwrap().unwrap().as_str(),
        "new secret"
    );

    // A sealed credential moved to another task does not open.
    let other = engine
        .add_task(
            TaskId::new("other").unwrap(),
            SourceConfig::source("memory", serde_json::json!({})),
        )
        .await
        .unwrap();
    assert!(engine.task_secret(&other).await.unwrap().is_none());
    let mut moved = other.clone();
    moved.source = stored.source.clone();
    assert!(engine.task_secret(&moved).await.is_err());

    // A files task has none.
    let files = env.folder("files");
    let err = engine
        .add_task_with_secret(
            TaskId::new("f").unwrap(),
            SourceConfig::Files { path: files },
            Some("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)));
    assert!(engine.replace_secret("nope", "x").await.is_err());
}
