//! Gmail backups against the Google simulator over HTTP: a full first backup, a day of
//! changes fetched by history alone, an expired history id, quota errors, a message that
//! fails through one run, and a run that pauses at its deadline. Every message's stored
//! bytes are compared with the bytes the test itself wrote.

mod common;

use common::{config, deliver, eml, meta, original, start, Env};
use engine::{BackupEnd, BackupOptions};
use std::collections::BTreeMap;

const INBOX: &[&str] = &["INBOX", "UNREAD"];

/// Checks that the snapshot holds exactly `expected` (id → original bytes), byte for byte.
async fn holds_exactly(
    env: &Env,
    s: &engine::SnapshotRecord,
    expected: &BTreeMap<String, Vec<u8>>,
) {
    let got = env.mail_bytes(s).await;
    let want: BTreeMap<String, &Vec<u8>> = expected.iter().map(|(id, b)| (eml(id), b)).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the snapshot's messages"
    );
    for (name, bytes) in &got {
        assert!(
            bytes == want[name],
            "{name} is not byte-equal to the original"
        );
    }
}

#[tokio::test]
async fn day_one_full_then_day_two_fetches_only_the_changes() {
    let env = start(config()).await;
    let user = env.sim.workspace_users()[1].clone();
    let projects = env.sim.create_label(&user, "Projects/Lifeboat");
    let mut all = deliver(&env.sim, &user, 0, 24, INBOX);
    all.extend(deliver(&env.sim, &user, 100, 3, &["SPAM"]));
    all.extend(deliver(&env.sim, &user, 200, 3, &["TRASH"]));
    all.extend(deliver(
        &env.sim,
        &user,
        300,
        4,
        &["INBOX", projects.as_str()],
    ));
    // One message larger than the vault's small items, so it is stored by chunks.
    let big = original(999, true);
    let big_id = env.sim.deliver(&user, &big, &["INBOX"], 1_709_600_000_000);
    all.insert(big_id.clone(), big);

    let account = env.account(&user).await;
    env.sim.reset_stats();
    let day1 = env.backup(&account).await.unwrap();
    let st = env.sim.stats();
    assert_eq!(day1.error_count, 0, "{:?}", env.errors(&day1).await);
    assert_eq!(
        st.method("gmail.users.messages.get/raw"),
        all.len() as u64,
        "one raw get per message"
    );
    assert_eq!(st.method("gmail.users.getProfile"), 1);
    holds_exactly(&env, &day1, &all).await;

    // Labels are kept by id and by name; the label list is the Mail folder's metadata.
    let mail = env.mail(&day1).await;
    let labelled = all
        .keys()
        .find(|id| env.sim.messages(&user)[*id].contains(&projects))
        .unwrap();
    let m = &mail[&eml(labelled)];
    assert!(
        meta(m, "label_ids").split(',').any(|l| l == projects),
        "{m:?}"
    );
    assert!(meta(m, "labels").contains("Projects/Lifeboat"), "{m:?}");
    assert!(
        meta(m, "from").contains("zoe300@example.net") || meta(m, "from").contains("@example.net")
    );
    assert_eq!(meta(m, "id"), labelled.as_str());

    // A day of use: new mail, two deletions, label changes (one trashed).
    let new = deliver(&env.sim, &user, 400, 5, INBOX);
    let ids: Vec<String> = all.keys().cloned().collect();
    let (gone1, gone2, starred, trashed, read) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);
    env.sim.delete(&user, gone1);
    env.sim.delete(&user, gone2);
    env.sim
        .modify(&user, starred, &["STARRED", projects.as_str()], &[]);
    env.sim.modify(&user, trashed, &["TRASH"], &["INBOX"]);
    env.sim.modify(&user, read, &[], &["UNREAD"]);
    // A message that arrives and is deleted the same day is never fetched.
    let brief = deliver(&env.sim, &user, 500, 1, INBOX);
    env.sim.delete(&user, brief.keys().next().unwrap());

    env.sim.reset_stats();
    let day2 = env.backup(&account).await.unwrap();
    let st = env.sim.stats();
    assert_eq!(day2.error_count, 0, "{:?}", env.errors(&day2).await);
    let raw_gets = st.method("gmail.users.messages.get/raw");
    assert_eq!(
        raw_gets,
        new.len() as u64,
        "only the new messages are fetched: {st:?}"
    );
    assert_eq!(st.method("gmail.users.messages.get/minimal"), 0, "{st:?}");
    assert_eq!(
        st.method("gmail.users.messages.list"),
        0,
        "no listing on day 2: {st:?}"
    );
    assert!(st.method("gmail.users.history.list") >= 1);
    let units: u64 = st.units.values().sum();
    println!(
        "day 2: {} requests, {} quota units for {} new messages ({:.2} requests and {:.1} units per new message)",
        st.requests,
        units,
        new.len(),
        st.requests as f64 / new.len() as f64,
        units as f64 / new.len() as f64
    );
    assert!(st.requests <= new.len() as u64 + 3, "{st:?}");

    let mut expected = all.clone();
    expected.remove(gone1);
    expected.remove(gone2);
    expected.extend(new);
    holds_exactly(&env, &day2, &expected).await;
    let mail = env.mail(&day2).await;
    let labels = |id: &str| meta(&mail[&eml(id)], "label_ids").to_string();
    assert!(labels(starred).contains("STARRED") && labels(starred).contains(&projects));
    assert!(labels(trashed).contains("TRASH") && !labels(trashed).contains("INBOX"));
    assert!(!labels(read).contains("UNREAD"));
    // Day 1 is untouched.
    holds_exactly(&env, &day1, &all).await;
}

#[tokio::test]
async fn an_expired_history_id_lists_again_without_fetching_stored_messages() {
    let env = start(config()).await;
    let user = env.sim.workspace_users()[1].clone();
    let mut all = deliver(&env.sim, &user, 0, 20, INBOX);
    let account = env.account(&user).await;
    let day1 = env.backup(&account).await.unwrap();
    assert_eq!(day1.error_count, 0);

    let new = deliver(&env.sim, &user, 50, 3, INBOX);
    let ids: Vec<String> = all.keys().cloned().collect();
    env.sim.delete(&user, &ids[0]);
    env.sim.modify(&user, &ids[1], &["TRASH"], &["INBOX"]);
    env.sim.expire_history(&user);

    env.sim.reset_stats();
    let day2 = env.backup(&account).await.unwrap();
    let st = env.sim.stats();
    assert_eq!(day2.error_count, 0, "{:?}", env.errors(&day2).await);
    assert!(st.status(404) >= 1, "the history id was refused: {st:?}");
    assert_eq!(
        st.method("gmail.users.messages.get/raw"),
        new.len() as u64,
        "{st:?}"
    );
    assert!(st.method("gmail.users.messages.list") >= 1);
    all.remove(&ids[0]);
    all.extend(new);
    holds_exactly(&env, &day2, &all).await;
    let mail = env.mail(&day2).await;
    assert!(meta(&mail[&eml(&ids[1])], "label_ids").contains("TRASH"));
    assert!(
        !mail.keys().any(|n| n.starts_with('.')),
        "nothing is left aside: {mail:?}"
    );

    // And history works again from the profile's id taken before that listing.
    let more = deliver(&env.sim, &user, 80, 2, INBOX);
    env.sim.reset_stats();
    let day3 = env.backup(&account).await.unwrap();
    let st = env.sim.stats();
    assert_eq!(st.method("gmail.users.messages.get/raw"), 2, "{st:?}");
    assert_eq!(st.method("gmail.users.messages.list"), 0, "{st:?}");
    all.extend(more);
    holds_exactly(&env, &day3, &all).await;
}

#[tokio::test]
async fn quota_errors_at_ten_percent_of_requests_surface_nothing() {
    let mut cfg = config();
    cfg.faults = googlesim::Faults::spread(0.10);
    let env = start(cfg).await;
    let user = env.sim.workspace_users()[1].clone();
    let mut all = deliver(&env.sim, &user, 0, 60, INBOX);
    let account = env.account(&user).await;
    let day1 = env.backup(&account).await.unwrap();
    assert_eq!(day1.error_count, 0, "{:?}", env.errors(&day1).await);
    holds_exactly(&env, &day1, &all).await;
    all.extend(deliver(&env.sim, &user, 100, 20, INBOX));
    let day2 = env.backup(&account).await.unwrap();
    assert_eq!(day2.error_count, 0, "{:?}", env.errors(&day2).await);
    holds_exactly(&env, &day2, &all).await;
    let st = env.sim.stats();
    for status in [403, 429] {
        assert!(
            st.status(status) > 0,
            "Google refused with {status} meanwhile: {st:?}"
        );
    }
    assert!(st.status(500) + st.status(503) > 0, "{st:?}");
}

#[tokio::test]
async fn a_message_failing_through_one_run_is_stored_by_the_next() {
    let env = start(config()).await;
    let user = env.sim.workspace_users()[1].clone();
    let all = deliver(&env.sim, &user, 0, 10, INBOX);
    let broken = all.keys().nth(4).unwrap().clone();
    env.sim.fail_message(&broken, 500, 1_000);
    let account = env.account(&user).await;
    let day1 = env.backup(&account).await.unwrap();
    assert_eq!(day1.error_count, 1);
    let errors = env.errors(&day1).await;
    assert!(errors[0].path.to_string().contains(&broken), "{errors:?}");
    let mut partial = all.clone();
    partial.remove(&broken);
    holds_exactly(&env, &day1, &partial).await;

    // Nothing changes in the mailbox: only the cursor remembers the message.
    env.sim.fail_message(&broken, 500, 0);
    env.sim.reset_stats();
    let day2 = env.backup(&account).await.unwrap();
    assert_eq!(day2.error_count, 0, "{:?}", env.errors(&day2).await);
    assert_eq!(env.sim.stats().method("gmail.users.messages.get/raw"), 1);
    holds_exactly(&env, &day2, &all).await;
}

#[tokio::test]
async fn a_run_that_reaches_its_deadline_keeps_a_checkpoint_and_goes_on() {
    let env = start(config()).await;
    let user = env.sim.workspace_users()[1].clone();
    // Three pages of messages.list (500 a page), small messages.
    let mut all = BTreeMap::new();
    for i in 0..1_100 {
        let raw =
            format!("From: a{i}@example.net\r\nSubject: s{i}\r\n\r\nbody {i}\r\n").into_bytes();
        let id = env.sim.deliver(&user, &raw, INBOX, 1_700_000_000_000 + i);
        all.insert(id, raw);
    }
    let account = env.account(&user).await;
    let c = env.connector().await;
    let mut pauses = 0;
    let snap = loop {
        // A deadline already past: each run does one page, then pauses.
        let opts = BackupOptions {
            deadline: Some(std::time::Instant::now()),
            ..BackupOptions::default()
        };
        env.sim.reset_stats();
        match env
            .engine
            .backup(&env.task, &account.id, c.as_ref(), &opts)
            .await
            .unwrap()
        {
            BackupEnd::Committed(s) => break *s,
            BackupEnd::Paused { .. } => {
                pauses += 1;
                assert!(env.sim.stats().method("gmail.users.messages.get/raw") <= 500);
            }
        }
        assert!(pauses < 10, "the backup makes progress");
    };
    assert_eq!(pauses, 2, "three pages, two pauses");
    assert_eq!(snap.error_count, 0);
    let mail = env.mail(&snap).await;
    assert_eq!(mail.len(), all.len());
    let bytes = env.mail_bytes(&snap).await;
    for (id, raw) in &all {
        assert!(&bytes[&eml(id)] == raw, "{id}");
    }
}
