//! JSON batching: `POST /v1.0/$batch` with up to 20 requests, each answered with its own
//! status, headers and body; `dependsOn` is honoured (a failed dependency gives 424); up to
//! four inner requests run at once, each counted against the limits on its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};

use crate::error::{GraphError, Result};
use crate::odata::Query;
use crate::server::{ok, serve, split_path, Req, Shared};
use crate::util::b64;

pub const MAX_REQUESTS: usize = 20;

/// Inner requests of one batch served at the same time, as Graph dispatches them.
pub const CONCURRENT: usize = 4;

fn invalid(msg: &str) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", msg)
}

/// Serves a batch (a boxed `Send` future: the inner requests go through `serve` again).
pub fn run(
    shared: Arc<Shared>,
    outer: &Req,
) -> Pin<Box<dyn Future<Output = Result<Response>> + Send + '_>> {
    Box::pin(run_batch(shared, outer))
}

async fn run_batch(shared: Arc<Shared>, outer: &Req) -> Result<Response> {
    let body: Value = serde_json::from_slice(&outer.body)
        .map_err(|_| invalid("Invalid batch payload format."))?;
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Invalid batch payload format."))?;
    if requests.is_empty() {
        return Err(invalid("Invalid batch payload format."));
    }
    if requests.len() > MAX_REQUESTS {
        return Err(invalid(
            "The number of requests in a batch exceeds the limit of 20.",
        ));
    }
    let mut ids: Vec<String> = Vec::new();
    for r in requests {
        let id = match r.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(invalid("Each request in a batch needs an id.")),
        };
        if ids.contains(&id) {
            return Err(invalid(&format!(
                "Request id '{id}' is used more than once."
            )));
        }
        if r.get("method").and_then(Value::as_str).is_none()
            || r.get("url").and_then(Value::as_str).is_none()
        {
            return Err(invalid("Each request in a batch needs a method and a url."));
        }
        ids.push(id);
    }
    // Graph dispatches up to four inner requests at a time, each evaluated against the
    // limits on its own (a fifth concurrent request to one mailbox is throttled); a request
    // with `dependsOn` waits for what it depends on and fails with 424 if that failed.
    let gate = Arc::new(Semaphore::new(CONCURRENT));
    let mut done: Vec<(String, watch::Receiver<Option<u16>>)> = Vec::new();
    let mut tasks = Vec::new();
    for (r, id) in requests.iter().zip(ids) {
        let depends: Vec<String> = match r.get("dependsOn") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut waits = Vec::new();
        for d in &depends {
            match done.iter().find(|(i, _)| i == d) {
                Some((_, rx)) => waits.push(rx.clone()),
                None => {
                    return Err(invalid(&format!(
                        "Request '{id}' depends on '{d}', which is not an earlier request of the batch."
                    )))
                }
            }
        }
        let inner = inner_request(r)?;
        let (tx, rx) = watch::channel(None);
        done.push((id.clone(), rx));
        let (shared, gate) = (shared.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = false;
            for mut w in waits {
                let status = w.wait_for(Option::is_some).await.map(|s| s.unwrap_or(500));
                failed |= status.unwrap_or(500) >= 400;
            }
            let (status, entry) = if failed {
                (424, json!({ "id": id, "status": 424, "headers": {},
                    "body": { "error": { "code": "FailedDependency", "message": "A request it depends on failed." } } }))
            } else {
                let _slot = gate.acquire_owned().await.ok();
                answer(shared, inner, id).await
            };
            let _ = tx.send(Some(status));
            entry
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.unwrap_or_else(|_| {
            json!({ "status": 500, "headers": {}, "body": { "error": { "code": "generalException", "message": "An internal server error occurred." } } })
        }));
    }
    Ok(ok(json!({ "responses": responses })))
}

/// The inner request of one batch entry.
fn inner_request(r: &Value) -> Result<Req> {
    let method = Method::from_bytes(
        r["method"]
            .as_str()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_bytes(),
    )
    .unwrap_or(Method::GET);
    let url = r["url"].as_str().unwrap_or("");
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(invalid(
            "Batch request urls must be relative to the version, such as /users.",
        ));
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut headers = HeaderMap::new();
    if let Some(h) = r.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            if let (Ok(n), Some(Ok(v))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(n, v);
            }
        }
    }
    let body = match r.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                return Err(invalid(
                    "A request with a body needs a Content-Type header.",
                ));
            }
            serde_json::to_vec(v).unwrap_or_default()
        }
    };
    Ok(Req {
        method,
        segs: split_path(path),
        query: Query::parse(query),
        headers,
        body: body.into(),
    })
}

/// Serves one inner request and renders its entry of the batch response.
async fn answer(shared: Arc<Shared>, inner: Req, id: String) -> (u16, Value) {
    let resp = Box::pin(serve(shared, inner, true)).await;
    let status = resp.status().as_u16();
    let mut hdrs = Map::new();
    for (k, v) in resp.headers() {
        if let Ok(s) = v.to_str() {
            hdrs.insert(k.as_str().to_string(), json!(s));
        }
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    } else {
        // Graph returns non-JSON bodies of batched requests (a message's MIME from
        // `$value`) base64-encoded.
        json!(b64(&bytes))
    };
    let mut entry = json!({ "id": id, "status": status, "headers": hdrs });
    if !body.is_null() {
        entry["body"] = body;
    }
    (status, entry)
}
