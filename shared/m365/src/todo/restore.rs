//! Tasks restored from the Graph JSON their VTODO carries, into the To Do list the shared
//! restore found or made.

use crate::client::Body;
use crate::restore::{creatable, s, Ctx, R};
use engine::Entry;
use reqwest::Method;
use serde_json::Value;

/// Writes one task into list `fid`, unless an earlier run of the job already did.
pub(crate) async fn task(cx: &mut Ctx<'_>, entry: &Entry, fid: &str, mut objs: Vec<Value>) -> R {
    let u = cx.user.clone();
    let list = format!("/users/{u}/todo/lists/{fid}/tasks?$top=250");
    let key = objs.first().map(task_key).unwrap_or_default();
    if cx.already(fid, &list, task_key, &key).await? {
        return Ok(());
    }
    let t = creatable(objs.remove(0), &[]);
    cx.g.json(
        Method::POST,
        &format!("/users/{u}/todo/lists/{fid}/tasks"),
        Some(Body::Json(t)),
        &[],
        Some(&u),
    )
    .await?;
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// What tells a restored task apart from the others of its list (see [`Ctx::already`]):
/// its title.
fn task_key(v: &Value) -> String {
    s(v, "title").to_string()
}
