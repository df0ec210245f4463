//! The mail folder tree: listing (with hidden folders on request), creating, renaming and
//! deleting folders, and the folder JSON with the counts Outlook keeps for each.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{folder_key, Message, FOLDER_LIMITS};
use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{page, select};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::{Entry, Folder, Store};

pub(super) fn render_folder(store: &Store<Message>, f: &Folder) -> Value {
    let items: Vec<&Entry<Message>> = store.in_folder(f.search.unwrap_or(f.key)).collect();
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
    let mut v = json!({
        "id": f.id,
        "displayName": f.name,
        "parentFolderId": f.parent.and_then(|p| store.folders.get(&p)).map(|p| p.id.clone()).unwrap_or_else(|| root_id(store)),
        "childFolderCount": store.children(Some(f.key)).count(),
        "unreadItemCount": items.iter().filter(|e| !e.data.is_read).count(),
        "totalItemCount": items.len(),
        "sizeInBytes": size,
        "isHidden": f.hidden,
    });
    if let Some(source) = f.search.and_then(|k| store.folders.get(&k)) {
        // Graph lists search folders among the others, told apart by their type only.
        v["@odata.type"] = json!("#microsoft.graph.mailSearchFolder");
        v["isSupported"] = json!(true);
        v["includeNestedFolders"] = json!(false);
        v["sourceFolderIds"] = json!([source.id]);
        v["filterQuery"] = json!("isRead eq false");
    }
    v
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

pub(super) fn list_folders(
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

pub(super) fn create_folder(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    parent: Option<u64>,
) -> Result<Response> {
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

pub(super) fn rename_folder(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, id: &str) -> Result<Response> {
    let f = folder_key(&sim.mailboxes[u].mail, id)?;
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

/// Distinguished folders (Inbox, Drafts, …) stay; any other folder goes with its contents.
pub(super) fn delete_folder(sim: &mut Sim, u: usize, id: &str) -> Result<Response> {
    let f = folder_key(&sim.mailboxes[u].mail, id)?;
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
