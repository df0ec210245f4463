//! The IMAP connector end to end, on the embedded adapters and a real Dovecot: seeded
//! mailbox → backup → day-2 changes → incremental backup of only the changes → restore by
//! APPEND (same and another mailbox) round-trips byte-exact → mbox export; dropped
//! connections; refused credentials.

use chrono::{TimeZone, Utc};
use domain::{AccountId, ItemPath, TaskId, TenantId};
use engine::{
    ChangeKind, Connector, Connectors, Engine, Error, Ports, RestoreOptions, SourceErrorKind,
    TaskRecord,
};
use imap_source::connector::{
    AuthKind, ImapConnector, ImapSettings, META_FLAGS, META_INTERNAL_DATE,
};
use imap_source::mbox::export_mbox;
use imap_source::testing::{dovecot, seed, CuttingProxy, Dovecot, Seeded, TestUser};
use imap_source::{mutf7, TlsMode};
use std::collections::BTreeMap;
use std::sync::Arc;
use vault::EntryKind;
use zeroize::Zeroizing;

struct Local;

impl Connectors for Local {
    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        Ok(Arc::new(ImapConnector::open(task, secret)?))
    }
}

struct Env {
    eng: Engine,
    clock: Arc<ports::FixedClock>,
    _dir: tempfile::TempDir,
}

fn engine() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ports::FixedClock::new(
        Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap(),
    ));
    let ports = Ports {
        store: Arc::new(embedded::FsObjectStore::new(dir.path().join("objects")).unwrap()),
        catalog: Arc::new(embedded::SqliteCatalog::open(dir.path().join("catalog.db")).unwrap()),
        keys: Arc::new(embedded::FileKeyService::open(dir.path().join("master.key")).unwrap()),
        clock: clock.clone(),
    };
    Env {
        eng: Engine::new(ports, TenantId::new("t1").unwrap()),
        clock,
        _dir: dir,
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

async fn add(env: &Env, name: &str, s: &ImapSettings, secret: &str) -> TaskRecord {
    env.eng
        .add_task_with_secret(TaskId::new(name).unwrap(), s.source_config(), Some(secret))
        .await
        .unwrap()
}

async fn backup(env: &Env, task: &TaskRecord) -> engine::Result<vault::SnapshotRecord> {
    let accounts = env.eng.current_accounts(task, &Local).await?;
    assert_eq!(accounts.len(), 1);
    env.eng
        .backup_any(task, &accounts[0], &Local, &engine::NoProgress)
        .await
}

/// Every item of a snapshot: path → (bytes, meta).
type Items = BTreeMap<String, (Vec<u8>, Vec<(String, String)>)>;

async fn items(env: &Env, task: &TaskRecord, snap: &vault::SnapshotRecord) -> Items {
    let vault = env.eng.vault(task).await.unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![ItemPath::root()];
    while let Some(p) = stack.pop() {
        for e in env.eng.list(task, snap, &p).await.unwrap() {
            let child = p.join(&e.name).unwrap();
            match e.kind {
                EntryKind::Dir => stack.push(child),
                _ => {
                    let mut body = Vec::new();
                    for c in &e.content {
                        body.extend(vault.read_blob(c, false).await.unwrap());
                    }
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
    let env = engine();
    let s = settings(d, &u, TlsMode::Starttls, None);
    let task = add(&env, "mail", &s, &u.password).await;

    // Day 1.
    let snap1 = backup(&env, &task).await.unwrap();
    assert_eq!(snap1.error_count, 0, "{:?}", snap1.errors);
    let items1 = items(&env, &task, &snap1).await;
    assert_eq!(items1.len(), seeded.messages.len());
    assert_eq!(snap1.stats.items_read, seeded.messages.len() as u64);
    assert_has_seed(&seeded, &items1, "");

    // Nothing changed: nothing is read.
    env.clock.advance(chrono::Duration::hours(1));
    let same = backup(&env, &task).await.unwrap();
    assert_eq!(same.stats.items_read, 0);
    assert_eq!(same.stats.new_blobs, 0);
    assert_eq!(
        same.root(),
        snap1.root(),
        "an unchanged mailbox has the same tree"
    );

    // Day 2: new mail, a flag change, an expunge, a folder replaced (new UIDVALIDITY).
    let mut imap = imap_source::connect(&d.config(&u, TlsMode::Starttls))
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

    env.clock.advance(chrono::Duration::days(1));
    let snap2 = backup(&env, &task).await.unwrap();
    assert_eq!(snap2.error_count, 0, "{:?}", snap2.errors);
    // Only the new message and the replaced folder's one are fetched; the 21 MiB message
    // and everything else is carried from day 1.
    assert_eq!(snap2.stats.items_read, 2);
    assert!(snap2.stats.new_bytes < 64 * 1024, "{:?}", snap2.stats);
    let changes = env.eng.diff(&task, &snap1, &snap2).await.unwrap();
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
    let items2 = items(&env, &task, &snap2).await;
    assert_eq!(items2.len(), seeded.messages.len());
    let flagged = &items2[&format!("INBOX/{}.eml", uids[0])].1;
    assert!(meta(flagged, META_FLAGS).unwrap().contains("\\Flagged"));

    // Restore the day-1 snapshot into another mailbox, then into the same one.
    let other = d.new_user();
    let other_task = add(
        &env,
        "other",
        &settings(d, &other, TlsMode::Implicit, None),
        &other.password,
    )
    .await;
    let dest =
        ImapConnector::open(&other_task, env.eng.task_secret(&other_task).await.unwrap()).unwrap();
    let report = env
        .eng
        .restore_to_source(
            &task,
            &snap1,
            Some(AccountId::new("mailbox").unwrap()),
            &RestoreOptions::default(),
            &dest,
        )
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.items, seeded.messages.len() as u64);
    let label = report.target.clone();
    assert_eq!(label, "Lifeboat Restore 2026-11-26 03-00-00 UTC");
    let back = backup(&env, &other_task).await.unwrap();
    let restored = items(&env, &other_task, &back).await;
    assert_has_seed(&seeded, &restored, &format!("{label}/"));

    let own = ImapConnector::open(&task, env.eng.task_secret(&task).await.unwrap()).unwrap();
    let opts = RestoreOptions {
        include: vec![ItemPath::parse(b"INBOX").unwrap()],
        ..RestoreOptions::default()
    };
    env.clock.advance(chrono::Duration::minutes(5));
    let r = env
        .eng
        .restore_to_source(&task, &snap2, None, &opts, &own)
        .await
        .unwrap();
    assert_eq!(r.items, 3);
    let snap3 = backup(&env, &task).await.unwrap();
    let items3 = items(&env, &task, &snap3).await;
    let restored_inbox: Vec<_> = items3
        .keys()
        .filter(|p| p.starts_with(&format!("{}/INBOX/", r.target)))
        .collect();
    assert_eq!(restored_inbox.len(), 3);
    // Restored copies are the same content: nothing new stored but metadata.
    assert_eq!(snap3.stats.items_read, 3);

    // Export as mbox: every message, From_ lines quoted.
    let out = tempfile::tempdir().unwrap();
    let mbox = out.path().join("mail.mbox");
    let rep = export_mbox(&env.eng, &task, &snap1, &mbox, &[])
        .await
        .unwrap();
    assert_eq!(rep.messages, seeded.messages.len() as u64);
    let text = std::fs::read(&mbox).unwrap();
    let separators = text
        .windows(19)
        .filter(|w| w == b"\nFrom MAILER-DAEMON")
        .count()
        + 1;
    assert_eq!(separators, seeded.messages.len());
    let e = export_mbox(&env.eng, &task, &snap1, &mbox, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // And as a zip of .eml files.
    let zip = out.path().join("mail.zip");
    let z = env
        .eng
        .export_zip(&task, &snap1, &zip, &[], &engine::NoProgress)
        .await
        .unwrap();
    assert_eq!(z.files, seeded.messages.len() as u64);
}

#[tokio::test]
async fn a_run_out_of_time_pauses_between_folders_and_the_next_goes_on() {
    let d = dovecot();
    let u = d.new_user();
    let seeded = seed(&d.config(&u, TlsMode::NoneForTests)).await;
    let env = engine();
    let s = settings(d, &u, TlsMode::NoneForTests, None);
    let task = add(&env, "mail", &s, &u.password).await;
    let account = env
        .eng
        .current_accounts(&task, &Local)
        .await
        .unwrap()
        .remove(0);
    let info = env.eng.account_infos(&task).await.unwrap().remove(0);
    assert_eq!(info.id, account);
    let connector = env.eng.connector(&task, &Local).await.unwrap();
    // Every run's time is already up: each reads one folder, then pauses.
    let mut pauses = 0;
    let snap = loop {
        let end = env
            .eng
            .backup_source_until(
                &task,
                &info,
                connector.as_ref(),
                &engine::NoProgress,
                Some(std::time::Instant::now()),
            )
            .await
            .unwrap();
        match end {
            engine::BackupEnd::Paused { .. } => {
                pauses += 1;
                assert!(env.eng.snapshots(&task).await.unwrap().is_empty());
                assert!(pauses < 50, "the backup never finishes");
            }
            engine::BackupEnd::Committed(s) => break *s,
        }
    };
    assert!(
        pauses >= 3,
        "the seeded mailbox has several folders; paused {pauses} times"
    );
    assert_eq!(snap.error_count, 0, "{:?}", snap.errors);
    let got = items(&env, &task, &snap).await;
    assert_eq!(got.len(), seeded.messages.len());
    assert_has_seed(&seeded, &got, "");
    // The next, unhurried backup finds nothing new.
    env.clock.advance(chrono::Duration::days(1));
    let again = backup(&env, &task).await.unwrap();
    assert_eq!(again.stats.items_read, 0);
    assert_eq!(again.root, snap.root);
}

#[tokio::test]
async fn a_dropped_connection_mid_fetch_loses_nothing() {
    let d = dovecot();
    let u = d.new_user();
    let seeded = seed(&d.config(&u, TlsMode::NoneForTests)).await;
    let env = engine();
    // Two cuts: one early, one inside the 21 MiB message.
    let proxy = CuttingProxy::start(d.imap_port, 9 * 1024 * 1024, 1).await;
    let s = settings(d, &u, TlsMode::NoneForTests, Some(proxy.port));
    let task = add(&env, "mail", &s, &u.password).await;
    let snap = backup(&env, &task).await.unwrap();
    assert_eq!(proxy.cut_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(snap.error_count, 0, "{:?}", snap.errors);
    let got = items(&env, &task, &snap).await;
    assert_eq!(got.len(), seeded.messages.len());
    assert_has_seed(&seeded, &got, "");
}

#[tokio::test]
async fn refused_credentials_fail_clearly_without_the_secret() {
    let d = dovecot();
    let u = d.new_user();
    let env = engine();
    let wrong = "not-the-Passw0rd-123";
    let task = add(
        &env,
        "mail",
        &settings(d, &u, TlsMode::Implicit, None),
        wrong,
    )
    .await;
    let e = backup(&env, &task).await.unwrap_err();
    match &e {
        Error::Source { kind, message } => {
            assert_eq!(*kind, SourceErrorKind::Auth);
            assert!(
                message.contains(&u.name) && !message.contains(wrong),
                "{message}"
            );
        }
        other => panic!("not a source error: {other}"),
    }
    // Nothing became visible.
    assert!(env.eng.snapshots(&task).await.unwrap().is_empty());
    // The checked login at task creation says the same.
    let conn = ImapConnector::open(&task, env.eng.task_secret(&task).await.unwrap()).unwrap();
    let e = conn.check().await.unwrap_err();
    assert!(!e.to_string().contains(wrong));
}
