//! The app's token: asked for with the client-credentials grant, shared by every request
//! of the client, renewed ahead of its expiry and once more when Graph refuses it. The
//! client secret goes into the token request's body and nowhere else.

use super::request::retry_after;
use super::{FResult, Fail, Graph};
use serde_json::Value;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long a renewed token is trusted less than Azure AD says, so that a request never
/// starts with a token about to expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

pub(super) struct Token {
    value: Zeroizing<String>,
    renew_at: Instant,
    generation: u64,
}

impl Graph {
    /// The current token, renewed when it is about to expire.
    pub(super) async fn token(&self) -> FResult<(Zeroizing<String>, u64)> {
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
    pub(super) async fn invalidate(&self, generation: u64) {
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
}

/// The `.default` scope of the Graph endpoint in use: national clouds have their own
/// resource; anything else (a test server) is asked for the global one.
pub(super) fn scope_for(graph: &str) -> String {
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
}
