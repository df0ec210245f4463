//! What the scripted-server tests share: a task on the scripted server, backups one day
//! apart, and a snapshot's messages and errors.
#![allow(dead_code)]

use domain::{ItemPath, TaskId};
use engine::{Connector, Connectors, Engine, EntryKind, NewTask, SnapshotRecord, TaskRecord};
use imap::connector::{AuthKind, ImapConnector, ImapSettings};
use imap::sync::MessageSink;
use imap::testing::scripted::{ScriptedFolder, ScriptedMessage, ScriptedServer};
use imap::{FolderInfo, MessageMeta, TlsMode};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use testkit::env::{backup_all, TestEnv};
use zeroize::Zeroizing;

pub const PASSWORD: &str = "app-password";

/// Opens the IMAP connector with a short time-out, so a server that goes quiet fails a
/// test quickly instead of after a minute.
pub struct Local;

impl Connectors for Local {
    fn offers(&self, connector: &str) -> bool {
        connector == imap::connector::SOURCE
    }

    fn open(
        &self,
        task: &TaskRecord,
        secret: Option<Zeroizing<String>>,
    ) -> engine::Result<Arc<dyn Connector>> {
        let settings: ImapSettings = serde_json::from_value(task.source.settings.clone()).unwrap();
        let mut cfg = settings.to_config(&secret.unwrap())?;
        cfg.timeout = Duration::from_secs(5);
        Ok(Arc::new(ImapConnector::from_config(settings, cfg)))
    }
}

pub fn settings(port: u16) -> ImapSettings {
    ImapSettings {
        host: "127.0.0.1".into(),
        port,
        user: "someone@example.com".into(),
        tls: TlsMode::NoneForTests,
        auth: AuthKind::Password,
        ca_file: None,
    }
}

pub async fn task(eng: &Engine, server: &ScriptedServer) -> TaskRecord {
    let t = NewTask {
        name: TaskId::new("mail").unwrap(),
        source: settings(server.port).source_config(),
        secret: Some(Zeroizing::new(PASSWORD.to_string())),
        backup_hour: None,
    };
    eng.add_task(t, &Local).await.unwrap()
}

pub async fn backup(env: &TestEnv, eng: &Engine, task: &TaskRecord) -> SnapshotRecord {
    env.advance(chrono::Duration::days(1));
    let mut snaps = backup_all(eng, task, &Local).await;
    snaps.remove(0)
}

/// path → (size, meta) of every message of a snapshot.
pub type Listing = BTreeMap<String, (u64, Vec<(String, String)>)>;

pub async fn listing(eng: &Engine, task: &TaskRecord, snap: &SnapshotRecord) -> Listing {
    let mut out = BTreeMap::new();
    let mut stack = vec![ItemPath::root()];
    while let Some(p) = stack.pop() {
        for e in eng.list(task, snap, &p).await.unwrap() {
            let child = p.join(&e.name).unwrap();
            match e.kind {
                EntryKind::Dir => stack.push(child),
                _ => {
                    out.insert(child.to_string(), (e.size, e.meta.clone()));
                }
            }
        }
    }
    out
}

pub async fn errors(
    eng: &Engine,
    task: &TaskRecord,
    snap: &SnapshotRecord,
) -> Vec<(String, String)> {
    eng.snapshot_errors(task, snap)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

pub fn body(n: usize, tag: &str) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nSubject: message {n}\r\n\r\n{tag} body of message {n}\r\n{}\r\n",
        "x".repeat(200)
    )
    .into_bytes()
}

pub fn folder(name: &str, n: usize) -> ScriptedFolder {
    let mut f = ScriptedFolder::new(name, 1000);
    for i in 0..n {
        let uid = f.uid_next;
        f.uid_next += 1;
        f.highest_modseq += 1;
        f.messages.push(ScriptedMessage {
            uid,
            flags: vec!["\\Seen".into()],
            internal_date: "02-Jan-2024 11:00:05 +0000".into(),
            body: body(i + 1, name),
            modseq: f.highest_modseq,
        });
    }
    f
}

pub fn names(l: &Listing) -> Vec<&str> {
    l.keys().map(|k| k.as_str()).collect()
}

/// A sink that keeps nothing: the UID-set test is about command lines, not content.
#[derive(Default)]
pub struct CountSink {
    pub done: usize,
}

impl MessageSink for CountSink {
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
}
