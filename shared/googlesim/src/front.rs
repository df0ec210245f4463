//! What every API request goes through before its handler: latency, the bearer token,
//! scripted and random faults, and the quota units its method costs, charged to the user
//! it acts for and to the project over a moving window, as Gmail's quota page describes;
//! and, after it, the status it was answered with, counted.

use crate::auth::{caller, Access};
use crate::errors::ApiError;
use crate::{draw, lock, Shared};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The quota units a Gmail method costs (Gmail's "Usage limits" table).
pub fn units(method: &str) -> u64 {
    match method {
        "gmail.users.getProfile" | "gmail.users.labels.list" | "gmail.users.labels.get" => 1,
        "gmail.users.history.list" => 2,
        "gmail.users.messages.list" | "gmail.users.messages.get" => 5,
        _ => 0,
    }
}

const PROJECT: &str = "\0project";

fn charge(
    q: &mut std::collections::HashMap<String, VecDeque<(Instant, u64)>>,
    key: &str,
    window: Duration,
) -> u64 {
    let now = Instant::now();
    let d = q.entry(key.to_string()).or_default();
    while d
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= window)
    {
        d.pop_front();
    }
    d.iter().map(|(_, u)| u).sum()
}

/// Admits a request of `method` made with the request's token, or answers why not.
pub async fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Access, ApiError> {
    let latency = lock(&shared.faults).latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    {
        let mut st = lock(&shared.stats);
        st.requests += 1;
        *st.by_method.entry(method.to_string()).or_default() += 1;
    }
    let access = caller(shared, headers)?;
    {
        let mut f = lock(&shared.faults);
        let path = path.to_ascii_lowercase();
        if let Some(pos) = f.script.iter().position(|s| {
            s.path_contains.is_empty() || path.contains(&s.path_contains.to_ascii_lowercase())
        }) {
            let s = &mut f.script[pos];
            let status = s.status;
            s.times = s.times.saturating_sub(1);
            if s.times == 0 {
                f.script.remove(pos);
            }
            return Err(refusal(status));
        }
    }
    let f = lock(&shared.faults).clone();
    let x = draw(shared);
    let mut edge = 0.0;
    for (rate, err) in [
        (f.user_rate_limit_rate, ApiError::user_rate_limit()),
        (f.rate_limit_rate, ApiError::rate_limit(403)),
        (f.too_many_rate, ApiError::rate_limit(429)),
        (
            f.backend_rate,
            // Half 500, half 503, from a digit of the draw that does not bias the choice.
            ApiError::backend(if ((x * 1e6) as u64).is_multiple_of(2) {
                500
            } else {
                503
            }),
        ),
    ] {
        edge += rate;
        if x < edge {
            return Err(err);
        }
    }
    let cost = units(method);
    if cost > 0 {
        let cfg = &shared.cfg;
        let mut q = lock(&shared.quota);
        if charge(&mut q, PROJECT, cfg.quota_window) + cost > cfg.project_units_per_window {
            return Err(ApiError::rate_limit(403));
        }
        if charge(&mut q, &access.sub, cfg.quota_window) + cost > cfg.user_units_per_window {
            return Err(ApiError::user_rate_limit());
        }
        let now = Instant::now();
        for key in [PROJECT, access.sub.as_str()] {
            q.entry(key.to_string()).or_default().push_back((now, cost));
        }
        *lock(&shared.stats)
            .units
            .entry(access.sub.clone())
            .or_default() += cost;
    }
    Ok(access)
}

/// The error a scripted fault of `status` answers with.
pub fn refusal(status: u16) -> ApiError {
    match status {
        401 => ApiError::auth(),
        403 => ApiError::user_rate_limit(),
        404 => ApiError::not_found(),
        429 => ApiError::rate_limit(429),
        s if s >= 500 => ApiError::backend(s),
        s => ApiError::new(s, "global", "badRequest", "Bad Request"),
    }
}

/// Counts the answer's status and renders it.
pub fn finish(shared: &Shared, answer: Result<Value, ApiError>) -> Response {
    let status = match &answer {
        Ok(_) => 200,
        Err(e) => e.status,
    };
    *lock(&shared.stats).by_status.entry(status).or_default() += 1;
    match answer {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The query string's pairs, repeated names kept (`historyTypes=a&historyTypes=b`).
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `maxResults` within `1..=max`, `default` when absent; 400 when not a number.
pub fn max_results(q: &[(String, String)], default: usize, max: usize) -> Result<usize, ApiError> {
    match param(q, "maxResults") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.clamp(1, max))
            .map_err(|_| ApiError::bad_request("Invalid value for maxResults")),
    }
}
