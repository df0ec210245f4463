//! Faults Graph documents: throttling, tokens that expire mid-run, refused credentials,
//! items deleted between listing and fetching, and the per-mailbox concurrency limit.

mod common;

use common::{num, p, small, start, start_with, walk};
use serde_json::json;

fn one_user() -> graphsim::Config {
    graphsim::Config {
        users: 1,
        ..small()
    }
}

#[tokio::test]
async fn throttling_slows_a_backup_down_and_loses_nothing() {
    let clean = start(one_user()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let mut cfg = one_user();
    cfg.faults.throttle_rate = 0.2;
    cfg.faults.unavailable_rate = 0.03;
    let env = start(cfg).await;
    let user = env.user(0).await;
    let s = env.backup(&user).await.unwrap();
    let stats = env.stats().await;
    assert!(num(&stats, "/by_status/429") > 0, "{stats}");
    assert_eq!(s.error_count, 0, "{:?}", s.errors);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn an_expired_token_is_renewed_mid_run() {
    let mut cfg = one_user();
    cfg.faults.latency_ms = 15;
    let env = start(cfg).await;
    let user = env.user(0).await;
    // The tokens expire once the run is under way (a sixth of its requests made).
    let before = num(&env.stats().await, "/requests");
    let (s, _) = tokio::join!(env.backup(&user), async {
        while num(&env.stats().await, "/requests") < before + 10 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        env.admin("expire-tokens", None).await
    });
    let s = s.unwrap();
    let stats = env.stats().await;
    assert!(
        num(&stats, "/by_status/401") >= 1,
        "the token expired mid-run: {stats}"
    );
    assert!(num(&stats, "/token_requests") >= 2);
    assert_eq!(s.error_count, 0);
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_does_not_show_it() {
    let env = start_with(one_user(), Some("not-the-right-secret-42")).await;
    let c = env.connector().await;
    let err = env
        .engine
        .refresh_accounts(&env.task, c.as_ref())
        .await
        .unwrap_err();
    match &err {
        engine::Error::Source { kind, message } => {
            assert_eq!(*kind, engine::SourceErrorKind::Auth, "{message}");
            assert!(message.contains("client secret"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("not-the-right-secret-42"));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_item_deleted_before_its_fetch_is_reported_and_the_account_completes() {
    let env = start(one_user()).await;
    let user = env.user(0).await;
    env.admin("faults", Some(json!({ "vanish_rate": 0.25 })))
        .await;
    let s = env.backup(&user).await.unwrap();
    assert!(s.error_count > 0);
    assert!(
        s.errors
            .iter()
            .all(|e| e.message.contains("deleted at the source")),
        "{:?}",
        s.errors
    );
    assert!(s.stats.items > 20, "the rest of the account is there");
}

#[tokio::test]
async fn at_most_four_requests_are_in_flight_per_mailbox() {
    let mut cfg = one_user();
    cfg.faults.latency_ms = 20;
    let env = start(cfg).await;
    let user = env.user(0).await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0);
    let stats = env.stats().await;
    let mb = &stats["mailboxes"][user.id.as_str()];
    let max = num(mb, "/max_in_flight");
    assert!((2..=4).contains(&max), "{mb}");
    assert_eq!(num(mb, "/throttled"), 0, "{mb}");
}
