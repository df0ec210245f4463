//! A Microsoft Graph v1.0 simulator, written from Microsoft's published documentation, so
//! that the Microsoft 365 connector can be tested, demonstrated and benchmarked without a
//! tenant: the identity platform's client-credentials token endpoint, users, Outlook mail,
//! contacts, calendars and To Do, OneDrive and SharePoint drives, sites and lists, JSON
//! batching, paging, delta queries, immutable ids, throttling and other faults.
//!
//! The organisation is generated from a seed, so two runs with the same [`Config`] serve the
//! same data. `POST /_sim/advance-day` changes it as a day of use would, and delta queries
//! then report exactly those changes.
//!
//! # Addresses
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials, scope `https://graph.microsoft.com/.default`.
//! - `/v1.0/…`: Graph, with a bearer token. `$batch` inner requests use the outer token.
//! - `/_dl/{token}`, `/_up/{id}`, `/_att/{id}`: pre-authenticated download and upload-session
//!   URLs, handed out by Graph responses (no bearer token, as documented).
//!
//! # Control API (`/_sim`, no token; for tests and demos)
//! - `GET info`: tenant, client id, URLs, users with their drive ids, sites.
//! - `GET stats`, `POST stats/reset`: requests per status and per mailbox (`requests`,
//!   `in_flight`, `max_in_flight`, `throttled`), batches and their inner requests,
//!   SharePoint resource units spent and refused, downloads.
//! - `GET|POST faults`: merge fault settings ([`Faults`]): `throttle_rate`,
//!   `unavailable_rate`, `gateway_timeout_rate`, `server_error_rate`, `bad_gateway_rate`,
//!   `vanish_rate`, `retry_after_secs`, `latency_ms`, `mailbox_concurrency`,
//!   `mailbox_requests_per_10_min`, `mailbox_window_secs`, `sharepoint_ru_per_window`,
//!   `sharepoint_window_secs`; and what real tenants refuse or change ([`hostile`]):
//!   `forbidden` (Graph id → 403 code: `malwareDetected`, `ErrorAccessDenied`,
//!   `accessDenied`, for a file, a message or a whole site), `enriched` (drive item id →
//!   bytes served beyond the listed size), `delete_before_delta` (mail folders deleted as
//!   their delta is first asked for, which then answers 404 `ErrorSyncFolderNotFound`),
//!   `cut_downloads` (drive item id → how many of its downloads break off half-way),
//!   `stall_downloads` (… how many stall half-way, sending nothing more for an hour).
//! - `POST faults/script`: one-shot faults, `{"status": 429, "path_contains": "messages",
//!   "times": 1}`, optionally with `"code"` (the body's error code), `"retry_after"`
//!   (seconds, an hour if a test likes) and `"after"` (matching requests served first).
//! - `POST search-folder`: `{"user", "name", "source", "parent"?}` adds a search folder
//!   (`mailSearchFolder`) whose delta shows the messages of `source`.
//! - `POST expire-tokens`: expire every access token.
//! - `POST expire-delta`: expire every delta token, or with `{"user": "<id or UPN>"}` those
//!   of one mailbox and its OneDrive, or with `{"drive": "<id>"}` those of one drive.
//!   [`Config::delta_token_max_days`] also ages tokens out by simulated days.
//! - `POST advance-day`: one day of changes in every service; the answer lists each change
//!   by id.
//! - `POST malformed-message`: `{"user": "<id or UPN>", "kind": "truncated-multipart" |
//!   "bad-base64" | "8bit-headers"}` delivers an inbox message whose `$value` is broken MIME.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod calendar;
pub mod contacts;
pub mod day;
pub mod drive;
pub mod error;
pub mod gen;
pub mod hostile;
pub mod mail;
pub mod mime;
pub mod model;
pub mod odata;
pub mod outlook;
pub mod routes;
pub mod server;
pub mod sites;
pub mod store;
pub mod todo;
pub mod users;
pub mod util;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;

pub use server::{Faults, ScriptedFault, Shared, Stats};

/// Everything that shapes a simulated organisation and how the simulator behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub seed: u64,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
    pub users: usize,
    pub domains: usize,
    /// Messages in each generated mail folder (inbox gets twice as many).
    pub messages_per_folder: usize,
    /// Depth of the nested mail folder tree under the inbox.
    pub folder_depth: usize,
    /// Every n-th message has attachments; one in four of those carries a large one.
    pub attachment_every: usize,
    pub large_attachment_bytes: u64,
    pub contacts_per_user: usize,
    pub events_per_user: usize,
    pub tasks_per_list: usize,
    pub files_per_user: usize,
    /// The largest generated OneDrive or SharePoint file; a few files reach it.
    pub large_file_bytes: u64,
    /// Site collections besides the root site; each has sub-sites two levels deep.
    pub sites: usize,
    /// Delta tokens older than this many simulated days answer 410 Gone; `None` keeps them
    /// (Outlook's real lifetime depends on a cache, so tests choose).
    pub delta_token_max_days: Option<u32>,
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            seed: 1,
            tenant_id: "6d1f3c8e-5b0a-4a57-9f3e-2c6f1d2b7a90".into(),
            client_id: "3f9a2b1c-7e4d-4c8a-b5f6-0a1b2c3d4e5f".into(),
            client_secret: "graphsim-test-credential".into(),
            token_lifetime: Duration::from_secs(3599),
            users: 3,
            domains: 2,
            messages_per_folder: 6,
            folder_depth: 2,
            attachment_every: 3,
            large_attachment_bytes: 3 << 20,
            contacts_per_user: 8,
            events_per_user: 6,
            tasks_per_list: 4,
            files_per_user: 8,
            large_file_bytes: 6 << 20,
            sites: 1,
            delta_token_max_days: None,
            faults: Faults::default(),
        }
    }
}

/// A simulator serving on a local port until dropped.
pub struct Running {
    /// `http://127.0.0.1:PORT`: Graph is at `{base_url}/v1.0`, the token endpoint at
    /// `{base_url}/{tenant}/oauth2/v2.0/token`.
    pub base_url: String,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// An access token for calling Graph directly (a test's or a demo's own checks), as
    /// if the app had signed in; it expires and is refused like any other.
    pub fn admin_token(&self) -> String {
        auth::issue(&self.shared)
    }

    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.base_url, self.shared.cfg.tenant_id
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Generates the organisation and starts serving it.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(cfg: Config) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.host, cfg.port)).await?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let sim = gen::generate(&cfg);
    let shared = Arc::new(Shared {
        faults: Mutex::new(cfg.faults.clone()),
        cfg,
        sim: Mutex::new(sim),
        base: Mutex::new(base_url.clone()),
        tokens: Mutex::new(HashMap::new()),
        stats: Mutex::new(Stats::default()),
        counter: AtomicU64::new(0),
        token_counter: AtomicU64::new(0),
    });
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Running {
        base_url,
        shared,
        task,
    })
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route("/v1.0/{*rest}", any(graph))
        .route("/_dl/{token}", get(drive::download))
        .route("/_up/{session}", any(drive::upload_fragment))
        .route("/_att/{session}", any(mail::attachment_fragment))
        .nest("/_sim", admin::router())
        .fallback(not_found)
        // Graph's own limits (4 MiB simple uploads, 60 MiB session fragments) are checked by
        // the handlers, with Graph's error bodies; this only bounds what is read at all.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(shared)
}

async fn graph(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Path segments are decoded one by one, so take them from the raw URI rather than the
    // already-decoded wildcard.
    let _ = rest;
    let raw_path = uri.path().strip_prefix("/v1.0").unwrap_or("");
    let req = server::Req {
        method,
        segs: server::split_path(raw_path),
        query: odata::Query::parse(query.as_deref().unwrap_or("")),
        headers,
        body,
    };
    server::serve(shared, req, false).await
}

async fn not_found() -> Response {
    server::error_response(error::GraphError::new(
        axum::http::StatusCode::NOT_FOUND,
        "BadRequest",
        "Invalid version: the request must start with /v1.0.",
    ))
}
