//! The routes. Each handler authenticates first, then works through an engine scoped to
//! the token's tenant.

use crate::search::{search, SearchQuery};
use crate::{ApiError, AppState};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use domain::{
    escape, AccountId, BackupJob, Conflict, ExportJob, ItemPath, JobEnvelope, JobKind, RestoreJob,
    TaskId, TenantId,
};
use engine::{Engine, SourceConfig, TaskRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vault::{Entry, EntryKind, SnapshotRecord};

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
        .route("/v1/jobs/{job}", get(job_status))
        .route("/v1/jobs/{job}/download", get(download))
        .route("/v1/billing/usage", get(usage))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

fn task_json(t: &TaskRecord) -> Value {
    // Settings only: the sealed credential never leaves the catalog.
    let settings = match &t.source {
        SourceConfig::Files { path } => json!({"path": path}),
        SourceConfig::Source { settings, .. } => settings.clone(),
    };
    json!({
        "name": t.name,
        "kind": t.source.kind(),
        "settings": settings,
        "created_at": t.created_at,
        "backup_hour_utc": t.backup_hour,
    })
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
    if new.source == "files" {
        return Err(ApiError::bad_request(
            "a local folder is added on its own machine with `lifeboat task add`; the API adds connector sources",
        ));
    }
    if !new.settings.is_object() {
        return Err(ApiError::bad_request("settings must be a JSON object"));
    }
    if let Some(h) = new.backup_hour_utc {
        if h > 23 {
            return Err(ApiError::bad_request(
                "backup_hour_utc must be an hour from 0 to 23",
            ));
        }
    }
    let source = SourceConfig::source(&new.source, new.settings);
    // Opening the connector checks the source and its settings without a request.
    let probe = TaskRecord {
        name: name.clone(),
        source: source.clone(),
        wrapped_key: Vec::new(),
        created_at: e.ports().clock.now(),
        backup_hour: engine::DEFAULT_BACKUP_HOUR,
        deleting: false,
    };
    let secret = new.secret.map(zeroize::Zeroizing::new);
    if let Err(err) = st.connectors.open(&probe, secret.clone()) {
        return Err(ApiError::bad_request(err.to_string()));
    }
    let mut task = e
        .add_task_with_secret(name, source, secret.as_deref().map(String::as_str))
        .await?;
    if let Some(h) = new.backup_hour_utc {
        task = e.set_backup_hour(task.name.as_str(), h).await?;
    }
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
        Some(a) => {
            let a = AccountId::new(&a)?;
            if !e.accounts(&t).await?.contains(&a) {
                return Err(ApiError::not_found(format!(
                    "task {} has no account {a}",
                    t.name
                )));
            }
            Some(a)
        }
        None => None,
    };
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

/// A snapshot as the API shows it: no cursor (a source's delta link is not the
/// customer's business) and no storage references.
fn snapshot_json(s: &SnapshotRecord) -> Value {
    json!({
        "id": s.id,
        "account": s.account,
        "taken_at": s.taken_at,
        "parent": s.parent,
        "items": s.stats.items,
        "folders": s.stats.folders,
        "bytes": s.stats.bytes,
        "error_count": s.error_count,
        "errors": s.errors,
    })
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

async fn account_of(e: &Engine, t: &TaskRecord, account: &str) -> ApiResult<AccountId> {
    let a = AccountId::new(account)?;
    if !e.accounts(t).await?.contains(&a) {
        return Err(ApiError::not_found(format!(
            "task {} has no account {a}",
            t.name
        )));
    }
    Ok(a)
}

async fn list_snapshots(
    Tenant(e): Tenant,
    Path((task, account)): Path<(String, String)>,
    Query(range): Query<DateRange>,
) -> ApiResult<Json<Value>> {
    let t = e.task(&task).await?;
    let a = account_of(&e, &t, &account).await?;
    let vault = e.vault(&t).await?;
    let snaps: Vec<Value> = vault
        .snapshots(&a)
        .await
        .map_err(engine::Error::from)?
        .iter()
        .filter(|s| in_range(s.taken_at, &range))
        .map(snapshot_json)
        .collect();
    Ok(Json(json!({ "snapshots": snaps })))
}

pub(crate) fn entry_json(path: &ItemPath, e: &Entry) -> Value {
    let mtime = DateTime::<Utc>::from_timestamp_nanos(e.mtime_ns);
    json!({
        "name": escape(&e.name),
        "path": path.to_string(),
        "kind": match e.kind { EntryKind::File => "item", EntryKind::Dir => "folder", EntryKind::Symlink => "link" },
        "size": e.size,
        "modified": mtime,
        "meta": e.meta.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<String, Value>>(),
    })
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
    let a = account_of(&e, &t, &account).await?;
    let snap = e.resolve_snapshot(&t, &snapshot, Some(&a)).await?;
    let path = parse_path(q.path.as_deref())?;
    let entries = e.list(&t, &snap, &path).await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|en| {
            let p = path.join(&en.name).unwrap_or_else(|_| path.clone());
            entry_json(&p, en)
        })
        .collect();
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
    Ok(Json(search(&e, &t, &q).await?))
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
    on_conflict: Conflict,
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
    if matches!(t.source, SourceConfig::Files { .. }) {
        return Err(ApiError::bad_request(format!(
            "task {} reads a local folder; restore it with `lifeboat restore` on that machine, or export it",
            t.name
        )));
    }
    let a = account_of(&e, &t, &r.account).await?;
    let snap = e.resolve_snapshot(&t, &r.snapshot, Some(&a)).await?;
    let include = check_includes(&e, &t, &snap, &r.include).await?;
    let to_account = match &r.to_account {
        Some(x) => Some(AccountId::new(x)?),
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
    snap: &SnapshotRecord,
    include: &[String],
) -> ApiResult<Vec<ItemPath>> {
    let mut out = Vec::new();
    for p in include {
        let path = parse_path(Some(p))?;
        if !path.is_root() {
            let parent = path.parent().unwrap_or_else(ItemPath::root);
            let name = path.file_name().unwrap_or_default();
            let found = e
                .list(t, snap, &parent)
                .await?
                .iter()
                .any(|x| x.name == name);
            if !found {
                return Err(ApiError::not_found(format!(
                    "{path} is not in snapshot {}",
                    snap.id
                )));
            }
        }
        out.push(path);
    }
    Ok(out)
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
    let a = account_of(&e, &t, &r.account).await?;
    let snap = e.resolve_snapshot(&t, &r.snapshot, Some(&a)).await?;
    let include = check_includes(&e, &t, &snap, &r.include).await?;
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

#[derive(Serialize)]
struct UsageAccount {
    task: TaskId,
    kind: String,
    account: AccountId,
}

/// Billing: the accounts protected in a month (those with at least one snapshot in it).
async fn usage(Tenant(e): Tenant, Query(q): Query<UsageQuery>) -> ApiResult<Json<Value>> {
    let now = e.ports().clock.now();
    let (year, month) = match &q.month {
        Some(m) => {
            let d = NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
                .map_err(|_| ApiError::bad_request(format!("month {m} is not YYYY-MM")))?;
            (d.year(), d.month())
        }
        None => (now.year(), now.month()),
    };
    let prefix = format!("{year:04}{month:02}");
    let tasks = e.tasks().await?;
    let mut accounts = Vec::new();
    for t in &tasks {
        for a in e.accounts(t).await? {
            let pk = vault::snapshot::snapshots_pk(e.tenant(), &t.name, &a);
            let page = e
                .ports()
                .catalog
                .query(&pk, &prefix, None, 1, false)
                .await
                .map_err(engine::Error::from)?;
            if !page.records.is_empty() {
                accounts.push(UsageAccount {
                    task: t.name.clone(),
                    kind: t.source.kind().to_string(),
                    account: a,
                });
            }
        }
    }
    let since = tasks.iter().map(|t| t.created_at).min();
    let trial_ends = since.map(|s| s + chrono::Duration::days(14));
    let month_end = Utc
        .with_ymd_and_hms(year + (month / 12) as i32, month % 12 + 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    // A month that ends inside the trial is free.
    let billable = if trial_ends.is_some_and(|t| month_end <= t) {
        0
    } else {
        accounts.len()
    };
    Ok(Json(json!({
        "month": format!("{year:04}-{month:02}"),
        "protected_accounts": accounts.len(),
        "billable_accounts": billable,
        "trial_ends_at": trial_ends,
        "accounts": accounts,
    })))
}
