//! Outlook mail: the mail folder tree (`mailFolders`, `childFolders`, hidden folders), messages
//! (JSON, attachments, MIME through `$value`), per-folder message delta, and the writes a
//! restore needs: folders, messages in JSON or MIME, flag changes, moves.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::gen::iso;
use crate::model::Sim;
use crate::odata::{page, select, Limits};
use crate::outlook::{delta_page, delta_state, folder_delta_page};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::{Entry, Folder, Store};
use crate::util::{b64, unb64, Content};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub name: String,
    pub address: String,
}

#[derive(Clone, Debug)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub content: Content,
    pub inline: bool,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub subject: String,
    pub from: Addr,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub body: String,
    pub html: bool,
    pub received: DateTime<Utc>,
    pub sent: DateTime<Utc>,
    pub is_read: bool,
    pub is_draft: bool,
    pub importance: String,
    pub flag: String,
    pub categories: Vec<String>,
    pub internet_message_id: String,
    pub conversation_id: String,
    pub attachments: Vec<Attachment>,
    /// Single-value extended properties by id (`Integer 0x0E07`, …), as set by a client.
    pub ext: BTreeMap<String, String>,
    /// The MIME content as imported, served back verbatim by `$value`.
    pub mime: Option<Arc<Vec<u8>>>,
}

/// PidTagMessageFlags: MSGFLAG_READ and MSGFLAG_UNSENT (a draft).
pub const PR_MESSAGE_FLAGS: &str = "Integer 0x0E07";
const MSGFLAG_READ: i64 = 0x1;
const MSGFLAG_UNSENT: i64 = 0x8;
/// PidTagMessageDeliveryTime, which `receivedDateTime` shows.
pub const PR_MESSAGE_DELIVERY_TIME: &str = "SystemTime 0x0E06";
/// PidTagClientSubmitTime, which `sentDateTime` shows.
pub const PR_CLIENT_SUBMIT_TIME: &str = "SystemTime 0x0039";

pub const MESSAGE_LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};
const FOLDER_LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};

pub fn addr_json(a: &Addr) -> Value {
    json!({ "emailAddress": { "name": a.name, "address": a.address } })
}

pub fn preview(body: &str, html: bool) -> String {
    let text = if html {
        let mut out = String::new();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    } else {
        body.to_string()
    };
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(255).collect()
}

pub fn render_message(store: &Store<Message>, e: &Entry<Message>, imm: bool) -> Value {
    let m = &e.data;
    let folder_id = store
        .folders
        .get(&e.folder)
        .map(|f| f.id.clone())
        .unwrap_or_default();
    json!({
        "@odata.etag": format!("W/\"{}\"", e.change_key()),
        "id": e.id(imm),
        "createdDateTime": iso(e.created),
        "lastModifiedDateTime": iso(e.modified),
        "changeKey": e.change_key(),
        "categories": m.categories,
        "receivedDateTime": iso(m.received),
        "sentDateTime": iso(m.sent),
        "hasAttachments": m.attachments.iter().any(|a| !a.inline),
        "internetMessageId": m.internet_message_id,
        "subject": m.subject,
        "bodyPreview": preview(&m.body, m.html),
        "importance": m.importance,
        "parentFolderId": folder_id,
        "conversationId": m.conversation_id,
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": m.is_read,
        "isDraft": m.is_draft,
        "webLink": format!("https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem", e.imm_id),
        "inferenceClassification": "focused",
        "body": { "contentType": if m.html { "html" } else { "text" }, "content": m.body },
        "sender": addr_json(&m.from),
        "from": addr_json(&m.from),
        "toRecipients": m.to.iter().map(addr_json).collect::<Vec<_>>(),
        "ccRecipients": m.cc.iter().map(addr_json).collect::<Vec<_>>(),
        "bccRecipients": [],
        "replyTo": [],
        "flag": { "flagStatus": m.flag },
    })
}

fn render_folder(store: &Store<Message>, f: &Folder) -> Value {
    let items: Vec<&Entry<Message>> = store.in_folder(f.key).collect();
    let size: u64 = items
        .iter()
        .map(|e| {
            e.data.body.len() as u64
                + e.data
                    .attachments
                    .iter()
                    .map(|a| a.content.len())
                    .sum::<u64>()
        })
        .sum();
    json!({
        "id": f.id,
        "displayName": f.name,
        "parentFolderId": f.parent.and_then(|p| store.folders.get(&p)).map(|p| p.id.clone()).unwrap_or_else(|| root_id(store)),
        "childFolderCount": store.children(Some(f.key)).count(),
        "unreadItemCount": items.iter().filter(|e| !e.data.is_read).count(),
        "totalItemCount": items.len(),
        "sizeInBytes": size,
        "isHidden": f.hidden,
    })
}

/// The id of the mailbox's root folder (`msgfolderroot`), parent of the top-level folders.
fn root_id(store: &Store<Message>) -> String {
    store
        .folders
        .values()
        .next()
        .map(|f| format!("{}AAA=", f.id.trim_end_matches('=')))
        .unwrap_or_default()
}

fn user_idx(sim: &Sim, id: &str) -> Result<usize> {
    sim.user(id).ok_or_else(|| GraphError::user_not_found(id))
}

fn folder_key(store: &Store<Message>, id: &str) -> Result<u64> {
    store
        .folder_key(id)
        .ok_or_else(GraphError::outlook_not_found)
}

/// Routes `users/{u}/mailFolders/…` and `users/{u}/messages/…`.
pub fn route(ctx: &Ctx<'_>, sim: &mut Sim, user: &str, rest: &[String]) -> Result<Response> {
    let u = user_idx(sim, user)?;
    let m = &ctx.req.method;
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (m.clone(), l.as_slice()) {
        (Method::GET, ["mailfolders"]) => list_folders(ctx, sim, u, None, user),
        (Method::POST, ["mailfolders"]) => create_folder(ctx, sim, u, None),
        (Method::GET, ["mailfolders", "delta"]) => {
            let tok = delta_state(ctx, sim, "mailFolder", u, 0, FOLDER_LIMITS)?;
            let store = &sim.mailboxes[u].mail;
            let base = format!("{}/users/{}/mailFolders/delta", ctx.root, user);
            folder_delta_page(tok, store, &base, "#microsoft.graph.mailFolder", |f| {
                render_folder(store, f)
            })
        }
        (Method::PATCH, ["mailfolders", _]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            let body = ctx.json_body()?;
            let name = body
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string();
            if name.is_empty() {
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "The folder name cannot be empty.",
                ));
            }
            let seq = sim.next_seq();
            let store = &mut sim.mailboxes[u].mail;
            store.rename_folder(f, &name, seq);
            Ok(ok(render_folder(store, &store.folders[&f])))
        }
        (Method::DELETE, ["mailfolders", _]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            if sim.mailboxes[u].mail.folders[&f].well_known.is_some() {
                return Err(GraphError::new(
                    StatusCode::FORBIDDEN,
                    "ErrorDeleteDistinguishedFolder",
                    "Distinguished folders cannot be deleted.",
                ));
            }
            let seq = sim.next_seq();
            sim.mailboxes[u].mail.delete_folder(f, seq);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, ["mailfolders", _]) => {
            let mb = &sim.mailboxes[u].mail;
            let f = folder_key(mb, r[1])?;
            Ok(ok(render_folder(mb, &mb.folders[&f])))
        }
        (Method::GET, ["mailfolders", _, "childfolders"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            list_folders(ctx, sim, u, Some(f), user)
        }
        (Method::POST, ["mailfolders", _, "childfolders"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            create_folder(ctx, sim, u, Some(f))
        }
        (Method::GET, ["mailfolders", _, "messages"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            list_messages(
                ctx,
                sim,
                u,
                Some(f),
                &format!("{}/users/{}/mailFolders/{}/messages", ctx.root, user, r[1]),
            )
        }
        (Method::GET, ["mailfolders", _, "messages", "delta"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            let tok = delta_state(ctx, sim, "message", u, f, MESSAGE_LIMITS)?;
            let store = &sim.mailboxes[u].mail;
            let imm = ctx.immutable();
            let base = format!(
                "{}/users/{}/mailFolders/{}/messages/delta",
                ctx.root, user, r[1]
            );
            delta_page(
                ctx,
                tok,
                store,
                &base,
                "#microsoft.graph.message",
                "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
                |e| render_message(store, e, imm),
            )
        }
        (Method::POST, ["mailfolders", _, "messages"]) => {
            let f = folder_key(&sim.mailboxes[u].mail, r[1])?;
            create_message(ctx, sim, u, f)
        }
        (Method::GET, ["messages"]) => list_messages(
            ctx,
            sim,
            u,
            None,
            &format!("{}/users/{}/messages", ctx.root, user),
        ),
        (Method::POST, ["messages"]) => {
            let drafts = folder_key(&sim.mailboxes[u].mail, "drafts")?;
            create_message(ctx, sim, u, drafts)
        }
        (_, ["mailfolders", _, "messages", _, ..]) => message_route(ctx, sim, u, &r[3..]),
        (_, ["messages", _, ..]) => message_route(ctx, sim, u, &r[1..]),
        _ => Err(GraphError::no_route()),
    }
}

fn list_folders(
    ctx: &Ctx<'_>,
    sim: &Sim,
    u: usize,
    parent: Option<u64>,
    user: &str,
) -> Result<Response> {
    let store = &sim.mailboxes[u].mail;
    let hidden = ctx.q().flag("includeHiddenFolders");
    let fields = ctx.q().select();
    let items: Vec<Value> = store
        .children(parent)
        .filter(|f| hidden || !f.hidden)
        .map(|f| select(render_folder(store, f), &fields))
        .collect();
    let base = match parent {
        None => format!("{}/users/{}/mailFolders", ctx.root, user),
        Some(p) => format!(
            "{}/users/{}/mailFolders/{}/childFolders",
            ctx.root, user, store.folders[&p].id
        ),
    };
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        FOLDER_LIMITS,
        &base,
        "https://graph.microsoft.com/v1.0/$metadata#users('id')/mailFolders",
    )?))
}

fn create_folder(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, parent: Option<u64>) -> Result<Response> {
    let body = ctx.json_body()?;
    let name = body
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The folder name cannot be empty.",
        ));
    }
    let hidden = body
        .get("isHidden")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let seq = sim.next_seq();
    let store = &mut sim.mailboxes[u].mail;
    if store
        .children(parent)
        .any(|f| f.name.eq_ignore_ascii_case(&name))
    {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        ));
    }
    let key = store.add_folder(parent, &name, None, hidden, seq);
    Ok(json_resp(
        StatusCode::CREATED,
        render_folder(store, &store.folders[&key]),
    ))
}

fn list_messages(
    ctx: &Ctx<'_>,
    sim: &Sim,
    u: usize,
    folder: Option<u64>,
    base: &str,
) -> Result<Response> {
    let store = &sim.mailboxes[u].mail;
    let imm = ctx.immutable();
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
        .map(|e| select(render_message(store, e, imm), &fields))
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

fn message_route(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, r: &[&str]) -> Result<Response> {
    let id = r[0];
    let tail: Vec<String> = r[1..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let t: Vec<&str> = tail.iter().map(String::as_str).collect();
    let imm = ctx.immutable();
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
            let mut v = render_message(store, &store.items[&key], imm);
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
        (Method::GET, ["attachments"]) => {
            let e = &sim.mailboxes[u].mail.items[&key];
            let items: Vec<Value> = e
                .data
                .attachments
                .iter()
                .map(|a| select(render_attachment(a, true), &ctx.q().select()))
                .collect();
            Ok(ok(
                json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('id')/messages('id')/attachments", "value": items }),
            ))
        }
        (Method::GET, ["attachments", aid]) | (Method::GET, ["attachments", aid, "$value"]) => {
            let e = &sim.mailboxes[u].mail.items[&key];
            let a = e
                .data
                .attachments
                .iter()
                .find(|a| a.id.eq_ignore_ascii_case(aid))
                .ok_or_else(GraphError::outlook_not_found)?;
            if t.len() == 3 {
                let mut resp = (StatusCode::OK, a.content.all()).into_response();
                if let Ok(v) = HeaderValue::from_str(&a.content_type) {
                    resp.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                return Ok(resp);
            }
            Ok(ok(render_attachment(a, true)))
        }
        (Method::POST, ["attachments", "createuploadsession"]) => {
            let body = ctx.json_body()?;
            let item = body
                .get("AttachmentItem")
                .or_else(|| body.get("attachmentItem"))
                .ok_or_else(|| GraphError::bad_request("AttachmentItem is required."))?;
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let size = item
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| GraphError::bad_request("AttachmentItem.size is required."))?;
            if name.is_empty() {
                return Err(GraphError::bad_request("AttachmentItem.name is required."));
            }
            if size > ATTACHMENT_SESSION_MAX {
                return Err(GraphError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ErrorAttachmentSizeLimitExceeded",
                    "Attachments are limited to 150 MB.",
                ));
            }
            let session = format!(
                "{:016x}{:08x}",
                crate::util::splitmix(sim.seq ^ key),
                sim.att_uploads.len() + 1
            );
            let expires = Utc::now() + chrono::Duration::hours(2);
            let user_id = sim.users[u].id.clone();
            let msg_id = sim.mailboxes[u].mail.items[&key].id(imm).to_string();
            sim.att_uploads.insert(
                session.clone(),
                AttUpload {
                    user: u,
                    message: key,
                    name,
                    content_type: item
                        .get("contentType")
                        .and_then(Value::as_str)
                        .unwrap_or("application/octet-stream")
                        .to_string(),
                    size,
                    data: Vec::new(),
                    expires,
                    location: format!(
                        "{}/api/v2.0/Users('{user_id}')/Messages('{msg_id}')/Attachments",
                        ctx.base
                    ),
                },
            );
            Ok(json_resp(
                StatusCode::CREATED,
                json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
                    "uploadUrl": format!("{}/_att/{session}?authtoken={}", ctx.base, crate::util::encode_token(&session)),
                    "expirationDateTime": iso(expires),
                    "nextExpectedRanges": ["0-"],
                }),
            ))
        }
        (Method::POST, ["attachments"]) => {
            let body = ctx.json_body()?;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("attachment")
                .to_string();
            let bytes = body
                .get("contentBytes")
                .and_then(Value::as_str)
                .and_then(unb64)
                .ok_or_else(|| {
                    GraphError::new(
                        StatusCode::BAD_REQUEST,
                        "ErrorInvalidRequest",
                        "contentBytes is missing or not valid base64.",
                    )
                })?;
            if bytes.len() > 3 << 20 {
                return Err(GraphError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    "Attachments over 3 MB must be added with an upload session.",
                ));
            }
            let seq = sim.next_seq();
            let now = sim.now();
            let e = sim.mailboxes[u]
                .mail
                .touch(key, now, seq)
                .ok_or_else(GraphError::outlook_not_found)?;
            let a = Attachment {
                id: crate::util::outlook_id(
                    "AAMkAGI2att",
                    &[key, e.data.attachments.len() as u64 + 1, seq],
                ),
                name,
                content_type: body
                    .get("contentType")
                    .and_then(Value::as_str)
                    .unwrap_or("application/octet-stream")
                    .to_string(),
                content: Content::Bytes(Arc::new(bytes)),
                inline: body
                    .get("isInline")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            };
            let v = render_attachment(&a, true);
            e.data.attachments.push(a);
            e.data.mime = None;
            Ok(json_resp(StatusCode::CREATED, v))
        }
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
                render_message(store, &store.items[&key], imm),
            ))
        }
        _ => Err(GraphError::no_route()),
    }
}

fn render_attachment(a: &Attachment, with_bytes: bool) -> Value {
    let mut v = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": a.id,
        "lastModifiedDateTime": "2026-01-05T08:00:00Z",
        "name": a.name,
        "contentType": a.content_type,
        "size": a.content.len(),
        "isInline": a.inline,
        "contentId": if a.inline { json!(format!("{}@graphsim", a.id.len())) } else { Value::Null },
    });
    if with_bytes {
        v["contentBytes"] = json!(b64(&a.content.all()));
    }
    v
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

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
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

fn create_message(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, folder: u64) -> Result<Response> {
    let imm = ctx.immutable();
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
        render_message(store, &store.items[&key], imm),
    ))
}

fn patch_message(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, key: u64) -> Result<Response> {
    let body = ctx.json_body()?;
    let props = ext_props(&body)?;
    let imm = ctx.immutable();
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
    Ok(ok(render_message(store, &store.items[&key], imm)))
}

/// Attachments up to 150 MB can be added through an upload session.
pub const ATTACHMENT_SESSION_MAX: u64 = 150 << 20;

/// An attachment upload session on an Outlook message.
#[derive(Clone, Debug)]
pub struct AttUpload {
    pub user: usize,
    pub message: u64,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub data: Vec<u8>,
    pub expires: DateTime<Utc>,
    pub location: String,
}

fn plain_error(status: StatusCode, code: &str, msg: &str) -> Response {
    crate::server::error_response(GraphError::new(status, code, msg))
}

/// `PUT` of a byte range to an attachment upload session (the pre-authenticated URL; no
/// bearer token), and `DELETE` to cancel it. The last range attaches the file and answers
/// `201 Created` with the attachment's URL in `Location`, as documented.
pub async fn attachment_fragment(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<crate::server::Shared>>,
    axum::extract::Path(session): axum::extract::Path<String>,
    method: Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut sim = shared.sim();
    let Some(s) = sim.att_uploads.get_mut(&session) else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The upload session was not found or has expired.",
        );
    };
    if method == Method::DELETE {
        sim.att_uploads.remove(&session);
        return StatusCode::NO_CONTENT.into_response();
    }
    if method != Method::PUT {
        return plain_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "ErrorInvalidRequest",
            "Use PUT to upload a range.",
        );
    }
    let range = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let (span, total) = r.strip_prefix("bytes ")?.split_once('/')?;
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<u64>().ok()?,
                b.parse::<u64>().ok()?,
                total.parse::<u64>().ok()?,
            ))
        });
    let Some((start, end, total)) = range else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "A valid Content-Range header is required.",
        );
    };
    if total != s.size || end < start || end - start + 1 != body.len() as u64 || end >= total {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "The Content-Range does not match the body or the announced size.",
        );
    }
    if start != s.data.len() as u64 {
        return plain_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "ErrorInvalidRange",
            "Ranges must be uploaded in order.",
        );
    }
    s.data.extend_from_slice(&body);
    if (s.data.len() as u64) < s.size {
        return crate::server::ok(
            json!({ "expirationDateTime": iso(s.expires), "nextExpectedRanges": [s.data.len().to_string()] }),
        );
    }
    let Some(s) = sim.att_uploads.remove(&session) else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The upload session was not found.",
        );
    };
    let seq = sim.next_seq();
    let now = sim.now();
    let Some(e) = sim
        .mailboxes
        .get_mut(s.user)
        .and_then(|m| m.mail.touch(s.message, now, seq))
    else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The message no longer exists.",
        );
    };
    let id = crate::util::outlook_id(
        "AAMkAGI2att",
        &[s.message, e.data.attachments.len() as u64 + 1, seq],
    );
    e.data.attachments.push(Attachment {
        id: id.clone(),
        name: s.name,
        content_type: s.content_type,
        content: Content::Bytes(Arc::new(s.data)),
        inline: false,
    });
    e.data.mime = None;
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}('{id}')", s.location)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
