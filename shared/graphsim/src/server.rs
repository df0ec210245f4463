//! The HTTP front: bearer-token check, fault injection, per-mailbox concurrency accounting,
//! request ids, then the route table. `$batch` re-enters here for each inner request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{Prefer, Query};
use crate::util::unit;
use crate::Config;

/// Fault injection settings, changeable at run time through `/_sim/faults`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests answered `429 Too Many Requests` with `Retry-After`.
    pub throttle_rate: f64,
    /// Share answered `503 Service Unavailable` (with `Retry-After`).
    pub unavailable_rate: f64,
    /// Share answered `504 Gateway Timeout`.
    pub gateway_timeout_rate: f64,
    /// Share answered `500 Internal Server Error` (`generalException`), which Graph does
    /// not ask to be retried at once.
    pub server_error_rate: f64,
    /// Share answered `502 Bad Gateway`, as Graph's front ends do when a back end drops.
    pub bad_gateway_rate: f64,
    /// Share of single-item reads (message, file content) whose item is deleted just before
    /// the read, as when a user deletes something between listing and fetching.
    pub vanish_rate: f64,
    pub retry_after_secs: u64,
    /// Added to every Graph request, so that concurrent requests really overlap.
    pub latency_ms: u64,
    /// Graph allows 4 concurrent requests per app and mailbox.
    pub mailbox_concurrency: usize,
    /// Graph allows 10,000 requests per app and mailbox in 10 minutes; 0 lifts the limit.
    pub mailbox_requests_per_10_min: u64,
    /// The length of that window in seconds (600 as documented; tests shorten it).
    pub mailbox_window_secs: u64,
    /// SharePoint's per-app, per-tenant budget of resource units per window (1,200 a
    /// minute for a tenant of up to 1,000 licences); 0, the default, lifts it. Requests to
    /// sites and drives cost what Microsoft's table says: 1 for one item, a delta with a
    /// token or a download; 2 for a list, a delta without a token or a write; 5 with
    /// permissions.
    pub sharepoint_ru_per_window: u64,
    /// The length of that window in seconds (60 as documented).
    pub sharepoint_window_secs: u64,
    /// One-shot faults served before any drawn at random, in order.
    pub script: VecDeque<ScriptedFault>,
    /// Items and sites refused with 403 whatever the request, by Graph id: the value is
    /// Graph's error code (`malwareDetected` for a file flagged as malware,
    /// `ErrorAccessDenied` for a message, `accessDenied` for a site or file).
    pub forbidden: BTreeMap<String, String>,
    /// Files served with this many bytes more than their listed size, by drive item id,
    /// as SharePoint serves Office files whose properties it writes into the file on the
    /// way out.
    pub enriched: BTreeMap<String, u64>,
    /// Mail folders (by id) deleted the moment their message delta is first asked for: a
    /// folder deleted between the folder listing and its delta.
    pub delete_before_delta: Vec<String>,
    /// Downloads of a drive item (by id) that break off half-way, as a connection dropped
    /// by a proxy or a front end does: the value is how many of its next downloads do.
    pub cut_downloads: BTreeMap<String, u32>,
    /// Downloads of a drive item (by id) that stall half-way, sending nothing more for an
    /// hour with the connection open: the value is how many of its next downloads do.
    pub stall_downloads: BTreeMap<String, u32>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle_rate: 0.0,
            unavailable_rate: 0.0,
            gateway_timeout_rate: 0.0,
            server_error_rate: 0.0,
            bad_gateway_rate: 0.0,
            vanish_rate: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            mailbox_concurrency: 4,
            mailbox_requests_per_10_min: 10_000,
            mailbox_window_secs: 600,
            sharepoint_ru_per_window: 0,
            sharepoint_window_secs: 60,
            script: VecDeque::new(),
            forbidden: BTreeMap::new(),
            enriched: BTreeMap::new(),
            delete_before_delta: Vec::new(),
            cut_downloads: BTreeMap::new(),
            stall_downloads: BTreeMap::new(),
        }
    }
}

/// A fault for the next request whose path contains `path_contains` (any request if empty).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScriptedFault {
    pub status: u16,
    #[serde(default)]
    pub path_contains: String,
    #[serde(default = "one")]
    pub times: u32,
    /// Graph's error code in the body, when not the one the status usually carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `Retry-After` in seconds, when not [`Faults::retry_after_secs`] (an hour, say,
    /// which no run can wait out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Matching requests served normally before this fault starts (so that it strikes
    /// part-way through a run, at the 600th message read, say).
    #[serde(default)]
    pub after: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MailboxStats {
    pub requests: u64,
    /// Start and count of the current 10-minute window.
    #[serde(skip)]
    pub window: Option<(Instant, u64)>,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub throttled: u64,
    /// Time the mailbox's requests were being served, summed (slot-nanoseconds): over
    /// four times a backup's duration, the share of the 4-concurrent ceiling it used.
    pub busy_ns: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Every request served, a batch's inner requests included (Graph counts them one by
    /// one); HTTP requests are `requests - batch_inner`.
    pub requests: u64,
    /// `$batch` requests, and the requests inside them.
    pub batches: u64,
    pub batch_inner: u64,
    /// SharePoint resource units spent, and requests refused for want of them.
    pub resource_units: u64,
    pub ru_throttled: u64,
    /// Start and resource units of the current SharePoint window.
    #[serde(skip)]
    pub ru_window: Option<(Instant, u64)>,
    pub token_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Keyed by user principal name.
    pub mailboxes: BTreeMap<String, MailboxStats>,
    pub downloads: u64,
    pub downloaded_bytes: u64,
    /// Requests by route (`GET /users/{}/mailFolders/{}/messages/delta`), so that a
    /// benchmark can say where its requests went.
    pub by_route: BTreeMap<String, u64>,
}

pub struct Shared {
    pub cfg: Config,
    pub sim: Mutex<Sim>,
    pub base: Mutex<String>,
    pub tokens: Mutex<HashMap<String, Instant>>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<Stats>,
    pub counter: AtomicU64,
    pub token_counter: AtomicU64,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn sim(&self) -> MutexGuard<'_, Sim> {
        lock(&self.sim)
    }

    pub fn base(&self) -> String {
        lock(&self.base).clone()
    }
}

/// One Graph request as the route table sees it (also built for each `$batch` entry).
pub struct Req {
    pub method: Method,
    /// Path below `/v1.0`, percent-decoded per segment, path-based addressing folded in.
    pub segs: Vec<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a handler knows about the request it serves.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub req: &'a Req,
    pub prefer: Prefer,
    /// `{base}/v1.0`, the prefix of every link the simulator hands out.
    pub root: String,
    pub base: String,
}

impl Ctx<'_> {
    pub fn immutable(&self) -> bool {
        self.prefer.immutable_id
    }

    pub fn q(&self) -> &Query {
        &self.req.query
    }

    pub fn json_body(&self) -> Result<Value> {
        serde_json::from_slice(&self.req.body)
            .map_err(|_| GraphError::bad_request("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."))
    }

    pub fn content_type(&self) -> String {
        self.req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    }
}

pub fn json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn ok(body: Value) -> Response {
    json(StatusCode::OK, body)
}

/// Splits a path below `/v1.0/` into decoded segments. Drive path-based addressing
/// (`root:/a/b.txt:/content`) becomes `["root", ":", "a/b.txt", "content"]`.
pub fn split_path(raw: &str) -> Vec<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let raw = raw.trim_matches('/');
    if let Some(colon) = raw.find(":/") {
        let (head, tail) = raw.split_at(colon);
        let tail = &tail[2..];
        let (rel, rest) = match tail.find(':') {
            Some(i) => (&tail[..i], &tail[i + 1..]),
            None => (tail, ""),
        };
        let mut segs: Vec<String> = head
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        segs.push(":".into());
        segs.push(decode(rel.trim_matches('/')));
        segs.extend(rest.split('/').filter(|s| !s.is_empty()).map(decode));
        return segs;
    }
    raw.split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

fn request_id(shared: &Shared, n: u64) -> String {
    let h = crate::util::splitmix(shared.cfg.seed ^ 0x7265_7175 ^ n);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (n >> 48) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

fn date_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The request's method and path with its ids, names and tokens folded to `{}`.
fn route_of(req: &Req) -> String {
    let word = |s: &str| {
        s.starts_with('$')
            || (!s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphabetic()))
    };
    let path: Vec<&str> = req
        .segs
        .iter()
        .map(|s| if word(s) { s.as_str() } else { "{}" })
        .collect();
    format!("{} /{}", req.method, path.join("/"))
}

/// Which mailbox an Outlook request touches (mail, contacts, calendars, To Do), for the
/// per-mailbox concurrency limit and counters.
fn mailbox_of(shared: &Shared, segs: &[String]) -> Option<String> {
    if segs.len() < 3 || !segs[0].eq_ignore_ascii_case("users") {
        return None;
    }
    let outlook = [
        "messages",
        "mailfolders",
        "contacts",
        "contactfolders",
        "calendar",
        "calendars",
        "events",
        "calendarview",
        "todo",
    ];
    if !outlook.contains(&segs[2].to_ascii_lowercase().as_str()) {
        return None;
    }
    let sim = shared.sim();
    sim.user(&segs[1]).map(|i| sim.users[i].upn.clone())
}

struct InFlight<'a> {
    shared: &'a Shared,
    mailbox: String,
    since: Instant,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut stats = lock(&self.shared.stats);
        if let Some(m) = stats.mailboxes.get_mut(&self.mailbox) {
            m.in_flight = m.in_flight.saturating_sub(1);
            m.busy_ns += self.since.elapsed().as_nanos() as u64;
        }
    }
}

fn check_token(shared: &Shared, headers: &HeaderMap) -> Result<()> {
    let unauthorized = |msg: &str| {
        GraphError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", msg).with_header(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        )
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("Access token is empty."));
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            "Access token validation failure. Invalid audience.",
        ));
    };
    let tokens = lock(&shared.tokens);
    match tokens.get(token.trim()) {
        None => Err(unauthorized(
            "IDX14100: JWT is not well formed, there are no dots (.).",
        )),
        Some(expiry) if Instant::now() >= *expiry => Err(unauthorized(
            "Lifetime validation failed, the token is expired.",
        )),
        Some(_) => Ok(()),
    }
}

fn throttled(shared: &Shared, segs: &[String], status: u16, retry_after: u64) -> GraphError {
    let first = segs
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let outlook = segs.len() > 2 && first == "users" && !segs[2].eq_ignore_ascii_case("drive");
    let drive = first == "drives"
        || first == "sites"
        || segs.get(2).is_some_and(|s| s.eq_ignore_ascii_case("drive"));
    let _ = shared;
    let e = match status {
        429 if outlook => GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its resource limit.",
        ),
        429 if drive => GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "activityLimitReached",
            "The request has been throttled",
        ),
        429 => GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        ),
        503 => GraphError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        504 => GraphError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UnknownError",
            "The gateway did not receive a timely response from the upstream server.",
        ),
        500 => GraphError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "An unspecified error has occurred.",
        ),
        502 => GraphError::new(
            StatusCode::BAD_GATEWAY,
            "BadGateway",
            "The server, while acting as a gateway, received an invalid response.",
        ),
        other => GraphError::new(
            StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "generalException",
            "Injected failure.",
        ),
    };
    if matches!(status, 429 | 503) {
        e.with_header(header::RETRY_AFTER, retry_after.to_string())
    } else {
        e
    }
}

/// An injected fault for this request, if any: scripted ones first, then random draws that
/// depend only on the seed and the request's rank.
pub(crate) fn injected(shared: &Shared, segs: &[String], n: u64) -> Option<GraphError> {
    let mut faults = lock(&shared.faults);
    let path = segs.join("/");
    if let Some(pos) = faults
        .script
        .iter()
        .position(|f| f.path_contains.is_empty() || path.contains(&f.path_contains))
    {
        let default_wait = faults.retry_after_secs;
        let f = &mut faults.script[pos];
        if f.after > 0 {
            f.after -= 1;
            return None;
        }
        let status = f.status;
        let retry_after = f.retry_after.unwrap_or(default_wait);
        let code = f.code.clone();
        f.times = f.times.saturating_sub(1);
        if f.times == 0 {
            faults.script.remove(pos);
        }
        let mut e = throttled(shared, segs, status, retry_after);
        if let Some(code) = code {
            e.message = crate::hostile::message_of(&code, &e.message);
            e.code = code;
        }
        return Some(e);
    }
    let seed = shared.cfg.seed;
    let draws = [
        (faults.throttle_rate, 429u16, 1u64),
        (faults.unavailable_rate, 503, 2),
        (faults.gateway_timeout_rate, 504, 3),
        (faults.server_error_rate, 500, 5),
        (faults.bad_gateway_rate, 502, 6),
    ];
    for (rate, status, stream) in draws {
        if rate > 0.0 && unit(seed, stream, n) < rate {
            return Some(throttled(shared, segs, status, faults.retry_after_secs));
        }
    }
    None
}

/// What a request to SharePoint or OneDrive costs in resource units, as Microsoft's table
/// prices Graph requests; `None` for requests outside SharePoint.
pub fn sharepoint_cost(req: &Req) -> Option<u64> {
    let segs: Vec<String> = req.segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let first = segs.first()?.as_str();
    let sharepoint = first == "sites"
        || first == "drives"
        || (first == "users" && segs.get(2).is_some_and(|s| s == "drive"));
    if !sharepoint {
        return None;
    }
    let expands_permissions = req
        .query
        .get("expand")
        .is_some_and(|e| e.to_ascii_lowercase().contains("permissions"));
    if segs.iter().any(|s| s == "permissions") || expands_permissions {
        return Some(5);
    }
    if req.method != Method::GET {
        return Some(2);
    }
    let last = segs.last().map(String::as_str).unwrap_or("");
    if last == "delta" || last.starts_with("delta(") {
        // The first page of a full enumeration costs 2; its continuations carry a token.
        let token = req.query.get("token").is_some() || last.contains("token=");
        return Some(if token { 1 } else { 2 });
    }
    let collection = [
        "children", "items", "lists", "sites", "drives", "columns", "versions", "root",
    ];
    Some(if collection.contains(&last) && last != "root" {
        2
    } else {
        1
    })
}

/// Spends `cost` resource units of the tenant's SharePoint budget. Past the budget the
/// request is refused with 429, `Retry-After` and `RateLimit-*` headers; from 80 % of it
/// successful answers carry the `RateLimit-*` headers, as SharePoint documents.
fn spend_resource_units(shared: &Shared, cost: u64) -> Result<Option<[(&'static str, String); 3]>> {
    let (limit, window_secs) = {
        let f = lock(&shared.faults);
        (f.sharepoint_ru_per_window, f.sharepoint_window_secs.max(1))
    };
    let mut stats = lock(&shared.stats);
    stats.resource_units += cost;
    if limit == 0 {
        return Ok(None);
    }
    let now = Instant::now();
    let window = Duration::from_secs(window_secs);
    // Throttled requests count toward the budget too.
    let (start, used) = match stats.ru_window {
        Some((start, used)) if now.duration_since(start) < window => (start, used + cost),
        _ => (now, cost),
    };
    stats.ru_window = Some((start, used));
    let reset = window
        .saturating_sub(now.duration_since(start))
        .as_secs_f64()
        .ceil()
        .max(1.0) as u64;
    let headers = |remaining: u64| {
        [
            ("ratelimit-limit", limit.to_string()),
            ("ratelimit-remaining", remaining.to_string()),
            ("ratelimit-reset", reset.to_string()),
        ]
    };
    if used > limit {
        stats.ru_throttled += 1;
        let mut e = GraphError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "activityLimitReached",
            "The request has been throttled",
        )
        .with_header(header::RETRY_AFTER, reset.to_string());
        for (k, v) in headers(0) {
            e = e.with_header(axum::http::HeaderName::from_static(k), v);
        }
        return Err(e);
    }
    Ok((used * 5 >= limit * 4).then(|| headers(limit - used)))
}

/// Serves one Graph request, from the token check to the response headers.
pub async fn serve(shared: Arc<Shared>, req: Req, in_batch: bool) -> Response {
    let arrived = Instant::now();
    let n = shared.counter.fetch_add(1, Ordering::SeqCst);
    let rid = request_id(&shared, n);
    let crid = req
        .headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mailbox = mailbox_of(&shared, &req.segs);
    let is_batch = req.segs.len() == 1 && req.segs[0] == "$batch";
    let mut guard = None;
    let mut ratelimit: Option<[(&'static str, String); 3]> = None;
    let outcome: Result<Response> = async {
        if !in_batch {
            check_token(&shared, &req.headers)?;
        }
        {
            let mut stats = lock(&shared.stats);
            stats.requests += 1;
            *stats.by_route.entry(route_of(&req)).or_default() += 1;
            if in_batch {
                stats.batch_inner += 1;
            } else if is_batch {
                stats.batches += 1;
            }
        }
        if let Some(cost) = sharepoint_cost(&req) {
            ratelimit = spend_resource_units(&shared, cost)?;
        }
        if let Some(mb) = &mailbox {
            let (limit, per_window, window_secs) = {
                let f = lock(&shared.faults);
                (
                    f.mailbox_concurrency,
                    f.mailbox_requests_per_10_min,
                    f.mailbox_window_secs.max(1),
                )
            };
            let mut stats = lock(&shared.stats);
            let m = stats.mailboxes.entry(mb.clone()).or_default();
            m.requests += 1;
            if per_window > 0 {
                let now = Instant::now();
                let window = Duration::from_secs(window_secs);
                let (start, count) = match m.window {
                    Some((start, count)) if now.duration_since(start) < window => {
                        (start, count + 1)
                    }
                    _ => (now, 1),
                };
                m.window = Some((start, count));
                if count > per_window {
                    m.throttled += 1;
                    let wait = window
                        .saturating_sub(now.duration_since(start))
                        .as_secs()
                        .max(1);
                    return Err(GraphError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "ApplicationThrottled",
                        "Application is over its resource limit.",
                    )
                    .with_header(header::RETRY_AFTER, wait.to_string()));
                }
            }
            if m.in_flight as usize >= limit {
                m.throttled += 1;
                return Err(GraphError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                )
                .with_header(header::RETRY_AFTER, "1"));
            }
            m.in_flight += 1;
            m.max_in_flight = m.max_in_flight.max(m.in_flight);
            // A request holds its slot from its arrival to its answer.
            guard = Some(InFlight {
                shared: &shared,
                mailbox: mb.clone(),
                since: arrived,
            });
        }
        if let Some(e) = injected(&shared, &req.segs, n) {
            return Err(e);
        }
        if let Some(e) = crate::hostile::forbidden(&shared, &req.segs) {
            return Err(e);
        }
        // The latency is the time to an answer, the simulator's own work included (as
        // Graph's is), so a request is answered no sooner than `latency` after it arrived.
        // The envelope of a batch is no operation of its own: its inner requests each take
        // the latency, four at a time.
        let latency = lock(&shared.faults).latency_ms;
        let answer_at = (latency > 0 && !is_batch)
            .then(|| tokio::time::Instant::from_std(arrived) + Duration::from_millis(latency));
        if req.segs.len() == 1 && req.segs[0] == "$batch" && req.method == Method::POST {
            if in_batch {
                return Err(GraphError::bad_request(
                    "A batch request cannot contain another batch request.",
                ));
            }
            return crate::batch::run(shared.clone(), &req).await;
        }
        let base = shared.base();
        let ctx = Ctx {
            shared: &shared,
            req: &req,
            prefer: Prefer::parse(&req.headers),
            root: format!("{base}/v1.0"),
            base,
        };
        let routed = crate::routes::route(&ctx);
        if let Some(at) = answer_at {
            tokio::time::sleep_until(at).await;
        }
        let mut resp = routed?;
        if let Some(applied) = ctx.prefer.applied(true) {
            if let Ok(v) = HeaderValue::from_str(&applied) {
                resp.headers_mut().insert("preference-applied", v);
            }
        }
        Ok(resp)
    }
    .await;
    drop(guard);
    let mut resp = match outcome {
        Ok(r) => r,
        Err(e) => e.into_response_with(&rid, crid.as_deref(), &date_now()),
    };
    {
        let mut stats = lock(&shared.stats);
        *stats.by_status.entry(resp.status().as_u16()).or_default() += 1;
    }
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("request-id", v);
    }
    for (k, v) in ratelimit.into_iter().flatten() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    if let Some(c) = crid.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert("client-request-id", c);
    }
    resp
}

/// The Graph error body for a request that never reached the route table.
pub fn error_response(e: GraphError) -> Response {
    e.into_response_with("00000000-0000-0000-0000-000000000000", None, &date_now())
}
