//! The Admin SDK Directory API's `users.list`: the domain's users (suspended ones with
//! `suspended: true`), `maxResults` up to 500 (100 by default), an opaque `nextPageToken`,
//! and only for a token that acts for an administrator with a directory scope.

use crate::errors::ApiError;
use crate::front::{finish, gate, max_results, pairs, param};
use crate::Shared;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::Arc;

const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.user",
];

pub async fn users(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = pairs(query.as_deref());
    let answer = async {
        let access = gate(
            &shared,
            &headers,
            "directory.users.list",
            "/admin/directory/v1/users",
        )
        .await?;
        if !access.scopes.iter().any(|s| SCOPES.contains(&s.as_str())) {
            return Err(ApiError::insufficient_scope());
        }
        let sim = shared.sim();
        let is_admin = sim
            .users
            .iter()
            .any(|u| u.admin && u.email.eq_ignore_ascii_case(&access.sub));
        if !is_admin {
            return Err(ApiError::new(
                403,
                "global",
                "forbidden",
                "Not Authorized to access this resource/api",
            ));
        }
        let domain = param(&q, "domain").map(str::to_lowercase);
        if param(&q, "customer").is_none() && domain.is_none() {
            return Err(ApiError::new(400, "global", "badRequest", "Bad Request"));
        }
        let n = max_results(&q, 100, 500)?;
        let start: usize = match param(&q, "pageToken") {
            None | Some("") => 0,
            Some(t) => String::from_utf8(URL_SAFE_NO_PAD.decode(t).unwrap_or_default())
                .ok()
                .and_then(|s| s.strip_prefix("u:").and_then(|n| n.parse().ok()))
                .ok_or_else(|| ApiError::new(400, "global", "invalid", "Invalid Input"))?,
        };
        let all: Vec<_> = sim
            .users
            .iter()
            .filter(|u| u.workspace)
            .filter(|u| {
                domain
                    .as_deref()
                    .is_none_or(|d| u.email.ends_with(&format!("@{d}")))
            })
            .collect();
        let users: Vec<Value> = all
            .iter()
            .skip(start)
            .take(n)
            .map(|u| {
                json!({
                    "kind": "admin#directory#user",
                    "id": u.id,
                    "etag": format!("\"{}\"", crate::splitmix(u.id.len() as u64 ^ start as u64)),
                    "primaryEmail": u.email,
                    "name": {
                        "givenName": u.given,
                        "familyName": u.family,
                        "fullName": format!("{} {}", u.given, u.family).trim().to_string(),
                    },
                    "isAdmin": u.admin,
                    "isDelegatedAdmin": false,
                    "suspended": u.suspended,
                    "isMailboxSetup": true,
                    "customerId": "C03sim0ff",
                    "orgUnitPath": "/",
                })
            })
            .collect();
        let mut out = json!({"kind": "admin#directory#users", "etag": "\"sim\"", "users": users});
        if start + n < all.len() {
            out["nextPageToken"] = json!(URL_SAFE_NO_PAD.encode(format!("u:{}", start + n)));
        }
        Ok(out)
    }
    .await;
    finish(&shared, answer)
}
