//! The Google HTTP client: a bearer token per impersonated user and scope set (renewed on
//! a 401), each user's Gmail quota units spent at a pace under the per-user limit, and
//! Google's refusals handled as its "Resolve errors" guides say: the error's `reason`, not
//! the status alone, decides. 403 `userRateLimitExceeded`/`rateLimitExceeded`, 429 and 5xx
//! are retried with truncated exponential backoff and jitter (Google sends no
//! `Retry-After`); anything else is returned for the caller to judge.

use crate::auth::Tokens;
use engine::SourceErrorKind;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Why a request failed, before it becomes an [`engine::Error`].
#[derive(Debug, Clone)]
pub enum Fail {
    /// Google answered an error it is no use retrying (or retrying did not help).
    Status {
        status: u16,
        reason: String,
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
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Status {
                status,
                reason,
                message,
                what,
            } => write!(f, "Google answered {status} {reason} to {what}: {message}"),
            Fail::Auth(m) | Fail::Throttled(m) | Fail::Unavailable(m) | Fail::Protocol(m) => {
                f.write_str(m)
            }
        }
    }
}

impl From<Fail> for engine::Error {
    fn from(f: Fail) -> Self {
        let kind = match &f {
            Fail::Status { status: 404, .. } => SourceErrorKind::NotFound,
            Fail::Status {
                status: 401 | 403, ..
            }
            | Fail::Auth(_) => SourceErrorKind::Auth,
            Fail::Status { status, .. } if *status >= 500 => SourceErrorKind::Unavailable,
            Fail::Status { .. } | Fail::Protocol(_) => SourceErrorKind::Protocol,
            Fail::Throttled(_) => SourceErrorKind::Throttled,
            Fail::Unavailable(_) => SourceErrorKind::Unavailable,
        };
        engine::Error::source(kind, f.to_string())
    }
}

/// A transport error's cause without the URL (reqwest's `Display` carries the URL, whose
/// query can hold page tokens).
pub fn cause(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(src) = std::error::Error::source(e) {
        msg.push_str(&format!(" ({src})"));
    }
    msg
}

/// How often and how long a refused request is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The first backoff, in milliseconds; doubled each time, with jitter.
    pub base_ms: u64,
    /// No single wait is longer (Google's guide truncates at 32 or 64 seconds).
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base_ms: 1000,
            max_ms: 32_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (from 0): a random share, between half and all, of
    /// `base * 2^n` truncated at `max`, so that concurrent requests refused together do
    /// not come back together.
    pub fn wait(&self, n: u32) -> Duration {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << n.min(20))
            .min(self.max_ms)
            .max(1);
        let ms = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
        Duration::from_millis(ms)
    }
}

/// Gmail's per-user quota as this client keeps under it: `units` per `window_ms`
/// (15,000 a minute, as documented).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub units: u64,
    pub window_ms: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            units: 15_000,
            window_ms: 60_000,
        }
    }
}

/// The quota units a Gmail method costs (Gmail's usage-limits table).
pub fn units(method: Method) -> u64 {
    match method {
        Method::Profile | Method::Labels => 1,
        Method::History => 2,
        Method::List | Method::Get => 5,
        Method::Directory => 0,
    }
}

/// The API methods this client calls, for their quota cost and in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Profile,
    Labels,
    History,
    List,
    Get,
    Directory,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Profile => "users.getProfile",
            Method::Labels => "users.labels.list",
            Method::History => "users.history.list",
            Method::List => "users.messages.list",
            Method::Get => "users.messages.get",
            Method::Directory => "directory users.list",
        }
    }
}

/// One user's pace: the time at which the units spent so far are paid back at the allowed
/// rate (a virtual clock; the generic cell rate algorithm). Shared by every run of the
/// process that acts for the same user through the same token endpoint.
struct Pace {
    paid_until: Instant,
    /// No request starts before this (set when Google refuses for its rate).
    held_until: Instant,
}

fn paces() -> &'static Mutex<HashMap<String, Arc<Mutex<Pace>>>> {
    static PACES: OnceLock<Mutex<HashMap<String, Arc<Mutex<Pace>>>>> = OnceLock::new();
    PACES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who a request acts for: the impersonated user (or the personal account) and the scopes.
#[derive(Clone, Debug)]
pub struct Who {
    pub user: String,
    pub scopes: &'static str,
}

/// Google's APIs for one task.
pub struct Google {
    http: reqwest::Client,
    pub tokens: Tokens,
    token_url: String,
    pub policy: RetryPolicy,
    pub quota: Quota,
}

impl Google {
    pub fn new(http: reqwest::Client, tokens: Tokens, token_url: &str) -> Self {
        Google {
            http,
            tokens,
            token_url: token_url.to_string(),
            policy: RetryPolicy::default(),
            quota: Quota::default(),
        }
    }

    /// Waits until `units` more of `who`'s quota can be spent without going over the
    /// per-user rate, and spends them. Units are paid back at 90 % of the documented rate,
    /// with a burst of a twentieth of the window let through at once: over any window of
    /// the server's (which began before ours), at most 95 % of the quota is spent, so the
    /// per-user limit is not what refuses us.
    async fn pace(&self, who: &Who, units: u64) {
        let pace = self.pace_of(who);
        let held = lock(&pace)
            .held_until
            .saturating_duration_since(Instant::now());
        if !held.is_zero() {
            tokio::time::sleep(held).await;
        }
        if units == 0 || self.quota.units == 0 {
            return;
        }
        let per_unit =
            Duration::from_nanos(self.quota.window_ms * 1_000_000 * 10 / (self.quota.units * 9));
        let burst = Duration::from_millis(self.quota.window_ms / 20);
        let wait = {
            let mut p = lock(&pace);
            let now = Instant::now();
            let start = p.paid_until.max(now);
            p.paid_until = start + per_unit * units as u32;
            p.paid_until.saturating_duration_since(now + burst)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn pace_of(&self, who: &Who) -> Arc<Mutex<Pace>> {
        lock(paces())
            .entry(format!("{} {}", self.token_url, who.user))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Pace {
                    paid_until: Instant::now(),
                    held_until: Instant::now(),
                }))
            })
            .clone()
    }

    /// Holds back every request of `who` for `wait`: when Google refuses one for its
    /// rate, the others sent beside it would be refused too, and retrying each on its own
    /// lets an unlucky one lose every round.
    fn hold_back(&self, who: &Who, wait: Duration) {
        let pace = self.pace_of(who);
        let mut p = lock(&pace);
        p.held_until = p.held_until.max(Instant::now() + wait);
    }

    /// GETs `url` as `who`, retrying what Google says may be retried, and returns the
    /// JSON body.
    ///
    /// # Errors
    /// `Fail::Status` for a refusal retrying cannot mend (404 among them);
    /// `Fail::Throttled`/`Fail::Unavailable` when retries ran out; `Fail::Auth` when a
    /// renewed token is refused too.
    pub async fn get_json(&self, who: &Who, method: Method, url: &str) -> Result<Value, Fail> {
        let what = format!("{} {}", method.name(), path_of(url));
        let mut renewed = false;
        let mut last = String::new();
        let mut throttled = false;
        let mut n = 0;
        while n < self.policy.attempts {
            if n > 0 {
                tokio::time::sleep(self.policy.wait(n - 1)).await;
            }
            n += 1;
            self.pace(who, units(method)).await;
            let token = self.tokens.get(&who.user, who.scopes).await?;
            let resp = match self.http.get(url).bearer_auth(token.as_str()).send().await {
                Ok(r) => r,
                Err(e) => {
                    throttled = false;
                    last = format!("{what}: {}", cause(&e));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            if status == 200 {
                return match resp.json::<Value>().await {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        last = format!("{what}: the body did not read as JSON ({})", cause(&e));
                        continue;
                    }
                };
            }
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let reason = body
                .pointer("/error/errors/0/reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match (status, reason.as_str()) {
                (401, _) if !renewed => {
                    // The token expired or was revoked: a new one, at once, and not counted.
                    self.tokens.forget(&who.user, who.scopes, &token).await;
                    renewed = true;
                    n -= 1;
                }
                (401, _) => {
                    return Err(Fail::Auth(format!(
                        "Google refused a renewed token for {what}: {message}"
                    )))
                }
                (403, "userRateLimitExceeded" | "rateLimitExceeded") | (429, _) => {
                    throttled = true;
                    self.hold_back(who, self.policy.wait(n - 1) / 2);
                    last = format!("Google kept answering {status} {reason} to {what}");
                    tracing::debug!(status, reason, "throttled by Google; backing off");
                }
                (500 | 502 | 503 | 504, _) => {
                    throttled = false;
                    last = format!("Google kept answering {status} {reason} to {what}");
                }
                _ => {
                    return Err(Fail::Status {
                        status,
                        reason,
                        message,
                        what,
                    })
                }
            }
        }
        Err(if throttled {
            Fail::Throttled(last)
        } else {
            Fail::Unavailable(last)
        })
    }
}

/// The path of a URL without its host and query: what messages show.
fn path_of(url: &str) -> &str {
    let no_query = url.split('?').next().unwrap_or(url);
    no_query
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(no_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_and_are_truncated() {
        let p = RetryPolicy {
            attempts: 5,
            base_ms: 100,
            max_ms: 1000,
        };
        for _ in 0..50 {
            let w0 = p.wait(0).as_millis();
            assert!((50..=100).contains(&w0), "{w0}");
            let w3 = p.wait(3).as_millis();
            assert!((400..=800).contains(&w3), "{w3}");
            let w9 = p.wait(9).as_millis();
            assert!((500..=1000).contains(&w9), "{w9}");
        }
    }

    #[test]
    fn messages_show_the_path_not_the_query() {
        assert_eq!(
            path_of("https://gmail.googleapis.com/gmail/v1/users/me/history?startHistoryId=5&pageToken=x"),
            "/gmail/v1/users/me/history"
        );
    }
}
