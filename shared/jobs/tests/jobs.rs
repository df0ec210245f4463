//! The scheduler, fetcher and runner on the embedded adapters: daily claims, fan-out per
//! account, leases, duplicates, failures and poison messages.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use domain::{AccountId, BackupJob, JobEnvelope, JobKind, TaskId, TenantId};
use embedded::{FileKeyService, FsObjectStore, MemQueue, SqliteCatalog};
use engine::{
    AccountInfo, AccountTree, Connector, Connectors, Engine, Ports, RestoreContent, SourceConfig,
    SourceErrorKind, SourceRestore, SourceRestoreReport, TaskRecord,
};
use jobs::{drain, Context, Outcome};
use ports::{Clock, FixedClock, Queue};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use zeroize::Zeroizing;

struct Env {
    dir: TempDir,
    clock: Arc<FixedClock>,
    queue: Arc<MemQueue>,
    ports: Ports,
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap()
}

impl Env {
    fn new(max_receives: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FixedClock::new(at(0, 5)));
        let ports = Ports {
            store: Arc::new(FsObjectStore::new(dir.path().join("objects")).unwrap()),
            catalog: Arc::new(SqliteCatalog::open(dir.path().join("catalog.db")).unwrap()),
            keys: Arc::new(FileKeyService::open(dir.path().join("master.key")).unwrap()),
            clock: clock.clone(),
        };
        Env {
            dir,
            clock,
            queue: Arc::new(MemQueue::new(max_receives)),
            ports,
        }
    }

    fn ctx(&self, worker: &str) -> Context {
        Context::new(
            self.ports.clone(),
            self.queue.clone(),
            Arc::new(Refusing),
            worker,
        )
    }

    fn engine(&self, tenant: &str) -> Engine {
        Engine::new(self.ports.clone(), TenantId::new(tenant).unwrap())
    }

    async fn files_task(&self, tenant: &str, name: &str, hour: u8) -> TaskRecord {
        let folder = self.dir.path().join(format!("{tenant}-{name}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("notes.txt"), format!("{tenant} {name}")).unwrap();
        let e = self.engine(tenant);
        e.add_task(
            TaskId::new(name).unwrap(),
            SourceConfig::Files { path: folder },
        )
        .await
        .unwrap();
        e.set_backup_hour(name, hour).await.unwrap()
    }

    async fn snapshots(&self, tenant: &str, task: &str) -> usize {
        let e = self.engine(tenant);
        let t = e.task(task).await.unwrap();
        e.snapshots(&t).await.unwrap().len()
    }
}

/// A connector whose source refuses our credentials.
struct Refusing;

#[async_trait]
impl Connector for Refusing {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Err(engine::Error::source(
            SourceErrorKind::Auth,
            "the mail server refused the login; replace the task's credential",
        ))
    }
    async fn backup(
        &self,
        _: &AccountInfo,
        _: Option<&str>,
        _: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        unreachable!("no account is ever listed")
    }
    async fn restore(
        &self,
        _: &SourceRestore,
        _: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        unreachable!()
    }
}

impl Connectors for Refusing {
    fn open(
        &self,
        _: &TaskRecord,
        _: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(Arc::new(Refusing))
    }
}

fn job(tenant: &str, task: &str, account: Option<&str>, day: Option<&str>) -> String {
    JobEnvelope::new(JobKind::Backup(BackupJob {
        tenant: TenantId::new(tenant).unwrap(),
        task: TaskId::new(task).unwrap(),
        account: account.map(|a| AccountId::new(a).unwrap()),
        scheduled_for: day.map(str::to_string),
        continuation: 0,
    }))
    .encode()
}

const SHORT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn each_task_is_backed_up_once_a_day_at_its_hour() {
    let env = Env::new(5);
    env.files_task("acme", "docs", 2).await;
    env.files_task("acme", "late", 5).await;
    env.files_task("globex", "share", 2).await;
    let ctx = env.ctx("worker-1");

    // 00:05: nothing is due yet.
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.already, r.failed), (0, 0, 0));
    assert!(env.queue.is_empty());

    // 02:15: the two 02:00 tasks; a second, overlapping tick queues nothing more.
    env.clock.set(at(2, 15));
    let other = env.ctx("scheduler-2");
    let (a, b) = tokio::join!(jobs::tick(&ctx), jobs::tick(&other));
    assert_eq!(a.unwrap().queued + b.unwrap().queued, 2);
    assert_eq!(env.queue.len(), 2);
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    // A files task's one account is known from the start: the tick queues its job
    // directly, with nothing to list.
    assert!(
        !outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Expanded { .. })),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::BackedUp { items: 1, .. }))
            .count(),
        2
    );
    assert_eq!(env.snapshots("acme", "docs").await, 1);
    assert_eq!(env.snapshots("globex", "share").await, 1);
    assert_eq!(env.snapshots("acme", "late").await, 0);

    // Later ticks the same day skip the finished hour shards entirely.
    env.clock.set(at(2, 30));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!(r.queued, 0);
    assert_eq!(r.shards_done, 3 * engine::SCHEDULE_SHARDS as u64);

    // 05:00: the late task.
    env.clock.set(at(5, 0));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(env.snapshots("acme", "late").await, 1);

    // The next day, everything again.
    env.clock.set(at(5, 0) + chrono::Duration::days(1));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 3);
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(env.snapshots("acme", "docs").await, 2);
    assert_eq!(env.snapshots("acme", "late").await, 2);
}

#[tokio::test]
async fn duplicate_deliveries_do_not_make_duplicate_snapshots() {
    let env = Env::new(5);
    env.files_task("acme", "docs", 2).await;
    let ctx = env.ctx("worker-1");
    let daily = job("acme", "docs", Some("folder"), Some("2026-11-25"));
    env.queue
        .send_batch(&[daily.clone(), daily.clone(), daily])
        .await
        .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    assert!(matches!(outcomes[0], Outcome::BackedUp { .. }));
    assert_eq!(outcomes[1..], [Outcome::AlreadyDone, Outcome::AlreadyDone]);
    assert_eq!(env.snapshots("acme", "docs").await, 1);

    // An on-demand backup is not a duplicate of the daily one.
    env.queue
        .send_batch(&[job("acme", "docs", Some("folder"), None)])
        .await
        .unwrap();
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(env.snapshots("acme", "docs").await, 2);
    let state = jobs::account_state(
        &env.ports,
        &TenantId::new("acme").unwrap(),
        &TaskId::new("docs").unwrap(),
        &AccountId::new("folder").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.day_done.as_deref(), Some("2026-11-25"));
    assert!(state.lease_owner.is_none());
}

#[tokio::test]
async fn a_dead_workers_lease_expires_and_the_redelivery_takes_over() {
    let env = Env::new(5);
    env.files_task("acme", "docs", 2).await;
    let daily = BackupJob {
        tenant: TenantId::new("acme").unwrap(),
        task: TaskId::new("docs").unwrap(),
        account: Some(AccountId::new("folder").unwrap()),
        scheduled_for: Some("2026-11-25".into()),
        continuation: 0,
    };
    // Worker 1 takes the lease and dies before finishing: simulate by writing its lease.
    let dead = env.ctx("worker-dead");
    let catalog = &env.ports.catalog;
    let state = jobs::AccountState {
        lease_owner: Some("worker-dead".into()),
        lease_until: Some(env.clock.now() + dead.lease),
        lease_day: Some("2026-11-25".into()),
        ..Default::default()
    };
    catalog
        .put(
            ports::Record::new(
                "t#acme",
                "state#docs#folder",
                serde_json::to_vec(&state).unwrap(),
            ),
            ports::Condition::Absent,
        )
        .await
        .unwrap();

    let live = env.ctx("worker-2");
    // The same day's job while the lease is live waits (the holder may be dead), and so
    // does an on-demand job.
    assert_eq!(
        jobs::fetch::run_backup(&live, &daily).await.unwrap(),
        Outcome::Busy
    );
    let on_demand = BackupJob {
        scheduled_for: None,
        ..daily.clone()
    };
    assert_eq!(
        jobs::fetch::run_backup(&live, &on_demand).await.unwrap(),
        Outcome::Busy
    );
    assert_eq!(env.snapshots("acme", "docs").await, 0);

    // After the lease expires, the redelivered job takes over.
    env.clock.advance(dead.lease + chrono::Duration::seconds(1));
    assert!(matches!(
        jobs::fetch::run_backup(&live, &daily).await.unwrap(),
        Outcome::BackedUp { .. }
    ));
    assert_eq!(
        jobs::fetch::run_backup(&live, &daily).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(env.snapshots("acme", "docs").await, 1);
}

#[tokio::test]
async fn failures_are_recorded_and_poison_ends_in_the_dead_letter_queue() {
    let env = Env::new(3);
    let e = env.engine("acme");
    e.add_task_with_secret(
        TaskId::new("mail").unwrap(),
        SourceConfig::source("imap", serde_json::json!({"host": "mail.example.com"})),
        Some("wrong password"),
    )
    .await
    .unwrap();
    let ctx = env.ctx("worker-1");
    env.queue
        .send_batch(&[
            job("acme", "mail", None, Some("2026-11-25")),
            "{\"v\":1,\"kind\":\"self-destruct\"}".to_string(),
            job("acme", "no-such-task", None, Some("2026-11-25")),
        ])
        .await
        .unwrap();
    // Visibility zero: a failed message comes straight back, until its receive limit.
    let report = drain(&ctx, Duration::ZERO).await.unwrap();
    let gone = report
        .handled
        .iter()
        .filter(|h| h.outcome == Some(Outcome::Gone))
        .count();
    assert_eq!(gone, 1, "a job for a deleted task is dropped");
    let auth: Vec<_> = report
        .handled
        .iter()
        .filter_map(|h| h.error.as_deref())
        .filter(|e| e.contains("refused the login"))
        .collect();
    assert_eq!(
        auth.len(),
        3,
        "tried on each of the 3 deliveries: {:?}",
        report.handled
    );
    assert!(!auth[0].contains("wrong password"));
    assert_eq!(report.dead_letters.len(), 2, "{:?}", report.dead_letters);
    assert!(report
        .dead_letters
        .iter()
        .any(|d| d.contains("self-destruct")));
}

#[tokio::test]
async fn the_schedule_follows_the_task() {
    let env = Env::new(5);
    env.files_task("acme", "docs", 2).await;
    let e = env.engine("acme");
    let ctx = env.ctx("w");
    assert!(e.set_backup_hour("docs", 24).await.is_err());
    e.set_backup_hour("docs", 7).await.unwrap();
    env.clock.set(at(6, 59));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 0);
    env.clock.set(at(7, 0));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);

    // A stale claim (the tick died before queueing) is taken again after a while.
    let env = Env::new(5);
    env.files_task("acme", "docs", 0).await;
    let ctx = env.ctx("w");
    let claim = serde_json::json!({"day": "2026-11-25", "sent": false, "at": at(0, 5)});
    env.ports
        .catalog
        .put(
            ports::Record::new("t#acme", "run#docs", serde_json::to_vec(&claim).unwrap()),
            ports::Condition::Absent,
        )
        .await
        .unwrap();
    env.clock.set(at(0, 20));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 0);
    env.clock.set(at(0, 40));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);

    // A deleted tenant leaves the schedule.
    env.engine("acme").delete_tenant().await.unwrap();
    env.clock.set(at(1, 0) + chrono::Duration::days(1));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.already), (0, 0));
}

/// A one-account source that backs up two messages and records what it is asked to restore.
#[derive(Default)]
struct Recording {
    restored: std::sync::Mutex<Vec<(String, Option<String>, usize)>>,
    fail_restores: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Connector for Recording {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Ok(vec![AccountInfo {
            id: AccountId::new("anna@example.com").unwrap(),
            name: "Anna".into(),
            services: vec![domain::Service::Mail],
        }])
    }
    async fn backup(
        &self,
        _: &AccountInfo,
        _: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        for (p, body) in [("Inbox/1.eml", "one"), ("Inbox/Sub/2.eml", "two")] {
            tree.put_item(
                &domain::ItemPath::parse(p.as_bytes()).unwrap(),
                engine::ItemInfo::default(),
                bytes::Bytes::from(body),
            )
            .await?;
        }
        Ok(Some("c1".into()))
    }
    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        use std::sync::atomic::Ordering;
        if self.fail_restores.load(Ordering::SeqCst) > 0 {
            self.fail_restores.fetch_sub(1, Ordering::SeqCst);
            return Err(engine::Error::source(
                SourceErrorKind::Throttled,
                "the server asked us to slow down",
            ));
        }
        let mut report = SourceRestoreReport::default();
        for (path, e) in &job.items {
            if e.kind == vault::EntryKind::File {
                let n = content.read(e).await?.len();
                self.restored
                    .lock()
                    .unwrap()
                    .push((path.to_string(), job.label.clone(), n));
                report.items += 1;
            }
        }
        Ok(report)
    }
}

struct Shared(Arc<Recording>);
impl Connectors for Shared {
    fn open(
        &self,
        _: &TaskRecord,
        _: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(self.0.clone())
    }
}

#[tokio::test]
async fn restore_and_export_jobs_run_once_and_report() {
    use jobs::transfer::{new_job_id, submit};
    let env = Env::new(5);
    let rec = Arc::new(Recording::default());
    let mut ctx = env.ctx("worker-1");
    ctx.connectors = Arc::new(Shared(rec.clone()));
    let bus = Arc::new(embedded::MemEventBus::new());
    ctx.events = Some(bus.clone());
    let e = env.engine("acme");
    let task = e
        .add_task(
            TaskId::new("mail").unwrap(),
            SourceConfig::source("recording", serde_json::json!({})),
        )
        .await
        .unwrap();
    env.queue
        .send_batch(&[job("acme", "mail", None, None)])
        .await
        .unwrap();
    drain(&ctx, SHORT).await.unwrap();
    let snap = e.snapshots(&task).await.unwrap().pop().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let account = AccountId::new("anna@example.com").unwrap();

    // A restore that is throttled once: the job goes back to queued, is redelivered, and
    // finishes into one labelled folder named after the job's creation time.
    rec.fail_restores
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let rjob = domain::RestoreJob {
        job: new_job_id(env.clock.now()),
        tenant: tenant.clone(),
        task: task.name.clone(),
        account: account.clone(),
        snapshot: snap.id.clone(),
        include: vec![domain::ItemPath::parse(b"Inbox/Sub").unwrap()],
        to_account: None,
        in_place: false,
        on_conflict: domain::Conflict::Skip,
        filter: Default::default(),
    };
    let created = submit(
        &ctx.ports,
        ctx.transfers.as_ref(),
        JobKind::Restore(rjob.clone()),
    )
    .await
    .unwrap();
    assert_eq!(created.state, jobs::JobState::Queued);
    env.clock.advance(chrono::Duration::minutes(3));
    let report = drain(&ctx, Duration::ZERO).await.unwrap();
    assert_eq!(report.handled.len(), 2, "{:?}", report.handled);
    assert!(report.handled[0]
        .error
        .as_deref()
        .unwrap()
        .contains("slow down"));
    assert_eq!(
        report.handled[1].outcome,
        Some(Outcome::Restored {
            items: 1,
            errors: 0
        })
    );
    let restored = rec.restored.lock().unwrap().clone();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].0, "Inbox/Sub/2.eml");
    assert_eq!(
        restored[0].1.as_deref(),
        Some("Lifeboat Restore 2026-11-25 00-05-00 UTC")
    );
    let done = jobs::transfer::job(&env.ports, &tenant, &rjob.job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, jobs::JobState::Done);
    assert!(done.error.is_none());
    // Delivered again: not run again.
    assert_eq!(
        jobs::transfer::run_restore(&ctx, &rjob).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(rec.restored.lock().unwrap().len(), 1);

    // An export stores its zip for download.
    let xjob = domain::ExportJob {
        job: new_job_id(env.clock.now()),
        tenant: tenant.clone(),
        task: task.name.clone(),
        account: account.clone(),
        snapshot: snap.id.clone(),
        include: vec![],
        filter: Default::default(),
    };
    submit(
        &ctx.ports,
        ctx.transfers.as_ref(),
        JobKind::Export(xjob.clone()),
    )
    .await
    .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    let Some(Outcome::Exported { bytes }) = report.handled[0].outcome else {
        panic!("{:?}", report.handled)
    };
    let done = jobs::transfer::job(&env.ports, &tenant, &xjob.job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.export_bytes, Some(bytes));
    let key = ports::ObjectKey::new(&tenant, &task.name, jobs::transfer::EXPORT_KIND, &xjob.job);
    let zip = env.ports.store.get(&key).await.unwrap();
    assert_eq!(zip.len() as u64, bytes);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut names: Vec<_> = z.file_names().map(str::to_string).collect();
    names.sort();
    assert!(names.contains(&"Inbox/Sub/2.eml".to_string()), "{names:?}");
    let mut two = String::new();
    std::io::Read::read_to_string(&mut z.by_name("Inbox/1.eml").unwrap(), &mut two).unwrap();
    assert_eq!(two, "one");

    // A restore of a snapshot that does not exist fails for good, with why.
    let bad = domain::RestoreJob {
        job: new_job_id(env.clock.now()),
        snapshot: domain::SnapshotId::new("20200101T000000Z-000aaaaa").unwrap(),
        ..rjob.clone()
    };
    submit(
        &ctx.ports,
        ctx.transfers.as_ref(),
        JobKind::Restore(bad.clone()),
    )
    .await
    .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    assert!(matches!(
        report.handled[0].outcome,
        Some(Outcome::Failed { .. })
    ));
    let failed = jobs::transfer::job(&env.ports, &tenant, &bad.job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, jobs::JobState::Failed);
    assert!(failed.error.unwrap().contains("20200101"));

    // Announced: the backup, the restore once (not its throttled attempt), the export, and
    // the restore that failed for good; never the account's address.
    let events = bus.events();
    let types: Vec<&str> = events.iter().map(|e| e.detail_type.as_str()).collect();
    assert_eq!(
        types,
        [
            jobs::events::BACKUP_COMPLETED,
            jobs::events::RESTORE_COMPLETED,
            jobs::events::EXPORT_COMPLETED,
            jobs::events::RESTORE_FAILED,
        ]
    );
    assert!(events.iter().all(|e| !e.detail.contains("anna")));
    let detail =
        |i: usize| -> serde_json::Value { serde_json::from_str(&events[i].detail).unwrap() };
    assert_eq!(detail(1)["job"], rjob.job.as_str());
    assert_eq!(detail(1)["items"], 1);
    assert_eq!(detail(1)["in_place"], false);
    assert_eq!(detail(2)["bytes"], bytes);
    assert_eq!(detail(3)["job"], bad.job.as_str());
    assert_eq!(detail(3)["reason"], "not_found");
    let r = jobs::events::account_ref(&tenant, &task.name, &account);
    assert!((0..4).all(|i| detail(i)["account_ref"] == r.as_str()));
}

/// A source with three pages of mail that pauses between pages when time is up.
struct Paged;

#[async_trait]
impl Connector for Paged {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Recording::default().accounts().await
    }
    async fn backup(
        &self,
        _: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        let done: u32 = cursor.map(|c| c.parse().unwrap()).unwrap_or(0);
        for page in done..3 {
            if page > done && tree.time_is_up() {
                tree.pause();
                return Ok(Some(page.to_string()));
            }
            let path = domain::ItemPath::parse(format!("Inbox/{page}.eml").as_bytes()).unwrap();
            tree.put_item(
                &path,
                engine::ItemInfo::default(),
                bytes::Bytes::from(format!("page {page}")),
            )
            .await?;
        }
        Ok(Some("3".into()))
    }
    async fn restore(
        &self,
        _: &SourceRestore,
        _: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        unreachable!()
    }
}

struct PagedOnly;
impl Connectors for PagedOnly {
    fn open(
        &self,
        _: &TaskRecord,
        _: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(Arc::new(Paged))
    }
}

#[tokio::test]
async fn a_long_backup_continues_across_runs_and_commits_once() {
    let env = Env::new(5);
    let mut ctx = env.ctx("lambda-1");
    ctx.connectors = Arc::new(PagedOnly);
    ctx.budget = Some(Duration::ZERO);
    env.engine("acme")
        .add_task(
            TaskId::new("mail").unwrap(),
            SourceConfig::source("paged", serde_json::json!({})),
        )
        .await
        .unwrap();
    env.queue
        .send_batch(&[job("acme", "mail", None, Some("2026-11-25"))])
        .await
        .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    assert_eq!(
        outcomes[..3],
        [
            Outcome::Expanded { accounts: 1 },
            Outcome::Paused {
                items: 1,
                pauses: 1
            },
            Outcome::Paused {
                items: 1,
                pauses: 2
            },
        ]
    );
    assert!(
        matches!(
            outcomes[3],
            Outcome::BackedUp {
                items: 3,
                errors: 0,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 4);
    assert_eq!(env.snapshots("acme", "mail").await, 1);
    let state = jobs::account_state(
        &env.ports,
        &TenantId::new("acme").unwrap(),
        &TaskId::new("mail").unwrap(),
        &AccountId::new("anna@example.com").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.day_done.as_deref(), Some("2026-11-25"));

    // A continuation that keeps pausing forever is stopped and reported.
    let endless = BackupJob {
        tenant: TenantId::new("acme").unwrap(),
        task: TaskId::new("mail").unwrap(),
        account: Some(AccountId::new("anna@example.com").unwrap()),
        scheduled_for: None,
        continuation: jobs::fetch::MAX_CONTINUATIONS,
    };
    let err = jobs::fetch::run_backup(&ctx, &endless).await.unwrap_err();
    assert!(err.to_string().contains("paused 200 times"), "{err}");
}

#[tokio::test]
async fn storage_faults_are_retried_and_every_backup_completes_once() {
    // Faults at different periods hit different calls: the claim, the lease, a pack
    // upload, the commit, a key unwrap.
    for every in [3, 4, 5, 6, 7, 9, 11, 13] {
        backups_under_faults(every).await;
    }
}

async fn backups_under_faults(every: u64) {
    use testkit::faults::{FaultPlan, FaultyCatalog, FaultyKeys, FaultyStore};
    let env = Env::new(10);
    for name in ["alpha", "beta", "gamma", "delta"] {
        env.files_task("acme", name, 1).await;
    }
    // Every `every`-th storage, catalog or key call fails (throttled or unavailable,
    // before or after taking effect), 12 times in all.
    let plan = FaultPlan::new(every, 12);
    let faulty = Ports {
        store: Arc::new(FaultyStore {
            inner: env.ports.store.clone(),
            plan: plan.clone(),
        }),
        catalog: Arc::new(FaultyCatalog {
            inner: env.ports.catalog.clone(),
            plan: plan.clone(),
        }),
        keys: Arc::new(FaultyKeys {
            inner: env.ports.keys.clone(),
            plan: plan.clone(),
        }),
        clock: env.clock.clone(),
    };
    let ctx = Context::new(faulty, env.queue.clone(), Arc::new(Refusing), "w");
    env.clock.set(at(1, 0));
    // The schedule ticks every 15 minutes; the queue redelivers failed jobs.
    for tick in 0..8 {
        env.clock
            .set(at(1, 0) + chrono::Duration::minutes(15 * tick));
        // A drain that meets a fault on the queue's own bookkeeping stops; the next goes on.
        jobs::tick(&ctx).await.unwrap();
        drain(&ctx, Duration::ZERO).await.ok();
    }
    assert!(
        plan.injected() >= 8,
        "every {every}: only {} faults were injected",
        plan.injected()
    );
    assert!(env.queue.dead_letters().await.unwrap().is_empty());
    for name in ["alpha", "beta", "gamma", "delta"] {
        assert_eq!(
            env.snapshots("acme", name).await,
            1,
            "every {every}: task {name}"
        );
        let e = env.engine("acme");
        let t = e.task(name).await.unwrap();
        let snap = e.snapshots(&t).await.unwrap().pop().unwrap();
        let files = e.list(&t, &snap, &domain::ItemPath::root()).await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, format!("acme {name}").len() as u64);
        let v = e.vault(&t).await.unwrap();
        let report = v
            .verify(&[AccountId::new("folder").unwrap()], &|_| {})
            .await
            .unwrap();
        assert!(report.is_ok(), "every {every}: {name}: {:?}", report.damage);
    }
}

/// A source with a changing list of mailboxes; the backup of `fail` is refused.
struct Many {
    accounts: std::sync::Mutex<Vec<String>>,
    fail: Option<String>,
}

#[async_trait]
impl Connector for Many {
    async fn accounts(&self) -> engine::Result<Vec<AccountInfo>> {
        Ok(self
            .accounts
            .lock()
            .unwrap()
            .iter()
            .map(|a| AccountInfo {
                id: AccountId::new(a).unwrap(),
                name: a.clone(),
                services: vec![domain::Service::Mail],
            })
            .collect())
    }
    async fn backup(
        &self,
        a: &AccountInfo,
        _: Option<&str>,
        tree: &mut AccountTree,
    ) -> engine::Result<Option<String>> {
        if self.fail.as_deref() == Some(a.id.as_str()) {
            return Err(engine::Error::source(
                SourceErrorKind::Auth,
                format!("the server refused the mailbox {}", a.id),
            ));
        }
        tree.put_item(
            &domain::ItemPath::parse(b"Inbox/1.eml").unwrap(),
            engine::ItemInfo::default(),
            bytes::Bytes::from(format!("hello {}", a.id)),
        )
        .await?;
        Ok(Some("c".into()))
    }
    async fn restore(
        &self,
        _: &SourceRestore,
        _: &RestoreContent,
    ) -> engine::Result<SourceRestoreReport> {
        unreachable!()
    }
}

struct ManyOnly(Arc<Many>);
impl Connectors for ManyOnly {
    fn open(
        &self,
        _: &TaskRecord,
        _: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(self.0.clone())
    }
}

fn mailboxes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i:02}@example.com")).collect()
}

/// The scheduler queues one job per known account, in batches of ten; a task's first day
/// lists its accounts and fans out, a mailbox created later is picked up by the next day's
/// listing, a second tick or a duplicate listing queues nothing twice, and every backup is
/// announced on the event bus without naming the account.
#[tokio::test]
async fn the_tick_fans_out_per_account_and_announces_each_backup() {
    let env = Env::new(5);
    let source = Arc::new(Many {
        accounts: std::sync::Mutex::new(mailboxes(12)),
        fail: Some("user03@example.com".into()),
    });
    let bus = Arc::new(embedded::MemEventBus::new());
    let mut ctx = env.ctx("lambda-1");
    ctx.connectors = Arc::new(ManyOnly(source.clone()));
    ctx.events = Some(bus.clone());
    let e = env.engine("acme");
    e.add_task(
        TaskId::new("mail").unwrap(),
        SourceConfig::source("many", serde_json::json!({})),
    )
    .await
    .unwrap();

    // Day 1: no account is known yet, so one listing job, which fans out.
    env.clock.set(at(2, 5));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.jobs), (1, 1), "{r:?}");
    let report = drain(&ctx, Duration::ZERO).await.unwrap();
    let outcomes: Vec<_> = report.handled.iter().map(|h| h.outcome.clone()).collect();
    assert_eq!(outcomes[0], Some(Outcome::Expanded { accounts: 12 }));
    let backed = |o: &[Option<Outcome>]| {
        o.iter()
            .filter(|o| matches!(o, Some(Outcome::BackedUp { .. })))
            .count()
    };
    assert_eq!(backed(&outcomes), 11, "{outcomes:?}");
    assert_eq!(env.snapshots("acme", "mail").await, 11);

    // Events: one per account's backup (the refused one failed five times, then went to
    // the dead-letter queue); counts and an opaque account reference, never the address.
    let events = bus.events();
    let done: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.detail_type == jobs::events::BACKUP_COMPLETED)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(done.len(), 11);
    let failed: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.detail_type == jobs::events::BACKUP_FAILED)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(failed.len(), 5);
    assert!(events.iter().all(|e| e.source == "lifeboat"));
    assert!(events.iter().all(|e| !e.detail.contains("example.com")));
    let tenant = TenantId::new("acme").unwrap();
    let task = TaskId::new("mail").unwrap();
    let ref3 = jobs::events::account_ref(
        &tenant,
        &task,
        &AccountId::new("user03@example.com").unwrap(),
    );
    assert_eq!(failed[4]["account_ref"], ref3.as_str());
    assert_eq!(failed[4]["reason"], "source_auth");
    assert_eq!(failed[4]["failures"], 5);
    assert_eq!(failed[4]["retryable"], false);
    assert_eq!(done[0]["items"], 1);
    assert_eq!(done[0]["item_errors"], 0);
    assert_eq!(done[0]["scheduled_for"], "2026-11-25");
    assert_eq!(done[0]["tenant"], "acme");
    assert!(done.iter().all(|d| d["account_ref"] != ref3.as_str()));

    // Day 2: a new mailbox. The tick queues the twelve known accounts and one listing
    // job: thirteen jobs, sent ten at a time; the listing finds the one new mailbox.
    source
        .accounts
        .lock()
        .unwrap()
        .push("new@example.com".into());
    env.clock.set(at(2, 5) + chrono::Duration::days(1));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.jobs, r.failed), (1, 13, 0), "{r:?}");
    assert_eq!(env.queue.len(), 13);
    // A duplicate of the listing job, as SQS may deliver.
    env.queue
        .send_batch(&[job("acme", "mail", None, Some("2026-11-26"))])
        .await
        .unwrap();
    assert_eq!(jobs::tick(&ctx).await.unwrap().jobs, 0);
    let report = drain(&ctx, Duration::ZERO).await.unwrap();
    let outcomes: Vec<_> = report.handled.iter().map(|h| h.outcome.clone()).collect();
    let expanded: Vec<usize> = outcomes
        .iter()
        .filter_map(|o| match o {
            Some(Outcome::Expanded { accounts }) => Some(*accounts),
            _ => None,
        })
        .collect();
    assert_eq!(expanded, [1, 0], "{outcomes:?}");
    assert_eq!(backed(&outcomes), 12, "{outcomes:?}");
    let snaps = env.snapshots("acme", "mail").await;
    assert_eq!(snaps, 11 + 12);

    // Day 3: a mailbox is deleted at the source. It is still known, so queued; the day's
    // listing notes it gone, and from day 4 it is no longer queued (its snapshots stay).
    source
        .accounts
        .lock()
        .unwrap()
        .retain(|a| a != "user05@example.com");
    env.clock.set(at(2, 5) + chrono::Duration::days(2));
    assert_eq!(jobs::tick(&ctx).await.unwrap().jobs, 14);
    drain(&ctx, Duration::ZERO).await.unwrap();
    env.clock.set(at(2, 5) + chrono::Duration::days(3));
    assert_eq!(jobs::tick(&ctx).await.unwrap().jobs, 13);
    let queued = env.queue.receive(10, SHORT).await.unwrap();
    assert!(queued.iter().all(|m| !m.body.contains("user05")));
    let infos = e
        .account_infos(&e.task("mail").await.unwrap())
        .await
        .unwrap();
    assert_eq!(infos.len(), 13, "the account and its snapshots stay");
}

/// An on-demand backup of a whole task queues the same per-account jobs as the schedule.
#[tokio::test]
async fn backup_jobs_of_a_task_are_one_per_known_account() {
    let env = Env::new(5);
    let tenant = TenantId::new("acme").unwrap();
    env.files_task("acme", "docs", 2).await;
    let jobs = jobs::backup_jobs(&env.ports, &tenant, &TaskId::new("docs").unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let JobKind::Backup(b) = &jobs[0].job else {
        panic!("a backup job")
    };
    assert_eq!(b.account.as_ref().map(|a| a.as_str()), Some("folder"));
    assert_eq!(b.scheduled_for, None);
    // A task that does not exist has no jobs.
    assert!(
        jobs::backup_jobs(&env.ports, &tenant, &TaskId::new("gone").unwrap(), None)
            .await
            .unwrap()
            .is_none()
    );
}
