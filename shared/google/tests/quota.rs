//! Gmail's per-user quota: the connector spends each user's units at a pace the server
//! accepts, so a mailbox larger than a window's quota is backed up without one refusal
//! and without losing anything; and when the project's quota refuses, backoff carries the
//! run through.

mod common;

use common::{config, deliver, eml, start, start_with};
use google::client::RetryPolicy;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_per_user_quota_is_kept_under_without_a_refusal() {
    let mut cfg = config();
    // 300 units a second for this user: a listing (5), the labels (1), the profile (1)
    // and 120 raw gets (5 each) come to 607 units, two windows' worth.
    cfg.user_units_per_window = 300;
    cfg.quota_window = Duration::from_secs(1);
    let env = start(cfg).await;
    let user = env.sim.workspace_users()[1].clone();
    let all = deliver(&env.sim, &user, 0, 120, &["INBOX"]);
    let account = env.account(&user).await;
    env.sim.reset_stats();
    let started = Instant::now();
    let s = env.backup(&account).await.unwrap();
    let took = started.elapsed();
    let st = env.sim.stats();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(st.status(403), 0, "no userRateLimitExceeded: {st:?}");
    let units = st.units[&user];
    assert!(units >= 607, "{st:?}");
    // Paced: 607 units at 90 % of 300 a second, less the first burst, take about two seconds.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let got = env.mail(&s).await;
    assert_eq!(got.len(), all.len());
    assert!(all.keys().all(|id| got.contains_key(&eml(id))));
}

#[tokio::test]
async fn the_project_quota_refusing_is_backed_off_from() {
    let mut cfg = config();
    // The project's quota (every user's requests together) lets 12 gets through a window
    // and this client does not know it: Google's 403 rateLimitExceeded is what slows it
    // down, every request of the user held back together.
    cfg.project_units_per_window = 60;
    cfg.quota_window = Duration::from_millis(100);
    // Backoff in the proportions of the real policy (1 s doubling to 32 s against a
    // minute's window): its waits add up to several windows.
    let env = start_with(cfg, |s| {
        s.retry = Some(RetryPolicy {
            attempts: 8,
            base_ms: 10,
            max_ms: 160,
        })
    })
    .await;
    let user = env.sim.workspace_users()[1].clone();
    let all = deliver(&env.sim, &user, 0, 20, &["INBOX"]);
    let account = env.account(&user).await;
    env.sim.reset_stats();
    let s = env.backup(&account).await.unwrap();
    let st = env.sim.stats();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert!(
        st.status(403) > 0,
        "the project's quota refused meanwhile: {st:?}"
    );
    assert_eq!(env.mail(&s).await.len(), all.len());
}
