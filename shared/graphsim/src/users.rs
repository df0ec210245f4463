//! `/users`: the organisation's people, with `$select`, a small `$filter` and paging.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::{GraphError, Result};
use crate::model::{Sim, User};
use crate::odata::{page, select, Limits};
use crate::server::{ok, Ctx};

const USER_LIMITS: Limits = Limits {
    default: 100,
    max: 999,
};

pub fn render(u: &User) -> Value {
    json!({
        "businessPhones": [format!("+1 425 555 {:04}", 100 + u.idx)],
        "displayName": u.display_name,
        "givenName": u.given_name,
        "jobTitle": u.job_title,
        "mail": u.upn,
        "mobilePhone": Value::Null,
        "officeLocation": Value::Null,
        "preferredLanguage": "en-US",
        "surname": u.surname,
        "userPrincipalName": u.upn,
        "id": u.id,
    })
}

/// The `$filter` forms a backup tool uses to pick users: `endswith(mail,'@domain')`,
/// `startswith(displayName,'x')` and `prop eq 'value'`.
fn matches(u: &User, filter: &str) -> Result<bool> {
    let f = filter.trim();
    let prop = |name: &str| -> Option<String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "mail" | "userprincipalname" => Some(u.upn.to_ascii_lowercase()),
            "displayname" => Some(u.display_name.to_ascii_lowercase()),
            "id" => Some(u.id.clone()),
            "jobtitle" => Some(u.job_title.to_ascii_lowercase()),
            _ => None,
        }
    };
    let unsupported = || {
        GraphError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            format!("Unsupported or invalid query filter clause specified: '{f}'."),
        )
    };
    for func in ["endswith(", "startswith("] {
        if let Some(args) = f
            .to_ascii_lowercase()
            .strip_prefix(func)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::to_string)
        {
            let (p, v) = args.split_once(',').ok_or_else(unsupported)?;
            let value = v.trim().trim_matches('\'').to_string();
            let have = prop(p).ok_or_else(unsupported)?;
            return Ok(if func == "endswith(" {
                have.ends_with(&value)
            } else {
                have.starts_with(&value)
            });
        }
    }
    if let Some((p, v)) = f.split_once(" eq ") {
        let have = prop(p).ok_or_else(unsupported)?;
        return Ok(have.eq_ignore_ascii_case(v.trim().trim_matches('\'')));
    }
    Err(unsupported())
}

pub fn list(ctx: &Ctx<'_>, sim: &Sim) -> Result<Response> {
    let fields = ctx.q().select();
    let filter = ctx.q().get("$filter").map(str::to_string);
    if filter
        .as_deref()
        .is_some_and(|f| f.to_ascii_lowercase().starts_with("endswith("))
    {
        // Graph treats endswith as an advanced query: it needs ConsistencyLevel and $count.
        let eventual = ctx
            .req
            .headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
        if !eventual || !ctx.q().flag("$count") {
            return Err(GraphError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Operator 'endsWith' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header.",
            ));
        }
    }
    let mut items = Vec::new();
    for u in &sim.users {
        if let Some(f) = &filter {
            if !matches(u, f)? {
                continue;
            }
        }
        items.push(select(render(u), &fields));
    }
    let count = items.len();
    let mut body = page(
        items,
        ctx.q(),
        &ctx.prefer,
        USER_LIMITS,
        &format!("{}/users", ctx.root),
        "https://graph.microsoft.com/v1.0/$metadata#users",
    )?;
    if ctx.q().flag("$count") {
        body["@odata.count"] = json!(count);
    }
    Ok(ok(body))
}

pub fn route(ctx: &Ctx<'_>, sim: &mut Sim, segs: &[String]) -> Result<Response> {
    let m = ctx.req.method.clone();
    if segs.len() == 1 {
        return match m {
            Method::GET => list(ctx, sim),
            _ => Err(GraphError::method_not_allowed()),
        };
    }
    let uid = &segs[1];
    let u = sim
        .user(uid)
        .ok_or_else(|| GraphError::user_not_found(uid))?;
    let rest = &segs[2..];
    let first = rest
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match first.as_str() {
        "" => match m {
            Method::GET => Ok(ok(select(render(&sim.users[u]), &ctx.q().select()))),
            _ => Err(GraphError::method_not_allowed()),
        },
        "mailfolders" | "messages" => crate::mail::route(ctx, sim, uid, rest),
        "contactfolders" | "contacts" => crate::contacts::route(ctx, sim, u, uid, rest),
        "calendars" | "calendar" | "events" | "calendarview" => {
            crate::calendar::route(ctx, sim, u, uid, rest)
        }
        "todo" => crate::todo::route(ctx, sim, u, uid, rest),
        "drive" => {
            let id = sim.users[u].drive_id.clone();
            crate::drive::route(ctx, sim, &id, &rest[1..])
        }
        "drives" => {
            let id = sim.users[u].drive_id.clone();
            crate::drive::list_drives(
                ctx,
                sim,
                &[id],
                &format!("{}/users/{}/drives", ctx.root, uid),
            )
        }
        _ => Err(GraphError::no_route()),
    }
}
