//! The IMAP layer against a real Dovecot (started by `infra/dovecot.sh` once for this test
//! binary): logins of every kind, folder listing, incremental sync with day-2 changes,
//! resuming after dropped connections, and APPEND round trips.

use imap::sync::{
    restore_folder_wire, sync_folder, Connection, FolderResult, FolderState, MessageSink,
};
use imap::testing::{dovecot, seed, CuttingProxy, Seeded, LARGE_ATTACHMENT};
use imap::{
    connect, mutf7, Credentials, ErrorKind, FolderInfo, ImapConfig, MessageMeta, Secret,
    SpecialUse, TlsMode,
};
use std::collections::BTreeMap;

/// Collects bodies in memory and checks the sink contract: parts in order, no gaps.
#[derive(Default)]
struct MemSink {
    open: Option<(String, u32, Vec<u8>)>,
    bodies: BTreeMap<(String, u32), Vec<u8>>,
    done_calls: BTreeMap<(String, u32), u32>,
    restarts: u32,
}

impl MessageSink for MemSink {
    async fn part(
        &mut self,
        folder: &FolderInfo,
        meta: &MessageMeta,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), String> {
        if offset == 0 {
            if self.open.is_some() {
                self.restarts += 1;
            }
            self.open = Some((folder.wire.clone(), meta.uid, Vec::new()));
        }
        let (f, uid, buf) = self.open.as_mut().ok_or("a part without a start")?;
        if *f != folder.wire || *uid != meta.uid || buf.len() as u64 != offset {
            return Err(format!(
                "part out of order: {}:{} at {offset}, open {f}:{uid} at {}",
                folder.wire,
                meta.uid,
                buf.len()
            ));
        }
        buf.extend_from_slice(bytes);
        Ok(())
    }

    async fn done(
        &mut self,
        folder: &FolderInfo,
        meta: &MessageMeta,
        len: u64,
    ) -> Result<(), String> {
        let (f, uid, buf) = self.open.take().ok_or("done without parts")?;
        if f != folder.wire || uid != meta.uid || buf.len() as u64 != len {
            return Err("done does not match the open message".into());
        }
        *self.done_calls.entry((f.clone(), uid)).or_default() += 1;
        self.bodies.insert((f, uid), buf);
        Ok(())
    }
}

async fn folders(cfg: &ImapConfig) -> Vec<FolderInfo> {
    let mut s = connect(cfg).await.expect("connect");
    let f = s.list_folders().await.expect("list");
    s.logout().await;
    f
}

/// Syncs every selectable folder, as a backup would.
async fn sync_all(
    conn: &mut Connection,
    prev: &BTreeMap<String, FolderState>,
    sink: &mut MemSink,
) -> BTreeMap<String, (FolderInfo, FolderResult)> {
    let list = {
        let s = conn.get().await.expect("connect");
        s.list_folders().await.expect("list")
    };
    let mut out = BTreeMap::new();
    for f in list.into_iter().filter(|f| f.selectable) {
        let p = prev.get(&f.wire).cloned().unwrap_or_default();
        let r = sync_folder(conn, &f, p, sink).await.expect("sync folder");
        out.insert(f.wire.clone(), (f, r));
    }
    out
}

fn states(r: &BTreeMap<String, (FolderInfo, FolderResult)>) -> BTreeMap<String, FolderState> {
    r.iter()
        .map(|(k, (_, r))| (k.clone(), r.state.clone()))
        .collect()
}

/// Every seeded message is in the result with its bytes, flags and internal date.
fn assert_matches_seed(
    seeded: &Seeded,
    r: &BTreeMap<String, (FolderInfo, FolderResult)>,
    bodies: &BTreeMap<(String, u32), Vec<u8>>,
) {
    for m in &seeded.messages {
        let wire = mutf7::encode(&m.folder);
        let (_, fr) = r
            .get(&wire)
            .unwrap_or_else(|| panic!("folder {} missing", m.folder));
        let found = fr.state.messages.values().find(|meta| {
            bodies.get(&(wire.clone(), meta.uid)).map(|b| &b[..]) == Some(&m.body[..])
        });
        let meta = found
            .unwrap_or_else(|| panic!("a message of {} was not backed up byte-exact", m.folder));
        let mut want = m.flags.clone();
        want.sort();
        assert_eq!(meta.flags, want, "flags in {}", m.folder);
        assert_eq!(
            meta.internal_date,
            Some(m.internal_date),
            "date in {}",
            m.folder
        );
        assert_eq!(meta.size, Some(m.body.len() as u32));
    }
}

#[tokio::test]
async fn logins_of_every_kind_and_clear_errors() {
    let d = dovecot();
    let u = d.new_user();
    for tls in [TlsMode::NoneForTests, TlsMode::Starttls, TlsMode::Implicit] {
        let mut s = connect(&d.config(&u, tls))
            .await
            .unwrap_or_else(|e| panic!("{tls:?}: {e}"));
        assert!(s.capabilities().condstore() && s.capabilities().qresync());
        assert!(!s.capabilities().gmail());
        s.status("INBOX").await.expect("status");
        s.logout().await;
    }

    // XOAUTH2 with a token the server validates.
    let mut cfg = d.config(&u, TlsMode::Implicit);
    cfg.credentials = Credentials::OAuth2Token(Secret::new(d.oauth_token(&u)));
    connect(&cfg).await.expect("XOAUTH2").logout().await;

    // A wrong password: an Auth error naming the user, never the password.
    let mut cfg = d.config(&u, TlsMode::Starttls);
    let wrong = "wrong-Pa55word-xyz";
    cfg.credentials = Credentials::Password(Secret::new(wrong));
    let e = connect(&cfg).await.err().expect("must fail");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.is_retryable());
    let msg = e.to_string();
    assert!(msg.contains(&u.name) && !msg.contains(wrong), "{msg}");

    // A forged token is refused the same way.
    let mut cfg = d.config(&u, TlsMode::Implicit);
    let forged = format!("{}x", d.oauth_token(&u));
    cfg.credentials = Credentials::OAuth2Token(Secret::new(forged.clone()));
    let e = connect(&cfg).await.err().expect("must fail");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains(&forged));

    // A certificate from a CA that is not trusted is refused, on both TLS modes.
    for tls in [TlsMode::Implicit, TlsMode::Starttls] {
        let mut cfg = d.config(&u, tls);
        cfg.extra_roots_pem = None;
        let e = connect(&cfg).await.err().expect("must fail");
        assert_eq!(e.kind(), ErrorKind::Tls, "{tls:?}: {e}");
    }

    // Nobody listening.
    let mut cfg = d.config(&u, TlsMode::NoneForTests);
    cfg.port = 1;
    let e = connect(&cfg).await.err().expect("must fail");
    assert_eq!(e.kind(), ErrorKind::Connect);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn folders_keep_special_use_nesting_and_non_ascii_names() {
    let d = dovecot();
    let u = d.new_user();
    let cfg = d.config(&u, TlsMode::NoneForTests);
    let seeded = seed(&cfg).await;
    let list = folders(&cfg).await;
    let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
    for f in &seeded.folders {
        assert!(names.contains(&f.as_str()), "{f} not in {names:?}");
    }
    let by = |n: &str| list.iter().find(|f| f.name == n).expect(n).clone();
    assert_eq!(by("Drafts").special_use, Some(SpecialUse::Drafts));
    assert_eq!(by("Sent").special_use, Some(SpecialUse::Sent));
    assert_eq!(by("Trash").special_use, Some(SpecialUse::Trash));
    let deep = by("Projekte/Größe/Ünïcødé 📬");
    assert_eq!(
        deep.wire,
        "Projekte/Gr&APYA3w-e/&ANw-n&AO8-c&APg-d&AOk- &2D3c7A-"
    );
    assert_eq!(deep.segments(), vec!["Projekte", "Größe", "Ünïcødé 📬"]);
}

#[tokio::test]
async fn incremental_backup_fetches_only_changes() {
    let d = dovecot();
    let u = d.new_user();
    let cfg = d.config(&u, TlsMode::Starttls);
    let seeded = seed(&cfg).await;

    // Day 1: everything.
    let mut conn = Connection::new(cfg.clone());
    let mut sink = MemSink::default();
    let day1 = sync_all(&mut conn, &BTreeMap::new(), &mut sink).await;
    assert_matches_seed(&seeded, &day1, &sink.bodies);
    assert_eq!(sink.bodies.len(), seeded.messages.len());
    assert!(day1.values().all(|(_, r)| r.plan_was_full));
    let empty = &day1[&mutf7::encode("Empty")].1;
    assert!(empty.state.messages.is_empty() && empty.state.cursor.is_some());

    // Nothing changed: every folder is skipped on STATUS alone.
    let mut sink0 = MemSink::default();
    let again = sync_all(&mut conn, &states(&day1), &mut sink0).await;
    assert!(
        again.values().all(|(_, r)| r.unchanged),
        "a folder was read again"
    );
    assert!(sink0.bodies.is_empty());

    // Day 2: new mail, a flag change, an expunge, and a folder replaced (new UIDVALIDITY).
    let inbox = "INBOX";
    let drafts = mutf7::encode("Entwürfe");
    let day1_inbox = &day1[inbox].1.state;
    let uids: Vec<u32> = day1_inbox.messages.keys().copied().collect();
    let new_mail = b"From: carol@example.com\r\nSubject: day two\r\n\r\nNew.\r\n".to_vec();
    let mut s = connect(&cfg).await.expect("connect");
    s.append(inbox, &[], None, new_mail.len() as u64, &new_mail[..])
        .await
        .expect("append");
    s.select(inbox).await.expect("select");
    s.store_flags(&[uids[0]], "+FLAGS", &["\\Flagged", "$Important"])
        .await
        .expect("store");
    s.store_flags(&[uids[1]], "+FLAGS", &["\\Deleted"])
        .await
        .expect("delete");
    s.expunge().await.expect("expunge");
    let old_validity = day1[&drafts].1.state.cursor.as_ref().unwrap().uid_validity;
    s.delete_folder(&drafts).await.expect("delete folder");
    s.create_folder(&drafts).await.expect("create folder");
    let draft_body = seeded
        .messages
        .iter()
        .find(|m| m.folder == "Entwürfe")
        .unwrap();
    s.append(
        &drafts,
        &draft_body.flags,
        Some(draft_body.internal_date),
        draft_body.body.len() as u64,
        &draft_body.body[..],
    )
    .await
    .expect("append draft");
    s.logout().await;

    let mut sink2 = MemSink::default();
    let day2 = sync_all(&mut conn, &states(&day1), &mut sink2).await;
    let r = &day2[inbox].1;
    assert!(!r.plan_was_full && !r.unchanged);
    assert_eq!(r.fetched.len(), 1, "only the new message is fetched");
    assert_eq!(r.flags_changed, vec![uids[0]]);
    assert_eq!(r.expunged, vec![uids[1]]);
    assert_eq!(r.state.messages.len(), day1_inbox.messages.len());
    assert!(r.state.messages[&uids[0]]
        .flags
        .contains(&"$Important".to_string()));
    assert!(!r.state.messages.contains_key(&uids[1]));
    let new_uid = r.fetched[0];
    assert_eq!(sink2.bodies[&(inbox.to_string(), new_uid)], new_mail);

    let r = &day2[&drafts].1;
    assert!(r.plan_was_full, "a new UIDVALIDITY means a full resync");
    assert_ne!(r.state.cursor.as_ref().unwrap().uid_validity, old_validity);
    assert_eq!(r.state.messages.len(), 1);
    assert_eq!(
        sink2.bodies.len(),
        2,
        "the new mail and the replaced folder's message only"
    );
    // The large message's folder did not change and was not read.
    assert!(
        day2[&mutf7::encode("Projekte/Größe/Ünïcødé 📬")]
            .1
            .unchanged
    );
    conn.close().await;
}

#[tokio::test]
async fn dropped_connections_resume_without_loss_or_duplicates() {
    let d = dovecot();
    let u = d.new_user();
    let cfg = d.config(&u, TlsMode::NoneForTests);
    let seeded = seed(&cfg).await;

    // Cut the first connections at points that land mid-response: early (during the
    // listing), then twice inside the 21 MiB message.
    let mut total = 0;
    for cut_after in [3_000u64, 6 * 1024 * 1024, 13 * 1024 * 1024] {
        let proxy = CuttingProxy::start(d.imap_port, cut_after, 1).await;
        let mut pcfg = cfg.clone();
        pcfg.port = proxy.port;
        let mut conn = Connection::new(pcfg);
        let mut sink = MemSink::default();
        let r = sync_all(&mut conn, &BTreeMap::new(), &mut sink).await;
        assert_eq!(proxy.cut_count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(conn.reconnects() >= 1, "cut at {cut_after} was not noticed");
        assert_matches_seed(&seeded, &r, &sink.bodies);
        assert_eq!(sink.bodies.len(), seeded.messages.len());
        assert!(
            sink.done_calls.values().all(|n| *n == 1),
            "a message was handed over twice"
        );
        total += r.values().map(|(_, r)| r.reconnects).sum::<u32>();
        conn.close().await;
    }
    assert!(total >= 3);
}

#[tokio::test]
async fn append_round_trips_bytes_flags_and_dates() {
    let d = dovecot();
    let src = d.new_user();
    let dst = d.new_user();
    let src_cfg = d.config(&src, TlsMode::Implicit);
    let dst_cfg = d.config(&dst, TlsMode::Implicit);
    let seeded = seed(&src_cfg).await;
    let mut conn = Connection::new(src_cfg);
    let mut sink = MemSink::default();
    let backup = sync_all(&mut conn, &BTreeMap::new(), &mut sink).await;
    conn.close().await;

    // Restore everything into another mailbox under a restore folder.
    let label = "Lifeboat Restore 2026-11-25 10-00-00 UTC";
    let mut s = connect(&dst_cfg).await.expect("connect");
    let mut restored = 0;
    for (wire, (folder, r)) in &backup {
        if r.state.messages.is_empty() {
            continue;
        }
        let target = restore_folder_wire(label, &folder.segments(), folder.delimiter.as_deref());
        s.create_folder(&target).await.expect("create");
        for m in r.state.messages.values() {
            let body = &sink.bodies[&(wire.clone(), m.uid)];
            s.append(
                &target,
                &m.flags,
                m.internal_date,
                body.len() as u64,
                &body[..],
            )
            .await
            .expect("append");
            restored += 1;
        }
    }
    assert_eq!(restored, seeded.messages.len());
    // A missing folder is a clear server error, not a hang or a panic.
    let e = s
        .append("No Such Folder", &[], None, 3, &b"x\r\n"[..])
        .await
        .expect_err("fails");
    assert_eq!(e.kind(), ErrorKind::Server, "{e}");
    s.logout().await;

    // Back it up again from the destination: same bytes, flags and dates.
    let mut conn = Connection::new(dst_cfg);
    let mut sink2 = MemSink::default();
    let after = sync_all(&mut conn, &BTreeMap::new(), &mut sink2).await;
    conn.close().await;
    let mut relabelled = seeded.clone();
    for m in &mut relabelled.messages {
        m.folder = format!("{label}/{}", m.folder);
    }
    assert_matches_seed(&relabelled, &after, &sink2.bodies);
    let big = sink2
        .bodies
        .values()
        .filter(|b| b.len() > LARGE_ATTACHMENT)
        .count();
    assert_eq!(big, 1);
}

#[tokio::test]
async fn a_stalled_server_times_out_and_the_sync_resumes() {
    let d = dovecot();
    let u = d.new_user();
    let cfg = d.config(&u, TlsMode::NoneForTests);
    let seeded = seed(&cfg).await;
    // Silent in the middle of the 21 MiB message.
    let proxy = CuttingProxy::stalling(d.imap_port, 8 * 1024 * 1024, 1).await;
    let mut pcfg = cfg.clone();
    pcfg.port = proxy.port;
    pcfg.timeout = std::time::Duration::from_secs(2);
    let mut conn = Connection::new(pcfg);
    let mut sink = MemSink::default();
    let r = sync_all(&mut conn, &BTreeMap::new(), &mut sink).await;
    assert_eq!(proxy.cut_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(conn.reconnects(), 1);
    assert_matches_seed(&seeded, &r, &sink.bodies);
    assert!(sink.done_calls.values().all(|n| *n == 1));
    conn.close().await;
}

/// A message the server cannot read (its file is unreadable on the server) is reported,
/// the rest of the folder is backed up, and the next run fetches it once it is readable.
#[tokio::test]
async fn a_message_the_server_cannot_give_is_reported_and_retried() {
    use std::os::unix::fs::PermissionsExt;
    let d = dovecot();
    let u = d.new_user();
    let cfg = d.config(&u, TlsMode::NoneForTests);
    let seeded = seed(&cfg).await;
    let maildir = d.dir.join("home").join(&u.name).join("Maildir");
    let mut victim = None;
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(maildir.join(sub)).unwrap().flatten() {
            let b = std::fs::read(e.path()).unwrap();
            if b.windows(11).any(|w| w == b"broken mime") {
                victim = Some(e.path());
            }
        }
    }
    let victim = victim.expect("the broken message's file");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&victim).is_ok() && !running_as_root() {
        // Without root the test user is the owner and can still read: nothing to test.
        return;
    }

    let mut conn = Connection::new(cfg.clone());
    let mut sink = MemSink::default();
    let day1 = sync_all(&mut conn, &BTreeMap::new(), &mut sink).await;
    let inbox = &day1["INBOX"].1;
    assert_eq!(inbox.failed.len(), 1, "{inbox:?}");
    assert_eq!(inbox.state.messages.len(), 2);
    assert_eq!(sink.bodies.len(), seeded.messages.len() - 1);
    let failed_uid = inbox.failed[0].0;
    assert_eq!(
        inbox.state.cursor.as_ref().unwrap().retries,
        BTreeMap::from([(failed_uid, 1)])
    );

    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut sink2 = MemSink::default();
    let day2 = sync_all(&mut conn, &states(&day1), &mut sink2).await;
    let inbox = &day2["INBOX"].1;
    assert_eq!(inbox.fetched, vec![failed_uid]);
    assert!(inbox.failed.is_empty());
    assert!(inbox.state.cursor.as_ref().unwrap().retries.is_empty());
    assert_eq!(inbox.state.messages.len(), 3);
    conn.close().await;
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
