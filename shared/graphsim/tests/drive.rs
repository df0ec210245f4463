//! OneDrive and SharePoint over HTTP: drive delta across a day (with the deleted facet),
//! resync, downloads with Range, simple and session uploads, folders, sites and lists.

mod common;

use std::collections::BTreeSet;

use common::{error_code, small, start, Sim};
use reqwest::Method;
use serde_json::{json, Value};

async fn walk(sim: &Sim, drive: &str) -> BTreeSet<String> {
    let root = sim.get(&format!("/drives/{drive}/root")).await;
    let mut out = BTreeSet::from([root["id"].as_str().unwrap().to_string()]);
    let mut stack = vec![root["id"].as_str().unwrap().to_string()];
    while let Some(id) = stack.pop() {
        for c in sim
            .all(&format!("/drives/{drive}/items/{id}/children?$top=2"))
            .await
        {
            let cid = c["id"].as_str().unwrap().to_string();
            if c.get("folder").is_some() {
                stack.push(cid.clone());
            }
            out.insert(cid);
        }
    }
    out
}

#[tokio::test]
async fn drive_delta_reports_a_days_changes_with_deleted_facet() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let drive = sim.get(&format!("/users/{user}/drive")).await;
    assert_eq!(drive["driveType"], "business");
    let d = drive["id"].as_str().unwrap().to_string();
    let (rows, pages, link) = sim
        .all_with(&format!("/drives/{d}/root/delta?$top=3"), &[])
        .await;
    assert!(pages > 3);
    let delta_ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        delta_ids,
        walk(&sim, &d).await,
        "the initial round enumerates the whole drive"
    );
    assert!(rows.iter().any(|r| r.get("root").is_some()));
    let link = link.unwrap();

    let report = sim.admin("advance-day", None).await;
    let mine = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["drive"]["driveId"] == d.as_str())
        .unwrap();
    let set = |k: &str| -> BTreeSet<String> {
        mine["drive"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (added, modified, deleted) = (set("added"), set("modified"), set("deleted"));
    let moved = set("moved");
    assert!(!added.is_empty() && !modified.is_empty() && !deleted.is_empty());
    assert!(!moved.is_empty());

    let (rows, _, next) = sim.all_with(&link, &[]).await;
    let mut got_deleted = BTreeSet::new();
    let mut got_files = BTreeSet::new();
    for r in &rows {
        let id = r["id"].as_str().unwrap().to_string();
        if r.get("deleted").is_some() {
            assert_eq!(r["deleted"]["state"], "deleted");
            got_deleted.insert(id);
        } else if r.get("file").is_some() {
            assert!(r["@microsoft.graph.downloadUrl"].is_string());
            got_files.insert(id);
        } else {
            assert!(
                r.get("folder").is_some(),
                "besides files only their parent folders appear"
            );
        }
    }
    assert_eq!(got_deleted, deleted);
    let changed: BTreeSet<String> = added.union(&modified).cloned().collect();
    assert_eq!(got_files, changed.union(&moved).cloned().collect());
    let (quiet, _, _) = sim.all_with(&next.unwrap(), &[]).await;
    assert!(quiet.is_empty());

    // token=latest gives a link without enumerating; an expired token asks for a resync.
    let latest = sim
        .get(&format!("/drives/{d}/root/delta?token=latest"))
        .await;
    assert!(latest["value"].as_array().unwrap().is_empty());
    let latest_link = latest["@odata.deltaLink"].as_str().unwrap().to_string();
    sim.admin("expire-delta", None).await;
    let resp = sim.send(Method::GET, &latest_link, &[], None).await;
    assert_eq!(resp.status(), 410);
    assert!(resp.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("/root/delta"));
    assert_eq!(error_code(&resp.json().await.unwrap()), "resyncRequired");
}

#[tokio::test]
async fn content_redirects_to_a_download_url_that_honours_range() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let d = sim.get(&format!("/users/{user}/drive")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (rows, _, _) = sim.all_with(&format!("/drives/{d}/root/delta"), &[]).await;
    let big = rows
        .iter()
        .filter(|r| r.get("file").is_some())
        .max_by_key(|r| r["size"].as_u64().unwrap())
        .unwrap();
    let size = big["size"].as_u64().unwrap();
    assert!(size >= 5 << 20, "some files are several MiB");
    let id = big["id"].as_str().unwrap();

    let resp = sim
        .send(
            Method::GET,
            &format!("/drives/{d}/items/{id}/content"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    // The download URL is pre-authenticated: no bearer token.
    let whole = sim.http.get(&location).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap();
    assert_eq!(whole.len() as u64, size);

    let part = sim
        .http
        .get(&location)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-1999/{size}").as_str()
    );
    assert_eq!(part.bytes().await.unwrap(), whole.slice(1000..2000));
    let tail = sim
        .http
        .get(&location)
        .header("Range", format!("bytes={}-", size - 10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tail.bytes().await.unwrap(),
        whole.slice((size as usize - 10)..)
    );
    let bad = sim
        .http
        .get(&location)
        .header("Range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 416);
    let again = sim
        .http
        .get(&location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, whole, "content is stable");

    let resp = sim
        .http
        .get(format!("{}/_dl/forged", sim.run.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn uploads_folders_and_sessions() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let d = sim.get(&format!("/users/{user}/drive")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = sim
        .send(
            Method::POST,
            &format!("/drives/{d}/root/children"),
            &[],
            Some(json!({ "name": "Lifeboat Restore 2026", "folder": {} })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let folder: Value = resp.json().await.unwrap();
    let fid = folder["id"].as_str().unwrap();
    let resp = sim
        .send(
            Method::POST,
            &format!("/drives/{d}/root/children"),
            &[],
            Some(json!({ "name": "Lifeboat Restore 2026", "folder": {} })),
        )
        .await;
    assert_eq!(resp.status(), 409);
    assert_eq!(error_code(&resp.json().await.unwrap()), "nameAlreadyExists");

    // Simple upload by path.
    let body = "Grüße aus dem Rettungsboot\n".repeat(100);
    let resp = sim
        .http
        .put(sim.url(&format!(
            "/drives/{d}/root:/Lifeboat Restore 2026/grüße.txt:/content"
        )))
        .bearer_auth(&sim.token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let file: Value = resp.json().await.unwrap();
    assert_eq!(file["size"].as_u64().unwrap() as usize, body.len());
    assert_eq!(file["parentReference"]["id"], fid);
    let by_path = sim
        .get(&format!(
            "/drives/{d}/root:/Lifeboat Restore 2026/grüße.txt"
        ))
        .await;
    assert_eq!(by_path["id"], file["id"]);
    let loc = sim
        .send(
            Method::GET,
            &format!("/drives/{d}/items/{}/content", file["id"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    let got = sim
        .http
        .get(loc.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(got, body);
    let too_big = sim
        .http
        .put(sim.url(&format!("/drives/{d}/items/{fid}:/big.bin:/content")))
        .bearer_auth(&sim.token)
        .body(vec![0u8; (4 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        error_code(&too_big.json().await.unwrap()),
        "requestTooLarge"
    );

    // An upload session in 320 KiB multiples.
    let resp = sim
        .send(
            Method::POST,
            &format!("/drives/{d}/items/{fid}:/video.mp4:/createUploadSession"),
            &[],
            Some(json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["nextExpectedRanges"][0], "0-");
    let url = session["uploadUrl"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..(5 * 320 * 1024 + 12345))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let total = data.len();
    let chunk = 2 * 320 * 1024;
    let odd = sim
        .http
        .put(&url)
        .header("Content-Range", format!("bytes 0-99999/{total}"))
        .body(data[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 400, "fragments must be multiples of 320 KiB");
    let mut start = 0;
    let mut last = None;
    while start < total {
        let end = (start + chunk).min(total);
        let resp = sim
            .http
            .put(&url)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{total}", end - 1),
            )
            .body(data[start..end].to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        if end < total {
            assert_eq!(status, 202);
            assert_eq!(v["nextExpectedRanges"][0], format!("{end}-"));
            let replay = sim
                .http
                .put(&url)
                .header(
                    "Content-Range",
                    format!("bytes {start}-{}/{total}", end - 1),
                )
                .body(data[start..end].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(replay.status(), 416, "an overlapping fragment is refused");
        } else {
            assert_eq!(status, 201);
            last = Some(v);
        }
        start = end;
    }
    let item = last.unwrap();
    assert_eq!(item["size"].as_u64().unwrap() as usize, total);
    assert_eq!(item["name"], "video.mp4");
    let loc = sim
        .send(
            Method::GET,
            &format!("/drives/{d}/items/{}/content", item["id"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    let got = sim
        .http
        .get(loc.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..]);
    let gone = sim
        .http
        .put(&url)
        .header("Content-Range", format!("bytes 0-9/{total}"))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "a finished session is gone");
}

#[tokio::test]
async fn sites_subsites_libraries_and_lists() {
    let sim = start(graphsim::Config {
        sites: 2,
        ..small()
    })
    .await;
    let root = sim.get("/sites/root").await;
    assert!(root.get("root").is_some());
    let collections = sim.all("/sites?search=*").await;
    assert_eq!(
        collections.len(),
        3,
        "the root site and two site collections"
    );
    let mut all = Vec::new();
    let mut stack: Vec<String> = collections
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    while let Some(id) = stack.pop() {
        all.push(id.clone());
        for s in sim.all(&format!("/sites/{id}/sites?$top=1")).await {
            stack.push(s["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(all.len(), 3 + 2 * 3, "sub-sites are found recursively");
    let team = collections.iter().find(|s| s["name"] == "Team0").unwrap();
    let tid = team["id"].as_str().unwrap();
    let by_path = sim
        .get(&format!(
            "/sites/{}:/sites/Team0",
            root["siteCollection"]["hostname"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_path["id"], team["id"]);
    let drives = sim.all(&format!("/sites/{tid}/drives")).await;
    assert_eq!(drives[0]["driveType"], "documentLibrary");
    let did = drives[0]["id"].as_str().unwrap();
    assert!(!sim
        .all(&format!("/drives/{did}/root/delta"))
        .await
        .is_empty());
    let lists = sim.all(&format!("/sites/{tid}/lists")).await;
    let generic = lists
        .iter()
        .find(|l| l["list"]["template"] == "genericList")
        .unwrap();
    let lid = generic["id"].as_str().unwrap();
    let (items, pages, _) = sim
        .all_with(
            &format!("/sites/{tid}/lists/{lid}/items?expand=fields&$top=2"),
            &[],
        )
        .await;
    assert!(pages >= 3);
    assert!(items.iter().all(|i| i["fields"]["Title"].is_string()));
    let resp = sim
        .send(
            Method::POST,
            &format!("/sites/{tid}/lists/{lid}/items"),
            &[],
            Some(json!({ "fields": { "Title": "Restored issue" } })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        sim.all(&format!("/sites/{tid}/lists/{lid}/items"))
            .await
            .len(),
        items.len() + 1
    );
    let (status, body) = sim
        .get_with(
            "/sites/contoso.sharepoint.example,00000000-0000-0000-0000-000000000000,x",
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "itemNotFound");
}
