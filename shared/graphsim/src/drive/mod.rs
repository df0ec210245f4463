//! OneDrive and SharePoint document libraries: drives, driveItems (by id and by path),
//! children, `root/delta` with the `deleted` facet, content download through a pre-authenticated
//! URL that supports `Range`, simple upload, upload sessions, and folder creation.

mod content;
mod delta;
mod render;
mod tree;
mod upload;

use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{page, select, Limits};
use crate::server::{json as json_resp, ok, Ctx};
use crate::util::{drive_item_id, Content};

pub use content::{download, mime_type, parse_range};
pub use render::{list_drives, render_drive, render_item};
pub use tree::{Drive, DriveItem, DriveTombstone};
pub use upload::{upload_fragment, UploadSession, FRAGMENT_MAX, FRAGMENT_UNIT, SIMPLE_UPLOAD_MAX};

const CHILDREN_LIMITS: Limits = Limits {
    default: 200,
    max: 1000,
};

fn plain_error(status: StatusCode, code: &str, msg: &str) -> Response {
    crate::server::error_response(GraphError::new(status, code, msg))
}

/// Routes everything below `drives/{id}` (and the `users/{id}/drive`, `sites/{id}/drive` aliases).
pub fn route(ctx: &Ctx<'_>, sim: &mut Sim, drive_id: &str, rest: &[String]) -> Result<Response> {
    if !sim.drives.contains_key(drive_id) {
        return Err(GraphError::drive_not_found());
    }
    let m = ctx.req.method.clone();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    // Resolve the addressed item: root, items/{id}, and optionally `:/path:`.
    let (mut item, mut tail): (Option<u64>, &[String]) = (None, rest);
    let drive = &sim.drives[drive_id];
    match l.as_slice() {
        [] => {
            return match m {
                Method::GET => Ok(ok(select(
                    render_drive(drive, &ctx.base),
                    &ctx.q().select(),
                ))),
                _ => Err(GraphError::method_not_allowed()),
            }
        }
        ["root", ..] => {
            item = Some(drive.root);
            tail = &rest[1..];
        }
        ["items", _, ..] => {
            item = Some(
                *drive
                    .by_id
                    .get(&rest[1])
                    .ok_or_else(GraphError::drive_not_found)?,
            );
            tail = &rest[2..];
        }
        ["recent"] | ["sharedwithme"] => {
            return Ok(ok(json!({ "value": [] })));
        }
        _ => {}
    }
    let Some(mut key) = item else {
        return Err(GraphError::no_route());
    };
    let mut path_rel: Option<String> = None;
    if tail.first().is_some_and(|s| s == ":") {
        path_rel = tail.get(1).cloned();
        tail = tail.get(2..).unwrap_or(&[]);
    }
    let t: Vec<String> = tail.iter().map(|s| s.to_ascii_lowercase()).collect();
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    // Path-based upload and session creation may name an item that does not exist yet.
    let creating = matches!(
        (&m, t.as_slice()),
        (&Method::PUT, ["content"]) | (&Method::POST, ["createuploadsession"])
    );
    let mut new_name: Option<String> = None;
    if let Some(rel) = &path_rel {
        match drive.by_path(key, rel) {
            Some(k) => key = k,
            None if creating => {
                let (dir, name) = match rel.rsplit_once('/') {
                    Some((d, n)) => (d.to_string(), n.to_string()),
                    None => (String::new(), rel.clone()),
                };
                key = drive
                    .by_path(key, &dir)
                    .ok_or_else(GraphError::drive_not_found)?;
                new_name = Some(name);
            }
            None => return Err(GraphError::drive_not_found()),
        }
    }
    let _ = &mut item;
    if m == Method::GET && t.as_slice() == ["content"] && crate::routes::vanishes(ctx) {
        let seq = sim.next_seq();
        let now = sim.now();
        if let Some(d) = sim.drives.get_mut(drive_id) {
            d.delete(key, now, seq);
        }
        return Err(GraphError::drive_not_found());
    }
    let drive = &sim.drives[drive_id];
    match (m, t.as_slice()) {
        (Method::GET, []) => Ok(ok(select(
            render_item(&ctx.base, drive, &drive.items[&key], true),
            &ctx.q().select(),
        ))),
        (Method::GET, ["children"]) => {
            let fields = ctx.q().select();
            let items: Vec<Value> = drive
                .items
                .values()
                .filter(|i| i.parent == Some(key))
                .map(|i| select(render_item(&ctx.base, drive, i, true), &fields))
                .collect();
            let base = format!(
                "{}/drives/{}/items/{}/children",
                ctx.root, drive.id, drive.items[&key].id
            );
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                CHILDREN_LIMITS,
                &base,
                "https://graph.microsoft.com/v1.0/$metadata#Collection(driveItem)",
            )?))
        }
        (Method::GET, [d]) if d.starts_with("delta") => {
            if key != drive.root {
                return Err(GraphError::invalid_request(
                    "Delta is only supported on the root of a drive.",
                ));
            }
            // `delta(token='…')` carries the token in the segment itself.
            let raw = &tail[0];
            let token = raw.find("token=").map(|i| {
                raw[i + 6..]
                    .trim_end_matches(')')
                    .trim_matches('\'')
                    .to_string()
            });
            delta::delta(ctx, sim, drive, token)
        }
        (Method::GET, ["content"]) => {
            let item = &drive.items[&key];
            if item.content.is_none() {
                return Err(GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "invalidRequest",
                    "The item is a folder and has no content.",
                ));
            }
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&content::download_url(&ctx.base, drive, item)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        (Method::PUT, ["content"]) => {
            let body = &ctx.req.body;
            if body.len() > SIMPLE_UPLOAD_MAX {
                return Err(GraphError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "requestTooLarge",
                    "Simple upload is limited to 4 MB; use an upload session.",
                ));
            }
            let content = Content::Bytes(Arc::new(body.to_vec()));
            let (status, v) = upload::write_file(
                ctx,
                sim,
                drive_id,
                key,
                new_name,
                content,
                ctx.q().get("@microsoft.graph.conflictBehavior"),
            )?;
            Ok(json_resp(status, v))
        }
        (Method::POST, ["createuploadsession"]) => {
            upload::create_session(ctx, sim, drive_id, key, new_name)
        }
        (Method::POST, ["children"]) => create_folder(ctx, sim, drive_id, key),
        (Method::DELETE, []) => {
            let seq = sim.next_seq();
            let now = sim.now();
            if let Some(d) = sim.drives.get_mut(drive_id) {
                if key == d.root {
                    return Err(GraphError::new(
                        StatusCode::FORBIDDEN,
                        "accessDenied",
                        "The root of a drive cannot be deleted.",
                    ));
                }
                d.delete(key, now, seq);
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::PATCH, []) => {
            let body = ctx.json_body()?;
            let seq = sim.next_seq();
            let now = sim.now();
            let d = sim
                .drives
                .get_mut(drive_id)
                .ok_or_else(GraphError::drive_not_found)?;
            if let Some(name) = body.get("name").and_then(Value::as_str) {
                if let Some(i) = d.items.get_mut(&key) {
                    i.name = name.to_string();
                }
            }
            if let Some(pid) = body.pointer("/parentReference/id").and_then(Value::as_str) {
                let p = *d.by_id.get(pid).ok_or_else(GraphError::drive_not_found)?;
                if let Some(i) = d.items.get_mut(&key) {
                    i.parent = Some(p);
                }
            }
            if let Some(i) = d.items.get_mut(&key) {
                i.version += 1;
            }
            d.bump_parents(key, now, seq);
            Ok(ok(render_item(&ctx.base, d, &d.items[&key], true)))
        }
        _ => Err(GraphError::no_route()),
    }
}

fn create_folder(ctx: &Ctx<'_>, sim: &mut Sim, drive_id: &str, parent: u64) -> Result<Response> {
    let body = ctx.json_body()?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() || name.contains(['"', '*', ':', '<', '>', '?', '/', '\\', '|']) {
        return Err(GraphError::invalid_request(
            "The name is missing or contains characters that are not allowed.",
        ));
    }
    if body.get("folder").is_none() {
        return Err(GraphError::invalid_request(
            "A folder facet is required to create a folder.",
        ));
    }
    let behaviour = body
        .get("@microsoft.graph.conflictBehavior")
        .and_then(Value::as_str)
        .unwrap_or("fail")
        .to_string();
    let seq = sim.next_seq();
    let now = sim.now();
    let id = drive_item_id(&mut sim.rng);
    let d = sim
        .drives
        .get_mut(drive_id)
        .ok_or_else(GraphError::drive_not_found)?;
    if !d.items[&parent].is_folder {
        return Err(GraphError::invalid_request("The parent is not a folder."));
    }
    let mut final_name = name.clone();
    if let Some(existing) = d.child(parent, &name) {
        match behaviour.as_str() {
            "replace" => d.delete(existing, now, seq),
            "rename" => {
                let mut n = 1;
                while d.child(parent, &final_name).is_some() {
                    final_name = format!("{name} {n}");
                    n += 1;
                }
            }
            _ => {
                return Err(GraphError::new(
                    StatusCode::CONFLICT,
                    "nameAlreadyExists",
                    "The specified item name already exists.",
                ))
            }
        }
    }
    let key = d.add(id, parent, &final_name, None, now, seq);
    Ok(json_resp(
        StatusCode::CREATED,
        render_item(&ctx.base, d, &d.items[&key], true),
    ))
}
