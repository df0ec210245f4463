//! Messages: listing, reading (JSON with optional expansions, or MIME through `$value`), and
//! the writes a restore needs: creating from JSON or MIME, flag and property changes, moves.

use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::attachments::{self, render_attachment};
use super::{
    render_message, Addr, Attachment, Message, View, MESSAGE_LIMITS, MSGFLAG_READ, MSGFLAG_UNSENT,
    PR_CLIENT_SUBMIT_TIME, PR_MESSAGE_DELIVERY_TIME, PR_MESSAGE_FLAGS,
};
use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{page, select};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::Entry;
use crate::util::{unb64, Content};

pub(super) fn list_messages(
    ctx: &Ctx<'_>,
    sim: &Sim,
    u: usize,
    folder: Option<u64>,
    base: &str,
) -> Result<Response> {
    let store = &sim.mailboxes[u].mail;
    let fields = ctx.q().select();
    let mut entries: Vec<&Entry<Message>> = store
        .items
        .values()
        .filter(|e| folder.is_none_or(|f| e.folder == f))
        .collect();
    // Graph's default order for messages is newest first.
    entries.sort_by(|a, b| {
        b.data
            .received
            .cmp(&a.data.received)
            .then(a.key.cmp(&b.key))
    });
    let items = entries
        .into_iter()
        .map(|e| select(render_message(store, e, View::of(ctx)), &fields))
        .collect();
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        MESSAGE_LIMITS,
        base,
        "https://graph.microsoft.com/v1.0/$metadata#users('id')/messages",
    )?))
}

pub(super) fn message_route(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    r: &[&str],
) -> Result<Response> {
    let id = r[0];
    let tail: Vec<String> = r[1..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let t: Vec<&str> = tail.iter().map(String::as_str).collect();
    let key = sim.mailboxes[u]
        .mail
        .resolve(id)
        .ok_or_else(GraphError::outlook_not_found)?;
    if ctx.req.method == Method::GET && crate::routes::vanishes(ctx) {
        let seq = sim.next_seq();
        sim.mailboxes[u].mail.delete(key, seq);
        return Err(GraphError::outlook_not_found());
    }
    match (ctx.req.method.clone(), t.as_slice()) {
        (Method::GET, []) => {
            let store = &sim.mailboxes[u].mail;
            let mut v = render_message(store, &store.items[&key], View::of(ctx));
            if ctx.q().get("$expand").is_some_and(|x| {
                x.to_ascii_lowercase()
                    .contains("singlevalueextendedproperties")
            }) {
                let props: Vec<Value> = store.items[&key]
                    .data
                    .ext
                    .iter()
                    .map(|(k, val)| json!({"id": k, "value": val}))
                    .collect();
                v["singleValueExtendedProperties"] = json!(props);
            }
            if ctx
                .q()
                .get("$expand")
                .is_some_and(|x| x.eq_ignore_ascii_case("attachments"))
            {
                v["attachments"] = json!(store.items[&key]
                    .data
                    .attachments
                    .iter()
                    .map(|a| render_attachment(a, true))
                    .collect::<Vec<_>>());
            }
            Ok(ok(select(v, &ctx.q().select())))
        }
        (Method::GET, ["$value"]) => {
            let store = &sim.mailboxes[u].mail;
            let mime = crate::mime::render(&store.items[&key]);
            let mut resp = (StatusCode::OK, mime).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(resp)
        }
        (Method::GET, ["attachments"]) => attachments::list(ctx, sim, u, key),
        (Method::GET, ["attachments", aid]) | (Method::GET, ["attachments", aid, "$value"]) => {
            attachments::get(sim, u, key, aid, t.len() == 3)
        }
        (Method::POST, ["attachments", "createuploadsession"]) => {
            attachments::create_upload_session(ctx, sim, u, key)
        }
        (Method::POST, ["attachments"]) => attachments::add(ctx, sim, u, key),
        (Method::PATCH, []) => patch_message(ctx, sim, u, key),
        (Method::DELETE, []) => {
            let seq = sim.next_seq();
            sim.mailboxes[u].mail.delete(key, seq);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::POST, ["move"]) => {
            let body = ctx.json_body()?;
            let dest = body
                .get("destinationId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let to = sim.mailboxes[u]
                .mail
                .folder_key(dest)
                .ok_or_else(GraphError::outlook_not_found)?;
            let seq = sim.next_seq();
            let now = sim.now();
            let store = &mut sim.mailboxes[u].mail;
            store.move_item(key, to, now, seq);
            Ok(json_resp(
                StatusCode::CREATED,
                render_message(store, &store.items[&key], View::of(ctx)),
            ))
        }
        _ => Err(GraphError::no_route()),
    }
}

fn parse_addrs(v: Option<&Value>) -> Vec<Addr> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    let e = r.get("emailAddress")?;
                    Some(Addr {
                        name: e
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        address: e.get("address").and_then(Value::as_str)?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Reads `singleValueExtendedProperties` of a request body into `(id, value)` pairs.
fn ext_props(body: &Value) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(arr) = body.get("singleValueExtendedProperties") {
        let arr = arr.as_array().ok_or_else(|| {
            GraphError::bad_request("singleValueExtendedProperties must be an array.")
        })?;
        for p in arr {
            let id = p
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| GraphError::bad_request("An extended property needs an id."))?;
            let value = match p.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => {
                    return Err(GraphError::bad_request(
                        "An extended property needs a value.",
                    ))
                }
            };
            out.push((normalise_prop_id(id), value));
        }
    }
    Ok(out)
}

/// `integer 0x0e07` and `Integer 0x0E07` name the same property.
fn normalise_prop_id(id: &str) -> String {
    const TYPES: &[&str] = &[
        "Binary",
        "Boolean",
        "CLSID",
        "Currency",
        "Double",
        "Float",
        "Integer",
        "Long",
        "Short",
        "String",
        "SystemTime",
    ];
    match id.split_once(' ') {
        Some((ty, tag)) if tag.to_ascii_lowercase().starts_with("0x") => {
            let ty = TYPES
                .iter()
                .find(|t| t.eq_ignore_ascii_case(ty))
                .map(|t| t.to_string())
                .unwrap_or_else(|| ty.to_string());
            format!("{ty} 0x{}", tag[2..].to_ascii_uppercase())
        }
        _ => id.to_string(),
    }
}

pub(super) fn create_message(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    folder: u64,
) -> Result<Response> {
    let ct = ctx.content_type();
    let seq = sim.next_seq();
    let now = sim.now();
    let msg = if ct.starts_with("text/plain") {
        // MIME import: base64 of the whole message in the body, as documented. The result is
        // a draft (MSGFLAG_UNSENT), and that flag cannot be cleared afterwards.
        let text = std::str::from_utf8(&ctx.req.body)
            .map_err(|_| GraphError::bad_request("The MIME content must be base64 text."))?;
        let raw = unb64(text).ok_or_else(|| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        })?;
        crate::mime::parse(&raw, now).ok_or_else(|| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "ErrorMimeContentConversionFailed",
                "The MIME content could not be converted.",
            )
        })?
    } else {
        let body = ctx.json_body()?;
        let props = ext_props(&body)?;
        let flags: Option<i64> = props
            .iter()
            .find(|(k, _)| k == PR_MESSAGE_FLAGS)
            .and_then(|(_, v)| v.parse().ok());
        let received = props
            .iter()
            .find(|(k, _)| k == PR_MESSAGE_DELIVERY_TIME)
            .and_then(|(_, v)| parse_time(v));
        let sent = props
            .iter()
            .find(|(k, _)| k == PR_CLIENT_SUBMIT_TIME)
            .and_then(|(_, v)| parse_time(v));
        let from = parse_addrs(body.get("from").map(|f| json!([f])).as_ref())
            .into_iter()
            .next();
        let b = body.get("body");
        let html = b
            .and_then(|b| b.get("contentType"))
            .and_then(Value::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("html"));
        let mut m = Message {
            subject: body
                .get("subject")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            from: from.unwrap_or(Addr {
                name: sim.users[u].display_name.clone(),
                address: sim.users[u].upn.clone(),
            }),
            to: parse_addrs(body.get("toRecipients")),
            cc: parse_addrs(body.get("ccRecipients")),
            body: b
                .and_then(|b| b.get("content"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            html,
            received: received.unwrap_or(now),
            sent: sent.or(received).unwrap_or(now),
            is_read: body.get("isRead").and_then(Value::as_bool).unwrap_or(true),
            is_draft: true,
            importance: body
                .get("importance")
                .and_then(Value::as_str)
                .unwrap_or("normal")
                .to_string(),
            flag: body
                .pointer("/flag/flagStatus")
                .and_then(Value::as_str)
                .unwrap_or("notFlagged")
                .to_string(),
            categories: body
                .get("categories")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            internet_message_id: body
                .get("internetMessageId")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("<{:016x}@graphsim.local>", crate::util::splitmix(seq))),
            conversation_id: crate::util::outlook_id("AAQkAGI2", &[u as u64, seq]),
            attachments: Vec::new(),
            ext: props.iter().cloned().collect(),
            mime: None,
        };
        if let Some(f) = flags {
            // PR_MESSAGE_FLAGS is writable only when the message is created.
            m.is_draft = f & MSGFLAG_UNSENT != 0;
            m.is_read = f & MSGFLAG_READ != 0;
        }
        if let Some(atts) = body.get("attachments").and_then(Value::as_array) {
            for (i, a) in atts.iter().enumerate() {
                let bytes = a
                    .get("contentBytes")
                    .and_then(Value::as_str)
                    .and_then(unb64)
                    .unwrap_or_default();
                m.attachments.push(Attachment {
                    id: crate::util::outlook_id("AAMkAGI2att", &[seq, i as u64 + 1]),
                    name: a
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("attachment")
                        .to_string(),
                    content_type: a
                        .get("contentType")
                        .and_then(Value::as_str)
                        .unwrap_or("application/octet-stream")
                        .to_string(),
                    content: Content::Bytes(Arc::new(bytes)),
                    inline: a.get("isInline").and_then(Value::as_bool).unwrap_or(false),
                });
            }
        }
        m
    };
    let store = &mut sim.mailboxes[u].mail;
    let key = store.insert(folder, msg, now, seq);
    Ok(json_resp(
        StatusCode::CREATED,
        render_message(store, &store.items[&key], View::of(ctx)),
    ))
}

fn patch_message(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, key: u64) -> Result<Response> {
    let body = ctx.json_body()?;
    let props = ext_props(&body)?;
    let seq = sim.next_seq();
    let now = sim.now();
    let store = &mut sim.mailboxes[u].mail;
    let e = store
        .touch(key, now, seq)
        .ok_or_else(GraphError::outlook_not_found)?;
    let m = &mut e.data;
    if let Some(v) = body.get("isRead").and_then(Value::as_bool) {
        m.is_read = v;
    }
    if let Some(v) = body.get("importance").and_then(Value::as_str) {
        m.importance = v.to_string();
    }
    if let Some(v) = body.pointer("/flag/flagStatus").and_then(Value::as_str) {
        m.flag = v.to_string();
    }
    if let Some(v) = body.get("categories").and_then(Value::as_array) {
        m.categories = v
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
    }
    // Only drafts can have their content changed.
    if m.is_draft {
        if let Some(v) = body.get("subject").and_then(Value::as_str) {
            m.subject = v.to_string();
            m.mime = None;
        }
        if let Some(v) = body.pointer("/body/content").and_then(Value::as_str) {
            m.body = v.to_string();
            m.html = body
                .pointer("/body/contentType")
                .and_then(Value::as_str)
                .is_some_and(|c| c.eq_ignore_ascii_case("html"));
            m.mime = None;
        }
    }
    for (id, value) in props {
        if id == PR_MESSAGE_FLAGS {
            // After the first save, only the read bit of PR_MESSAGE_FLAGS follows a write; the
            // unsent (draft) bit stays as it was created.
            if let Ok(f) = value.parse::<i64>() {
                m.is_read = f & MSGFLAG_READ != 0;
            }
            continue;
        }
        if id == PR_MESSAGE_DELIVERY_TIME {
            if let Some(t) = parse_time(&value) {
                m.received = t;
            }
        }
        m.ext.insert(id, value);
    }
    Ok(ok(render_message(store, &store.items[&key], View::of(ctx))))
}
