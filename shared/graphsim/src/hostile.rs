//! What real tenants serve and a lenient simulator would not: items and sites refused
//! with 403 (a file flagged as malware, a message or a site the app may not read), Office
//! files served larger than listed, search folders that show other folders' messages, and
//! folders deleted between the folder listing and their delta. Each is switched on per
//! item through [`crate::Faults`] or the control API, so a test says exactly what fails.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::GraphError;
use crate::server::{lock, ok, Shared};
use crate::util::splitmix;

/// The message Graph sends with an error code, for the codes the simulator injects;
/// `default` for the others.
pub fn message_of(code: &str, default: &str) -> String {
    match code {
        "malwareDetected" => "Malware detected in the file; it cannot be downloaded.",
        "accessDenied" => "Access denied. You do not have permission to perform this action or access this resource.",
        "ErrorAccessDenied" => "Access is denied. Check credentials and try again.",
        "ErrorSyncFolderNotFound" => "The sync folder could not be found in the store.",
        _ => default,
    }
    .to_string()
}

/// A 403 with Graph's body for `code`.
pub fn forbid(code: &str) -> GraphError {
    GraphError::new(
        StatusCode::FORBIDDEN,
        code,
        message_of(code, "Access denied."),
    )
}

/// The 403 for a request that touches a forbidden item or site, if it does: any path
/// segment that is the Graph id of one (a message's `$value`, a file's `content`, every
/// request below a site).
pub fn forbidden(shared: &Shared, segs: &[String]) -> Option<GraphError> {
    let faults = lock(&shared.faults);
    if faults.forbidden.is_empty() {
        return None;
    }
    segs.iter()
        .find_map(|s| faults.forbidden.get(s))
        .map(|code| forbid(code))
}

/// Message delta on a folder that no longer exists (deleted after it was listed).
pub fn sync_folder_not_found() -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "ErrorSyncFolderNotFound",
        message_of("ErrorSyncFolderNotFound", ""),
    )
}

/// The 403 for a download of drive item `id`, if it is forbidden.
pub fn forbidden_item(shared: &Shared, id: &str) -> Option<GraphError> {
    lock(&shared.faults)
        .forbidden
        .get(id)
        .map(|code| forbid(code))
}

/// The bytes SharePoint adds to a file it serves enriched: `extra` bytes that depend only
/// on the item's id, so a test can tell what was served from what was listed.
pub fn enrichment(id: &str, extra: u64) -> Vec<u8> {
    let seed = id.bytes().fold(0xe5_u64, |h, b| splitmix(h ^ u64::from(b)));
    (0..extra)
        .map(|i| (splitmix(seed ^ (i / 8)) >> ((i % 8) * 8)) as u8)
        .collect()
}

/// How many bytes more than listed the drive item `id` is served with.
pub fn extra_bytes(shared: &Shared, id: &str) -> u64 {
    lock(&shared.faults).enriched.get(id).copied().unwrap_or(0)
}

/// Whether this download of drive item `id` is to break off half-way (counted down).
pub fn cut_download(shared: &Shared, id: &str) -> bool {
    count_down(&mut lock(&shared.faults).cut_downloads, id)
}

/// Whether this download of drive item `id` is to stall half-way (counted down).
pub fn stall_download(shared: &Shared, id: &str) -> bool {
    count_down(&mut lock(&shared.faults).stall_downloads, id)
}

fn count_down(counts: &mut std::collections::BTreeMap<String, u32>, id: &str) -> bool {
    match counts.get_mut(id) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Whether mail folder `id` is to be deleted now, as its delta is first asked for (once).
pub fn deleted_before_delta(shared: &Shared, id: &str) -> bool {
    let mut faults = lock(&shared.faults);
    let before = faults.delete_before_delta.len();
    faults.delete_before_delta.retain(|f| f != id);
    faults.delete_before_delta.len() != before
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": msg }))).into_response()
}

/// `POST /_sim/search-folder {"user", "name", "source", "parent"?}`: a search folder
/// named `name` under `parent` (a folder id or well-known name; the inbox when absent)
/// that shows the messages of folder `source`, as Outlook's search folders do. Answers
/// the folder's id.
pub async fn search_folder(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("expected a JSON object with user, name and source");
    };
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (user, name, source) = (field("user"), field("name"), field("source"));
    let parent = req
        .get("parent")
        .and_then(Value::as_str)
        .unwrap_or("inbox")
        .to_string();
    if name.is_empty() {
        return bad("name must not be empty");
    }
    let mut sim = shared.sim();
    let Some(u) = sim.user(&user) else {
        return bad("no such user");
    };
    let seq = sim.next_seq();
    let store = &mut sim.mailboxes[u].mail;
    let (Some(parent), Some(source)) = (store.folder_key(&parent), store.folder_key(&source))
    else {
        return bad("no such parent or source folder");
    };
    let key = store.add_folder(Some(parent), &name, None, false, seq);
    if let Some(f) = store.folders.get_mut(&key) {
        f.search = Some(source);
    }
    ok(json!({ "id": store.folders[&key].id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrichment_depends_on_the_item_only() {
        assert_eq!(enrichment("a", 1234), enrichment("a", 1234));
        assert_eq!(enrichment("a", 1234).len(), 1234);
        assert_ne!(enrichment("a", 64), enrichment("b", 64));
        assert_eq!(&enrichment("a", 100)[..10], &enrichment("a", 10)[..]);
    }
}
