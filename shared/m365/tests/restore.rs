//! Restores through Graph, checked with the simulator's own API: a mail folder into a new
//! `Lifeboat Restore …` folder (not drafts, read state and received time kept), OneDrive to
//! another user (a large file through an upload session), and an in-place restore that
//! leaves existing files alone.

mod common;

use common::{p, small, start};
use engine::{Destination, Entry, EntryKind, OnConflict, RestoreOptions};
use serde_json::Value;

#[tokio::test]
async fn restores_into_a_new_folder_and_to_another_user() {
    let env = start(small()).await;
    let user = env.user(0).await;
    let other = env.user(1).await;
    let snap = env.backup(&user).await.unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);

    // The inbox, into a new top-level folder of the same mailbox.
    let opts = RestoreOptions {
        include: vec![p("Mail/Inbox")],
        at: Some(at),
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let upn = user.id.as_str();
    let top = env.all(&format!("/users/{upn}/mailFolders?$top=100")).await;
    let restored = top
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .expect("the restore folder");
    let inner = env
        .all(&format!(
            "/users/{upn}/mailFolders/{}/childFolders",
            restored["id"].as_str().unwrap()
        ))
        .await;
    let inbox = inner
        .iter()
        .find(|f| f["displayName"] == "Inbox")
        .expect("Inbox inside it");
    let got = env
        .all(&format!(
            "/users/{upn}/mailFolders/{}/messages?$top=100",
            inbox["id"].as_str().unwrap()
        ))
        .await;
    let orig = env
        .all(&format!("/users/{upn}/mailFolders/inbox/messages?$top=100"))
        .await;
    let inner_names: Vec<&str> = inner
        .iter()
        .map(|f| f["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        got.len(),
        orig.len(),
        "items {} folders {} inner {inner_names:?}",
        r.items,
        r.folders
    );
    let in_snapshot = common::walk(&env, &snap, &p("Mail/Inbox")).await.len();
    assert_eq!(
        r.items as usize, in_snapshot,
        "the inbox and its sub-folders"
    );
    let key = |m: &Value| {
        (
            m["subject"].as_str().unwrap().to_string(),
            m["receivedDateTime"].as_str().unwrap().to_string(),
            m["isRead"].as_bool().unwrap(),
        )
    };
    let mut a: Vec<_> = got.iter().map(key).collect();
    let mut b: Vec<_> = orig.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "subject, received time and read state kept");
    assert!(got.iter().all(|m| m["isDraft"] == false), "no drafts");
    assert_eq!(
        got.iter().filter(|m| m["hasAttachments"] == true).count(),
        orig.iter().filter(|m| m["hasAttachments"] == true).count()
    );

    // OneDrive, to another user: the files under the label, byte for byte.
    let opts = RestoreOptions {
        include: vec![p("OneDrive")],
        at: Some(at),
        ..Default::default()
    };
    // The engine checks the destination first: an account the task does not have is
    // refused before anything is written.
    let err = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination {
                task: None,
                account: Some(domain::AccountId::new("nobody@example.com").unwrap()),
            },
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), engine::ErrorKind::NotFound, "{err}");
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination {
                task: None,
                account: Some(other.id.clone()),
            },
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.items as usize, common::drive_files(&env, 0));
    let (mine, theirs) = {
        let sim = env.sim.shared.sim();
        (sim.users[0].drive_id.clone(), sim.users[1].drive_id.clone())
    };
    let folder = env
        .get(&format!(
            "/drives/{theirs}/root:/{}",
            label.replace(' ', "%20")
        ))
        .await;
    assert!(folder.get("folder").is_some());
    let total = |d: &str, path: &str| {
        let sim = env.sim.shared.sim();
        let drive = &sim.drives[d];
        let root = drive.by_path(drive.root, path).unwrap();
        drive.size(root)
    };
    assert_eq!(
        total(&theirs, &label),
        total(&mine, ""),
        "every byte, the large file included"
    );

    // In place, skipping what is there: nothing is written.
    let opts = RestoreOptions {
        include: vec![p("OneDrive")],
        in_place: true,
        on_conflict: OnConflict::Skip,
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.items, r.skipped as usize),
        (0, common::drive_files(&env, 0))
    );

    // Contacts, calendars and tasks into labelled folders, calendars and lists.
    let opts = RestoreOptions {
        include: vec![p("Contacts"), p("Calendar"), p("Tasks")],
        at: Some(at),
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let cals = env.all(&format!("/users/{upn}/calendars")).await;
    assert!(cals
        .iter()
        .any(|c| c["name"].as_str().unwrap().starts_with(&label)));
    let lists = env.all(&format!("/users/{upn}/todo/lists")).await;
    assert!(lists
        .iter()
        .any(|l| l["displayName"].as_str().unwrap().starts_with(&label)));
    let folders = env.all(&format!("/users/{upn}/contactFolders")).await;
    let f = folders
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .expect("contact folder");
    let restored = env
        .all(&format!(
            "/users/{upn}/contactFolders/{}/contacts",
            f["id"].as_str().unwrap()
        ))
        .await;
    assert!(!restored.is_empty());
}

/// A restore job run again (after a crash, with the same label) finds what the first run
/// wrote into its labelled folders and writes only the rest: no duplicates.
#[tokio::test]
async fn a_restore_run_again_does_not_duplicate_what_it_wrote() {
    let env = start(graphsim::Config {
        users: 1,
        ..small()
    })
    .await;
    let user = env.user(0).await;
    let snap = env.backup(&user).await.unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T02:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);
    let upn = user.id.as_str();
    // The first run is cut short: it restores one message of the inbox, then a contact.
    let inbox = common::walk(&env, &snap, &p("Mail/Inbox")).await;
    let contacts = common::walk(&env, &snap, &p("Contacts")).await;
    let first = RestoreOptions {
        include: vec![p(&inbox[0]), p(&contacts[0])],
        at: Some(at),
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &first,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert_eq!((r.items, r.skipped), (2, 0), "{:?}", r.errors);
    let whole = RestoreOptions {
        include: vec![
            p("Mail/Inbox"),
            p("Contacts"),
            p("Tasks"),
            p("Calendar"),
            p("OneDrive"),
        ],
        at: Some(at),
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &whole,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.skipped, 2, "the two items of the first run");
    let tasks = common::walk(&env, &snap, &p("Tasks")).await;
    let events = common::walk(&env, &snap, &p("Calendar")).await;
    let files = common::walk(&env, &snap, &p("OneDrive")).await;
    let all = inbox.len() + contacts.len() + tasks.len() + events.len() + files.len();
    assert_eq!(r.items as usize, all - 2);
    // Once more, as if the second run had crashed at its very end: nothing new.
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &whole,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert_eq!((r.items, r.skipped as usize), (0, all), "{:?}", r.errors);
    // The labelled inbox holds each message once.
    let top = env.all(&format!("/users/{upn}/mailFolders?$top=100")).await;
    let restored = top
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .expect("the restore folder");
    let inner = env
        .all(&format!(
            "/users/{upn}/mailFolders/{}/childFolders",
            restored["id"].as_str().unwrap()
        ))
        .await;
    let folder = inner.iter().find(|f| f["displayName"] == "Inbox").unwrap();
    let got = env
        .all(&format!(
            "/users/{upn}/mailFolders/{}/messages?$top=100",
            folder["id"].as_str().unwrap()
        ))
        .await;
    let direct = inbox.iter().filter(|x| x.matches('/').count() == 2).count();
    assert_eq!(got.len(), direct, "each message once");
}

/// Every message under a mail folder and its sub-folders, with the names of the folders
/// (below it) that hold none.
async fn messages_below(env: &common::Env, upn: &str, folder: &str) -> (Vec<Value>, Vec<String>) {
    let mut out = Vec::new();
    let mut empty = Vec::new();
    let mut stack = vec![(folder.to_string(), String::new())];
    while let Some((id, name)) = stack.pop() {
        let here = env
            .all(&format!("/users/{upn}/mailFolders/{id}/messages?$top=100"))
            .await;
        let children = env
            .all(&format!("/users/{upn}/mailFolders/{id}/childFolders"))
            .await;
        if here.is_empty() && children.is_empty() {
            empty.push(name);
        }
        out.extend(here);
        for c in children {
            stack.push((
                c["id"].as_str().unwrap().to_string(),
                c["displayName"].as_str().unwrap().to_string(),
            ));
        }
    }
    (out, empty)
}

/// A restore selected by sender, subject and day brings back exactly the messages those
/// select, in their folders, and no folder that would stay empty.
#[tokio::test]
async fn a_restore_by_sender_subject_and_day_brings_back_only_those() {
    let env = start(small()).await;
    let user = env.user(0).await;
    let upn = user.id.as_str().to_string();
    let snap = env.backup(&user).await.unwrap();

    // A message of the snapshot to aim at, and the filter that names it.
    let mut entries = Vec::new();
    let mut stack = vec![p("Mail")];
    while let Some(dir) = stack.pop() {
        for e in env.engine.list(&env.task, &snap, &dir).await.unwrap() {
            let child = dir.join(&e.name).unwrap();
            if e.kind == EntryKind::Dir {
                stack.push(child);
            } else {
                entries.push(e);
            }
        }
    }
    let meta = |e: &Entry, k: &str| {
        e.meta
            .iter()
            .find(|(mk, _)| mk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let target = entries
        .iter()
        .find(|e| !meta(e, "subject").is_empty() && !meta(e, "from").is_empty())
        .expect("a message with a subject and a sender");
    let day = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(target.mtime_ns).date_naive();
    let word = meta(target, "subject")
        .split_whitespace()
        .max_by_key(|w| w.len())
        .unwrap()
        .to_uppercase();
    let filter = domain::ItemFilter {
        sender: Some(meta(target, "from")),
        subject: Some(word.clone()),
        since: Some(day),
        until: Some(day),
    };
    let wanted: Vec<String> = entries
        .iter()
        .filter(|e| filter.matches(&e.meta, e.mtime_ns))
        .map(|e| meta(e, "subject"))
        .collect();
    assert!(!wanted.is_empty() && wanted.len() < entries.len());

    let at = chrono::DateTime::parse_from_rfc3339("2026-11-26T03:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let label = domain::restore_label(domain::RESTORE_PREFIX, at);
    let opts = RestoreOptions {
        include: vec![p("Mail")],
        at: Some(at),
        filter,
        ..Default::default()
    };
    let r = env
        .engine
        .restore(
            &env.task,
            &snap,
            &Destination::default(),
            &opts,
            &m365::Opener,
        )
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.items as usize, wanted.len());

    let top = env.all(&format!("/users/{upn}/mailFolders?$top=100")).await;
    let restored = top
        .iter()
        .find(|f| f["displayName"] == label.as_str())
        .expect("the restore folder");
    let (got, empty) = messages_below(&env, &upn, restored["id"].as_str().unwrap()).await;
    let mut got: Vec<String> = got
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_string())
        .collect();
    let mut wanted = wanted;
    got.sort();
    wanted.sort();
    assert_eq!(
        got, wanted,
        "the messages with {word:?} from that sender that day"
    );
    assert!(empty.is_empty(), "folders restored empty: {empty:?}");
}
