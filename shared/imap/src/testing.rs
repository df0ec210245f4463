//! Test support (feature `testing`): a private Dovecot for the test process, users made on
//! demand, a seeded mailbox of awkward messages, and a proxy that drops connections.
//!
//! Dovecot is started once per test binary through `infra/dovecot.sh run`, from a thread
//! that lives as long as the process and with `PR_SET_PDEATHSIG`, so the script dies with
//! the test process however that ends (even SIGKILL); the script in turn runs Dovecot under
//! `setpriv --pdeathsig`, so Dovecot dies with it. Run folders of test processes that are
//! gone are removed by the next start.

pub mod scripted;

use crate::config::{Credentials, ImapConfig, Secret, TlsMode};
use crate::conn::connect;
use crate::mutf7;
use base64::Engine;
use chrono::{DateTime, FixedOffset};
use rand::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running private Dovecot.
#[derive(Debug)]
pub struct Dovecot {
    pub dir: PathBuf,
    /// Plain port: STARTTLS offered, plaintext login allowed (loopback only).
    pub imap_port: u16,
    /// Implicit TLS port.
    pub imaps_port: u16,
    /// The test CA that signed the server's certificate (PEM).
    pub ca_pem: Vec<u8>,
    oauth_key: Vec<u8>,
    users: Vec<TestUser>,
}

#[derive(Clone, Debug)]
pub struct TestUser {
    pub name: String,
    pub password: String,
}

static DOVECOT: OnceLock<Dovecot> = OnceLock::new();
static USERS: AtomicU32 = AtomicU32::new(0);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/dovecot.sh")
}

const DIR_PREFIX: &str = "lbdovecot-";

/// Removes the run folders of test processes that no longer exist.
fn sweep_stale_dirs(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(ent.path());
        }
    }
}

/// The test process's Dovecot, started on first use.
///
/// # Panics
/// When Dovecot cannot be installed or started (a test environment problem).
pub fn dovecot() -> &'static Dovecot {
    DOVECOT.get_or_init(start)
}

/// Removes the run folder when the test process exits normally (a killed one leaves it
/// to the next start's sweep).
extern "C" fn remove_run_dir() {
    if let Some(d) = DOVECOT.get() {
        let _ = std::fs::remove_dir_all(&d.dir);
    }
}

fn start() -> Dovecot {
    let tmp = PathBuf::from("/tmp");
    sweep_stale_dirs(&tmp);
    let dir = tmp.join(format!("{DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (tx, rx) = mpsc::channel::<Result<Vec<(String, String)>, String>>();
    let run_dir = dir.clone();
    // The death signal fires when the thread that started the child ends, so the thread
    // that starts it never ends.
    std::thread::Builder::new()
        .name("dovecot-keeper".into())
        .spawn(move || {
            let parent = std::process::id() as libc::pid_t;
            let mut cmd = Command::new("bash");
            cmd.arg(script())
                .arg("run")
                .arg(&run_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::getppid() != parent {
                        // The test process is already gone.
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot run infra/dovecot.sh: {e}")));
                    return;
                }
            };
            let stdout = child.stdout.take().expect("piped");
            let mut kv = Vec::new();
            let mut ready = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    ready = true;
                    break;
                }
                if let Some((k, v)) = line.split_once('=') {
                    kv.push((k.to_string(), v.to_string()));
                }
            }
            if ready {
                let _ = tx.send(Ok(kv));
            } else {
                let status = child.wait();
                let _ = tx.send(Err(format!(
                    "infra/dovecot.sh ended before Dovecot was ready ({status:?})"
                )));
                return;
            }
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the dovecot keeper thread");
    let kv = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("dovecot start timed out")
        .unwrap_or_else(|e| panic!("{e}"));
    let get = |k: &str| {
        kv.iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("infra/dovecot.sh did not print {k}"))
    };
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe {
        libc::atexit(remove_run_dir);
    }
    let oauth_hex = std::fs::read_to_string(get("oauth_key")).expect("oauth key");
    Dovecot {
        dir: PathBuf::from(get("dir")),
        imap_port: get("imap_port").parse().expect("port"),
        imaps_port: get("imaps_port").parse().expect("port"),
        ca_pem: std::fs::read(get("ca")).expect("CA file"),
        oauth_key: hex_decode(oauth_hex.trim()),
        users: std::fs::read_to_string(get("users"))
            .expect("users file")
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, p)| TestUser {
                name: n.to_string(),
                password: p.to_string(),
            })
            .collect(),
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl Dovecot {
    /// A new user with an empty mailbox, so tests do not see each other's mail. Users made
    /// when Dovecot started are handed out first; after those a user is added, and waited
    /// for until Dovecot has re-read its passwd file.
    pub fn new_user(&self) -> TestUser {
        let n = USERS.fetch_add(1, Ordering::Relaxed) as usize;
        if let Some(u) = self.users.get(n) {
            return u.clone();
        }
        let name = format!("t{}u{n}", std::process::id());
        let out = Command::new("bash")
            .arg(script())
            .arg("add-user")
            .arg(&self.dir)
            .arg(&name)
            .output()
            .expect("run infra/dovecot.sh add-user");
        assert!(
            out.status.success(),
            "add-user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1100));
        TestUser {
            name,
            password: String::from_utf8(out.stdout)
                .expect("password")
                .trim()
                .to_string(),
        }
    }

    /// A configuration for `user` over `tls` with a password.
    pub fn config(&self, user: &TestUser, tls: TlsMode) -> ImapConfig {
        let mut c = ImapConfig::new(
            "127.0.0.1",
            &user.name,
            Credentials::Password(Secret::new(user.password.clone())),
        );
        c.tls = tls;
        c.port = match tls {
            TlsMode::Implicit => self.imaps_port,
            _ => self.imap_port,
        };
        c.extra_roots_pem = Some(self.ca_pem.clone());
        c.timeout = Duration::from_secs(20);
        c
    }

    /// An OAuth 2 access token for `user` that this Dovecot accepts with XOAUTH2: a JWT
    /// signed with the instance's HS256 key, valid for ten minutes.
    pub fn oauth_token(&self, user: &TestUser) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = chrono::Utc::now().timestamp();
        let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64.encode(format!(
            r#"{{"sub":"{}","iat":{now},"exp":{}}}"#,
            user.name,
            now + 600
        ));
        let signing = format!("{header}.{payload}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.oauth_key);
        let sig = ring::hmac::sign(&key, signing.as_bytes());
        format!("{signing}.{}", b64.encode(sig.as_ref()))
    }
}

/// One message the seed put in the mailbox.
#[derive(Clone, Debug)]
pub struct SeedMessage {
    /// Decoded folder path, `/`-separated (Dovecot's separator here).
    pub folder: String,
    pub body: Vec<u8>,
    pub flags: Vec<String>,
    pub internal_date: DateTime<FixedOffset>,
}

#[derive(Clone, Debug, Default)]
pub struct Seeded {
    /// Every folder the seed created or filled (decoded), including an empty one.
    pub folders: Vec<String>,
    pub messages: Vec<SeedMessage>,
}

/// Size of the seed's large attachment, over the 20 MiB the tests promise.
pub const LARGE_ATTACHMENT: usize = 21 * 1024 * 1024;

fn date(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("seed date")
}

/// A multipart message with a base64 attachment of `n` pseudo-random bytes (CRLF lines
/// of 76 characters, as mailers write them).
pub fn large_message(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut raw = vec![0u8; n];
    rng.fill_bytes(&mut raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
    let mut m = Vec::with_capacity(b64.len() * 78 / 76 + 1024);
    m.extend_from_slice(
        b"From: Big Sender <big@example.org>\r\n\
To: user@example.net\r\n\
Subject: the quarterly archive\r\n\
Date: Mon, 3 Jun 2024 08:00:00 +0000\r\n\
Message-ID: <large-1@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Attached.\r\n\
--b1\r\n\
Content-Type: application/octet-stream; name=\"archive.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"archive.bin\"\r\n\
\r\n",
    );
    for line in b64.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b1--\r\n");
    m
}

/// The seeded mailbox's content, without touching a server.
pub fn seed_content() -> Seeded {
    let mut msgs = Vec::new();
    let mut add = |folder: &str, body: Vec<u8>, flags: &[&str], d: &str| {
        msgs.push(SeedMessage {
            folder: folder.into(),
            body,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            internal_date: date(d),
        })
    };
    let plain = b"From: Alice <alice@example.com>\r\n\
To: user@example.net\r\n\
Subject: Lunch?\r\n\
Date: Tue, 2 Jan 2024 12:00:00 +0100\r\n\
Message-ID: <plain-1@example.com>\r\n\
\r\n\
Noon at the usual place?\r\n"
        .to_vec();
    add(
        "INBOX",
        plain.clone(),
        &["\\Seen"],
        "2024-01-02T12:00:05+01:00",
    );
    // 8-bit headers: raw UTF-8 in the subject, a raw Latin-1 byte in a name (not UTF-8).
    let mut eight = b"From: \"M".to_vec();
    eight.push(0xfc);
    eight.extend_from_slice(
        "ller\" <mueller@example.de>\r\n\
To: user@example.net\r\n\
Subject: Grüße aus Köln ☃\r\n\
Date: Wed, 3 Jan 2024 09:15:00 +0100\r\n\
Message-ID: <eight-1@example.de>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Schöne Grüße — 你好\r\n"
            .as_bytes(),
    );
    add(
        "INBOX",
        eight,
        &["\\Flagged", "$Forwarded"],
        "2024-01-03T09:15:00+01:00",
    );
    // Broken MIME: the closing boundary is missing, base64 is invalid, a header line lacks
    // its colon, and a line runs for 5000 characters.
    let mut broken = b"From: broken@example.com\r\n\
To: user@example.net\r\n\
Subject: broken mime\r\n\
This header line has no colon\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"never-closed\"\r\n\
\r\n\
--never-closed\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
!!!not*base64@@@\r\n\
--never-closed\r\n\
Content-Type: text/plain\r\n\
\r\n"
        .to_vec();
    broken.extend(std::iter::repeat_n(b'x', 5000));
    broken.extend_from_slice(b"\r\n");
    add(
        "INBOX",
        broken,
        &["Project-X", "\\Answered"],
        "2023-12-31T23:59:59-08:00",
    );
    add(
        "Projekte/Größe/Ünïcødé 📬",
        large_message(LARGE_ATTACHMENT, 7),
        &["\\Seen"],
        "2024-06-03T08:00:00+00:00",
    );
    add(
        "Entwürfe",
        "From: user@example.net\r\nTo: bob@example.com\r\nSubject: Entwurf\r\n\r\nNoch nicht fertig.\r\n"
            .as_bytes()
            .to_vec(),
        &["\\Draft"],
        "2024-02-29T18:30:00+05:30",
    );
    let mut jis = b"From: tanaka@example.jp\r\nTo: user@example.net\r\nSubject: =?ISO-2022-JP?B?GyRCJEYkOSRIGyhC?=\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n\r\n".to_vec();
    jis.extend_from_slice(b"\x1b$B$3$s$K$A$O\x1b(B\r\n");
    add("台北/日本語", jis, &[], "2024-03-01T10:00:00+09:00");
    // Same bytes as the first message in another folder: stored once by the vault.
    add(
        "Archive/2024",
        plain,
        &["\\Seen", "$Label1"],
        "2024-01-02T12:00:05+01:00",
    );
    // Headers only, no body, no final line break.
    add(
        "Archive/2024",
        b"From: terse@example.com\r\nSubject: (no body)".to_vec(),
        &[],
        "2020-02-02T02:02:02+00:00",
    );
    Seeded {
        folders: vec![
            "INBOX".into(),
            "Projekte".into(),
            "Projekte/Größe".into(),
            "Projekte/Größe/Ünïcødé 📬".into(),
            "Entwürfe".into(),
            "台北".into(),
            "台北/日本語".into(),
            "Archive/2024".into(),
            "Empty".into(),
        ],
        messages: msgs,
    }
}

/// Fills `cfg`'s mailbox with [`seed_content`] through APPEND.
///
/// # Panics
/// On any server error (a test environment problem).
pub async fn seed(cfg: &ImapConfig) -> Seeded {
    let seeded = seed_content();
    let mut s = connect(cfg).await.expect("connect to seed");
    for f in &seeded.folders {
        if f != "INBOX" {
            s.create_folder(&mutf7::encode(f)).await.expect("create");
        }
    }
    for m in &seeded.messages {
        s.append(
            &mutf7::encode(&m.folder),
            &m.flags,
            Some(m.internal_date),
            m.body.len() as u64,
            &m.body[..],
        )
        .await
        .expect("append");
    }
    s.logout().await;
    seeded
}

/// A TCP proxy on loopback in front of a server that breaks connections on purpose: the
/// first `cuts` connections are closed (or go silent) once `after` bytes have gone from the
/// server to the client. Later connections pass untouched.
pub struct CuttingProxy {
    pub port: u16,
    cuts_left: Arc<AtomicU32>,
    pub cut_count: Arc<AtomicU32>,
    pub bytes: Arc<AtomicU64>,
}

impl CuttingProxy {
    pub async fn start(target_port: u16, after: u64, cuts: u32) -> CuttingProxy {
        Self::with_mode(target_port, after, cuts, false).await
    }

    /// Like [`CuttingProxy::start`], but the first `stalls` connections go silent after
    /// `after` bytes instead of closing: the server seems to hang, and only a time-out
    /// notices.
    pub async fn stalling(target_port: u16, after: u64, stalls: u32) -> CuttingProxy {
        Self::with_mode(target_port, after, stalls, true).await
    }

    async fn with_mode(target_port: u16, after: u64, cuts: u32, stall: bool) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cuts_left = Arc::new(AtomicU32::new(cuts));
        let cut_count = Arc::new(AtomicU32::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (cl, cc, by) = (cuts_left.clone(), cut_count.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut_this = cl
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let (cc, by) = (cc.clone(), by.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut sent = 0u64;
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let n = if cut_this {
                            (n as u64).min(after.saturating_sub(sent)) as usize
                        } else {
                            n
                        };
                        if n > 0 && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                        by.fetch_add(n as u64, Ordering::Relaxed);
                        if cut_this && sent >= after {
                            cc.fetch_add(1, Ordering::SeqCst);
                            if stall {
                                // Hold both sockets open and say nothing.
                                tokio::time::sleep(Duration::from_secs(300)).await;
                            }
                            break;
                        }
                    }
                    // Dropping both halves resets the connection mid-response.
                    up.abort();
                });
            }
        });
        CuttingProxy {
            port,
            cuts_left,
            cut_count,
            bytes,
        }
    }

    /// Cuts to come.
    pub fn cuts_left(&self) -> u32 {
        self.cuts_left.load(Ordering::SeqCst)
    }
}
