//! A Google Workspace simulator, written from Google's discovery documents (Gmail v1) and
//! its published error bodies and quotas, so that the Google connector is tested over real
//! HTTP against what Google documents rather than against what the connector expects:
//! the OAuth token endpoint (JWT bearer grant of a service account with domain-wide
//! delegation, refresh-token grant of personal accounts), the Directory API's user list,
//! and Gmail's profile, messages, history and labels.
//!
//! What makes a client fail here as it would against Google: history ids with random gaps,
//! history that expires (404 for an old `startHistoryId`), page tokens that are opaque,
//! per-user and per-project quota units charged per method at the documented costs (403
//! `userRateLimitExceeded`/`rateLimitExceeded`), 429 and 5xx at chosen rates, access tokens
//! that expire, and never a `Retry-After` header.
//!
//! # Addresses (all on one host; the connector's base URLs point here)
//! - `POST /token`: the OAuth 2.0 token endpoint.
//! - `GET /admin/directory/v1/users`: Directory API users (`customer` or `domain`).
//! - `GET /gmail/v1/users/{userId}/profile|messages|messages/{id}|history|labels`.
//!
//! Tests and demos steer the simulator through [`Running`]'s methods (deliver, delete and
//! relabel messages, expire history and tokens, script faults, read statistics).

pub mod auth;
pub mod directory;
pub mod errors;
pub mod front;
pub mod gmail;
pub mod model;

use axum::routing::{get, post};
use axum::Router;
use model::{Label, Mailbox, Message, User};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The scopes a backup asks for, as an administrator delegates them by default here.
pub const SCOPE_GMAIL_READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";
pub const SCOPE_DIRECTORY_USERS_READONLY: &str =
    "https://www.googleapis.com/auth/admin.directory.user.readonly";

/// What shapes the simulated organisation and how the simulator behaves.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub seed: u64,
    pub project: String,
    /// The Workspace's primary domain.
    pub domain: String,
    /// Workspace users; the first is the administrator.
    pub users: usize,
    /// The last `suspended` users are suspended.
    pub suspended: usize,
    /// Personal (consumer) accounts, reached through the refresh-token grant.
    pub personal: Vec<String>,
    /// The scopes the administrator delegated to the service account's client id.
    pub delegated_scopes: Vec<String>,
    /// The installed app of personal accounts.
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
    pub token_lifetime: Duration,
    /// The largest random step between two history ids, less one.
    pub history_gap: u64,
    /// Gmail's per-user quota: 15,000 units per user per minute.
    pub user_units_per_window: u64,
    /// Gmail's per-project quota: 1,200,000 units per minute.
    pub project_units_per_window: u64,
    /// The quota window (a minute, as documented; tests shorten it).
    pub quota_window: Duration,
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            seed: 1,
            project: "lifeboat-sim".into(),
            domain: "example.com".into(),
            users: 3,
            suspended: 1,
            personal: vec!["pat.personal@gmail.com".into()],
            delegated_scopes: vec![
                SCOPE_GMAIL_READONLY.into(),
                SCOPE_DIRECTORY_USERS_READONLY.into(),
            ],
            oauth_client_id: "123456789012-sim.apps.googleusercontent.com".into(),
            oauth_client_secret: "googlesim-test-client-secret".into(),
            token_lifetime: Duration::from_secs(3599),
            history_gap: 7,
            user_units_per_window: 15_000,
            project_units_per_window: 1_200_000,
            quota_window: Duration::from_secs(60),
            faults: Faults::default(),
        }
    }
}

/// Faults drawn at random per API request (never on the token endpoint), and scripted ones.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Share of requests answered 403 `userRateLimitExceeded`.
    pub user_rate_limit_rate: f64,
    /// Share answered 403 `rateLimitExceeded` (the project's quota).
    pub rate_limit_rate: f64,
    /// Share answered 429 `rateLimitExceeded`.
    pub too_many_rate: f64,
    /// Share answered 500 or 503 `backendError`.
    pub backend_rate: f64,
    /// Added to every API request.
    pub latency_ms: u64,
    /// One-shot faults served before any drawn at random, in order.
    pub script: VecDeque<ScriptedFault>,
    /// `messages.get` of these message ids fails with the status, this many more times.
    pub failing_messages: HashMap<String, (u16, u32)>,
}

impl Faults {
    /// Spreads `rate` over the four kinds of refusal Google sends under load.
    pub fn spread(rate: f64) -> Self {
        Faults {
            user_rate_limit_rate: rate / 4.0,
            rate_limit_rate: rate / 4.0,
            too_many_rate: rate / 4.0,
            backend_rate: rate / 4.0,
            ..Faults::default()
        }
    }
}

/// A fault for the next request whose method (`gmail.users.getProfile`,
/// `directory.users.list`) contains `path_contains`, ignoring case (any request if empty).
#[derive(Clone, Debug)]
pub struct ScriptedFault {
    pub status: u16,
    pub path_contains: String,
    pub times: u32,
}

/// What the simulator served.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// API requests (the token endpoint's are `token_requests`).
    pub requests: u64,
    pub token_requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Requests by method (`gmail.users.messages.get`, with `format` appended for gets).
    pub by_method: BTreeMap<String, u64>,
    /// Quota units charged, by user.
    pub units: BTreeMap<String, u64>,
}

impl Stats {
    pub fn method(&self, m: &str) -> u64 {
        self.by_method.get(m).copied().unwrap_or(0)
    }

    pub fn status(&self, s: u16) -> u64 {
        self.by_status.get(&s).copied().unwrap_or(0)
    }
}

/// The organisation's data.
pub struct Sim {
    pub users: Vec<User>,
    /// Keyed by lowercase address.
    pub mailboxes: HashMap<String, Mailbox>,
    pub rng: StdRng,
}

/// The simulator's state, shared by every request.
pub struct Shared {
    pub cfg: Config,
    pub sim: Mutex<Sim>,
    pub base: Mutex<String>,
    pub service_account: auth::ServiceAccount,
    pub tokens: Mutex<HashMap<String, auth::Access>>,
    pub refresh_tokens: Mutex<HashMap<String, (String, Vec<String>)>>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<Stats>,
    /// Units charged per user and for the project, with when, for the moving window.
    pub quota: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    pub fault_rng: Mutex<StdRng>,
    pub counter: AtomicU64,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 64-bit mix (splitmix64), for ids that look random but are reproducible.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Shared {
    pub fn sim(&self) -> MutexGuard<'_, Sim> {
        lock(&self.sim)
    }

    pub fn base(&self) -> String {
        lock(&self.base).clone()
    }

    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }
}

fn generate(cfg: &Config) -> Sim {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    const GIVEN: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia"];
    const FAMILY: &[&str] = &[
        "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson",
    ];
    let mut users = Vec::new();
    for i in 0..cfg.users {
        let (given, family) = (GIVEN[i % GIVEN.len()], FAMILY[(i / 2) % FAMILY.len()]);
        let email = if i == 0 {
            format!("admin@{}", cfg.domain)
        } else {
            format!(
                "{}.{}{i}@{}",
                given.to_lowercase(),
                family.to_lowercase(),
                cfg.domain
            )
        };
        users.push(User {
            id: format!("1{:020}", splitmix(cfg.seed ^ i as u64)),
            email,
            given: given.into(),
            family: family.into(),
            admin: i == 0,
            suspended: i > 0 && i >= cfg.users.saturating_sub(cfg.suspended),
            workspace: true,
        });
    }
    for (i, email) in cfg.personal.iter().enumerate() {
        users.push(User {
            id: format!("2{:020}", splitmix(cfg.seed ^ 0x5050 ^ i as u64)),
            email: email.to_lowercase(),
            given: "Pat".into(),
            family: "Personal".into(),
            admin: false,
            suspended: false,
            workspace: false,
        });
    }
    let mailboxes = users
        .iter()
        .map(|u| (u.email.clone(), Mailbox::new(&mut rng)))
        .collect();
    Sim {
        users,
        mailboxes,
        rng,
    }
}

/// A simulator serving on a local port until dropped.
pub struct Running {
    /// `http://127.0.0.1:PORT`: every API and the token endpoint (`{base_url}/token`).
    pub base_url: String,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Generates the organisation (and the service account's key pair) and starts serving.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(cfg: Config) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.host, cfg.port)).await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let project = cfg.project.clone();
    let seed = cfg.seed;
    let service_account =
        tokio::task::spawn_blocking(move || auth::ServiceAccount::generate(&project, seed))
            .await
            .map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared {
        sim: Mutex::new(generate(&cfg)),
        faults: Mutex::new(cfg.faults.clone()),
        fault_rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0xfa17)),
        cfg,
        base: Mutex::new(base_url.clone()),
        service_account,
        tokens: Mutex::new(HashMap::new()),
        refresh_tokens: Mutex::new(HashMap::new()),
        stats: Mutex::new(Stats::default()),
        quota: Mutex::new(HashMap::new()),
        counter: AtomicU64::new(1),
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
        .route("/token", post(auth::token))
        .route("/admin/directory/v1/users", get(directory::users))
        .route("/gmail/v1/users/{user}/profile", get(gmail::profile))
        .route("/gmail/v1/users/{user}/messages", get(gmail::list))
        .route("/gmail/v1/users/{user}/messages/{id}", get(gmail::get))
        .route("/gmail/v1/users/{user}/history", get(gmail::history))
        .route("/gmail/v1/users/{user}/labels", get(gmail::labels))
        .fallback(|| async { errors::ApiError::not_found() })
        .with_state(shared)
}

/// The control side: what a test or a demo does to the organisation.
impl Running {
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// The service account's JSON key file, as the console downloads it (test-only key).
    pub fn service_account_key(&self) -> String {
        self.shared.service_account.key_file.clone()
    }

    pub fn admin_email(&self) -> String {
        self.shared.sim().users[0].email.clone()
    }

    /// The Workspace users' addresses, suspended ones included.
    pub fn workspace_users(&self) -> Vec<String> {
        let sim = self.shared.sim();
        sim.users
            .iter()
            .filter(|u| u.workspace)
            .map(|u| u.email.clone())
            .collect()
    }

    /// A refresh token for a personal account, as its owner's consent would give one.
    pub fn refresh_token_for(&self, email: &str, scopes: &[&str]) -> String {
        let n = self.shared.next();
        let token = format!("1//sim{:016x}", splitmix(n ^ 0x7ef7));
        lock(&self.shared.refresh_tokens).insert(
            token.clone(),
            (
                email.to_lowercase(),
                scopes.iter().map(|s| s.to_string()).collect(),
            ),
        );
        token
    }

    pub fn revoke_refresh_tokens(&self) {
        lock(&self.shared.refresh_tokens).clear();
    }

    /// Adds a Workspace user (a new hire) with an empty mailbox.
    pub fn add_user(&self, local: &str) -> String {
        let mut sim = self.shared.sim();
        let email = format!("{local}@{}", self.shared.cfg.domain).to_lowercase();
        let n = sim.users.len() as u64;
        let mailbox = Mailbox::new(&mut sim.rng);
        sim.users.push(User {
            id: format!("1{:020}", splitmix(self.shared.cfg.seed ^ 0xadd ^ n)),
            email: email.clone(),
            given: local.into(),
            family: String::new(),
            admin: false,
            suspended: false,
            workspace: true,
        });
        sim.mailboxes.insert(email.clone(), mailbox);
        email
    }

    fn with_mailbox<T>(
        &self,
        user: &str,
        f: impl FnOnce(&mut Mailbox, &mut StdRng, u64) -> T,
    ) -> T {
        let gap = self.shared.cfg.history_gap;
        let mut sim = self.shared.sim();
        let Sim { mailboxes, rng, .. } = &mut *sim;
        let mb = mailboxes
            .get_mut(&user.to_lowercase())
            .expect("the simulator has this user");
        f(mb, rng, gap)
    }

    /// Creates a user label and returns its id (`Label_<n>`, as Gmail names them).
    pub fn create_label(&self, user: &str, name: &str) -> String {
        let n = self.shared.next();
        self.with_mailbox(user, |mb, _, _| {
            let id = format!("Label_{n}");
            mb.labels.push(Label {
                id: id.clone(),
                name: name.to_string(),
                kind: "user",
            });
            id
        })
    }

    /// Delivers `raw` (RFC 822 bytes, kept exactly) with `labels`; returns the message id.
    pub fn deliver(
        &self,
        user: &str,
        raw: &[u8],
        labels: &[&str],
        internal_date_ms: i64,
    ) -> String {
        let n = self.shared.next();
        let id = format!(
            "{:016x}",
            splitmix(n ^ 0x6d61696c) >> 4 | 0x1000_0000_0000_0000
        );
        self.with_mailbox(user, |mb, rng, gap| {
            mb.add_message(
                rng,
                gap,
                Message {
                    id: id.clone(),
                    thread_id: id.clone(),
                    label_ids: labels.iter().map(|l| l.to_string()).collect(),
                    raw: raw.to_vec(),
                    internal_date: internal_date_ms,
                    history_id: 0,
                },
            );
        });
        id
    }

    /// Deletes a message for good (history `messagesDeleted`).
    pub fn delete(&self, user: &str, id: &str) -> bool {
        self.with_mailbox(user, |mb, rng, gap| mb.delete_message(rng, gap, id))
    }

    /// Adds and removes labels (trashing is adding `TRASH`).
    pub fn modify(&self, user: &str, id: &str, add: &[&str], remove: &[&str]) -> bool {
        self.with_mailbox(user, |mb, rng, gap| mb.modify(rng, gap, id, add, remove))
    }

    /// Ids of the messages of a mailbox, with their labels.
    pub fn messages(&self, user: &str) -> BTreeMap<String, Vec<String>> {
        self.with_mailbox(user, |mb, _, _| {
            mb.messages
                .values()
                .map(|m| (m.id.clone(), m.label_ids.clone()))
                .collect()
        })
    }

    pub fn history_id(&self, user: &str) -> u64 {
        self.with_mailbox(user, |mb, _, _| mb.history_id)
    }

    /// Forgets a mailbox's history: the next `history.list` from an older id answers 404.
    pub fn expire_history(&self, user: &str) {
        self.with_mailbox(user, |mb, _, _| mb.expire_history());
    }

    pub fn expire_tokens(&self) {
        auth::expire_all(&self.shared);
    }

    pub fn set_faults(&self, f: Faults) {
        *lock(&self.shared.faults) = f;
    }

    /// `messages.get` of `id` answers `status` the next `times` times.
    pub fn fail_message(&self, id: &str, status: u16, times: u32) {
        lock(&self.shared.faults)
            .failing_messages
            .insert(id.to_string(), (status, times));
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = Stats::default();
    }
}

/// Draws a number in `[0, 1)` from the simulator's fault generator.
pub(crate) fn draw(shared: &Shared) -> f64 {
    lock(&shared.fault_rng).gen::<f64>()
}
