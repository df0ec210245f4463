//! Signing in: the service account's JWT grant verified by the simulator, refusals as
//! Google words them (never quoting a key), scopes not delegated, tokens that expire, a
//! personal account through its refresh token, and the Directory's users (suspended ones
//! left out, pages followed, new users found on the next listing).

mod common;

use common::{add_task, config, deliver, settings, start};
use engine::{ErrorKind, SourceErrorKind};
use google::auth::{Credential, ServiceAccountKey, Tokens};
use serde_json::Value;

#[tokio::test]
async fn a_key_google_does_not_know_is_refused_when_the_task_is_added() {
    let env = start(config()).await;
    let mut key: Value = serde_json::from_str(&env.sim.service_account_key()).unwrap();
    let other = googlesim::auth::generate_test_key_pem();
    key["private_key"] = Value::String(other.clone());
    let e = add_task(
        &env.engine,
        "wrong-key",
        settings(&env.sim, None),
        key.to_string(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source(SourceErrorKind::Auth), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("invalid_grant") && msg.contains("Invalid JWT Signature"),
        "{msg}"
    );
    let body = other.lines().nth(1).unwrap();
    assert!(!msg.contains(body), "the key is not quoted");
}

#[tokio::test]
async fn a_gmail_scope_not_delegated_is_refused_when_the_task_is_added() {
    let mut cfg = config();
    cfg.delegated_scopes = vec![googlesim::SCOPE_DIRECTORY_USERS_READONLY.into()];
    let sim = googlesim::spawn(cfg).await.unwrap();
    let test = testkit::env::TestEnv::new();
    let engine = test.engine("acme");
    let e = add_task(
        &engine,
        "g",
        settings(&sim, None),
        sim.service_account_key(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source(SourceErrorKind::Auth), "{e}");
    assert!(e.to_string().contains("unauthorized_client"), "{e}");
}

#[tokio::test]
async fn expired_tokens_are_renewed_and_cached_per_user() {
    let env = start(config()).await;
    let user = env.sim.workspace_users()[1].clone();
    deliver(&env.sim, &user, 0, 5, &["INBOX"]);
    let account = env.account(&user).await;
    // One connector for both runs, as a long-lived worker keeps it.
    let c = env.connector().await;
    let backup = || async {
        env.test.advance(chrono::Duration::days(1));
        env.engine
            .backup(&env.task, &account.id, c.as_ref(), &Default::default())
            .await
            .unwrap()
            .into_snapshot()
            .unwrap()
    };
    env.sim.reset_stats();
    backup().await;
    // One token for the user's Gmail scope, however many requests.
    assert_eq!(env.sim.stats().token_requests, 1);
    deliver(&env.sim, &user, 10, 5, &["INBOX"]);
    env.sim.expire_tokens();
    env.sim.reset_stats();
    let s = backup().await;
    assert_eq!(s.error_count, 0);
    assert_eq!(s.stats.totals().items, 10);
    let st = env.sim.stats();
    assert_eq!(
        st.status(401),
        1,
        "the expired token was refused once: {st:?}"
    );
    assert_eq!(st.token_requests, 1, "and renewed once: {st:?}");
}

#[tokio::test]
async fn suspended_users_are_left_out_and_new_users_found_on_the_next_listing() {
    let mut cfg = config();
    cfg.users = 5;
    cfg.suspended = 2;
    let env = start(cfg).await;
    let all = env.sim.workspace_users();
    let listed: Vec<String> = env
        .accounts()
        .await
        .iter()
        .map(|a| a.id.to_string())
        .collect();
    assert_eq!(listed, all[..3].to_vec());
    let hire = env.sim.add_user("new.hire");
    let listed: Vec<String> = env
        .accounts()
        .await
        .iter()
        .map(|a| a.id.to_string())
        .collect();
    assert!(listed.contains(&hire), "{listed:?}");
}

#[tokio::test]
async fn the_directory_is_read_page_by_page() {
    let mut cfg = config();
    cfg.users = 7;
    cfg.suspended = 0;
    let sim = googlesim::spawn(cfg).await.unwrap();
    let key = ServiceAccountKey::from_json(&sim.service_account_key()).unwrap();
    let http = reqwest::Client::new();
    let tokens = Tokens::new(
        http.clone(),
        &sim.token_url(),
        Credential::ServiceAccount(Box::new(key)),
    );
    let token = tokens
        .get(&sim.admin_email(), google::SCOPE_DIRECTORY_USERS_READONLY)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut page = String::new();
    let mut pages = 0;
    loop {
        let url = format!(
            "{}/admin/directory/v1/users?customer=my_customer&maxResults=3&pageToken={page}",
            sim.base_url
        );
        let v: Value = http
            .get(url)
            .bearer_auth(token.as_str())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for u in v["users"].as_array().unwrap() {
            seen.push(u["primaryEmail"].as_str().unwrap().to_string());
        }
        match v["nextPageToken"].as_str() {
            Some(t) => page = t.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, sim.workspace_users());
    // A token for another user's mailbox does not read the directory.
    let token = tokens
        .get(
            &sim.workspace_users()[1],
            google::SCOPE_DIRECTORY_USERS_READONLY,
        )
        .await
        .unwrap();
    let resp = http
        .get(format!(
            "{}/admin/directory/v1/users?customer=my_customer",
            sim.base_url
        ))
        .bearer_auth(token.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "forbidden");
}

#[tokio::test]
async fn a_personal_account_signs_in_with_its_refresh_token() {
    let sim = googlesim::spawn(config()).await.unwrap();
    let email = sim.shared.cfg.personal[0].clone();
    deliver(&sim, &email, 0, 4, &["INBOX"]);
    let refresh = sim.refresh_token_for(&email, &[googlesim::SCOPE_GMAIL_READONLY]);
    let cfg = &sim.shared.cfg;
    let settings = google::GoogleSettings {
        admin_email: None,
        client_id: Some(cfg.oauth_client_id.clone()),
        ..settings(&sim, None)
    };
    let secret =
        serde_json::json!({"client_secret": cfg.oauth_client_secret, "refresh_token": refresh})
            .to_string();
    let test = testkit::env::TestEnv::new();
    let engine = test.engine("acme");
    let task = add_task(&engine, "personal", settings, secret)
        .await
        .unwrap();
    let c = engine.connector(&task, &google::Opener).await.unwrap();
    let accounts = engine.refresh_accounts(&task, c.as_ref()).await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].id.as_str(), email);
    let s = engine
        .backup(&task, &accounts[0].id, c.as_ref(), &Default::default())
        .await
        .unwrap()
        .into_snapshot()
        .unwrap();
    assert_eq!(s.error_count, 0);
    assert_eq!(s.stats.totals().items, 4);

    // Consent withdrawn: Google's invalid_grant, an error for an administrator to act on.
    sim.revoke_refresh_tokens();
    let c = engine.connector(&task, &google::Opener).await.unwrap();
    let e = c.check().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source(SourceErrorKind::Auth), "{e}");
    assert!(
        e.to_string().contains("Token has been expired or revoked"),
        "{e}"
    );
}
