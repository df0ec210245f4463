//! What a mail backup reads: the folder tree (listed level by level, the folders of a
//! level side by side) with each folder's delta request, and a message's metadata from its
//! delta row (the content, its MIME, is fetched by the Outlook pipeline).

use crate::client::Fail;
use crate::names::{self, fingerprint, seg, time_ns};
use crate::outlook::{change_key, folder_meta, list_side_by_side, s, Coll};
use crate::run::Run;
use domain::ItemPath;
use engine::ItemInfo;
use serde_json::Value;

/// The message properties a backup keeps as metadata (the content is the MIME);
/// `hasAttachments` tells small messages, fetched in batches, from those that may be large,
/// fetched on their own.
const MESSAGE_SELECT: &str = "subject,from,receivedDateTime,isRead,importance,categories,flag,isDraft,changeKey,hasAttachments";

pub(crate) async fn folders(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let mut out = Vec::new();
    // Level by level, the children of a level's folders listed side by side.
    let mut level: Vec<(String, ItemPath)> = vec![(super::root(u), names::path(&[b"Mail"]))];
    while !level.is_empty() {
        let urls: Vec<String> = level.iter().map(|(url, _)| url.clone()).collect();
        let listed = list_side_by_side(run, urls).await;
        let mut next = Vec::new();
        for ((_, parent), folders) in level.iter().zip(listed) {
            for f in folders? {
                let id = s(&f, "id");
                let name = s(&f, "displayName");
                if id.is_empty() || is_search_folder(&f) {
                    continue;
                }
                let path = parent.join(&seg(name)).expect("valid segment");
                if f.get("childFolderCount").and_then(Value::as_u64) != Some(0) {
                    next.push((
                        format!(
                            "/users/{u}/mailFolders/{id}/childFolders?includeHiddenFolders=true&$top=250"
                        ),
                        path.clone(),
                    ));
                }
                out.push(Coll {
                    key: format!("mail:{id}"),
                    start: format!(
                        "/users/{u}/mailFolders/{id}/messages/delta?$select={MESSAGE_SELECT}"
                    ),
                    meta: folder_meta(
                        id,
                        name,
                        f.get("isHidden").and_then(Value::as_bool) == Some(true),
                    ),
                    path,
                });
            }
        }
        level = next;
    }
    Ok(out)
}

/// A search folder (`mailSearchFolder`) is a saved search: it shows messages that live in
/// other folders, which are backed up there. Backed up as a folder, it would hold a second
/// copy of each, and a message's one place in the tree would move between the two.
fn is_search_folder(f: &Value) -> bool {
    s(f, "@odata.type").eq_ignore_ascii_case("#microsoft.graph.mailSearchFolder")
}

/// Metadata of a message from its delta row.
pub(crate) fn message_info(m: &Value) -> ItemInfo {
    let from = m.pointer("/from/emailAddress");
    let from = match from {
        Some(a) if !s(a, "name").is_empty() => format!("{} <{}>", s(a, "name"), s(a, "address")),
        Some(a) => s(a, "address").to_string(),
        None => String::new(),
    };
    let categories: Vec<&str> = m
        .get("categories")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut meta = vec![
        ("from".to_string(), from),
        ("subject".to_string(), s(m, "subject").to_string()),
        ("received".to_string(), s(m, "receivedDateTime").to_string()),
        (
            "read".to_string(),
            (m.get("isRead").and_then(Value::as_bool) == Some(true)).to_string(),
        ),
        ("importance".to_string(), s(m, "importance").to_string()),
        ("categories".to_string(), categories.join(", ")),
    ];
    let flag = m
        .pointer("/flag/flagStatus")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !flag.is_empty() && flag != "notFlagged" {
        meta.push(("flag".into(), flag.into()));
    }
    if m.get("isDraft").and_then(Value::as_bool) == Some(true) {
        meta.push(("draft".into(), "true".into()));
    }
    ItemInfo {
        mtime_ns: time_ns(s(m, "receivedDateTime")),
        fingerprint: fingerprint(change_key(m)),
        meta,
    }
}
