//! The vault's guarantees at the level a user meets them: damage that heals, damage that
//! stays local, records of bounded size, resumes of bounded cost, one dictionary per task.

use domain::{ItemPath, TenantId};
use engine::Ports;
use engine::{
    BackupEnd, BackupOptions, Engine, NoProgress, RestoreOptions, SnapshotRecord, TaskRecord,
};
use lifeboat_tests::{backup, folder_task, random_bytes, read_tree, write, TestEnv};
use ports::{catalog_keys, Catalog, Condition, EncryptionContext, ObjectStoreExt, Record};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::fake::{FakeConnectors, FakeItem, FakeSource};
use testkit::faults::{FaultPlan, FaultyStore};

async fn open_vault(env: &TestEnv, task: &TaskRecord) -> vault::Vault {
    let tenant = TenantId::new("acme").unwrap();
    let ctx = EncryptionContext::for_task(&tenant, &task.name);
    let key = env
        .ports
        .keys
        .decrypt_data_key(&task.wrapped_key, &ctx)
        .await
        .unwrap();
    vault::Vault::new(
        tenant,
        task.name.clone(),
        &key,
        env.store.clone(),
        env.catalog.clone(),
    )
}

/// Flips a byte inside the stored record of the first chunk of `path` in `snap`.
async fn damage_content(env: &TestEnv, task: &TaskRecord, snap: &SnapshotRecord, path: &[u8]) {
    let v = open_vault(env, task).await;
    let av = v.account(&snap.account);
    let entry = av
        .lookup(&snap.root(), &ItemPath::parse(path).unwrap())
        .await
        .unwrap();
    let loc = av
        .index()
        .await
        .unwrap()
        .get(&entry.content[0].id, vault::BlobKind::Data)
        .unwrap();
    let file = env
        .dir
        .path()
        .join("objects/t/acme")
        .join(task.name.as_str())
        .join(vault::PACK_KIND)
        .join(format!("{}-{}", av.tag(), loc.pack.to_hex()));
    let mut b = std::fs::read(&file).unwrap();
    b[loc.offset as usize + 20] ^= 0x20;
    std::fs::write(&file, b).unwrap();
}

/// A byte flipped in the record of a file's content, the file touched, a backup: the new
/// snapshot holds a sound copy (the writer reads back a stored copy before it reuses it
/// for content the source just gave it), and since snapshots name blobs by id, the old
/// snapshot is whole again too.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_blob_is_stored_again_when_the_file_is_read_again() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"notes/a.txt", &random_bytes(40_000, 1));
    write(&src, b"notes/b.txt", &random_bytes(30_000, 2));
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;

    damage_content(&env, &task, &s1, b"notes/a.txt").await;
    // Touched: read again, the same bytes (and no verify in between).
    env.advance(chrono::Duration::hours(1));
    let now = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(src.join("notes/a.txt"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    let s2 = backup(&eng, &task).await;
    assert_eq!(s2.stats.items_read, 1);
    assert!(s2.stats.new_blobs >= 1, "{:?}", s2.stats);

    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(
        !report
            .affected_snapshots
            .iter()
            .any(|s| s.contains(s2.id.as_str())),
        "the newest snapshot is affected: {report:?}"
    );
    assert!(report.affected_snapshots.is_empty(), "{report:?}");
    // The damaged record is still in its pack (nothing is rewritten in place) and named.
    assert!(!report.is_ok());
    for snap in [&s1, &s2] {
        let out = env.folder(&format!("out-{}", snap.id));
        let r = eng
            .restore_to_dir(&task, snap, &out, &RestoreOptions::default(), &NoProgress)
            .await
            .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(read_tree(&r.target) == read_tree(&src));
    }
}

/// A blob found damaged by `verify` and not handed over again: the next backup's tree
/// makes the connector read the file again (its entry loses its fingerprint).
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_marked_damaged_by_verify_is_read_again_without_a_touch() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"a.txt", &random_bytes(10_000, 3));
    write(&src, b"b.txt", &random_bytes(10_000, 4));
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    damage_content(&env, &task, &s1, b"b.txt").await;
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert_eq!(report.marked, 1, "{report:?}");

    env.advance(chrono::Duration::hours(1));
    let s2 = backup(&eng, &task).await;
    assert_eq!(
        s2.stats.items_read, 1,
        "only the damaged file is read again"
    );
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(report.affected_snapshots.is_empty(), "{report:?}");
}

/// One damaged snapshot record costs only itself: the others are listed, verify names
/// it, and restores of the others succeed.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_snapshot_record_costs_only_that_snapshot() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let src = env.folder("src");
    write(&src, b"a.txt", b"day one\n");
    let task = folder_task(&eng, "files", &src).await;
    let s1 = backup(&eng, &task).await;
    env.advance(chrono::Duration::days(1));
    write(&src, b"b.txt", b"day two\n");
    let s2 = backup(&eng, &task).await;
    env.advance(chrono::Duration::days(1));
    write(&src, b"c.txt", b"day three\n");
    let s3 = backup(&eng, &task).await;

    let key = catalog_keys::snapshot(eng.tenant(), &task.name, &s1.account, &s1.id);
    let mut rec = env.catalog.get(&key.pk, &key.sk).await.unwrap().unwrap();
    let n = rec.value.len();
    rec.value[n / 2] ^= 1;
    env.catalog
        .put(Record::new(key.pk, key.sk, rec.value), Condition::None)
        .await
        .unwrap();

    let listed = eng.snapshots(&task).await.unwrap();
    assert_eq!(listed, vec![s2.clone(), s3.clone()]);
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(!report.is_ok());
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.object.contains("catalog record") && d.object.contains(s1.id.as_str())),
        "{:?}",
        report.damage
    );
    assert_eq!(report.snapshots, 2);
    let out = env.folder("out");
    let r = eng
        .restore_to_dir(&task, &s2, &out, &RestoreOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(std::fs::read(r.target.join("b.txt")).unwrap(), b"day two\n");
    // Found by id and by date in a few reads.
    assert_eq!(
        eng.resolve_snapshot(&task, s3.id.as_str(), None)
            .await
            .unwrap(),
        s3
    );
    let day = s2.taken_at.format("%Y-%m-%d").to_string();
    assert_eq!(eng.resolve_snapshot(&task, &day, None).await.unwrap(), s2);
    assert!(eng
        .resolve_snapshot(&task, s1.id.as_str(), None)
        .await
        .is_err());
}

/// An engine whose object store counts its calls.
fn counting_engine(env: &TestEnv) -> (Engine, Arc<FaultPlan>) {
    let plan = FaultPlan::new(1, 0);
    let ports = Ports {
        store: Arc::new(FaultyStore {
            inner: env.store.clone(),
            plan: plan.clone(),
        }),
        ..env.ports.clone()
    };
    (Engine::new(ports, TenantId::new("acme").unwrap()), plan)
}

/// A first backup paused a thousand times (two packs each, 2,000 packs in all) resumes
/// with a bounded number of store requests, and a run whose deadline has already passed
/// pauses at once.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_after_thousands_of_packs_costs_a_bounded_number_of_requests() {
    let env = TestEnv::new();
    let (eng, plan) = counting_engine(&env);
    let source = FakeSource::new();
    source.add_account("anna");
    source.put("anna", 1, FakeItem::new("Inbox", b"the first message"));
    let connectors = FakeConnectors::new(&source);
    let task = testkit::env::fake_task(&eng, "mail", &connectors).await;
    let connector = eng.connector(&task, &connectors).await.unwrap();
    let accounts = eng
        .refresh_accounts(&task, connector.as_ref())
        .await
        .unwrap();
    let account = accounts[0].id.clone();
    eng.backup(
        &task,
        &account,
        connector.as_ref(),
        &BackupOptions::default(),
    )
    .await
    .unwrap()
    .into_snapshot()
    .unwrap();
    // A thousand and two new messages, taken in by runs that each pause after one.
    for uid in 2..=1003 {
        source.put(
            "anna",
            uid,
            FakeItem::new("Inbox", &random_bytes(2_000, uid as u64 * 2)),
        );
    }
    source.pause_every(Some(1));
    for _ in 0..1000 {
        let end = eng
            .backup(
                &task,
                &account,
                connector.as_ref(),
                &BackupOptions::default(),
            )
            .await
            .unwrap();
        assert!(matches!(end, BackupEnd::Paused { .. }), "{end:?}");
    }
    let prefix = ports::ObjectKey::kind_prefix(eng.tenant(), &task.name, vault::PACK_KIND);
    let packs_before = env.store.list_all(&prefix).await.unwrap().len();
    assert!(packs_before >= 2000, "{packs_before} packs");

    // A run that starts past its deadline: resumes, pauses at once.
    source.pause_every(None);
    let calls = plan.calls();
    let started = Instant::now();
    let end = eng
        .backup(
            &task,
            &account,
            connector.as_ref(),
            &BackupOptions {
                deadline: Some(Instant::now()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let requests = plan.calls() - calls;
    eprintln!("resume after {packs_before} packs: {requests} store requests, {took:?}");
    assert!(matches!(end, BackupEnd::Paused { .. }), "{end:?}");
    assert!(requests <= 50, "{requests} store requests");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // And the backup completes with every item.
    let snap = eng
        .backup(
            &task,
            &account,
            connector.as_ref(),
            &BackupOptions::default(),
        )
        .await
        .unwrap()
        .into_snapshot()
        .unwrap();
    assert_eq!(snap.stats.items, 1003);
    assert!(eng.verify(&task, &NoProgress).await.unwrap().is_ok());
}

/// Concurrent first backups of one task's accounts: one dictionary.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_backups_make_one_dictionary() {
    let env = TestEnv::new();
    let eng = env.engine("acme");
    let source = FakeSource::new();
    for a in 0..32 {
        let account = format!("user{a:02}");
        source.add_account(&account);
        for uid in 1..=400u32 {
            let body = format!(
                "From: someone{}@example.com\r\nTo: {account}@example.org\r\nSubject: report {uid}\r\n\r\n{}",
                uid % 13,
                "Please find attached the figures for the quarter. ".repeat(30 + (uid % 7) as usize)
            );
            source.put(&account, uid, FakeItem::new("Inbox", body.as_bytes()));
        }
    }
    let connectors = FakeConnectors::new(&source);
    let task = testkit::env::fake_task(&eng, "mail", &connectors).await;
    let connector = eng.connector(&task, &connectors).await.unwrap();
    let accounts = eng
        .refresh_accounts(&task, connector.as_ref())
        .await
        .unwrap();
    let mut runs = tokio::task::JoinSet::new();
    for a in accounts {
        let (eng, task, connector) = (eng.clone(), task.clone(), connector.clone());
        runs.spawn(async move {
            eng.backup(&task, &a.id, connector.as_ref(), &BackupOptions::default())
                .await
                .and_then(|e| e.into_snapshot())
        });
    }
    while let Some(r) = runs.join_next().await {
        r.unwrap().unwrap();
    }
    let dicts = env
        .dir
        .path()
        .join("objects/t/acme/mail")
        .join(vault::DICT_KIND);
    let mut names: Vec<String> = std::fs::read_dir(dicts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, vec!["main", "main-2"]);
    let report = eng.verify(&task, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert_eq!(report.snapshots, 32);
}
