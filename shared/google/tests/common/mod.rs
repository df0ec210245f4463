//! What the Google connector's tests share: the Google simulator on a free port, a
//! Lifeboat installation on the embedded adapters in a temp directory
//! (`testkit::env::TestEnv`), a Google task pointed at the simulator, and messages the test
//! writes itself, so that what a backup stores is compared with the test's own bytes.
#![allow(dead_code)]

use domain::{ItemPath, TaskId};
use engine::{
    AccountInfo, BackupEnd, BackupOptions, Connector, Engine, EntryKind, NewTask, NoProgress,
    RestoreOptions, SnapshotRecord, TaskRecord,
};
use google::client::{Quota, RetryPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use testkit::env::TestEnv;
use zeroize::Zeroizing;

/// Fast retries: tests must not wait seconds for a backoff, yet the same policy code runs.
pub const RETRY: RetryPolicy = RetryPolicy {
    attempts: 8,
    base_ms: 2,
    max_ms: 40,
};

/// A simulator whose quota is large enough not to slow tests down (the quota tests set
/// their own).
pub fn config() -> googlesim::Config {
    googlesim::Config {
        users: 3,
        suspended: 1,
        user_units_per_window: 1_000_000,
        project_units_per_window: 10_000_000,
        ..googlesim::Config::default()
    }
}

pub struct Env {
    pub test: TestEnv,
    pub engine: Engine,
    pub sim: googlesim::Running,
    pub task: TaskRecord,
}

pub fn settings(sim: &googlesim::Running, quota: Option<Quota>) -> google::GoogleSettings {
    google::GoogleSettings {
        token_url: sim.token_url(),
        gmail_url: sim.base_url.clone(),
        directory_url: sim.base_url.clone(),
        retry: Some(RETRY),
        quota: Some(quota.unwrap_or(Quota {
            units: sim.shared.cfg.user_units_per_window,
            window_ms: sim.shared.cfg.quota_window.as_millis() as u64,
        })),
        ..google::GoogleSettings::workspace(&sim.admin_email())
    }
}

/// Adds a task over the simulator; adding signs in (`Connector::check`).
pub async fn add_task(
    engine: &Engine,
    name: &str,
    settings: google::GoogleSettings,
    secret: String,
) -> engine::Result<TaskRecord> {
    engine
        .add_task(
            NewTask {
                name: TaskId::new(name).unwrap(),
                source: settings.to_source(),
                secret: Some(Zeroizing::new(secret)),
                backup_hour: None,
            },
            &google::Opener,
        )
        .await
}

pub async fn start(cfg: googlesim::Config) -> Env {
    start_with(cfg, |_| {}).await
}

/// As [`start`], with the task's settings changed by `tune` first.
pub async fn start_with(
    cfg: googlesim::Config,
    tune: impl FnOnce(&mut google::GoogleSettings),
) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let sim = googlesim::spawn(cfg).await.expect("the simulator starts");
    let test = TestEnv::new();
    let engine = test.engine("acme");
    let mut s = settings(&sim, None);
    tune(&mut s);
    let task = add_task(&engine, "google", s, sim.service_account_key())
        .await
        .expect("the task is added");
    Env {
        test,
        engine,
        sim,
        task,
    }
}

impl Env {
    pub async fn connector(&self) -> Arc<dyn Connector> {
        self.engine
            .connector(&self.task, &google::Opener)
            .await
            .expect("the connector opens")
    }

    pub async fn accounts(&self) -> Vec<AccountInfo> {
        let c = self.connector().await;
        self.engine
            .refresh_accounts(&self.task, c.as_ref())
            .await
            .expect("accounts")
    }

    pub async fn account(&self, email: &str) -> AccountInfo {
        self.accounts()
            .await
            .into_iter()
            .find(|a| a.id.as_str() == email)
            .expect("the user is an account")
    }

    /// A backup of `a` to the end, a day after the last one.
    pub async fn backup(&self, a: &AccountInfo) -> engine::Result<SnapshotRecord> {
        self.test.advance(chrono::Duration::days(1));
        let c = self.connector().await;
        self.engine
            .backup(&self.task, &a.id, c.as_ref(), &BackupOptions::default())
            .await
            .and_then(BackupEnd::into_snapshot)
    }

    pub async fn errors(&self, s: &SnapshotRecord) -> Vec<engine::ItemError> {
        self.engine
            .snapshot_errors(&self.task, s)
            .await
            .expect("the snapshot's side data reads")
    }

    /// Every message of a snapshot: file name → metadata.
    pub async fn mail(&self, s: &SnapshotRecord) -> BTreeMap<String, Vec<(String, String)>> {
        let mut out = BTreeMap::new();
        for e in self.engine.list(&self.task, s, &p("Mail")).await.unwrap() {
            if e.kind != EntryKind::Dir {
                out.insert(String::from_utf8(e.name.clone()).unwrap(), e.meta.clone());
            }
        }
        out
    }

    /// The bytes of every message of a snapshot, restored into the temp directory.
    pub async fn mail_bytes(&self, s: &SnapshotRecord) -> BTreeMap<String, Vec<u8>> {
        let to = self.test.folder(&format!("out-{}", next()));
        let opts = RestoreOptions {
            include: vec![p("Mail")],
            in_place: true,
            ..Default::default()
        };
        self.engine
            .restore_to_dir(&self.task, s, &to, &opts, &NoProgress)
            .await
            .expect("restore to a folder");
        let mut out = BTreeMap::new();
        collect(&to, &mut out);
        out
    }
}

fn next() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn collect(dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            let name = e.file_name().to_string_lossy().to_string();
            out.insert(name, std::fs::read(&path).unwrap());
        }
    }
}

pub fn p(s: &str) -> ItemPath {
    ItemPath::parse(s.as_bytes()).unwrap()
}

pub fn meta<'m>(m: &'m [(String, String)], k: &str) -> &'m str {
    m.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// A message the test writes itself: RFC 822 with what breaks careless handling (CRLF
/// and a bare LF, 8-bit header bytes, encoded words, trailing spaces, a binary attachment
/// whose size varies, no final line break on some), distinct for each `i`. `big` makes it
/// larger than the vault's small-item size, so it goes through the streaming path.
pub fn original(i: usize, big: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(format!("Return-Path: <sender{i}@example.net>\r\n").as_bytes());
    m.extend_from_slice(b"Received: from mx.example.net (mx.example.net [192.0.2.7])\r\n\tby mx.google.com with ESMTPS; Mon, 4 Mar 2024 09:15:00 -0800\r\n");
    m.extend_from_slice(
        format!("From: =?UTF-8?Q?Zo=C3=AB_Sender_{i}?= <zoe{i}@example.net>\r\n").as_bytes(),
    );
    m.extend_from_slice(b"To: team@example.com\r\n");
    // UTF-8 and a Latin-1 byte (not UTF-8 at all), raw in a header, with trailing spaces.
    m.extend_from_slice(format!("Subject: Quarterly report {i} \u{2713} caf").as_bytes());
    m.extend_from_slice(b"\xe9 (raw 8-bit)   \r\n");
    m.extend_from_slice(format!("Message-ID: <{i}.lifeboat-test@example.net>\r\n").as_bytes());
    m.extend_from_slice(b"Date: Mon, 4 Mar 2024 09:15:00 -0800\r\nMIME-Version: 1.0\r\n");
    m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n");
    m.extend_from_slice(b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice(
        format!("Hello {i},\r\nna\u{ef}ve caf\u{e9} line\nbare LF above  \r\n").as_bytes(),
    );
    m.extend_from_slice(b"--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let size = if big { 5 << 20 } else { 300 + 97 * i };
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b1--");
    if !i.is_multiple_of(3) {
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Delivers `n` messages (numbered from `from`) to `user` with `labels`; returns each
/// message id with the bytes the test wrote.
pub fn deliver(
    sim: &googlesim::Running,
    user: &str,
    from: usize,
    n: usize,
    labels: &[&str],
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in from..from + n {
        let raw = original(i, false);
        let id = sim.deliver(user, &raw, labels, 1_709_572_500_000 + i as i64 * 60_000);
        out.insert(id, raw);
    }
    out
}

pub fn eml(id: &str) -> String {
    format!("{id}.eml")
}
