//! Edges that must cost one item or one folder, not the account, played by the scripted
//! server (faults a local Dovecot cannot produce): bounded UID sets, expunge-only days on a
//! CONDSTORE-only server, NIL/short/misplaced bodies, messages given up after
//! `MAX_FAILED_RUNS` (also a folder's only message), a parse error over a 1 MiB literal, a
//! folder refusing STATUS, split FETCH responses, and an unwanted folder with wanted
//! children.

use imap::connector::{META_FLAGS, META_INTERNAL_DATE};
use imap::sync::{sync_folder, Connection, FolderCursor, FolderState, MAX_FAILED_RUNS};
use imap::testing::scripted::{BodyFault, ScriptedServer};
use imap::{FolderInfo, FolderStatus, MessageMeta};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use testkit::env::TestEnv;

mod common;

use common::*;

#[tokio::test]
async fn twenty_thousand_scattered_retries_send_no_command_line_over_8_kib() {
    let server = ScriptedServer::start(vec![folder("INBOX", 40_000)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into()];
    }
    // Every other message failed last time: 20,000 scattered UIDs to ask for again.
    let (validity, next, modseq) = {
        let mut w = server.world();
        let f = w.folder("INBOX");
        (f.uid_validity, f.uid_next, f.highest_modseq)
    };
    let mut cursor = FolderCursor::new(&FolderStatus {
        uid_validity: validity,
        uid_next: next,
        messages: 40_000,
        highest_modseq: Some(modseq),
    });
    let mut prev = FolderState::default();
    for uid in 1..=40_000u32 {
        if uid % 2 == 0 {
            cursor.retries.insert(uid, 1);
        } else {
            prev.messages.insert(
                uid,
                MessageMeta {
                    uid,
                    flags: vec!["\\Seen".into()],
                    internal_date: None,
                    size: None,
                    modseq: None,
                    gm_msgid: None,
                    gm_labels: vec![],
                },
            );
        }
    }
    assert_eq!(cursor.retries.len(), 20_000);
    prev.cursor = Some(cursor);
    let s = settings(server.port);
    let mut conn = Connection::new(s.to_config(PASSWORD).unwrap());
    let inbox = FolderInfo {
        wire: "INBOX".into(),
        name: "INBOX".into(),
        delimiter: Some("/".into()),
        special_use: None,
        selectable: true,
    };
    let mut sink = CountSink::default();
    let r = sync_folder(&mut conn, &inbox, prev, &mut sink)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(r.fetched.len(), 20_000);
    assert_eq!(sink.done, 20_000);
    assert!(r.state.cursor.unwrap().retries.is_empty());
    let longest = server.stats.longest_line.load(Ordering::SeqCst);
    assert!(longest <= 8_192, "a command line of {longest} bytes");
    assert!(server.stats.count("UID FETCH") > 2);
}

#[tokio::test]
async fn an_expunge_only_day_on_a_condstore_only_server_is_noticed() {
    let server = ScriptedServer::start(vec![folder("INBOX", 3)], PASSWORD).await;
    server.world().behaviour.capabilities = vec!["CONDSTORE".into()];
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let day1 = backup(&env, &eng, &task).await;
    assert_eq!(listing(&eng, &task, &day1).await.len(), 3);
    // Only an expunge: UIDNEXT and HIGHESTMODSEQ stay, the count drops.
    let before = {
        let mut w = server.world();
        let f = w.folder("INBOX").clone();
        w.expunge("INBOX", &[2]);
        f
    };
    {
        let mut w = server.world();
        let f = w.folder("INBOX");
        assert_eq!(f.highest_modseq, before.highest_modseq);
        assert_eq!(f.uid_next, before.uid_next);
    }
    let day2 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day2).await;
    assert_eq!(names(&got), vec!["INBOX/1.eml", "INBOX/3.eml"]);
}

#[tokio::test]
async fn nil_short_and_misplaced_bodies_are_retried_never_stored_and_split_fetches_merge() {
    let server = ScriptedServer::start(vec![folder("INBOX", 5)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
        w.behaviour.split_fetch = true;
        let faults = &mut w.behaviour.body_faults;
        faults.insert(("INBOX".into(), 2), (BodyFault::Nil, 1));
        faults.insert(("INBOX".into(), 3), (BodyFault::Short, 1));
        faults.insert(("INBOX".into(), 4), (BodyFault::WrongOffset, 1));
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let day1 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day1).await;
    assert_eq!(names(&got), vec!["INBOX/1.eml", "INBOX/5.eml"]);
    let errs = errors(&eng, &task, &day1).await;
    assert_eq!(errs.len(), 3, "{errs:?}");
    for (path, msg) in &errs {
        assert!(msg.contains("tries again"), "{path}: {msg}");
    }
    // Split FETCH responses: flags from the first, date and size from the second.
    let (size, meta) = &got["INBOX/1.eml"];
    assert_eq!(*size, body(1, "INBOX").len() as u64);
    let m: BTreeMap<&str, &str> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(m[META_FLAGS], "\\Seen");
    assert!(m.contains_key(META_INTERNAL_DATE), "{m:?}");

    // The faults are over: the next run fetches exactly those three, whole.
    let bytes_before = server.stats.body_bytes.load(Ordering::SeqCst);
    let day2 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day2).await;
    assert_eq!(got.len(), 5);
    for i in 1..=5 {
        assert_eq!(
            got[&format!("INBOX/{i}.eml")].0,
            body(i, "INBOX").len() as u64
        );
    }
    assert!(errors(&eng, &task, &day2).await.is_empty());
    let fetched = server.stats.body_bytes.load(Ordering::SeqCst) - bytes_before;
    let three: usize = (2..=4).map(|i| body(i, "INBOX").len()).sum();
    assert_eq!(fetched, three as u64);
}

#[tokio::test]
async fn a_message_that_always_fails_is_reported_once_as_unrecoverable_and_left_alone() {
    let server = ScriptedServer::start(vec![folder("INBOX", 3)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
        w.behaviour
            .body_faults
            .insert(("INBOX".into(), 2), (BodyFault::Nil, u32::MAX));
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let mut given_up_reports = 0;
    for run in 1..=MAX_FAILED_RUNS {
        let snap = backup(&env, &eng, &task).await;
        let errs = errors(&eng, &task, &snap).await;
        assert_eq!(errs.len(), 1, "run {run}: {errs:?}");
        assert_eq!(errs[0].0, "INBOX/2.eml");
        if errs[0].1.contains("not asked for again") {
            given_up_reports += 1;
            assert_eq!(run, MAX_FAILED_RUNS);
        }
    }
    assert_eq!(given_up_reports, 1);
    // From now on the message is not asked for, and not reported again.
    let fetches = server.stats.count("UID FETCH");
    for _ in 0..2 {
        let snap = backup(&env, &eng, &task).await;
        assert!(errors(&eng, &task, &snap).await.is_empty());
        assert_eq!(listing(&eng, &task, &snap).await.len(), 2);
    }
    assert_eq!(
        server.stats.count("UID FETCH"),
        fetches,
        "nothing changed, nothing fetched"
    );
    // A new message still comes in, and the folder does not ask for the old one.
    let bytes_before = server.stats.body_bytes.load(Ordering::SeqCst);
    server.world().add("INBOX", body(4, "INBOX"), &[]);
    let snap = backup(&env, &eng, &task).await;
    assert!(errors(&eng, &task, &snap).await.is_empty());
    assert_eq!(listing(&eng, &task, &snap).await.len(), 3);
    assert_eq!(
        server.stats.body_bytes.load(Ordering::SeqCst) - bytes_before,
        body(4, "INBOX").len() as u64
    );
}

#[tokio::test]
async fn a_folder_whose_only_message_always_fails_gives_it_up_too() {
    // With nothing of the folder in the tree, the cursor must still count the failures.
    let server = ScriptedServer::start(vec![folder("INBOX", 1)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into()];
        w.behaviour
            .body_faults
            .insert(("INBOX".into(), 1), (BodyFault::Short, u32::MAX));
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    for run in 1..=MAX_FAILED_RUNS {
        let snap = backup(&env, &eng, &task).await;
        let errs = errors(&eng, &task, &snap).await;
        assert_eq!(errs.len(), 1, "run {run}: {errs:?}");
        assert_eq!(
            errs[0].1.contains("not asked for again"),
            run == MAX_FAILED_RUNS,
            "run {run}: {}",
            errs[0].1
        );
        assert!(listing(&eng, &task, &snap).await.is_empty());
    }
    let bytes = server.stats.body_bytes.load(Ordering::SeqCst);
    let snap = backup(&env, &eng, &task).await;
    assert!(errors(&eng, &task, &snap).await.is_empty());
    assert_eq!(server.stats.body_bytes.load(Ordering::SeqCst), bytes);
}

/// Collects every log line of the test process.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_parse_error_over_a_1_mib_literal_leaves_at_most_1_kib_of_text_and_none_of_the_mail() {
    let logs = Logs::default();
    let l = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || l.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = ScriptedServer::start(vec![folder("INBOX", 3)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
        w.behaviour
            .body_faults
            .insert(("INBOX".into(), 2), (BodyFault::Garbage, u32::MAX));
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let snap = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &snap).await;
    assert_eq!(names(&got), vec!["INBOX/1.eml", "INBOX/3.eml"]);
    let errs = errors(&eng, &task, &snap).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    // The mail's words: its subject line and the body's marker.
    let mail = ["message 2", "INBOX body"];
    for (_, msg) in &errs {
        assert!(msg.len() <= 1024, "{} bytes: {msg}", msg.len());
        for m in mail {
            assert!(!msg.contains(m), "{msg}");
        }
    }
    let cursor = eng
        .snapshot_meta(&task, &snap)
        .await
        .unwrap()
        .cursor
        .unwrap();
    assert!(cursor.len() <= 1024, "{cursor}");
    for m in mail {
        assert!(!cursor.contains(m));
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    for line in text.lines() {
        assert!(line.len() <= 1024, "a log line of {} bytes", line.len());
        for m in mail {
            assert!(!line.contains(m), "{line}");
        }
    }
    assert!(
        text.contains("not valid IMAP"),
        "the failure is logged: {text}"
    );
}

#[tokio::test]
async fn one_folder_refusing_status_costs_only_that_folder() {
    let server = ScriptedServer::start(
        vec![folder("INBOX", 2), folder("Archive", 2), folder("Lists", 2)],
        PASSWORD,
    )
    .await;
    server.world().behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let day1 = backup(&env, &eng, &task).await;
    assert_eq!(listing(&eng, &task, &day1).await.len(), 6);

    // Archive refuses STATUS and EXAMINE; Lists refuses STATUS only (EXAMINE says the
    // same); every folder has new mail.
    {
        let mut w = server.world();
        for f in ["INBOX", "Archive", "Lists"] {
            w.add(f, body(3, f), &[]);
        }
        w.behaviour.refuse_status.insert("Archive".into());
        w.behaviour.refuse_select.insert("Archive".into());
        w.behaviour.refuse_status.insert("Lists".into());
    }
    let day2 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day2).await;
    assert_eq!(
        names(&got),
        vec![
            "Archive/1.eml",
            "Archive/2.eml",
            "INBOX/1.eml",
            "INBOX/2.eml",
            "INBOX/3.eml",
            "Lists/1.eml",
            "Lists/2.eml",
            "Lists/3.eml",
        ]
    );
    let errs = errors(&eng, &task, &day2).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "Archive");
    assert!(
        errs[0].1.contains("keeps its previous contents"),
        "{}",
        errs[0].1
    );

    // Once the folder opens again, its new message comes in.
    {
        let mut w = server.world();
        w.behaviour.refuse_status.clear();
        w.behaviour.refuse_select.clear();
    }
    let day3 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day3).await;
    assert!(got.contains_key("Archive/3.eml"), "{:?}", names(&got));
    assert!(errors(&eng, &task, &day3).await.is_empty());
}

#[tokio::test]
async fn removing_an_unwanted_folder_keeps_its_wanted_children() {
    let mut parent = folder("Projects", 2);
    parent.attributes = vec!["\\HasChildren".into()];
    let server = ScriptedServer::start(
        vec![folder("INBOX", 1), parent, folder("Projects/2024", 2)],
        PASSWORD,
    )
    .await;
    server.world().behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let day1 = backup(&env, &eng, &task).await;
    assert_eq!(listing(&eng, &task, &day1).await.len(), 5);
    // The parent is deleted on the server but stays as a name that holds its child.
    {
        let mut w = server.world();
        let f = w.folder("Projects");
        f.attributes = vec!["\\Noselect".into(), "\\HasChildren".into()];
        f.messages.clear();
    }
    let bytes_before = server.stats.body_bytes.load(Ordering::SeqCst);
    let day2 = backup(&env, &eng, &task).await;
    let got = listing(&eng, &task, &day2).await;
    assert_eq!(
        names(&got),
        vec!["INBOX/1.eml", "Projects/2024/1.eml", "Projects/2024/2.eml"]
    );
    assert_eq!(
        server.stats.body_bytes.load(Ordering::SeqCst),
        bytes_before,
        "the child's messages are kept, not fetched again"
    );
}
