//! The second half of a folder's sync: the bodies of new messages, many small ones to a
//! command and large ones part by part, resuming where a drop left off, checked before they
//! are handed on, and stopping between batches when the run's time is up.

use super::{Connection, MessageSink, Retry};
use crate::conn::{FolderInfo, ImapSession, MessageMeta, BODY_PART};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub(super) struct Fetched {
    /// Per UID asked for: fetched, or why not. UIDs the server no longer has, and those
    /// not reached before a stop, are absent.
    pub outcome: BTreeMap<u32, std::result::Result<(), String>>,
    /// The sink asked to stop: UIDs without an outcome were not reached.
    pub paused: bool,
    /// The connection failed for good after something was fetched: UIDs without an
    /// outcome were not reached.
    pub stopped: Option<String>,
}

/// Why a body that ended at `total` bytes cannot be the whole message, if it cannot: an
/// empty body, or fewer bytes than the server's own RFC822.SIZE (a truncated transfer or a
/// server fault). Such a message is tried again in a later run, never stored.
fn incomplete(meta: &MessageMeta, total: u64) -> Option<String> {
    if total == 0 {
        return Some("the server sent an empty body".into());
    }
    match meta.size {
        Some(sz) if total < u64::from(sz) => Some(format!(
            "the server sent {total} of the {sz} bytes it announced"
        )),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch_bodies<S: MessageSink>(
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
    let mut paused = false;
    let mut stopped = None;

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
        // Between batches (never inside a message): the run's time may be up.
        if open.is_none() && sink.should_pause() {
            paused = true;
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
                        // One part was asked for: a repeat of it is not more of the body.
                        if p.uid != uid || got_any {
                            continue;
                        }
                        got_any = true;
                        let next = p.offset + p.bytes().len() as u64;
                        let fault = p
                            .fault
                            .map(String::from)
                            .or_else(|| p.last.then(|| incomplete(meta, next)).flatten());
                        if let Some(why) = fault {
                            outcome.insert(uid, Err(why));
                            open = None;
                            continue;
                        }
                        sink.part(folder, meta, p.offset, p.bytes())
                            .await
                            .map_err(Error::Sink)?;
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
                        if !s.fetch_meta_of(&[uid]).await?.is_empty() {
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
                    // A UID not asked for, or a repeat of one already received.
                    if !pending.remove(&p.uid) {
                        continue;
                    }
                    let meta = by_uid[&p.uid];
                    let total = p.offset + p.bytes().len() as u64;
                    let fault = p
                        .fault
                        .map(String::from)
                        .or_else(|| p.last.then(|| incomplete(meta, total)).flatten());
                    if let Some(why) = fault {
                        outcome.insert(p.uid, Err(why));
                        continue;
                    }
                    sink.part(folder, meta, p.offset, p.bytes())
                        .await
                        .map_err(Error::Sink)?;
                    if p.last {
                        sink.done(folder, meta, total).await.map_err(Error::Sink)?;
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
                    if !s.fetch_meta_of(&[uid]).await?.is_empty() {
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
            Err(e) => {
                if let Err(e) = retry.failed(conn, e).await {
                    // Gone for good, but not before something was fetched: keep that.
                    if e.is_retryable() && outcome.values().any(|o| o.is_ok()) {
                        stopped = Some(e.to_string());
                        break;
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(Fetched {
        outcome,
        paused,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_short_bodies_are_incomplete() {
        let mut m = MessageMeta {
            uid: 1,
            flags: vec![],
            internal_date: None,
            size: Some(100),
            modseq: None,
            gm_msgid: None,
            gm_labels: vec![],
        };
        assert!(incomplete(&m, 0).is_some());
        assert!(incomplete(&m, 99).unwrap().contains("99 of the 100"));
        assert!(incomplete(&m, 100).is_none());
        // Longer than announced is the server's size being off, not a cut.
        assert!(incomplete(&m, 101).is_none());
        m.size = None;
        assert!(incomplete(&m, 0).is_some());
        assert!(incomplete(&m, 1).is_none());
    }
}
