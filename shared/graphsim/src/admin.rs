//! The simulator's own control API under `/_sim`: counters for tests to assert on, fault
//! settings, token and delta-token expiry, and the day-by-day change generator.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::server::{lock, ok, Faults, ScriptedFault, Shared, Stats};

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/info", get(info))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/faults", get(get_faults).post(set_faults).put(set_faults))
        .route("/faults/script", post(script))
        .route("/expire-tokens", post(expire_tokens))
        .route("/expire-delta", post(expire_delta))
        .route("/advance-day", post(advance_day))
        .route("/malformed-message", post(malformed_message))
        .route("/search-folder", post(crate::hostile::search_folder))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": msg }))).into_response()
}

async fn info(State(shared): State<Arc<Shared>>) -> Response {
    let sim = shared.sim();
    let base = shared.base();
    ok(json!({
        "baseUrl": base,
        "graphUrl": format!("{base}/v1.0"),
        "tokenUrl": format!("{base}/{}/oauth2/v2.0/token", shared.cfg.tenant_id),
        "tenantId": shared.cfg.tenant_id,
        "clientId": shared.cfg.client_id,
        "domains": sim.domains,
        "day": sim.day,
        "users": sim.users.iter().map(|u| json!({ "id": u.id, "userPrincipalName": u.upn, "driveId": u.drive_id })).collect::<Vec<_>>(),
        "sites": sim.sites.iter().map(|s| json!({ "id": s.id, "path": s.path, "drives": s.drives })).collect::<Vec<_>>(),
    }))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let s = lock(&shared.stats).clone();
    ok(serde_json::to_value(s).unwrap_or(Value::Null))
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> Response {
    *lock(&shared.stats) = Stats::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = lock(&shared.faults).clone();
    ok(serde_json::to_value(f).unwrap_or(Value::Null))
}

/// Merges the given settings into the current ones; fields not named keep their value.
async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return bad("expected a JSON object of fault settings");
    };
    let mut faults = lock(&shared.faults);
    let mut current = serde_json::to_value(&*faults).unwrap_or(json!({}));
    for (k, v) in patch {
        if current.get(&k).is_none() {
            return bad(&format!("unknown fault setting '{k}'"));
        }
        current[k] = v;
    }
    match serde_json::from_value::<Faults>(current) {
        Ok(f) => {
            for rate in [
                f.throttle_rate,
                f.unavailable_rate,
                f.gateway_timeout_rate,
                f.server_error_rate,
                f.bad_gateway_rate,
                f.vanish_rate,
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return bad("rates must be between 0 and 1");
                }
            }
            *faults = f;
            ok(serde_json::to_value(&*faults).unwrap_or(Value::Null))
        }
        Err(e) => bad(&format!("invalid fault settings: {e}")),
    }
}

/// Queues one-shot faults: `{"status": 429, "path_contains": "messages", "times": 2}` or a list.
async fn script(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed: Result<Vec<ScriptedFault>, _> = serde_json::from_slice::<Vec<ScriptedFault>>(&body)
        .or_else(|_| serde_json::from_slice::<ScriptedFault>(&body).map(|f| vec![f]));
    match parsed {
        Ok(list) => {
            if list.iter().any(|f| !(400..=599).contains(&f.status)) {
                return bad("status must be an HTTP error status (400-599)");
            }
            let mut faults = lock(&shared.faults);
            faults.script.extend(list);
            ok(json!({ "queued": faults.script.len() }))
        }
        Err(e) => bad(&format!("invalid scripted fault: {e}")),
    }
}

async fn expire_tokens(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let mut tokens = lock(&shared.tokens);
    for expiry in tokens.values_mut() {
        *expiry = now;
    }
    ok(json!({ "expired": tokens.len() }))
}

/// Every delta token, or with `{"user": "<id or UPN>"}` those of one mailbox and its
/// OneDrive, or with `{"drive": "<id>"}` those of one drive.
async fn expire_delta(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let scope: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad("expected an empty body or a JSON object"),
        }
    };
    let mut sim = shared.sim();
    let mut keys = Vec::new();
    if let Some(u) = scope.get("user").and_then(Value::as_str) {
        let Some(i) = sim.user(u) else {
            return bad("no such user");
        };
        keys.push(sim.users[i].id.clone());
        keys.push(sim.users[i].drive_id.clone());
    } else if let Some(d) = scope.get("drive").and_then(Value::as_str) {
        if !sim.drives.contains_key(d) {
            return bad("no such drive");
        }
        keys.push(d.to_string());
    } else {
        sim.delta_epoch += 1;
        return ok(json!({ "epoch": sim.delta_epoch }));
    }
    for k in &keys {
        *sim.scoped_epochs.entry(k.clone()).or_default() += 1;
    }
    ok(json!({ "expired": keys }))
}

async fn advance_day(State(shared): State<Arc<Shared>>) -> Response {
    let report = {
        let mut sim = shared.sim();
        crate::day::advance(&shared.cfg, &mut sim)
    };
    let _ = shared.counter.load(Ordering::SeqCst);
    ok(report)
}

/// Delivers a message whose MIME (`$value`) is broken as some real mail is:
/// `{"user": "<id or UPN>", "kind": "truncated-multipart" | "bad-base64" | "8bit-headers"}`.
/// Its Graph properties are sound; `$value` serves the broken bytes exactly.
async fn malformed_message(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("expected a JSON object with user and kind");
    };
    let kind = req.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut sim = shared.sim();
    let Some(u) = req
        .get("user")
        .and_then(Value::as_str)
        .and_then(|u| sim.user(u))
    else {
        return bad("no such user");
    };
    match crate::day::deliver_malformed(&shared.cfg, &mut sim, u, kind) {
        Some(v) => ok(v),
        None => bad("kind must be truncated-multipart, bad-base64 or 8bit-headers"),
    }
}
