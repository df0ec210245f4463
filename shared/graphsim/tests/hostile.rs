//! What real tenants serve where a lenient simulator would not: per-item and per-site
//! 403s with Graph's codes, 500 and 502 (scripted and at a rate), `Retry-After` of an
//! hour, Office files served larger than listed, search folders, and folders deleted
//! between the listing and their delta.

mod common;

use common::{error_code, small, start};
use serde_json::json;

#[tokio::test]
async fn forbidden_items_and_sites_answer_403_with_their_code() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let msgs = sim
        .all(&format!("/users/{user}/mailFolders/inbox/messages"))
        .await;
    let (bad, good) = (
        msgs[0]["id"].as_str().unwrap().to_string(),
        msgs[1]["id"].as_str().unwrap().to_string(),
    );
    let drive = sim.get(&format!("/users/{user}/drive")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let files: Vec<serde_json::Value> = sim
        .all(&format!("/drives/{drive}/root/delta"))
        .await
        .into_iter()
        .filter(|r| r.get("file").is_some())
        .collect();
    let malware = files[0]["id"].as_str().unwrap().to_string();
    let site = sim.get("/sites?search=*").await["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    sim.admin(
        "faults",
        Some(json!({ "forbidden": {
            bad.clone(): "ErrorAccessDenied",
            malware.clone(): "malwareDetected",
            site.clone(): "accessDenied",
        }})),
    )
    .await;
    let (status, body) = sim
        .get_with(&format!("/users/{user}/messages/{bad}/$value"), &[])
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "ErrorAccessDenied")
    );
    let resp = sim
        .send(
            reqwest::Method::GET,
            &format!("/users/{user}/messages/{good}/$value"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200, "other messages are served");
    // The pre-authenticated download URL refuses the file too, not only Graph's path.
    let url = files[0]["@microsoft.graph.downloadUrl"].as_str().unwrap();
    let resp = sim.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(error_code(&resp.json().await.unwrap()), "malwareDetected");
    let (status, body) = sim
        .get_with(&format!("/drives/{drive}/items/{malware}/content"), &[])
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (403, "malwareDetected")
    );
    let (status, body) = sim.get_with(&format!("/sites/{site}/drives"), &[]).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "accessDenied"));
    // Listings are not refused: the tenant shows what it will not serve.
    assert_eq!(
        sim.get_with(&format!("/drives/{drive}/root/delta"), &[])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn server_errors_are_scripted_per_item_and_drawn_at_a_rate() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let msgs = sim
        .all(&format!("/users/{user}/mailFolders/inbox/messages"))
        .await;
    let id = msgs[0]["id"].as_str().unwrap().to_string();
    sim.admin(
        "faults/script",
        Some(json!([
            { "status": 500, "path_contains": id.clone(), "times": 2, "after": 1 },
            { "status": 502, "path_contains": id.clone() },
            { "status": 429, "path_contains": id.clone(), "retry_after": 3600 },
        ])),
    )
    .await;
    let path = format!("/users/{user}/messages/{id}/$value");
    for want in [200, 500, 500, 502] {
        let (status, body) = sim.get_with(&path, &[]).await;
        assert_eq!(status, want);
        if want != 200 {
            error_code(&body);
        }
    }
    let resp = sim.send(reqwest::Method::GET, &path, &[], None).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3600");
    assert_eq!(sim.get_with(&path, &[]).await.0, 200, "the script is spent");

    sim.admin(
        "faults",
        Some(json!({ "server_error_rate": 0.25, "bad_gateway_rate": 0.25 })),
    )
    .await;
    let mut seen = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..60 {
        *seen.entry(sim.get_with("/users", &[]).await.0).or_default() += 1;
    }
    assert!(seen.get(&500).is_some_and(|n| *n >= 5), "{seen:?}");
    assert!(seen.get(&502).is_some_and(|n| *n >= 5), "{seen:?}");
    assert!(seen.get(&200).is_some_and(|n| *n >= 10), "{seen:?}");
}

#[tokio::test]
async fn an_enriched_file_is_served_larger_than_listed() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let drive = sim.get(&format!("/users/{user}/drive")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = sim
        .all(&format!("/drives/{drive}/root/delta"))
        .await
        .into_iter()
        .find(|r| r.get("file").is_some())
        .unwrap();
    let id = file["id"].as_str().unwrap().to_string();
    let listed = file["size"].as_u64().unwrap();
    let original = {
        let s = sim.run.shared.sim();
        let d = &s.drives[&drive];
        d.items[&d.by_id[&id]].content.clone().unwrap()
    };
    sim.admin("faults", Some(json!({ "enriched": { id.clone(): 1234 } })))
        .await;
    let url = file["@microsoft.graph.downloadUrl"].as_str().unwrap();
    let got = sim
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len() as u64, listed + 1234);
    assert_eq!(&got[..listed as usize], &original.range(0, listed)[..]);
    assert_eq!(
        &got[listed as usize..],
        &graphsim::hostile::enrichment(&id, 1234)[..]
    );
    // The listing keeps the size the library records.
    let again = sim.get(&format!("/drives/{drive}/items/{id}")).await;
    assert_eq!(again["size"].as_u64(), Some(listed));
    // A range over the end reads the added bytes.
    let resp = sim
        .http
        .get(url)
        .header("Range", format!("bytes={}-", listed + 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().len(), 234);
    // Downloads fail as Graph's requests do, per item.
    sim.admin(
        "faults/script",
        Some(json!({ "status": 502, "path_contains": format!("_dl/{drive}/{id}") })),
    )
    .await;
    let resp = sim.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(error_code(&resp.json().await.unwrap()), "BadGateway");
    assert_eq!(sim.http.get(url).send().await.unwrap().status(), 200);
    // A download that breaks off sends half its bytes, then drops the connection; the
    // rest is there for a `Range` request, and the next download is whole.
    sim.admin(
        "faults",
        Some(json!({ "cut_downloads": { id.clone(): 1 } })),
    )
    .await;
    let total = listed + 1234;
    let mut resp = sim.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut head = Vec::new();
    let broke = loop {
        match resp.chunk().await {
            Ok(Some(c)) => head.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broke, "the body ends in an error, not as a short success");
    assert_eq!(head.len() as u64, total / 2);
    assert_eq!(&head[..], &got[..head.len()]);
    let resp = sim
        .http
        .get(url)
        .header("Range", format!("bytes={}-", head.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    head.extend_from_slice(&resp.bytes().await.unwrap());
    assert_eq!(head, got);
    let whole = sim.http.get(url).send().await.unwrap().bytes().await;
    assert_eq!(whole.unwrap(), got);
}

#[tokio::test]
async fn search_folders_are_listed_by_type_and_show_other_folders_messages() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let made = sim
        .admin(
            "search-folder",
            Some(json!({ "user": user, "name": "Unread mail", "source": "inbox" })),
        )
        .await;
    let id = made["id"].as_str().unwrap().to_string();
    let children = sim
        .all(&format!("/users/{user}/mailFolders/inbox/childFolders"))
        .await;
    let sf = children.iter().find(|f| f["id"] == id.as_str()).unwrap();
    assert_eq!(sf["@odata.type"], "#microsoft.graph.mailSearchFolder");
    assert_eq!(sf["isSupported"], true);
    let inbox = sim
        .all(&format!("/users/{user}/mailFolders/inbox/messages/delta"))
        .await;
    let shown = sim
        .all(&format!("/users/{user}/mailFolders/{id}/messages/delta"))
        .await;
    assert!(!shown.is_empty());
    assert_eq!(common::ids(&shown), common::ids(&inbox));
}

#[tokio::test]
async fn a_folder_deleted_before_its_delta_has_no_sync_state() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let folders = sim
        .all(&format!("/users/{user}/mailFolders/inbox/childFolders"))
        .await;
    let id = folders[0]["id"].as_str().unwrap().to_string();
    sim.admin(
        "faults",
        Some(json!({ "delete_before_delta": [id.clone()] })),
    )
    .await;
    let (status, body) = sim
        .get_with(
            &format!("/users/{user}/mailFolders/{id}/messages/delta"),
            &[],
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "ErrorSyncFolderNotFound")
    );
    let (status, _) = sim
        .get_with(&format!("/users/{user}/mailFolders/{id}"), &[])
        .await;
    assert_eq!(status, 404, "the folder is gone");
}
