//! Gmail v1 as its discovery document describes it: `users.getProfile`,
//! `users.messages.list` (newest first, opaque `nextPageToken`, spam and trash only with
//! `includeSpamTrash`), `users.messages.get` (`format=raw`: the message's bytes, base64url;
//! `minimal`: ids, labels and dates), `users.history.list` (records after
//! `startHistoryId`, 404 once that history is gone) and `users.labels.list`.

use crate::auth::Access;
use crate::errors::ApiError;
use crate::front::{finish, gate, max_results, pairs, param};
use crate::model::{Change, Mailbox, Message};
use crate::{lock, Shared};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::Arc;

/// Scopes that may read mail.
const READ_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://mail.google.com/",
];

/// The mailbox `user` (an address or `me`) names, if the token may read it.
fn mailbox_of(access: &Access, user: &str) -> Result<String, ApiError> {
    if !access
        .scopes
        .iter()
        .any(|s| READ_SCOPES.contains(&s.as_str()))
    {
        return Err(ApiError::insufficient_scope());
    }
    if user == "me" || user.eq_ignore_ascii_case(&access.sub) {
        Ok(access.sub.to_lowercase())
    } else {
        Err(ApiError::new(
            403,
            "global",
            "forbidden",
            &format!("Delegation denied for {}", access.sub),
        ))
    }
}

async fn serve(
    shared: &Shared,
    headers: &HeaderMap,
    method: &str,
    user: &str,
    f: impl FnOnce(&str, &mut Mailbox) -> Result<Value, ApiError>,
) -> Response {
    let answer = async {
        let access = gate(shared, headers, method, method).await?;
        let key = mailbox_of(&access, user)?;
        let mut sim = shared.sim();
        let mb = sim.mailboxes.get_mut(&key).ok_or_else(|| {
            ApiError::new(
                400,
                "global",
                "failedPrecondition",
                "Mail service not enabled",
            )
        })?;
        f(&key, mb)
    }
    .await;
    finish(shared, answer)
}

pub async fn profile(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(
        &shared,
        &headers,
        "gmail.users.getProfile",
        &user,
        |email, mb| {
            Ok(json!({
                "emailAddress": email,
                "messagesTotal": mb.messages.len(),
                "threadsTotal": mb.messages.len(),
                "historyId": mb.history_id.to_string(),
            }))
        },
    )
    .await
}

fn in_spam_or_trash(m: &Message) -> bool {
    m.label_ids.iter().any(|l| l == "SPAM" || l == "TRASH")
}

/// The sort key of the listing: newest first, ties by id.
fn order_key(m: &Message) -> (std::cmp::Reverse<i64>, std::cmp::Reverse<String>) {
    (
        std::cmp::Reverse(m.internal_date),
        std::cmp::Reverse(m.id.clone()),
    )
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = pairs(query.as_deref());
    serve(
        &shared,
        &headers,
        "gmail.users.messages.list",
        &user,
        |_, mb| {
            let n = max_results(&q, 100, 500)?;
            let spam_trash = param(&q, "includeSpamTrash") == Some("true");
            let labels: Vec<&str> = q
                .iter()
                .filter(|(k, _)| k == "labelIds")
                .map(|(_, v)| v.as_str())
                .collect();
            let after = match param(&q, "pageToken") {
                None | Some("") => None,
                Some(t) => Some(
                    decode_list_token(t)
                        .ok_or_else(|| ApiError::bad_request("Invalid pageToken"))?,
                ),
            };
            let mut all: Vec<&Message> = mb
                .messages
                .values()
                .filter(|m| spam_trash || !in_spam_or_trash(m))
                .filter(|m| labels.iter().all(|l| m.label_ids.iter().any(|x| x == l)))
                .collect();
            let estimate = all.len();
            all.sort_by_key(|m| order_key(m));
            let start = match &after {
                None => 0,
                Some((date, id)) => all.partition_point(|m| {
                    order_key(m) <= (std::cmp::Reverse(*date), std::cmp::Reverse(id.clone()))
                }),
            };
            let page: Vec<&Message> = all.iter().skip(start).take(n).copied().collect();
            let mut out = json!({"resultSizeEstimate": estimate});
            if !page.is_empty() {
                out["messages"] = page
                    .iter()
                    .map(|m| json!({"id": m.id, "threadId": m.thread_id}))
                    .collect();
            }
            if start + page.len() < all.len() {
                let last = page.last().expect("a page before the end is not empty");
                out["nextPageToken"] =
                    json!(URL_SAFE_NO_PAD.encode(format!("{}:{}", last.internal_date, last.id)));
            }
            Ok(out)
        },
    )
    .await
}

fn decode_list_token(t: &str) -> Option<(i64, String)> {
    let s = String::from_utf8(URL_SAFE_NO_PAD.decode(t).ok()?).ok()?;
    let (d, id) = s.split_once(':')?;
    Some((d.parse().ok()?, id.to_string()))
}

fn snippet(raw: &[u8]) -> String {
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &raw[i + 4..])
        .unwrap_or(raw);
    String::from_utf8_lossy(&body[..body.len().min(120)])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((user, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = pairs(query.as_deref());
    let format = param(&q, "format").unwrap_or("full").to_string();
    *lock(&shared.stats)
        .by_method
        .entry(format!("gmail.users.messages.get/{format}"))
        .or_default() += 1;
    let failing = {
        let mut f = lock(&shared.faults);
        match f.failing_messages.get_mut(&id) {
            Some((status, times)) if *times > 0 => {
                *times -= 1;
                Some(*status)
            }
            _ => None,
        }
    };
    serve(
        &shared,
        &headers,
        "gmail.users.messages.get",
        &user,
        |_, mb| {
            if let Some(status) = failing {
                return Err(crate::front::refusal(status));
            }
            let m = mb.messages.get(&id).ok_or_else(ApiError::not_found)?;
            let mut out = json!({
                "id": m.id,
                "threadId": m.thread_id,
                "labelIds": m.label_ids,
                "snippet": snippet(&m.raw),
                "sizeEstimate": m.raw.len(),
                "historyId": m.history_id.to_string(),
                "internalDate": m.internal_date.to_string(),
            });
            match format.as_str() {
                "minimal" => {}
                // Gmail pads its base64url; clients must accept it with or without padding.
                "raw" => out["raw"] = json!(URL_SAFE.encode(&m.raw)),
                other => {
                    return Err(ApiError::bad_request(&format!(
                        "format {other} is not served by this simulator"
                    )))
                }
            }
            Ok(out)
        },
    )
    .await
}

pub async fn history(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = pairs(query.as_deref());
    serve(
        &shared,
        &headers,
        "gmail.users.history.list",
        &user,
        |_, mb| {
            let start: u64 = param(&q, "startHistoryId")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request("Invalid startHistoryId"))?;
            if start < mb.oldest_history {
                return Err(ApiError::not_found());
            }
            let n = max_results(&q, 100, 500)?;
            let types: Vec<&str> = q
                .iter()
                .filter(|(k, _)| k == "historyTypes")
                .map(|(_, v)| v.as_str())
                .collect();
            let after = match param(&q, "pageToken") {
                None | Some("") => start,
                Some(t) => String::from_utf8(URL_SAFE_NO_PAD.decode(t).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| ApiError::bad_request("Invalid pageToken"))?,
            };
            let matching: Vec<_> = mb
                .history
                .iter()
                .filter(|h| h.id > after)
                .filter(|h| types.is_empty() || types.contains(&h.change.type_name()))
                .collect();
            let page: Vec<Value> = matching.iter().take(n).map(|h| record(h)).collect();
            let mut out = json!({"historyId": mb.history_id.to_string()});
            if !page.is_empty() {
                out["history"] = json!(page);
            }
            if matching.len() > n {
                let last = matching[n - 1].id;
                out["nextPageToken"] = json!(URL_SAFE_NO_PAD.encode(last.to_string()));
            }
            Ok(out)
        },
    )
    .await
}

fn record(h: &crate::model::History) -> Value {
    let msg = json!({"id": h.message_id, "threadId": h.thread_id, "labelIds": h.label_ids});
    let mut r = json!({
        "id": h.id.to_string(),
        "messages": [{"id": h.message_id, "threadId": h.thread_id}],
    });
    match h.change {
        Change::MessageAdded => r["messagesAdded"] = json!([{"message": msg}]),
        Change::MessageDeleted => r["messagesDeleted"] = json!([{"message": msg}]),
        Change::LabelAdded => {
            r["labelsAdded"] = json!([{"message": msg, "labelIds": h.changed_labels}])
        }
        Change::LabelRemoved => {
            r["labelsRemoved"] = json!([{"message": msg, "labelIds": h.changed_labels}])
        }
    }
    r
}

pub async fn labels(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(
        &shared,
        &headers,
        "gmail.users.labels.list",
        &user,
        |_, mb| {
            let labels: Vec<Value> = mb
                .labels
                .iter()
                .map(|l| {
                    let mut v = json!({"id": l.id, "name": l.name, "type": l.kind});
                    if l.kind == "user" {
                        v["messageListVisibility"] = json!("show");
                        v["labelListVisibility"] = json!("labelShow");
                    }
                    v
                })
                .collect();
            Ok(json!({"labels": labels}))
        },
    )
    .await
}
