//! Backups of a simulated organisation through the engine: a full backup whose messages
//! are byte-equal to the service's MIME, a day of changes fetched incrementally, an expired
//! delta token, and a run that pauses at every page.

mod common;

use common::{num, p, small, start, walk};
use engine::{BackupEnd, BackupOptions, ChangeKind, EntryKind, NoProgress};
use serde_json::Value;
use std::sync::Arc;

#[tokio::test]
async fn a_full_backup_then_a_day_of_changes() {
    let env = start(small()).await;
    // Adding the task signed in but recorded no account: they are recorded at the first
    // listing.
    assert!(env.engine.accounts(&env.task).await.unwrap().is_empty());
    let accounts = env.accounts().await;
    assert_eq!(
        env.engine.accounts(&env.task).await.unwrap().len(),
        accounts.len()
    );
    assert!(
        accounts.iter().any(|a| a.id.as_str().starts_with("site+")),
        "sites are accounts"
    );
    assert_eq!(
        accounts
            .iter()
            .filter(|a| a.id.as_str().contains('@'))
            .count(),
        2
    );
    let user = env.user(0).await;
    let upn = user.id.to_string();
    let s1 = env.backup(&user).await.unwrap();
    assert_eq!(s1.error_count, 0, "{:?}", env.errors(&s1).await);

    let top: Vec<String> = env
        .engine
        .list(&env.task, &s1, &p(""))
        .await
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    assert_eq!(top, ["Calendar", "Contacts", "Mail", "OneDrive", "Tasks"]);
    let mail: Vec<String> = env
        .engine
        .list(&env.task, &s1, &p("Mail"))
        .await
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    for f in ["Inbox", "Archive", "Drafts", "Verborgene Ablage"] {
        assert!(mail.contains(&f.to_string()), "{f} in {mail:?}");
    }

    // Every inbox message is there, byte for byte as Graph serves its MIME.
    let inbox = env
        .all(&format!("/users/{upn}/mailFolders/inbox/messages?$top=100"))
        .await;
    let stored = env
        .engine
        .list(&env.task, &s1, &p("Mail/Inbox"))
        .await
        .unwrap();
    assert_eq!(
        stored.iter().filter(|e| e.kind != EntryKind::Dir).count(),
        inbox.len()
    );
    for m in inbox.iter().take(3) {
        let id = m["id"].as_str().unwrap();
        let mime = env
            .get_bytes(&format!("/users/{upn}/messages/{id}/$value"))
            .await;
        let name = String::from_utf8(m365::names::item_name(id, "eml")).unwrap();
        let path = p(&format!("Mail/Inbox/{name}"));
        assert_eq!(env.item_bytes(&s1, &path).await, mime);
        let e = stored.iter().find(|e| e.name == name.as_bytes()).unwrap();
        let meta = |k: &str| {
            e.meta
                .iter()
                .find(|(x, _)| x == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(meta("subject"), m["subject"].as_str().unwrap());
        assert_eq!(meta("read"), m["isRead"].as_bool().unwrap().to_string());
    }
    // OneDrive: every file, the large one streamed through the chunker.
    let drive_files = common::drive_files(&env, 0);
    let files = walk(&env, &s1, &p("OneDrive")).await;
    assert_eq!(files.len(), drive_files, "{files:?}");

    // Day 2: only what changed is fetched.
    let before = env.stats().await;
    let msgs1 = walk(&env, &s1, &p("Mail")).await.len() as u64;
    let report = env.admin("advance-day", None).await;
    let day: Vec<&Value> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["user"] == upn.as_str())
        .collect();
    let day = day[0];
    env.reset_stats().await;
    let s2 = env.backup(&user).await.unwrap();
    let after = env.stats().await;
    assert_eq!(s2.error_count, 0, "{:?}", env.errors(&s2).await);
    let added = day["mail"]["added"].as_array().unwrap().len() as u64;
    assert_eq!(
        num(&after, "/downloads"),
        3,
        "two new files and one edited one"
    );
    let req1 = num(
        &before,
        &format!("/mailboxes/{}/requests", upn.replace('/', "~1")),
    );
    let req2 = num(
        &after,
        &format!("/mailboxes/{}/requests", upn.replace('/', "~1")),
    );
    // Day 1 read every message; day 2 reads only the new ones (plus the new folder's
    // listing and delta round).
    assert!(
        req2 + msgs1 <= req1 + added + 4,
        "day 1 {req1} requests for {msgs1} messages, day 2 {req2} for {added}"
    );
    assert_eq!(
        s2.stats.items_read,
        added + 3 + 6,
        "new mail, files, a contact, event and task added and another of each edited"
    );

    let changes = env.engine.diff(&env.task, &s1, &s2).await.unwrap();
    let has = |kind: ChangeKind, id: &str| {
        let name = String::from_utf8(m365::names::item_name(id, "eml")).unwrap();
        changes
            .iter()
            .any(|c| c.kind == kind && c.path.ends_with(&name))
    };
    for m in day["mail"]["added"].as_array().unwrap() {
        assert!(
            has(ChangeKind::Added, m["immutableId"].as_str().unwrap()),
            "{m}"
        );
    }
    for m in day["mail"]["deleted"].as_array().unwrap() {
        assert!(
            has(ChangeKind::Removed, m["immutableId"].as_str().unwrap()),
            "{m}"
        );
    }
    for m in day["mail"]["updated"].as_array().unwrap() {
        assert!(
            has(ChangeKind::Changed, m["immutableId"].as_str().unwrap()),
            "{m}"
        );
    }
    for m in day["mail"]["moved"].as_array().unwrap() {
        let id = m["immutableId"].as_str().unwrap();
        assert!(
            has(ChangeKind::Removed, id) && has(ChangeKind::Added, id),
            "{m}"
        );
    }
    let mail_changes = changes
        .iter()
        .filter(|c| c.path.starts_with("Mail/") && !c.path.ends_with('/'))
        .count();
    let d = &day["mail"];
    let expected = d["added"].as_array().unwrap().len()
        + d["deleted"].as_array().unwrap().len()
        + d["updated"].as_array().unwrap().len()
        + 2 * d["moved"].as_array().unwrap().len();
    assert_eq!(mail_changes, expected, "{changes:?}");
}

#[tokio::test]
async fn an_expired_delta_token_resyncs_without_storing_anything_new() {
    let env = start(graphsim::Config {
        users: 1,
        ..small()
    })
    .await;
    let user = env.user(0).await;
    let s1 = env.backup(&user).await.unwrap();
    env.admin("expire-delta", None).await;
    env.reset_stats().await;
    let s2 = env.backup(&user).await.unwrap();
    let stats = env.stats().await;
    assert!(
        num(&stats, "/by_status/410") > 0,
        "the old tokens were refused: {stats}"
    );
    assert_eq!(num(&stats, "/downloads"), 0, "no file downloaded again");
    assert_eq!(
        s2.stats.new_blobs, 1,
        "nothing but the side data with the new delta tokens"
    );
    assert_eq!(s2.root, s1.root, "the same tree");
    assert!(env
        .engine
        .diff(&env.task, &s1, &s2)
        .await
        .unwrap()
        .is_empty());
    // And the next day goes on incrementally from the new tokens.
    env.admin("advance-day", None).await;
    env.reset_stats().await;
    let s3 = env.backup(&user).await.unwrap();
    assert_eq!(num(&env.stats().await, "/by_status/410"), 0);
    assert!(!env
        .engine
        .diff(&env.task, &s2, &s3)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_run_out_of_time_pauses_and_goes_on() {
    let env = start(graphsim::Config {
        users: 1,
        ..small()
    })
    .await;
    let user = env.user(0).await;
    let c = env.connector().await;
    let mut runs = 0;
    let snap = loop {
        runs += 1;
        assert!(runs < 200, "the backup does not finish");
        let opts = BackupOptions {
            progress: Arc::new(NoProgress),
            deadline: Some(std::time::Instant::now()),
        };
        match env
            .engine
            .backup(&env.task, &user.id, c.as_ref(), &opts)
            .await
            .unwrap()
        {
            BackupEnd::Paused { .. } => {
                assert!(env.engine.snapshots(&env.task).await.unwrap().is_empty());
            }
            BackupEnd::Committed(s) => break *s,
        }
    };
    assert!(runs > 5, "every page was a run of its own ({runs})");
    assert_eq!(snap.error_count, 0, "{:?}", env.errors(&snap).await);
    let drive_files = common::drive_files(&env, 0) as u64;
    assert_eq!(
        num(&env.stats().await, "/downloads"),
        drive_files,
        "each file fetched once"
    );
    // The paused runs together made a complete snapshot: a full run finds nothing new.
    let full = env.backup(&user).await.unwrap();
    assert!(env
        .engine
        .diff(&env.task, &snap, &full)
        .await
        .unwrap()
        .is_empty());
    assert!(!walk(&env, &snap, &p(""))
        .await
        .iter()
        .any(|x| x.starts_with(".resync")));
}
