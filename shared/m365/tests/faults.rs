//! Faults Graph documents: throttling, tokens that expire mid-run, refused credentials,
//! items deleted between listing and fetching, and the per-mailbox concurrency limit.

mod common;

use common::{add_task, num, p, small, start, walk};
use serde_json::json;
use zeroize::Zeroizing;

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
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
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

/// Adding a task signs in (`Connector::check`), so a wrong secret is refused when the
/// task is added (and when a credential is replaced), not at its first backup.
#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_does_not_show_it() {
    let env = start(one_user()).await;
    let wrong = "not-the-right-secret-42";
    let check = |err: engine::Error| {
        match &err {
            engine::Error::Source { kind, message } => {
                assert_eq!(*kind, engine::SourceErrorKind::Auth, "{message}");
                assert!(message.contains("client secret"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{err} {err:?}").contains(wrong));
        assert!(!err.is_retryable());
    };
    let err = add_task(&env.engine, &env.sim, "wrong", Some(wrong), None)
        .await
        .unwrap_err();
    check(err);
    assert_eq!(
        env.engine.task("wrong").await.unwrap_err().kind(),
        engine::ErrorKind::NotFound,
        "a task whose secret is refused is not added"
    );
    let err = env
        .engine
        .replace_secret(
            env.task.name.as_str(),
            &Zeroizing::new(wrong.to_string()),
            &m365::Opener,
        )
        .await
        .unwrap_err();
    check(err);
    // The task keeps the secret that works.
    let task = env.engine.task(env.task.name.as_str()).await.unwrap();
    let c = env.engine.connector(&task, &m365::Opener).await.unwrap();
    assert!(!env
        .engine
        .refresh_accounts(&task, c.as_ref())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_item_deleted_before_its_fetch_is_reported_as_vanished_not_as_an_error() {
    let env = start(one_user()).await;
    let user = env.user(0).await;
    env.admin("faults", Some(json!({ "vanish_rate": 0.25 })))
        .await;
    let s = env.backup(&user).await.unwrap();
    // Nothing failed: what vanished is no longer there to keep, and the report says so.
    assert_eq!(s.error_count, 0);
    let notes = env.errors(&s).await;
    assert!(!notes.is_empty());
    assert!(
        notes
            .iter()
            .all(|e| e.note && e.message.starts_with("vanished: ")),
        "{notes:?}"
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
