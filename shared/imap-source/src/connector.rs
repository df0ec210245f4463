//! The IMAP connector: one mailbox per task, backed up into the account tree and restored
//! by APPEND.
//!
//! Layout of an account: one folder per IMAP folder, named as the user sees it (decoded,
//! split on the server's separator: `Projekte/Größe/…`), each message `<uid>.eml` holding the
//! RFC 822 bytes exactly as the server has them. A folder's entry keeps its wire name, and
//! each message its flags, internal date, UID, MODSEQ and (Gmail) message id and labels, as
//! `meta`; a flag change updates the metadata only. The cursor is the [`MailboxCursor`].
//! On Gmail only All Mail, Trash, Spam and Chats are read (see [`crate::gmail`]), so a
//! message under several labels is stored once and its labels are metadata.
//!
//! Memory: a message up to the vault's small-item size is held whole; a larger one is
//! spooled to an unnamed temporary file part by part and streamed into the vault from
//! there, so no message, whatever its size, is held in memory.

use crate::config::{Credentials, ImapConfig, Secret, TlsMode};
use crate::conn::{connect, FolderInfo, ImapSession, MessageMeta};
use crate::error::{Error as ImapError, ErrorKind};
use crate::gmail;
use crate::sync::{
    restore_folder_wire, sync_folder, Connection, FolderState, MailboxCursor, MessageSink,
};
use async_trait::async_trait;
use bytes::Bytes;
use domain::{AccountId, ItemPath, Service};
use engine::{
    AccountInfo, AccountTree, Connector, Error, ItemInfo, RestoreContent, Result, SourceConfig,
    SourceErrorKind, SourceRestore, SourceRestoreReport, TaskRecord,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::time::Duration;
use vault::{Entry, EntryKind, SMALL_ITEM};
use zeroize::Zeroizing;

/// The source name of IMAP tasks.
pub const SOURCE: &str = "imap";
/// The one account of an IMAP task: the mailbox.
pub const ACCOUNT: &str = "mailbox";

/// Metadata keys.
pub const META_WIRE: &str = "imap.folder";
pub const META_DELIMITER: &str = "imap.delimiter";
pub const META_SPECIAL_USE: &str = "imap.special_use";
pub const META_UID: &str = "imap.uid";
pub const META_MODSEQ: &str = "imap.modseq";
pub const META_FLAGS: &str = "flags";
pub const META_INTERNAL_DATE: &str = "received";
pub const META_FROM: &str = "from";
pub const META_SUBJECT: &str = "subject";
pub const META_GM_MSGID: &str = "gmail.msgid";
pub const META_GM_LABELS: &str = "gmail.labels";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Password,
    Oauth2,
}

/// A task's settings (never secret: the password or token is sealed apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub tls: TlsMode,
    pub auth: AuthKind,
    /// A PEM file of CA certificates to trust besides the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl ImapSettings {
    pub fn source_config(&self) -> SourceConfig {
        SourceConfig::source(
            SOURCE,
            serde_json::to_value(self).expect("settings serialise"),
        )
    }

    /// # Errors
    /// `Invalid` when the CA file cannot be read.
    pub fn to_config(&self, secret: &str) -> Result<ImapConfig> {
        let secret = Secret::new(secret);
        let mut c = ImapConfig::new(
            &self.host,
            &self.user,
            match self.auth {
                AuthKind::Password => Credentials::Password(secret),
                AuthKind::Oauth2 => Credentials::OAuth2Token(secret),
            },
        );
        c.port = self.port;
        c.tls = self.tls;
        if let Some(f) = &self.ca_file {
            c.extra_roots_pem =
                Some(std::fs::read(f).map_err(|e| {
                    Error::io(format!("cannot read the CA file {}", f.display()), e)
                })?);
        }
        Ok(c)
    }
}

/// Maps an IMAP failure to the engine's source error (the message never holds a secret).
pub fn source_error(e: ImapError) -> Error {
    let kind = match e.kind() {
        ErrorKind::Auth => SourceErrorKind::Auth,
        ErrorKind::Connect | ErrorKind::ConnectionLost | ErrorKind::Timeout | ErrorKind::Tls => {
            SourceErrorKind::Unavailable
        }
        ErrorKind::Invalid => return Error::Invalid(e.to_string()),
        _ => SourceErrorKind::Protocol,
    };
    Error::Source {
        kind,
        message: e.to_string(),
    }
}

pub struct ImapConnector {
    settings: ImapSettings,
    cfg: ImapConfig,
}

impl ImapConnector {
    /// # Errors
    /// `Invalid` for a task that is not an IMAP task, unreadable settings, or a missing
    /// credential.
    pub fn open(task: &TaskRecord, secret: Option<Zeroizing<String>>) -> Result<Self> {
        let SourceConfig::Source {
            source, settings, ..
        } = &task.source
        else {
            return Err(Error::Invalid(format!(
                "task {} is not an IMAP task",
                task.name
            )));
        };
        if source != SOURCE {
            return Err(Error::Invalid(format!(
                "task {} is a {source} task, not an IMAP task",
                task.name
            )));
        }
        let settings: ImapSettings = serde_json::from_value(settings.clone()).map_err(|e| {
            Error::Invalid(format!(
                "the IMAP settings of task {} are unreadable: {e}",
                task.name
            ))
        })?;
        let secret = secret.ok_or_else(|| {
            Error::Invalid(format!(
                "task {} has no password or token; replace its credential",
                task.name
            ))
        })?;
        let cfg = settings.to_config(&secret)?;
        Ok(ImapConnector { settings, cfg })
    }

    pub fn from_config(settings: ImapSettings, cfg: ImapConfig) -> Self {
        ImapConnector { settings, cfg }
    }

    /// Logs in and out: checks the settings and credential when a task is added.
    ///
    /// # Errors
    /// As [`connect`], mapped to source errors.
    pub async fn check(&self) -> Result<()> {
        let s = connect(&self.cfg).await.map_err(source_error)?;
        s.logout().await;
        Ok(())
    }

    fn account(&self) -> AccountInfo {
        AccountInfo {
            id: AccountId::new(ACCOUNT).expect("valid id"),
            name: format!("{}@{}", self.settings.user, self.settings.host),
            services: vec![Service::Mail],
        }
    }
}

/// The tree path of a folder: its decoded segments. A segment that cannot be a path name
/// (`.`, `..`, empty) is kept visible with a `%` in front.
fn folder_path(f: &FolderInfo) -> Result<ItemPath> {
    let mut p = ItemPath::root();
    for seg in f.segments() {
        let seg = if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0') {
            format!("%{seg}")
        } else {
            seg.replace('/', "%2F")
        };
        p = p.join(seg.as_bytes())?;
    }
    Ok(p)
}

fn item_name(uid: u32) -> String {
    format!("{uid}.eml")
}

fn uid_of(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name)
        .ok()?
        .strip_suffix(".eml")?
        .parse()
        .ok()
}

fn get<'a>(meta: &'a [(String, String)], key: &str) -> Option<&'a str> {
    meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn set(meta: &mut Vec<(String, String)>, key: &str, value: Option<String>) {
    meta.retain(|(k, _)| k != key);
    if let Some(v) = value {
        meta.push((key.to_string(), v));
    }
}

/// The message's metadata pairs, keeping what only the content told (sender, subject).
fn message_meta(m: &MessageMeta, base: &[(String, String)]) -> Vec<(String, String)> {
    let mut meta: Vec<(String, String)> = base.to_vec();
    set(&mut meta, META_UID, Some(m.uid.to_string()));
    set(&mut meta, META_FLAGS, Some(m.flags.join(" ")));
    set(
        &mut meta,
        META_INTERNAL_DATE,
        m.internal_date.map(|d| d.to_rfc3339()),
    );
    set(&mut meta, META_MODSEQ, m.modseq.map(|v| v.to_string()));
    set(&mut meta, META_GM_MSGID, m.gm_msgid.map(|v| v.to_string()));
    set(
        &mut meta,
        META_GM_LABELS,
        (!m.gm_labels.is_empty())
            .then(|| serde_json::to_string(&m.gm_labels).expect("labels serialise")),
    );
    meta.sort();
    meta
}

/// Reads back what [`message_meta`] wrote.
fn meta_of(uid: u32, e: &Entry) -> MessageMeta {
    let m = &e.meta;
    MessageMeta {
        uid,
        flags: get(m, META_FLAGS)
            .map(|f| {
                f.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        internal_date: get(m, META_INTERNAL_DATE)
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok()),
        size: u32::try_from(e.size).ok(),
        modseq: get(m, META_MODSEQ).and_then(|v| v.parse().ok()),
        gm_msgid: get(m, META_GM_MSGID).and_then(|v| v.parse().ok()),
        gm_labels: get(m, META_GM_LABELS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
    }
}

/// Content never changes under a UID while UIDVALIDITY stays: that pair is the change key.
fn fingerprint(uid_validity: u32, uid: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&uid_validity.to_be_bytes());
    b[4..].copy_from_slice(&uid.to_be_bytes());
    let h = blake3::hash(&b);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn mtime_ns(m: &MessageMeta) -> i64 {
    m.internal_date
        .and_then(|d| d.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// Sender and subject from the header block, for listings and search: raw header text
/// (unfolded, not MIME-decoded), shortened.
fn header_fields(head: &[u8]) -> (Option<String>, Option<String>) {
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len().min(64 * 1024));
    let text = String::from_utf8_lossy(&head[..end]);
    let mut from = None;
    let mut subject = None;
    let mut current: Option<(String, String)> = None;
    let mut finish = |c: Option<(String, String)>| {
        if let Some((k, v)) = c {
            let v: String = v.trim().chars().take(200).collect();
            match k.to_ascii_lowercase().as_str() {
                "from" if from.is_none() => from = Some(v),
                "subject" if subject.is_none() => subject = Some(v),
                _ => {}
            }
        }
    };
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        finish(current.take());
        if let Some((k, v)) = line.split_once(':') {
            current = Some((k.to_string(), v.to_string()));
        }
    }
    finish(current);
    (from, subject)
}

enum Body {
    Mem(Vec<u8>),
    File(std::fs::File, u64),
}

/// The message being received: its UID, what has come of it, and the metadata read from
/// its header.
struct OpenMessage {
    uid: u32,
    body: Body,
    base: Vec<(String, String)>,
}

/// Puts fetched messages into the tree.
struct TreeSink<'a> {
    tree: &'a mut AccountTree,
    folder: ItemPath,
    uid_validity: u32,
    open: Option<OpenMessage>,
    /// A storage failure, returned from the backup once the sync has stopped.
    failure: Option<Error>,
    fetched_bytes: u64,
}

impl TreeSink<'_> {
    fn spool(v: &[u8]) -> std::io::Result<std::fs::File> {
        let mut f = tempfile::tempfile()?;
        f.write_all(v)?;
        Ok(f)
    }
}

impl MessageSink for TreeSink<'_> {
    async fn part(
        &mut self,
        _folder: &FolderInfo,
        meta: &MessageMeta,
        offset: u64,
        bytes: &[u8],
    ) -> std::result::Result<(), String> {
        if offset == 0 {
            let (from, subject) = header_fields(bytes);
            let mut base = Vec::new();
            set(&mut base, META_FROM, from);
            set(&mut base, META_SUBJECT, subject);
            let body = if meta.size.map(|s| s as usize > SMALL_ITEM).unwrap_or(true) {
                Body::File(
                    tempfile::tempfile().map_err(|e| format!("cannot spool a message: {e}"))?,
                    0,
                )
            } else {
                Body::Mem(Vec::with_capacity(meta.size.unwrap_or(0) as usize))
            };
            self.open = Some(OpenMessage {
                uid: meta.uid,
                body,
                base,
            });
        }
        let Some(OpenMessage { uid, body, .. }) = self.open.as_mut() else {
            return Err("a message part without its start".into());
        };
        if *uid != meta.uid {
            return Err("message parts interleaved".into());
        }
        match body {
            Body::Mem(v) => {
                v.extend_from_slice(bytes);
                if v.len() > SMALL_ITEM {
                    // Larger than announced: continue on disk.
                    let f = Self::spool(v).map_err(|e| format!("cannot spool a message: {e}"))?;
                    let n = v.len() as u64;
                    *body = Body::File(f, n);
                }
            }
            Body::File(f, n) => {
                f.write_all(bytes)
                    .map_err(|e| format!("cannot spool a message: {e}"))?;
                *n += bytes.len() as u64;
            }
        }
        Ok(())
    }

    async fn done(
        &mut self,
        _folder: &FolderInfo,
        meta: &MessageMeta,
        len: u64,
    ) -> std::result::Result<(), String> {
        let Some(OpenMessage { uid, body, base }) = self.open.take() else {
            return Err("a message ended without parts".into());
        };
        let path = self
            .folder
            .join(item_name(uid).as_bytes())
            .map_err(|e| e.to_string())?;
        let info = ItemInfo {
            mtime_ns: mtime_ns(meta),
            fingerprint: fingerprint(self.uid_validity, uid),
            meta: message_meta(meta, &base),
        };
        let res = match body {
            Body::Mem(v) => self.tree.put_item(&path, info, Bytes::from(v)).await,
            Body::File(mut f, n) => {
                if let Err(e) = f.rewind() {
                    return Err(format!("cannot read a spooled message: {e}"));
                }
                self.tree.put_item_stream(&path, info, f, n).await
            }
        };
        match res {
            Ok(()) => {
                self.fetched_bytes += len;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.failure = Some(e);
                Err(msg)
            }
        }
    }
}

#[async_trait]
impl Connector for ImapConnector {
    async fn accounts(&self) -> Result<Vec<AccountInfo>> {
        Ok(vec![self.account()])
    }

    async fn backup(
        &self,
        _account: &AccountInfo,
        cursor: Option<&str>,
        tree: &mut AccountTree,
    ) -> Result<Option<String>> {
        // A cursor this build cannot read means a full enumeration against the same tree:
        // nothing is lost, and content already stored is not stored again.
        let prev_cursor = cursor
            .and_then(|c| MailboxCursor::from_bytes(c.as_bytes()).ok())
            .unwrap_or_default();
        let mut next = MailboxCursor::new();
        let mut conn = Connection::new(self.cfg.clone());
        let (all, gmail) = {
            let s = conn.get().await.map_err(source_error)?;
            let all = s.list_folders().await.map_err(source_error)?;
            (all, s.capabilities().gmail())
        };
        let chosen = gmail::folders_to_back_up(&all, gmail);

        // Folders gone from the server (or no longer read) leave the tree.
        let wanted: BTreeSet<&str> = chosen.iter().map(|f| f.wire.as_str()).collect();
        for p in tree.folder_paths() {
            let wire = tree
                .folder_meta(&p)
                .and_then(|m| get(m, META_WIRE))
                .map(String::from);
            if let Some(w) = wire {
                if !wanted.contains(w.as_str()) {
                    tree.remove(&p).await?;
                }
            }
        }

        // Whether this run has read a changed folder: a run always gets that far before
        // it may pause, so that every run makes progress.
        let mut did_work = false;
        for (i, f) in chosen.iter().enumerate() {
            // Out of time (a Lambda run's deadline) with folders left: pause. The cursor
            // keeps the old state of every folder not yet read, so the next run, which
            // starts from this tree, reads them from where the last snapshot left them.
            if did_work && tree.time_is_up() {
                for rest in &chosen[i..] {
                    if let Some(c) = prev_cursor.folders.get(&rest.wire) {
                        next.folders.insert(rest.wire.clone(), c.clone());
                    }
                }
                tree.pause();
                conn.close().await;
                return Ok(Some(
                    String::from_utf8(next.to_bytes()).expect("JSON is UTF-8"),
                ));
            }
            let path = match folder_path(f) {
                Ok(p) => p,
                Err(e) => {
                    tree.record_error(&ItemPath::root(), format!("folder {} skipped: {e}", f.name));
                    continue;
                }
            };
            let mut fmeta = vec![(META_WIRE.to_string(), f.wire.clone())];
            if let Some(d) = &f.delimiter {
                fmeta.push((META_DELIMITER.to_string(), d.clone()));
            }
            if let Some(su) = f.special_use {
                fmeta.push((META_SPECIAL_USE.to_string(), format!("{su:?}")));
            }
            fmeta.sort();
            tree.set_folder_meta(&path, fmeta)?;

            let mut prev = FolderState {
                cursor: prev_cursor.folders.get(&f.wire).cloned(),
                messages: BTreeMap::new(),
            };
            for e in tree.items(&path) {
                if let Some(uid) = uid_of(&e.name) {
                    prev.messages.insert(uid, meta_of(uid, e));
                }
            }
            // Without items in the tree the cursor cannot be trusted (a first backup after
            // a lost snapshot): read the folder whole.
            if prev.messages.is_empty() && prev.cursor.as_ref().is_some_and(|c| c.uid_next > 1) {
                prev.cursor = None;
            }
            let validity_hint = prev.cursor.as_ref().map(|c| c.uid_validity).unwrap_or(0);
            let mut sink = TreeSink {
                tree,
                folder: path.clone(),
                uid_validity: validity_hint,
                open: None,
                failure: None,
                fetched_bytes: 0,
            };
            let res = sync_folder(&mut conn, f, &prev, &mut sink).await;
            if let Some(e) = sink.failure.take() {
                return Err(e);
            }
            let r = res.map_err(source_error)?;
            let Some(cur) = r.state.cursor.clone() else {
                continue;
            };
            if r.unchanged {
                next.folders.insert(f.wire.clone(), cur);
                continue;
            }
            did_work = true;
            // The tree now gets exactly the folder's messages, with current metadata.
            let names: Vec<Vec<u8>> = tree.items(&path).map(|e| e.name.clone()).collect();
            for name in names {
                let keep = uid_of(&name).is_some_and(|u| r.state.messages.contains_key(&u));
                if !keep {
                    tree.remove(&path.join(&name)?).await?;
                }
            }
            for (uid, m) in &r.state.messages {
                let p = path.join(item_name(*uid).as_bytes())?;
                let fp = fingerprint(cur.uid_validity, *uid);
                tree.update_item(&p, |e| {
                    e.meta = message_meta(m, &e.meta);
                    e.fingerprint = fp;
                    e.mtime_ns = mtime_ns(m);
                })?;
            }
            for (uid, why) in &r.failed {
                let p = path.join(item_name(*uid).as_bytes())?;
                tree.record_error(&p, format!("the server would not give this message: {why}"));
            }
            next.folders.insert(f.wire.clone(), cur);
        }
        conn.close().await;
        Ok(Some(
            String::from_utf8(next.to_bytes()).expect("JSON is UTF-8"),
        ))
    }

    async fn restore(
        &self,
        job: &SourceRestore,
        content: &RestoreContent,
    ) -> Result<SourceRestoreReport> {
        let mut s = connect(&self.cfg).await.map_err(source_error)?;
        let folders = s.list_folders().await.map_err(source_error)?;
        let delimiter = folders
            .iter()
            .find_map(|f| f.delimiter.clone())
            .unwrap_or_else(|| "/".to_string());
        let mut report = SourceRestoreReport::default();
        let mut created: BTreeSet<String> = folders.iter().map(|f| f.wire.clone()).collect();
        let target_of = |segments: &[String]| match &job.label {
            Some(label) => restore_folder_wire(label, segments, Some(&delimiter)),
            None => crate::mutf7::encode(&segments.join(&delimiter)),
        };
        if let Some(label) = &job.label {
            report.target = label.clone();
            let wire = target_of(&[]);
            s.create_folder(&wire).await.map_err(source_error)?;
            created.insert(wire);
        } else {
            report.target = format!("{}@{} (in place)", self.settings.user, self.settings.host);
        }
        for (path, entry) in &job.items {
            let segs: Vec<String> = path
                .segments()
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let folder_segs: &[String] = match entry.kind {
                EntryKind::Dir => &segs,
                _ => &segs[..segs.len().saturating_sub(1)],
            };
            // Every level exists before anything goes in (not every server makes parents).
            for depth in 1..=folder_segs.len() {
                let wire = target_of(&folder_segs[..depth]);
                if created.insert(wire.clone()) {
                    match s.create_folder(&wire).await {
                        Ok(()) => report.folders += 1,
                        Err(e) => report.errors.push(format!("{path}: {e}")),
                    }
                }
            }
            if entry.kind != EntryKind::File {
                continue;
            }
            let m = meta_of(0, entry);
            let wire = target_of(folder_segs);
            let res = append_entry(&mut s, &wire, &m, entry, content).await;
            match res {
                Ok(()) => {
                    report.items += 1;
                    report.bytes += entry.size;
                }
                Err(AppendError::Content(e)) => report.errors.push(format!("{path}: {e}")),
                Err(AppendError::Imap(e)) if e.is_retryable() || s.is_broken() => {
                    // A new connection and one more try for this message.
                    s = connect(&self.cfg).await.map_err(source_error)?;
                    match append_entry(&mut s, &wire, &m, entry, content).await {
                        Ok(()) => {
                            report.items += 1;
                            report.bytes += entry.size;
                        }
                        Err(e) => report.errors.push(format!("{path}: {e}")),
                    }
                }
                Err(e) => report.errors.push(format!("{path}: {e}")),
            }
        }
        s.logout().await;
        Ok(report)
    }
}

enum AppendError {
    Content(Error),
    Imap(ImapError),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Content(e) => write!(f, "{e}"),
            AppendError::Imap(e) => write!(f, "{e}"),
        }
    }
}

/// APPENDs one stored message: small ones from memory, large ones spooled to a temporary
/// file first so memory stays bounded.
async fn append_entry(
    s: &mut ImapSession,
    wire: &str,
    m: &MessageMeta,
    entry: &Entry,
    content: &RestoreContent,
) -> std::result::Result<(), AppendError> {
    if entry.size as usize <= SMALL_ITEM {
        let body = content.read(entry).await.map_err(AppendError::Content)?;
        return s
            .append(
                wire,
                &m.flags,
                m.internal_date,
                body.len() as u64,
                &body[..],
            )
            .await
            .map_err(AppendError::Imap);
    }
    let mut f = tempfile::tempfile()
        .map_err(|e| AppendError::Content(Error::io("cannot spool a message", e)))?;
    content
        .read_chunks(entry, |chunk| {
            f.write_all(&chunk)
                .map_err(|e| Error::io("cannot spool a message", e))
        })
        .await
        .map_err(AppendError::Content)?;
    f.rewind()
        .map_err(|e| AppendError::Content(Error::io("cannot spool a message", e)))?;
    let f = tokio::fs::File::from_std(f);
    s.append(
        wire,
        &m.flags,
        m.internal_date,
        entry.size,
        tokio::io::BufReader::new(f),
    )
    .await
    .map_err(AppendError::Imap)
}

/// How long a connector waits on the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_listings() {
        let (f, s) = header_fields(
            b"From: Alice\r\n <a@example.com>\r\nSubject: Hello\r\n\tworld\r\nX: y\r\n\r\nFrom: body",
        );
        assert_eq!(f.as_deref(), Some("Alice <a@example.com>"));
        assert_eq!(s.as_deref(), Some("Hello world"));
        assert_eq!(header_fields(b"no headers here"), (None, None));
    }

    #[test]
    fn metadata_round_trips() {
        let m = MessageMeta {
            uid: 7,
            flags: vec!["$Label1".into(), "\\Seen".into()],
            internal_date: Some(
                chrono::DateTime::parse_from_rfc3339("2024-02-29T18:30:00+05:30").unwrap(),
            ),
            size: Some(12),
            modseq: Some(99),
            gm_msgid: Some(123),
            gm_labels: vec!["Work".into(), "\\Important".into()],
        };
        let mut e = Entry::new(b"7.eml".to_vec(), EntryKind::File);
        e.size = 12;
        e.meta = message_meta(&m, &[(META_FROM.into(), "a".into())]);
        assert_eq!(meta_of(7, &e), m);
        assert_eq!(get(&e.meta, META_FROM), Some("a"));
        assert_eq!(uid_of(b"7.eml"), Some(7));
        assert_eq!(uid_of(b"x.eml"), None);
    }

    #[test]
    fn odd_folder_names_still_get_a_path() {
        let f = FolderInfo {
            wire: "a/./b".into(),
            name: "a/./b".into(),
            delimiter: Some("/".into()),
            special_use: None,
            selectable: true,
        };
        assert_eq!(folder_path(&f).unwrap().to_string(), "a/%./b");
        let f = FolderInfo {
            wire: "x.y/z".into(),
            name: "x.y/z".into(),
            delimiter: Some(".".into()),
            special_use: None,
            selectable: true,
        };
        assert_eq!(folder_path(&f).unwrap().to_string(), "x/y%2Fz");
    }

    #[test]
    fn settings_hold_no_secret() {
        let s = ImapSettings {
            host: "imap.example.com".into(),
            port: 993,
            user: "u".into(),
            tls: TlsMode::Implicit,
            auth: AuthKind::Password,
            ca_file: None,
        };
        let v = serde_json::to_string(&s).unwrap();
        assert_eq!(
            v,
            r#"{"host":"imap.example.com","port":993,"user":"u","tls":"implicit","auth":"password"}"#
        );
        let c = s.to_config("hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
