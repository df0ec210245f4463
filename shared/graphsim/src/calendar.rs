//! Calendars and events: series masters with recurrence patterns, exceptions, single events,
//! `calendarView` and `instances` (occurrences expanded in a window), `calendarView/delta`
//! (the documented way to track event changes), and creation for restores.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc, Weekday};
use serde_json::{json, Value};

use crate::contacts::{create_item, item_route, Kind};
use crate::error::{GraphError, Result};
use crate::model::{Doc, Sim};
use crate::odata::{link, page, select, Limits, Query};
use crate::outlook::{delta_state, render_doc, DeltaTok};
use crate::server::{json as json_resp, ok, Ctx};
use crate::store::{DeltaRow, Entry, Folder, Store};
use crate::util::{encode_token, outlook_id};

const LIMITS: Limits = Limits {
    default: 10,
    max: 1000,
};

pub const EVENTS: Kind = Kind {
    delta_kind: "event",
    odata_type: "#microsoft.graph.event",
    required: "subject",
    parent_field: None,
    store: |m| &m.calendars,
    store_mut: |m| &mut m.calendars,
};

pub fn graph_time(t: DateTime<Utc>) -> Value {
    json!({ "dateTime": format!("{}.0000000", t.format("%Y-%m-%dT%H:%M:%S")), "timeZone": "UTC" })
}

fn parse_graph_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.get("dateTime")?.as_str()?;
    NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

fn parse_query_time(q: &Query, name: &str) -> Result<DateTime<Utc>> {
    let s = q.get(name).ok_or_else(|| {
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )
    })?;
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
        .map_err(|_| {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidParameter",
                format!("The value '{s}' of parameter '{name}' is invalid."),
            )
        })
}

fn render_calendar(store: &Store<Doc>, f: &Folder, owner: (&str, &str)) -> Value {
    let _ = store;
    json!({
        "id": f.id,
        "name": f.name,
        "color": "auto",
        "hexColor": "",
        "isDefaultCalendar": f.well_known.as_deref() == Some("calendar"),
        "changeKey": crate::util::b64(format!("cal{}", f.seq).as_bytes()),
        "canShare": true,
        "canViewPrivateItems": true,
        "canEdit": true,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "isTallyingResponses": true,
        "isRemovable": f.well_known.is_none(),
        "owner": { "name": owner.0, "address": owner.1 },
    })
}

pub fn render_event(store: &Store<Doc>, e: &Entry<Doc>, imm: bool) -> Value {
    let mut v = render_doc(e, imm);
    if let Some(master) = e
        .data
        .get("_master")
        .and_then(Value::as_u64)
        .and_then(|k| store.items.get(&k))
    {
        v["seriesMasterId"] = json!(master.id(imm));
    }
    v.as_object_mut()
        .map(|m| m.entry("type").or_insert(json!("singleInstance")));
    v
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "sunday" => Weekday::Sun,
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        _ => return None,
    })
}

/// Start times of a series' occurrences up to `until`, following the documented pattern
/// types (daily, weekly, absoluteMonthly, absoluteYearly) and range types (numbered,
/// endDate, noEnd).
pub fn occurrences(doc: &Doc, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let Some(start) = parse_graph_time(doc.get("start")) else {
        return Vec::new();
    };
    let Some(rec) = doc.get("recurrence") else {
        return Vec::new();
    };
    let pattern = &rec["pattern"];
    let range = &rec["range"];
    let interval = pattern["interval"].as_i64().unwrap_or(1).max(1);
    let first = range["startDate"]
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(start.date_naive());
    let end_date = range["endDate"]
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
    let count = match range["type"].as_str() {
        Some("numbered") => range["numberOfOccurrences"].as_u64().unwrap_or(1) as usize,
        _ => 2000,
    };
    let limit_date = match (range["type"].as_str(), end_date) {
        (Some("endDate"), Some(d)) => d.min(until.date_naive()),
        _ => until.date_naive(),
    };
    let time = start.time();
    let mut out = Vec::new();
    let days: Vec<Weekday> = pattern["daysOfWeek"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().and_then(weekday))
                .collect()
        })
        .unwrap_or_default();
    let push = |d: NaiveDate, out: &mut Vec<DateTime<Utc>>| -> bool {
        if out.len() >= count || d > limit_date {
            return false;
        }
        if d >= first {
            out.push(d.and_time(time).and_utc());
        }
        true
    };
    match pattern["type"].as_str().unwrap_or("daily") {
        "weekly" => {
            let days = if days.is_empty() {
                vec![first.weekday()]
            } else {
                days
            };
            let week0 = first - Duration::days(first.weekday().num_days_from_sunday() as i64);
            let mut w = 0i64;
            'weeks: loop {
                let ws = week0 + Duration::weeks(w * interval);
                for off in 0..7 {
                    let d = ws + Duration::days(off);
                    if days.contains(&d.weekday()) && !push(d, &mut out) {
                        break 'weeks;
                    }
                }
                w += 1;
            }
        }
        "absoluteMonthly" | "absoluteYearly" => {
            let step = if pattern["type"] == "absoluteYearly" {
                12 * interval
            } else {
                interval
            };
            let dom = pattern["dayOfMonth"].as_u64().unwrap_or(first.day() as u64) as u32;
            let mut i = 0i64;
            loop {
                let months = first.year() as i64 * 12 + first.month0() as i64 + i * step;
                let (y, m0) = ((months / 12) as i32, (months % 12) as u32);
                let Some(d) = NaiveDate::from_ymd_opt(y, m0 + 1, dom) else {
                    i += 1;
                    if i > 2000 {
                        break;
                    }
                    continue;
                };
                if !push(d, &mut out) {
                    break;
                }
                i += 1;
            }
        }
        _ => {
            let mut d = first;
            while push(d, &mut out) {
                d += Duration::days(interval);
            }
        }
    }
    out
}

fn overlaps(doc: &Doc, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    match (
        parse_graph_time(doc.get("start")),
        parse_graph_time(doc.get("end")),
    ) {
        (Some(s), Some(e)) => s < to && e > from,
        _ => false,
    }
}

/// The instances of `e` in `[from, to)`: itself for a single event, its occurrences (with
/// exceptions in place of the occurrences they replace) for a series master.
pub fn instances(
    store: &Store<Doc>,
    e: &Entry<Doc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    imm: bool,
) -> Vec<Value> {
    let ty = e
        .data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("singleInstance");
    match ty {
        "seriesMaster" => {
            let (Some(s), Some(en)) = (
                parse_graph_time(e.data.get("start")),
                parse_graph_time(e.data.get("end")),
            ) else {
                return Vec::new();
            };
            let dur = en - s;
            let exceptions: Vec<&Entry<Doc>> = store
                .items
                .values()
                .filter(|x| x.data.get("_master").and_then(Value::as_u64) == Some(e.key))
                .collect();
            let master = render_event(store, e, imm);
            let mut out = Vec::new();
            for o in occurrences(&e.data, to) {
                if let Some(x) = exceptions.iter().find(|x| {
                    parse_graph_time(
                        x.data
                            .get("originalStart")
                            .map(|v| json!({"dateTime": v}))
                            .as_ref(),
                    ) == Some(o)
                }) {
                    if overlaps(&x.data, from, to) {
                        out.push(render_event(store, x, imm));
                    }
                    continue;
                }
                if o < to && o + dur > from {
                    let mut v = master.clone();
                    v["id"] = json!(outlook_id("AAMkAGI2occ", &[e.key, o.timestamp() as u64]));
                    v["type"] = json!("occurrence");
                    v["seriesMasterId"] = json!(e.id(imm));
                    v["start"] = graph_time(o);
                    v["end"] = graph_time(o + dur);
                    v["recurrence"] = Value::Null;
                    v["originalStart"] = json!(crate::gen::iso(o));
                    out.push(v);
                }
            }
            out
        }
        "exception" => Vec::new(),
        _ if overlaps(&e.data, from, to) => vec![render_event(store, e, imm)],
        _ => Vec::new(),
    }
}

fn calendar_view(ctx: &Ctx<'_>, store: &Store<Doc>, folder: u64, base: &str) -> Result<Response> {
    let from = parse_query_time(ctx.q(), "startDateTime")?;
    let to = parse_query_time(ctx.q(), "endDateTime")?;
    let imm = ctx.immutable();
    let fields = ctx.q().select();
    let mut items: Vec<Value> = store
        .in_folder(folder)
        .flat_map(|e| instances(store, e, from, to, imm))
        .collect();
    items.sort_by(|a, b| {
        a["start"]["dateTime"]
            .as_str()
            .cmp(&b["start"]["dateTime"].as_str())
    });
    let items = items.into_iter().map(|v| select(v, &fields)).collect();
    Ok(ok(page(
        items,
        ctx.q(),
        &ctx.prefer,
        LIMITS,
        base,
        "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
    )?))
}

fn view_delta(ctx: &Ctx<'_>, sim: &Sim, u: usize, folder: u64, base: &str) -> Result<Response> {
    let tok: DeltaTok = delta_state(ctx, sim, "eventView", u, folder, LIMITS)?;
    let window = Query {
        pairs: tok.extra.clone(),
    };
    let from = parse_query_time(&window, "startDateTime")?;
    let to = parse_query_time(&window, "endDateTime")?;
    let store = &sim.mailboxes[u].calendars;
    let imm = ctx.immutable();
    let (rows, cursor) = store.delta(tok.f, tok.s, tok.t, tok.a, tok.n, None, &|_| true);
    let mut value = Vec::new();
    for row in rows {
        match row {
            DeltaRow::Changed(e) => {
                let ty = e.data.get("type").and_then(Value::as_str).unwrap_or("");
                if ty == "exception" {
                    // A changed master already brings its exceptions along in this round.
                    let master_changed = e.data.get("_master").and_then(Value::as_u64).and_then(|k| store.items.get(&k)).is_some_and(|m| m.seq > tok.s && m.seq <= tok.t);
                    if overlaps(&e.data, from, to) && !master_changed {
                        value.push(render_event(store, e, imm));
                    }
                } else {
                    value.extend(instances(store, e, from, to, imm));
                }
            }
            DeltaRow::Removed(t) => value.push(json!({ "id": if imm { &t.imm_id } else { &t.rest_id }, "@removed": { "reason": "deleted" } })),
        }
    }
    let mut body = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)", "value": value });
    let extra = Query {
        pairs: tok.extra.clone(),
    };
    match cursor {
        Some(c) => {
            body["@odata.nextLink"] = json!(link(
                base,
                &extra,
                &[("$skiptoken", &encode_token(&DeltaTok { a: Some(c), ..tok }))],
                &[]
            ))
        }
        None => {
            body["@odata.deltaLink"] = json!(link(
                base,
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

pub fn route(
    ctx: &Ctx<'_>,
    sim: &mut Sim,
    u: usize,
    uid: &str,
    rest: &[String],
) -> Result<Response> {
    let store = &sim.mailboxes[u].calendars;
    let default = store
        .folder_key("calendar")
        .ok_or_else(GraphError::outlook_not_found)?;
    let m = ctx.req.method.clone();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let owner = (sim.users[u].display_name.clone(), sim.users[u].upn.clone());
    // Normalise to (calendar, path below it, link prefix).
    let (folder, tail, prefix): (u64, &[String], String) = match lower.first().map(String::as_str) {
        Some("calendars") if rest.len() == 1 => {
            return match m {
                Method::GET => {
                    let fields = ctx.q().select();
                    let items: Vec<Value> = store
                        .folders
                        .values()
                        .map(|f| select(render_calendar(store, f, (&owner.0, &owner.1)), &fields))
                        .collect();
                    Ok(ok(page(
                        items,
                        ctx.q(),
                        &ctx.prefer,
                        LIMITS,
                        &format!("{}/users/{}/calendars", ctx.root, uid),
                        "https://graph.microsoft.com/v1.0/$metadata#calendars",
                    )?))
                }
                Method::POST => {
                    let body = ctx.json_body()?;
                    let name = body
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    if name.is_empty() {
                        return Err(GraphError::new(
                            StatusCode::BAD_REQUEST,
                            "ErrorInvalidRequest",
                            "The property 'name' is required.",
                        ));
                    }
                    let seq = sim.next_seq();
                    let store = &mut sim.mailboxes[u].calendars;
                    if store
                        .folders
                        .values()
                        .any(|f| f.name.eq_ignore_ascii_case(&name))
                    {
                        return Err(GraphError::new(
                            StatusCode::CONFLICT,
                            "ErrorFolderExists",
                            "A calendar with the specified name already exists.",
                        ));
                    }
                    let key = store.add_folder(None, &name, None, false, seq);
                    Ok(json_resp(
                        StatusCode::CREATED,
                        render_calendar(store, &store.folders[&key], (&owner.0, &owner.1)),
                    ))
                }
                _ => Err(GraphError::method_not_allowed()),
            };
        }
        Some("calendars") => {
            let f = store
                .folder_key(&rest[1])
                .ok_or_else(GraphError::outlook_not_found)?;
            (
                f,
                &rest[2..],
                format!("{}/users/{}/calendars/{}", ctx.root, uid, rest[1]),
            )
        }
        Some("calendar") => (
            default,
            &rest[1..],
            format!("{}/users/{}/calendar", ctx.root, uid),
        ),
        _ => (default, rest, format!("{}/users/{}", ctx.root, uid)),
    };
    let t: Vec<String> = tail.iter().map(|s| s.to_ascii_lowercase()).collect();
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    let imm = ctx.immutable();
    match (m, t.as_slice()) {
        (Method::GET, []) => Ok(ok(render_calendar(
            store,
            &store.folders[&folder],
            (&owner.0, &owner.1),
        ))),
        (Method::GET, ["events"]) => {
            let fields = ctx.q().select();
            let items: Vec<Value> = store
                .in_folder(folder)
                .filter(|e| e.data.get("type").and_then(Value::as_str) != Some("exception"))
                .map(|e| select(render_event(store, e, imm), &fields))
                .collect();
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &format!("{prefix}/events"),
                "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
            )?))
        }
        (Method::GET, ["calendarview"]) => {
            calendar_view(ctx, store, folder, &format!("{prefix}/calendarView"))
        }
        (Method::GET, ["calendarview", "delta"]) => {
            view_delta(ctx, sim, u, folder, &format!("{prefix}/calendarView/delta"))
        }
        (Method::POST, ["events"]) => create_item(ctx, &EVENTS, sim, u, folder, |d| {
            let ty = if d.get("recurrence").is_some_and(|r| !r.is_null()) {
                "seriesMaster"
            } else {
                "singleInstance"
            };
            d.insert("type".into(), json!(ty));
            d.entry("isAllDay").or_insert(json!(false));
            d.entry("isCancelled").or_insert(json!(false));
        }),
        (Method::GET, ["events", _, "instances"]) => {
            let from = parse_query_time(ctx.q(), "startDateTime")?;
            let to = parse_query_time(ctx.q(), "endDateTime")?;
            let e = store
                .get(&tail[1])
                .ok_or_else(GraphError::outlook_not_found)?;
            let items: Vec<Value> = instances(store, e, from, to, imm);
            Ok(ok(page(
                items,
                ctx.q(),
                &ctx.prefer,
                LIMITS,
                &format!("{prefix}/events/{}/instances", tail[1]),
                "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
            )?))
        }
        (Method::PATCH, ["events", _]) if store.resolve(&tail[1]).is_none() => {
            patch_occurrence(ctx, sim, u, &tail[1])
        }
        (_, ["events", _]) => {
            if ctx.req.method == Method::GET {
                let e = store
                    .get(&tail[1])
                    .ok_or_else(GraphError::outlook_not_found)?;
                return Ok(ok(select(render_event(store, e, imm), &ctx.q().select())));
            }
            item_route(ctx, &EVENTS, sim, u, &tail[1])
        }
        _ => Err(GraphError::no_route()),
    }
}

/// A PATCH of an occurrence (by the id `instances` hands out) makes it an exception of its
/// series, as Outlook does: the occurrence is stored with the changes, `originalStart`
/// naming the slot it replaces.
fn patch_occurrence(ctx: &Ctx<'_>, sim: &mut Sim, u: usize, id: &str) -> Result<Response> {
    let Value::Object(patch) = ctx.json_body()? else {
        return Err(GraphError::bad_request(
            "The request body must be a JSON object.",
        ));
    };
    let store = &sim.mailboxes[u].calendars;
    let found = store
        .items
        .values()
        .filter(|e| e.data.get("type").and_then(Value::as_str) == Some("seriesMaster"))
        .find_map(|e| {
            let start = parse_graph_time(e.data.get("start"))?;
            occurrences(&e.data, start + Duration::days(3660))
                .into_iter()
                .find(|o| outlook_id("AAMkAGI2occ", &[e.key, o.timestamp() as u64]) == id)
                .map(|o| (e.key, e.folder, o))
        });
    let Some((master, folder, o)) = found else {
        return Err(GraphError::outlook_not_found());
    };
    let m = &store.items[&master].data;
    let dur = match (
        parse_graph_time(m.get("start")),
        parse_graph_time(m.get("end")),
    ) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::zero(),
    };
    let mut doc = m.clone();
    doc.insert("type".into(), json!("exception"));
    doc.insert("recurrence".into(), Value::Null);
    doc.insert("start".into(), graph_time(o));
    doc.insert("end".into(), graph_time(o + dur));
    doc.insert("originalStart".into(), json!(crate::gen::iso(o)));
    doc.insert("_master".into(), json!(master));
    for (k, v) in patch {
        if !k.starts_with('@') && !k.starts_with('_') && k != "id" {
            doc.insert(k, v);
        }
    }
    let seq = sim.next_seq();
    let now = sim.now();
    let store = &mut sim.mailboxes[u].calendars;
    let key = store.insert(folder, doc, now, seq);
    store.touch(master, now, seq);
    Ok(ok(render_event(store, &store.items[&key], ctx.immutable())))
}
