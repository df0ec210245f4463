//! What a To Do backup reads: the task lists (which do not nest) with each list's delta
//! request, and a task's metadata from its delta row.

use crate::client::Fail;
use crate::names::{self, seg};
use crate::outlook::{doc_info, folder_meta, list_all, s, Coll};
use crate::run::Run;
use engine::ItemInfo;
use serde_json::Value;

/// Every task list, with the delta request that starts its round.
pub(crate) async fn lists(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let lists = list_all(run, &super::root(u)).await?;
    Ok(lists
        .iter()
        .filter(|l| !s(l, "id").is_empty())
        .map(|l| {
            let id = s(l, "id");
            let name = s(l, "displayName");
            Coll {
                key: format!("tasks:{id}"),
                start: format!("/users/{u}/todo/lists/{id}/tasks/delta"),
                meta: folder_meta(id, name, false),
                path: names::path(&[b"Tasks".to_vec(), seg(name)]),
            }
        })
        .collect())
}

/// Metadata of a task from its delta row.
pub(crate) fn info(v: &Value) -> ItemInfo {
    doc_info(
        v,
        vec![
            ("subject".to_string(), s(v, "title").to_string()),
            ("status".to_string(), s(v, "status").to_string()),
        ],
    )
}
