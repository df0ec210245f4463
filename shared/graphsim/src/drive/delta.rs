//! `root/delta`: the token that remembers where a client stands, paging through one round of
//! changes, and the `deleted` facet for tombstones.

use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{render_item, Drive};
use crate::error::{GraphError, Result};
use crate::model::Sim;
use crate::odata::{page_size, select, Limits};
use crate::server::{ok, Ctx};
use crate::store::Seq;
use crate::util::{decode_token, encode_token};

const DELTA_LIMITS: Limits = Limits {
    default: 200,
    max: 1000,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DriveDeltaTok {
    d: String,
    s: Seq,
    t: Seq,
    a: Option<(Seq, u8, u64)>,
    e: u64,
    n: usize,
    #[serde(default)]
    se: u64,
    #[serde(default)]
    day: u32,
}

fn gone_drive(location: &str) -> GraphError {
    GraphError::new(StatusCode::GONE, "resyncRequired", "Resync required. Replace any local items with the server's version (including deletes) if you're sure that the service was up to date with your local changes when you last sync'd. Upload any local changes that the server doesn't know about.")
        .with_header(header::LOCATION, location.to_string())
}

pub(super) fn delta(
    ctx: &Ctx<'_>,
    sim: &Sim,
    drive: &Drive,
    token_arg: Option<String>,
) -> Result<Response> {
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
                se: sim.scoped_epoch(&drive.id),
                day: sim.day,
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
            if sim.delta_expired(&drive.id, tok.e, tok.se, tok.day) {
                return Err(gone_drive(&base));
            }
            if tok.a.is_none() {
                // A delta link: a new round up to now.
                tok.t = sim.seq;
                tok.day = sim.day;
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
            se: sim.scoped_epoch(&drive.id),
            day: sim.day,
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
