//! The daily scheduler. Every tick (EventBridge, every 15 minutes) it finds the tasks whose
//! backup hour has come today and that have not been started today, and queues one job per
//! task; the fetcher expands it into one job per account.
//!
//! Tasks are found through the schedule index (`sched#<hour>#<shard>`), never by scanning
//! tenants. A task's day is claimed with one conditional write on its run record, so two
//! overlapping ticks queue it once. A claim whose jobs were never sent (the tick died in
//! between) is taken again after [`RECLAIM_AFTER_MINUTES`]; the fetcher's per-account day
//! record makes the rare duplicate that this allows harmless. Once every task of an hour's
//! shard is claimed, a marker for the day lets later ticks skip that shard.

use crate::{send_jobs, Context};
use chrono::{DateTime, Timelike, Utc};
use domain::{BackupJob, JobEnvelope, JobKind, TaskId, TenantId};
use engine::{schedule_pk, SCHEDULE_SHARDS};
use ports::{CatalogExt, Condition, ErrorKind, Record};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A claim not followed by its jobs within this time is taken again.
pub const RECLAIM_AFTER_MINUTES: i64 = 30;

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    /// Tasks whose day was claimed by this tick (a job was queued for each).
    pub queued: u64,
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

fn run_sk(task: &TaskId) -> String {
    format!("run#{task}")
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
    ctx: &Context,
    tenant: &TenantId,
    task: &TaskId,
    day: &str,
    now: DateTime<Utc>,
) -> ports::Result<Claim> {
    let catalog = &ctx.ports.catalog;
    let pk = format!("t#{tenant}");
    let existing = catalog.get(&pk, &run_sk(task)).await?;
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
        ..Record::new(pk, run_sk(task), value)
    };
    match catalog.put(rec, cond).await {
        Ok(()) => Ok(Claim::Mine(version)),
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(Claim::Pending),
        Err(e) => Err(e),
    }
}

async fn mark_sent(
    ctx: &Context,
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
    let rec = Record {
        version: version + 1,
        ..Record::new(format!("t#{tenant}"), run_sk(task), value)
    };
    match ctx
        .ports
        .catalog
        .put(rec, Condition::Version(version))
        .await
    {
        // Another tick re-claimed a stale claim meanwhile: its record stands.
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(()),
        other => other,
    }
}

/// One scheduler tick at the clock's current time.
///
/// # Errors
/// Only when the catalog cannot be read at all; a task that cannot be claimed or queued
/// is counted in `failed` and tried again at the next tick.
pub async fn tick(ctx: &Context) -> ports::Result<TickReport> {
    let now = ctx.ports.clock.now();
    let day = now.format("%Y-%m-%d").to_string();
    let catalog = &ctx.ports.catalog;
    let done_pk = format!("schedrun#{day}");
    let done: HashSet<String> = catalog
        .query_all(&done_pk, "")
        .await?
        .into_iter()
        .map(|r| r.sk)
        .collect();
    let mut report = TickReport::default();
    for hour in 0..=now.hour() as u8 {
        for shard in 0..SCHEDULE_SHARDS {
            let marker = format!("{hour:02}#{shard:02}");
            if done.contains(&marker) {
                report.shards_done += 1;
                continue;
            }
            let failed_before = report.failed;
            let mut pending = false;
            let mut batch: Vec<(TenantId, TaskId, u64)> = Vec::new();
            for rec in catalog.query_all(&schedule_pk(hour, shard), "").await? {
                let parsed = rec
                    .sk
                    .split_once('#')
                    .and_then(|(t, k)| Some((TenantId::new(t).ok()?, TaskId::new(k).ok()?)));
                let Some((tenant, task)) = parsed else {
                    tracing::warn!(sk = %rec.sk, "unreadable schedule entry skipped");
                    continue;
                };
                match claim(ctx, &tenant, &task, &day, now).await {
                    Ok(Claim::Mine(version)) => batch.push((tenant, task, version)),
                    Ok(Claim::Sent) => report.already += 1,
                    Ok(Claim::Pending) => {
                        report.already += 1;
                        pending = true;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, task = %task, error = %e, "claim failed");
                        report.failed += 1;
                    }
                }
                if batch.len() == ports::QUEUE_MAX_BATCH {
                    send(ctx, &mut batch, &day, now, &mut report).await;
                }
            }
            send(ctx, &mut batch, &day, now, &mut report).await;
            // The shard is done for today only when every task in it is queued; a claim
            // still pending may yet need taking over.
            if report.failed == failed_before && !pending {
                let _ = catalog
                    .put(
                        Record::new(done_pk.clone(), marker, Vec::new()),
                        Condition::None,
                    )
                    .await;
            }
        }
    }
    Ok(report)
}

async fn send(
    ctx: &Context,
    batch: &mut Vec<(TenantId, TaskId, u64)>,
    day: &str,
    now: DateTime<Utc>,
    report: &mut TickReport,
) {
    if batch.is_empty() {
        return;
    }
    let jobs: Vec<JobEnvelope> = batch
        .iter()
        .map(|(tenant, task, _)| {
            JobEnvelope::new(JobKind::Backup(BackupJob {
                tenant: tenant.clone(),
                task: task.clone(),
                account: None,
                scheduled_for: Some(day.to_string()),
                continuation: 0,
            }))
        })
        .collect();
    match send_jobs(ctx.queue.as_ref(), &jobs).await {
        Ok(()) => {
            for (tenant, task, version) in batch.iter() {
                if let Err(e) = mark_sent(ctx, tenant, task, day, *version, now).await {
                    // The job is queued; an unmarked claim is at worst queued again
                    // after the reclaim time, and the fetcher skips the done day.
                    tracing::warn!(tenant = %tenant, task = %task, error = %e, "run not marked sent");
                }
                report.queued += 1;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = batch.len(), "backup jobs not queued");
            report.failed += batch.len() as u64;
        }
    }
    batch.clear();
}
