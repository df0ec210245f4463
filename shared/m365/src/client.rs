//! The Graph HTTP client: app-only tokens from the client-credentials grant (cached, renewed
//! before they expire and once more on a 401), `Retry-After` on 429/503/504 with a capped
//! backoff, at most four requests in flight per mailbox, and Graph's error bodies turned
//! into errors that say what to do. The client secret is only ever put in the token request
//! body; it is never formatted into a message.

use bytes::Bytes;
use engine::SourceErrorKind;
use reqwest::{header, Method, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// Exchange Online allows an application four concurrent requests per mailbox; more are
/// answered 429 (MailboxConcurrency), so the client never sends a fifth.
pub const MAILBOX_CONCURRENCY: usize = 4;

/// How long a renewed token is trusted less than Azure AD says, so that a request never
/// starts with a token about to expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// How throttled and failed requests are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The first backoff when the service gives no `Retry-After`; doubled each time.
    pub base: Duration,
    /// No single wait is longer, whatever `Retry-After` asks: a run that would wait
    /// longer gives up as throttled and the next run tries again.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// The service limits a backup keeps under, so that it slows down before Graph has to
/// throttle it: Outlook's requests per mailbox in a window (10,000 per 10 minutes per app
/// and mailbox), SharePoint's resource units per app and tenant in a window (1,200 a minute
/// for a tenant of up to 1,000 licences; 2,400, 3,600, 4,800 and 6,000 from 1k, 5k, 15k
/// and 50k licences), and whether `$batch` may combine requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Throttle {
    /// Requests per mailbox per window; 0 lifts the budget.
    pub mailbox_requests: u64,
    pub mailbox_window_secs: u64,
    /// SharePoint and OneDrive resource units per window for the tenant; 0 lifts it.
    pub sharepoint_resource_units: u64,
    pub sharepoint_window_secs: u64,
    /// Combine small reads of one mailbox into `$batch` requests of up to 20.
    pub batch: bool,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            mailbox_requests: 10_000,
            mailbox_window_secs: 600,
            sharepoint_resource_units: 1_200,
            sharepoint_window_secs: 60,
            batch: true,
        }
    }
}

/// Added to each budget's window: a request is counted here just before it leaves, and
/// by Graph when it arrives.
const WINDOW_MARGIN: Duration = Duration::from_millis(250);

/// Requests a `$batch` may carry.
pub const BATCH_MAX: usize = 20;

/// One request of a `$batch`: a path below the version (`/users/…`) or a Graph URL, with
/// its own headers (the envelope's are not passed on).
#[derive(Clone, Debug)]
pub struct BatchRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// One answer of a `$batch`: a success status with its body as Graph put it in the batch
/// (JSON, or a base64 string for other content).
#[derive(Clone, Debug)]
pub struct BatchAnswer {
    pub status: u16,
    pub body: Value,
}

impl BatchAnswer {
    /// The body of a non-JSON answer (a message's MIME), which Graph base64-encodes.
    pub fn bytes(&self) -> FResult<Bytes> {
        use base64::Engine;
        match &self.body {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map(Bytes::from)
                .map_err(|e| Fail::Protocol(format!("a batched answer is not base64: {e}"))),
            Value::Null => Ok(Bytes::new()),
            v => Ok(Bytes::from(v.to_string())),
        }
    }
}

/// Requests (or resource units) spent in a sliding window: the times and amounts of the
/// last window's spending.
#[derive(Default)]
struct Window {
    spent: std::collections::VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    /// Spends `n` when the window allows it, or says how long to wait first.
    fn spend(&mut self, n: u64, budget: u64, len: Duration) -> Option<Duration> {
        let now = Instant::now();
        while let Some(&(t, k)) = self.spent.front() {
            if now.duration_since(t) >= len {
                self.spent.pop_front();
                self.total -= k;
            } else {
                break;
            }
        }
        let n = n.min(budget);
        if self.total + n <= budget {
            self.spent.push_back((now, n));
            self.total += n;
            return None;
        }
        // Wait until enough of the oldest spending has left the window.
        let mut freed = 0;
        for &(t, k) in &self.spent {
            freed += k;
            if self.total - freed + n <= budget {
                return Some((t + len).saturating_duration_since(now) + Duration::from_millis(5));
            }
        }
        Some(len)
    }
}

/// What a SharePoint or OneDrive request costs in resource units, as Microsoft's table
/// prices Graph requests (1: one item, a delta with a token, a download; 2: a list, a delta
/// without a token, a write; 5: permissions); `None` for requests outside SharePoint.
pub fn resource_units(method: &Method, path: &str) -> Option<u64> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let i = segs.iter().position(|s| s == "v1.0").map_or(0, |i| i + 1);
    let segs = &segs[i.min(segs.len())..];
    let first = segs.first()?.as_str();
    let sharepoint = first == "sites"
        || first == "drives"
        || (first == "users" && segs.get(2).is_some_and(|s| s == "drive"));
    if !sharepoint {
        return None;
    }
    let query = query.to_ascii_lowercase();
    if segs.iter().any(|s| s == "permissions") || query.contains("permissions") {
        return Some(5);
    }
    if method != Method::GET {
        return Some(2);
    }
    let last = segs.last().map(String::as_str).unwrap_or("");
    if last == "delta" || last.starts_with("delta(") {
        return Some(if query.contains("token=") || last.contains("token=") {
            1
        } else {
            2
        });
    }
    let lists = [
        "children", "items", "lists", "sites", "drives", "columns", "versions",
    ];
    Some(if lists.contains(&last) { 2 } else { 1 })
}

/// Why a request failed, before it becomes an [`engine::Error`].
#[derive(Debug, Clone)]
pub enum Fail {
    /// Graph answered with an error status and body.
    Status {
        status: u16,
        code: String,
        message: String,
        what: String,
    },
    Auth(String),
    Throttled(String),
    Unavailable(String),
    Protocol(String),
}

impl Fail {
    pub fn status(&self) -> Option<u16> {
        match self {
            Fail::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A delta or sync token the service no longer accepts: the collection must be
    /// enumerated again.
    pub fn is_expired_token(&self) -> bool {
        match self {
            Fail::Status { status, code, .. } => {
                *status == 410
                    || code.eq_ignore_ascii_case("syncStateNotFound")
                    || code.eq_ignore_ascii_case("resyncRequired")
                    || code.eq_ignore_ascii_case("syncStateInvalid")
            }
            _ => false,
        }
    }

    /// Whether the whole run must stop (credentials, throttling beyond the cap, an
    /// unreachable service) rather than one item being recorded as failed.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Fail::Status { .. } | Fail::Protocol(_))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Status {
                status,
                code,
                message,
                what,
            } => write!(
                f,
                "Microsoft Graph answered {status} {code} to {what}: {message}"
            ),
            Fail::Auth(m) | Fail::Throttled(m) | Fail::Unavailable(m) | Fail::Protocol(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<Fail> for engine::Error {
    fn from(f: Fail) -> Self {
        let kind = match &f {
            Fail::Status { status: 404, .. } | Fail::Status { status: 410, .. } => {
                SourceErrorKind::NotFound
            }
            Fail::Status { status: 401, .. } | Fail::Status { status: 403, .. } => {
                SourceErrorKind::Auth
            }
            Fail::Status { status, .. } if *status >= 500 => SourceErrorKind::Unavailable,
            Fail::Status { .. } | Fail::Protocol(_) => SourceErrorKind::Protocol,
            Fail::Auth(_) => SourceErrorKind::Auth,
            Fail::Throttled(_) => SourceErrorKind::Throttled,
            Fail::Unavailable(_) => SourceErrorKind::Unavailable,
        };
        engine::Error::source(kind, f.to_string())
    }
}

pub type FResult<T> = std::result::Result<T, Fail>;

/// A request body.
#[derive(Clone)]
pub enum Body {
    Json(Value),
    Bytes(Bytes, &'static str),
}

struct Token {
    value: Zeroizing<String>,
    renew_at: Instant,
    generation: u64,
}

/// One tenant's Graph endpoint with its credentials.
pub struct Graph {
    http: reqwest::Client,
    /// `https://graph.microsoft.com/v1.0`, without a trailing slash.
    pub root: String,
    token_url: String,
    client_id: String,
    secret: Zeroizing<String>,
    scope: String,
    token: tokio::sync::Mutex<Option<Token>>,
    generation: std::sync::atomic::AtomicU64,
    mailboxes: Mutex<HashMap<String, Arc<Semaphore>>>,
    pub policy: RetryPolicy,
    pub throttle: Throttle,
    budgets: Arc<Budgets>,
}

/// What an app has spent of its budgets with one tenant: shared by every client of the
/// same app and tenant in this process, since Graph counts per app and tenant, not per
/// connection.
#[derive(Default)]
struct Budgets {
    mailboxes: Mutex<HashMap<String, Window>>,
    resource_units: Mutex<Window>,
}

fn budgets_of(key: String) -> Arc<Budgets> {
    static ALL: std::sync::OnceLock<Mutex<HashMap<String, Arc<Budgets>>>> =
        std::sync::OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(key).or_default().clone()
}

/// A response with the mailbox permit it was made under: the permit is held until the
/// body has been read, so a streamed body still counts against the mailbox's limit.
pub struct Answer {
    pub resp: Response,
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The request line for messages: the path without its query, which can be long and
/// carries opaque state tokens.
fn what(method: &Method, url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let path = path
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(path);
    format!("{method} {path}")
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

/// Graph's error body: `{"error": {"code", "message"}}`; anything else is shown as text.
async fn error_of(resp: Response, what: String) -> Fail {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<Value>(&text) {
        Ok(v) => (
            v.pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        Err(_) => (String::new(), text.chars().take(200).collect()),
    };
    Fail::Status {
        status,
        code,
        message,
        what,
    }
}

impl Graph {
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(
        graph_url: &str,
        login_url: &str,
        tenant: &str,
        client_id: &str,
        secret: Zeroizing<String>,
    ) -> engine::Result<Graph> {
        let http = reqwest::Client::builder()
            // Redirects are followed by hand: a download's redirect leaves Graph, and the
            // bearer token must not follow it.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| engine::Error::Invalid(format!("cannot build an HTTP client: {e}")))?;
        let graph = graph_url.trim_end_matches('/');
        let root = if graph.ends_with("/v1.0") {
            graph.to_string()
        } else {
            format!("{graph}/v1.0")
        };
        Ok(Graph {
            http,
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                login_url.trim_end_matches('/'),
                tenant
            ),
            scope: scope_for(graph),
            root,
            client_id: client_id.to_string(),
            secret,
            token: tokio::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            mailboxes: Mutex::new(HashMap::new()),
            policy: RetryPolicy::default(),
            throttle: Throttle::default(),
            budgets: budgets_of(format!("{graph} {login_url} {tenant} {client_id}")),
        })
    }

    /// An absolute URL for a Graph path (`/users`), or the URL itself (a next link).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.root, path)
        }
    }

    fn mailbox(&self, key: &str) -> Arc<Semaphore> {
        let mut m = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Semaphore::new(MAILBOX_CONCURRENCY)))
            .clone()
    }

    /// Waits until `mailbox` may take `n` more requests within its budget.
    async fn pace_mailbox(&self, mailbox: &str, n: u64) {
        let (budget, len) = (
            self.throttle.mailbox_requests,
            Duration::from_secs(self.throttle.mailbox_window_secs.max(1)) + WINDOW_MARGIN,
        );
        if budget == 0 {
            return;
        }
        loop {
            let wait = {
                let mut b = self
                    .budgets
                    .mailboxes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                b.entry(mailbox.to_ascii_lowercase())
                    .or_default()
                    .spend(n, budget, len)
            };
            match wait {
                None => return,
                Some(w) => {
                    tracing::debug!(
                        wait_ms = w.as_millis() as u64,
                        "mailbox budget spent; pacing"
                    );
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    /// Waits until the tenant's SharePoint budget allows a request costing `cost` units.
    async fn pace_sharepoint(&self, cost: u64) {
        let (budget, len) = (
            self.throttle.sharepoint_resource_units,
            Duration::from_secs(self.throttle.sharepoint_window_secs.max(1)) + WINDOW_MARGIN,
        );
        if budget == 0 {
            return;
        }
        loop {
            let wait = self
                .budgets
                .resource_units
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .spend(cost, budget, len);
            match wait {
                None => return,
                Some(w) => {
                    tracing::debug!(
                        wait_ms = w.as_millis() as u64,
                        "SharePoint budget spent; pacing"
                    );
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    /// The current token, renewed when it is about to expire.
    async fn token(&self) -> FResult<(Zeroizing<String>, u64)> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if Instant::now() < t.renew_at {
                return Ok((t.value.clone(), t.generation));
            }
        }
        let (value, lifetime) = self.fetch_token().await?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let margin = TOKEN_MARGIN.min(lifetime / 2);
        *slot = Some(Token {
            value: value.clone(),
            renew_at: Instant::now() + lifetime - margin,
            generation,
        });
        Ok((value, generation))
    }

    /// Forgets the token of `generation` after Graph refused it (revoked or expired early).
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.generation == generation) {
            *slot = None;
        }
    }

    async fn fetch_token(&self) -> FResult<(Zeroizing<String>, Duration)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.as_str()),
                ("scope", self.scope.as_str()),
            ];
            let sent = self.http.post(&self.token_url).form(&form).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.policy.attempts => {
                    tracing::debug!(error = %e, "token request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(Fail::Unavailable(format!(
                        "the Microsoft identity platform cannot be reached: {e}"
                    )))
                }
            };
            let status = resp.status();
            if matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
                && attempt < self.policy.attempts
            {
                let wait = retry_after(&resp).unwrap_or_else(|| self.backoff(attempt));
                tokio::time::sleep(wait.min(self.policy.max_wait)).await;
                continue;
            }
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                let token = body
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Fail::Protocol("the token endpoint answered without an access token".into())
                    })?;
                let lifetime = body
                    .get("expires_in")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .unwrap_or(3599);
                return Ok((
                    Zeroizing::new(token.to_string()),
                    Duration::from_secs(lifetime.max(1)),
                ));
            }
            let error = body.get("error").and_then(Value::as_str).unwrap_or("");
            // The description starts with the AADSTS code and sentence; what follows
            // (trace and correlation ids, time) is left out of the one-line message.
            let desc = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .split(" Trace ID:")
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            return Err(match status.as_u16() {
                400 | 401 => Fail::Auth(format!(
                    "Microsoft 365 refused the app's credentials ({error}: {desc}); check the tenant id, client id and client secret"
                )),
                s if s >= 500 || s == 429 => Fail::Unavailable(format!(
                    "the Microsoft identity platform answered {s}: {desc}"
                )),
                s => Fail::Auth(format!("the token request was refused ({s} {error}: {desc})")),
            });
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
        exp.min(self.policy.max_wait)
    }

    /// Sends a request, retrying as Graph documents (429, 503 and 504 with `Retry-After`;
    /// connection failures with backoff; one token renewal on 401). `mailbox` names the
    /// mailbox an Outlook request touches; `auth` is false for pre-authenticated URLs
    /// (downloads, upload sessions), which must not receive the bearer token.
    ///
    /// # Errors
    /// What [`Fail`] describes; a success status (2xx, 3xx) is returned as is.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Body>,
        headers: &[(&str, String)],
        mailbox: Option<&str>,
        auth: bool,
    ) -> FResult<Answer> {
        self.send_weighted(method, url, body, headers, mailbox, auth, 1)
            .await
    }

    /// [`Graph::send`] for a request that counts as `weight` requests against the mailbox's
    /// limits: a `$batch` of that many inner requests, which Graph evaluates one by one and
    /// runs up to four at a time.
    #[allow(clippy::too_many_arguments)]
    async fn send_weighted(
        &self,
        method: Method,
        url: &str,
        body: Option<Body>,
        headers: &[(&str, String)],
        mailbox: Option<&str>,
        auth: bool,
        weight: u32,
    ) -> FResult<Answer> {
        let what = what(&method, url);
        let sem = mailbox.map(|m| self.mailbox(m));
        let units = if auth {
            resource_units(&method, url)
        } else {
            None
        };
        let permits = weight.clamp(1, MAILBOX_CONCURRENCY as u32);
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let permit = match &sem {
                Some(s) => Some(
                    s.clone()
                        .acquire_many_owned(permits)
                        .await
                        .map_err(|_| Fail::Unavailable("the client is shutting down".into()))?,
                ),
                None => None,
            };
            // Every attempt counts against the budgets, as Graph counts it; spent once the
            // request holds its slots, so that it is sent right after.
            if let Some(m) = mailbox {
                self.pace_mailbox(m, u64::from(weight)).await;
            }
            if let Some(cost) = units {
                self.pace_sharepoint(cost).await;
            }
            let mut rb = self.http.request(method.clone(), url);
            let mut generation = 0;
            // Every Prefer wish goes in one header: Graph reads them as one list.
            let mut prefer: Vec<&str> = Vec::new();
            if auth {
                let (token, g) = self.token().await?;
                generation = g;
                rb = rb.bearer_auth(token.as_str());
                prefer.push("IdType=\"ImmutableId\"");
            }
            for (k, v) in headers {
                if k.eq_ignore_ascii_case("prefer") {
                    prefer.push(v.as_str());
                } else {
                    rb = rb.header(*k, v.as_str());
                }
            }
            if !prefer.is_empty() {
                rb = rb.header("Prefer", prefer.join(", "));
            }
            match &body {
                Some(Body::Json(v)) => rb = rb.json(v),
                Some(Body::Bytes(b, ct)) => {
                    rb = rb.header(header::CONTENT_TYPE, *ct).body(b.clone());
                }
                None => {}
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    drop(permit);
                    attempt += 1;
                    if attempt >= self.policy.attempts {
                        return Err(Fail::Unavailable(format!(
                            "Microsoft Graph cannot be reached ({what}): {e}"
                        )));
                    }
                    tracing::debug!(request = %what, error = %e, "request failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
            };
            let status = resp.status();
            tracing::trace!(request = %what, %status, "answered");
            if status.is_success() || status.is_redirection() {
                return Ok(Answer { resp, permit });
            }
            if status == StatusCode::UNAUTHORIZED && auth && !renewed {
                renewed = true;
                drop(permit);
                self.invalidate(generation).await;
                continue;
            }
            if matches!(status.as_u16(), 429 | 503 | 504) {
                attempt += 1;
                let wait = retry_after(&resp).unwrap_or_else(|| self.backoff(attempt));
                drop(resp);
                drop(permit);
                if attempt >= self.policy.attempts || wait > self.policy.max_wait {
                    return Err(Fail::Throttled(format!(
                        "Microsoft Graph kept throttling {what} ({status}); the next run goes on from here"
                    )));
                }
                tracing::debug!(request = %what, %status, wait_ms = wait.as_millis() as u64, "throttled; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            let fail = error_of(resp, what.clone()).await;
            return Err(match (status.as_u16(), &fail) {
                (401, Fail::Status { code, message, .. }) => Fail::Auth(format!(
                    "Microsoft Graph refused the app's token for {what} ({code}: {message}); check the app's credentials"
                )),
                (403, Fail::Status { code, message, .. }) if code != "ErrorQuotaExceeded" => {
                    Fail::Auth(format!(
                        "Microsoft Graph denied {what} ({code}: {message}); grant the app the application permissions it needs"
                    ))
                }
                _ => fail,
            });
        }
    }

    /// GET of a JSON resource or page.
    pub async fn get_json(&self, url: &str, mailbox: Option<&str>) -> FResult<Value> {
        self.json(Method::GET, url, None, &[], mailbox).await
    }

    /// A request whose answer is JSON (or empty, as `204 No Content`: `Null`).
    pub async fn json(
        &self,
        method: Method,
        url: &str,
        body: Option<Body>,
        headers: &[(&str, String)],
        mailbox: Option<&str>,
    ) -> FResult<Value> {
        let url = self.url(url);
        let w = what(&method, &url);
        let a = self
            .send(method, &url, body, headers, mailbox, true)
            .await?;
        let bytes = a
            .resp
            .bytes()
            .await
            .map_err(|e| Fail::Unavailable(format!("the answer to {w} broke off: {e}")))?;
        drop(a.permit);
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Fail::Protocol(format!("the answer to {w} is not valid JSON: {e}")))
    }

    /// GETs up to [`BATCH_MAX`] requests of one mailbox in one `$batch`, answered in the
    /// order asked. An inner request Graph throttled (429, 503, 504) is asked again after
    /// its `Retry-After`, on its own, until it succeeds or the retry policy gives up; other
    /// failures are that request's answer.
    pub async fn batch(
        &self,
        requests: &[BatchRequest],
        mailbox: Option<&str>,
    ) -> FResult<Vec<FResult<BatchAnswer>>> {
        assert!(
            requests.len() <= BATCH_MAX,
            "a batch holds at most 20 requests"
        );
        let mut out: Vec<Option<FResult<BatchAnswer>>> = vec![None; requests.len()];
        let mut attempts = vec![0u32; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let batch_url = self.url("/$batch");
        while !pending.is_empty() {
            let body: Vec<Value> = pending
                .iter()
                .map(|&i| {
                    let r = &requests[i];
                    let url = r.url.strip_prefix(&self.root).unwrap_or(&r.url);
                    let mut headers = serde_json::Map::new();
                    headers.insert("Prefer".into(), "IdType=\"ImmutableId\"".into());
                    for (k, v) in &r.headers {
                        if k.eq_ignore_ascii_case("prefer") {
                            let both = format!("IdType=\"ImmutableId\", {v}");
                            headers.insert("Prefer".into(), both.into());
                        } else {
                            headers.insert(k.clone(), v.clone().into());
                        }
                    }
                    serde_json::json!({ "id": i.to_string(), "method": "GET", "url": url, "headers": headers })
                })
                .collect();
            let a = self
                .send_weighted(
                    Method::POST,
                    &batch_url,
                    Some(Body::Json(serde_json::json!({ "requests": body }))),
                    &[],
                    mailbox,
                    true,
                    pending.len() as u32,
                )
                .await?;
            let bytes = a.resp.bytes().await.map_err(|e| {
                Fail::Unavailable(format!("the answer to a Graph batch broke off: {e}"))
            })?;
            drop(a.permit);
            let answer: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Fail::Protocol(format!("a Graph batch answer is not JSON: {e}")))?;
            let mut again = Vec::new();
            let mut wait = Duration::ZERO;
            for &i in &pending {
                let entry = answer
                    .get("responses")
                    .and_then(Value::as_array)
                    .and_then(|rs| rs.iter().find(|r| r["id"].as_str() == Some(&i.to_string())));
                let what = what(&Method::GET, &requests[i].url);
                // An answer missing from the batch is asked again, like a throttled one.
                let status = entry
                    .and_then(|e| e["status"].as_u64())
                    .map_or(503, |s| s as u16);
                if matches!(status, 429 | 503 | 504) {
                    attempts[i] += 1;
                    let asked = entry.and_then(|e| {
                        e["headers"].as_object()?.iter().find_map(|(k, v)| {
                            k.eq_ignore_ascii_case("retry-after")
                                .then(|| v.as_str()?.trim().parse::<u64>().ok())
                                .flatten()
                        })
                    });
                    let w = asked
                        .map(Duration::from_secs)
                        .unwrap_or_else(|| self.backoff(attempts[i]));
                    if attempts[i] >= self.policy.attempts || w > self.policy.max_wait {
                        out[i] = Some(Err(Fail::Throttled(format!(
                            "Microsoft Graph kept throttling {what} ({status}); the next run goes on from here"
                        ))));
                    } else {
                        wait = wait.max(w);
                        again.push(i);
                    }
                    continue;
                }
                let e = entry.expect("present when its status is");
                let body = e.get("body").cloned().unwrap_or(Value::Null);
                out[i] = Some(if (200..300).contains(&status) {
                    Ok(BatchAnswer { status, body })
                } else {
                    let code = body
                        .pointer("/error/code")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let message = body
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    Err(Fail::Status {
                        status,
                        code: code.to_string(),
                        message: message.to_string(),
                        what,
                    })
                });
            }
            if !again.is_empty() {
                tracing::debug!(
                    requests = again.len(),
                    wait_ms = wait.as_millis() as u64,
                    "batched requests throttled; waiting"
                );
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every request of the batch is answered"))
            .collect())
    }

    /// GET of raw bytes (a message's MIME), read whole.
    pub async fn get_bytes(&self, url: &str, mailbox: Option<&str>) -> FResult<Bytes> {
        let url = self.url(url);
        let w = what(&Method::GET, &url);
        let a = self
            .send(Method::GET, &url, None, &[], mailbox, true)
            .await?;
        let b = a
            .resp
            .bytes()
            .await
            .map_err(|e| Fail::Unavailable(format!("the answer to {w} broke off: {e}")))?;
        drop(a.permit);
        Ok(b)
    }
}

/// The `.default` scope of the Graph endpoint in use: national clouds have their own
/// resource; anything else (a test server) is asked for the global one.
fn scope_for(graph: &str) -> String {
    let host = graph
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or(""))
        .unwrap_or("");
    let known = [
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    ];
    if known.contains(&host) {
        format!("https://{host}/.default")
    } else {
        "https://graph.microsoft.com/.default".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_path_not_the_query() {
        assert_eq!(
            what(
                &Method::GET,
                "https://graph.microsoft.com/v1.0/users/a/messages/delta?$deltatoken=abc"
            ),
            "GET /v1.0/users/a/messages/delta"
        );
    }

    #[test]
    fn national_clouds_get_their_own_scope() {
        assert_eq!(
            scope_for("https://graph.microsoft.us"),
            "https://graph.microsoft.us/.default"
        );
        assert_eq!(
            scope_for("http://127.0.0.1:9/"),
            "https://graph.microsoft.com/.default"
        );
    }

    #[test]
    fn expired_tokens_are_recognised_by_status_or_code() {
        let f = |status, code: &str| Fail::Status {
            status,
            code: code.into(),
            message: String::new(),
            what: String::new(),
        };
        assert!(f(410, "").is_expired_token());
        assert!(f(400, "syncStateNotFound").is_expired_token());
        assert!(f(400, "resyncRequired").is_expired_token());
        assert!(!f(404, "ErrorItemNotFound").is_expired_token());
    }
}
