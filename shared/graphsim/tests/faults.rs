//! Fault injection and accounting over HTTP: 429 with Retry-After (scripted and at a rate),
//! 503, per-mailbox concurrency, request counters, items vanishing between list and fetch.

mod common;

use common::{error_code, small, start};
use serde_json::json;

#[tokio::test]
async fn scripted_and_rate_based_throttling() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    sim.admin(
        "faults/script",
        Some(
            json!([{ "status": 429, "path_contains": "messages" }, { "status": 503, "times": 1 }]),
        ),
    )
    .await;
    // The first request that is not for messages gets the 503.
    let resp = sim.send(reqwest::Method::GET, "/users", &[], None).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        error_code(&resp.json().await.unwrap()),
        "serviceNotAvailable"
    );
    let resp = sim
        .send(
            reqwest::Method::GET,
            &format!("/users/{user}/messages"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 429);
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        error_code(&resp.json().await.unwrap()),
        "ApplicationThrottled"
    );
    assert_eq!(
        sim.get_with(&format!("/users/{user}/messages"), &[])
            .await
            .0,
        200,
        "a one-shot fault is spent"
    );

    sim.admin(
        "faults",
        Some(json!({ "throttle_rate": 0.5, "retry_after_secs": 2 })),
    )
    .await;
    let mut throttled = 0;
    for _ in 0..40 {
        let resp = sim.send(reqwest::Method::GET, "/users", &[], None).await;
        if resp.status() == 429 {
            assert_eq!(resp.headers()["retry-after"], "2");
            throttled += 1;
        }
    }
    assert!(
        (8..=32).contains(&throttled),
        "about half are throttled: {throttled}"
    );
    sim.admin("faults", Some(json!({ "throttle_rate": 0.0 })))
        .await;
    assert_eq!(sim.get_with("/users", &[]).await.0, 200);

    // Bad settings are refused with a reason.
    let resp = sim
        .http
        .post(format!("{}/_sim/faults", sim.run.base_url))
        .json(&json!({ "throttle_rate": 2.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = sim
        .http
        .post(format!("{}/_sim/faults", sim.run.base_url))
        .json(&json!({ "no_such": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn fault_draws_are_deterministic_for_a_seed() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut cfg = small();
        cfg.faults.throttle_rate = 0.3;
        cfg.faults.unavailable_rate = 0.1;
        let sim = start(cfg).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(
                sim.send(reqwest::Method::GET, "/users", &[], None)
                    .await
                    .status()
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&429) && runs[0].contains(&200));
}

#[tokio::test]
async fn the_fifth_concurrent_request_to_a_mailbox_is_throttled() {
    let mut cfg = small();
    cfg.faults.latency_ms = 400;
    let sim = start(cfg).await;
    let users = sim.all("/users").await;
    let (a, b) = (
        users[0]["id"].as_str().unwrap().to_string(),
        users[1]["id"].as_str().unwrap().to_string(),
    );
    sim.admin("stats/reset", None).await;
    let mut tasks = Vec::new();
    for i in 0..7 {
        let (http, token) = (sim.http.clone(), sim.token.clone());
        let url = sim.url(&format!(
            "/users/{}/mailFolders/inbox/messages",
            if i < 6 { &a } else { &b }
        ));
        tasks.push(tokio::spawn(async move {
            http.get(url).bearer_auth(token).send().await.unwrap()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let resp = t.await.unwrap();
        let status = resp.status().as_u16();
        if status == 429 {
            let body = resp.json().await.unwrap();
            assert_eq!(error_code(&body), "ApplicationThrottled");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MailboxConcurrency"));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "four for one mailbox, one for the other: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
    let stats = sim.admin("stats", None).await;
    let upn_a = users[0]["userPrincipalName"].as_str().unwrap();
    let mb = &stats["mailboxes"][upn_a];
    assert_eq!(mb["requests"], 6);
    assert_eq!(mb["max_in_flight"], 4);
    assert_eq!(mb["throttled"], 2);
    assert_eq!(mb["in_flight"], 0);
    assert_eq!(stats["by_status"]["429"], 2);
}

#[tokio::test]
async fn an_item_can_vanish_between_list_and_fetch() {
    let sim = start(small()).await;
    let user = sim.first_user().await;
    let listed = sim
        .all(&format!("/users/{user}/mailFolders/inbox/messages"))
        .await;
    let (_, _, link) = sim
        .all_with(
            &format!("/users/{user}/mailFolders/inbox/messages/delta"),
            &[],
        )
        .await;
    sim.admin("faults", Some(json!({ "vanish_rate": 1.0 })))
        .await;
    let id = listed[0]["id"].as_str().unwrap();
    let (status, body) = sim
        .get_with(&format!("/users/{user}/messages/{id}"), &[])
        .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "ErrorItemNotFound");
    sim.admin("faults", Some(json!({ "vanish_rate": 0.0 })))
        .await;
    let (rows, _, _) = sim.all_with(&link.unwrap(), &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id);
    assert!(
        rows[0].get("@removed").is_some(),
        "the vanished item is reported removed"
    );
}

#[tokio::test]
async fn the_per_mailbox_request_budget_is_enforced() {
    let sim = start(small()).await;
    let users = sim.all("/users").await;
    let (a, b) = (
        users[0]["id"].as_str().unwrap(),
        users[1]["id"].as_str().unwrap(),
    );
    sim.admin("faults", Some(json!({ "mailbox_requests_per_10_min": 5 })))
        .await;
    for _ in 0..5 {
        assert_eq!(
            sim.get_with(&format!("/users/{a}/mailFolders"), &[])
                .await
                .0,
            200
        );
    }
    let resp = sim
        .send(
            reqwest::Method::GET,
            &format!("/users/{a}/mailFolders"),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 500, "the window lasts ten minutes: {wait}");
    assert_eq!(
        error_code(&resp.json().await.unwrap()),
        "ApplicationThrottled"
    );
    assert_eq!(
        sim.get_with(&format!("/users/{b}/mailFolders"), &[])
            .await
            .0,
        200,
        "another mailbox is not affected"
    );
    assert_eq!(
        sim.get_with("/users", &[]).await.0,
        200,
        "non-mailbox requests are not counted"
    );
}
