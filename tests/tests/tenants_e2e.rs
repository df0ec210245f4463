//! Tenants on one installation: each sees only its own tasks and snapshots, cannot open
//! another's data, and deleting one removes every object and record it had and nothing of
//! anyone else's.

use domain::{ItemPath, TenantId};
use engine::{NoProgress, RestoreOptions, TaskRecord};
use lifeboat_tests::{backup, folder_task, read_tree, write, TestEnv};
use ports::{catalog_keys, EncryptionContext, KeyService, ObjectStoreExt};
use std::collections::HashSet;
use std::path::Path;

fn names(tasks: &[engine::TaskRecord]) -> Vec<String> {
    let mut v: Vec<String> = tasks.iter().map(|t| t.name.to_string()).collect();
    v.sort();
    v
}

/// Catalog records whose partition belongs to `tenant`, read from the SQLite file itself
/// (the catalog port cannot list partitions).
fn catalog_rows(db: &Path, tenant: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    let own = catalog_keys::tenant_directory(&TenantId::new(tenant).unwrap()).pk;
    // The tenant's other partitions (snapshots, pending packs) extend its directory's.
    let below = format!("{own}#");
    conn.query_row(
        "SELECT count(*) FROM records WHERE pk = ?1 OR substr(pk, 1, length(?2)) = ?2",
        rusqlite::params![own, below],
        |r| r.get(0),
    )
    .unwrap()
}

/// A task's vault opened directly with its data key, unwrapped now: what a process that
/// held the key in memory could still read, whatever the engine allows later.
async fn open_vault(env: &TestEnv, tenant: &str, task: &TaskRecord) -> ports::Result<vault::Vault> {
    let tenant = TenantId::new(tenant).unwrap();
    let ctx = EncryptionContext::for_task(&tenant, &task.name);
    let key = env.keys.decrypt_data_key(&task.wrapped_key, &ctx).await?;
    Ok(vault::Vault::new(
        tenant,
        task.name.clone(),
        &key,
        env.store.clone(),
        env.catalog.clone(),
    ))
}

/// Regular files (objects and temp files alike) under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_do_not_see_each_others_tasks_or_snapshots() {
    let env = TestEnv::new();
    let (acme, globex) = (env.engine("acme"), env.engine("globex"));
    let (a_src, g_src) = (env.folder("a"), env.folder("g"));
    write(&a_src, b"plans.txt", b"acme's plans\n");
    write(&g_src, b"plans.txt", b"globex's plans\n");

    // The same task name in two tenants is two tasks.
    let a_task = folder_task(&acme, "files", &a_src).await;
    let g_task = folder_task(&globex, "files", &g_src).await;
    folder_task(&acme, "only-acme", &a_src).await;
    assert_eq!(names(&acme.tasks().await.unwrap()), ["files", "only-acme"]);
    assert_eq!(names(&globex.tasks().await.unwrap()), ["files"]);
    assert!(matches!(
        globex.task("only-acme").await,
        Err(engine::Error::NotFound(_))
    ));
    assert_eq!(globex.task("files").await.unwrap(), g_task);

    let a_snap = backup(&acme, &a_task).await;
    let g_snap = backup(&globex, &g_task).await;
    assert_eq!(acme.snapshots(&a_task).await.unwrap(), vec![a_snap.clone()]);
    assert_eq!(
        globex.snapshots(&g_task).await.unwrap(),
        vec![g_snap.clone()]
    );

    // Another tenant's task record does not unlock its data key.
    let e = globex
        .snapshots(&a_task)
        .await
        .expect_err("globex opened acme's vault");
    assert!(
        matches!(&e, engine::Error::Port(p) if p.kind() == ports::ErrorKind::Integrity),
        "{e}"
    );
    assert!(globex
        .latest_snapshot(&a_task, &a_snap.account)
        .await
        .is_err());

    // Another tenant's snapshot record names nothing in this tenant's vault.
    let out = env.folder("out");
    let cross = globex
        .restore_to_dir(
            &g_task,
            &a_snap,
            &out,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await;
    assert!(cross.is_err(), "globex restored acme's snapshot");

    // Each restores its own data.
    env.advance(chrono::Duration::seconds(1));
    for (eng, task, snap, src) in [
        (&acme, &a_task, &a_snap, &a_src),
        (&globex, &g_task, &g_snap, &g_src),
    ] {
        env.advance(chrono::Duration::seconds(1));
        let r = eng
            .restore_to_dir(task, snap, &out, &RestoreOptions::default(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(read_tree(&r.target), read_tree(src));
    }

    // Every object lies under its tenant's prefix (each has at least a data and a tree pack).
    let all = env.store.list_all("t/").await.unwrap().len();
    let mut own = 0;
    for tenant in ["acme", "globex"] {
        let prefix = ports::ObjectKey::tenant_prefix(&TenantId::new(tenant).unwrap());
        let keys = env.store.list_all(&prefix).await.unwrap();
        assert!(keys.len() >= 2, "{tenant}: {keys:?}");
        own += keys.len();
    }
    assert_eq!(own, all);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_tenant_removes_all_its_objects_and_records_and_only_those() {
    let env = TestEnv::new();
    let (acme, globex) = (env.engine("acme"), env.engine("globex"));
    let (a_src, g_src) = (env.folder("a"), env.folder("g"));
    write(&a_src, b"doc.txt", b"acme\n");
    write(
        &a_src,
        b"big.bin",
        &lifeboat_tests::random_bytes(3_000_000, 3),
    );
    write(&g_src, b"doc.txt", b"globex\n");
    let a_task = folder_task(&acme, "files", &a_src).await;
    let a_other = folder_task(&acme, "second", &g_src).await;
    let g_task = folder_task(&globex, "files", &g_src).await;
    let a_snap = backup(&acme, &a_task).await;
    env.advance(chrono::Duration::days(1));
    write(&a_src, b"doc.txt", b"acme, day two\n");
    backup(&acme, &a_task).await;
    backup(&acme, &a_other).await;
    let g_snap = backup(&globex, &g_task).await;
    let db = env.dir.path().join("catalog.db");
    assert!(catalog_rows(&db, "acme") > 0);
    let globex_rows = catalog_rows(&db, "globex");
    let globex_files: HashSet<_> = files_under(&env.dir.path().join("objects/t/globex"))
        .into_iter()
        .collect();
    let a_vault = open_vault(&env, "acme", &a_task).await.unwrap();

    acme.delete_tenant().await.unwrap();

    // Nothing of acme is left: no object, no record, no task.
    assert_eq!(
        files_under(&env.dir.path().join("objects/t/acme")),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(catalog_rows(&db, "acme"), 0);
    assert!(acme.tasks().await.unwrap().is_empty());
    assert!(matches!(
        acme.task("files").await,
        Err(engine::Error::NotFound(_))
    ));
    // An old copy of the task record opens nothing: either its key is refused, or there is
    // nothing left to read with it.
    match acme.latest_snapshot(&a_task, &a_snap.account).await {
        Err(_) => {}
        Ok(latest) => {
            assert_eq!(latest, None);
            assert!(acme
                .list(&a_task, &a_snap, &ItemPath::root())
                .await
                .is_err());
        }
    }
    match open_vault(&env, "acme", &a_task).await {
        Err(_) => {}
        Ok(v) => {
            let account = &a_snap.account;
            assert!(v.snapshots(account).await.unwrap().is_empty());
            assert!(v.read_tree(&a_snap.root()).await.is_err());
        }
    }
    // A vault opened before, its key still in memory, finds nothing left to read.
    assert!(a_vault.read_tree(&a_snap.root()).await.is_err());
    let out = env.folder("out");
    assert!(acme
        .restore_to_dir(
            &a_task,
            &a_snap,
            &out,
            &RestoreOptions::default(),
            &NoProgress
        )
        .await
        .is_err());

    // Globex is untouched and still restores.
    assert_eq!(catalog_rows(&db, "globex"), globex_rows);
    let now: HashSet<_> = files_under(&env.dir.path().join("objects/t/globex"))
        .into_iter()
        .collect();
    assert_eq!(now, globex_files);
    assert_eq!(
        globex.snapshots(&g_task).await.unwrap(),
        vec![g_snap.clone()]
    );
    let out = env.folder("out-globex");
    let r = globex
        .restore_to_dir(
            &g_task,
            &g_snap,
            &out,
            &RestoreOptions::default(),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(read_tree(&r.target), read_tree(&g_src));
    let report = globex.verify(&g_task, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.damage);
    assert!(report.packs > 0);

    // Deleting again (an interrupted run resumed) is harmless.
    acme.delete_tenant().await.unwrap();
}
