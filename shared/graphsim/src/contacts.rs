//! Personal contacts: `contactFolders` (children of the default Contacts folder, nested via
//! `childFolders`), contacts, per-folder contact delta, and creation for restores.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::model::{Doc, Mailbox, Sim};
use crate::odata::{page, select, Limits};
use crate::outlook::{delta_page, delta_state, folder_delta_page, render_doc};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::{Folder, Store};

const LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};

/// What differs between the Outlook collections that store JSON documents.
pub struct Kind {
    pub delta_kind: &'static str,
    pub odata_type: &'static str,
    pub required: &'static str,
    pub parent_field: Option<&'static str>,
    pub store: fn(&Mailbox) -> &Store<Doc>,
    pub store_mut: fn(&mut Mailbox) -> &mut Store<Doc>,
}

pub const CONTACTS: Kind = Kind {
    delta_kind: "contact",
    odata_type: "#microsoft.graph.contact",
    required: "",
    parent_field: Some("parentFolderId"),
    store: |m| &m.contacts,
    store_mut: |m| &mut m.contacts,
};

pub fn render_item(
    kind: &Kind,
    store: &Store<Doc>,
    e: &crate::store::Entry<Doc>,
    imm: bool,
) -> Value {
    let mut v = render_doc(e, imm);
    if let Some(field) = kind.parent_field {
        v[field] = json!(store
            .folders
            .get(&e.folder)
            .map(|f| f.id.clone())
            .unwrap_or_default());
    }
    v
}

fn render_folder(store: &Store<Doc>, f: &Folder) -> Value {
    json!({
        "id": f.id,
        "displayName": f.name,
        "parentFolderId": f.parent.and_then(|p| store.folders.get(&p)).map(|p| p.id.clone()).unwrap_or_default(),
    })
}

pub fn list_items(
    ctx: &Ctx<'_>,
    kind: &Kind,
    store: &Store<Doc>,
    folder: u64,
    base: &str,
    limits: Limits,
) -> Result<Response> {
    let imm = ctx.immutable();
    let fields = ctx.q().select();
    let items: Vec<Value> = store
        .in_folder(folder)
        .map(|e| select(render_item(kind, store, e, imm), &fields))
        .collect();
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        limits,
        base,
        "https://graph.microsoft.com/v1.0/$metadata#Collection",
    )?))
}

pub fn create_item(
    ctx: &Ctx<'_>,
    kind: &Kind,
    sim: &mut Sim,
    u: usize,
    folder: u64,
    prepare: impl FnOnce(&mut Doc),
) -> Result<Response> {
    let body = ctx.json_body()?;
    let Value::Object(mut doc) = body else {
        return Err(GraphError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    if !kind.required.is_empty()
        && doc
            .get(kind.required)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
    {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            format!("The property '{}' is required.", kind.required),
        ));
    }
    for k in [
        "id",
        "createdDateTime",
        "lastModifiedDateTime",
        "changeKey",
        "@odata.etag",
        "@odata.context",
    ] {
        doc.remove(k);
    }
    doc.retain(|k, _| !k.starts_with('_'));
    prepare(&mut doc);
    let seq = sim.next_seq();
    let now = sim.now();
    let store = (kind.store_mut)(&mut sim.mailboxes[u]);
    let key = store.insert(folder, doc, now, seq);
    Ok(json_resp(
        StatusCode::CREATED,
        render_item(kind, store, &store.items[&key], ctx.immutable()),
    ))
}

/// GET, PATCH and DELETE of one item.
pub fn item_route(
    ctx: &Ctx<'_>,
    kind: &Kind,
    sim: &mut Sim,
    u: usize,
    id: &str,
) -> Result<Response> {
    let imm = ctx.immutable();
    let key = (kind.store)(&sim.mailboxes[u])
        .resolve(id)
        .ok_or_else(GraphError::outlook_not_found)?;
    match ctx.req.method {
        Method::GET => {
            if crate::routes::vanishes(ctx) {
                let seq = sim.next_seq();
                (kind.store_mut)(&mut sim.mailboxes[u]).delete(key, seq);
                return Err(GraphError::outlook_not_found());
            }
            let store = (kind.store)(&sim.mailboxes[u]);
            Ok(ok(select(
                render_item(kind, store, &store.items[&key], imm),
                &ctx.q().select(),
            )))
        }
        Method::PATCH => {
            let Value::Object(patch) = ctx.json_body()? else {
                return Err(GraphError::bad_request(
                    "The request body must be a JSON object.",
                ));
            };
            let seq = sim.next_seq();
            let now = sim.now();
            let store = (kind.store_mut)(&mut sim.mailboxes[u]);
            let e = store
                .touch(key, now, seq)
                .ok_or_else(GraphError::outlook_not_found)?;
            for (k, v) in patch {
                if !k.starts_with('@') && !k.starts_with('_') && k != "id" {
                    e.data.insert(k, v);
                }
            }
            Ok(ok(render_item(kind, store, &store.items[&key], imm)))
        }
        Method::DELETE => {
            let seq = sim.next_seq();
            (kind.store_mut)(&mut sim.mailboxes[u]).delete(key, seq);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(GraphError::method_not_allowed()),
    }
}

pub fn create_folder(
    ctx: &Ctx<'_>,
    kind: &Kind,
    sim: &mut Sim,
    u: usize,
    parent: Option<u64>,
    name_field: &str,
) -> Result<Response> {
    let body = ctx.json_body()?;
    let name = body
        .get(name_field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() {
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            format!("The property '{name_field}' is required."),
        ));
    }
    let seq = sim.next_seq();
    let store = (kind.store_mut)(&mut sim.mailboxes[u]);
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
    let key = store.add_folder(parent, &name, None, false, seq);
    Ok(json_resp(
        StatusCode::CREATED,
        render_folder(store, &store.folders[&key]),
    ))
}

pub fn route(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    uid: &str,
    rest: &[String],
) -> Result<Response> {
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let k = &CONTACTS;
    let store = &sim.mailboxes[u].contacts;
    let default = store
        .folder_key("contacts")
        .ok_or_else(GraphError::outlook_not_found)?;
    let folder = |id: &str| {
        store
            .folder_key(id)
            .ok_or_else(GraphError::outlook_not_found)
    };
    let m = ctx.req.method.clone();
    match (m, l.as_slice()) {
        (Method::GET, ["contactfolders"])
        | (Method::GET, ["contactfolders", _, "childfolders"]) => {
            let parent = if l.len() == 1 {
                default
            } else {
                folder(&rest[1])?
            };
            let fields = ctx.q().select();
            let items: Vec<Value> = store
                .children(Some(parent))
                .map(|f| select(render_folder(store, f), &fields))
                .collect();
            let base = format!("{}/users/{}/{}", ctx.root, uid, rest.join("/"));
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &base,
                "https://graph.microsoft.com/v1.0/$metadata#contactFolders",
            )?))
        }
        (Method::GET, ["contactfolders", "delta"]) => {
            let tok = delta_state(ctx, sim, "contactFolder", u, 0, LIMITS)?;
            let base = format!("{}/users/{}/contactFolders/delta", ctx.root, uid);
            folder_delta_page(tok, store, &base, "#microsoft.graph.contactFolder", |f| {
                render_folder(store, f)
            })
        }
        (Method::POST, ["contactfolders"]) => {
            create_folder(ctx, k, sim, u, Some(default), "displayName")
        }
        (Method::POST, ["contactfolders", _, "childfolders"]) => {
            let f = folder(&rest[1])?;
            create_folder(ctx, k, sim, u, Some(f), "displayName")
        }
        (Method::GET, ["contactfolders", _]) => {
            let f = folder(&rest[1])?;
            Ok(ok(render_folder(store, &store.folders[&f])))
        }
        (Method::GET, ["contacts"]) => list_items(
            ctx,
            k,
            store,
            default,
            &format!("{}/users/{}/contacts", ctx.root, uid),
            LIMITS,
        ),
        (Method::GET, ["contactfolders", _, "contacts"]) => {
            let f = folder(&rest[1])?;
            list_items(
                ctx,
                k,
                store,
                f,
                &format!(
                    "{}/users/{}/contactFolders/{}/contacts",
                    ctx.root, uid, rest[1]
                ),
                LIMITS,
            )
        }
        (Method::GET, ["contactfolders", _, "contacts", "delta"]) => {
            let f = folder(&rest[1])?;
            let tok = delta_state(ctx, sim, k.delta_kind, u, f, LIMITS)?;
            let imm = ctx.immutable();
            let base = format!(
                "{}/users/{}/contactFolders/{}/contacts/delta",
                ctx.root, uid, rest[1]
            );
            delta_page(
                ctx,
                tok,
                store,
                &base,
                k.odata_type,
                "https://graph.microsoft.com/v1.0/$metadata#Collection(contact)",
                |e| render_item(k, store, e, imm),
            )
        }
        (Method::POST, ["contacts"]) => create_item(ctx, k, sim, u, default, |_| {}),
        (Method::POST, ["contactfolders", _, "contacts"]) => {
            let f = folder(&rest[1])?;
            create_item(ctx, k, sim, u, f, |_| {})
        }
        (_, ["contacts", _]) => item_route(ctx, k, sim, u, &rest[1]),
        (_, ["contactfolders", _, "contacts", _]) => item_route(ctx, k, sim, u, &rest[3]),
        _ => Err(GraphError::no_route()),
    }
}
