//! The one test environment every crate's tests use: a Lifeboat installation on the
//! embedded adapters in a temporary directory (objects, a SQLite catalog, a master key
//! file), with a clock the test moves, and shortcuts for the set-up every test repeats.

use crate::fake::{fake_source, FakeConnectors, FakeSource};
use chrono::{DateTime, Utc};
use domain::{TaskId, TenantId};
use embedded::{FileKeyService, FsObjectStore, SqliteCatalog};
use engine::{BackupOptions, Connectors, Engine, NewTask, Ports, SnapshotRecord, TaskRecord};
use ports::{Clock, FixedClock};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

/// The first moment of every test: 2026-11-25 02:00:00 UTC.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T02:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc)
}

/// One Lifeboat installation in a temp directory; see the module doc.
pub struct TestEnv {
    pub dir: TempDir,
    pub store: Arc<FsObjectStore>,
    pub catalog: Arc<SqliteCatalog>,
    pub keys: Arc<FileKeyService>,
    pub clock: Arc<FixedClock>,
    pub ports: Ports,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(FsObjectStore::new(dir.path().join("objects")).expect("store"));
        let catalog =
            Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).expect("catalog"));
        let keys = Arc::new(FileKeyService::open(dir.path().join("master.key")).expect("keys"));
        let clock = Arc::new(FixedClock::new(t0()));
        let ports = Ports {
            store: store.clone(),
            catalog: catalog.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
        };
        TestEnv {
            dir,
            store,
            catalog,
            keys,
            clock,
            ports,
        }
    }

    /// An engine of `tenant` on this installation's adapters.
    pub fn engine(&self, tenant: &str) -> Engine {
        Engine::new(
            self.ports.clone(),
            TenantId::new(tenant).expect("a valid tenant"),
        )
    }

    /// A new, empty folder in the temp directory.
    pub fn folder(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("folder");
        p
    }

    /// The current time on the test's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves the clock on.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.advance(by);
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

/// Adds a task of the fake connector named `name`, with a credential when the connectors
/// require one.
///
/// # Panics
/// When the engine refuses it: this is test set-up.
pub async fn fake_task(engine: &Engine, name: &str, connectors: &FakeConnectors) -> TaskRecord {
    engine
        .add_task(
            NewTask {
                name: TaskId::new(name).expect("a valid task name"),
                source: fake_source(),
                secret: connectors.secret.clone().map(zeroize::Zeroizing::new),
                backup_hour: None,
            },
            connectors,
        )
        .await
        .expect("task added")
}

/// A fake source with one account, `account`, and a task over it.
pub async fn fake_setup(
    engine: &Engine,
    task: &str,
    account: &str,
) -> (Arc<FakeSource>, FakeConnectors, TaskRecord) {
    let source = FakeSource::new();
    source.add_account(account);
    let connectors = FakeConnectors::new(&source);
    let t = fake_task(engine, task, &connectors).await;
    (source, connectors, t)
}

/// Backs up every account of `task` as the source lists it now, to the end; the
/// snapshots in the order of the accounts.
///
/// # Panics
/// When a backup fails: the tests that expect a failure call the engine themselves.
pub async fn backup_all(
    engine: &Engine,
    task: &TaskRecord,
    connectors: &dyn Connectors,
) -> Vec<SnapshotRecord> {
    let connector = engine
        .connector(task, connectors)
        .await
        .expect("the connector opens");
    let accounts = engine
        .refresh_accounts(task, connector.as_ref())
        .await
        .expect("accounts listed");
    let mut out = Vec::new();
    for a in accounts {
        let snap = engine
            .backup(task, &a.id, connector.as_ref(), &BackupOptions::default())
            .await
            .and_then(|end| end.into_snapshot())
            .expect("backup");
        out.push(snap);
    }
    out
}
