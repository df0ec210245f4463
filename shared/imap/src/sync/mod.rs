//! Incremental backup of folders, independent of where the messages go: what changed in a
//! folder since its cursor, fetching only that, and surviving dropped connections.
//!
//! The cursor of a folder is its UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ (RFC 7162). A daily
//! run compares them with STATUS and skips a folder where nothing changed; otherwise it asks
//! for messages changed since the last HIGHESTMODSEQ (new ones and flag changes) and for
//! UIDs expunged since (QRESYNC `VANISHED`), and fetches only the bodies of new messages. A
//! changed UIDVALIDITY means every UID of the folder may now name another message: the folder
//! is read again from scratch, and the vault's content addressing stores no body twice.
//! Servers without CONDSTORE get the same result at the cost of listing every message's
//! flags.
//!
//! A connection that drops or stalls is opened again (at most [`MAX_RETRIES`] times in a
//! row without progress), the folder re-opened, its UIDVALIDITY checked, and the work goes
//! on where it stopped: a message's body continues at the byte where it broke off, so
//! nothing is lost and nothing handed to the sink twice. Listing keeps its progress across
//! reconnects too: metadata is asked for [`LIST_CHUNK`] messages at a time.
//!
//! A folder need not be finished in one run: between batches of bodies the sink is asked
//! whether time is up, and a folder stopped there (or by a connection that will not come
//! back, once something was fetched) ends with a cursor that names what is still to fetch.
//! What failed is tried again in later runs, at most [`MAX_FAILED_RUNS`] times.

mod bodies;
mod cursor;
mod list;

pub use cursor::{
    plan_folder, FolderCursor, FolderPlan, FolderState, MailboxCursor, MAX_FAILED_RUNS,
};
pub use list::LIST_CHUNK;

use crate::config::ImapConfig;
use crate::conn::{connect, FolderInfo, ImapSession, MessageMeta};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Consecutive failed attempts (reconnects) without progress before a sync gives up.
pub const MAX_RETRIES: u32 = 5;

/// What one folder's sync found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderResult {
    /// The folder as it is now: build the snapshot from this, not from the sink's calls
    /// (after a UIDVALIDITY change mid-run the sink may have seen bodies that are now gone).
    pub state: FolderState,
    pub plan_was_full: bool,
    pub unchanged: bool,
    /// UIDs whose bodies were handed to the sink in full.
    pub fetched: Vec<u32>,
    /// Known messages whose flags (or labels) changed.
    pub flags_changed: Vec<u32>,
    /// Known messages that are gone.
    pub expunged: Vec<u32>,
    /// New messages the server would not give (kept for the next run).
    pub failed: Vec<(u32, String)>,
    /// Messages that have now failed in [`MAX_FAILED_RUNS`] runs: reported this once, and
    /// not asked for again.
    pub given_up: Vec<(u32, String)>,
    /// The folder was left part way (out of time, or see `stopped`): the state holds what
    /// was fetched, and its cursor what is still to fetch.
    pub paused: bool,
    /// Why a folder was left part way other than for time: the connection failed and
    /// would not come back after something had been fetched. The caller keeps the
    /// progress (pausing the run) or fails.
    pub stopped: Option<String>,
    /// Connections opened again during this folder.
    pub reconnects: u32,
}

/// Where message bodies go. Parts of one message arrive in order; a part at offset 0 starts
/// a message, and the sink drops whatever it held of a message it was not told was done.
/// Only `done` means a body is complete.
pub trait MessageSink: Send {
    fn part(
        &mut self,
        folder: &FolderInfo,
        meta: &MessageMeta,
        offset: u64,
        bytes: &[u8],
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;

    fn done(
        &mut self,
        folder: &FolderInfo,
        meta: &MessageMeta,
        len: u64,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;

    /// Asked between batches of bodies: whether the folder should stop here and the run
    /// pause (a Lambda run's time is up). The folder's cursor then says what is left.
    fn should_pause(&self) -> bool {
        false
    }
}

/// A connection that is opened again after it drops.
pub struct Connection {
    cfg: ImapConfig,
    session: Option<ImapSession>,
    generation: u64,
    reconnects: u32,
}

impl Connection {
    pub fn new(cfg: ImapConfig) -> Self {
        Connection {
            cfg,
            session: None,
            generation: 0,
            reconnects: 0,
        }
    }

    pub fn config(&self) -> &ImapConfig {
        &self.cfg
    }

    /// The live session, connecting if there is none.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn get(&mut self) -> Result<&mut ImapSession> {
        // A session left mid-command by a failure can take no more commands.
        if self.session.as_ref().is_some_and(|s| s.is_broken()) {
            self.session = None;
        }
        if self.session.is_none() {
            let s = connect(&self.cfg).await?;
            if self.generation > 0 {
                self.reconnects += 1;
            }
            self.generation += 1;
            self.session = Some(s);
        }
        Ok(self.session.as_mut().expect("just set"))
    }

    /// Forgets a session that failed, so the next [`Connection::get`] opens a new one.
    pub fn lost(&mut self) {
        self.session = None;
    }

    /// Changes every time a new session is opened: a folder selected under an older
    /// generation must be selected again.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn reconnects(&self) -> u32 {
        self.reconnects
    }

    pub async fn close(mut self) {
        if let Some(s) = self.session.take() {
            s.logout().await;
        }
    }
}

/// Counts failures in a row and waits a little longer after each.
struct Retry {
    failures: u32,
}

impl Retry {
    /// Returns the error when it is not worth trying again.
    async fn failed(&mut self, conn: &mut Connection, e: Error) -> Result<()> {
        if !e.is_retryable() || self.failures >= MAX_RETRIES {
            return Err(e);
        }
        self.failures += 1;
        tracing::warn!(attempt = self.failures, error = %e, "IMAP connection failed; reconnecting");
        conn.lost();
        let wait = Duration::from_millis(100u64 << self.failures.min(6));
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn progress(&mut self) {
        self.failures = 0;
    }
}

/// Backs up one folder: finds what changed since `prev`, hands new bodies to `sink`, and
/// returns the folder's new state.
///
/// `prev` is taken whole so that its messages become the new state's without a copy: a
/// Gmail All Mail holds hundreds of thousands, and a second map of them would double what
/// the sync holds.
///
/// # Errors
/// A connection that cannot be re-established after [`MAX_RETRIES`] tries, a refused
/// login, or a sink failure. Single messages the server will not give are listed in
/// [`FolderResult::failed`] instead.
pub async fn sync_folder<S: MessageSink>(
    conn: &mut Connection,
    folder: &FolderInfo,
    mut prev: FolderState,
    sink: &mut S,
) -> Result<FolderResult> {
    let start = conn.reconnects();
    let mut forced_full = false;
    loop {
        match sync_once(conn, folder, &mut prev, sink, forced_full).await {
            Err(Error::UidValidityChanged(_)) if !forced_full => {
                forced_full = true;
            }
            Err(e) => return Err(e),
            Ok(mut r) => {
                r.reconnects = conn.reconnects() - start;
                return Ok(r);
            }
        }
    }
}

/// One attempt at the folder. `prev` keeps its messages until the bodies are in (a
/// UIDVALIDITY found changed up to then starts the folder over from it); they are then
/// moved into the new state.
async fn sync_once<S: MessageSink>(
    conn: &mut Connection,
    folder: &FolderInfo,
    prev: &mut FolderState,
    sink: &mut S,
    forced_full: bool,
) -> Result<FolderResult> {
    let mut retry = Retry { failures: 0 };

    // Phase 1: what changed.
    let listing = list::list(conn, &mut retry, folder, prev, forced_full).await?;
    let Some(listed) = listing.metas else {
        return Ok(FolderResult {
            state: std::mem::take(prev),
            unchanged: true,
            ..Default::default()
        });
    };
    retry.progress();
    let status = listing.status;
    let full = listing.plan == FolderPlan::Full;
    let mut result = FolderResult {
        plan_was_full: full,
        // Only known UIDs are listed as gone (all of them when the folder is read whole).
        expunged: listing.gone.clone(),
        ..Default::default()
    };
    // Known messages listed again (their flags may have changed), applied once the
    // bodies are in; the rest are new.
    let mut relisted: Vec<MessageMeta> = Vec::new();
    let mut to_fetch: Vec<MessageMeta> = Vec::new();
    for m in listed {
        if !full && prev.messages.contains_key(&m.uid) {
            relisted.push(m);
        } else {
            to_fetch.push(m);
        }
    }

    // Phase 2: bodies, resuming where a drop left off.
    let fetched = bodies::fetch_bodies(
        conn,
        folder,
        status.uid_validity,
        listing.selected_gen,
        &to_fetch,
        sink,
        &mut retry,
    )
    .await?;
    let mut messages: BTreeMap<u32, MessageMeta> = if full {
        BTreeMap::new()
    } else {
        std::mem::take(&mut prev.messages)
    };
    for uid in &listing.gone {
        messages.remove(uid);
    }
    for m in relisted {
        if let Some(old) = messages.get_mut(&m.uid) {
            if old.flags != m.flags || old.gm_labels != m.gm_labels {
                result.flags_changed.push(m.uid);
            }
            old.flags = m.flags;
            old.gm_labels = m.gm_labels;
            old.modseq = m.modseq.or(old.modseq);
        }
    }
    let earlier = prev
        .cursor
        .as_ref()
        .filter(|c| c.uid_validity == status.uid_validity);
    let mut cursor = FolderCursor::new(&status);
    let mut given_up = listing.given_up;
    let mut pending = Vec::new();
    let interrupted = fetched.paused || fetched.stopped.is_some();
    for m in to_fetch {
        match fetched.outcome.get(&m.uid) {
            Some(Ok(())) => {
                result.fetched.push(m.uid);
                messages.insert(m.uid, m);
            }
            Some(Err(reason)) => {
                let runs = earlier
                    .and_then(|c| c.retries.get(&m.uid))
                    .copied()
                    .unwrap_or(0)
                    + 1;
                if runs >= MAX_FAILED_RUNS {
                    given_up.push(m.uid);
                    result.given_up.push((m.uid, reason.clone()));
                } else {
                    cursor.retries.insert(m.uid, runs);
                    result.failed.push((m.uid, reason.clone()));
                }
            }
            // Not reached before the folder was left: the next run goes on with it. One
            // that had failed before keeps its count, or a message behind every pause
            // would never be given up.
            None if interrupted => match earlier.and_then(|c| c.retries.get(&m.uid)) {
                Some(runs) => {
                    cursor.retries.insert(m.uid, *runs);
                }
                None => pending.push(m.uid),
            },
            // Expunged between listing and fetching: not in the folder any more.
            None => {}
        }
    }
    given_up.sort_unstable();
    given_up.dedup();
    cursor.set_given_up(&given_up);
    cursor.set_pending(&pending);
    result.paused = interrupted;
    result.stopped = fetched.stopped;
    result.state = FolderState {
        cursor: Some(cursor),
        messages,
        held_validity: Some(status.uid_validity),
    };
    Ok(result)
}

/// Where a restore puts a folder: `<label>/<original path>` under the destination's
/// hierarchy separator, encoded for the wire. `label` is "Lifeboat Restore <UTC timestamp>".
/// A separator inside an original segment (possible when the destination's differs from
/// the source's) is replaced by `_`, so the restored tree keeps its shape.
pub fn restore_folder_wire(label: &str, original: &[String], delimiter: Option<&str>) -> String {
    let d = delimiter.filter(|d| !d.is_empty()).unwrap_or("/");
    let mut segs = vec![label.replace(d, "_")];
    segs.extend(original.iter().map(|s| s.replace(d, "_")));
    crate::mutf7::encode(&segs.join(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_names() {
        let label = "Lifeboat Restore 2026-11-25 10-00-00 UTC";
        assert_eq!(
            restore_folder_wire(label, &["Entwürfe".into()], Some("/")),
            "Lifeboat Restore 2026-11-25 10-00-00 UTC/Entw&APw-rfe"
        );
        assert_eq!(
            restore_folder_wire(label, &["a/b".into(), "c".into()], Some(".")),
            "Lifeboat Restore 2026-11-25 10-00-00 UTC.a/b.c"
        );
        assert_eq!(
            restore_folder_wire(label, &["a.b".into()], Some(".")),
            "Lifeboat Restore 2026-11-25 10-00-00 UTC.a_b"
        );
    }
}
