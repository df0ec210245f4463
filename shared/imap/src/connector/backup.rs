//! The backup: which folders are read, how each one's sync result lands in the tree, and the
//! sink that stores messages as they arrive, spooling large ones to disk.

use super::layout::{
    fingerprint, folder_path, get, item_name, message_meta, meta_of, mtime_ns, set, uid_of,
};
use super::{
    source_error, ImapConnector, META_DELIMITER, META_FROM, META_SPECIAL_USE, META_SUBJECT,
    META_WIRE,
};
use crate::conn::{FolderInfo, MessageMeta};
use crate::gmail;
use crate::sync::{sync_folder, Connection, FolderState, MailboxCursor, MessageSink};
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

impl ImapConnector {
    /// The backup behind [`engine::Connector::backup`]: the mailbox is the one account, so
    /// the account argument adds nothing here.
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

        // Folders gone from the server (or no longer read) leave the tree.
        let wanted: BTreeSet<&str> = chosen.iter().map(|f| f.wire.as_str()).collect();
        for p in tree.folder_paths().await? {
            let wire = tree
                .folder_meta(&p)
                .await?
                .and_then(|m| get(&m, META_WIRE).map(String::from));
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
            tree.set_folder_meta(&path, fmeta).await?;

            let mut prev = FolderState {
                cursor: prev_cursor.folders.get(&f.wire).cloned(),
                messages: BTreeMap::new(),
            };
            for e in tree.items(&path).await? {
                if let Some(uid) = uid_of(&e.name) {
                    prev.messages.insert(uid, meta_of(uid, &e));
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
            let names: Vec<Vec<u8>> = tree.items(&path).await?.map(|e| e.name).collect();
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
                tree.record_error(&p, format!("the server would not give this message: {why}"));
            }
            next.folders.insert(f.wire.clone(), cur);
        }
        conn.close().await;
        Ok(Some(
            String::from_utf8(next.to_bytes()).expect("JSON is UTF-8"),
        ))
    }
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
