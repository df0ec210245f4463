//! What Outlook resources (messages, contacts, events, To Do tasks) share: per-folder delta
//! rounds with `@odata.nextLink` / `@odata.deltaLink` and `@removed` rows, and the 410 Gone
//! answer for a delta token the service no longer knows.

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{link, page_size, select, Limits, Query};
use crate::server::{ok, Ctx};
use crate::store::{Cursor, DeltaRow, Entry, Folder, FolderRow, Store};
use crate::util::{decode_token, encode_token};

/// The state behind a skip or delta token: which folder, which change window, where the
/// round stands, and the options of the initial request (Graph encodes them in the token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeltaTok {
    pub k: String,
    pub u: usize,
    pub f: u64,
    pub s: u64,
    pub t: u64,
    pub a: Option<Cursor>,
    pub e: u64,
    pub n: usize,
    pub sel: Option<String>,
    #[serde(default)]
    pub extra: Vec<(String, String)>,
}

pub fn gone_outlook() -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state generation is not found. Please do a full sync.",
    )
}

/// Reads the round state of a delta request: a continuation (`$skiptoken`), the start of a
/// new round (`$deltatoken`), or an initial round.
pub fn delta_state(
    ctx: &Ctx<'_>,
    sim: &Sim,
    kind: &str,
    user: usize,
    folder: u64,
    limits: Limits,
) -> Result<DeltaTok> {
    let q = ctx.q();
    let parse = |t: &str| -> Result<DeltaTok> {
        let tok: DeltaTok = decode_token(t)
            .ok_or_else(|| GraphError::bad_request("The delta token is not valid."))?;
        if tok.k != kind || tok.u != user || tok.f != folder {
            return Err(GraphError::bad_request(
                "The delta token does not belong to this collection.",
            ));
        }
        if tok.e < sim.delta_epoch {
            return Err(gone_outlook());
        }
        Ok(tok)
    };
    if let Some(t) = q.get("$skiptoken") {
        return parse(t);
    }
    if let Some(t) = q.get("$deltatoken") {
        let mut tok = parse(t)?;
        tok.t = sim.seq;
        tok.a = None;
        if let Some(n) = ctx.prefer.max_page_size.or(q.top()?) {
            tok.n = n.clamp(1, limits.max);
        }
        return Ok(tok);
    }
    let extra = q
        .pairs
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .cloned()
        .collect();
    Ok(DeltaTok {
        k: kind.to_string(),
        u: user,
        f: folder,
        s: 0,
        t: sim.seq,
        a: None,
        e: sim.delta_epoch,
        n: page_size(q, &ctx.prefer, limits)?,
        sel: q.get("$select").map(str::to_string),
        extra,
    })
}

/// One page of a delta round over `folder` of `store`.
#[allow(clippy::too_many_arguments)]
pub fn delta_page<T>(
    ctx: &Ctx<'_>,
    tok: DeltaTok,
    store: &Store<T>,
    link_base: &str,
    odata_type: &str,
    context: &str,
    render: impl Fn(&Entry<T>) -> Value,
) -> Result<Response> {
    let only = tok
        .extra
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("changeType"))
        .map(|(_, v)| v.to_ascii_lowercase());
    let (rows, cursor) = store.delta(tok.f, tok.s, tok.t, tok.a, tok.n, only.as_deref());
    let fields: Option<Vec<String>> = tok
        .sel
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let imm = ctx.immutable();
    let value: Vec<Value> = rows
        .into_iter()
        .map(|row| match row {
            DeltaRow::Changed(e) => {
                let mut v = select(render(e), &fields);
                v["@odata.type"] = json!(odata_type);
                v
            }
            DeltaRow::Removed(t) => json!({
                "@odata.type": odata_type,
                "id": if imm { &t.imm_id } else { &t.rest_id },
                "@removed": { "reason": "deleted" },
            }),
        })
        .collect();
    let mut body = json!({ "@odata.context": context, "value": value });
    let extra = Query {
        pairs: tok.extra.clone(),
    };
    match cursor {
        Some(c) => {
            let next = DeltaTok { a: Some(c), ..tok };
            body["@odata.nextLink"] = json!(link(
                link_base,
                &extra,
                &[("$skiptoken", &encode_token(&next))],
                &[]
            ));
        }
        None => {
            let done = DeltaTok {
                s: tok.t,
                a: None,
                ..tok
            };
            body["@odata.deltaLink"] = json!(link(
                link_base,
                &extra,
                &[("$deltatoken", &encode_token(&done))],
                &[]
            ));
        }
    }
    Ok(ok(body))
}

/// The common properties of an Outlook item rendered from a stored JSON document.
pub fn render_doc(e: &Entry<crate::model::Doc>, imm: bool) -> Value {
    let mut v = Value::Object(e.data.clone());
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with('_'));
    }
    v["@odata.etag"] = json!(format!("W/\"{}\"", e.change_key()));
    v["id"] = json!(e.id(imm));
    v["createdDateTime"] = json!(crate::gen::iso(e.created));
    v["lastModifiedDateTime"] = json!(crate::gen::iso(e.modified));
    v["changeKey"] = json!(e.change_key());
    v
}

/// One page of a folder-hierarchy delta round (`mailFolders/delta`, `contactFolders/delta`,
/// `todo/lists/delta`): every folder, flat, then changes with `@removed` for deleted ones.
pub fn folder_delta_page<T>(
    tok: DeltaTok,
    store: &Store<T>,
    link_base: &str,
    odata_type: &str,
    render: impl Fn(&Folder) -> Value,
) -> Result<Response> {
    let (rows, cursor) = store.folder_delta(tok.s, tok.t, tok.a, tok.n);
    let fields: Option<Vec<String>> = tok
        .sel
        .as_ref()
        .map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let value: Vec<Value> = rows
        .into_iter()
        .map(|row| match row {
            FolderRow::Changed(f) => {
                let mut v = select(render(f), &fields);
                v["@odata.type"] = json!(odata_type);
                v
            }
            FolderRow::Removed(id) => {
                json!({ "@odata.type": odata_type, "id": id, "@removed": { "reason": "deleted" } })
            }
        })
        .collect();
    let mut body = json!({ "value": value });
    let extra = Query {
        pairs: tok.extra.clone(),
    };
    match cursor {
        Some(c) => {
            body["@odata.nextLink"] = json!(link(
                link_base,
                &extra,
                &[("$skiptoken", &encode_token(&DeltaTok { a: Some(c), ..tok }))],
                &[]
            ))
        }
        None => {
            body["@odata.deltaLink"] = json!(link(
                link_base,
                &extra,
                &[(
                    "$deltatoken",
                    &encode_token(&DeltaTok {
                        s: tok.t,
                        a: None,
                        ..tok
                    })
                )],
                &[]
            ))
        }
    }
    Ok(ok(body))
}
