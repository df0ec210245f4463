//! Writing a file's bytes: simple upload for small files and resumable upload sessions for
//! large ones, with the fragment rules Graph enforces.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{plain_error, render_item};
use crate::error::{GraphError, Result};
use crate::gen::iso;
use crate::model::Sim;
use crate::server::{json as json_resp, ok, Ctx, Shared};
use crate::util::{drive_item_id, Content};

/// Simple upload (`PUT …/content`) takes files up to 250 MB per the current docs; the
/// simulator holds the older, stricter 4 MiB line so that large files go through sessions.
pub const SIMPLE_UPLOAD_MAX: usize = 4 << 20;
/// Upload session fragments must be multiples of 320 KiB, at most 60 MiB.
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
pub const FRAGMENT_MAX: u64 = 60 << 20;

/// Creates or replaces a file: `key` is the file itself, or its parent when `new_name` is set.
pub(super) fn write_file(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    drive_id: &str,
    key: u64,
    new_name: Option<String>,
    content: Content,
    conflict: Option<&str>,
) -> Result<(StatusCode, Value)> {
    let seq = sim.next_seq();
    let now = sim.now();
    let id = drive_item_id(&mut sim.rng);
    let d = sim
        .drives
        .get_mut(drive_id)
        .ok_or_else(GraphError::drive_not_found)?;
    let (status, k) = match new_name {
        Some(name) => {
            if name.is_empty() || name.contains(['"', '*', ':', '<', '>', '?', '/', '\\', '|']) {
                return Err(GraphError::invalid_request(
                    "The name contains characters that are not allowed.",
                ));
            }
            match d.child(key, &name) {
                Some(existing) if conflict.is_some_and(|c| c.eq_ignore_ascii_case("fail")) => {
                    let _ = existing;
                    return Err(GraphError::new(
                        StatusCode::CONFLICT,
                        "nameAlreadyExists",
                        "The specified item name already exists.",
                    ));
                }
                Some(existing) => {
                    d.set_content(existing, content, now, seq);
                    (StatusCode::OK, existing)
                }
                None => (
                    StatusCode::CREATED,
                    d.add(id, key, &name, Some(content), now, seq),
                ),
            }
        }
        None => {
            if d.items[&key].is_folder {
                return Err(GraphError::invalid_request(
                    "Cannot upload content to a folder.",
                ));
            }
            d.set_content(key, content, now, seq);
            (StatusCode::OK, key)
        }
    };
    Ok((status, render_item(&ctx.base, d, &d.items[&k], true)))
}

#[derive(Clone, Debug)]
pub struct UploadSession {
    pub drive_id: String,
    pub target: u64,
    pub new_name: Option<String>,
    pub data: Vec<u8>,
    pub total: Option<u64>,
    pub expires: DateTime<Utc>,
}

pub(super) fn create_session(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    drive_id: &str,
    key: u64,
    new_name: Option<String>,
) -> Result<Response> {
    let id = format!(
        "{:016x}{:016x}",
        crate::util::splitmix(sim.seq ^ 0x5e55),
        sim.uploads.len() as u64 + 1
    );
    let expires = Utc::now() + chrono::Duration::hours(24);
    sim.uploads.insert(
        id.clone(),
        UploadSession {
            drive_id: drive_id.to_string(),
            target: key,
            new_name,
            data: Vec::new(),
            total: None,
            expires,
        },
    );
    Ok(ok(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": format!("{}/_up/{}", ctx.base, id),
        "expirationDateTime": iso(expires),
        "nextExpectedRanges": ["0-"],
    })))
}

/// `PUT`, `GET` and `DELETE` on an upload session URL. No bearer token: the URL itself is
/// the credential, as Graph documents.
pub async fn upload_fragment(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut sim = shared.sim();
    let Some(s) = sim.uploads.get_mut(&session) else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The upload session was not found or has expired.",
        );
    };
    let next_range = |s: &UploadSession| format!("{}-", s.data.len());
    match method {
        Method::DELETE => {
            sim.uploads.remove(&session);
            return StatusCode::NO_CONTENT.into_response();
        }
        Method::GET => {
            return ok(
                json!({ "expirationDateTime": iso(s.expires), "nextExpectedRanges": [next_range(s)] }),
            );
        }
        Method::PUT => {}
        _ => {
            return plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalidRequest",
                "Use PUT to upload a fragment.",
            )
        }
    }
    let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "A Content-Range header is required.",
        );
    };
    let parsed = range.strip_prefix("bytes ").and_then(|r| {
        let (span, total) = r.split_once('/')?;
        let (a, b) = span.split_once('-')?;
        Some((
            a.parse::<u64>().ok()?,
            b.parse::<u64>().ok()?,
            total.parse::<u64>().ok()?,
        ))
    });
    let Some((start, end, total)) = parsed else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "The Content-Range header is not valid.",
        );
    };
    if end < start || end - start + 1 != body.len() as u64 || end >= total {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "The Content-Range does not match the body length.",
        );
    }
    if s.total.is_some_and(|t| t != total) {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "The total size changed during the session.",
        );
    }
    if start != s.data.len() as u64 {
        return plain_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            "The uploaded fragment overlaps or skips a range that was expected.",
        );
    }
    let last = end + 1 == total;
    if body.len() as u64 > FRAGMENT_MAX
        || (!last && !(body.len() as u64).is_multiple_of(FRAGMENT_UNIT))
    {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "Fragments must be a multiple of 320 KiB and no more than 60 MiB.",
        );
    }
    s.total = Some(total);
    s.data.extend_from_slice(&body);
    if !last {
        let v =
            json!({ "expirationDateTime": iso(s.expires), "nextExpectedRanges": [next_range(s)] });
        return json_resp(StatusCode::ACCEPTED, v);
    }
    let Some(s) = sim.uploads.remove(&session) else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The upload session was not found.",
        );
    };
    let base = shared.base();
    let content = Content::Bytes(Arc::new(s.data));
    let seq = sim.next_seq();
    let now = sim.now();
    let id = drive_item_id(&mut sim.rng);
    let Some(d) = sim.drives.get_mut(&s.drive_id) else {
        return plain_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The drive no longer exists.",
        );
    };
    let (status, key) = match s.new_name {
        Some(name) => match d.child(s.target, &name) {
            Some(existing) => {
                d.set_content(existing, content, now, seq);
                (StatusCode::OK, existing)
            }
            None => (
                StatusCode::CREATED,
                d.add(id, s.target, &name, Some(content), now, seq),
            ),
        },
        None => {
            d.set_content(s.target, content, now, seq);
            (StatusCode::OK, s.target)
        }
    };
    json_resp(status, render_item(&base, d, &d.items[&key], true))
}
