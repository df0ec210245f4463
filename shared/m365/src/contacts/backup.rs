//! What a contacts backup reads: the folders (the default one, which Graph does not list,
//! and those below it, level by level) with each folder's delta request, and a contact's
//! metadata from its delta row.

use crate::client::Fail;
use crate::names::{self, seg};
use crate::outlook::{doc_info, folder_meta, list_all, list_side_by_side, s, Coll};
use crate::run::Run;
use domain::ItemPath;
use engine::ItemInfo;
use serde_json::Value;

/// Every contact folder, with the delta request that starts its round.
pub(crate) async fn folders(run: &Run<'_>) -> Result<Vec<Coll>, Fail> {
    let u = &run.key;
    let top = list_all(run, &super::root(u)).await?;
    // Listed folders are children of the default Contacts folder, whose id they name.
    let default = top
        .iter()
        .map(|f| s(f, "parentFolderId"))
        .find(|p| !p.is_empty())
        .unwrap_or("contacts")
        .to_string();
    let root = names::path(&[b"Contacts"]);
    let mut out = vec![Coll {
        key: "contacts:default".into(),
        start: format!("/users/{u}/contactFolders/{default}/contacts/delta"),
        meta: folder_meta(&default, "Contacts", false),
        path: root.clone(),
    }];
    // Level by level, the children of a level's folders listed side by side.
    let mut level: Vec<(Value, ItemPath)> = top.into_iter().map(|f| (f, root.clone())).collect();
    while !level.is_empty() {
        let mut here = Vec::new();
        for (f, parent) in level {
            let id = s(&f, "id").to_string();
            let name = s(&f, "displayName").to_string();
            if id.is_empty() {
                continue;
            }
            let path = parent.join(&seg(&name)).expect("valid segment");
            here.push((id, name, path));
        }
        let urls: Vec<String> = here
            .iter()
            .map(|(id, _, _)| format!("/users/{u}/contactFolders/{id}/childFolders?$top=250"))
            .collect();
        let listed = list_side_by_side(run, urls).await;
        let mut next = Vec::new();
        for ((id, name, path), children) in here.into_iter().zip(listed) {
            next.extend(children?.into_iter().map(|c| (c, path.clone())));
            out.push(Coll {
                key: format!("contacts:{id}"),
                start: format!("/users/{u}/contactFolders/{id}/contacts/delta"),
                meta: folder_meta(&id, &name, false),
                path,
            });
        }
        level = next;
    }
    Ok(out)
}

/// Metadata of a contact from its delta row.
pub(crate) fn info(v: &Value) -> ItemInfo {
    doc_info(
        v,
        vec![
            ("name".to_string(), s(v, "displayName").to_string()),
            (
                "email".to_string(),
                v.pointer("/emailAddresses/0/address")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
        ],
    )
}
