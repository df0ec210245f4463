//! The daily scheduler. Every tick (EventBridge, every 15 minutes) it finds the tasks whose
//! backup hour has come today and that have not been started today, and queues one fetch
//! job per account the catalog knows for each, in SQS batches of ten ([`backup_jobs`]). A
//! connector task also gets one job without an account, which lists the source's accounts
//! and queues jobs for those the catalog did not know (all of them at a task's first
//! backup; a mailbox created since yesterday's listing on any later day).
//!
//! Tasks are found through the schedule index (`sched#<hour>#<shard>`), never by scanning
//! tenants. A task's day is claimed with one conditional write on its run record, so two
//! overlapping ticks queue it once. A claim whose jobs were never sent (the tick died in
//! between) is taken again after [`RECLAIM_AFTER_MINUTES`]; the fetcher's per-account day
//! record makes the rare duplicate that this allows harmless. Once every task of an hour's
//! shard is claimed, a marker for the day lets later ticks skip that shard.

use crate::{send_jobs, Context};
use chrono::{DateTime, Timelike, Utc};
use domain::{AccountId, BackupJob, JobEnvelope, JobKind, TaskId, TenantId};
use engine::{TaskRecord, SCHEDULE_SHARDS};
use ports::{catalog_keys, Catalog, CatalogExt, Condition, ErrorKind, Queue, Record};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A claim not followed by its jobs within this time is taken again.
pub const RECLAIM_AFTER_MINUTES: i64 = 30;

/// How long a day's `schedrun#<day>` markers are kept: DynamoDB's time to live deletes
/// them after, since only today's are ever read.
pub const MARKER_DAYS: i64 = 3;

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Tasks whose day was claimed by this tick (their jobs were queued).
    pub queued: u64,
    /// Fetch jobs queued: one per known account, plus one listing job per connector task.
    pub jobs: u64,
    /// Tasks claimed but gone or being deleted: nothing to queue.
    pub gone: u64,
    /// Tasks already started today.
    pub already: u64,
    /// Hour shards skipped because they were complete for today.
    pub shards_done: u64,
    /// Tasks that could not be claimed or queued (retried at the next tick).
    pub failed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunRecord {
    day: String,
    sent: bool,
    at: DateTime<Utc>,
}

/// The fetch jobs that back up every account of a task: one per account the catalog
/// knows (and the source still lists), and for a connector task one without an account, which lists the source's
/// accounts and queues those not known yet. `None` when the task is gone or being deleted.
/// The scheduler calls it with the day (`YYYY-MM-DD`), on-demand backups without.
///
/// # Errors
/// A catalog failure.
pub async fn backup_jobs(
    ports: &engine::Ports,
    tenant: &TenantId,
    task: &TaskId,
    day: Option<&str>,
) -> ports::Result<Option<Vec<JobEnvelope>>> {
    let key = catalog_keys::task(tenant, task);
    let Some(rec) = ports.catalog.get(&key.pk, &key.sk).await? else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<TaskRecord>(&rec.value) else {
        tracing::warn!(tenant = %tenant, task = %task, "unreadable task record skipped");
        return Ok(None);
    };
    if record.deleting {
        return Ok(None);
    }
    let range = catalog_keys::accounts(tenant, task);
    let accounts: Vec<AccountId> = ports
        .catalog
        .query_all(&range.pk, &range.prefix)
        .await?
        .iter()
        .filter(|r| !removed(&r.value))
        .filter_map(|r| AccountId::new(range.rest(&r.sk)?).ok())
        .collect();
    let job = |account: Option<AccountId>| {
        JobEnvelope::new(JobKind::Backup(BackupJob {
            tenant: tenant.clone(),
            task: task.clone(),
            account,
            scheduled_for: day.map(str::to_string),
            continuation: 0,
        }))
    };
    // Every day also asks the source for its accounts: a mailbox or site created since
    // is backed up from its first day.
    let mut jobs: Vec<JobEnvelope> = accounts.into_iter().map(|a| job(Some(a))).collect();
    jobs.push(job(None));
    Ok(Some(jobs))
}

/// Whether an account record says the source no longer lists the account.
fn removed(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(value)
        .is_ok_and(|v| v.get(crate::fetch::REMOVED_FIELD).is_some())
}

enum Claim {
    /// This caller must queue the task; the run record is at this version.
    Mine(u64),
    /// The day's job is queued.
    Sent,
    /// Another tick claimed the day and has not confirmed queueing yet.
    Pending,
}

/// Claims `day` for a task.
async fn claim(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    task: &TaskId,
    day: &str,
    now: DateTime<Utc>,
) -> ports::Result<Claim> {
    let key = catalog_keys::run(tenant, task);
    let existing = catalog.get(&key.pk, &key.sk).await?;
    let (cond, version) = match &existing {
        None => (Condition::Absent, 1),
        Some(rec) => {
            let run: Option<RunRecord> = serde_json::from_slice(&rec.value).ok();
            if let Some(run) = run {
                let stale = now - run.at >= chrono::Duration::minutes(RECLAIM_AFTER_MINUTES);
                if run.day == day && run.sent {
                    return Ok(Claim::Sent);
                }
                if run.day == day && !stale {
                    return Ok(Claim::Pending);
                }
            }
            (Condition::Version(rec.version), rec.version + 1)
        }
    };
    let value = serde_json::to_vec(&RunRecord {
        day: day.to_string(),
        sent: false,
        at: now,
    })
    .expect("run records serialise");
    let rec = Record {
        version,
        ..Record::new(key.pk, key.sk, value)
    };
    match catalog.put(rec, cond).await {
        Ok(()) => Ok(Claim::Mine(version)),
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(Claim::Pending),
        Err(e) => Err(e),
    }
}

async fn mark_sent(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    task: &TaskId,
    day: &str,
    version: u64,
    now: DateTime<Utc>,
) -> ports::Result<()> {
    let value = serde_json::to_vec(&RunRecord {
        day: day.to_string(),
        sent: true,
        at: now,
    })
    .expect("run records serialise");
    let key = catalog_keys::run(tenant, task);
    let rec = Record {
        version: version + 1,
        ..Record::new(key.pk, key.sk, value)
    };
    match catalog.put(rec, Condition::Version(version)).await {
        // Another tick re-claimed a stale claim meanwhile: its record stands.
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(()),
        other => other,
    }
}

/// Queues a new task's first backup at once, as its backup of today: the day is claimed
/// as the scheduler claims it, so the day's tick does not queue it again (the task's
/// backup hour applies from tomorrow). Returns how many jobs were queued: none when the
/// day was already claimed.
///
/// # Errors
/// A catalog or queue failure; the day's claim is then taken over by a tick after
/// [`RECLAIM_AFTER_MINUTES`], so the first backup is late, not lost.
pub async fn queue_today(
    ports: &engine::Ports,
    queue: &dyn Queue,
    tenant: &TenantId,
    task: &TaskId,
) -> ports::Result<usize> {
    let now = ports.clock.now();
    let day = now.format("%Y-%m-%d").to_string();
    let Claim::Mine(version) = claim(ports.catalog.as_ref(), tenant, task, &day, now).await? else {
        return Ok(0);
    };
    let Some(jobs) = backup_jobs(ports, tenant, task, Some(&day)).await? else {
        return Ok(0);
    };
    send_jobs(queue, &jobs).await?;
    mark_sent(ports.catalog.as_ref(), tenant, task, &day, version, now).await?;
    Ok(jobs.len())
}

/// One scheduler tick at the clock's current time.
///
/// # Errors
/// None so far: a shard that cannot be read, or a task that cannot be claimed or queued,
/// is counted in `failed` and tried again at the next tick. (The `Result` leaves room for
/// failures that must stop a tick.)
pub async fn tick(ctx: &Context) -> ports::Result<TickReport> {
    let now = ctx.ports.clock.now();
    let day = now.format("%Y-%m-%d").to_string();
    let catalog = &ctx.ports.catalog;
    let done_range = catalog_keys::schedule_done(&day);
    let mut report = TickReport::default();
    // Without the done markers a tick only does more work, so it goes on.
    let done: HashSet<String> = match catalog.query_all(&done_range.pk, &done_range.prefix).await {
        Ok(recs) => recs.into_iter().map(|r| r.sk).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "schedule markers unreadable; checking every shard");
            HashSet::new()
        }
    };
    for hour in 0..=now.hour() as u8 {
        for shard in 0..SCHEDULE_SHARDS {
            let marker = catalog_keys::schedule_done_shard(&day, hour, shard);
            if done.contains(&marker.sk) {
                report.shards_done += 1;
                continue;
            }
            let failed_before = report.failed;
            let mut pending = false;
            let mut batch = Batch::default();
            let range = catalog_keys::schedule_shard(hour, shard);
            let entries = match catalog.query_all(&range.pk, &range.prefix).await {
                Ok(v) => v,
                Err(e) => {
                    // This shard waits for the next tick; the others go on.
                    tracing::warn!(hour, shard, error = %e, "schedule shard unreadable");
                    report.failed += 1;
                    continue;
                }
            };
            for rec in entries {
                let Some((tenant, task)) = catalog_keys::parse_schedule(&rec.sk) else {
                    tracing::warn!(sk = %rec.sk, "unreadable schedule entry skipped");
                    continue;
                };
                let version = match claim(catalog.as_ref(), &tenant, &task, &day, now).await {
                    Ok(Claim::Mine(version)) => version,
                    Ok(Claim::Sent) => {
                        report.already += 1;
                        continue;
                    }
                    Ok(Claim::Pending) => {
                        report.already += 1;
                        pending = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, task = %task, error = %e, "claim failed");
                        report.failed += 1;
                        continue;
                    }
                };
                match backup_jobs(&ctx.ports, &tenant, &task, Some(&day)).await {
                    Ok(Some(jobs)) => batch.add(tenant, task, version, jobs),
                    Ok(None) => {
                        report.gone += 1;
                        if let Err(e) =
                            mark_sent(catalog.as_ref(), &tenant, &task, &day, version, now).await
                        {
                            tracing::warn!(tenant = %tenant, task = %task, error = %e, "run not marked sent");
                        }
                    }
                    Err(e) => {
                        // The claim stays unsent and is taken again after the reclaim time.
                        tracing::warn!(tenant = %tenant, task = %task, error = %e, "accounts unreadable");
                        report.failed += 1;
                    }
                }
                if batch.jobs.len() >= ports::QUEUE_MAX_BATCH {
                    batch.send(ctx, &day, now, &mut report, false).await;
                }
            }
            batch.send(ctx, &day, now, &mut report, true).await;
            // The shard is done for today only when every task in it is queued; a claim
            // still pending may yet need taking over.
            if report.failed == failed_before && !pending {
                let expires = now + chrono::Duration::days(MARKER_DAYS);
                let _ = catalog
                    .put_expiring(
                        Record::new(marker.pk, marker.sk, Vec::new()),
                        Condition::None,
                        expires.timestamp().max(0) as u64,
                    )
                    .await;
            }
        }
    }
    Ok(report)
}

/// Claimed tasks whose jobs wait to be sent, gathered across tasks so that messages go
/// ten to a request whatever the number of accounts per task.
#[derive(Default)]
struct Batch {
    /// Each task with its run record's version and how many of `jobs` are its.
    tasks: Vec<(TenantId, TaskId, u64, usize)>,
    jobs: Vec<JobEnvelope>,
}

impl Batch {
    fn add(&mut self, tenant: TenantId, task: TaskId, version: u64, jobs: Vec<JobEnvelope>) {
        self.tasks.push((tenant, task, version, jobs.len()));
        self.jobs.extend(jobs);
    }

    /// Sends the full batches of ten (everything when `all`) and marks sent the tasks
    /// whose jobs have all gone; a task whose jobs straddle the cut waits for the rest.
    /// When a send fails, every task still in the batch stays claimed but unsent, to be
    /// queued again after the reclaim time (its accounts' done days make that harmless).
    async fn send(
        &mut self,
        ctx: &Context,
        day: &str,
        now: DateTime<Utc>,
        report: &mut TickReport,
        all: bool,
    ) {
        let n = if all {
            self.jobs.len()
        } else {
            self.jobs.len() / ports::QUEUE_MAX_BATCH * ports::QUEUE_MAX_BATCH
        };
        if n > 0 {
            if let Err(e) = send_jobs(ctx.queue.as_ref(), &self.jobs[..n]).await {
                tracing::warn!(error = %e, jobs = n, "backup jobs not queued");
                report.failed += self.tasks.len() as u64;
                self.tasks.clear();
                self.jobs.clear();
                return;
            }
            report.jobs += n as u64;
            self.jobs.drain(..n);
        }
        let mut sent = n;
        let mut done = 0;
        for (tenant, task, version, count) in &self.tasks {
            if *count > sent {
                break;
            }
            sent -= count;
            done += 1;
            if let Err(e) =
                mark_sent(ctx.ports.catalog.as_ref(), tenant, task, day, *version, now).await
            {
                // The jobs are queued; an unmarked claim is at worst queued again after
                // the reclaim time, and the fetcher skips the done day.
                tracing::warn!(tenant = %tenant, task = %task, error = %e, "run not marked sent");
            }
            report.queued += 1;
        }
        self.tasks.drain(..done);
        // What is left of a straddling task's jobs is already off the front of `jobs`.
        if let Some(first) = self.tasks.first_mut() {
            first.3 -= sent;
        }
    }
}
