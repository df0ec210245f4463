//! The scheduler, fetcher and runner on the one test environment ([`TestEnv`]) and the
//! one fake connector ([`FakeSource`]): daily claims, fan-out per account, leases,
//! duplicates, failures and poison messages, restores and exports.

use chrono::{DateTime, Utc};
use domain::{AccountId, BackupJob, ItemPath, JobEnvelope, JobKind, TaskId, TenantId};
use embedded::MemQueue;
use engine::{Engine, NoProgress, Ports, SourceErrorKind, TaskRecord};
use jobs::{drain, Context, Outcome};
use ports::{catalog_keys, CatalogExt, Clock, Queue};
use std::sync::Arc;
use std::time::Duration;
use testkit::env::{fake_task, t0, TestEnv};
use testkit::fake::{FakeConnectors, FakeItem, FakeSource};

/// `h:m` on the day every test starts (the day of [`t0`]).
fn at(h: u32, m: u32) -> DateTime<Utc> {
    t0().date_naive()
        .and_hms_opt(h, m, 0)
        .expect("a valid time")
        .and_utc()
}

/// The test environment at 00:05 of its first day, and a job queue that sets a message
/// aside in its dead-letter queue after `max_receives` deliveries.
fn setup(max_receives: u32) -> (TestEnv, Arc<MemQueue>) {
    let env = TestEnv::new();
    env.clock.set(at(0, 5));
    (env, Arc::new(MemQueue::new(max_receives)))
}

/// What `worker` runs jobs with: the environment's ports, the queue, the fake connectors.
fn ctx(env: &TestEnv, queue: &Arc<MemQueue>, connectors: &FakeConnectors, worker: &str) -> Context {
    Context::new(
        env.ports.clone(),
        queue.clone(),
        Arc::new(connectors.clone()),
        worker,
    )
}

/// The mailbox of the one-account sources.
const ANNA: &str = "anna@example.com";

/// The one message of [`one_mailbox`].
const HELLO: &[u8] = b"hello";

/// A source with one mailbox ([`ANNA`]) holding one message, and connectors opening it.
fn one_mailbox() -> (Arc<FakeSource>, FakeConnectors) {
    let source = FakeSource::new();
    source.put(ANNA, 1, FakeItem::new("Inbox", HELLO));
    let connectors = FakeConnectors::new(&source);
    (source, connectors)
}

/// A fake task of `tenant` backed up daily at `hour` (UTC).
async fn task_at(
    env: &TestEnv,
    tenant: &str,
    name: &str,
    hour: u8,
    connectors: &FakeConnectors,
) -> TaskRecord {
    let e = env.engine(tenant);
    fake_task(&e, name, connectors).await;
    e.set_backup_hour(name, hour).await.unwrap()
}

/// Lists a task's accounts, as its first listing job does, so that the catalog knows
/// them (adding a task records none).
async fn list_accounts(e: &Engine, task: &TaskRecord, connectors: &FakeConnectors) {
    let connector = e.connector(task, connectors).await.unwrap();
    e.refresh_accounts(task, connector.as_ref()).await.unwrap();
}

/// How many snapshots a task has, over all its accounts.
async fn snapshots(env: &TestEnv, tenant: &str, task: &str) -> usize {
    let e = env.engine(tenant);
    let t = e.task(task).await.unwrap();
    e.snapshots(&t).await.unwrap().len()
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
    let (env, queue) = setup(5);
    let (_source, connectors) = one_mailbox();
    task_at(&env, "acme", "docs", 2, &connectors).await;
    task_at(&env, "acme", "late", 5, &connectors).await;
    task_at(&env, "globex", "share", 2, &connectors).await;
    let ctx = ctx(&env, &queue, &connectors, "worker-1");

    // 00:05: nothing is due yet.
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.already, r.failed), (0, 0, 0));
    assert!(queue.is_empty());

    // 02:15: the two 02:00 tasks; a second, overlapping tick queues nothing more.
    env.clock.set(at(2, 15));
    let other = self::ctx(&env, &queue, &connectors, "scheduler-2");
    let (a, b) = tokio::join!(jobs::tick(&ctx), jobs::tick(&other));
    assert_eq!(a.unwrap().queued + b.unwrap().queued, 2);
    assert_eq!(queue.len(), 2);
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    // A task's accounts are not known before its first listing: the tick queues one
    // listing job per task, which finds the one mailbox and queues its backup.
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Expanded { accounts: 1 }))
            .count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::BackedUp { items: 1, .. }))
            .count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert_eq!(snapshots(&env, "acme", "docs").await, 1);
    assert_eq!(snapshots(&env, "globex", "share").await, 1);
    assert_eq!(snapshots(&env, "acme", "late").await, 0);

    // Later ticks the same day skip the finished hour shards entirely.
    env.clock.set(at(2, 30));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!(r.queued, 0);
    assert_eq!(r.shards_done, 3 * engine::SCHEDULE_SHARDS as u64);

    // 05:00: the late task.
    env.clock.set(at(5, 0));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(snapshots(&env, "acme", "late").await, 1);

    // The next day, everything again: each task's known account, and a listing job each.
    env.clock.set(at(5, 0) + chrono::Duration::days(1));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.jobs), (3, 6), "{r:?}");
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(snapshots(&env, "acme", "docs").await, 2);
    assert_eq!(snapshots(&env, "acme", "late").await, 2);
}

#[tokio::test]
async fn duplicate_deliveries_do_not_make_duplicate_snapshots() {
    let (env, queue) = setup(5);
    let (_source, connectors) = one_mailbox();
    let task = task_at(&env, "acme", "docs", 2, &connectors).await;
    list_accounts(&env.engine("acme"), &task, &connectors).await;
    let ctx = ctx(&env, &queue, &connectors, "worker-1");
    let daily = job("acme", "docs", Some(ANNA), Some("2026-11-25"));
    queue
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
    assert_eq!(snapshots(&env, "acme", "docs").await, 1);

    // An on-demand backup is not a duplicate of the daily one.
    queue
        .send_batch(&[job("acme", "docs", Some(ANNA), None)])
        .await
        .unwrap();
    drain(&ctx, SHORT).await.unwrap();
    assert_eq!(snapshots(&env, "acme", "docs").await, 2);
    let state = jobs::account_state(
        &env.ports,
        &TenantId::new("acme").unwrap(),
        &TaskId::new("docs").unwrap(),
        &AccountId::new(ANNA).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.day_done.as_deref(), Some("2026-11-25"));
    assert!(state.lease_owner.is_none());
}

#[tokio::test]
async fn a_dead_workers_lease_expires_and_the_redelivery_takes_over() {
    let (env, queue) = setup(5);
    let (_source, connectors) = one_mailbox();
    let task = task_at(&env, "acme", "docs", 2, &connectors).await;
    list_accounts(&env.engine("acme"), &task, &connectors).await;
    let daily = BackupJob {
        tenant: TenantId::new("acme").unwrap(),
        task: TaskId::new("docs").unwrap(),
        account: Some(AccountId::new(ANNA).unwrap()),
        scheduled_for: Some("2026-11-25".into()),
        continuation: 0,
    };
    // Worker 1 takes the lease and dies before finishing: simulate by writing its lease.
    let dead = ctx(&env, &queue, &connectors, "worker-dead");
    let state = jobs::AccountState {
        lease_owner: Some("worker-dead".into()),
        lease_until: Some(env.clock.now() + dead.lease),
        lease_day: Some("2026-11-25".into()),
        ..Default::default()
    };
    let key = catalog_keys::state(&daily.tenant, &daily.task, daily.account.as_ref().unwrap());
    env.ports
        .catalog
        .put(
            ports::Record::new(key.pk, key.sk, serde_json::to_vec(&state).unwrap()),
            ports::Condition::Absent,
        )
        .await
        .unwrap();

    let live = ctx(&env, &queue, &connectors, "worker-2");
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
    assert_eq!(snapshots(&env, "acme", "docs").await, 0);

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
    assert_eq!(snapshots(&env, "acme", "docs").await, 1);
}

#[tokio::test]
async fn failures_are_recorded_and_poison_ends_in_the_dead_letter_queue() {
    let (env, queue) = setup(3);
    let (source, connectors) = one_mailbox();
    // The task's credential signed in when the task was added (adding checks it); since,
    // the mail server refuses it.
    let connectors = FakeConnectors {
        secret: Some("wrong password".into()),
        ..connectors
    };
    fake_task(&env.engine("acme"), "mail", &connectors).await;
    source.refuse(
        SourceErrorKind::Auth,
        "the mail server refused the login; replace the task's credential",
    );
    let ctx = ctx(&env, &queue, &connectors, "worker-1");
    queue
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
    let (env, queue) = setup(5);
    let (_source, connectors) = one_mailbox();
    task_at(&env, "acme", "docs", 2, &connectors).await;
    let e = env.engine("acme");
    let ctx = ctx(&env, &queue, &connectors, "w");
    assert!(e.set_backup_hour("docs", 24).await.is_err());
    e.set_backup_hour("docs", 7).await.unwrap();
    env.clock.set(at(6, 59));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 0);
    env.clock.set(at(7, 0));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);

    // A stale claim (the tick died before queueing) is taken again after a while.
    let (env, queue) = setup(5);
    task_at(&env, "acme", "docs", 0, &connectors).await;
    let ctx = self::ctx(&env, &queue, &connectors, "w");
    let claim = serde_json::json!({"day": "2026-11-25", "sent": false, "at": at(0, 5)});
    let key = catalog_keys::run(
        &TenantId::new("acme").unwrap(),
        &TaskId::new("docs").unwrap(),
    );
    env.ports
        .catalog
        .put(
            ports::Record::new(key.pk, key.sk, serde_json::to_vec(&claim).unwrap()),
            ports::Condition::Absent,
        )
        .await
        .unwrap();
    env.clock.set(at(0, 20));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 0);
    env.clock.set(at(0, 40));
    assert_eq!(jobs::tick(&ctx).await.unwrap().queued, 1);

    // A deleted tenant leaves the schedule: its entry is gone from the index, and the next
    // day's tick finds nothing of it (not even a task to claim and find gone).
    let acme = TenantId::new("acme").unwrap();
    let entries = |env: &TestEnv| {
        let catalog = env.ports.catalog.clone();
        let prefix = format!("{acme}#");
        async move {
            let mut found = Vec::new();
            for hour in 0..24u8 {
                for shard in 0..engine::SCHEDULE_SHARDS {
                    let pk = catalog_keys::schedule_shard(hour, shard).pk;
                    for r in catalog.query_all(&pk, &prefix).await.unwrap() {
                        found.push(format!("{pk} {}", r.sk));
                    }
                }
            }
            found
        }
    };
    assert_eq!(entries(&env).await.len(), 1, "the task is in the schedule");
    env.engine("acme").delete_tenant().await.unwrap();
    assert_eq!(entries(&env).await, Vec::<String>::new());
    env.clock.set(at(1, 0) + chrono::Duration::days(1));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!(
        (r.queued, r.jobs, r.gone, r.already, r.failed),
        (0, 0, 0, 0, 0),
        "{r:?}"
    );
}

#[tokio::test]
async fn restore_and_export_jobs_run_once_and_report() {
    use jobs::transfer::{new_job_id, submit};
    let (env, queue) = setup(5);
    // One mailbox with two messages, one of them in a subfolder.
    let source = FakeSource::new();
    source.put(ANNA, 1, FakeItem::new("Inbox", b"one"));
    source.put(ANNA, 2, FakeItem::new("Inbox/Sub", b"two"));
    let connectors = FakeConnectors::new(&source);
    let mut ctx = ctx(&env, &queue, &connectors, "worker-1");
    let bus = Arc::new(embedded::MemEventBus::new());
    ctx.events = Some(bus.clone());
    let e = env.engine("acme");
    let task = fake_task(&e, "mail", &connectors).await;
    queue
        .send_batch(&[job("acme", "mail", None, None)])
        .await
        .unwrap();
    drain(&ctx, SHORT).await.unwrap();
    let snap = e.snapshots(&task).await.unwrap().pop().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let account = AccountId::new(ANNA).unwrap();

    // A restore that is throttled once: the job goes back to queued, is redelivered, and
    // finishes into one labelled folder named after the job's creation time.
    source.refuse_next(
        1,
        SourceErrorKind::Throttled,
        "the server asked us to slow down",
    );
    let rjob = domain::RestoreJob {
        job: new_job_id(env.clock.now()),
        tenant: tenant.clone(),
        task: task.name.clone(),
        account: account.clone(),
        snapshot: snap.id.clone(),
        include: vec![ItemPath::parse(b"Inbox/Sub").unwrap()],
        to_account: None,
        in_place: false,
        on_conflict: domain::OnConflict::Skip,
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
    let restored = source.restored();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].account, account);
    assert_eq!(
        restored[0].path,
        "Lifeboat Restore 2026-11-25 00-05-00 UTC/Inbox/Sub/2.eml"
    );
    assert_eq!(restored[0].body, b"two");
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
    assert_eq!(source.restored().len(), 1);

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
    let mut one = String::new();
    std::io::Read::read_to_string(&mut z.by_name("Inbox/1.eml").unwrap(), &mut one).unwrap();
    assert_eq!(one, "one");

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

#[tokio::test]
async fn a_long_backup_continues_across_runs_and_commits_once() {
    let (env, queue) = setup(5);
    let source = FakeSource::new();
    source.add_account(ANNA);
    let connectors = FakeConnectors::new(&source);
    let mut ctx = ctx(&env, &queue, &connectors, "lambda-1");
    // Every run's time is up at once.
    ctx.budget = Some(Duration::ZERO);
    fake_task(&env.engine("acme"), "mail", &connectors).await;

    // Day 1: the listing finds the mailbox, still empty; its first backup (a full
    // enumeration, which the fake source does in one go) commits at once.
    queue
        .send_batch(&[job("acme", "mail", None, Some("2026-11-25"))])
        .await
        .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    assert_eq!(outcomes[0], Outcome::Expanded { accounts: 1 });
    assert!(
        matches!(
            outcomes[1],
            Outcome::BackedUp {
                items: 0,
                errors: 0,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 2);

    // Three messages arrive. Day 2's backup reads them as three changes since the cursor,
    // pausing after each one as its time is up; each continuation goes on from the
    // checkpoint, and the last commits one snapshot.
    for uid in 1..=3 {
        let body = format!("page {uid}");
        source.put(ANNA, uid, FakeItem::new("Inbox", body.as_bytes()));
    }
    env.clock.set(at(0, 5) + chrono::Duration::days(1));
    queue
        .send_batch(&[job("acme", "mail", Some(ANNA), Some("2026-11-26"))])
        .await
        .unwrap();
    let report = drain(&ctx, SHORT).await.unwrap();
    let outcomes: Vec<_> = report
        .handled
        .iter()
        .map(|h| h.outcome.clone().unwrap())
        .collect();
    assert_eq!(
        outcomes[..2],
        [
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
            outcomes[2],
            Outcome::BackedUp {
                items: 3,
                errors: 0,
                ..
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        snapshots(&env, "acme", "mail").await,
        2,
        "day 1's and one of day 2"
    );
    let state = jobs::account_state(
        &env.ports,
        &TenantId::new("acme").unwrap(),
        &TaskId::new("mail").unwrap(),
        &AccountId::new(ANNA).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(state.day_done.as_deref(), Some("2026-11-26"));

    // A continuation that keeps pausing forever is stopped and reported.
    let endless = BackupJob {
        tenant: TenantId::new("acme").unwrap(),
        task: TaskId::new("mail").unwrap(),
        account: Some(AccountId::new(ANNA).unwrap()),
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
    let (env, queue) = setup(10);
    let (_source, connectors) = one_mailbox();
    let names = ["alpha", "beta", "gamma", "delta"];
    for name in names {
        let task = task_at(&env, "acme", name, 1, &connectors).await;
        // Listed once before (an earlier day's listing): the day's tick queues the known
        // account's backup itself, beside the listing job.
        list_accounts(&env.engine("acme"), &task, &connectors).await;
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
    let ctx = Context::new(faulty, queue.clone(), Arc::new(connectors.clone()), "w");
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
    assert!(queue.dead_letters().await.unwrap().is_empty());
    let inbox = ItemPath::parse(b"Inbox").unwrap();
    for name in names {
        assert_eq!(
            snapshots(&env, "acme", name).await,
            1,
            "every {every}: task {name}"
        );
        let e = env.engine("acme");
        let t = e.task(name).await.unwrap();
        let snap = e.snapshots(&t).await.unwrap().pop().unwrap();
        let items = e.list(&t, &snap, &inbox).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].size, HELLO.len() as u64);
        let report = e.verify(&t, &NoProgress).await.unwrap();
        assert!(report.is_ok(), "every {every}: {name}: {:?}", report.damage);
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
    let (env, queue) = setup(5);
    // A source with a changing list of mailboxes, one message each; it refuses to open one.
    let source = FakeSource::new();
    let put = |a: &str| {
        source.put(
            a,
            1,
            FakeItem::new("Inbox", format!("hello {a}").as_bytes()),
        )
    };
    for a in mailboxes(12) {
        put(&a);
    }
    source.refuse_account(
        "user03@example.com",
        SourceErrorKind::Auth,
        "the server refused the mailbox user03@example.com",
    );
    let connectors = FakeConnectors::new(&source);
    let bus = Arc::new(embedded::MemEventBus::new());
    let mut ctx = ctx(&env, &queue, &connectors, "lambda-1");
    ctx.events = Some(bus.clone());
    let e = env.engine("acme");
    fake_task(&e, "mail", &connectors).await;

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
    assert_eq!(snapshots(&env, "acme", "mail").await, 11);

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
    put("new@example.com");
    env.clock.set(at(2, 5) + chrono::Duration::days(1));
    let r = jobs::tick(&ctx).await.unwrap();
    assert_eq!((r.queued, r.jobs, r.failed), (1, 13, 0), "{r:?}");
    assert_eq!(queue.len(), 13);
    // A duplicate of the listing job, as SQS may deliver.
    queue
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
    // The duplicate finds the new mailbox known but never backed up (its job is still
    // queued), so it queues it again: a listing that recorded accounts and then failed
    // must not leave them without their first backup. The second job finds the day done.
    assert_eq!(expanded, [1, 1], "{outcomes:?}");
    assert_eq!(backed(&outcomes), 12, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Some(Outcome::AlreadyDone))),
        "{outcomes:?}"
    );
    let snaps = snapshots(&env, "acme", "mail").await;
    assert_eq!(snaps, 11 + 12);

    // Day 3: a mailbox is deleted at the source. It is still known, so queued; the day's
    // listing notes it gone, and from day 4 it is no longer queued (its snapshots stay).
    source.drop_account("user05@example.com");
    env.clock.set(at(2, 5) + chrono::Duration::days(2));
    assert_eq!(jobs::tick(&ctx).await.unwrap().jobs, 14);
    drain(&ctx, Duration::ZERO).await.unwrap();
    env.clock.set(at(2, 5) + chrono::Duration::days(3));
    assert_eq!(jobs::tick(&ctx).await.unwrap().jobs, 13);
    // Every queued job, not just the first batch of ten: none is the deleted mailbox's.
    let mut queued = Vec::new();
    loop {
        let batch = queue.receive(10, SHORT).await.unwrap();
        if batch.is_empty() {
            break;
        }
        queued.extend(batch);
    }
    assert_eq!(queued.len(), 13);
    assert!(queued.iter().any(|m| m.body.contains("user04")));
    assert!(queued.iter().all(|m| !m.body.contains("user05")));
    let infos = e
        .account_infos(&e.task("mail").await.unwrap())
        .await
        .unwrap();
    assert_eq!(infos.len(), 13, "the account and its snapshots stay");
}

/// An on-demand backup of a whole task queues the same jobs as the schedule: one per
/// known account, and one that lists the source's accounts.
#[tokio::test]
async fn backup_jobs_of_a_task_are_one_per_known_account() {
    let (env, _queue) = setup(5);
    let (_source, connectors) = one_mailbox();
    let tenant = TenantId::new("acme").unwrap();
    let docs = TaskId::new("docs").unwrap();
    let task = task_at(&env, "acme", "docs", 2, &connectors).await;
    let backup = |j: &JobEnvelope| match &j.job {
        JobKind::Backup(b) => b.clone(),
        other => panic!("a backup job, not {other:?}"),
    };

    // Before its first listing a task knows no account: its one job lists them.
    let jobs = jobs::backup_jobs(&env.ports, &tenant, &docs, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(backup(&jobs[0]).account, None);
    assert_eq!(backup(&jobs[0]).scheduled_for, None);

    // Once listed: a job for the account, and the listing job.
    list_accounts(&env.engine("acme"), &task, &connectors).await;
    let jobs = jobs::backup_jobs(&env.ports, &tenant, &docs, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jobs.len(), 2);
    let b = backup(&jobs[0]);
    assert_eq!(b.account.as_ref().map(|a| a.as_str()), Some(ANNA));
    assert_eq!(b.scheduled_for, None);
    assert_eq!(backup(&jobs[1]).account, None);
    // A task that does not exist has no jobs.
    assert!(
        jobs::backup_jobs(&env.ports, &tenant, &TaskId::new("gone").unwrap(), None)
            .await
            .unwrap()
            .is_none()
    );
}
