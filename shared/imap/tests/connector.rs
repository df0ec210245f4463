//! The IMAP connector end to end, on the embedded adapters and a real Dovecot: seeded
//! mailbox → backup → day-2 changes → incremental backup of only the changes → restore by
//! APPEND (same and another mailbox) round-trips byte-exact → mbox export; dropped
//! connections; refused credentials.

use domain::{AccountId, ItemPath, TaskId};
use engine::{
    BackupEnd, BackupOptions, ChangeKind, Connector, Connectors, Destination, Engine, EntryKind,
    Error, ExportFormat, ExportOptions, NewTask, NoProgress, RestoreOptions, SnapshotRecord,
    SourceErrorKind, TaskRecord,
};
use imap::connector::{
    AuthKind, ImapConnector, ImapSettings, ACCOUNT, META_FLAGS, META_INTERNAL_DATE,
};
use imap::testing::{dovecot, seed, CuttingProxy, Dovecot, Seeded, TestUser};
use imap::{mutf7, TlsMode};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use testkit::env::{backup_all, TestEnv};
use zeroize::Zeroizing;

/// Opens the IMAP connector of a task (testkit's fake connector is for tests without a
/// real server; this one talks to Dovecot).
struct Local;

impl Connectors for Local {
    fn offers(&self, connector: &str) -> bool {
        connector == imap::connector::SOURCE
    }

    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(Arc::new(ImapConnector::open(task, secret)?))
    }
}

fn settings(d: &Dovecot, u: &TestUser, tls: TlsMode, port: Option<u16>) -> ImapSettings {
    let ca = d.dir.join("ca.pem");
    ImapSettings {
        host: "127.0.0.1".into(),
        port: port.unwrap_or(match tls {
            TlsMode::Implicit => d.imaps_port,
            _ => d.imap_port,
        }),
        user: u.name.clone(),
        tls,
        auth: AuthKind::Password,
        ca_file: Some(ca),
    }
}

fn new_task(name: &str, s: &ImapSettings, secret: &str) -> NewTask {
    NewTask {
        name: TaskId::new(name).unwrap(),
        source: s.source_config(),
        secret: Some(Zeroizing::new(secret.to_string())),
        backup_hour: None,
    }
}

/// Adds a task; adding logs in (`Connector::check`), so `secret` must be right.
async fn add(eng: &Engine, name: &str, s: &ImapSettings, secret: &str) -> TaskRecord {
    eng.add_task(new_task(name, s, secret), &Local)
        .await
        .unwrap()
}

/// Backs up the task's one account (the mailbox) to the end.
async fn backup(eng: &Engine, task: &TaskRecord) -> SnapshotRecord {
    let mut snaps = backup_all(eng, task, &Local).await;
    assert_eq!(snaps.len(), 1, "an IMAP task has one account");
    snaps.remove(0)
}

/// Every item of a snapshot: path → (bytes, meta).
type Items = BTreeMap<String, (Vec<u8>, Vec<(String, String)>)>;

/// Every item of a snapshot, its metadata from the listing and its bytes read back by
/// restoring the snapshot into a fresh local folder (the engine's public way to read
/// content).
async fn items(env: &TestEnv, eng: &Engine, task: &TaskRecord, snap: &SnapshotRecord) -> Items {
    static N: AtomicU64 = AtomicU64::new(0);
    let to = env
        .dir
        .path()
        .join(format!("items-{}", N.fetch_add(1, Ordering::SeqCst)));
    let opts = RestoreOptions {
        in_place: true,
        ..RestoreOptions::default()
    };
    let report = eng
        .restore_to_dir(task, snap, &to, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut out = BTreeMap::new();
    let mut stack: Vec<(ItemPath, PathBuf)> = vec![(ItemPath::root(), to)];
    while let Some((p, dir)) = stack.pop() {
        for e in eng.list(task, snap, &p).await.unwrap() {
            let child = p.join(&e.name).unwrap();
            let file = dir.join(OsStr::from_bytes(&e.name));
            match e.kind {
                EntryKind::Dir => stack.push((child, file)),
                _ => {
                    let body = std::fs::read(&file)
                        .unwrap_or_else(|err| panic!("{child} restored as {file:?}: {err}"));
                    assert_eq!(body.len() as u64, e.size, "{child}");
                    out.insert(child.to_string(), (body, e.meta.clone()));
                }
            }
        }
    }
    out
}

fn meta<'a>(m: &'a [(String, String)], k: &str) -> Option<&'a str> {
    m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

/// `e` is a refused login that names the user and not the secret.
#[track_caller]
fn assert_refused(e: &Error, user: &str, secret: &str) {
    match e {
        Error::Source { kind, message } => {
            assert_eq!(*kind, SourceErrorKind::Auth, "{message}");
            assert!(
                message.contains(user) && !message.contains(secret),
                "{message}"
            );
        }
        other => panic!("not a source error: {other}"),
    }
}

/// Every seeded message is in `items` under `prefix/<folder>/` with bytes, flags and date.
fn assert_has_seed(seeded: &Seeded, items: &Items, prefix: &str) {
    for m in &seeded.messages {
        let dir = format!("{prefix}{}/", m.folder);
        let hit = items.iter().find(|(p, (b, _))| {
            p.starts_with(&dir) && !p[dir.len()..].contains('/') && b == &m.body
        });
        let (p, (_, meta_pairs)) =
            hit.unwrap_or_else(|| panic!("no byte-exact copy of a message of {dir}"));
        let mut want = m.flags.clone();
        want.sort();
        assert_eq!(
            meta(meta_pairs, META_FLAGS),
            Some(want.join(" ").as_str()),
            "{p}"
        );
        // The same instant (Maildir keeps no time zone, so Dovecot answers in its own).
        let got = meta(meta_pairs, META_INTERNAL_DATE)
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok());
        assert_eq!(got, Some(m.internal_date), "{p}");
    }
}

#[tokio::test]
async fn backup_incremental_restore_and_export() {
    let d = dovecot();
    let u = d.new_user();
    let seeded = seed(&d.config(&u, TlsMode::Starttls)).await;
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let s = settings(d, &u, TlsMode::Starttls, None);
    let task = add(&eng, "mail", &s, &u.password).await;

    // Day 1.
    let snap1 = backup(&eng, &task).await;
    assert_eq!(
        snap1.error_count,
        0,
        "{:?}",
        eng.snapshot_errors(&task, &snap1).await
    );
    let items1 = items(&env, &eng, &task, &snap1).await;
    assert_eq!(items1.len(), seeded.messages.len());
    assert_eq!(snap1.stats.items_read, seeded.messages.len() as u64);
    assert_has_seed(&seeded, &items1, "");

    // Nothing changed: nothing is read.
    env.advance(chrono::Duration::hours(1));
    let same = backup(&eng, &task).await;
    assert_eq!(same.stats.items_read, 0);
    assert_eq!(same.stats.new_blobs, 0);
    assert_eq!(
        same.root(),
        snap1.root(),
        "an unchanged mailbox has the same tree"
    );

    // Day 2: new mail, a flag change, an expunge, a folder replaced (new UIDVALIDITY).
    let mut imap = imap::connect(&d.config(&u, TlsMode::Starttls))
        .await
        .unwrap();
    let new_mail = b"From: carol@example.com\r\nSubject: day two\r\n\r\nNew.\r\n".to_vec();
    imap.append("INBOX", &[], None, new_mail.len() as u64, &new_mail[..])
        .await
        .unwrap();
    imap.select("INBOX").await.unwrap();
    let uids = imap.uids().await.unwrap();
    imap.store_flags(&[uids[0]], "+FLAGS", &["\\Flagged"])
        .await
        .unwrap();
    imap.store_flags(&[uids[1]], "+FLAGS", &["\\Deleted"])
        .await
        .unwrap();
    imap.expunge().await.unwrap();
    let drafts = mutf7::encode("Entwürfe");
    let draft = seeded
        .messages
        .iter()
        .find(|m| m.folder == "Entwürfe")
        .unwrap();
    imap.delete_folder(&drafts).await.unwrap();
    imap.create_folder(&drafts).await.unwrap();
    imap.append(
        &drafts,
        &draft.flags,
        Some(draft.internal_date),
        draft.body.len() as u64,
        &draft.body[..],
    )
    .await
    .unwrap();
    imap.logout().await;

    env.advance(chrono::Duration::days(1));
    let snap2 = backup(&eng, &task).await;
    assert_eq!(
        snap2.error_count,
        0,
        "{:?}",
        eng.snapshot_errors(&task, &snap2).await
    );
    // Only the new message and the replaced folder's one are fetched; the 21 MiB message
    // and everything else is carried from day 1.
    assert_eq!(snap2.stats.items_read, 2);
    assert!(snap2.stats.new_bytes < 64 * 1024, "{:?}", snap2.stats);
    let changes = eng.diff(&task, &snap1, &snap2).await.unwrap();
    let of = |k: ChangeKind| {
        changes
            .iter()
            .filter(|c| c.kind == k)
            .map(|c| c.path.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(ChangeKind::Removed),
        vec![format!("INBOX/{}.eml", uids[1])]
    );
    assert!(of(ChangeKind::Added)
        .iter()
        .any(|p| p.starts_with("INBOX/")));
    assert!(of(ChangeKind::Changed).contains(&format!("INBOX/{}.eml", uids[0])));
    let items2 = items(&env, &eng, &task, &snap2).await;
    assert_eq!(items2.len(), seeded.messages.len());
    let flagged = &items2[&format!("INBOX/{}.eml", uids[0])].1;
    assert!(meta(flagged, META_FLAGS).unwrap().contains("\\Flagged"));

    // Restore the day-1 snapshot into another mailbox, then into the same one.
    let other = d.new_user();
    let other_task = add(
        &eng,
        "other",
        &settings(d, &other, TlsMode::Implicit, None),
        &other.password,
    )
    .await;
    // Its account is recorded by the listing (accounts are not recorded when a task is
    // added), as the listing job or its first backup would.
    let other_conn = eng.connector(&other_task, &Local).await.unwrap();
    eng.refresh_accounts(&other_task, other_conn.as_ref())
        .await
        .unwrap();
    let report = eng
        .restore(
            &task,
            &snap1,
            &Destination {
                task: Some(other_task.name.clone()),
                account: Some(AccountId::new(ACCOUNT).unwrap()),
            },
            &RestoreOptions::default(),
            &Local,
        )
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.items, seeded.messages.len() as u64);
    let label = report.target.clone();
    assert_eq!(label, "Lifeboat Restore 2026-11-26 03-00-00 UTC");
    let back = backup(&eng, &other_task).await;
    let restored = items(&env, &eng, &other_task, &back).await;
    assert_has_seed(&seeded, &restored, &format!("{label}/"));

    let opts = RestoreOptions {
        include: vec![ItemPath::parse(b"INBOX").unwrap()],
        ..RestoreOptions::default()
    };
    env.advance(chrono::Duration::minutes(5));
    let r = eng
        .restore(&task, &snap2, &Destination::default(), &opts, &Local)
        .await
        .unwrap();
    assert_eq!(r.items, 3);
    let snap3 = backup(&eng, &task).await;
    let items3 = items(&env, &eng, &task, &snap3).await;
    let restored_inbox: Vec<_> = items3
        .keys()
        .filter(|p| p.starts_with(&format!("{}/INBOX/", r.target)))
        .collect();
    assert_eq!(restored_inbox.len(), 3);
    // Restored copies are the same content: nothing new stored but metadata.
    assert_eq!(snap3.stats.items_read, 3);

    // Export as mbox: every message, From_ lines quoted.
    let out = env.folder("out");
    let mbox = out.join("mail.mbox");
    let as_mbox = ExportOptions {
        format: ExportFormat::Mbox,
        ..ExportOptions::default()
    };
    let rep = eng
        .export(&task, &snap1, &mbox, &as_mbox, &NoProgress)
        .await
        .unwrap();
    assert_eq!(rep.items, seeded.messages.len() as u64);
    let text = std::fs::read(&mbox).unwrap();
    let separators = text
        .windows(19)
        .filter(|w| w == b"\nFrom MAILER-DAEMON")
        .count()
        + 1;
    assert_eq!(separators, seeded.messages.len());
    let e = eng
        .export(&task, &snap1, &mbox, &as_mbox, &NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // And as a zip of .eml files.
    let zip = out.join("mail.zip");
    let as_zip = ExportOptions {
        format: ExportFormat::Zip,
        ..ExportOptions::default()
    };
    let z = eng
        .export(&task, &snap1, &zip, &as_zip, &NoProgress)
        .await
        .unwrap();
    assert_eq!(z.items, seeded.messages.len() as u64);
}

#[tokio::test]
async fn a_run_out_of_time_pauses_between_folders_and_the_next_goes_on() {
    let d = dovecot();
    let u = d.new_user();
    let seeded = seed(&d.config(&u, TlsMode::NoneForTests)).await;
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let s = settings(d, &u, TlsMode::NoneForTests, None);
    let task = add(&eng, "mail", &s, &u.password).await;
    let connector = eng.connector(&task, &Local).await.unwrap();
    let account = eng
        .refresh_accounts(&task, connector.as_ref())
        .await
        .unwrap()
        .remove(0);
    let info = eng.account_infos(&task).await.unwrap().remove(0);
    assert_eq!(info.id, account.id);
    // Every run's time is already up: each reads one folder, then pauses.
    let mut pauses = 0;
    let snap = loop {
        let opts = BackupOptions {
            deadline: Some(std::time::Instant::now()),
            ..BackupOptions::default()
        };
        let end = eng
            .backup(&task, &info.id, connector.as_ref(), &opts)
            .await
            .unwrap();
        match end {
            BackupEnd::Paused { .. } => {
                pauses += 1;
                assert!(eng.snapshots(&task).await.unwrap().is_empty());
                assert!(pauses < 50, "the backup never finishes");
            }
            BackupEnd::Committed(s) => break *s,
        }
    };
    assert!(
        pauses >= 3,
        "the seeded mailbox has several folders; paused {pauses} times"
    );
    assert_eq!(
        snap.error_count,
        0,
        "{:?}",
        eng.snapshot_errors(&task, &snap).await
    );
    let got = items(&env, &eng, &task, &snap).await;
    assert_eq!(got.len(), seeded.messages.len());
    assert_has_seed(&seeded, &got, "");
    // The next, unhurried backup finds nothing new.
    env.advance(chrono::Duration::days(1));
    let again = backup(&eng, &task).await;
    assert_eq!(again.stats.items_read, 0);
    assert_eq!(again.root, snap.root);
}

#[tokio::test]
async fn a_dropped_connection_mid_fetch_loses_nothing() {
    let d = dovecot();
    let u = d.new_user();
    let seeded = seed(&d.config(&u, TlsMode::NoneForTests)).await;
    let env = TestEnv::new();
    let eng = env.engine("t1");
    // The proxy cuts its first two connections after 9 MiB. The first is the login check
    // of adding the task, which ends long before that; the second, the backup's, is cut
    // inside the 21 MiB message.
    let proxy = CuttingProxy::start(d.imap_port, 9 * 1024 * 1024, 2).await;
    let s = settings(d, &u, TlsMode::NoneForTests, Some(proxy.port));
    let task = add(&eng, "mail", &s, &u.password).await;
    assert_eq!(proxy.cuts_left(), 1, "adding the task logs in once");
    assert_eq!(proxy.cut_count.load(Ordering::SeqCst), 0);
    let snap = backup(&eng, &task).await;
    assert_eq!(proxy.cuts_left(), 0);
    assert_eq!(proxy.cut_count.load(Ordering::SeqCst), 1);
    assert_eq!(
        snap.error_count,
        0,
        "{:?}",
        eng.snapshot_errors(&task, &snap).await
    );
    let got = items(&env, &eng, &task, &snap).await;
    assert_eq!(got.len(), seeded.messages.len());
    assert_has_seed(&seeded, &got, "");
}

#[tokio::test]
async fn refused_credentials_fail_clearly_without_the_secret() {
    let d = dovecot();
    let u = d.new_user();
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let wrong = "not-the-Passw0rd-123";
    let s = settings(d, &u, TlsMode::Implicit, None);

    // The checked login at task creation refuses it.
    let e = eng
        .add_task(new_task("mail", &s, wrong), &Local)
        .await
        .unwrap_err();
    assert_refused(&e, &u.name, wrong);
    // Nothing became visible.
    assert!(eng.tasks().await.unwrap().is_empty());

    // A task whose password was changed at the source since: its backup fails the same way.
    let task = add(&eng, "mail", &s, &u.password).await;
    let stale = Local
        .open(&task, Some(Zeroizing::new(wrong.to_string())))
        .unwrap();
    let account = eng
        .refresh_accounts(&task, stale.as_ref())
        .await
        .unwrap()
        .remove(0);
    let e = eng
        .backup(
            &task,
            &account.id,
            stale.as_ref(),
            &BackupOptions::default(),
        )
        .await
        .unwrap_err();
    assert_refused(&e, &u.name, wrong);
    // Nothing became visible.
    assert!(eng.snapshots(&task).await.unwrap().is_empty());

    // Replacing the credential by a wrong one is refused too, and the task keeps its own.
    let e = eng
        .replace_secret("mail", &Zeroizing::new(wrong.to_string()), &Local)
        .await
        .unwrap_err();
    assert_refused(&e, &u.name, wrong);
    let task = eng.task("mail").await.unwrap();
    eng.connector(&task, &Local)
        .await
        .unwrap()
        .check()
        .await
        .unwrap();
}

/// A mailbox of 2,000 folders: the connector's cursor (one state per folder) is far larger
/// than a catalog record may be, and it is kept beside the snapshot's record, so the
/// mailbox backs up, and backs up again incrementally.
#[tokio::test]
async fn a_mailbox_of_two_thousand_folders_backs_up_twice() {
    let d = dovecot();
    let u = d.new_user();
    let mut imap = imap::connect(&d.config(&u, TlsMode::NoneForTests))
        .await
        .unwrap();
    for i in 0..2000 {
        let name = format!("Projects/Client {i:04} correspondence and files");
        imap.create_folder(&name).await.unwrap();
        if i % 100 == 0 {
            let body = format!("From: a@example.com\r\nSubject: folder {i}\r\n\r\nHello.\r\n");
            imap.append(&name, &[], None, body.len() as u64, body.as_bytes())
                .await
                .unwrap();
        }
    }
    imap.logout().await;
    let env = TestEnv::new();
    let eng = env.engine("t1");
    let s = settings(d, &u, TlsMode::NoneForTests, None);
    let task = add(&eng, "mail", &s, &u.password).await;

    let first = backup(&eng, &task).await;
    assert_eq!(
        first.error_count,
        0,
        "{:?}",
        eng.snapshot_errors(&task, &first).await
    );
    assert_eq!(first.stats.items, 20);
    assert!(first.stats.folders >= 2000, "{:?}", first.stats);
    let cursor = eng
        .snapshot_meta(&task, &first)
        .await
        .unwrap()
        .cursor
        .unwrap();
    eprintln!("cursor of 2,000 folders: {} bytes", cursor.len());
    assert!(cursor.len() > 100_000, "{} bytes", cursor.len());

    env.advance(chrono::Duration::days(1));
    let second = backup(&eng, &task).await;
    assert_eq!(second.error_count, 0);
    assert_eq!(second.stats.items_read, 0);
    assert_eq!(second.root, first.root);
    assert_eq!(eng.snapshots(&task).await.unwrap().len(), 2);
}
