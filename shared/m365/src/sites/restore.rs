//! SharePoint list items restored from their stored JSON into the site's list of the
//! same name, without the fields SharePoint computes.

use crate::client::{Body, Fail};
use crate::names::unseg;
use crate::restore::{engine_fail, s, Ctx, R};
use domain::ItemPath;
use engine::{Entry, EntryKind};
use reqwest::Method;
use serde_json::{json, Value};

/// List items are added to the list of the same name (lists cannot be nested in a
/// restore folder); the label is not used.
pub(crate) async fn list_item(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        return Ok(());
    }
    let Some(site) = cx.site.clone() else {
        return Err(Fail::Protocol(
            "list items can only be restored to a site".into(),
        ));
    };
    let Some(list) = path.segments().get(1).map(|l| unseg(l)) else {
        return Err(Fail::Protocol("an item outside any list".into()));
    };
    let key = crate::names::path(&path.segments()[..2]);
    let lid = match cx.folders.get(&key) {
        Some(id) => id.clone(),
        None => {
            let lists =
                cx.g.get_json(&format!("/sites/{site}/lists?$top=200"), None)
                    .await?;
            let id = lists["value"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| s(l, "displayName") == list)
                .map(|l| s(l, "id").to_string())
                .ok_or_else(|| Fail::Protocol(format!("the site has no list named {list}")))?;
            cx.folders.insert(key, id.clone());
            cx.target(format!("Lists/{list}"));
            id
        }
    };
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let mut fields: Value = serde_json::from_slice(&raw)
        .map_err(|e| Fail::Protocol(format!("the stored list item is not JSON: {e}")))?;
    if let Value::Object(m) = &mut fields {
        m.retain(|k, _| {
            !k.starts_with('@')
                && !k.starts_with('_')
                && !matches!(
                    k.as_str(),
                    "id" | "ID"
                        | "Modified"
                        | "Created"
                        | "AuthorLookupId"
                        | "EditorLookupId"
                        | "ContentType"
                        | "Attachments"
                        | "Edit"
                        | "LinkTitle"
                        | "LinkTitleNoMenu"
                        | "ItemChildCount"
                        | "FolderChildCount"
                        | "DocIcon"
                        | "AppAuthorLookupId"
                        | "AppEditorLookupId"
                )
        });
    }
    cx.g.json(
        Method::POST,
        &format!("/sites/{site}/lists/{lid}/items"),
        Some(Body::Json(json!({ "fields": fields }))),
        &[],
        None,
    )
    .await?;
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}
