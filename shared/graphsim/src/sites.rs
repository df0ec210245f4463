//! SharePoint sites: the root site, site collections found with `search`, sub-sites at any
//! depth, their document libraries (drives) and lists with items (`expand=fields`).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::gen::iso;
use crate::model::{Doc, Sim};
use crate::odata::{page, select, Limits};
use crate::server::{json as json_resp, ok, Ctx};

const LIMITS: Limits = Limits {
    default: 200,
    max: 1000,
};

#[derive(Clone, Debug)]
pub struct ListItem {
    pub id: u64,
    pub fields: Doc,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub version: u64,
}

#[derive(Clone, Debug)]
pub struct List {
    pub id: String,
    pub name: String,
    pub display_name: String,
    /// `genericList`, `documentLibrary`, …
    pub template: String,
    pub drive_id: Option<String>,
    pub items: Vec<ListItem>,
    pub created: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct Site {
    /// `{hostname},{site collection id},{web id}`.
    pub id: String,
    pub name: String,
    pub display_name: String,
    /// Server-relative path, `/` for the root site, `/sites/x/y` below.
    pub path: String,
    pub parent: Option<usize>,
    pub drives: Vec<String>,
    pub lists: Vec<List>,
    pub created: DateTime<Utc>,
}

fn render_site(sim: &Sim, s: &Site) -> Value {
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "displayName": s.display_name,
        "webUrl": format!("https://{}{}", sim.hostname, if s.path == "/" { "" } else { &s.path }),
        "createdDateTime": iso(s.created),
        "lastModifiedDateTime": iso(s.created),
        "siteCollection": { "hostname": sim.hostname },
    });
    if s.parent.is_none() && s.path == "/" {
        v["root"] = json!({});
    }
    v
}

fn render_list(sim: &Sim, s: &Site, l: &List) -> Value {
    json!({
        "@odata.etag": format!("\"{},1\"", l.id),
        "id": l.id,
        "name": l.name,
        "displayName": l.display_name,
        "createdDateTime": iso(l.created),
        "lastModifiedDateTime": iso(l.items.iter().map(|i| i.modified).max().unwrap_or(l.created)),
        "webUrl": format!("https://{}{}/Lists/{}", sim.hostname, s.path.trim_end_matches('/'), l.name),
        "list": { "contentTypesEnabled": false, "hidden": false, "template": l.template },
        "parentReference": { "siteId": s.id },
    })
}

fn render_item(l: &List, i: &ListItem, with_fields: bool) -> Value {
    let mut v = json!({
        "@odata.etag": format!("\"{},{}\"", i.id, i.version),
        "id": i.id.to_string(),
        "createdDateTime": iso(i.created),
        "lastModifiedDateTime": iso(i.modified),
        "eTag": format!("\"{},{}\"", i.id, i.version),
        "contentType": { "id": "0x0100", "name": "Item" },
        "parentReference": { "id": l.id },
    });
    if with_fields {
        let mut f = i.fields.clone();
        f.insert("id".into(), json!(i.id.to_string()));
        f.insert("Modified".into(), json!(iso(i.modified)));
        f.insert("Created".into(), json!(iso(i.created)));
        v["fields"] = Value::Object(f);
    }
    v
}

fn site_index(sim: &Sim, segs: &[String]) -> Result<(usize, usize)> {
    // `sites/{hostname}:/sites/path:` addresses a site by path.
    if segs.get(2).is_some_and(|s| s == ":") {
        let path = format!(
            "/{}",
            segs.get(3)
                .map(String::as_str)
                .unwrap_or("")
                .trim_matches('/')
        );
        let i = sim
            .sites
            .iter()
            .position(|s| s.path.eq_ignore_ascii_case(&path))
            .ok_or_else(GraphError::drive_not_found)?;
        return Ok((i, 4));
    }
    let id = &segs[1];
    // `sites/root` and `sites/{hostname}` are both the tenant's root site.
    if id.eq_ignore_ascii_case("root") || id.eq_ignore_ascii_case(&sim.hostname) {
        return Ok((0, 2));
    }
    let i = sim
        .sites
        .iter()
        .position(|s| {
            s.id.eq_ignore_ascii_case(id)
                || s.id
                    .split_once(',')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(id))
        })
        .ok_or_else(GraphError::drive_not_found)?;
    Ok((i, 2))
}

pub fn route(ctx: &Ctx<'_>, sim: &mut Sim, segs: &[String]) -> Result<Response> {
    let m = ctx.req.method.clone();
    let fields = ctx.q().select();
    if segs.len() == 1 || segs[1].eq_ignore_ascii_case("getAllSites") {
        // `sites?search=…` lists site collections; app-only callers use it to enumerate.
        let term = ctx
            .q()
            .get("search")
            .unwrap_or("*")
            .trim_matches('"')
            .to_ascii_lowercase();
        let all = segs.len() > 1;
        let items: Vec<Value> = sim
            .sites
            .iter()
            .filter(|s| all || s.parent.is_none())
            .filter(|s| {
                term == "*"
                    || term.is_empty()
                    || s.display_name.to_ascii_lowercase().contains(&term)
                    || s.name.to_ascii_lowercase().contains(&term)
            })
            .map(|s| select(render_site(sim, s), &fields))
            .collect();
        return Ok(ok(page(
            items,
            ctx.q(),
            &ctx.prefer,
            LIMITS,
            &format!("{}/sites", ctx.root),
            "https://graph.microsoft.com/v1.0/$metadata#sites",
        )?));
    }
    let (si, used) = site_index(sim, segs)?;
    let rest: Vec<String> = segs[used..].to_vec();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let site = &sim.sites[si];
    let site_base = format!("{}/sites/{}", ctx.root, site.id);
    match (m, l.as_slice()) {
        (Method::GET, []) => Ok(ok(select(render_site(sim, site), &fields))),
        (Method::GET, ["sites"]) => {
            let items: Vec<Value> = sim
                .sites
                .iter()
                .filter(|s| s.parent == Some(si))
                .map(|s| select(render_site(sim, s), &fields))
                .collect();
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &format!("{site_base}/sites"),
                "https://graph.microsoft.com/v1.0/$metadata#sites",
            )?))
        }
        (Method::GET, ["drives"]) => {
            let ids = site.drives.clone();
            crate::drive::list_drives(ctx, sim, &ids, &format!("{site_base}/drives"))
        }
        (_, ["drive", ..]) => {
            let id = site
                .drives
                .first()
                .cloned()
                .ok_or_else(GraphError::drive_not_found)?;
            crate::drive::route(ctx, sim, &id, &rest[1..])
        }
        (_, ["drives", _, ..]) => {
            let id = rest[1].clone();
            crate::drive::route(ctx, sim, &id, &rest[2..])
        }
        (Method::GET, ["lists"]) => {
            let items: Vec<Value> = site
                .lists
                .iter()
                .map(|x| select(render_list(sim, site, x), &fields))
                .collect();
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &format!("{site_base}/lists"),
                "https://graph.microsoft.com/v1.0/$metadata#lists",
            )?))
        }
        (_, ["lists", _, ..]) => {
            let li = site
                .lists
                .iter()
                .position(|x| {
                    x.id.eq_ignore_ascii_case(&rest[1])
                        || x.name.eq_ignore_ascii_case(&rest[1])
                        || x.display_name.eq_ignore_ascii_case(&rest[1])
                })
                .ok_or_else(GraphError::drive_not_found)?;
            list_route(ctx, sim, si, li, &lower[2..], &site_base)
        }
        _ => Err(GraphError::no_route()),
    }
}

fn list_route(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    si: usize,
    li: usize,
    rest: &[String],
    site_base: &str,
) -> Result<Response> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let expand = ctx
        .q()
        .get("$expand")
        .is_some_and(|e| e.to_ascii_lowercase().starts_with("fields"));
    let fields = ctx.q().select();
    match (ctx.req.method.clone(), r.as_slice()) {
        (Method::GET, []) => {
            let s = &sim.sites[si];
            Ok(ok(select(render_list(sim, s, &s.lists[li]), &fields)))
        }
        (Method::GET, ["items"]) => {
            let l = &sim.sites[si].lists[li];
            let items: Vec<Value> = l
                .items
                .iter()
                .map(|i| select(render_item(l, i, expand), &fields))
                .collect();
            let base = format!("{site_base}/lists/{}/items", l.id);
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &base,
                "https://graph.microsoft.com/v1.0/$metadata#listItems",
            )?))
        }
        (Method::GET, ["items", id]) | (Method::GET, ["items", id, "fields"]) => {
            let l = &sim.sites[si].lists[li];
            let i = l
                .items
                .iter()
                .find(|i| i.id.to_string() == *id)
                .ok_or_else(GraphError::drive_not_found)?;
            if r.len() == 3 {
                let v = render_item(l, i, true);
                return Ok(ok(v["fields"].clone()));
            }
            Ok(ok(select(render_item(l, i, expand), &fields)))
        }
        (Method::POST, ["items"]) => {
            let body = ctx.json_body()?;
            let f = body
                .get("fields")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| GraphError::invalid_request("A list item needs fields."))?;
            let now = sim.now();
            sim.next_seq();
            let l = &mut sim.sites[si].lists[li];
            if l.template == "documentLibrary" {
                return Err(GraphError::invalid_request(
                    "Items of a document library are created through its drive.",
                ));
            }
            let id = l.items.iter().map(|i| i.id).max().unwrap_or(0) + 1;
            l.items.push(ListItem {
                id,
                fields: f,
                created: now,
                modified: now,
                version: 1,
            });
            let v = render_item(l, l.items.last().expect("just pushed"), true);
            Ok(json_resp(StatusCode::CREATED, v))
        }
        _ => Err(GraphError::no_route()),
    }
}
