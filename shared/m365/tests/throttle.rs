//! Batching and pacing: `$batch` stores exactly what single requests would, throttled inner
//! requests are asked again, and the per-mailbox and SharePoint budgets keep a run under
//! Graph's limits without a 429.

mod common;

use common::{num, p, small, start, start_tuned, walk};
use m365::client::Throttle;
use serde_json::json;

fn mailbox() -> graphsim::Config {
    graphsim::Config {
        users: 1,
        messages_per_folder: 25,
        sites: 0,
        ..small()
    }
}

fn unbatched() -> Throttle {
    Throttle {
        batch: false,
        ..Throttle::default()
    }
}

#[tokio::test]
async fn a_batched_backup_stores_what_single_requests_store() {
    let single = start_tuned(mailbox(), Some(unbatched())).await;
    let user = single.user(0).await;
    let s1 = single.backup(&user).await.unwrap();
    let expected = walk(&single, &s1, &p("")).await;
    assert_eq!(num(&single.stats().await, "/batches"), 0);

    let env = start(mailbox()).await;
    let user = env.user(0).await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(s.stats.items, s1.stats.items);
    assert_eq!(s.stats.bytes, s1.stats.bytes, "the same content");
    assert_eq!(walk(&env, &s, &p("")).await, expected);
    let stats = env.stats().await;
    assert!(num(&stats, "/batches") > 0, "{stats}");
    let http = num(&stats, "/requests") - num(&stats, "/batch_inner");
    let single_http = num(&single.stats().await, "/requests");
    assert!(
        http * 2 < single_http,
        "batching saves round trips: {http} against {single_http}"
    );

    // A daily run asks every unchanged folder in one batch and fetches the new mail.
    for e in [&single, &env] {
        e.admin("advance-day", None).await;
    }
    let d1 = single.backup(&user).await.unwrap();
    let d = env.backup(&user).await.unwrap();
    assert_eq!(d.error_count, 0, "{:?}", env.errors(&d).await);
    assert_eq!(
        walk(&env, &d, &p("")).await,
        walk(&single, &d1, &p("")).await
    );
}

#[tokio::test]
async fn throttled_inner_requests_are_asked_again_and_nothing_is_lost() {
    let clean = start(mailbox()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let env = start(mailbox()).await;
    let user = env.user(0).await;
    env.admin(
        "faults/script",
        Some(json!([
            { "status": 429, "path_contains": "$value", "times": 6 },
            { "status": 503, "path_contains": "$value", "times": 2 },
        ])),
    )
    .await;
    let s = env.backup(&user).await.unwrap();
    let stats = env.stats().await;
    assert_eq!(num(&stats, "/by_status/429"), 6, "{stats}");
    assert_eq!(num(&stats, "/by_status/503"), 2, "{stats}");
    assert!(num(&stats, "/batches") > 0, "{stats}");
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn pacing_keeps_a_mailbox_under_its_budget_without_a_429() {
    let clean = start(mailbox()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let mut cfg = mailbox();
    cfg.faults.mailbox_requests_per_10_min = 30;
    cfg.faults.mailbox_window_secs = 1;
    let env = start_tuned(
        cfg,
        Some(Throttle {
            mailbox_requests: 30,
            mailbox_window_secs: 1,
            ..Throttle::default()
        }),
    )
    .await;
    let user = env.user(0).await;
    let t0 = std::time::Instant::now();
    let s = env.backup(&user).await.unwrap();
    let stats = env.stats().await;
    let upn = env.sim.shared.sim().users[0].upn.clone();
    let m = &stats["mailboxes"][&upn];
    assert!(
        num(m, "/requests") > 60,
        "the run needs several windows: {stats}"
    );
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(num(m, "/throttled"), 0, "{stats}");
    assert_eq!(num(&stats, "/by_status/429"), 0, "{stats}");
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn pacing_keeps_sharepoint_under_its_resource_units_without_a_429() {
    let mut cfg = mailbox();
    cfg.sites = 1;
    cfg.faults.sharepoint_ru_per_window = 20;
    cfg.faults.sharepoint_window_secs = 1;
    let env = start_tuned(
        cfg,
        Some(Throttle {
            sharepoint_resource_units: 20,
            sharepoint_window_secs: 1,
            ..Throttle::default()
        }),
    )
    .await;
    let accounts = env.accounts().await;
    let mut items = 0;
    for a in &accounts {
        let s = env.backup(a).await.unwrap();
        assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
        items += s.stats.items;
    }
    let stats = env.stats().await;
    assert!(items > 0);
    assert!(
        num(&stats, "/resource_units") > 40,
        "the run needs several windows: {stats}"
    );
    assert_eq!(num(&stats, "/ru_throttled"), 0, "{stats}");
    assert_eq!(num(&stats, "/by_status/429"), 0, "{stats}");
}
