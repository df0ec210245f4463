//! The Microsoft identity platform's v2.0 token endpoint for the client-credentials grant:
//! `POST /{tenant}/oauth2/v2.0/token`, its success body and its documented error body
//! (`error`, `error_description` starting with the AADSTS code, `error_codes`, …).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::{lock, Shared};
use crate::util::{encode_token, splitmix};

fn sts_error(shared: &Shared, status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let n = shared.token_counter.fetch_add(1, Ordering::SeqCst);
    let trace = format!("{:016x}-{:04x}", splitmix(n ^ 0x7472), n & 0xffff);
    let corr = format!("{:016x}-{:04x}", splitmix(n ^ 0x636f), n & 0xffff);
    let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

pub async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    lock(&shared.stats).token_requests += 1;
    let cfg = &shared.cfg;
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let tenant_ok = tenant == cfg.tenant_id
        || shared
            .sim()
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&tenant));
    if !tenant_ok {
        return sts_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    match get("grant_type") {
        Some("client_credentials") => {}
        None => {
            return sts_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        }
        Some(_) => {
            return sts_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        }
    }
    let Some(client_id) = get("client_id") else {
        return sts_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    if client_id != cfg.client_id {
        return sts_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    match get("client_secret") {
        Some(s) if s == cfg.client_secret => {}
        Some(_) => {
            return sts_error(
                &shared,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            )
        }
        None => {
            return sts_error(
                &shared,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        }
    }
    let scope = get("scope").unwrap_or("");
    if scope.split(' ').next().is_none_or(|s| s.is_empty()) {
        return sts_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if !scope.split(' ').all(|s| s.ends_with("/.default")) || !scope.contains("graph.microsoft.com")
    {
        return sts_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    }
    let access = issue(&shared);
    let lifetime = cfg.token_lifetime;
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access,
    });
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

/// A new access token of the configured app, valid for the configured lifetime: what the
/// token endpoint hands out, also given in-process to tests and demos that call Graph as
/// the organisation's administrator (see [`crate::Running::admin_token`]).
pub fn issue(shared: &Shared) -> String {
    let cfg = &shared.cfg;
    let n = shared.token_counter.fetch_add(1, Ordering::SeqCst);
    // Opaque to the client, like a real access token is meant to be treated.
    let access = format!(
        "eyJ0eXAiOiJKV1Qi.{}.{:016x}",
        encode_token(&(n, splitmix(cfg.seed ^ n))),
        splitmix(n)
    );
    lock(&shared.tokens).insert(access.clone(), Instant::now() + cfg.token_lifetime);
    access
}
