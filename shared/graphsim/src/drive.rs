//! OneDrive and SharePoint document libraries: drives, driveItems (by id and by path),
//! children, `root/delta` with the `deleted` facet, content download through a pre-authenticated
//! URL that supports `Range`, simple upload, upload sessions, and folder creation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::gen::iso;
use crate::model::Sim;
use crate::odata::{page, page_size, select, Limits};
use crate::server::{json as json_resp, lock, ok, Ctx, Shared};
use crate::store::Seq;
use crate::util::{decode_token, drive_item_id, encode_token, quick_xor_hash, Content};

/// Simple upload (`PUT …/content`) takes files up to 250 MB per the current docs; the
/// simulator holds the older, stricter 4 MiB line so that large files go through sessions.
pub const SIMPLE_UPLOAD_MAX: usize = 4 << 20;
/// Upload session fragments must be multiples of 320 KiB, at most 60 MiB.
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
pub const FRAGMENT_MAX: u64 = 60 << 20;
const CHILDREN_LIMITS: Limits = Limits {
    default: 200,
    max: 1000,
};
const DELTA_LIMITS: Limits = Limits {
    default: 200,
    max: 1000,
};

#[derive(Clone, Debug)]
pub struct DriveItem {
    pub key: u64,
    pub id: String,
    pub name: String,
    pub parent: Option<u64>,
    pub is_folder: bool,
    pub content: Option<Content>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub seq: Seq,
    pub version: u64,
    /// `quickXorHash` of the content, computed on first use: hashing a large generated file
    /// on every listing would make big benchmarks slow for no reason.
    pub hash: std::sync::OnceLock<String>,
}

impl DriveItem {
    pub fn hash(&self) -> Option<&str> {
        let c = self.content.as_ref()?;
        Some(self.hash.get_or_init(|| quick_xor_hash(c)))
    }
}

#[derive(Clone, Debug)]
pub struct DriveTombstone {
    pub seq: Seq,
    pub id: String,
    pub name: String,
    pub is_folder: bool,
    pub parent_id: String,
}

#[derive(Clone, Debug)]
pub struct Drive {
    pub id: String,
    pub name: String,
    /// `business` for a user's OneDrive, `documentLibrary` for a SharePoint library.
    pub drive_type: String,
    pub owner_name: String,
    pub owner_id: String,
    pub web_url: String,
    pub items: BTreeMap<u64, DriveItem>,
    pub by_id: HashMap<String, u64>,
    pub root: u64,
    pub tombstones: Vec<DriveTombstone>,
    pub next_key: u64,
}

impl Drive {
    // A drive has this many independent descriptive fields; a builder would add nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        name: &str,
        drive_type: &str,
        owner_name: &str,
        owner_id: &str,
        web_url: String,
        root_id: String,
        now: DateTime<Utc>,
        seq: Seq,
    ) -> Self {
        let mut d = Drive {
            id,
            name: name.to_string(),
            drive_type: drive_type.to_string(),
            owner_name: owner_name.to_string(),
            owner_id: owner_id.to_string(),
            web_url,
            items: BTreeMap::new(),
            by_id: HashMap::new(),
            root: 1,
            tombstones: Vec::new(),
            next_key: 2,
        };
        d.by_id.insert(root_id.clone(), 1);
        d.items.insert(
            1,
            DriveItem {
                key: 1,
                id: root_id,
                name: "root".into(),
                parent: None,
                is_folder: true,
                content: None,
                created: now,
                modified: now,
                seq,
                version: 1,
                hash: Default::default(),
            },
        );
        d
    }

    pub fn add(
        &mut self,
        id: String,
        parent: u64,
        name: &str,
        content: Option<Content>,
        now: DateTime<Utc>,
        seq: Seq,
    ) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(id.clone(), key);
        let is_folder = content.is_none();
        self.items.insert(
            key,
            DriveItem {
                key,
                id,
                name: name.to_string(),
                parent: Some(parent),
                is_folder,
                content,
                created: now,
                modified: now,
                seq,
                version: 1,
                hash: Default::default(),
            },
        );
        // A change below a folder changes the folder too (its cTag and size), so delta
        // reports the parents as well.
        self.bump_parents(parent, now, seq);
        key
    }

    pub fn bump_parents(&mut self, mut key: u64, now: DateTime<Utc>, seq: Seq) {
        loop {
            let Some(item) = self.items.get_mut(&key) else {
                return;
            };
            item.seq = seq;
            item.modified = now;
            match item.parent {
                Some(p) => key = p,
                None => return,
            }
        }
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.items
            .values()
            .find(|i| i.parent == Some(parent) && i.name.eq_ignore_ascii_case(name))
            .map(|i| i.key)
    }

    /// An item by path relative to `from` (`a/b/c.txt`).
    pub fn by_path(&self, from: u64, path: &str) -> Option<u64> {
        let mut key = from;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            key = self.child(key, part)?;
        }
        Some(key)
    }

    pub fn path_of(&self, key: u64) -> String {
        let mut parts = Vec::new();
        let mut k = self.items.get(&key).and_then(|i| i.parent);
        while let Some(p) = k {
            let item = &self.items[&p];
            if item.parent.is_some() {
                parts.push(item.name.clone());
            }
            k = item.parent;
        }
        parts.reverse();
        let mut s = "/drive/root:".to_string();
        for p in parts {
            s.push('/');
            s.push_str(&p);
        }
        s
    }

    pub fn size(&self, key: u64) -> u64 {
        let item = &self.items[&key];
        match &item.content {
            Some(c) => c.len(),
            None => self
                .items
                .values()
                .filter(|i| i.parent == Some(key))
                .map(|i| self.size(i.key))
                .sum(),
        }
    }

    /// Deletes an item and everything under it, leaving a tombstone for each.
    pub fn delete(&mut self, key: u64, now: DateTime<Utc>, seq: Seq) {
        let children: Vec<u64> = self
            .items
            .values()
            .filter(|i| i.parent == Some(key))
            .map(|i| i.key)
            .collect();
        for c in children {
            self.delete(c, now, seq);
        }
        if let Some(item) = self.items.remove(&key) {
            self.by_id.remove(&item.id);
            let parent_id = item
                .parent
                .and_then(|p| self.items.get(&p))
                .map(|p| p.id.clone())
                .unwrap_or_default();
            self.tombstones.push(DriveTombstone {
                seq,
                id: item.id,
                name: item.name,
                is_folder: item.is_folder,
                parent_id,
            });
            if let Some(p) = item.parent {
                self.bump_parents(p, now, seq);
            }
        }
    }

    pub fn set_content(&mut self, key: u64, content: Content, now: DateTime<Utc>, seq: Seq) {
        if let Some(item) = self.items.get_mut(&key) {
            item.content = Some(content);
            item.hash = Default::default();
            item.version += 1;
            item.seq = seq;
            item.modified = now;
            let parent = item.parent;
            if let Some(p) = parent {
                self.bump_parents(p, now, seq);
            }
        }
    }
}

pub fn mime_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[derive(Serialize, Deserialize)]
struct DownloadTok {
    d: String,
    i: String,
    x: i64,
}

fn download_url(base: &str, drive: &Drive, item: &DriveItem) -> String {
    let tok = DownloadTok {
        d: drive.id.clone(),
        i: item.id.clone(),
        x: Utc::now().timestamp() + 3600,
    };
    format!("{base}/_dl/{}", encode_token(&tok))
}

pub fn render_item(base: &str, drive: &Drive, item: &DriveItem, with_download: bool) -> Value {
    let parent = item.parent.and_then(|p| drive.items.get(&p));
    let mut v = json!({
        "@odata.etag": format!("\"{{{}}},{}\"", item.id, item.version),
        "id": item.id,
        "name": item.name,
        "eTag": format!("\"{{{}}},{}\"", item.id, item.version),
        "cTag": format!("\"c:{{{}}},{}\"", item.id, item.seq),
        "createdDateTime": iso(item.created),
        "lastModifiedDateTime": iso(item.modified),
        "size": drive.size(item.key),
        "webUrl": format!("{}/{}", drive.web_url, item.name),
        "createdBy": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "lastModifiedBy": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "fileSystemInfo": { "createdDateTime": iso(item.created), "lastModifiedDateTime": iso(item.modified) },
    });
    match parent {
        Some(p) => {
            v["parentReference"] = json!({ "driveType": drive.drive_type, "driveId": drive.id, "id": p.id, "path": drive.path_of(item.key) });
        }
        None => {
            v["parentReference"] = json!({ "driveType": drive.drive_type, "driveId": drive.id });
            v["root"] = json!({});
        }
    }
    match &item.content {
        None => {
            v["folder"] = json!({ "childCount": drive.items.values().filter(|i| i.parent == Some(item.key)).count() })
        }
        Some(_) => {
            v["file"] = json!({ "mimeType": mime_type(&item.name), "hashes": { "quickXorHash": item.hash() } });
            if with_download {
                v["@microsoft.graph.downloadUrl"] = json!(download_url(base, drive, item));
            }
        }
    }
    v
}

pub fn render_drive(drive: &Drive, base: &str) -> Value {
    let used = drive.size(drive.root);
    let _ = base;
    json!({
        "id": drive.id,
        "name": drive.name,
        "driveType": drive.drive_type,
        "webUrl": drive.web_url,
        "createdDateTime": "2024-03-01T09:00:00Z",
        "lastModifiedDateTime": iso(drive.items[&drive.root].modified),
        "owner": { "user": { "id": drive.owner_id, "displayName": drive.owner_name } },
        "quota": { "total": 1_099_511_627_776u64, "used": used, "remaining": 1_099_511_627_776u64 - used, "deleted": 0, "state": "normal" },
    })
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DriveDeltaTok {
    d: String,
    s: Seq,
    t: Seq,
    a: Option<(Seq, u8, u64)>,
    e: u64,
    n: usize,
}

fn gone_drive(location: &str) -> GraphError {
    GraphError::new(StatusCode::GONE, "resyncRequired", "Resync required. Replace any local items with the server's version (including deletes) if you're sure that the service was up to date with your local changes when you last sync'd. Upload any local changes that the server doesn't know about.")
        .with_header(header::LOCATION, location.to_string())
}

fn delta(ctx: &Ctx<'_>, sim: &Sim, drive: &Drive, token_arg: Option<String>) -> Result<Response> {
    let base = format!("{}/drives/{}/root/delta", ctx.root, drive.id);
    let q = ctx.q();
    let token = token_arg.or_else(|| q.get("token").map(str::to_string));
    let tok = match token {
        Some(t) if t.eq_ignore_ascii_case("latest") => {
            let tok = DriveDeltaTok {
                d: drive.id.clone(),
                s: sim.seq,
                t: sim.seq,
                a: None,
                e: sim.delta_epoch,
                n: DELTA_LIMITS.default,
            };
            let body = json!({ "value": [], "@odata.deltaLink": format!("{base}?token={}", encode_token(&tok)) });
            return Ok(ok(body));
        }
        Some(t) => {
            let mut tok: DriveDeltaTok =
                decode_token(&t).ok_or_else(|| GraphError::invalid_request("Invalid token."))?;
            if tok.d != drive.id {
                return Err(GraphError::invalid_request(
                    "The token does not belong to this drive.",
                ));
            }
            if tok.e < sim.delta_epoch {
                return Err(gone_drive(&base));
            }
            if tok.a.is_none() {
                // A delta link: a new round up to now.
                tok.t = sim.seq;
                if let Some(n) = ctx.prefer.max_page_size.or(q.top()?) {
                    tok.n = n.clamp(1, DELTA_LIMITS.max);
                }
            }
            tok
        }
        None => DriveDeltaTok {
            d: drive.id.clone(),
            s: 0,
            t: sim.seq,
            a: None,
            e: sim.delta_epoch,
            n: page_size(q, &ctx.prefer, DELTA_LIMITS)?,
        },
    };
    let exclude_parents = ctx.req.headers.contains_key("deltaexcludeparent");
    let mut rows: Vec<((Seq, u8, u64), Value)> = Vec::new();
    for item in drive.items.values() {
        if item.seq > tok.s && item.seq <= tok.t {
            if exclude_parents && tok.s > 0 && item.is_folder && item.parent.is_some() {
                continue;
            }
            rows.push((
                (item.seq, 0, item.key),
                render_item(&ctx.base, drive, item, true),
            ));
        }
    }
    if tok.s > 0 {
        for (i, t) in drive.tombstones.iter().enumerate() {
            if t.seq > tok.s && t.seq <= tok.t {
                let mut v = json!({ "id": t.id, "name": t.name, "deleted": { "state": "deleted" },
                    "parentReference": { "driveId": drive.id, "driveType": drive.drive_type, "id": t.parent_id } });
                v[if t.is_folder { "folder" } else { "file" }] = json!({});
                rows.push(((t.seq, 1, i as u64), v));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    let fields = q.select();
    let mut value = Vec::new();
    let mut last = None;
    let mut more = false;
    for (c, v) in rows {
        if tok.a.is_some_and(|a| c <= a) {
            continue;
        }
        if value.len() == tok.n {
            more = true;
            break;
        }
        last = Some(c);
        value.push(select(v, &fields));
    }
    let mut body = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(driveItem)", "value": value });
    if more {
        let next = DriveDeltaTok { a: last, ..tok };
        body["@odata.nextLink"] = json!(format!("{base}?token={}", encode_token(&next)));
    } else {
        let done = DriveDeltaTok {
            s: tok.t,
            a: None,
            ..tok
        };
        body["@odata.deltaLink"] = json!(format!("{base}?token={}", encode_token(&done)));
    }
    Ok(ok(body))
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
            delta(ctx, sim, drive, token)
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
            if let Ok(v) = HeaderValue::from_str(&download_url(&ctx.base, drive, item)) {
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
            let (status, v) = write_file(
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
            create_session(ctx, sim, drive_id, key, new_name)
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

/// Creates or replaces a file: `key` is the file itself, or its parent when `new_name` is set.
fn write_file(
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

#[derive(Clone, Debug)]
pub struct UploadSession {
    pub drive_id: String,
    pub target: u64,
    pub new_name: Option<String>,
    pub data: Vec<u8>,
    pub total: Option<u64>,
    pub expires: DateTime<Utc>,
}

fn create_session(
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

fn plain_error(status: StatusCode, code: &str, msg: &str) -> Response {
    crate::server::error_response(GraphError::new(status, code, msg))
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

/// Serves a pre-authenticated download URL (no bearer token), honouring one `Range`.
pub async fn download(
    State(shared): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(tok) = decode_token::<DownloadTok>(&token) else {
        return plain_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The download URL is not valid.",
        );
    };
    if tok.x < Utc::now().timestamp() {
        return plain_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "The download URL has expired.",
        );
    }
    let (content, name) = {
        let sim = shared.sim();
        let Some(item) = sim
            .drives
            .get(&tok.d)
            .and_then(|d| d.by_id.get(&tok.i).map(|k| &d.items[k]))
        else {
            return plain_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "The resource could not be found.",
            );
        };
        let Some(c) = item.content.clone() else {
            return plain_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "The item has no content.",
            );
        };
        (c, item.name.clone())
    };
    let len = content.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => match parse_range(&r, len) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
            None => {
                let mut resp = plain_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "invalidRange",
                    "The requested range is not satisfiable.",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    // Generated content is produced outside the lock; large ranges cost time, not memory held.
    let bytes = tokio::task::spawn_blocking(move || content.range(start, end))
        .await
        .unwrap_or_default();
    {
        let mut stats = lock(&shared.stats);
        stats.downloads += 1;
        stats.downloaded_bytes += bytes.len() as u64;
    }
    let mut resp = (status, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mime_type(&name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a length; `None` when unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

pub fn list_drives(ctx: &Ctx<'_>, sim: &Sim, ids: &[String], link_base: &str) -> Result<Response> {
    let fields = ctx.q().select();
    let items: Vec<Value> = ids
        .iter()
        .filter_map(|id| sim.drives.get(id))
        .map(|d| select(render_drive(d, &ctx.base), &fields))
        .collect();
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        Limits {
            default: 200,
            max: 1000,
        },
        link_base,
        "https://graph.microsoft.com/v1.0/$metadata#drives",
    )?))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
