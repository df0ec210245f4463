//! Tenants on one installation: each sees only its own tasks and snapshots, cannot open
//! another's data, and deleting one removes every object and record it had, and its key,
//! and nothing of anyone else's.

use async_trait::async_trait;
use domain::{ItemPath, TenantId};
use engine::{NoProgress, RestoreOptions, TaskRecord};
use lifeboat_tests::{backup, folder_task, read_tree, write, TestEnv};
use ports::{
    catalog_keys, Catalog, CatalogTenantKeys, EncryptionContext, ErrorKind, KeyEnvelope,
    KeyService, LocalRootKey, ObjectStoreExt, TenantKeyStore,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

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
    let key = env
        .ports
        .keys
        .decrypt_data_key(&task.wrapped_key, &ctx)
        .await?;
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

/// Where the key service keeps each tenant's wrapped key: the two shapes of
/// `ports::KeyEnvelope` the product runs.
#[derive(Clone, Copy, Debug)]
enum TenantKeys {
    /// `FileKeyService`, on one machine: `tenant-keys/<tenant>.key` beside `master.key`.
    Files,
    /// A catalog record (`t#<tenant>`, `tenant-key`), as `KmsKeyService` keeps them on AWS;
    /// a root key in memory stands in for the region's KMS key.
    Catalog,
}

/// The `tenant-keys/` folder of the test environment's `FileKeyService`.
fn key_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("tenant-keys")
}

/// The names of the files in [`key_dir`].
fn key_file_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = files_under(&key_dir(env))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The tenant key's catalog record, read from the catalog itself.
async fn key_record(env: &TestEnv, tenant: &TenantId) -> Option<Vec<u8>> {
    let key = catalog_keys::tenant_key(tenant);
    env.catalog
        .get(&key.pk, &key.sk)
        .await
        .unwrap()
        .map(|r| r.value)
}

/// The key files of a `FileKeyService` as it lays them out (`<dir>/<tenant>.key`), read
/// directly: a reader that shares no code or cache with the service under test.
struct KeyFiles(PathBuf);

#[async_trait]
impl TenantKeyStore for KeyFiles {
    async fn load(&self, tenant: &TenantId) -> ports::Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.join(format!("{tenant}.key"))) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => panic!("tenant key file of {tenant}: {e}"),
        }
    }

    async fn store_if_absent(&self, _: &TenantId, _: &[u8]) -> ports::Result<bool> {
        unreachable!("the test only reads key files")
    }

    async fn delete(&self, _: &TenantId) -> ports::Result<()> {
        unreachable!("the test only reads key files")
    }
}

/// The test environment, its key service keeping tenant keys as `shape` says.
struct KeyedEnv {
    env: TestEnv,
    shape: TenantKeys,
    /// The `Catalog` shape's root key (the `Files` shape's is its master key file).
    root: Arc<LocalRootKey>,
}

impl KeyedEnv {
    fn new(shape: TenantKeys) -> KeyedEnv {
        let mut env = TestEnv::new();
        let root = Arc::new(LocalRootKey::random().unwrap());
        if let TenantKeys::Catalog = shape {
            env.ports.keys = Arc::new(KeyEnvelope::new(
                root.clone(),
                CatalogTenantKeys::new(env.ports.catalog.clone()),
            ));
        }
        KeyedEnv { env, shape, root }
    }

    /// Where the tenant keys of this shape are kept, read without the service under test.
    fn store(&self) -> Arc<dyn TenantKeyStore> {
        match self.shape {
            TenantKeys::Files => Arc::new(KeyFiles(key_dir(&self.env))),
            TenantKeys::Catalog => Arc::new(CatalogTenantKeys::new(self.env.ports.catalog.clone())),
        }
    }

    /// The stored (wrapped) key of `tenant`, if any.
    async fn stored(&self, tenant: &TenantId) -> Option<Vec<u8>> {
        self.store().load(tenant).await.unwrap()
    }

    /// A new key service over the same root key and the same stored tenant keys, with
    /// nothing cached: what another process (another Lambda instance) would unwrap with.
    fn another_instance(&self) -> Arc<dyn KeyService> {
        let root = match self.shape {
            TenantKeys::Files => {
                let bytes = std::fs::read(self.env.dir.path().join("master.key")).unwrap();
                let key: [u8; 32] = bytes.as_slice().try_into().expect("a 32-byte master key");
                Arc::new(LocalRootKey::new(Zeroizing::new(key)))
            }
            TenantKeys::Catalog => self.root.clone(),
        };
        Arc::new(KeyEnvelope::new(root, self.store()))
    }
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
    // Both places a tenant's key is kept: a file (one machine) and a catalog record (AWS).
    for shape in [TenantKeys::Files, TenantKeys::Catalog] {
        delete_tenant_of_two(shape).await;
    }
}

/// Two tenants backed up, one deleted: all of its objects, records and key go, and
/// nothing of the other's.
async fn delete_tenant_of_two(shape: TenantKeys) {
    let keyed = KeyedEnv::new(shape);
    let env = &keyed.env;
    let (acme, globex) = (env.engine("acme"), env.engine("globex"));
    let (acme_id, globex_id) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
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
    let a_vault = open_vault(env, "acme", &a_task).await.unwrap();

    // Each tenant's key is stored where this shape keeps it (and nowhere else), and a key
    // service that shares nothing with the one under test opens the task keys with it: so
    // what that reader says after the deletion is about the stored keys, not about a cache.
    let acme_key = keyed.stored(&acme_id).await;
    let globex_key = keyed.stored(&globex_id).await;
    assert!(acme_key.is_some() && globex_key.is_some(), "{shape:?}");
    let (files, in_catalog) = match shape {
        TenantKeys::Files => (vec!["acme.key", "globex.key"], false),
        TenantKeys::Catalog => (vec![], true),
    };
    assert_eq!(key_file_names(env), files, "{shape:?}");
    for tenant in [&acme_id, &globex_id] {
        let record = key_record(env, tenant).await;
        assert_eq!(record.is_some(), in_catalog, "{shape:?}: {tenant}");
    }
    let task_keys = [
        (&acme_id, &a_task),
        (&acme_id, &a_other),
        (&globex_id, &g_task),
    ]
    .map(|(tenant, task)| (task, EncryptionContext::for_task(tenant, &task.name)));
    let reader = keyed.another_instance();
    let mut plain = Vec::new();
    for (task, ctx) in &task_keys {
        let key = reader
            .decrypt_data_key(&task.wrapped_key, ctx)
            .await
            .unwrap_or_else(|e| panic!("{shape:?}: the reader cannot open {ctx:?}: {e}"));
        let same = env
            .ports
            .keys
            .decrypt_data_key(&task.wrapped_key, ctx)
            .await;
        assert_eq!(*key, *same.unwrap(), "{shape:?}");
        plain.push(key);
    }

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

    // Its key is gone from the key service: no key file, no catalog record...
    assert!(
        keyed.stored(&acme_id).await.is_none(),
        "{shape:?}: acme's key is still stored"
    );
    assert!(
        key_record(env, &acme_id).await.is_none(),
        "{shape:?}: acme's key record is left"
    );
    let files_left = match shape {
        TenantKeys::Files => vec!["globex.key"],
        TenantKeys::Catalog => vec![],
    };
    assert_eq!(key_file_names(env), files_left, "{shape:?}");
    // ...so no copy of its wrapped task keys opens: neither in the service that held the
    // key in its cache nor in a new instance. Globex's key is the same and still opens.
    assert!(
        keyed.stored(&globex_id).await == globex_key,
        "{shape:?}: globex's stored key changed"
    );
    for (who, keys) in [
        ("the key service", env.ports.keys.clone()),
        ("another instance", keyed.another_instance()),
    ] {
        for ((task, ctx), plain) in task_keys.iter().zip(&plain) {
            let got = keys.decrypt_data_key(&task.wrapped_key, ctx).await;
            if ctx.0["tenant"] == "acme" {
                let Err(e) = got else {
                    panic!("{shape:?}, {who}: a deleted tenant's task key opened")
                };
                assert_eq!(e.kind(), ErrorKind::Integrity, "{shape:?}, {who}: {e}");
            } else {
                let key = got.unwrap_or_else(|e| panic!("{shape:?}, {who}: globex's key: {e}"));
                assert_eq!(*key, **plain, "{shape:?}, {who}");
            }
        }
    }

    // An old copy of the task record opens nothing: its key is refused.
    let e = acme
        .latest_snapshot(&a_task, &a_snap.account)
        .await
        .expect_err("an old task record of a deleted tenant opened its vault");
    assert!(
        matches!(&e, engine::Error::Port(p) if p.kind() == ErrorKind::Integrity),
        "{shape:?}: {e}"
    );
    let e = open_vault(env, "acme", &a_task)
        .await
        .err()
        .expect("a deleted tenant's vault opened");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{shape:?}: {e}");
    // A vault opened before, its key still in memory, finds nothing left to read.
    assert!(a_vault
        .account(&a_snap.account)
        .read_tree(&a_snap.root())
        .await
        .is_err());
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
    assert!(acme
        .list(&a_task, &a_snap, &ItemPath::root())
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
    assert!(keyed.stored(&acme_id).await.is_none(), "{shape:?}");

    // A tenant of the same name made again gets a key of its own, under which no old copy
    // of a task key opens.
    let (task, ctx) = &task_keys[0];
    env.ports.keys.generate_data_key(ctx).await.unwrap();
    let new_key = keyed.stored(&acme_id).await;
    assert!(new_key.is_some() && new_key != acme_key, "{shape:?}");
    let Err(e) = env
        .ports
        .keys
        .decrypt_data_key(&task.wrapped_key, ctx)
        .await
    else {
        panic!("{shape:?}: an old task key opened under the new tenant key")
    };
    assert_eq!(e.kind(), ErrorKind::Integrity, "{shape:?}: {e}");
}
