//! `$batch`: up to twenty GETs of one mailbox in one round trip, each inner request
//! answered (or throttled and asked again) on its own, so that many small reads cost few
//! requests against the mailbox's limits.

use super::{what, Body, FResult, Fail, Graph};
use bytes::Bytes;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

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

impl Graph {
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
}
