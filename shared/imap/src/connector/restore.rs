//! The restore: folders made as needed (under a label, or in place), then each message put
//! back by APPEND, with one retry on a fresh connection when the connection failed.

use super::layout::meta_of;
use super::{source_error, ImapConnector};
use crate::conn::{connect, ImapSession, MessageMeta};
use crate::error::Error as ImapError;
use crate::sync::restore_folder_wire;
use engine::{Entry, EntryKind, SMALL_ITEM};
use engine::{Error, RestoreContent, Result, SourceRestore, SourceRestoreReport};
use std::collections::BTreeSet;
use std::io::{Seek, Write};

impl ImapConnector {
    /// The restore behind [`engine::Connector::restore`].
    pub(super) async fn restore_items(
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
