//! No holes: what real tenants do to a backup, through the real connector against the
//! hostile simulator. Items that fail are stored by a later run; a 403 costs its item or
//! its site; files served larger than listed are kept; a run throttled or out of time
//! keeps what it did; search folders and folders deleted mid-run cost nothing. Stored
//! bytes are compared with the generator's own content, not with what the simulator
//! serves.

mod common;

use common::{num, p, small, start, walk, Env};
use engine::{AccountInfo, BackupEnd, BackupOptions, SnapshotRecord};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn one_user() -> graphsim::Config {
    graphsim::Config {
        users: 1,
        ..small()
    }
}

/// One run of a backup (a continuation when the account has a checkpoint).
async fn run(env: &Env, a: &AccountInfo, deadline: Option<Instant>) -> BackupEnd {
    let c = env.connector().await;
    let opts = BackupOptions {
        deadline,
        ..Default::default()
    };
    env.engine
        .backup(&env.task, &a.id, c.as_ref(), &opts)
        .await
        .expect("the run ends without an error")
}

/// Message contents and file downloads the simulator served.
fn content_requests(stats: &Value) -> u64 {
    let values: u64 = stats["by_route"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.ends_with("/$value"))
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    values + num(stats, "/downloads")
}

/// A small file of user `i`'s OneDrive as the generator made it: drive id, item id, name
/// and content.
fn small_file(env: &Env, i: usize) -> (String, String, String, graphsim::util::Content) {
    let sim = env.sim.shared.sim();
    let drive_id = sim.users[i].drive_id.clone();
    let f = sim.drives[&drive_id]
        .items
        .values()
        .find(|f| {
            !f.is_folder
                && f.content
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && c.len() < 1 << 20)
        })
        .expect("a small file");
    (
        drive_id,
        f.id.clone(),
        f.name.clone(),
        f.content.clone().unwrap(),
    )
}

/// The first inbox message of a user: its immutable id and the subject the generator gave it.
async fn inbox_message(env: &Env, upn: &str) -> (String, String) {
    let m = &env
        .all(&format!("/users/{upn}/mailFolders/inbox/messages"))
        .await[0];
    (
        m["id"].as_str().unwrap().to_string(),
        m["subject"].as_str().unwrap().to_string(),
    )
}

fn one_path<'a>(paths: &'a [String], name: &str) -> &'a str {
    let found: Vec<&String> = paths
        .iter()
        .filter(|x| x.rsplit('/').next() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "{name} in {paths:?}");
    found[0]
}

fn eml(id: &str) -> String {
    String::from_utf8(m365::names::item_name(id, "eml")).unwrap()
}

#[tokio::test]
async fn a_message_and_a_file_that_fail_through_a_run_are_stored_by_the_next() {
    let env = start(one_user()).await;
    let user = env.user(0).await;
    let upn = user.id.as_str().to_string();
    let (msg, subject) = inbox_message(&env, &upn).await;
    let (drive, file, name, content) = small_file(&env, 0);
    env.admin(
        "faults/script",
        Some(json!([
            { "status": 500, "path_contains": msg, "times": 1000 },
            { "status": 502, "path_contains": format!("_dl/{drive}/{file}"), "times": 1000 },
        ])),
    )
    .await;
    let s1 = env.backup(&user).await.unwrap();
    assert_eq!(s1.error_count, 2, "{:?}", env.errors(&s1).await);
    let paths = walk(&env, &s1, &p("")).await;
    assert!(!paths.iter().any(|x| x.ends_with(&eml(&msg))));
    assert!(!paths.iter().any(|x| x.ends_with(&format!("/{name}"))));

    // The source recovers; the next run asks for exactly what failed.
    env.admin("faults", Some(json!({ "script": [] }))).await;
    env.reset_stats().await;
    let s2 = env.backup(&user).await.unwrap();
    assert_eq!(s2.error_count, 0, "{:?}", env.errors(&s2).await);
    assert_eq!(content_requests(&env.stats().await), 2);
    let paths = walk(&env, &s2, &p("")).await;
    let stored = env.item_bytes(&s2, &p(one_path(&paths, &name))).await;
    assert_eq!(stored, content.range(0, content.len()));
    let mime = env.item_bytes(&s2, &p(one_path(&paths, &eml(&msg)))).await;
    let parsed = mail_parser::MessageParser::default()
        .parse(&mime)
        .expect("the stored message parses");
    assert_eq!(parsed.subject(), Some(subject.as_str()));
    // A third run has nothing left to retry.
    env.reset_stats().await;
    let s3 = env.backup(&user).await.unwrap();
    assert_eq!(s3.error_count, 0);
    assert_eq!(content_requests(&env.stats().await), 0);
}

#[tokio::test]
async fn an_office_file_served_with_1234_extra_bytes_is_stored_as_served() {
    let env = start(one_user()).await;
    let user = env.user(0).await;
    let (drive, file, _, content) = small_file(&env, 0);
    {
        let mut sim = env.sim.shared.sim();
        let d = sim.drives.get_mut(&drive).unwrap();
        let key = d.by_id[&file];
        d.items.get_mut(&key).unwrap().name = "Quarterly report.docx".into();
    }
    env.admin(
        "faults",
        Some(json!({ "enriched": { file.clone(): 1234 } })),
    )
    .await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    let paths = walk(&env, &s, &p("")).await;
    let stored = env
        .item_bytes(&s, &p(one_path(&paths, "Quarterly report.docx")))
        .await;
    let mut expected = content.range(0, content.len());
    assert_eq!(stored.len(), expected.len() + 1234);
    expected.extend(graphsim::hostile::enrichment(&file, 1234));
    assert_eq!(stored, expected);
    let notes = env.errors(&s).await;
    let note = notes
        .iter()
        .find(|e| e.path.ends_with("Quarterly report.docx"))
        .expect("the sizes are noted");
    assert!(note.note, "{note:?}");
    let listed = content.len().to_string();
    let served = (content.len() + 1234).to_string();
    assert!(
        note.message.contains(&listed) && note.message.contains(&served),
        "{note:?}"
    );
    // Unchanged at the source, it is not downloaded again.
    env.reset_stats().await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0);
    assert_eq!(num(&env.stats().await, "/downloads"), 0);
}

#[tokio::test]
async fn malware_a_forbidden_message_and_a_forbidden_site_cost_exactly_those() {
    let clean = start(one_user()).await;
    let clean_accounts: Vec<String> = clean
        .accounts()
        .await
        .iter()
        .map(|a| a.id.to_string())
        .collect();
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let env = start(one_user()).await;
    let user = env.user(0).await;
    let (msg, _) = inbox_message(&env, user.id.as_str()).await;
    let (_, file, name, _) = small_file(&env, 0);
    // A site with no sub-sites, so that refusing it hides nothing else.
    let site = {
        let sim = env.sim.shared.sim();
        let leaf = (0..sim.sites.len())
            .rev()
            .find(|i| !sim.sites.iter().any(|s| s.parent == Some(*i)))
            .unwrap();
        sim.sites[leaf].id.clone()
    };
    env.admin(
        "faults",
        Some(json!({ "forbidden": {
            msg.clone(): "ErrorAccessDenied",
            file.clone(): "malwareDetected",
            site.clone(): "accessDenied",
        }})),
    )
    .await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 2, "{:?}", env.errors(&s).await);
    let errors = env.errors(&s).await;
    let file_path = one_path(&expected, &name).to_string();
    let msg_path = one_path(&expected, &eml(&msg)).to_string();
    let why = |path: &str| {
        errors
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.message.clone())
            .unwrap_or_default()
    };
    assert!(why(&file_path).contains("malware"), "{errors:?}");
    assert!(why(&msg_path).contains("ErrorAccessDenied"), "{errors:?}");
    let want: Vec<String> = expected
        .iter()
        .filter(|x| **x != file_path && **x != msg_path)
        .cloned()
        .collect();
    assert_eq!(walk(&env, &s, &p("")).await, want);

    // Discovery finds every site, the refused one included; its backup alone fails, and
    // says why.
    let accounts = env.accounts().await;
    let ids: Vec<String> = accounts.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(ids, clean_accounts);
    let refused = format!("{}{}", m365::sites::SITE_PREFIX, site.replace(',', "+"));
    let mut sites = 0;
    for a in accounts
        .iter()
        .filter(|a| a.id.as_str().starts_with("site+"))
    {
        sites += 1;
        let got = env.backup(a).await;
        if a.id.as_str() == refused {
            let e = got.unwrap_err();
            assert_eq!(
                e.kind(),
                engine::ErrorKind::Source(engine::SourceErrorKind::Auth)
            );
            assert!(e.to_string().contains("accessDenied"), "{e}");
        } else {
            assert_eq!(got.unwrap().error_count, 0, "{}", a.id);
        }
    }
    assert!(sites >= 2, "{ids:?}");
}

#[tokio::test]
async fn an_hour_of_retry_after_at_60_percent_leaves_a_checkpoint_the_next_run_goes_on_from() {
    let cfg = graphsim::Config {
        users: 1,
        messages_per_folder: 60,
        files_per_user: 2,
        ..small()
    };
    let clean = start(cfg.clone()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;
    let total = content_requests(&clean.stats().await);
    assert!(
        total > 300,
        "enough content for a page to be a fraction: {total}"
    );

    let env = start(cfg).await;
    let user = env.user(0).await;
    let at = total * 6 / 10;
    env.admin(
        "faults/script",
        Some(
            json!({ "status": 429, "path_contains": "$value", "retry_after": 3600,
            "after": at, "times": 100000 }),
        ),
    )
    .await;
    env.reset_stats().await;
    env.test.advance(chrono::Duration::days(1));
    let first = run(&env, &user, None).await;
    let BackupEnd::Paused { items_this_run, .. } = first else {
        panic!("the throttled run keeps a checkpoint: {first:?}");
    };
    let stats = env.stats().await;
    assert!(num(&stats, "/by_status/429") >= 1, "{stats}");
    assert!(
        items_this_run as f64 >= 0.5 * total as f64,
        "{items_this_run} of {total}"
    );

    env.admin("faults", Some(json!({ "script": [] }))).await;
    env.reset_stats().await;
    let second = run(&env, &user, None).await;
    let BackupEnd::Committed(s) = second else {
        panic!("the next run completes the backup: {second:?}");
    };
    let fetched = content_requests(&env.stats().await);
    let remaining = total - at;
    const PAGE: u64 = 200;
    assert!(
        fetched < remaining + PAGE,
        "{fetched} fetched, {remaining} remained of {total}"
    );
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn forty_large_files_in_one_page_with_a_deadline_mid_page_take_forty_downloads() {
    let cfg = graphsim::Config {
        users: 1,
        messages_per_folder: 1,
        folder_depth: 0,
        files_per_user: 0,
        contacts_per_user: 1,
        events_per_user: 1,
        tasks_per_list: 1,
        ..small()
    };
    let env = start(cfg).await;
    const SIZE: u64 = 20 << 20;
    let (drive, names) = {
        let mut guard = env.sim.shared.sim();
        let sim = &mut *guard;
        let drive = sim.users[0].drive_id.clone();
        let mut names = Vec::new();
        for i in 0..40u64 {
            let seq = sim.next_seq();
            let now = sim.now();
            let d = sim.drives.get_mut(&drive).unwrap();
            let root = d.root;
            let name = format!("survey-{i:02}.bin");
            d.add(
                format!("01LARGE{i:028}"),
                root,
                &name,
                Some(graphsim::util::Content::Generated {
                    seed: 7000 + i,
                    len: SIZE,
                }),
                now,
                seq,
            );
            names.push(name);
        }
        (drive, names)
    };
    // The library hashes each file once, when first listed (here, not in the run).
    let listed = env.all(&format!("/drives/{drive}/root/delta")).await;
    assert_eq!(
        listed.iter().filter(|r| r.get("file").is_some()).count(),
        40
    );
    let user = env.user(0).await;
    env.reset_stats().await;
    env.test.advance(chrono::Duration::days(1));
    let first = run(&env, &user, Some(Instant::now() + Duration::from_secs(3))).await;
    assert!(
        matches!(first, BackupEnd::Paused { .. }),
        "the deadline comes mid-page: {first:?}"
    );
    let after_first = num(&env.stats().await, "/downloads");
    assert!(
        (1..40).contains(&after_first),
        "the first run stopped within the page: {after_first}"
    );
    let second = run(&env, &user, None).await;
    let BackupEnd::Committed(s) = second else {
        panic!("the second run completes: {second:?}");
    };
    assert_eq!(num(&env.stats().await, "/downloads"), 40);
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    let paths = walk(&env, &s, &p("")).await;
    for n in &names {
        one_path(&paths, n);
    }
    // The first and the last file hold what the generator made.
    for (i, n) in [(0u64, &names[0]), (39, &names[39])] {
        let stored = env.item_bytes(&s, &p(one_path(&paths, n))).await;
        let original = graphsim::util::Content::Generated {
            seed: 7000 + i,
            len: SIZE,
        };
        assert!(stored == original.range(0, SIZE), "{n} differs");
    }
}

#[tokio::test]
async fn a_search_folder_leaves_no_folder_in_the_tree() {
    let clean = start(one_user()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let env = start(one_user()).await;
    let user = env.user(0).await;
    env.admin(
        "search-folder",
        Some(json!({ "user": user.id.as_str(), "name": "Unread mail", "source": "inbox" })),
    )
    .await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    let paths = walk(&env, &s, &p("")).await;
    assert!(
        !paths.iter().any(|x| x.contains("Unread mail")),
        "{paths:?}"
    );
    assert_eq!(paths, expected, "every message once, in its own folder");
    assert!(!folders(&env, &s)
        .await
        .iter()
        .any(|f| f.contains("Unread mail")));
}

#[tokio::test]
async fn a_folder_deleted_mid_run_costs_nothing() {
    let env = start(one_user()).await;
    let user = env.user(0).await;
    let upn = user.id.as_str().to_string();
    let child = &env
        .all(&format!("/users/{upn}/mailFolders/inbox/childFolders"))
        .await[0];
    let (id, name) = (
        child["id"].as_str().unwrap().to_string(),
        child["displayName"].as_str().unwrap().to_string(),
    );
    env.admin("faults", Some(json!({ "delete_before_delta": [id] })))
        .await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert!(
        !folders(&env, &s).await.iter().any(|f| f.ends_with(&name)),
        "the deleted folder is not in the backup"
    );
    // What the source holds now is what the snapshot holds: the next run changes nothing.
    let s2 = env.backup(&user).await.unwrap();
    assert_eq!(s2.error_count, 0);
    assert_eq!(walk(&env, &s2, &p("")).await, walk(&env, &s, &p("")).await);
}

/// Every folder path of a snapshot.
async fn folders(env: &Env, snap: &SnapshotRecord) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![p("")];
    while let Some(dir) = stack.pop() {
        for e in env.engine.list(&env.task, snap, &dir).await.unwrap() {
            if e.kind == engine::EntryKind::Dir {
                let child = dir.join(&e.name).unwrap();
                out.push(child.to_string());
                stack.push(child);
            }
        }
    }
    out
}

#[tokio::test]
async fn downloads_that_break_off_are_resumed_where_they_stopped() {
    let env = start(one_user()).await;
    // Larger than what is read whole, so that it goes through the streamed path.
    const SIZE: u64 = 6 << 20;
    let (drive, big) = {
        let mut guard = env.sim.shared.sim();
        let sim = &mut *guard;
        let drive = sim.users[0].drive_id.clone();
        let seq = sim.next_seq();
        let now = sim.now();
        let d = sim.drives.get_mut(&drive).unwrap();
        let root = d.root;
        let id = format!("01BREAK{:028}", 1);
        d.add(
            id.clone(),
            root,
            "field-recording.bin",
            Some(graphsim::util::Content::Generated {
                seed: 4242,
                len: SIZE,
            }),
            now,
            seq,
        );
        (drive, id)
    };
    let (_, small, name, content) = small_file(&env, 0);
    // The big file breaks off twice (resumed twice); the small one once more than it is
    // resumed, so it fails this run and is stored by the next.
    env.admin(
        "faults",
        Some(json!({ "cut_downloads": { big.clone(): 2, small.clone(): 4 } })),
    )
    .await;
    let user = env.user(0).await;
    let all_bytes: u64 = {
        let sim = env.sim.shared.sim();
        sim.drives[&drive]
            .items
            .values()
            .filter_map(|f| f.content.as_ref().map(|c| c.len()))
            .sum()
    };
    let s1 = env.backup(&user).await.unwrap();
    let errors = env.errors(&s1).await;
    assert_eq!(s1.error_count, 1, "{errors:?}");
    assert!(
        errors[0].path.ends_with(&format!("/{name}")) && errors[0].message.contains("broke off"),
        "{errors:?}"
    );
    let stats = env.stats().await;
    // Every byte of the big file was sent once: it was resumed, not downloaded again.
    // The small file's four tries sent half, then half of each remainder.
    let len = content.len();
    let small_sent = {
        let mut sent = 0;
        let mut left = len;
        for _ in 0..4 {
            sent += left / 2;
            left -= left / 2;
        }
        sent
    };
    assert_eq!(
        num(&stats, "/downloaded_bytes"),
        all_bytes - len + small_sent,
        "{stats}"
    );
    let paths = walk(&env, &s1, &p("")).await;
    let stored = env
        .item_bytes(&s1, &p(one_path(&paths, "field-recording.bin")))
        .await;
    let original = graphsim::util::Content::Generated {
        seed: 4242,
        len: SIZE,
    };
    assert!(
        stored == original.range(0, SIZE),
        "the resumed file differs"
    );

    let s2 = env.backup(&user).await.unwrap();
    assert_eq!(s2.error_count, 0, "{:?}", env.errors(&s2).await);
    let paths = walk(&env, &s2, &p("")).await;
    let stored = env.item_bytes(&s2, &p(one_path(&paths, &name))).await;
    assert_eq!(stored, content.range(0, len));
}

/// Message delta pages the simulator served.
fn mail_deltas(stats: &Value) -> u64 {
    stats["by_route"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.ends_with("/messages/delta"))
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_failure_after_progress_keeps_a_checkpoint_and_one_before_it_fails_the_run() {
    let cfg = graphsim::Config {
        users: 1,
        messages_per_folder: 30,
        ..small()
    };
    let clean = start(cfg.clone()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;
    let stats = clean.stats().await;
    let (total, deltas) = (content_requests(&stats), mail_deltas(&stats));
    assert!(deltas >= 4, "{stats}");

    // Refused before anything was stored: nothing to keep, the run fails.
    let env = start(cfg.clone()).await;
    let user = env.user(0).await;
    env.admin(
        "faults/script",
        Some(json!({ "status": 400, "path_contains": "delta", "times": 100000 })),
    )
    .await;
    let c = env.connector().await;
    let got = env
        .engine
        .backup(&env.task, &user.id, c.as_ref(), &BackupOptions::default())
        .await;
    assert!(got.is_err(), "{got:?}");

    // Refused at the last mail folder's delta: the run keeps what it stored.
    let env = start(cfg).await;
    let user = env.user(0).await;
    env.admin(
        "faults/script",
        Some(json!({ "status": 400, "path_contains": "messages/delta",
            "after": deltas - 1, "times": 100000 })),
    )
    .await;
    let first = run(&env, &user, None).await;
    let BackupEnd::Paused { items_this_run, .. } = first else {
        panic!("the failed run keeps a checkpoint: {first:?}");
    };
    assert!(items_this_run > 0);
    env.admin("faults", Some(json!({ "script": [] }))).await;
    env.reset_stats().await;
    let second = run(&env, &user, None).await;
    let BackupEnd::Committed(s) = second else {
        panic!("the next run completes the backup: {second:?}");
    };
    assert!(
        content_requests(&env.stats().await) < total,
        "the next run went on from the checkpoint"
    );
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn random_500s_and_502s_leave_no_hole_once_the_source_recovers() {
    let clean = start(one_user()).await;
    let user = clean.user(0).await;
    let expected = walk(&clean, &clean.backup(&user).await.unwrap(), &p("")).await;

    let env = start(one_user()).await;
    let user = env.user(0).await;
    env.admin(
        "faults",
        Some(json!({ "server_error_rate": 0.04, "bad_gateway_rate": 0.04 })),
    )
    .await;
    // A few runs on a failing source: each fails, pauses or commits with errors.
    let mut failed_items = 0;
    for _ in 0..4 {
        let c = env.connector().await;
        let opts = BackupOptions::default();
        if let Ok(BackupEnd::Committed(s)) = env
            .engine
            .backup(&env.task, &user.id, c.as_ref(), &opts)
            .await
        {
            failed_items += s.error_count;
        }
    }
    let stats = env.stats().await;
    let served = num(&stats, "/by_status/500") + num(&stats, "/by_status/502");
    assert!(served > 0, "{stats}");
    assert!(failed_items > 0, "some items failed: {stats}");
    // The source recovers: one run stores everything that failed before.
    env.admin(
        "faults",
        Some(json!({ "server_error_rate": 0.0, "bad_gateway_rate": 0.0 })),
    )
    .await;
    let s = env.backup(&user).await.unwrap();
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    assert_eq!(walk(&env, &s, &p("")).await, expected);
}

#[tokio::test]
async fn a_download_that_stalls_times_out_and_is_resumed() {
    let env = start(one_user()).await;
    let (drive, small, name, content) = small_file(&env, 0);
    env.admin(
        "faults",
        Some(json!({ "stall_downloads": { small.clone(): 1 } })),
    )
    .await;
    let (files, all_bytes) = {
        let sim = env.sim.shared.sim();
        let sizes: Vec<u64> = sim.drives[&drive]
            .items
            .values()
            .filter_map(|f| f.content.as_ref().map(|c| c.len()))
            .collect();
        (sizes.len() as u64, sizes.iter().sum::<u64>())
    };
    let user = env.user(0).await;
    let settings = serde_json::to_value(common::settings(&env.sim)).unwrap();
    let secret = zeroize::Zeroizing::new(env.sim.shared.cfg.client_secret.clone());
    let mut c = m365::M365Connector::new(&settings, Some(secret)).unwrap();
    c.graph_mut()
        .set_read_timeout(Duration::from_millis(500))
        .unwrap();
    let began = Instant::now();
    let end = env
        .engine
        .backup(&env.task, &user.id, &c, &BackupOptions::default())
        .await
        .unwrap();
    // The stall lasts an hour; the run waited for it no longer than its read timeout.
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    let BackupEnd::Committed(s) = end else {
        panic!("{end:?}");
    };
    assert_eq!(s.error_count, 0, "{:?}", env.errors(&s).await);
    let stats = env.stats().await;
    // Every byte sent once, in one download more than there are files: the stalled one
    // was resumed by range, not read again.
    assert_eq!(num(&stats, "/downloaded_bytes"), all_bytes, "{stats}");
    assert_eq!(num(&stats, "/downloads"), files + 1, "{stats}");
    let paths = walk(&env, &s, &p("")).await;
    let stored = env.item_bytes(&s, &p(one_path(&paths, &name))).await;
    assert_eq!(stored, content.range(0, content.len()));
}
