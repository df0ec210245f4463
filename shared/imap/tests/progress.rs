//! Progress inside a folder, on the scripted server: a folder too large for one run's time
//! finishes over several runs without reading a body twice; a run whose server goes away
//! part way keeps what it read; a listing cut short goes on from the piece it reached; a
//! folder whose cursor is lost keeps the messages it holds; a message to retry that a pause
//! leaves unread keeps its count of failed runs.

mod common;

use common::*;
use engine::{BackupEnd, BackupOptions, Engine, SnapshotRecord, TaskRecord};
use imap::sync::{sync_folder, Connection, FolderCursor, FolderState, MessageSink, LIST_CHUNK};
use imap::testing::scripted::{ScriptedFolder, ScriptedMessage, ScriptedServer};
use imap::testing::CuttingProxy;
use imap::{FolderInfo, FolderStatus, MessageMeta, TlsMode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use testkit::env::TestEnv;

const MESSAGES: usize = 300;
const SIZE: usize = 64 * 1024;

/// A message of exactly `SIZE` bytes, different for each `n`.
fn big_body(n: usize) -> Vec<u8> {
    let mut b = format!("From: a@example.com\r\nSubject: large {n}\r\n\r\n").into_bytes();
    let mut x = n as u64 + 1;
    while b.len() < SIZE {
        // A cheap generator, so that no two messages share content.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(format!("{x:016x}\r\n").as_bytes());
    }
    b.truncate(SIZE);
    b
}

fn large_inbox() -> ScriptedFolder {
    let mut f = ScriptedFolder::new("INBOX", 77);
    for i in 0..MESSAGES {
        let uid = f.uid_next;
        f.uid_next += 1;
        f.highest_modseq += 1;
        f.messages.push(ScriptedMessage {
            uid,
            flags: vec![],
            internal_date: "02-Jan-2024 11:00:05 +0000".into(),
            body: big_body(i),
            modseq: f.highest_modseq,
        });
    }
    f
}

/// One run of the account's backup that may pause: `budget` is its time.
async fn run(eng: &Engine, task: &TaskRecord, budget: Duration) -> BackupEnd {
    let connector = eng.connector(task, &Local).await.unwrap();
    let info = eng
        .refresh_accounts(task, connector.as_ref())
        .await
        .unwrap()
        .remove(0);
    let opts = BackupOptions {
        deadline: Some(Instant::now() + budget),
        ..BackupOptions::default()
    };
    eng.backup(task, &info.id, connector.as_ref(), &opts)
        .await
        .unwrap()
}

async fn assert_whole(eng: &Engine, task: &TaskRecord, snap: &SnapshotRecord) {
    let got = listing(eng, task, snap).await;
    assert_eq!(got.len(), MESSAGES);
    for (path, (size, _)) in &got {
        assert_eq!(*size, SIZE as u64, "{path}");
    }
    assert!(errors(eng, task, snap).await.is_empty());
}

#[tokio::test]
async fn a_folder_behind_a_slow_link_finishes_over_several_runs_reading_each_body_once() {
    let server = ScriptedServer::start(vec![large_inbox()], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
        // About 19 MiB at 8 MiB/s: more than two seconds, against runs of 600 ms.
        w.behaviour.bytes_per_sec = Some(8 * 1024 * 1024);
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    let mut runs = 0;
    let snap = loop {
        runs += 1;
        assert!(runs < 40, "the backup never finishes");
        match run(&eng, &task, Duration::from_millis(600)).await {
            BackupEnd::Paused { items_this_run, .. } => {
                assert!(items_this_run > 0, "every run makes progress");
                assert!(eng.snapshots(&task).await.unwrap().is_empty());
            }
            BackupEnd::Committed(s) => break *s,
        }
    };
    assert!(runs >= 3, "finished in {runs} runs");
    assert_whole(&eng, &task, &snap).await;
    let total = (MESSAGES * SIZE) as f64;
    let read = server.stats.body_bytes.load(Ordering::SeqCst) as f64;
    assert!(
        read <= 1.1 * total,
        "read {read} bytes for {total} over {runs} runs"
    );
}

#[tokio::test]
async fn a_run_that_fails_after_60_percent_keeps_it_and_the_next_reads_less_than_half() {
    let server = ScriptedServer::start(vec![large_inbox()], PASSWORD).await;
    let total = (MESSAGES * SIZE) as u64;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into()];
        w.behaviour.down_after_body_bytes = Some(total * 6 / 10);
    }
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let task = task(&eng, &server).await;
    // The server goes away at 60 % and does not come back within the run.
    match run(&eng, &task, Duration::from_secs(600)).await {
        BackupEnd::Paused { items_this_run, .. } => {
            assert!(items_this_run as usize >= MESSAGES / 2, "{items_this_run}");
        }
        BackupEnd::Committed(_) => panic!("the server went away; nothing can be complete"),
    }
    let first = server.stats.body_bytes.load(Ordering::SeqCst);
    server.revive();
    let snap = match run(&eng, &task, Duration::from_secs(600)).await {
        BackupEnd::Committed(s) => *s,
        BackupEnd::Paused { .. } => panic!("a run with time enough pauses"),
    };
    assert_whole(&eng, &task, &snap).await;
    let second = server.stats.body_bytes.load(Ordering::SeqCst) - first;
    assert!(
        second < total / 2,
        "the second run read {second} of {total} bytes"
    );
}

/// An INBOX of `n` small messages, UIDs 1 to `n`: more than one listing piece.
fn many_small(n: usize) -> ScriptedFolder {
    let mut inbox = ScriptedFolder::new("INBOX", 5);
    for i in 0..n {
        let uid = inbox.uid_next;
        inbox.uid_next += 1;
        inbox.highest_modseq += 1;
        inbox.messages.push(ScriptedMessage {
            uid,
            flags: vec!["\\Seen".into()],
            internal_date: "02-Jan-2024 11:00:05 +0000".into(),
            body: format!("Subject: {i}\r\n\r\nshort\r\n").into_bytes(),
            modseq: inbox.highest_modseq,
        });
    }
    inbox
}

fn inbox() -> FolderInfo {
    FolderInfo {
        wire: "INBOX".into(),
        name: "INBOX".into(),
        delimiter: Some("/".into()),
        special_use: None,
        selectable: true,
    }
}

#[tokio::test]
async fn changes_since_the_cursor_come_in_ranges_and_a_cut_costs_one_of_them() {
    let n = LIST_CHUNK * 2 + 2_000;
    let server = ScriptedServer::start(vec![many_small(n)], PASSWORD).await;
    {
        let mut w = server.world();
        w.behaviour.capabilities = vec!["CONDSTORE".into(), "QRESYNC".into()];
        w.behaviour.expunge_moves_modseq = true;
    }
    let mut conn = Connection::new(settings(server.port).to_config(PASSWORD).unwrap());
    let mut sink = CountSink::default();
    let day1 = sync_folder(&mut conn, &inbox(), FolderState::default(), &mut sink)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(sink.done, n);
    // Every message flagged (a "mark all"), and one expunge in each of two pieces.
    let gone = [10, LIST_CHUNK as u32 + 10];
    {
        let mut w = server.world();
        let f = w.folder("INBOX");
        for m in f.messages.iter_mut() {
            f.highest_modseq += 1;
            m.flags.push("\\Flagged".into());
            m.modseq = f.highest_modseq;
        }
        w.expunge("INBOX", &gone);
    }
    let before = server.stats.count_lines(&["CHANGEDSINCE"]);
    // Each message's changes are about 110 bytes: the cut falls in the second piece.
    let proxy = CuttingProxy::start(server.port, (LIST_CHUNK as u64) * 140, 1).await;
    let mut cfg = settings(proxy.port).to_config(PASSWORD).unwrap();
    cfg.timeout = Duration::from_secs(5);
    let mut conn = Connection::new(cfg);
    let mut sink = CountSink::default();
    let day2 = sync_folder(&mut conn, &inbox(), day1.state, &mut sink)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(proxy.cut_count.load(Ordering::SeqCst), 1);
    assert_eq!(day2.reconnects, 1);
    assert!(!day2.plan_was_full);
    assert_eq!(sink.done, 0);
    assert_eq!(day2.flags_changed.len(), n - 2);
    assert_eq!(day2.expunged, gone.to_vec());
    assert_eq!(day2.state.messages.len(), n - 2);
    assert!(day2.state.messages[&1]
        .flags
        .contains(&"\\Flagged".to_string()));
    // Three pieces, the cut one asked for again; VANISHED made the count add up, so the
    // folder's UIDs were not listed (only on day 1).
    assert_eq!(server.stats.count_lines(&["CHANGEDSINCE"]) - before, 4);
    assert_eq!(server.stats.count("UID SEARCH"), 1);
}

#[tokio::test]
async fn a_listing_cut_short_goes_on_from_the_piece_it_reached() {
    let n = LIST_CHUNK * 2 + 2_000;
    let server = ScriptedServer::start(vec![many_small(n)], PASSWORD).await;
    server.world().behaviour.capabilities = vec!["CONDSTORE".into()];
    // Each message's metadata is about 100 bytes: the cut falls in the second piece.
    let proxy = CuttingProxy::start(server.port, (LIST_CHUNK as u64) * 140, 1).await;
    let mut cfg = settings(proxy.port).to_config(PASSWORD).unwrap();
    cfg.tls = TlsMode::NoneForTests;
    cfg.timeout = Duration::from_secs(5);
    let mut conn = Connection::new(cfg);
    let folder = FolderInfo {
        wire: "INBOX".into(),
        name: "INBOX".into(),
        delimiter: Some("/".into()),
        special_use: None,
        selectable: true,
    };
    let mut sink = CountSink::default();
    let r = sync_folder(&mut conn, &folder, FolderState::default(), &mut sink)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(proxy.cut_count.load(Ordering::SeqCst), 1);
    assert_eq!(r.reconnects, 1);
    assert_eq!(sink.done, n);
    assert_eq!(r.state.messages.len(), n);
    // The UIDs once; the metadata in three pieces, the cut one asked for again.
    assert_eq!(server.stats.count("UID SEARCH"), 1);
    assert_eq!(server.stats.count_lines(&["UID FETCH", "RFC822.SIZE"]), 4);
}

#[tokio::test]
async fn a_folder_whose_cursor_is_lost_keeps_what_it_holds_under_the_same_uidvalidity() {
    let server = ScriptedServer::start(vec![folder("INBOX", 20)], PASSWORD).await;
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
    let day1 = sync_folder(&mut conn, &inbox, FolderState::default(), &mut sink)
        .await
        .unwrap();
    assert_eq!(sink.done, 20);
    // The cursor is gone (a snapshot of another build, a damaged one); the messages are
    // held under the folder's UIDVALIDITY.
    let mut held = day1.state.clone();
    held.cursor = None;
    assert_eq!(held.held_validity, Some(1000));
    server.world().add("INBOX", body(21, "INBOX"), &[]);
    let bytes = server.stats.body_bytes.load(Ordering::SeqCst);
    let mut sink = CountSink::default();
    let day2 = sync_folder(&mut conn, &inbox, held.clone(), &mut sink)
        .await
        .unwrap();
    assert!(!day2.plan_was_full);
    assert_eq!(sink.done, 1);
    assert_eq!(day2.state.messages.len(), 21);
    assert_eq!(
        server.stats.body_bytes.load(Ordering::SeqCst) - bytes,
        body(21, "INBOX").len() as u64
    );
    // Under another UIDVALIDITY the UIDs mean nothing: read again.
    held.held_validity = Some(999);
    let mut sink = CountSink::default();
    let day3 = sync_folder(&mut conn, &inbox, held.clone(), &mut sink)
        .await
        .unwrap();
    assert!(day3.plan_was_full);
    assert_eq!(sink.done, 21);
    conn.close().await;
}

/// Keeps nothing and asks to stop once `limit` messages are in.
struct StopAfter {
    done: usize,
    limit: usize,
}

impl MessageSink for StopAfter {
    async fn part(
        &mut self,
        _: &FolderInfo,
        _: &MessageMeta,
        _: u64,
        _: &[u8],
    ) -> Result<(), String> {
        Ok(())
    }
    async fn done(&mut self, _: &FolderInfo, _: &MessageMeta, _: u64) -> Result<(), String> {
        self.done += 1;
        Ok(())
    }
    fn should_pause(&self) -> bool {
        self.done >= self.limit
    }
}

#[tokio::test]
async fn a_pause_keeps_the_failed_runs_of_a_message_it_did_not_reach() {
    let server = ScriptedServer::start(vec![folder("INBOX", 100)], PASSWORD).await;
    server.world().behaviour.capabilities = vec!["CONDSTORE".into()];
    let (validity, next, modseq) = {
        let mut w = server.world();
        let f = w.folder("INBOX");
        (f.uid_validity, f.uid_next, f.highest_modseq)
    };
    // Messages 1 to 60 are stored; 61 to 99 were left by a pause; 100 failed three runs.
    let mut cursor = FolderCursor::new(&FolderStatus {
        uid_validity: validity,
        uid_next: next,
        messages: 100,
        highest_modseq: Some(modseq),
    });
    cursor.pending = "61:99".into();
    cursor.retries.insert(100, 3);
    let mut prev = FolderState::default();
    for uid in 1..=60u32 {
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
    prev.cursor = Some(cursor);
    let mut conn = Connection::new(settings(server.port).to_config(PASSWORD).unwrap());
    let inbox = FolderInfo {
        wire: "INBOX".into(),
        name: "INBOX".into(),
        delimiter: Some("/".into()),
        special_use: None,
        selectable: true,
    };
    // Time is up after the first batch: 100 is not reached.
    let mut sink = StopAfter { done: 0, limit: 1 };
    let r = sync_folder(&mut conn, &inbox, prev, &mut sink)
        .await
        .unwrap();
    conn.close().await;
    assert!(r.paused);
    assert!(sink.done >= 1 && sink.done < 40, "{}", sink.done);
    let c = r.state.cursor.unwrap();
    assert_eq!(c.retries.get(&100), Some(&3), "{c:?}");
    let pending = c.pending_uids();
    assert!(!pending.contains(&100));
    assert_eq!(pending.len() + sink.done, 39);
    assert_eq!(r.state.messages.len(), 60 + sink.done);
}
