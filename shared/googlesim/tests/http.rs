//! The simulator over HTTP, checked against Google's documentation: history ids with
//! gaps and 404 once expired, spam and trash listed only when asked, error bodies with
//! `domain`/`reason` and no `Retry-After`, and per-user quota units by method.

use googlesim::{auth, Config, Faults, ScriptedFault, SCOPE_GMAIL_READONLY};
use serde_json::Value;

async fn get(url: &str, token: &str) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn sim(cfg: Config) -> (googlesim::Running, String, String) {
    let sim = googlesim::spawn(cfg).await.unwrap();
    let user = sim.workspace_users()[1].clone();
    let (token, _) = auth::issue(&sim.shared, &user, vec![SCOPE_GMAIL_READONLY.into()]);
    (sim, user, token)
}

#[tokio::test]
async fn history_ids_have_gaps_and_expire_with_a_404() {
    let (sim, user, token) = sim(Config::default()).await;
    let start = sim.history_id(&user);
    let a = sim.deliver(&user, b"Subject: a\r\n\r\na", &["INBOX"], 1);
    sim.deliver(&user, b"Subject: b\r\n\r\nb", &["INBOX"], 2);
    sim.modify(&user, &a, &["TRASH"], &["INBOX"]);
    sim.delete(&user, &a);
    let base = format!("{}/gmail/v1/users/me", sim.base_url);
    let (status, _, v) = get(
        &format!("{base}/history?startHistoryId={start}&maxResults=2"),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    let page1 = v["history"].as_array().unwrap();
    assert_eq!(page1.len(), 2);
    assert!(page1[0]["messagesAdded"][0]["message"]["labelIds"][0] == "INBOX");
    let next = v["nextPageToken"].as_str().unwrap();
    let (_, _, v2) = get(
        &format!("{base}/history?startHistoryId={start}&maxResults=3&pageToken={next}"),
        &token,
    )
    .await;
    let page2 = v2["history"].as_array().unwrap();
    assert!(page2[0]["labelsAdded"][0]["labelIds"][0] == "TRASH");
    assert!(page2.last().unwrap()["messagesDeleted"][0]["message"]["id"] == a.as_str());
    assert!(v2.get("nextPageToken").is_none());
    let ids: Vec<u64> = page1
        .iter()
        .chain(page2)
        .map(|h| h["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        v2["historyId"].as_str().unwrap(),
        sim.history_id(&user).to_string()
    );
    sim.expire_history(&user);
    let (status, _, body) = get(&format!("{base}/history?startHistoryId={start}"), &token).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["errors"][0]["reason"], "notFound");
    assert_eq!(body["error"]["errors"][0]["domain"], "global");
}

#[tokio::test]
async fn spam_and_trash_are_listed_only_when_asked_and_raw_is_base64url() {
    let (sim, user, token) = sim(Config::default()).await;
    let raw = b"Subject: \xff\xfe?>\r\n\r\nbinary \x00\x01 bytes";
    let kept = sim.deliver(&user, raw, &["INBOX"], 3);
    sim.deliver(&user, b"Subject: s\r\n\r\ns", &["SPAM"], 2);
    sim.deliver(&user, b"Subject: t\r\n\r\nt", &["TRASH"], 1);
    let base = format!("{}/gmail/v1/users/me", sim.base_url);
    let (_, _, v) = get(&format!("{base}/messages"), &token).await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    let (_, _, v) = get(
        &format!("{base}/messages?includeSpamTrash=true&maxResults=2"),
        &token,
    )
    .await;
    assert_eq!(v["messages"][0]["id"], kept.as_str(), "newest first");
    assert!(v["nextPageToken"].is_string());
    let (_, _, m) = get(&format!("{base}/messages/{kept}?format=raw"), &token).await;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(m["raw"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, raw);
    assert!(m["internalDate"].is_string() && m["historyId"].is_string());
}

#[tokio::test]
async fn refusals_carry_domain_and_reason_and_no_retry_after() {
    let cfg = Config {
        faults: Faults {
            script: [429, 403, 503]
                .into_iter()
                .map(|status| ScriptedFault {
                    status,
                    path_contains: "profile".into(),
                    times: 1,
                })
                .collect(),
            ..Faults::default()
        },
        ..Config::default()
    };
    let (sim, _, token) = sim(cfg).await;
    let url = format!("{}/gmail/v1/users/me/profile", sim.base_url);
    for (status, domain, reason) in [
        (429, "usageLimits", "rateLimitExceeded"),
        (403, "usageLimits", "userRateLimitExceeded"),
        (503, "global", "backendError"),
    ] {
        let (got, retry_after, body) = get(&url, &token).await;
        assert_eq!(got, status);
        assert_eq!(retry_after, None, "Google sends no Retry-After");
        assert_eq!(body["error"]["code"], status);
        assert_eq!(body["error"]["errors"][0]["domain"], domain);
        assert_eq!(body["error"]["errors"][0]["reason"], reason);
    }
    assert_eq!(get(&url, &token).await.0, 200);
    let (status, _, body) = get(&url, "ya29.not-a-token").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
    assert_eq!(body["error"]["errors"][0]["location"], "Authorization");
}

#[tokio::test]
async fn each_method_costs_its_documented_units_per_user() {
    let cfg = Config {
        user_units_per_window: 12,
        ..Config::default()
    };
    let (sim, user, token) = sim(cfg).await;
    let id = sim.deliver(&user, b"Subject: q\r\n\r\nq", &["INBOX"], 1);
    let base = format!("{}/gmail/v1/users/me", sim.base_url);
    assert_eq!(
        get(&format!("{base}/messages/{id}?format=raw"), &token)
            .await
            .0,
        200
    ); // 5
    assert_eq!(get(&format!("{base}/messages"), &token).await.0, 200); // 10
    assert_eq!(
        get(&format!("{base}/history?startHistoryId=1"), &token)
            .await
            .0,
        404
    ); // 12
    let (status, _, body) = get(&format!("{base}/profile"), &token).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
    assert_eq!(sim.stats().units[&user], 12);
}
