//! What a calendar backup reads: the calendars, their events (side by side, as the mailbox
//! serves them), and the exceptions of the series that changed; an event is written again
//! only when its change key changed.

use crate::client::{Fail, MAILBOX_CONCURRENCY};
use crate::names::{self, fingerprint, item_name, seg, time_ns};
use crate::outlook::{change_key, folder_meta, list_all, list_side_by_side, s};
use crate::run::{Flow, Live, Run};
use bytes::Bytes;
use engine::ItemInfo;
use futures::StreamExt;
use serde_json::Value;

/// How far ahead of a series' start its exceptions are looked for.
const SERIES_WINDOW_DAYS: i64 = 1825;

/// Backs up every calendar: events are listed (Graph v1.0 tracks event changes only as
/// occurrences in a window, which cannot bring back a series master); an event is written
/// again only when its change key changed.
pub async fn calendars(run: &mut Run<'_>) -> engine::Result<Flow> {
    let u = run.key.clone();
    let cals = match list_all(run, &super::root(&u)).await {
        Ok(c) => c,
        Err(f) if f.is_not_found() => return Ok(Flow::Done),
        Err(f) => return Err(f.into()),
    };
    let top = names::path(&[b"Calendar"]);
    run.tree.ensure_folder(&top).await?;
    let live: Vec<Live> = cals
        .iter()
        .filter(|c| !s(c, "id").is_empty())
        .map(|c| {
            (
                format!("calendar:{}", s(c, "id")),
                top.join(&seg(s(c, "name"))).expect("valid segment"),
                folder_meta(s(c, "id"), s(c, "name"), false),
            )
        })
        .collect();
    let known = run.known_folders("calendar:");
    run.reconcile(&live, known).await?;
    for (key, path, _) in &live {
        run.cur.folders.insert(key.clone(), names::parts(path));
    }
    // The calendars' events are listed side by side (a mailbox has a few calendars).
    let todo: Vec<&Live> = live
        .iter()
        .filter(|(key, _, _)| !run.cur.done.contains(key))
        .collect();
    let urls: Vec<String> = todo
        .iter()
        .map(|(_, _, meta)| format!("/users/{u}/calendars/{}/events?$top=250", meta[0].1))
        .collect();
    let listed = list_side_by_side(run, urls).await;
    for ((key, path, _), events) in todo.into_iter().zip(listed) {
        if run.out_of_time() {
            run.tree.pause();
            return Ok(Flow::Paused);
        }
        let events = events?;
        // The exceptions of the series that changed, read side by side.
        let mut masters: Vec<Value> = Vec::new();
        for e in &events {
            if s(e, "type") != "seriesMaster" || s(e, "id").is_empty() {
                continue;
            }
            let here = match path.join(&item_name(s(e, "id"), "ics")) {
                Ok(p) => run.tree.item(&p).await?.map(|x| x.fingerprint),
                Err(_) => None,
            };
            if here != Some(fingerprint(change_key(e))) {
                masters.push(e.clone());
            }
        }
        let mut exceptions: std::collections::HashMap<String, Result<Vec<Value>, Fail>> = {
            let r: &Run<'_> = run;
            futures::stream::iter(masters)
                .map(|m| async move { (s(&m, "id").to_string(), exceptions_of(r, &m).await) })
                .buffered(MAILBOX_CONCURRENCY)
                .collect()
                .await
        };
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            let eid = s(e, "id");
            if eid.is_empty() {
                continue;
            }
            let name = item_name(eid, "ics");
            seen.insert(name.clone());
            let p = path.join(&name)?;
            let info = ItemInfo {
                mtime_ns: time_ns(s(e, "lastModifiedDateTime")),
                fingerprint: fingerprint(change_key(e)),
                meta: vec![
                    ("subject".into(), s(e, "subject").into()),
                    (
                        "start".into(),
                        e.pointer("/start/dateTime")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                    (
                        "organizer".into(),
                        e.pointer("/organizer/emailAddress/address")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                    ),
                ],
            };
            if run.tree.item(&p).await?.map(|x| x.fingerprint) == Some(info.fingerprint) {
                continue;
            }
            let exceptions = if s(e, "type") == "seriesMaster" {
                match exceptions
                    .remove(eid)
                    .unwrap_or_else(|| Err(Fail::Unavailable("not asked".into())))
                {
                    Ok(x) => x,
                    Err(f) if f.is_fatal() => return Err(f.into()),
                    Err(f) => {
                        run.tree.record_error(
                            &p,
                            format!("the series' exceptions could not be read: {f}"),
                        );
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            run.tree
                .put_item(&p, info, Bytes::from(super::ics::ics_event(e, &exceptions)))
                .await?;
        }
        let gone: Vec<Vec<u8>> = run
            .tree
            .items(path)
            .await?
            .filter(|x| !seen.contains(&x.name))
            .map(|x| x.name)
            .collect();
        for n in gone {
            run.tree.remove(&path.join(&n)?).await?;
        }
        run.worked = true;
        run.cur.done.insert(key.clone());
    }
    Ok(Flow::Done)
}

/// The exceptions of a series master: the instances Graph marks `exception`.
async fn exceptions_of(run: &Run<'_>, master: &Value) -> Result<Vec<Value>, Fail> {
    let start = master
        .pointer("/recurrence/range/startDate")
        .and_then(Value::as_str)
        .map(|d| format!("{d}T00:00:00Z"))
        .unwrap_or_else(|| {
            let dt = master
                .pointer("/start/dateTime")
                .and_then(Value::as_str)
                .unwrap_or("2000-01-01T00:00:00");
            format!("{}Z", dt.get(..19).unwrap_or(dt))
        });
    let from = chrono::DateTime::parse_from_rfc3339(&start)
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let to = from + chrono::Duration::days(SERIES_WINDOW_DAYS);
    let url = format!(
        "/users/{}/events/{}/instances?startDateTime={}&endDateTime={}&$top=250",
        run.key,
        s(master, "id"),
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    Ok(list_all(run, &url)
        .await?
        .into_iter()
        .filter(|i| s(i, "type") == "exception")
        .collect())
}
