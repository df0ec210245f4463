//! The fetcher: runs one backup job. A job without an account lists the task's accounts
//! (the connector asks the source, and the catalog records them) and queues jobs for those
//! the catalog did not know: at a task's first backup all of them, later only new ones,
//! since the scheduler queues the known ones itself. A job with an account backs it up
//! under a lease, and announces how it went on the event bus.
//!
//! Each account has one state record (`state#<task>#<account>` in the tenant's partition):
//! who holds its lease and until when, the last scheduled day done, the last snapshot and
//! the last error. A duplicate delivery of a daily job finds its day done; a job for an
//! account another worker is backing up waits until the lease ends; a worker
//! that died mid-backup loses its lease when it expires, and the next delivery takes over
//! and reuses what the dead run uploaded.

use crate::{send_jobs, Context};
use chrono::{DateTime, Utc};
use domain::{AccountId, BackupJob, JobEnvelope, JobKind, TaskId, TenantId};
use engine::{BackupEnd, BackupOptions, Result};

/// A backup that has paused this many times is given up (and reported): at 15 minutes a
/// run, two days of work on one account means something is wrong.
pub const MAX_CONTINUATIONS: u32 = 200;
use ports::{catalog_keys, CatalogExt, CatalogKey, Condition, ErrorKind, Record};
use serde::{Deserialize, Serialize};

/// The state of one account's backups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The last scheduled day (`YYYY-MM-DD`) whose backup completed.
    pub day_done: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The scheduled day of the job holding the lease (`None`: on demand).
    pub lease_day: Option<String>,
    /// The scheduled day being worked on and when its first attempt started: a snapshot
    /// taken since then completes the day, even if the attempt that committed it died
    /// before recording so (a lost response), and no second snapshot is made.
    #[serde(default)]
    pub day_attempt: Option<(String, DateTime<Utc>)>,
    pub last_snapshot: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure, one line, no secrets; cleared by a success.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub failures: u32,
}

/// What running a job did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A snapshot was committed.
    BackedUp {
        snapshot: String,
        items: u64,
        errors: u64,
    },
    /// A task job listed the accounts and queued jobs for this many new ones.
    Expanded { accounts: usize },
    /// The day's backup of this account is already done (a duplicate delivery).
    AlreadyDone,
    /// Another worker holds the account; try again later.
    Busy,
    /// The task or job no longer exists, or is being deleted.
    Gone,
    /// The run's time was up: its work is checkpointed and a continuation job queued.
    Paused { items: u64, pauses: u32 },
    /// A restore finished (items that could not be restored are in the job's report).
    Restored { items: u64, errors: u64 },
    /// An export's zip is stored and offered for download.
    Exported { bytes: u64 },
    /// A prune or repack finished: packs deleted and the bytes they held.
    Pruned { deleted: u64, freed_bytes: u64 },
    /// The job failed for good; its record says why.
    Failed { error: String },
}

impl Outcome {
    /// Whether the message must be delivered again later.
    pub fn retry(&self) -> bool {
        matches!(self, Outcome::Busy)
    }
}

/// The backup state of an account, for status pages and reports.
///
/// # Errors
/// A catalog failure.
pub async fn account_state(
    ports: &engine::Ports,
    tenant: &TenantId,
    task: &TaskId,
    account: &AccountId,
) -> Result<Option<AccountState>> {
    let key = catalog_keys::state(tenant, task, account);
    let rec = ports.catalog.get(&key.pk, &key.sk).await?;
    Ok(rec.and_then(|r| serde_json::from_slice(&r.value).ok()))
}

/// Writes `state` over the record at `version` (0: absent). Returns the new version, or
/// `None` when someone else wrote first.
async fn put_state(
    ctx: &Context,
    key: &CatalogKey,
    state: &AccountState,
    version: u64,
) -> Result<Option<u64>> {
    let value = serde_json::to_vec(state).expect("states serialise");
    let cond = if version == 0 {
        Condition::Absent
    } else {
        Condition::Version(version)
    };
    let rec = Record {
        version: version + 1,
        ..Record::new(key.pk.clone(), key.sk.clone(), value)
    };
    match ctx.ports.catalog.put(rec, cond).await {
        Ok(()) => Ok(Some(version + 1)),
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The field of an account's catalog record (beside the connector's account info) that
/// says since when the source no longer lists it: the scheduler then stops queueing it,
/// its snapshots stay, and a listing that finds it again rewrites the record without it.
pub const REMOVED_FIELD: &str = "removed_at";

/// Marks an account the source no longer lists (once).
async fn mark_removed(
    ctx: &Context,
    tenant: &TenantId,
    task: &engine::TaskRecord,
    account: &AccountId,
) -> Result<()> {
    let key = catalog_keys::account(tenant, &task.name, account);
    let Some(rec) = ctx.ports.catalog.get(&key.pk, &key.sk).await? else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(mut info)) = serde_json::from_slice(&rec.value) else {
        return Ok(());
    };
    if info.contains_key(REMOVED_FIELD) {
        return Ok(());
    }
    info.insert(
        REMOVED_FIELD.into(),
        serde_json::json!(ctx.ports.clock.now()),
    );
    let value = serde_json::to_vec(&info).expect("account records serialise");
    let next = Record {
        version: rec.version + 1,
        ..Record::new(key.pk, key.sk, value)
    };
    match ctx
        .ports
        .catalog
        .put(next, Condition::Version(rec.version))
        .await
    {
        // A listing at the same moment wrote it: its record stands.
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(()),
        other => Ok(other?),
    }
}

/// Runs one backup job.
///
/// # Errors
/// What the backup returns (a source that refused, storage that failed); the account's
/// state records it, and the caller leaves the message to be delivered again (after too
/// many deliveries SQS sets it aside in the dead-letter queue).
pub async fn run_backup(ctx: &Context, job: &BackupJob) -> Result<Outcome> {
    let engine = ctx.engine(&job.tenant);
    let task = match engine.task(job.task.as_str()).await {
        Ok(t) if !t.deleting => t,
        Ok(_) | Err(engine::Error::NotFound(_)) => return Ok(Outcome::Gone),
        Err(e) => return Err(e),
    };
    let Some(account) = &job.account else {
        let known: std::collections::HashSet<AccountId> =
            engine.accounts(&task).await?.into_iter().collect();
        let connector = engine.connector(&task, ctx.connectors.as_ref()).await?;
        let accounts: Vec<AccountId> = engine
            .refresh_accounts(&task, connector.as_ref())
            .await?
            .into_iter()
            .map(|a| a.id)
            .collect();
        let found: std::collections::HashSet<&AccountId> = accounts.iter().collect();
        for gone in known.iter().filter(|a| !found.contains(a)) {
            mark_removed(ctx, &job.tenant, &task, gone).await?;
        }
        // New accounts are queued; so are known ones that no backup has ever started (no
        // state record): a redelivery after the accounts were recorded but before their
        // jobs were sent (a write that took effect but answered an error) must not leave
        // a new task's accounts without their first backup. The daily tick has queued the
        // others. A duplicate job finds its day done or its account leased. The states are
        // read with one query of the task's records, not one read per account.
        let started: std::collections::HashSet<String> =
            if accounts.iter().any(|a| known.contains(a)) {
                let range = catalog_keys::states(&job.tenant, &task.name);
                ctx.ports
                    .catalog
                    .query_all(&range.pk, &range.prefix)
                    .await?
                    .iter()
                    .filter_map(|r| range.rest(&r.sk).map(str::to_string))
                    .collect()
            } else {
                Default::default()
            };
        let queue: Vec<AccountId> = accounts
            .iter()
            .filter(|a| !known.contains(*a) || !started.contains(a.as_str()))
            .cloned()
            .collect();
        let jobs: Vec<JobEnvelope> = queue
            .into_iter()
            .map(|a| {
                JobEnvelope::new(JobKind::Backup(BackupJob {
                    account: Some(a),
                    ..job.clone()
                }))
            })
            .collect();
        send_jobs(ctx.queue.as_ref(), &jobs).await?;
        return Ok(Outcome::Expanded {
            accounts: jobs.len(),
        });
    };

    // Take the account's lease.
    let sk = catalog_keys::state(&job.tenant, &task.name, account);
    let now = ctx.ports.clock.now();
    let existing = ctx.ports.catalog.get(&sk.pk, &sk.sk).await?;
    let (mut state, version) = match &existing {
        Some(r) => (
            serde_json::from_slice::<AccountState>(&r.value).unwrap_or_default(),
            r.version,
        ),
        None => (AccountState::default(), 0),
    };
    if job.scheduled_for.is_some() && state.day_done == job.scheduled_for {
        return Ok(Outcome::AlreadyDone);
    }
    let held = state
        .lease_owner
        .as_deref()
        .is_some_and(|o| o != ctx.worker)
        && state.lease_until.is_some_and(|u| u > now);
    // Held by another worker: wait, even for the same day. The holder may be dead (its
    // lease write took effect but its answer was lost, and this is the redelivery of its
    // own message): dropping this job would then lose the day. Waiting costs one more
    // delivery, after which the day is done or the lease has expired.
    if held {
        return Ok(Outcome::Busy);
    }
    state.lease_owner = Some(ctx.worker.clone());
    state.lease_until = Some(now + ctx.lease);
    state.lease_day = job.scheduled_for.clone();
    let earlier_attempt = match (&job.scheduled_for, &state.day_attempt) {
        (Some(day), Some((d, at))) if d == day => Some(*at),
        (Some(day), _) => {
            state.day_attempt = Some((day.clone(), now));
            None
        }
        (None, _) => None,
    };
    let Some(version) = put_state(ctx, &sk, &state, version).await? else {
        return Ok(Outcome::Busy);
    };
    // An earlier attempt at this day may have committed its snapshot and died before
    // recording it: then the day is done.
    if let Some(at) = earlier_attempt {
        let latest = engine.latest_snapshot(&task, account).await?;
        if latest.is_some_and(|s| s.taken_at >= at) {
            state.day_done = job.scheduled_for.clone();
            state.lease_owner = None;
            state.lease_until = None;
            state.lease_day = None;
            put_state(ctx, &sk, &state, version).await?;
            return Ok(Outcome::AlreadyDone);
        }
    }

    let deadline = ctx.budget.map(|b| std::time::Instant::now() + b);
    let result = if job.continuation >= MAX_CONTINUATIONS {
        Err(engine::Error::Invalid(format!(
            "the backup of account {account} paused {MAX_CONTINUATIONS} times without finishing; it was stopped"
        )))
    } else {
        let opts = BackupOptions {
            deadline,
            ..BackupOptions::default()
        };
        match engine.connector(&task, ctx.connectors.as_ref()).await {
            Ok(connector) => {
                engine
                    .backup(&task, account, connector.as_ref(), &opts)
                    .await
            }
            Err(e) => Err(e),
        }
    };
    // Paused: queue the continuation before letting go of the account, so that a crash
    // in between leaves the (re-delivered) original job to go on from the checkpoint.
    if let Ok(BackupEnd::Paused {
        items_this_run,
        pauses,
    }) = &result
    {
        let next = JobEnvelope::new(JobKind::Backup(BackupJob {
            continuation: job.continuation + 1,
            ..job.clone()
        }));
        send_jobs(ctx.queue.as_ref(), &[next]).await?;
        state.lease_owner = None;
        state.lease_until = None;
        state.lease_day = None;
        put_state(ctx, &sk, &state, version).await?;
        return Ok(Outcome::Paused {
            items: *items_this_run,
            pauses: *pauses,
        });
    }
    let result = result.map(|end| match end {
        BackupEnd::Committed(s) => *s,
        BackupEnd::Paused { .. } => unreachable!("handled above"),
    });

    // Release the lease and record how it went.
    state.lease_owner = None;
    state.lease_until = None;
    state.lease_day = None;
    let mut detail = crate::events::base(&job.tenant, &task.name, account);
    detail["scheduled_for"] = serde_json::json!(job.scheduled_for);
    let outcome = match &result {
        Ok(snap) => {
            detail["snapshot"] = serde_json::json!(snap.id);
            detail["items"] = serde_json::json!(snap.stats.items);
            detail["folders"] = serde_json::json!(snap.stats.folders);
            detail["bytes"] = serde_json::json!(snap.stats.bytes);
            detail["items_read"] = serde_json::json!(snap.stats.items_read);
            detail["stored_bytes"] = serde_json::json!(snap.stats.stored_bytes);
            detail["item_errors"] = serde_json::json!(snap.error_count);
            detail["runs"] = serde_json::json!(job.continuation + 1);
            if job.scheduled_for.is_some() {
                state.day_done = job.scheduled_for.clone();
            }
            state.last_snapshot = Some(snap.id.to_string());
            state.last_success = Some(ctx.ports.clock.now());
            state.last_error = None;
            state.failures = 0;
            Ok(Outcome::BackedUp {
                snapshot: snap.id.to_string(),
                items: snap.stats.items,
                errors: snap.error_count,
            })
        }
        Err(e) => {
            state.last_error = Some(e.to_string());
            state.failures += 1;
            detail["reason"] = serde_json::json!(e.kind().reason());
            detail["retryable"] = serde_json::json!(e.is_retryable());
            detail["failures"] = serde_json::json!(state.failures);
            Err(())
        }
    };
    if put_state(ctx, &sk, &state, version).await?.is_none() {
        // The lease expired during the run and another worker took it: its record stands.
        tracing::warn!(tenant = %job.tenant, task = %task.name, "account lease was taken over during the backup");
    }
    let detail_type = if outcome.is_ok() {
        crate::events::BACKUP_COMPLETED
    } else {
        crate::events::BACKUP_FAILED
    };
    crate::events::publish(ctx, detail_type, detail).await;
    match outcome {
        Ok(o) => Ok(o),
        Err(()) => Err(result.expect_err("the failure above")),
    }
}
