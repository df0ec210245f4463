//! Contacts, calendars (recurrence, exceptions, calendarView delta), To Do, and large
//! attachments through an upload session, over HTTP.

mod common;

use std::collections::BTreeSet;

use common::{error_code, small, start};
use reqwest::Method;
use serde_json::{json, Value};

const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

fn id_set(rows: &[Value]) -> BTreeSet<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn contacts_folders_delta_and_creation() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let folders = sim.all(&format!("/users/{user}/contactFolders")).await;
    assert_eq!(folders.len(), 1);
    let fid = folders[0]["id"].as_str().unwrap();
    let nested = sim
        .all(&format!("/users/{user}/contactFolders/{fid}/childFolders"))
        .await;
    assert_eq!(nested.len(), 1);
    let nid = nested[0]["id"].as_str().unwrap();
    let mut total = sim
        .all(&format!("/users/{user}/contacts?$top=2"))
        .await
        .len();
    total += sim
        .all(&format!("/users/{user}/contactFolders/{fid}/contacts"))
        .await
        .len();
    total += sim
        .all(&format!("/users/{user}/contactFolders/{nid}/contacts"))
        .await
        .len();
    assert_eq!(total, sim.run.shared.cfg.contacts_per_user);

    let url = format!("/users/{user}/contactFolders/contacts/contacts/delta");
    let (initial, _, link) = sim.all_with(&url, &[IMMUTABLE]).await;
    assert_eq!(
        id_set(&initial),
        id_set(
            &sim.all_with(&format!("/users/{user}/contacts"), &[IMMUTABLE])
                .await
                .0
        )
    );
    let report = sim.admin("advance-day", None).await;
    let (rows, _, _) = sim.all_with(&link.unwrap(), &[IMMUTABLE]).await;
    // A day adds one, edits another and deletes a third.
    let of = |k: &str| -> BTreeSet<String> {
        report["users"][0]["contacts"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (added, changed) = (of("added"), &of("updated") | &of("deleted"));
    let got = id_set(&rows);
    assert!(!changed.is_empty());
    assert_eq!(got, &added | &changed);

    let (_, _, folder_link) = sim
        .all_with(&format!("/users/{user}/contactFolders/delta"), &[])
        .await;
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/contactFolders"),
            &[],
            Some(json!({ "displayName": "Lifeboat Restore" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let cid = created["id"].as_str().unwrap();
    let (changed, _, _) = sim.all_with(&folder_link.unwrap(), &[]).await;
    assert_eq!(id_set(&changed), BTreeSet::from([cid.to_string()]));
    let resp = sim
        .send(Method::POST, &format!("/users/{user}/contactFolders/{cid}/contacts"), &[], Some(json!({ "givenName": "Åsa", "surname": "Öberg", "emailAddresses": [{ "address": "asa@example.org" }] })))
        .await;
    assert_eq!(resp.status(), 201);
    let c: Value = resp.json().await.unwrap();
    assert_eq!(c["parentFolderId"], cid);
    assert_eq!(c["givenName"], "Åsa");
    let got = sim
        .get(&format!(
            "/users/{user}/contacts/{}",
            c["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(got["surname"], "Öberg");
}

#[tokio::test]
async fn calendars_expand_recurrences_and_track_changes() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let calendars = sim.all(&format!("/users/{user}/calendars")).await;
    assert_eq!(calendars.len(), 2);
    assert!(calendars.iter().any(|c| c["isDefaultCalendar"] == true));
    let events = sim.all(&format!("/users/{user}/events?$top=2")).await;
    assert_eq!(
        events.len(),
        4,
        "two series masters and two single events in the default calendar"
    );
    let masters: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "seriesMaster")
        .collect();
    assert!(!masters.is_empty());
    let window = "startDateTime=2025-11-01T00:00:00Z&endDateTime=2026-06-01T00:00:00Z";
    for m in &masters {
        let instances = sim
            .all(&format!(
                "/users/{user}/events/{}/instances?{window}",
                m["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(instances.len(), 10, "numbered range of ten");
        let exceptions: Vec<&Value> = instances
            .iter()
            .filter(|i| i["type"] == "exception")
            .collect();
        assert_eq!(exceptions.len(), 1);
        assert!(instances.iter().all(|i| i["seriesMasterId"] == m["id"]));
        let occ = instances
            .iter()
            .filter(|i| i["type"] == "occurrence")
            .count();
        assert_eq!(occ, 9);
    }
    let view = sim
        .all(&format!("/users/{user}/calendarView?{window}"))
        .await;
    assert_eq!(
        view.len(),
        masters.len() * 10 + (events.len() - masters.len())
    );
    let (status, body) = sim
        .get_with(&format!("/users/{user}/calendarView"), &[])
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "ErrorInvalidParameter");

    let (initial, _, link) = sim
        .all_with(
            &format!("/users/{user}/calendarView/delta?{window}"),
            &[IMMUTABLE, ("Prefer", "odata.maxpagesize=3")],
        )
        .await;
    assert_eq!(initial.len(), view.len());
    let report = sim.admin("advance-day", None).await;
    let (rows, _, _) = sim.all_with(&link.unwrap(), &[IMMUTABLE]).await;
    // A day adds one, edits another and deletes a third.
    let of = |k: &str| -> BTreeSet<String> {
        report["users"][0]["events"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (added, changed) = (of("added"), &of("updated") | &of("deleted"));
    let got = id_set(&rows);
    assert!(!changed.is_empty());
    // The view reports an edited or deleted event only when it falls in its window.
    assert!(
        added.is_subset(&got) && got.is_subset(&(&added | &changed)),
        "{got:?}"
    );

    let body = json!({
        "subject": "Restored series",
        "start": { "dateTime": "2026-02-02T09:00:00", "timeZone": "UTC" },
        "end": { "dateTime": "2026-02-02T09:30:00", "timeZone": "UTC" },
        "recurrence": { "pattern": { "type": "daily", "interval": 2 }, "range": { "type": "numbered", "startDate": "2026-02-02", "numberOfOccurrences": 3 } }
    });
    let resp = sim
        .send(
            Method::POST,
            &format!(
                "/users/{user}/calendars/{}/events",
                calendars[1]["id"].as_str().unwrap()
            ),
            &[],
            Some(body),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["type"], "seriesMaster");
    let inst = sim
        .all(&format!(
            "/users/{user}/events/{}/instances?{window}",
            e["id"].as_str().unwrap()
        ))
        .await;
    let starts: Vec<&str> = inst
        .iter()
        .map(|i| i["start"]["dateTime"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-02-02T09:00:00.0000000",
            "2026-02-04T09:00:00.0000000",
            "2026-02-06T09:00:00.0000000"
        ]
    );
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/events"),
            &[],
            Some(json!({ "body": { "content": "no subject" } })),
        )
        .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn todo_lists_tasks_and_delta() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let lists = sim.all(&format!("/users/{user}/todo/lists")).await;
    assert_eq!(lists.len(), 2);
    let default = lists
        .iter()
        .find(|l| l["wellknownListName"] == "defaultList")
        .unwrap();
    let lid = default["id"].as_str().unwrap();
    let (tasks, pages, _) = sim
        .all_with(&format!("/users/{user}/todo/lists/{lid}/tasks?$top=3"), &[])
        .await;
    assert_eq!(tasks.len(), sim.run.shared.cfg.tasks_per_list);
    assert_eq!(pages, tasks.len().div_ceil(3));
    let (_, _, link) = sim
        .all_with(
            &format!("/users/{user}/todo/lists/{lid}/tasks/delta"),
            &[IMMUTABLE],
        )
        .await;
    let report = sim.admin("advance-day", None).await;
    let (rows, _, _) = sim.all_with(&link.unwrap(), &[IMMUTABLE]).await;
    let want: BTreeSet<String> = report["users"][0]["tasks"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(id_set(&rows), want);
    assert_eq!(
        sim.all(&format!("/users/{user}/todo/lists/delta"))
            .await
            .len(),
        2
    );

    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/todo/lists"),
            &[],
            Some(json!({ "displayName": "Lifeboat Restore" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["wellknownListName"], "none");
    let nl = list["id"].as_str().unwrap();
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/todo/lists/{nl}/tasks"),
            &[],
            Some(json!({ "title": "Steuer", "status": "completed" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/todo/lists/{nl}/tasks"),
            &[],
            Some(json!({ "status": "completed" })),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        error_code(&resp.json().await.unwrap()),
        "ErrorInvalidRequest"
    );
    let t = sim
        .all(&format!("/users/{user}/todo/lists/{nl}/tasks"))
        .await;
    assert_eq!(
        (t.len(), t[0]["status"].as_str().unwrap()),
        (1, "completed")
    );
}

#[tokio::test]
async fn large_attachments_go_through_an_upload_session() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/messages"),
            &[],
            Some(json!({ "subject": "with a big file" })),
        )
        .await;
    let m: Value = resp.json().await.unwrap();
    let mid = m["id"].as_str().unwrap();
    let data: Vec<u8> = (0..(5 << 20) + 7).map(|i| (i % 241) as u8).collect();
    let small_post = sim
        .send(Method::POST, &format!("/users/{user}/messages/{mid}/attachments"), &[], Some(json!({ "@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin", "contentBytes": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data) })))
        .await;
    assert_eq!(small_post.status(), 413, "over 3 MB needs a session");
    let resp = sim
        .send(Method::POST, &format!("/users/{user}/messages/{mid}/attachments/createUploadSession"), &[], Some(json!({ "AttachmentItem": { "attachmentType": "file", "name": "big.bin", "size": data.len() } })))
        .await;
    assert_eq!(resp.status(), 201);
    let session: Value = resp.json().await.unwrap();
    let url = session["uploadUrl"].as_str().unwrap().to_string();
    let cut = 3 << 20;
    let first = sim
        .http
        .put(&url)
        .header(
            "Content-Range",
            format!("bytes 0-{}/{}", cut - 1, data.len()),
        )
        .body(data[..cut].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let v: Value = first.json().await.unwrap();
    assert_eq!(v["nextExpectedRanges"][0], cut.to_string());
    let last = sim
        .http
        .put(&url)
        .header(
            "Content-Range",
            format!("bytes {cut}-{}/{}", data.len() - 1, data.len()),
        )
        .body(data[cut..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 201);
    let location = last.headers()["location"].to_str().unwrap().to_string();
    let aid = location
        .rsplit("Attachments('")
        .next()
        .unwrap()
        .trim_end_matches("')");
    let raw = sim
        .send(
            Method::GET,
            &format!("/users/{user}/messages/{mid}/attachments/{aid}/$value"),
            &[],
            None,
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&raw[..], &data[..]);
    let msg = sim.get(&format!("/users/{user}/messages/{mid}")).await;
    assert_eq!(msg["hasAttachments"], true);
}
