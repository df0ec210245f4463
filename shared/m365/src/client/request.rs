//! Sending a request as Graph documents it should be retried: `Retry-After` on 429, 503
//! and 504, a capped backoff on connection failures, one token renewal on a 401; each
//! attempt paced and holding its mailbox slots. What is given up on says what to do.

use super::fail::error_of;
use super::{resource_units, what, Answer, Body, FResult, Fail, Graph, MAILBOX_CONCURRENCY};
use bytes::Bytes;
use reqwest::{header, Method, Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

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

pub(super) fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

impl Graph {
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
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
    pub(super) async fn send_weighted(
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
                (403, Fail::Status { code, .. }) if code.eq_ignore_ascii_case("malwareDetected") => {
                    Fail::Denied {
                        code: code.clone(),
                        message: format!(
                            "Microsoft 365 flagged this file as malware and will not serve it ({what})"
                        ),
                    }
                }
                (403, Fail::Status { code, message, .. }) if code != "ErrorQuotaExceeded" => {
                    Fail::Denied {
                        code: code.clone(),
                        message: format!(
                            "Microsoft Graph denied {what} ({code}: {message}); grant the app the application permissions it needs"
                        ),
                    }
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
