//! The backup: which folders are read, how each one's sync result lands in the tree, and the
//! sink that stores messages as they arrive, spooling large ones to disk.

use super::layout::{
    fingerprint, folder_path, get, item_name, message_meta, meta_of, mtime_ns, set, uid_of,
};
use super::{
    source_error, ImapConnector, META_DELIMITER, META_FROM, META_SPECIAL_USE, META_SUBJECT,
    META_UIDVALIDITY, META_WIRE,
};
use crate::conn::{FolderInfo, MessageMeta};
use crate::error::{clip, Error as ImapError, ErrorKind as ImapErrorKind};
use crate::gmail;
use crate::sync::{
    sync_folder, Connection, FolderState, MailboxCursor, MessageSink, MAX_FAILED_RUNS,
};
use bytes::Bytes;
use domain::ItemPath;
use engine::SMALL_ITEM;
use engine::{AccountTree, Error, ItemInfo, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};

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
    /// Whether the run has stored something: it pauses only after progress, so that even
    /// a deadline already past moves the backup forward.
    worked: bool,
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
                self.worked = true;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.failure = Some(e);
                Err(msg)
            }
        }
    }

    fn should_pause(&self) -> bool {
        self.worked && self.tree.time_is_up()
    }
}

/// How a folder's sync ended for the run.
enum FolderEnd {
    Done,
    /// The run must pause here: out of time, or the source lost after progress.
    Pause,
}

impl ImapConnector {
    /// The backup behind [`engine::Connector::backup`]: the mailbox is the one account, so
    /// the account argument adds nothing here.
    ///
    /// One folder's failure (a folder the server refuses to open or list, an answer that
    /// is not IMAP) costs that folder: it keeps its previous contents and cursor, and the
    /// error is recorded on the snapshot. A lost connection, a refused login or a storage
    /// failure fails the run, or pauses it when it has made progress and may pause.
    pub(super) async fn backup_mailbox(
        &self,
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
        let mut paths = Vec::with_capacity(chosen.len());
        for f in &chosen {
            paths.push(folder_path(f));
        }
        drop_unwanted(tree, &chosen, &paths).await?;

        // Whether this run has read a changed folder: a run always gets that far before
        // it may pause, so that every run makes progress.
        let mut did_work = false;
        for (i, f) in chosen.iter().enumerate() {
            // Out of time (a Lambda run's deadline) with folders left: pause. The cursor
            // keeps the old state of every folder not yet read, so the next run, which
            // starts from this tree, reads them from where the last snapshot left them.
            if did_work && tree.time_is_up() {
                return Ok(Some(
                    pause(tree, conn, next, &prev_cursor, &chosen[i..]).await,
                ));
            }
            let path = match &paths[i] {
                Ok(p) => p.clone(),
                Err(e) => {
                    tree.record_error(
                        &ItemPath::root(),
                        clip(&format!("folder {} skipped: {e}", f.name)),
                    );
                    continue;
                }
            };
            let end = self
                .backup_folder(
                    &mut conn,
                    tree,
                    f,
                    &path,
                    &prev_cursor,
                    &mut next,
                    &mut did_work,
                )
                .await?;
            if let FolderEnd::Pause = end {
                return Ok(Some(
                    pause(tree, conn, next, &prev_cursor, &chosen[i + 1..]).await,
                ));
            }
        }
        conn.close().await;
        Ok(Some(
            String::from_utf8(next.to_bytes()).expect("JSON is UTF-8"),
        ))
    }

    /// Syncs one folder into the tree and records its cursor in `next`.
    #[allow(clippy::too_many_arguments)]
    async fn backup_folder(
        &self,
        conn: &mut Connection,
        tree: &mut AccountTree,
        f: &FolderInfo,
        path: &ItemPath,
        prev_cursor: &MailboxCursor,
        next: &mut MailboxCursor,
        did_work: &mut bool,
    ) -> Result<FolderEnd> {
        let old_meta = tree.folder_meta(path).await?.unwrap_or_default();
        let mut prev = FolderState {
            cursor: prev_cursor.folders.get(&f.wire).cloned(),
            messages: BTreeMap::new(),
            held_validity: get(&old_meta, META_UIDVALIDITY).and_then(|v| v.parse().ok()),
        };
        for e in tree.items(path).await? {
            if let Some(uid) = uid_of(&e.name) {
                prev.messages.insert(uid, meta_of(uid, &e));
            }
        }
        // Without the items it says were stored the cursor cannot be trusted (a first
        // backup after a lost snapshot): read the folder whole.
        if prev.messages.is_empty() && prev.cursor.as_ref().is_some_and(|c| c.expects_stored()) {
            prev.cursor = None;
        }
        if prev.held_validity.is_none() {
            prev.held_validity = prev.cursor.as_ref().map(|c| c.uid_validity);
        }
        let validity_hint = prev.held_validity.unwrap_or(0);
        let mut sink = TreeSink {
            tree,
            folder: path.clone(),
            uid_validity: validity_hint,
            open: None,
            failure: None,
            fetched_bytes: 0,
            worked: *did_work,
        };
        let res = sync_folder(conn, f, prev, &mut sink).await;
        if let Some(e) = sink.failure.take() {
            return Err(e);
        }
        let r = match res {
            Ok(r) => r,
            // The connection is gone for good, or the login refused: the whole run.
            Err(e) if e.is_retryable() || e.kind() == ImapErrorKind::Auth => {
                if *did_work && tree.can_pause() {
                    tracing::warn!(error = %e, "IMAP connection lost; pausing the backup");
                    keep_previous(next, prev_cursor, f);
                    return Ok(FolderEnd::Pause);
                }
                return Err(source_error(e));
            }
            // Anything else is this folder's: it keeps what it had.
            Err(e) => {
                tree.record_error(
                    path,
                    clip(&format!(
                        "the folder could not be backed up and keeps its previous contents: {e}"
                    )),
                );
                keep_previous(next, prev_cursor, f);
                return Ok(FolderEnd::Done);
            }
        };
        let Some(cur) = r.state.cursor.clone() else {
            return Ok(FolderEnd::Done);
        };
        if r.unchanged {
            next.folders.insert(f.wire.clone(), cur);
            return Ok(FolderEnd::Done);
        }
        *did_work = true;
        let mut fmeta = vec![
            (META_WIRE.to_string(), f.wire.clone()),
            (META_UIDVALIDITY.to_string(), cur.uid_validity.to_string()),
        ];
        if let Some(d) = &f.delimiter {
            fmeta.push((META_DELIMITER.to_string(), d.clone()));
        }
        if let Some(su) = f.special_use {
            fmeta.push((META_SPECIAL_USE.to_string(), format!("{su:?}")));
        }
        fmeta.sort();
        tree.set_folder_meta(path, fmeta).await?;
        // The tree now gets exactly the folder's messages, with current metadata.
        let names: Vec<Vec<u8>> = tree.items(path).await?.map(|e| e.name).collect();
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
            })
            .await?;
        }
        for (uid, why) in &r.failed {
            let p = path.join(item_name(*uid).as_bytes())?;
            tree.record_error(
                &p,
                clip(&format!(
                    "the server would not give this message; the next backup tries again: {why}"
                )),
            );
        }
        for (uid, why) in &r.given_up {
            let p = path.join(item_name(*uid).as_bytes())?;
            tree.record_error(
                &p,
                clip(&format!(
                    "the server would not give this message in {MAX_FAILED_RUNS} backups; it is not asked for again: {why}"
                )),
            );
        }
        next.folders.insert(f.wire.clone(), cur);
        if r.paused {
            if r.stopped.is_some() && !tree.can_pause() {
                return Err(source_error(ImapError::ConnectionLost(
                    r.stopped.unwrap_or_default(),
                )));
            }
            if let Some(why) = &r.stopped {
                tracing::warn!(error = %why, "IMAP connection lost inside a folder; pausing the backup");
            }
            return Ok(FolderEnd::Pause);
        }
        Ok(FolderEnd::Done)
    }
}

/// The folder's cursor as the last snapshot left it, for a folder not read this run.
fn keep_previous(next: &mut MailboxCursor, prev: &MailboxCursor, f: &FolderInfo) {
    if let Some(c) = prev.folders.get(&f.wire) {
        next.folders.insert(f.wire.clone(), c.clone());
    }
}

/// Pauses the run: folders not read yet keep their old cursors, so the next run, which
/// starts from this tree, reads them from where the last snapshot left them.
async fn pause(
    tree: &mut AccountTree,
    conn: Connection,
    mut next: MailboxCursor,
    prev: &MailboxCursor,
    rest: &[FolderInfo],
) -> String {
    for f in rest {
        keep_previous(&mut next, prev, f);
    }
    tree.pause();
    conn.close().await;
    String::from_utf8(next.to_bytes()).expect("JSON is UTF-8")
}

/// Folders gone from the server (or no longer read) leave the tree; one that still holds
/// folders that are read loses only its own messages and its record of the server's folder.
async fn drop_unwanted(
    tree: &mut AccountTree,
    chosen: &[FolderInfo],
    paths: &[Result<ItemPath>],
) -> Result<()> {
    let wanted: BTreeSet<&str> = chosen.iter().map(|f| f.wire.as_str()).collect();
    let wanted_paths: Vec<&ItemPath> = paths.iter().filter_map(|p| p.as_ref().ok()).collect();
    for p in tree.folder_paths().await? {
        let meta = tree.folder_meta(&p).await?.unwrap_or_default();
        let Some(w) = get(&meta, META_WIRE) else {
            continue;
        };
        if wanted.contains(w) {
            continue;
        }
        if wanted_paths.iter().any(|q| q.starts_with(&p)) {
            let names: Vec<Vec<u8>> = tree.items(&p).await?.map(|e| e.name).collect();
            for n in names {
                tree.remove(&p.join(&n)?).await?;
            }
            let kept: Vec<(String, String)> = meta
                .into_iter()
                .filter(|(k, _)| k != META_WIRE && k != META_UIDVALIDITY)
                .collect();
            tree.set_folder_meta(&p, kept).await?;
        } else if tree.has_folder(&p).await? {
            // (An ancestor removed earlier in this loop may have taken it already.)
            tree.remove(&p).await?;
        }
    }
    Ok(())
}

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
}
