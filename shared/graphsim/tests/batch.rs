//! JSON batching over HTTP: per-request statuses, dependsOn, limits, binary bodies.

mod common;

use base64::Engine;
use common::{error_code, small, start};
use serde_json::{json, Value};

#[tokio::test]
async fn batch_answers_each_request() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let msg = sim.get(&format!("/users/{user}/messages?$top=1")).await["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({ "requests": [
        { "id": "1", "method": "GET", "url": "/users?$top=2" },
        { "id": "2", "method": "GET", "url": format!("/users/{user}/messages/AAMkAGI2missing=") },
        { "id": "3", "method": "GET", "url": format!("/users/{user}/mailFolders/inbox"), "dependsOn": ["1"] },
        { "id": "4", "method": "GET", "url": format!("/users/{user}/messages/{msg}"), "dependsOn": ["2"] },
        { "id": "5", "method": "GET", "url": format!("/users/{user}/messages/{msg}/$value") },
        { "id": "6", "method": "POST", "url": format!("/users/{user}/mailFolders"), "headers": { "Content-Type": "application/json" }, "body": { "displayName": "Aus dem Batch" } },
    ]});
    let resp = sim
        .send(reqwest::Method::POST, "/$batch", &[], Some(body))
        .await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    let by_id = |id: &str| {
        out["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("1")["body"]["value"].as_array().unwrap().len(), 2);
    assert!(by_id("1")["body"]["@odata.nextLink"].is_string());
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(error_code(&by_id("2")["body"]), "ErrorItemNotFound");
    assert_eq!(by_id("3")["status"], 200);
    assert_eq!(
        by_id("4")["status"],
        424,
        "a failed dependency fails the dependant"
    );
    assert_eq!(by_id("5")["status"], 200);
    let mime = base64::engine::general_purpose::STANDARD
        .decode(by_id("5")["body"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8_lossy(&mime).contains("Subject:"));
    assert_eq!(by_id("6")["status"], 201);
    assert_eq!(by_id("6")["body"]["displayName"], "Aus dem Batch");

    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({ "id": i.to_string(), "method": "GET", "url": "/users" }))
        .collect();
    let resp = sim
        .send(
            reqwest::Method::POST,
            "/$batch",
            &[],
            Some(json!({ "requests": too_many })),
        )
        .await;
    assert_eq!(resp.status(), 400);
    error_code(&resp.json().await.unwrap());
    let dup = json!({ "requests": [{ "id": "1", "method": "GET", "url": "/users" }, { "id": "1", "method": "GET", "url": "/users" }] });
    let resp = sim
        .send(reqwest::Method::POST, "/$batch", &[], Some(dup))
        .await;
    assert_eq!(resp.status(), 400);

    // Inner requests are throttled individually, with their own Retry-After.
    sim.admin(
        "faults/script",
        Some(json!({ "status": 429, "path_contains": "mailFolders" })),
    )
    .await;
    let body = json!({ "requests": [
        { "id": "a", "method": "GET", "url": "/users" },
        { "id": "b", "method": "GET", "url": format!("/users/{user}/mailFolders") },
    ]});
    let out: Value = sim
        .send(reqwest::Method::POST, "/$batch", &[], Some(body))
        .await
        .json()
        .await
        .unwrap();
    let b = out["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "b")
        .unwrap();
    assert_eq!(b["status"], 429);
    assert!(b["headers"]["retry-after"].is_string());
}

#[tokio::test]
async fn a_batch_runs_four_inner_requests_at_a_time_and_counts_each() {
    let mut cfg = small();
    cfg.faults.latency_ms = 100;
    let sim = start(cfg).await;
    let user = sim.first_user().await;
    let ids: Vec<String> = sim
        .get(&format!("/users/{user}/messages?$top=8&$select=id"))
        .await["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 8);
    sim.admin("stats/reset", None).await;
    let requests: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({ "id": i.to_string(), "method": "GET", "url": format!("/users/{user}/messages/{id}/$value") }))
        .collect();
    let t0 = std::time::Instant::now();
    let out: Value = sim
        .send(
            reqwest::Method::POST,
            "/$batch",
            &[],
            Some(json!({ "requests": requests })),
        )
        .await
        .json()
        .await
        .unwrap();
    let took = t0.elapsed();
    // Eight requests of 100 ms, four at a time: two rounds, not eight.
    assert!(took >= std::time::Duration::from_millis(200), "{took:?}");
    assert!(took < std::time::Duration::from_millis(700), "{took:?}");
    for r in out["responses"].as_array().unwrap() {
        assert_eq!(r["status"], 200, "{r}");
        let mime = base64::engine::general_purpose::STANDARD
            .decode(r["body"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8_lossy(&mime).contains("Subject:"));
    }
    let stats = sim.admin("stats", None).await;
    assert_eq!(stats["batches"], 1, "{stats}");
    assert_eq!(stats["batch_inner"], 8, "{stats}");
    let upn = stats["mailboxes"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    let m = &stats["mailboxes"][upn];
    assert_eq!(
        m["requests"], 8,
        "inner requests count against the mailbox: {stats}"
    );
    assert_eq!(m["max_in_flight"], 4, "{stats}");
    assert_eq!(m["throttled"], 0, "{stats}");
}

#[tokio::test]
async fn depends_on_must_name_an_earlier_request() {
    let sim = start(small()).await;
    let body = json!({ "requests": [
        { "id": "1", "method": "GET", "url": "/users", "dependsOn": ["2"] },
        { "id": "2", "method": "GET", "url": "/users" },
    ]});
    let resp = sim
        .send(reqwest::Method::POST, "/$batch", &[], Some(body))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(&resp.json().await.unwrap()), "BadRequest");
}

#[tokio::test]
async fn sharepoint_answers_429_with_rate_limit_headers_past_its_resource_units() {
    let sim = start(small()).await;
    let drive = sim.admin("info", None).await["users"][0]["driveId"]
        .as_str()
        .unwrap()
        .to_string();
    sim.admin(
        "faults",
        Some(json!({ "sharepoint_ru_per_window": 5, "sharepoint_window_secs": 2 })),
    )
    .await;
    let children = format!("/drives/{drive}/root/children");
    // A list costs 2 units: the first is under 80 % of the budget, the second reaches it.
    let r = sim.send(reqwest::Method::GET, &children, &[], None).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("ratelimit-remaining").is_none());
    let r = sim.send(reqwest::Method::GET, &children, &[], None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-limit"], "5");
    assert_eq!(r.headers()["ratelimit-remaining"], "1");
    let r = sim.send(reqwest::Method::GET, &children, &[], None).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(error_code(&r.json().await.unwrap()), "activityLimitReached");
    // Outlook requests do not spend SharePoint's units.
    let user = sim.first_user().await;
    let (status, _) = sim
        .get_with(&format!("/users/{user}/mailFolders"), &[])
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let r = sim.send(reqwest::Method::GET, &children, &[], None).await;
    assert_eq!(r.status(), 200, "a new window has a new budget");
    let stats = sim.admin("stats", None).await;
    assert_eq!(stats["ru_throttled"], 1, "{stats}");
    assert_eq!(stats["resource_units"], 8, "{stats}");
}
