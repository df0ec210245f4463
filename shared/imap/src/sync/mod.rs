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
//! nothing is lost and nothing handed to the sink twice.

use crate::config::ImapConfig;
use crate::conn::{connect, FolderInfo, FolderStatus, ImapSession, MessageMeta, BODY_PART};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::time::Duration;

/// Consecutive failed attempts (reconnects) without progress before a sync gives up.
pub const MAX_RETRIES: u32 = 5;

/// What a backup remembers about one folder to make the next one incremental.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderCursor {
    pub uid_validity: u32,
    pub uid_next: u32,
    /// `None` on servers without CONDSTORE.
    pub highest_modseq: Option<u64>,
    /// New messages that could not be fetched; the next run tries them again although
    /// they are below `uid_next`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_uids: Vec<u32>,
}

/// The cursor of a whole mailbox, keyed by folder wire name. Stored with each snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxCursor {
    pub v: u32,
    pub folders: BTreeMap<String, FolderCursor>,
}

impl Default for MailboxCursor {
    fn default() -> Self {
        Self::new()
    }
}

impl MailboxCursor {
    pub const VERSION: u32 = 1;

    pub fn new() -> Self {
        MailboxCursor {
            v: Self::VERSION,
            folders: BTreeMap::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("cursors serialise")
    }

    /// # Errors
    /// `Invalid` for bytes that are not a cursor of a known version; the caller then runs
    /// a full backup, which loses nothing.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let c: MailboxCursor = serde_json::from_slice(b)
            .map_err(|e| Error::Invalid(format!("the IMAP cursor is unreadable: {e}")))?;
        if c.v != Self::VERSION {
            return Err(Error::Invalid(format!(
                "the IMAP cursor has version {}, this build reads {}",
                c.v,
                Self::VERSION
            )));
        }
        Ok(c)
    }
}

/// What to do with a folder, from its cursor and its STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderPlan {
    /// Same UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, nothing to retry: nothing changed.
    Unchanged,
    /// First backup of the folder, or its UIDVALIDITY changed.
    Full,
    /// Fetch new messages; flag changes and expunges since `changed_since` when the server
    /// has CONDSTORE, else by listing every message's flags.
    Incremental { changed_since: Option<u64> },
}

pub fn plan_folder(prev: Option<&FolderCursor>, now: &FolderStatus) -> FolderPlan {
    let Some(prev) = prev else {
        return FolderPlan::Full;
    };
    if prev.uid_validity != now.uid_validity {
        return FolderPlan::Full;
    }
    let modseq_same = match (prev.highest_modseq, now.highest_modseq) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if modseq_same && prev.uid_next == now.uid_next && prev.retry_uids.is_empty() {
        return FolderPlan::Unchanged;
    }
    FolderPlan::Incremental {
        changed_since: match (prev.highest_modseq, now.highest_modseq) {
            (Some(a), Some(_)) => Some(a),
            _ => None,
        },
    }
}

/// A folder as the last backup saw it: its cursor and every message's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    pub cursor: Option<FolderCursor>,
    pub messages: BTreeMap<u32, MessageMeta>,
}

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
/// # Errors
/// A connection that cannot be re-established after [`MAX_RETRIES`] tries, a refused
/// login, or a sink failure. Single messages the server will not give are listed in
/// [`FolderResult::failed`] instead.
pub async fn sync_folder<S: MessageSink>(
    conn: &mut Connection,
    folder: &FolderInfo,
    prev: &FolderState,
    sink: &mut S,
) -> Result<FolderResult> {
    let start = conn.reconnects();
    let mut forced_full = false;
    loop {
        match sync_once(conn, folder, prev, sink, forced_full).await {
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

async fn sync_once<S: MessageSink>(
    conn: &mut Connection,
    folder: &FolderInfo,
    prev: &FolderState,
    sink: &mut S,
    forced_full: bool,
) -> Result<FolderResult> {
    let mut retry = Retry { failures: 0 };
    let wire = folder.wire.as_str();

    // Phase 1: what changed (idempotent; started again whole after a drop).
    let (status, plan, listing) = loop {
        let attempt = async {
            let s = conn.get().await?;
            let st = s.status(wire).await?;
            let plan = if forced_full {
                FolderPlan::Full
            } else {
                plan_folder(prev.cursor.as_ref(), &st)
            };
            if plan == FolderPlan::Unchanged {
                return Ok((st, plan, None));
            }
            let now = s.examine(wire).await?;
            let listing = list_changes(s, plan, prev, &now).await?;
            Ok::<_, Error>((now, plan, Some(listing)))
        }
        .await;
        match attempt {
            Ok(v) => break v,
            Err(e) => retry.failed(conn, e).await?,
        }
    };
    let selected_gen = conn.generation();
    let Some(listing) = listing else {
        return Ok(FolderResult {
            state: prev.clone(),
            unchanged: true,
            ..Default::default()
        });
    };
    retry.progress();

    let full = plan == FolderPlan::Full;
    let mut messages: BTreeMap<u32, MessageMeta> = if full {
        BTreeMap::new()
    } else {
        prev.messages.clone()
    };
    let mut result = FolderResult {
        plan_was_full: full,
        ..Default::default()
    };
    if full {
        result.expunged = prev.messages.keys().copied().collect();
    }
    for uid in &listing.gone {
        if messages.remove(uid).is_some() {
            result.expunged.push(*uid);
        }
    }
    let mut to_fetch: Vec<MessageMeta> = Vec::new();
    for m in listing.metas {
        match messages.get_mut(&m.uid) {
            Some(old) => {
                if old.flags != m.flags || old.gm_labels != m.gm_labels {
                    result.flags_changed.push(m.uid);
                }
                old.flags = m.flags;
                old.gm_labels = m.gm_labels;
                old.modseq = m.modseq.or(old.modseq);
            }
            None => to_fetch.push(m),
        }
    }
    to_fetch.sort_by_key(|m| m.uid);
    to_fetch.dedup_by_key(|m| m.uid);

    // Phase 2: bodies, resuming where a drop left off.
    let fetched = fetch_bodies(
        conn,
        folder,
        status.uid_validity,
        selected_gen,
        &to_fetch,
        sink,
        &mut retry,
    )
    .await?;
    let mut retry_uids = Vec::new();
    for m in to_fetch {
        match fetched.outcome.get(&m.uid) {
            Some(Ok(())) => {
                result.fetched.push(m.uid);
                messages.insert(m.uid, m);
            }
            Some(Err(reason)) => {
                retry_uids.push(m.uid);
                result.failed.push((m.uid, reason.clone()));
            }
            // Expunged between listing and fetching: not in the folder any more.
            None => {}
        }
    }
    result.state = FolderState {
        cursor: Some(FolderCursor {
            uid_validity: status.uid_validity,
            uid_next: status.uid_next,
            highest_modseq: status.highest_modseq,
            retry_uids,
        }),
        messages,
    };
    Ok(result)
}

struct Listing {
    /// New messages and messages whose flags may have changed.
    metas: Vec<MessageMeta>,
    /// UIDs known before that are gone.
    gone: Vec<u32>,
}

async fn list_changes(
    s: &mut ImapSession,
    plan: FolderPlan,
    prev: &FolderState,
    now: &FolderStatus,
) -> Result<Listing> {
    let known: BTreeSet<u32> = prev.messages.keys().copied().collect();
    let mut listing = match plan {
        FolderPlan::Unchanged => unreachable!("handled by the caller"),
        FolderPlan::Full => Listing {
            metas: if now.messages == 0 {
                Vec::new()
            } else {
                s.fetch_meta("1:*").await?
            },
            gone: Vec::new(),
        },
        FolderPlan::Incremental {
            changed_since: Some(modseq),
        } => {
            let ch = s.changes_since(modseq).await?;
            let gone = match ch.vanished {
                Some(v) => v.into_iter().filter(|u| known.contains(u)).collect(),
                None => {
                    let current: BTreeSet<u32> = s.uids().await?.into_iter().collect();
                    known.difference(&current).copied().collect()
                }
            };
            Listing {
                metas: ch.changed,
                gone,
            }
        }
        FolderPlan::Incremental {
            changed_since: None,
        } => {
            let metas = if now.messages == 0 {
                Vec::new()
            } else {
                s.fetch_meta("1:*").await?
            };
            let current: BTreeSet<u32> = metas.iter().map(|m| m.uid).collect();
            Listing {
                gone: known.difference(&current).copied().collect(),
                metas,
            }
        }
    };
    // Messages that failed last time are asked for again.
    if let Some(c) = &prev.cursor {
        if !c.retry_uids.is_empty() && plan != FolderPlan::Full {
            let set = crate::conn::uid_set(&c.retry_uids);
            listing.metas.extend(s.fetch_meta(&set).await?);
        }
    }
    // The count must add up: if a VANISHED report was lost, or the server cannot say,
    // reconcile with the full UID list rather than keep ghosts.
    if plan != FolderPlan::Full {
        let gone: BTreeSet<u32> = listing.gone.iter().copied().collect();
        let mut after: BTreeSet<u32> = known.difference(&gone).copied().collect();
        after.extend(listing.metas.iter().map(|m| m.uid));
        if after.len() != now.messages as usize {
            let current: BTreeSet<u32> = s.uids().await?.into_iter().collect();
            listing.gone = known.difference(&current).copied().collect();
            let missing: Vec<u32> = current
                .difference(&known)
                .filter(|u| !listing.metas.iter().any(|m| m.uid == **u))
                .copied()
                .collect();
            if !missing.is_empty() {
                let set = crate::conn::uid_set(&missing);
                listing.metas.extend(s.fetch_meta(&set).await?);
            }
        }
    }
    Ok(listing)
}

struct Fetched {
    /// Per UID asked for: fetched, or why not. UIDs the server no longer has are absent.
    outcome: BTreeMap<u32, std::result::Result<(), String>>,
}

async fn fetch_bodies<S: MessageSink>(
    conn: &mut Connection,
    folder: &FolderInfo,
    uid_validity: u32,
    mut selected_gen: u64,
    metas: &[MessageMeta],
    sink: &mut S,
    retry: &mut Retry,
) -> Result<Fetched> {
    let by_uid: BTreeMap<u32, &MessageMeta> = metas.iter().map(|m| (m.uid, m)).collect();
    let mut outcome = BTreeMap::new();
    // Messages that fit one part are fetched many at a time; larger ones (or of unknown
    // size) alone, part after part.
    let mut small: VecDeque<u32> = VecDeque::new();
    let mut big: VecDeque<u32> = VecDeque::new();
    for m in metas {
        match m.size {
            Some(sz) if sz < BODY_PART => small.push_back(m.uid),
            _ => big.push_back(m.uid),
        }
    }
    // The large message in progress and the offset its next part starts at.
    let mut open: Option<(u32, u64)> = None;
    // Batches that failed with a server error are retried one message at a time.
    let mut singly: VecDeque<u32> = VecDeque::new();

    // Connection failures charged to each message: one that breaks the connection every
    // time it is sent (a server-side fault) is reported after this many, not retried
    // until the whole backup gives up.
    const STRIKES: u32 = 2;
    let mut strikes: BTreeMap<u32, u32> = BTreeMap::new();
    let mut strike = |uid: u32,
                      e: &Error,
                      outcome: &mut BTreeMap<u32, std::result::Result<(), String>>|
     -> bool {
        let n = strikes.entry(uid).or_default();
        *n += 1;
        if *n >= STRIKES {
            outcome.insert(uid, Err(format!("the server fails while sending it: {e}")));
            true
        } else {
            false
        }
    };

    loop {
        if open.is_none() && big.is_empty() && small.is_empty() && singly.is_empty() {
            break;
        }
        let step = async {
            conn.get().await?;
            let gen_now = conn.generation();
            let s = conn.get().await?;
            if gen_now != selected_gen {
                let st = s.examine(&folder.wire).await?;
                if st.uid_validity != uid_validity {
                    return Err(Error::UidValidityChanged(folder.name.clone()));
                }
                selected_gen = gen_now;
            }
            if let Some((uid, offset)) = open {
                let meta = by_uid[&uid];
                let res = async {
                    let mut f = s.fetch_rest(uid, offset).await?;
                    let mut got_any = false;
                    while let Some(p) = f.next().await? {
                        if p.uid != uid {
                            continue;
                        }
                        got_any = true;
                        sink.part(folder, meta, p.offset, p.bytes())
                            .await
                            .map_err(Error::Sink)?;
                        let next = p.offset + p.bytes().len() as u64;
                        if p.last {
                            sink.done(folder, meta, next).await.map_err(Error::Sink)?;
                            outcome.insert(uid, Ok(()));
                            open = None;
                        } else {
                            open = Some((uid, next));
                        }
                    }
                    Ok::<_, Error>(got_any)
                }
                .await;
                return match res {
                    Ok(true) => Ok(true),
                    Ok(false) => {
                        // Not sent although the command succeeded: gone, or held back.
                        open = None;
                        if !s.fetch_meta(&uid.to_string()).await?.is_empty() {
                            outcome.insert(uid, Err("the server did not send it".into()));
                        }
                        Ok(true)
                    }
                    Err(Error::Server { text, .. }) => {
                        open = None;
                        outcome.insert(uid, Err(text));
                        Ok(true)
                    }
                    Err(e) => {
                        if e.is_retryable() && strike(uid, &e, &mut outcome) {
                            open = None;
                        }
                        Err(e)
                    }
                };
            }
            if let Some(uid) = big.pop_front() {
                open = Some((uid, 0));
                return Ok(false);
            }
            let (batch, one_by_one): (Vec<u32>, bool) = if let Some(uid) = singly.pop_front() {
                (vec![uid], true)
            } else {
                let n = small.len().min(ImapSession::BODIES_PER_FETCH);
                (small.drain(..n).collect(), false)
            };
            let mut pending: BTreeSet<u32> = batch.iter().copied().collect();
            let res = async {
                let mut f = s.fetch_bodies(&batch).await?;
                while let Some(p) = f.next().await? {
                    if !pending.contains(&p.uid) {
                        continue;
                    }
                    let meta = by_uid[&p.uid];
                    sink.part(folder, meta, p.offset, p.bytes())
                        .await
                        .map_err(Error::Sink)?;
                    pending.remove(&p.uid);
                    if p.last {
                        let len = p.bytes().len() as u64;
                        sink.done(folder, meta, len).await.map_err(Error::Sink)?;
                        outcome.insert(p.uid, Ok(()));
                    } else {
                        // Larger than its size said: again, alone (the sink drops this
                        // part when the message starts over at offset 0).
                        big.push_back(p.uid);
                    }
                }
                Ok::<_, Error>(())
            }
            .await;
            match res {
                Ok(()) if pending.is_empty() => Ok(true),
                Ok(()) if one_by_one => {
                    // Not sent although the command succeeded: gone, or held back.
                    let uid = batch[0];
                    if !s.fetch_meta(&uid.to_string()).await?.is_empty() {
                        outcome.insert(uid, Err("the server did not send it".into()));
                    }
                    Ok(true)
                }
                Ok(()) => {
                    singly.extend(pending.iter().copied());
                    Ok(true)
                }
                Err(Error::Server { text, .. }) if one_by_one => {
                    outcome.insert(batch[0], Err(text));
                    Ok(true)
                }
                Err(Error::Server { .. }) => {
                    singly.extend(pending.iter().copied());
                    Ok(true)
                }
                Err(e) => {
                    // The server sends in UID order: the first message not received is
                    // the one it failed on. The rest goes back to the front of the queue.
                    let first = pending.iter().next().copied();
                    if let Some(uid) = first.filter(|_| e.is_retryable()) {
                        if strike(uid, &e, &mut outcome) {
                            pending.remove(&uid);
                        }
                    }
                    for uid in pending.iter().rev() {
                        if one_by_one {
                            singly.push_front(*uid);
                        } else {
                            small.push_front(*uid);
                        }
                    }
                    Err(e)
                }
            }
        }
        .await;
        match step {
            Ok(progress) => {
                if progress {
                    retry.progress();
                }
            }
            Err(e) => retry.failed(conn, e).await?,
        }
    }
    Ok(Fetched { outcome })
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

    fn status(v: u32, next: u32, modseq: Option<u64>) -> FolderStatus {
        FolderStatus {
            uid_validity: v,
            uid_next: next,
            messages: 3,
            highest_modseq: modseq,
        }
    }

    fn cursor(v: u32, next: u32, modseq: Option<u64>) -> FolderCursor {
        FolderCursor {
            uid_validity: v,
            uid_next: next,
            highest_modseq: modseq,
            retry_uids: vec![],
        }
    }

    #[test]
    fn plans() {
        assert_eq!(plan_folder(None, &status(1, 5, Some(9))), FolderPlan::Full);
        let c = cursor(1, 5, Some(9));
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, Some(9))),
            FolderPlan::Unchanged
        );
        assert_eq!(
            plan_folder(Some(&c), &status(2, 5, Some(9))),
            FolderPlan::Full
        );
        assert_eq!(
            plan_folder(Some(&c), &status(1, 6, Some(12))),
            FolderPlan::Incremental {
                changed_since: Some(9)
            }
        );
        // A flag change moves only HIGHESTMODSEQ.
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, Some(10))),
            FolderPlan::Incremental {
                changed_since: Some(9)
            }
        );
        // Without CONDSTORE nothing can be known unchanged.
        let c = cursor(1, 5, None);
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, None)),
            FolderPlan::Incremental {
                changed_since: None
            }
        );
        // Messages to retry keep a folder from being skipped.
        let mut c = cursor(1, 5, Some(9));
        c.retry_uids = vec![3];
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, Some(9))),
            FolderPlan::Incremental {
                changed_since: Some(9)
            }
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let mut c = MailboxCursor::new();
        c.folders.insert("INBOX".into(), cursor(7, 42, Some(100)));
        let back = MailboxCursor::from_bytes(&c.to_bytes()).unwrap();
        assert_eq!(back, c);
        assert!(MailboxCursor::from_bytes(b"{").is_err());
        let mut other = c.clone();
        other.v = 99;
        let e = MailboxCursor::from_bytes(&other.to_bytes()).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
    }
}
