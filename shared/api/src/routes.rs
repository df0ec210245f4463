//! The routes. Each handler authenticates first, then works through an engine scoped to
//! the token's tenant.

use crate::{ApiError, AppState};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use domain::{
    AccountId, BackupJob, ExportJob, ItemPath, JobEnvelope, JobKind, OnConflict, PruneJob,
    RestoreJob, TaskId, TenantId,
};
use engine::{Engine, EntryView, SearchQuery, SnapshotView, SourceConfig, TaskRecord, TaskView};
use serde::Deserialize;
use serde_json::{json, Value};

type ApiResult<T> = Result<T, ApiError>;

/// The engine of the calling tenant: the only way a handler reaches data.
pub(crate) struct Tenant(pub Engine);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let tenant: TenantId = state.auth.tenant(parts)?;
        Ok(Tenant(Engine::new(state.ports.clone(), tenant)))
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tasks", get(list_tasks).post(add_task))
        .route("/v1/tasks/{task}", get(get_task))
        .route("/v1/tasks/{task}/schedule", put(set_schedule))
        .route("/v1/tasks/{task}/accounts", get(list_accounts))
        .route("/v1/tasks/{task}/backups", post(backup_now))
        .route(
            "/v1/tasks/{task}/accounts/{account}/snapshots",
            get(list_snapshots),
        )
        .route(
            "/v1/tasks/{task}/accounts/{account}/snapshots/{snapshot}/items",
            get(browse),
        )
        .route("/v1/tasks/{task}/search", get(search_items))
        .route("/v1/tasks/{task}/restores", post(restore))
        .route("/v1/tasks/{task}/exports", post(export))
        .route("/v1/tasks/{task}/prunes", post(prune))
        .route("/v1/jobs/{job}", get(job_status))
        .route("/v1/jobs/{job}/download", get(download))
        .route("/v1/billing/usage", get(usage))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

fn task_json(t: &TaskRecord) -> Value {
    serde_json::to_value(TaskView::from(t)).expect("views serialise")
}

async fn list_tasks(Tenant(e): Tenant) -> ApiResult<Json<Value>> {
    let tasks: Vec<Value> = e.tasks().await?.iter().map(task_json).collect();
    Ok(Json(json!({ "tasks": tasks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    name: String,
    /// The connector (`m365`, `imap`, …).
    source: String,
    #[serde(default)]
    settings: Value,
    /// The source's credential: sealed with the task's key, never shown again.
    secret: Option<String>,
    backup_hour_utc: Option<u8>,
}

/// Connects a new task and queues its first backup at once, as today's backup, rather
/// than leaving the tenant with nothing protected until the task's hour comes tomorrow.
async fn add_task(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewTask = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("the task is not valid JSON: {err}")))?;
    let name = TaskId::new(&new.name)?;
    if !new.settings.is_object() {
        return Err(ApiError::bad_request("settings must be a JSON object"));
    }
    // The connector checks the source and its settings (it signs in) before the task is
    // kept; only connectors that reach their source over the network are offered here.
    let task = e
        .add_task(
            engine::NewTask {
                name,
                source: SourceConfig::new(&new.source, new.settings),
                secret: new.secret.map(zeroize::Zeroizing::new),
                backup_hour: new.backup_hour_utc,
            },
            st.connectors.as_ref(),
        )
        .await?;
    let queued =
        match jobs::queue_today(e.ports(), st.backups.as_ref(), e.tenant(), &task.name).await {
            Ok(n) => n > 0,
            Err(err) => {
                // The task stands; the scheduler takes the day over after its reclaim time.
                tracing::warn!(task = %task.name, error = %err, "first backup not queued");
                false
            }
        };
    let mut out = task_json(&task);
    out["first_backup_queued"] = json!(queued);
    Ok((StatusCode::CREATED, Json(out)))
}

async fn get_task(Tenant(e): Tenant, Path(task): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(task_json(&e.task(&task).await?)))
}

#[derive(Deserialize)]
struct Schedule {
    backup_hour_utc: u8,
}

async fn set_schedule(
    Tenant(e): Tenant,
    Path(task): Path<String>,
    Json(s): Json<Schedule>,
) -> ApiResult<Json<Value>> {
    e.task(&task).await?;
    Ok(Json(task_json(
        &e.set_backup_hour(&task, s.backup_hour_utc).await?,
    )))
}

async fn list_accounts(Tenant(e): Tenant, Path(task): Path<String>) -> ApiResult<Json<Value>> {
    let t = e.task(&task).await?;
    let mut out = Vec::new();
    for a in e.account_infos(&t).await? {
        let state = jobs::account_state(e.ports(), e.tenant(), &t.name, &a.id).await?;
        let state = state.unwrap_or_default();
        out.push(json!({
            "id": a.id,
            "name": a.name,
            "services": a.services,
            "last_snapshot": state.last_snapshot,
            "last_success": state.last_success,
            "last_error": state.last_error,
            "running": state.lease_owner.is_some(),
        }));
    }
    Ok(Json(json!({ "accounts": out })))
}

#[derive(Deserialize, Default)]
struct BackupRequest {
    account: Option<String>,
}

async fn backup_now(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    Path(task): Path<String>,
    body: Option<Json<BackupRequest>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t = e.task(&task).await?;
    let account = match body.and_then(|b| b.0.account) {
        Some(a) => Some(e.account(&t, &AccountId::new(&a)?).await?.id),
        None => None,
    };
    let what = match &account {
        Some(a) => format!("backup#{a}"),
        None => "backup".to_string(),
    };
    cool_down(
        &st,
        e.tenant(),
        &t.name,
        &what,
        jobs::cooldown::BACKUP_COOLDOWN,
    )
    .await?;
    // The same jobs a scheduled day queues: one per account (a whole task's accounts as
    // the catalog knows them, plus a listing job for a connector task's new ones).
    let jobs = match &account {
        Some(a) => vec![JobEnvelope::new(JobKind::Backup(BackupJob {
            tenant: e.tenant().clone(),
            task: t.name.clone(),
            account: Some(a.clone()),
            scheduled_for: None,
            continuation: 0,
        }))],
        None => jobs::backup_jobs(e.ports(), e.tenant(), &t.name, None)
            .await
            .map_err(engine::Error::from)?
            .ok_or_else(|| ApiError::not_found(format!("task {} is being deleted", t.name)))?,
    };
    for chunk in jobs.chunks(ports::QUEUE_MAX_BATCH) {
        let bodies: Vec<String> = chunk.iter().map(JobEnvelope::encode).collect();
        st.backups
            .send_batch(&bodies)
            .await
            .map_err(engine::Error::from)?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"queued": true, "task": t.name, "account": account})),
    ))
}

/// Refuses with 429 and `Retry-After` a request made again inside its cooldown (see
/// `jobs::cooldown`); otherwise starts a new one.
async fn cool_down(
    st: &AppState,
    tenant: &TenantId,
    task: &TaskId,
    what: &str,
    cooldown: std::time::Duration,
) -> ApiResult<()> {
    let key = ports::catalog_keys::on_demand(tenant, task, what);
    let now = st.ports.clock.now();
    match jobs::cooldown::claim(st.ports.catalog.as_ref(), &key, now, cooldown)
        .await
        .map_err(engine::Error::from)?
    {
        None => Ok(()),
        Some(wait) => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "cooldown",
                format!(
                    "the same request was made less than {} minutes ago; try again in {} seconds",
                    cooldown.as_secs().div_ceil(60),
                    wait.as_secs().max(1)
                ),
            );
            err.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
            Err(err)
        }
    }
}

#[derive(Deserialize)]
struct DateRange {
    /// First day (UTC, `YYYY-MM-DD`), inclusive.
    from: Option<NaiveDate>,
    /// Last day, inclusive.
    to: Option<NaiveDate>,
}

fn in_range(t: DateTime<Utc>, r: &DateRange) -> bool {
    let d = t.date_naive();
    r.from.is_none_or(|f| d >= f) && r.to.is_none_or(|to| d <= to)
}

async fn list_snapshots(
    Tenant(e): Tenant,
    Path((task, account)): Path<(String, String)>,
    Query(range): Query<DateRange>,
) -> ApiResult<Json<Value>> {
    let t = e.task(&task).await?;
    let a = AccountId::new(&account)?;
    let snaps: Vec<SnapshotView> = e
        .account_snapshots(&t, &a)
        .await?
        .iter()
        .filter(|s| in_range(s.taken_at, &range))
        .map(SnapshotView::from)
        .collect();
    Ok(Json(json!({ "snapshots": snaps })))
}

#[derive(Deserialize)]
struct BrowseQuery {
    path: Option<String>,
}

fn parse_path(s: Option<&str>) -> ApiResult<ItemPath> {
    match s {
        None | Some("") | Some("/") => Ok(ItemPath::root()),
        Some(p) => Ok(ItemPath::parse(&domain::unescape(p.trim_matches('/'))?)?),
    }
}

async fn browse(
    Tenant(e): Tenant,
    Path((task, account, snapshot)): Path<(String, String, String)>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<Value>> {
    let t = e.task(&task).await?;
    let a = e.account(&t, &AccountId::new(&account)?).await?.id;
    let snap = e.resolve_snapshot(&t, &snapshot, Some(&a)).await?;
    let path = parse_path(q.path.as_deref())?;
    let items: Vec<EntryView> = e.browse(&t, &snap, &path).await?;
    Ok(Json(json!({
        "snapshot": snap.id,
        "path": path.to_string(),
        "items": items,
    })))
}

async fn search_items(
    Tenant(e): Tenant,
    Path(task): Path<String>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let t = e.task(&task).await?;
    Ok(Json(
        serde_json::to_value(e.search(&t, &q).await?).expect("views serialise"),
    ))
}

#[derive(Deserialize)]
struct RestoreRequest {
    account: String,
    /// A snapshot id (or unique prefix), or `latest`.
    snapshot: String,
    #[serde(default)]
    include: Vec<String>,
    to_account: Option<String>,
    #[serde(default)]
    in_place: bool,
    #[serde(default)]
    on_conflict: OnConflict,
    /// Only the items these metadata select (sender, subject, days), within `include`.
    #[serde(default)]
    filter: domain::ItemFilter,
}

async fn restore(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    Path(task): Path<String>,
    Json(r): Json<RestoreRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t = e.task(&task).await?;
    // A restore writes through the task's connector where the job runs: only through
    // those this API offers (a local folder's task is restored on its own machine).
    if !st.connectors.offers(t.source.kind()) {
        return Err(ApiError::bad_request(format!(
            "task {} uses the {} connector, which this API does not restore into; restore it with `lifeboat restore` on its own machine, or export it",
            t.name,
            t.source.kind()
        )));
    }
    let a = e.account(&t, &AccountId::new(&r.account)?).await?.id;
    let snap = e.resolve_snapshot(&t, &r.snapshot, Some(&a)).await?;
    let include = check_includes(&e, &t, &snap, &r.include).await?;
    let to_account = match &r.to_account {
        Some(x) => Some(e.account(&t, &AccountId::new(x)?).await?.id),
        None => None,
    };
    let job = JobKind::Restore(RestoreJob {
        job: jobs::transfer::new_job_id(st.ports.clock.now()),
        tenant: e.tenant().clone(),
        task: t.name.clone(),
        account: a,
        snapshot: snap.id.clone(),
        include,
        to_account,
        in_place: r.in_place,
        on_conflict: r.on_conflict,
        filter: r.filter,
    });
    let rec = jobs::transfer::submit(&st.ports, st.transfers.as_ref(), job).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(rec).expect("serialises")),
    ))
}

/// Resolves every selected path now, so a typo is a 404 at once, not a failed job later.
async fn check_includes(
    e: &Engine,
    t: &TaskRecord,
    snap: &engine::SnapshotRecord,
    include: &[String],
) -> ApiResult<Vec<ItemPath>> {
    let paths = include
        .iter()
        .map(|p| parse_path(Some(p)))
        .collect::<ApiResult<Vec<_>>>()?;
    e.check_selection(t, snap, &paths).await?;
    Ok(paths)
}

#[derive(Deserialize)]
struct ExportRequest {
    account: String,
    snapshot: String,
    #[serde(default)]
    include: Vec<String>,
    /// Only the items these metadata select (sender, subject, days), within `include`.
    #[serde(default)]
    filter: domain::ItemFilter,
}

async fn export(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    Path(task): Path<String>,
    Json(r): Json<ExportRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t = e.task(&task).await?;
    let a = e.account(&t, &AccountId::new(&r.account)?).await?.id;
    let snap = e.resolve_snapshot(&t, &r.snapshot, Some(&a)).await?;
    let include = check_includes(&e, &t, &snap, &r.include).await?;
    let what = format!("export#{a}");
    cool_down(
        &st,
        e.tenant(),
        &t.name,
        &what,
        jobs::cooldown::EXPORT_COOLDOWN,
    )
    .await?;
    let job = JobKind::Export(ExportJob {
        job: jobs::transfer::new_job_id(st.ports.clock.now()),
        tenant: e.tenant().clone(),
        task: t.name.clone(),
        account: a,
        snapshot: snap.id.clone(),
        include,
        filter: r.filter,
    });
    let rec = jobs::transfer::submit(&st.ports, st.transfers.as_ref(), job).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(rec).expect("serialises")),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PruneRequest {
    #[serde(default)]
    repack: bool,
    /// Hours a condemned pack waits before it is deleted (24 unless given).
    grace_hours: Option<i64>,
}

async fn prune(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    Path(task): Path<String>,
    body: Option<Json<PruneRequest>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t = e.task(&task).await?;
    let r = body.map(|Json(r)| r).unwrap_or_default();
    let grace_secs = match r.grace_hours {
        None => engine::DEFAULT_GRACE.num_seconds(),
        Some(h) if (0..=24 * 365).contains(&h) => h * 3600,
        Some(h) => {
            return Err(ApiError::bad_request(format!(
                "grace_hours must be between 0 and 8760, not {h}"
            )))
        }
    };
    let job = JobKind::Prune(PruneJob {
        job: jobs::transfer::new_job_id(st.ports.clock.now()),
        tenant: e.tenant().clone(),
        task: t.name.clone(),
        repack: r.repack,
        grace_secs,
    });
    let rec = jobs::transfer::submit(&st.ports, st.transfers.as_ref(), job).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(rec).expect("serialises")),
    ))
}

fn job_id(id: &str) -> ApiResult<&str> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::not_found("no such job"));
    }
    Ok(id)
}

async fn job_status(Tenant(e): Tenant, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let rec = jobs::transfer::job(e.ports(), e.tenant(), job_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such job"))?;
    let mut v = serde_json::to_value(&rec).expect("serialises");
    if rec.export_id.is_some() {
        v["download"] = json!(format!("/v1/jobs/{}/download", rec.id));
    }
    Ok(Json(v))
}

async fn download(
    State(st): State<AppState>,
    Tenant(e): Tenant,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let rec = jobs::transfer::job(e.ports(), e.tenant(), job_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such job"))?;
    let Some(export) = rec.export_id else {
        return Err(ApiError::not_found(format!(
            "job {} has no download (it is a {} job, {})",
            rec.id,
            rec.kind,
            serde_json::to_value(rec.state).expect("serialises")
        )));
    };
    let key = ports::ObjectKey::new(e.tenant(), &rec.task, jobs::transfer::EXPORT_KIND, &export);
    if let Some(url) = st
        .ports
        .store
        .presign_get(&key, st.link_ttl)
        .await
        .map_err(engine::Error::from)?
    {
        return Ok(Redirect::temporary(&url).into_response());
    }
    let data = st
        .ports
        .store
        .get(&key)
        .await
        .map_err(engine::Error::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"lifeboat-export-{}.zip\"", rec.id),
            ),
        ],
        data,
    )
        .into_response())
}

#[derive(Deserialize)]
struct UsageQuery {
    /// `YYYY-MM`; the current month when absent.
    month: Option<String>,
}

/// Billing: the accounts protected in a month (those with at least one snapshot in it).
async fn usage(Tenant(e): Tenant, Query(q): Query<UsageQuery>) -> ApiResult<Json<Value>> {
    let usage = e.usage(q.month.as_deref()).await?;
    Ok(Json(serde_json::to_value(usage).expect("views serialise")))
}
