//! Microsoft To Do: task lists and tasks, per-list task delta, and creation for restores.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::contacts::{create_item, item_route, list_items, render_item, Kind};
use crate::error::{GraphError, Result};
use crate::model::{Doc, Sim};
use crate::odata::{page, select, Limits};
use crate::outlook::{delta_page, delta_state, folder_delta_page};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::{Folder, Store};

const LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};

pub const TASKS: Kind = Kind {
    delta_kind: "todoTask",
    odata_type: "#microsoft.graph.todoTask",
    required: "title",
    parent_field: None,
    store: |m| &m.todo,
    store_mut: |m| &mut m.todo,
};

fn render_list(f: &Folder) -> Value {
    json!({
        "@odata.etag": format!("W/\"{}\"", f.seq),
        "id": f.id,
        "displayName": f.name,
        "isOwner": true,
        "isShared": false,
        "wellknownListName": if f.well_known.as_deref() == Some("defaultList") { "defaultList" } else { "none" },
    })
}

fn list_key(store: &Store<Doc>, id: &str) -> Result<u64> {
    store
        .folder_key(id)
        .ok_or_else(GraphError::outlook_not_found)
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
    let k = &TASKS;
    let store = &sim.mailboxes[u].todo;
    match (ctx.req.method.clone(), l.as_slice()) {
        (Method::GET, ["todo", "lists"]) => {
            let fields = ctx.q().select();
            let items: Vec<Value> = store
                .children(None)
                .map(|f| select(render_list(f), &fields))
                .collect();
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &format!("{}/users/{}/todo/lists", ctx.root, uid),
                "https://graph.microsoft.com/v1.0/$metadata#lists",
            )?))
        }
        (Method::GET, ["todo", "lists", "delta"]) => {
            let tok = delta_state(ctx, sim, "todoTaskList", u, 0, LIMITS)?;
            let base = format!("{}/users/{}/todo/lists/delta", ctx.root, uid);
            folder_delta_page(
                tok,
                store,
                &base,
                "#microsoft.graph.todoTaskList",
                render_list,
            )
        }
        (Method::POST, ["todo", "lists"]) => {
            let body = ctx.json_body()?;
            let name = body
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string();
            if name.is_empty() {
                return Err(GraphError::invalid_request(
                    "The property 'displayName' is required.",
                ));
            }
            let seq = sim.next_seq();
            let store = &mut sim.mailboxes[u].todo;
            let key = store.add_folder(None, &name, None, false, seq);
            Ok(json_resp(
                StatusCode::CREATED,
                render_list(&store.folders[&key]),
            ))
        }
        (Method::GET, ["todo", "lists", _]) => {
            let f = list_key(store, &rest[2])?;
            Ok(ok(render_list(&store.folders[&f])))
        }
        (Method::GET, ["todo", "lists", _, "tasks"]) => {
            let f = list_key(store, &rest[2])?;
            list_items(
                ctx,
                k,
                store,
                f,
                &format!("{}/users/{}/todo/lists/{}/tasks", ctx.root, uid, rest[2]),
                LIMITS,
            )
        }
        (Method::GET, ["todo", "lists", _, "tasks", "delta"]) => {
            let f = list_key(store, &rest[2])?;
            let tok = delta_state(ctx, sim, k.delta_kind, u, f, LIMITS)?;
            let imm = ctx.immutable();
            let base = format!(
                "{}/users/{}/todo/lists/{}/tasks/delta",
                ctx.root, uid, rest[2]
            );
            delta_page(
                ctx,
                tok,
                store,
                &base,
                k.odata_type,
                "https://graph.microsoft.com/v1.0/$metadata#Collection(todoTask)",
                |e| render_item(k, store, e, imm),
            )
        }
        (Method::POST, ["todo", "lists", _, "tasks"]) => {
            let f = list_key(store, &rest[2])?;
            create_item(ctx, k, sim, u, f, |d| {
                d.entry("status").or_insert(json!("notStarted"));
                d.entry("importance").or_insert(json!("normal"));
            })
        }
        (_, ["todo", "lists", _, "tasks", _]) => {
            list_key(store, &rest[2])?;
            item_route(ctx, k, sim, u, &rest[4])
        }
        _ => Err(GraphError::no_route()),
    }
}
