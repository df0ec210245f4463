//! Attachments on a message: listing, reading, adding small ones inline, and upload sessions
//! for large ones, whose pre-authenticated URL takes the byte ranges.

use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::Attachment;
use crate::error::{GraphError, Result};
use crate::gen::iso;
use crate::model::Sim;
use crate::odata::select;
use crate::server::{json as json_resp, ok, Ctx};
use crate::util::{b64, unb64, Content};

pub(super) fn render_attachment(a: &Attachment, with_bytes: bool) -> Value {
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

/// `GET …/attachments`.
pub(super) fn list(ctx: &Ctx<'_>, sim: &Sim, u: usize, key: u64) -> Result<Response> {
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

/// `GET …/attachments/{id}`, or its raw bytes when `raw` (`…/$value`).
pub(super) fn get(sim: &Sim, u: usize, key: u64, aid: &str, raw: bool) -> Result<Response> {
    let e = &sim.mailboxes[u].mail.items[&key];
    let a = e
        .data
        .attachments
        .iter()
        .find(|a| a.id.eq_ignore_ascii_case(aid))
        .ok_or_else(GraphError::outlook_not_found)?;
    if raw {
        let mut resp = (StatusCode::OK, a.content.all()).into_response();
        if let Ok(v) = HeaderValue::from_str(&a.content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        return Ok(resp);
    }
    Ok(ok(render_attachment(a, true)))
}

/// `POST …/attachments/createUploadSession`.
pub(super) fn create_upload_session(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    key: u64,
) -> Result<Response> {
    let imm = ctx.immutable();
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

/// `POST …/attachments` with the bytes inline, for attachments up to 3 MB.
pub(super) fn add(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, key: u64) -> Result<Response> {
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
