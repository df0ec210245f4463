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
