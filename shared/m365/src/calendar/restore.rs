//! Events restored from the Graph JSON their iCalendar object carries, into the calendar
//! the shared restore found or made: a series is created from its master, then each of its
//! exceptions is applied to the occurrence it replaced.

use crate::client::{Body, Fail};
use crate::restore::{creatable, s, Ctx, R};
use domain::ItemPath;
use engine::Entry;
use reqwest::Method;
use serde_json::{json, Value};

/// Writes one event (a series master first, its exceptions after it) into calendar `fid`,
/// unless an earlier run of the job already did.
pub(crate) async fn event(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: &Entry,
    fid: &str,
    mut objs: Vec<Value>,
) -> R {
    let u = cx.user.clone();
    let list = format!("/users/{u}/calendars/{fid}/events?$top=250");
    let key = objs.first().map(event_key).unwrap_or_default();
    if cx.already(fid, &list, event_key, &key).await? {
        return Ok(());
    }
    let master = objs.remove(0);
    // Attendees are left out: creating an event with attendees would send them
    // invitations for a meeting that already happened.
    let e = creatable(
        master,
        &[
            "type",
            "seriesMasterId",
            "originalStart",
            "iCalUId",
            "attendees",
            "responseStatus",
            "isOrganizer",
            "onlineMeeting",
        ],
    );
    let created =
        cx.g.json(
            Method::POST,
            &format!("/users/{u}/calendars/{fid}/events"),
            Some(Body::Json(e)),
            &[],
            Some(&u),
        )
        .await?;
    if !objs.is_empty() {
        let n = exceptions(cx, &created, &objs).await?;
        if n < objs.len() {
            cx.fail(
                path,
                format!(
                    "{} of the series' exceptions could not be applied",
                    objs.len() - n
                ),
            );
        }
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// Applies a series' exceptions to the restored series: each changed occurrence is found
/// by its original start and updated. Returns how many were applied.
async fn exceptions(cx: &mut Ctx<'_>, created: &Value, exs: &[Value]) -> Result<usize, Fail> {
    let u = cx.user.clone();
    let mid = s(created, "id");
    let first = exs
        .iter()
        .filter_map(|x| x["originalStart"].as_str())
        .min()
        .unwrap_or("");
    let last = exs
        .iter()
        .filter_map(|x| x["originalStart"].as_str())
        .max()
        .unwrap_or("");
    let (Ok(from), Ok(to)) = (
        chrono::DateTime::parse_from_rfc3339(first),
        chrono::DateTime::parse_from_rfc3339(last),
    ) else {
        return Ok(0);
    };
    let url = format!(
        "/users/{u}/events/{mid}/instances?startDateTime={}&endDateTime={}&$top=250",
        (from - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        (to + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let page = cx.g.get_json(&url, Some(&u)).await?;
    let mut applied = 0;
    for x in exs {
        let orig = s(x, "originalStart");
        let occ = page["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| s(o, "originalStart") == orig);
        let Some(occ) = occ else { continue };
        let mut patch = json!({});
        for k in [
            "subject",
            "start",
            "end",
            "body",
            "location",
            "isCancelled",
            "showAs",
        ] {
            if let Some(v) = x.get(k) {
                patch[k] = v.clone();
            }
        }
        cx.g.json(
            Method::PATCH,
            &format!("/users/{u}/events/{}", s(occ, "id")),
            Some(Body::Json(patch)),
            &[],
            Some(&u),
        )
        .await?;
        applied += 1;
    }
    Ok(applied)
}

/// What tells a restored event apart from the others of its calendar (see
/// [`Ctx::already`]): its subject and start.
fn event_key(v: &Value) -> String {
    let start = v
        .pointer("/start/dateTime")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}\n{}", s(v, "subject"), start.get(..16).unwrap_or(start))
}
