//! Restore, export and prune jobs: asked for through the API, queued, run by the restorer, and
//! reported through a job record (`job#<id>` in the tenant's partition) that the API reads.
//!
//! A job runs once even when delivered twice: a finished job is not run again, and a job
//! another worker is running is left to it until its lease runs out. A restore's folder
//! label comes from the job's creation time, so a rerun after a crash restores into the
//! same `Lifeboat Restore <timestamp>` folder rather than a second one.

use crate::fetch::Outcome;
use crate::Context;
use chrono::{DateTime, Utc};
use domain::{
    AccountId, ExportJob, JobEnvelope, JobKind, PruneJob, RestoreJob, SnapshotId, TaskId, TenantId,
};
use engine::{
    Destination, Error, ExportFormat, ExportOptions, NoProgress, Ports, PruneOptions,
    RestoreOptions, Result,
};
use ports::{catalog_keys, Condition, ErrorKind, ObjectKey, Queue, Record};
use serde::{Deserialize, Serialize};

/// The object kind under which finished exports are kept for download.
pub const EXPORT_KIND: &str = ports::EXPORT_KIND;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

/// What the API shows of a restore, export or prune job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `restore`, `export`, `prune` or `repack`.
    pub kind: String,
    pub state: JobState,
    pub task: TaskId,
    /// The account and snapshot restored or exported (a prune is about the whole task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotId>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Who is running it and until when (a crashed worker's job is taken over after).
    pub worker: Option<String>,
    /// The restore or export report.
    pub report: Option<serde_json::Value>,
    /// Why it failed: one line, no secrets.
    pub error: Option<String>,
    /// The finished export's object id (kind [`EXPORT_KIND`]) and size.
    pub export_id: Option<String>,
    pub export_bytes: Option<u64>,
}

/// A new job id: sortable by time, unguessable.
pub fn new_job_id(now: DateTime<Utc>) -> String {
    format!("{}-{:016x}", now.format("%Y%m%dt%H%M%S"), rand_u64())
}

fn rand_u64() -> u64 {
    // The standard library's hasher is seeded from the OS's random source per process
    // and per instance; two of them give 64 bits no caller can predict.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// The job record `id` of `tenant`.
///
/// # Errors
/// A catalog failure.
pub async fn job(ports: &engine::Ports, tenant: &TenantId, id: &str) -> Result<Option<JobRecord>> {
    let key = catalog_keys::job(tenant, id);
    let rec = ports.catalog.get(&key.pk, &key.sk).await?;
    Ok(rec.and_then(|r| serde_json::from_slice(&r.value).ok()))
}

async fn load(ctx: &Context, tenant: &TenantId, id: &str) -> Result<Option<(JobRecord, u64)>> {
    let key = catalog_keys::job(tenant, id);
    let rec = ctx.ports.catalog.get(&key.pk, &key.sk).await?;
    Ok(rec.and_then(|r| {
        serde_json::from_slice::<JobRecord>(&r.value)
            .ok()
            .map(|j| (j, r.version))
    }))
}

async fn save(ports: &Ports, tenant: &TenantId, job: &JobRecord, version: u64) -> Result<bool> {
    let key = catalog_keys::job(tenant, &job.id);
    let value = serde_json::to_vec(job).expect("job records serialise");
    let cond = if version == 0 {
        Condition::Absent
    } else {
        Condition::Version(version)
    };
    let rec = Record {
        version: version + 1,
        ..Record::new(key.pk, key.sk, value)
    };
    match ports.catalog.put(rec, cond).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::ConditionFailed => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Records a restore, export or prune job and queues it. The job's record exists before its
/// message, so the API can always show a job it accepted.
///
/// # Errors
/// A catalog or queue failure (the job is then marked failed, with why).
pub async fn submit(ports: &Ports, transfers: &dyn Queue, job: JobKind) -> Result<JobRecord> {
    let now = ports.clock.now();
    let (tenant, rec) = match &job {
        JobKind::Restore(j) => (
            &j.tenant,
            new_record(
                &j.job,
                "restore",
                &j.task,
                Some((&j.account, &j.snapshot)),
                now,
            ),
        ),
        JobKind::Export(j) => (
            &j.tenant,
            new_record(
                &j.job,
                "export",
                &j.task,
                Some((&j.account, &j.snapshot)),
                now,
            ),
        ),
        JobKind::Prune(j) => (
            &j.tenant,
            new_record(
                &j.job,
                if j.repack { "repack" } else { "prune" },
                &j.task,
                None,
                now,
            ),
        ),
        JobKind::Backup(_) => {
            return Err(Error::Invalid("backups are queued for the fetcher".into()));
        }
    };
    if !save(ports, tenant, &rec, 0).await? {
        return Err(Error::Invalid(format!("job {} already exists", rec.id)));
    }
    let body = JobEnvelope::new(job.clone()).encode();
    if let Err(e) = transfers.send_batch(&[body]).await {
        let mut failed = rec.clone();
        failed.state = JobState::Failed;
        failed.error = Some(format!("the job could not be queued: {e}"));
        let _ = save(ports, tenant, &failed, 1).await;
        return Err(e.into());
    }
    Ok(rec)
}

fn new_record(
    id: &str,
    kind: &str,
    task: &TaskId,
    item: Option<(&AccountId, &SnapshotId)>,
    now: DateTime<Utc>,
) -> JobRecord {
    JobRecord {
        id: id.to_string(),
        kind: kind.to_string(),
        state: JobState::Queued,
        task: task.clone(),
        account: item.map(|(a, _)| a.clone()),
        snapshot: item.map(|(_, s)| s.clone()),
        created_at: now,
        started_at: None,
        finished_at: None,
        worker: None,
        report: None,
        error: None,
        export_id: None,
        export_bytes: None,
    }
}

/// Marks the job running for this worker. `None` when there is nothing to do now.
async fn start(
    ctx: &Context,
    tenant: &TenantId,
    id: &str,
) -> Result<Result<(JobRecord, u64), Outcome>> {
    let Some((mut rec, version)) = load(ctx, tenant, id).await? else {
        return Ok(Err(Outcome::Gone));
    };
    let now = ctx.ports.clock.now();
    match rec.state {
        JobState::Done | JobState::Failed => return Ok(Err(Outcome::AlreadyDone)),
        JobState::Running
            if rec.worker.as_deref() != Some(&ctx.worker)
                && rec.started_at.is_some_and(|s| now < s + ctx.lease) =>
        {
            return Ok(Err(Outcome::Busy));
        }
        _ => {}
    }
    rec.state = JobState::Running;
    rec.started_at = Some(now);
    rec.worker = Some(ctx.worker.clone());
    if !save(&ctx.ports, tenant, &rec, version).await? {
        return Ok(Err(Outcome::Busy));
    }
    Ok(Ok((rec, version + 1)))
}

/// Records how the job ended. A failure a retry can cure (storage or source throttling)
/// puts the job back in the queue's hands instead: the record goes back to queued and
/// the caller fails the message so that it is delivered again.
async fn finish<T: Serialize>(
    ctx: &Context,
    tenant: &TenantId,
    mut rec: JobRecord,
    version: u64,
    result: &Result<T>,
) -> Result<()> {
    rec.worker = None;
    match result {
        Ok(report) => {
            rec.state = JobState::Done;
            rec.finished_at = Some(ctx.ports.clock.now());
            rec.report = serde_json::to_value(report).ok();
            rec.error = None;
        }
        Err(e) if e.is_retryable() => {
            rec.state = JobState::Queued;
            rec.error = Some(format!("will retry: {e}"));
        }
        Err(e) => {
            rec.state = JobState::Failed;
            rec.finished_at = Some(ctx.ports.clock.now());
            rec.error = Some(e.to_string());
        }
    }
    if !save(&ctx.ports, tenant, &rec, version).await? {
        tracing::warn!(job = %rec.id, "job record changed while the job ran; its result is kept");
    }
    Ok(())
}

/// Announces a finished job: completed, or failed for good (a failure that will be retried
/// is not announced yet).
async fn announce<T>(
    ctx: &Context,
    result: &Result<T>,
    mut detail: serde_json::Value,
    (completed, failed): (&str, &str),
    counts: impl FnOnce(&T, &mut serde_json::Value),
) {
    match result {
        Ok(r) => {
            counts(r, &mut detail);
            crate::events::publish(ctx, completed, detail).await;
        }
        Err(e) if e.is_retryable() => {}
        Err(e) => {
            detail["reason"] = serde_json::json!(e.kind().reason());
            crate::events::publish(ctx, failed, detail).await;
        }
    }
}

fn outcome_of<T>(result: Result<T>, ok: impl FnOnce(T) -> Outcome) -> Result<Outcome> {
    match result {
        Ok(v) => Ok(ok(v)),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => Ok(Outcome::Failed {
            error: e.to_string(),
        }),
    }
}

/// Runs a restore job through the task's connector.
///
/// # Errors
/// A catalog failure; the restore's own failure is recorded in the job record.
pub async fn run_restore(ctx: &Context, job: &RestoreJob) -> Result<Outcome> {
    let (rec, version) = match start(ctx, &job.tenant, &job.job).await? {
        Ok(v) => v,
        Err(o) => return Ok(o),
    };
    let created = rec.created_at;
    let result = async {
        let engine = ctx.engine(&job.tenant);
        let task = engine.task(job.task.as_str()).await?;
        let snap = engine
            .resolve_snapshot(&task, job.snapshot.as_str(), Some(&job.account))
            .await?;
        let opts = RestoreOptions {
            include: job.include.clone(),
            in_place: job.in_place,
            on_conflict: job.on_conflict,
            label: String::new(),
            at: Some(created),
            filter: job.filter.clone(),
            sync: false,
        };
        let to = Destination {
            task: None,
            account: job.to_account.clone(),
        };
        engine
            .restore(&task, &snap, &to, &opts, ctx.connectors.as_ref())
            .await
    }
    .await;
    finish(ctx, &job.tenant, rec, version, &result).await?;
    let mut detail = crate::events::base(&job.tenant, &job.task, &job.account);
    detail["job"] = serde_json::json!(job.job);
    detail["snapshot"] = serde_json::json!(job.snapshot);
    detail["in_place"] = serde_json::json!(job.in_place);
    detail["to_other_account"] =
        serde_json::json!(job.to_account.as_ref().is_some_and(|a| a != &job.account));
    announce(
        ctx,
        &result,
        detail,
        (
            crate::events::RESTORE_COMPLETED,
            crate::events::RESTORE_FAILED,
        ),
        |r, d| {
            d["items"] = serde_json::json!(r.items);
            d["item_errors"] = serde_json::json!(r.errors.len());
        },
    )
    .await;
    outcome_of(result, |r| Outcome::Restored {
        items: r.items,
        errors: r.errors.len() as u64,
    })
}

/// Runs an export job: the zip is built in a temporary file, then streamed to the store a
/// part at a time (a multipart upload on S3), so that memory stays bounded whatever its
/// size.
///
/// # Errors
/// A catalog failure; the export's own failure is recorded in the job record.
pub async fn run_export(ctx: &Context, job: &ExportJob) -> Result<Outcome> {
    let (mut rec, version) = match start(ctx, &job.tenant, &job.job).await? {
        Ok(v) => v,
        Err(o) => return Ok(o),
    };
    let result = async {
        let engine = ctx.engine(&job.tenant);
        let task = engine.task(job.task.as_str()).await?;
        let snap = engine
            .resolve_snapshot(&task, job.snapshot.as_str(), Some(&job.account))
            .await?;
        let dir = std::env::temp_dir().join(format!("lifeboat-export-{}", job.job));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("cannot create a temporary folder", e))?;
        let zip = dir.join("export.zip");
        let outcome = async {
            let opts = ExportOptions {
                format: ExportFormat::Zip,
                include: job.include.clone(),
                filter: job.filter.clone(),
            };
            let report = engine
                .export(&task, &snap, &zip, &opts, &NoProgress)
                .await?;
            let file =
                std::fs::File::open(&zip).map_err(|e| Error::io("cannot read the export", e))?;
            let key = ObjectKey::new(&job.tenant, &job.task, EXPORT_KIND, &job.job);
            let mut source = ports::ReadSource(std::io::BufReader::new(file));
            let len = match ctx
                .ports
                .store
                .put_stream_if_absent(&key, &mut source)
                .await
            {
                // A rerun after a crash finds the zip already stored.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    ctx.ports.store.size(&key).await?
                }
                other => other?,
            };
            Ok::<_, Error>((report, len))
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }
    .await;
    let result = result.map(|(report, len)| {
        rec.export_id = Some(job.job.clone());
        rec.export_bytes = Some(len);
        report
    });
    let bytes = rec.export_bytes.unwrap_or_default();
    finish(ctx, &job.tenant, rec, version, &result).await?;
    let mut detail = crate::events::base(&job.tenant, &job.task, &job.account);
    detail["job"] = serde_json::json!(job.job);
    detail["snapshot"] = serde_json::json!(job.snapshot);
    announce(
        ctx,
        &result,
        detail,
        (
            crate::events::EXPORT_COMPLETED,
            crate::events::EXPORT_FAILED,
        ),
        |r, d| {
            d["items"] = serde_json::json!(r.items);
            d["folders"] = serde_json::json!(r.folders);
            d["bytes"] = serde_json::json!(bytes);
        },
    )
    .await;
    outcome_of(result, |_| Outcome::Exported { bytes })
}

/// Runs a prune (or repack) job over every account of the task. Safe to run again after a
/// crash or a redelivery: every step of the protocol is (see the vault's `prune.rs`).
/// Verdicts are dated by the wall clock, as the writers that check them are.
///
/// # Errors
/// A catalog failure; the prune's own failure is recorded in the job record.
pub async fn run_prune(ctx: &Context, job: &PruneJob) -> Result<Outcome> {
    let (rec, version) = match start(ctx, &job.tenant, &job.job).await? {
        Ok(v) => v,
        Err(o) => return Ok(o),
    };
    let result = async {
        let engine = ctx.engine(&job.tenant);
        let task = engine.task(job.task.as_str()).await?;
        let opts = PruneOptions {
            now: Utc::now(),
            grace: chrono::Duration::try_seconds(job.grace_secs.max(0))
                .unwrap_or(engine::DEFAULT_GRACE),
            repack: job.repack,
        };
        engine.prune(&task, &opts, &NoProgress).await
    }
    .await;
    finish(ctx, &job.tenant, rec, version, &result).await?;
    outcome_of(result, |r| Outcome::Pruned {
        deleted: r.total.deleted,
        freed_bytes: r.total.deleted_bytes,
    })
}
