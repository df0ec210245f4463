//! Outlook mail over HTTP: paging, the folder tree, per-folder delta across a simulated day,
//! immutable ids, MIME content and import, and the writes a restore makes.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use common::{error_code, ids, small, start, Sim};
use reqwest::Method;
use serde_json::{json, Value};

const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

/// Every folder of a mailbox, depth first: (id, name, isHidden).
async fn folder_tree(sim: &Sim, user: &str, hidden: bool) -> Vec<(String, String, bool)> {
    let q = if hidden {
        "?includeHiddenFolders=true&$top=3"
    } else {
        "?$top=3"
    };
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    for f in sim.all(&format!("/users/{user}/mailFolders{q}")).await {
        stack.push(f["id"].as_str().unwrap().to_string());
        out.push((
            f["id"].as_str().unwrap().to_string(),
            f["displayName"].as_str().unwrap().to_string(),
            f["isHidden"].as_bool().unwrap(),
        ));
    }
    while let Some(id) = stack.pop() {
        for f in sim
            .all(&format!("/users/{user}/mailFolders/{id}/childFolders{q}"))
            .await
        {
            assert_eq!(f["parentFolderId"], id.as_str());
            stack.push(f["id"].as_str().unwrap().to_string());
            out.push((
                f["id"].as_str().unwrap().to_string(),
                f["displayName"].as_str().unwrap().to_string(),
                f["isHidden"].as_bool().unwrap(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn users_folders_and_messages_page_completely() {
    let sim = start(small()).await;
    let (users, pages, _) = sim
        .all_with("/users?$top=1&$select=id,userPrincipalName", &[])
        .await;
    assert_eq!((users.len(), pages), (3, 3));
    assert!(
        users[0].get("displayName").is_none(),
        "$select keeps only what was asked"
    );
    let domains: BTreeSet<&str> = users
        .iter()
        .map(|u| {
            u["userPrincipalName"]
                .as_str()
                .unwrap()
                .split('@')
                .nth(1)
                .unwrap()
        })
        .collect();
    assert!(domains.len() >= 2, "users span several domains");

    let user = users[0]["id"].as_str().unwrap();
    let visible = folder_tree(&sim, user, false).await;
    let all = folder_tree(&sim, user, true).await;
    assert!(
        all.len() > visible.len(),
        "hidden folders appear only when asked for"
    );
    assert!(visible.iter().all(|f| !f.2));
    assert!(
        all.iter().any(|f| !f.1.is_ascii()),
        "non-ASCII folder names"
    );
    assert!(all.len() >= 14, "a nested tree: {}", all.len());

    let mut total = 0;
    for (id, _, _) in &all {
        let folder = sim.get(&format!("/users/{user}/mailFolders/{id}")).await;
        let (msgs, pages, _) = sim
            .all_with(
                &format!("/users/{user}/mailFolders/{id}/messages?$top=3&$select=subject"),
                &[],
            )
            .await;
        assert_eq!(
            msgs.len() as u64,
            folder["totalItemCount"].as_u64().unwrap()
        );
        assert_eq!(pages, msgs.len().div_ceil(3).max(1));
        total += msgs.len();
        let (again, pages2, _) = sim
            .all_with(
                &format!("/users/{user}/mailFolders/{id}/messages"),
                &[("Prefer", "odata.maxpagesize=4")],
            )
            .await;
        assert_eq!(ids(&again), ids(&msgs));
        assert_eq!(pages2, msgs.len().div_ceil(4).max(1));
    }
    let everything = sim.all(&format!("/users/{user}/messages?$top=50")).await;
    assert_eq!(everything.len(), total);

    let (status, body) = sim
        .get_with(&format!("/users/{user}/messages/AAMkAGI2bogus="), &[])
        .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "ErrorItemNotFound");
    let (status, body) = sim
        .get_with("/users/nobody@contoso.example/messages", &[])
        .await;
    assert_eq!(status, 404);
    error_code(&body);
    let (status, body) = sim.get_with("/me/messages", &[]).await;
    assert_eq!(status, 400);
    error_code(&body);
}

#[derive(Default, Debug, PartialEq)]
struct Changes {
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
}

async fn delta_round(sim: &Sim, url: &str, headers: &[(&str, &str)]) -> (Changes, String, usize) {
    let (rows, pages, delta) = sim.all_with(url, headers).await;
    let mut c = Changes::default();
    for r in rows {
        let id = r["id"].as_str().unwrap().to_string();
        if r.get("@removed").is_some() {
            assert_eq!(r["@removed"]["reason"], "deleted");
            c.removed.insert(id);
        } else {
            assert!(
                r["subject"].is_string() || r.get("isRead").is_some(),
                "changed rows carry the message"
            );
            c.changed.insert(id);
        }
    }
    (c, delta.expect("a round ends with a deltaLink"), pages)
}

async fn delta_round_folders(sim: &Sim, url: &str) -> (BTreeSet<String>, String, usize) {
    let (rows, pages, delta) = sim
        .all_with(url, &[("Prefer", "odata.maxpagesize=4")])
        .await;
    (
        rows.iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect(),
        delta.expect("deltaLink"),
        pages,
    )
}

#[tokio::test]
async fn message_delta_reports_exactly_a_days_changes() {
    let sim = start(small()).await;
    for imm in [false, true] {
        let headers: Vec<(&str, &str)> = if imm {
            vec![IMMUTABLE, ("Prefer", "odata.maxpagesize=2")]
        } else {
            vec![("Prefer", "odata.maxpagesize=2")]
        };
        let users = sim.all("/users").await;
        let mut links: BTreeMap<(String, String), String> = BTreeMap::new();
        for u in &users {
            let user = u["id"].as_str().unwrap();
            for (folder, _, _) in folder_tree(&sim, user, true).await {
                let url = format!("/users/{user}/mailFolders/{folder}/messages/delta");
                let (initial, link, pages) = delta_round(&sim, &url, &headers).await;
                let listed = sim
                    .all_with(
                        &format!("/users/{user}/mailFolders/{folder}/messages?$top=100"),
                        &headers,
                    )
                    .await
                    .0;
                assert_eq!(
                    initial.changed,
                    ids(&listed).into_iter().collect(),
                    "initial round lists the folder"
                );
                assert!(initial.removed.is_empty());
                assert_eq!(pages, listed.len().div_ceil(2).max(1));
                links.insert(
                    (u["userPrincipalName"].as_str().unwrap().to_string(), folder),
                    link,
                );
            }
        }
        let user0 = users[0]["id"].as_str().unwrap();
        let (_, folder_link, _) =
            delta_round_folders(&sim, &format!("/users/{user0}/mailFolders/delta")).await;
        let report = sim.admin("advance-day", None).await;
        let (changed_folders, _, _) = delta_round_folders(&sim, &folder_link).await;
        let created = report["users"][0]["mail"]["newFolders"][0]
            .as_str()
            .unwrap();
        assert!(
            changed_folders.contains(created),
            "the folder delta reports the new folder"
        );
        let key = if imm { "immutableId" } else { "id" };
        let mut expected: BTreeMap<(String, String), Changes> = BTreeMap::new();
        for u in report["users"].as_array().unwrap() {
            let upn = u["user"].as_str().unwrap().to_string();
            let mail = &u["mail"];
            for kind in ["added", "updated"] {
                for m in mail[kind].as_array().unwrap() {
                    expected
                        .entry((upn.clone(), m["folderId"].as_str().unwrap().into()))
                        .or_default()
                        .changed
                        .insert(m[key].as_str().unwrap().into());
                }
            }
            for m in mail["deleted"].as_array().unwrap() {
                expected
                    .entry((upn.clone(), m["folderId"].as_str().unwrap().into()))
                    .or_default()
                    .removed
                    .insert(m[key].as_str().unwrap().into());
            }
            for m in mail["moved"].as_array().unwrap() {
                let (old, new) = if imm {
                    (m["immutableId"].clone(), m["immutableId"].clone())
                } else {
                    (m["oldId"].clone(), m["newId"].clone())
                };
                expected
                    .entry((upn.clone(), m["fromFolderId"].as_str().unwrap().into()))
                    .or_default()
                    .removed
                    .insert(old.as_str().unwrap().into());
                expected
                    .entry((upn.clone(), m["toFolderId"].as_str().unwrap().into()))
                    .or_default()
                    .changed
                    .insert(new.as_str().unwrap().into());
                assert_ne!(m["oldId"], m["newId"], "the default id changes on a move");
            }
            assert!(
                !mail["moved"].as_array().unwrap().is_empty()
                    && !mail["deleted"].as_array().unwrap().is_empty()
            );
        }
        let mut seen = 0;
        for ((upn, folder), link) in &links {
            let (got, next, _) = delta_round(&sim, link, &headers).await;
            let want = expected
                .remove(&(upn.clone(), folder.clone()))
                .unwrap_or_default();
            assert_eq!(got, want, "folder {folder} of {upn}");
            seen += got.changed.len() + got.removed.len();
            let (quiet, _, _) = delta_round(&sim, &next, &headers).await;
            assert_eq!(
                quiet,
                Changes::default(),
                "nothing more after the day's changes"
            );
        }
        // What remains is in folders created today: the folder delta finds them, and their
        // initial round holds exactly the day's messages.
        let mut new_folders = BTreeSet::new();
        for u in report["users"].as_array().unwrap() {
            for f in u["mail"]["newFolders"].as_array().unwrap() {
                new_folders.insert((
                    u["user"].as_str().unwrap().to_string(),
                    f.as_str().unwrap().to_string(),
                ));
            }
        }
        assert_eq!(expected.len(), new_folders.len());
        for ((upn, folder), want) in std::mem::take(&mut expected) {
            assert!(
                new_folders.contains(&(upn.clone(), folder.clone())),
                "changes in a folder never synced: {folder}"
            );
            let user = users
                .iter()
                .find(|u| u["userPrincipalName"] == upn.as_str())
                .unwrap()["id"]
                .as_str()
                .unwrap();
            let (got, _, _) = delta_round(
                &sim,
                &format!("/users/{user}/mailFolders/{folder}/messages/delta"),
                &headers,
            )
            .await;
            assert_eq!(got, want);
        }
        assert!(seen > 10);
    }
}

#[tokio::test]
async fn expired_delta_token_is_gone() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let (_, link, _) = delta_round(
        &sim,
        &format!("/users/{user}/mailFolders/inbox/messages/delta"),
        &[],
    )
    .await;
    sim.admin("expire-delta", None).await;
    let (status, body) = sim.get_with(&link, &[]).await;
    assert_eq!(status, 410);
    assert_eq!(error_code(&body), "syncStateNotFound");
    let (status, body) = sim
        .get_with(
            &format!("/users/{user}/mailFolders/inbox/messages/delta?$deltatoken=garbage"),
            &[],
        )
        .await;
    assert_eq!(status, 400);
    error_code(&body);
    // A new initial round works.
    delta_round(
        &sim,
        &format!("/users/{user}/mailFolders/inbox/messages/delta"),
        &[],
    )
    .await;
}

#[tokio::test]
async fn immutable_ids_survive_a_move_and_default_ids_do_not() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let inbox = sim.get(&format!("/users/{user}/mailFolders/inbox")).await;
    let archive = sim.get(&format!("/users/{user}/mailFolders/archive")).await;
    let first = sim
        .get(&format!("/users/{user}/mailFolders/inbox/messages?$top=1"))
        .await["value"][0]
        .clone();
    let default_id = first["id"].as_str().unwrap().to_string();
    let (_, imm) = sim
        .get_with(
            &format!("/users/{user}/messages/{default_id}"),
            &[IMMUTABLE],
        )
        .await;
    let imm_id = imm["id"].as_str().unwrap().to_string();
    assert_ne!(imm_id, default_id);

    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/messages/{default_id}/move"),
            &[],
            Some(json!({ "destinationId": "archive" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let moved: Value = resp.json().await.unwrap();
    let new_default = moved["id"].as_str().unwrap();
    assert_ne!(new_default, default_id);
    assert_eq!(moved["parentFolderId"], archive["id"]);
    assert_ne!(moved["parentFolderId"], inbox["id"]);

    let (status, body) = sim
        .get_with(&format!("/users/{user}/messages/{default_id}"), &[])
        .await;
    assert_eq!(status, 404, "the old default id is gone");
    assert_eq!(error_code(&body), "ErrorItemNotFound");
    let (status, again) = sim
        .get_with(&format!("/users/{user}/messages/{imm_id}"), &[IMMUTABLE])
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], imm_id.as_str());
    assert_eq!(again["parentFolderId"], archive["id"]);
    let resp = sim
        .send(
            Method::GET,
            &format!("/users/{user}/messages/{imm_id}"),
            &[IMMUTABLE],
            None,
        )
        .await;
    assert_eq!(
        resp.headers()["preference-applied"],
        "IdType=\"ImmutableId\""
    );
}

#[tokio::test]
async fn mime_content_and_import_round_trip() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let msgs = sim.all(&format!("/users/{user}/messages?$top=100")).await;
    let with_att = msgs
        .iter()
        .find(|m| m["hasAttachments"] == true)
        .expect("a message with attachments");
    let id = with_att["id"].as_str().unwrap();
    let mime = sim
        .send(
            Method::GET,
            &format!("/users/{user}/messages/{id}/$value"),
            &[],
            None,
        )
        .await
        .bytes()
        .await
        .unwrap();
    let again = sim
        .send(
            Method::GET,
            &format!("/users/{user}/messages/{id}/$value"),
            &[],
            None,
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(mime, again, "the same message gives the same MIME");
    let parsed = mail_parser::MessageParser::default()
        .parse(&mime[..])
        .expect("valid MIME");
    assert_eq!(
        parsed.subject().unwrap(),
        with_att["subject"].as_str().unwrap()
    );
    let atts = sim
        .get(&format!("/users/{user}/messages/{id}/attachments"))
        .await;
    let atts = atts["value"].as_array().unwrap();
    assert_eq!(parsed.attachment_count(), atts.len());
    let first_bytes = base64::engine::general_purpose::STANDARD
        .decode(atts[0]["contentBytes"].as_str().unwrap())
        .unwrap();
    assert_eq!(parsed.attachment(0).unwrap().contents(), &first_bytes[..]);
    assert_eq!(
        atts[0]["size"].as_u64().unwrap() as usize,
        first_bytes.len()
    );

    // Import it elsewhere as MIME: the content comes back byte for byte, as a draft.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&mime);
    let resp = sim
        .http
        .post(sim.url(&format!("/users/{user}/mailFolders/archive/messages")))
        .bearer_auth(&sim.token)
        .header("Content-Type", "text/plain")
        .body(encoded)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["isDraft"], true, "MIME imports are drafts");
    assert_eq!(created["subject"], with_att["subject"]);
    assert_eq!(created["hasAttachments"], true);
    let cid = created["id"].as_str().unwrap();
    let back = sim
        .send(
            Method::GET,
            &format!("/users/{user}/messages/{cid}/$value"),
            &[],
            None,
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(back, mime);

    let resp = sim
        .http
        .post(sim.url(&format!("/users/{user}/messages")))
        .bearer_auth(&sim.token)
        .header("Content-Type", "text/plain")
        .body("!!! not base64 !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    error_code(&resp.json().await.unwrap());
}

#[tokio::test]
async fn restore_writes_folders_messages_and_flags() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders"),
            &[],
            Some(json!({ "displayName": "Lifeboat Restore 2026-01-05T08:00:00Z" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let top: Value = resp.json().await.unwrap();
    let top_id = top["id"].as_str().unwrap();
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders"),
            &[],
            Some(json!({ "displayName": "Lifeboat Restore 2026-01-05T08:00:00Z" })),
        )
        .await;
    assert_eq!(resp.status(), 409);
    assert_eq!(error_code(&resp.json().await.unwrap()), "ErrorFolderExists");
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders/{top_id}/childFolders"),
            &[],
            Some(json!({ "displayName": "Réunions" })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let child: Value = resp.json().await.unwrap();
    assert_eq!(child["parentFolderId"], top_id);
    let child_id = child["id"].as_str().unwrap();

    let body = json!({
        "subject": "Restored ✓",
        "body": { "contentType": "html", "content": "<p>hi</p>" },
        "from": { "emailAddress": { "name": "A", "address": "a@contoso.example" } },
        "toRecipients": [{ "emailAddress": { "address": "b@contoso.example" } }],
        "singleValueExtendedProperties": [
            { "id": "Integer 0x0E07", "value": "1" },
            { "id": "SystemTime 0x0E06", "value": "2025-03-04T05:06:07Z" }
        ],
        "attachments": [{ "@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentType": "text/plain", "contentBytes": "aGVsbG8=" }]
    });
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders/{child_id}/messages"),
            &[],
            Some(body),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let m: Value = resp.json().await.unwrap();
    assert_eq!(
        m["isDraft"], false,
        "PR_MESSAGE_FLAGS without MSGFLAG_UNSENT at creation"
    );
    assert_eq!(m["isRead"], true);
    assert_eq!(m["receivedDateTime"], "2025-03-04T05:06:07Z");
    assert_eq!(m["parentFolderId"], child_id);
    assert_eq!(m["hasAttachments"], true);
    let id = m["id"].as_str().unwrap();

    let resp = sim
        .send(
            Method::PATCH,
            &format!("/users/{user}/messages/{id}"),
            &[],
            Some(json!({ "isRead": false, "flag": { "flagStatus": "flagged" } })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(
        (p["isRead"].clone(), p["flag"]["flagStatus"].clone()),
        (json!(false), json!("flagged"))
    );

    // A message created without the flags property is a draft, and stays one.
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders/{child_id}/messages"),
            &[],
            Some(json!({ "subject": "plain" })),
        )
        .await;
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["isDraft"], true);
    let did = d["id"].as_str().unwrap();
    let resp = sim
        .send(Method::PATCH, &format!("/users/{user}/messages/{did}"), &[], Some(json!({ "singleValueExtendedProperties": [{ "id": "Integer 0x0E07", "value": "1" }] })))
        .await;
    let d: Value = resp.json().await.unwrap();
    assert_eq!(
        d["isDraft"], true,
        "the unsent flag cannot be cleared after creation"
    );
    let expanded = sim.get(&format!("/users/{user}/messages/{id}?$expand=singleValueExtendedProperties($filter=id eq 'SystemTime 0x0E06')")).await;
    assert!(expanded["singleValueExtendedProperties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "SystemTime 0x0E06"));

    let listed = sim
        .all(&format!("/users/{user}/mailFolders/{child_id}/messages"))
        .await;
    assert_eq!(listed.len(), 2);
    let resp = sim
        .send(
            Method::POST,
            &format!("/users/{user}/mailFolders/{child_id}/messages"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 400, "no body is a bad request");
}

#[tokio::test]
async fn change_type_narrows_a_delta_round() {
    let sim = start(small()).await;
    let users = sim.all("/users").await;
    let user = users[0]["id"].as_str().unwrap();
    let mut links = Vec::new();
    for ct in ["created", "updated", "deleted"] {
        let (_, link, _) = delta_round(
            &sim,
            &format!("/users/{user}/mailFolders/inbox/messages/delta?changeType={ct}"),
            &[],
        )
        .await;
        links.push((ct, link));
    }
    let report = sim.admin("advance-day", None).await;
    let mail = &report["users"][0]["mail"];
    let inbox = sim.get(&format!("/users/{user}/mailFolders/inbox")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let in_inbox = |kind: &str, key: &str, folder_key: &str| -> BTreeSet<String> {
        mail[kind]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m[folder_key] == inbox.as_str())
            .map(|m| m[key].as_str().unwrap().to_string())
            .collect()
    };
    for (ct, link) in links {
        let (got, _, _) = delta_round(&sim, &link, &[]).await;
        match ct {
            "created" => {
                assert_eq!(got.changed, in_inbox("added", "id", "folderId"));
                assert!(got.removed.is_empty());
            }
            "updated" => {
                assert_eq!(got.changed, in_inbox("updated", "id", "folderId"));
                assert!(got.removed.is_empty());
            }
            _ => {
                let mut want = in_inbox("deleted", "id", "folderId");
                want.extend(in_inbox("moved", "oldId", "fromFolderId"));
                assert!(got.changed.is_empty());
                assert_eq!(got.removed, want);
            }
        }
    }
}
