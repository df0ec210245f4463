//! Message bodies in parts of at most [`BODY_PART`] bytes: the client buffers a response
//! whole, so this is what bounds memory; a message cut short (a dropped connection) resumes
//! from the offset it reached with [`ImapSession::fetch_rest`].

use super::{completion, uid_set, ImapSession};
use crate::error::{Error, Result};
use async_imap::imap_proto::{AttributeValue, RequestId, Response};

/// The largest piece of a message body asked for in one response, and so the most of one
/// message held in memory: the client buffers a response whole. Messages up to this size
/// (nearly all mail) come in one response; a 30 MiB one in eight.
pub const BODY_PART: u32 = 4 * 1024 * 1024;

/// How many messages are asked for in one UID FETCH of bodies: enough to hide the round
/// trip, few enough that a dropped connection wastes little.
const BODIES_PER_FETCH: usize = 32;

/// One piece of a message body, as the server sent it.
pub struct BodyPart {
    pub uid: u32,
    /// Where in the message these bytes start.
    pub offset: u64,
    /// The message ends with this part (it came back shorter than asked).
    pub last: bool,
    /// Why these bytes cannot be the message's: the server sent NIL instead of a body, or
    /// a part that starts elsewhere than asked. Such a part is a failure to try again,
    /// never content.
    pub fault: Option<&'static str>,
    data: Vec<u8>,
}

impl BodyPart {
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl ImapSession {
    /// Starts fetching the bodies of `uids` from their first byte, [`BODY_PART`] bytes each
    /// at most. A message whose first part is not `last` continues with
    /// [`ImapSession::fetch_rest`]. UIDs that no longer exist are left out by the server.
    pub async fn fetch_bodies(&mut self, uids: &[u32]) -> Result<BodyFetch<'_>> {
        self.start_body_fetch(uids, 0).await
    }

    /// The part of one message's body from `offset` on.
    pub async fn fetch_rest(&mut self, uid: u32, offset: u64) -> Result<BodyFetch<'_>> {
        self.start_body_fetch(&[uid], offset).await
    }

    async fn start_body_fetch(&mut self, uids: &[u32], offset: u64) -> Result<BodyFetch<'_>> {
        let set = uid_set(uids);
        let tag = self
            .start(
                "UID FETCH",
                &format!("UID FETCH {set} (UID BODY.PEEK[]<{offset}.{BODY_PART}>)"),
            )
            .await?;
        Ok(BodyFetch {
            session: self,
            tag,
            offset,
            done: false,
        })
    }

    /// How many bodies to ask for in one [`ImapSession::fetch_bodies`].
    pub const BODIES_PER_FETCH: usize = BODIES_PER_FETCH;
}

/// A UID, body bytes and what is wrong with them, out of one FETCH response.
type UidBody = (u32, Vec<u8>, Option<&'static str>);

/// Body parts as they arrive. Dropping it before the end leaves responses unread: the
/// session must then be dropped too (the sync does so on any error).
pub struct BodyFetch<'a> {
    session: &'a mut ImapSession,
    tag: RequestId,
    offset: u64,
    done: bool,
}

impl BodyFetch<'_> {
    /// The next part, `None` when the command has completed.
    ///
    /// # Errors
    /// `Server` when the server refuses the command, `ConnectionLost` on BYE or a closed
    /// connection, `Timeout` when it goes silent.
    pub async fn next(&mut self) -> Result<Option<BodyPart>> {
        while !self.done {
            let tag = &self.tag;
            let asked = self.offset;
            let step = self
                .session
                .next_response("UID FETCH", |r| -> Option<Result<Option<UidBody>>> {
                    if let Some(done) = completion("UID FETCH", tag, r) {
                        return Some(done.map(|()| None));
                    }
                    // Unsolicited FETCH responses (a flag changed meanwhile) carry no body.
                    let Response::Fetch(_, attrs) = r else {
                        return None;
                    };
                    let mut uid = None;
                    let mut body = None;
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::BodySection {
                                section: None,
                                index,
                                data,
                            } => {
                                // The origin is echoed as `BODY[]<offset>`; a server may
                                // leave it out of a part from the first byte.
                                let fault = match (data, index) {
                                    (None, _) => Some("the server sent NIL instead of its body"),
                                    (_, Some(i)) if u64::from(*i) != asked => {
                                        Some("the server sent a part from another offset")
                                    }
                                    (_, None) if asked != 0 => {
                                        Some("the server sent a part without its offset")
                                    }
                                    _ => None,
                                };
                                let bytes = if fault.is_some() {
                                    Vec::new()
                                } else {
                                    data.as_deref().unwrap_or(&[]).to_vec()
                                };
                                body = Some((bytes, fault));
                            }
                            _ => {}
                        }
                    }
                    match (uid, body) {
                        (Some(uid), Some((data, fault))) => Some(Ok(Some((uid, data, fault)))),
                        _ => None,
                    }
                })
                .await?;
            match step {
                None => continue,
                Some(Ok(None)) => {
                    self.done = true;
                }
                Some(Err(e)) => {
                    self.done = true;
                    if matches!(e, Error::ConnectionLost(_)) {
                        self.session.broken = true;
                    }
                    return Err(e);
                }
                Some(Ok(Some((uid, data, fault)))) => {
                    return Ok(Some(BodyPart {
                        uid,
                        offset: self.offset,
                        last: fault.is_some() || data.len() < BODY_PART as usize,
                        fault,
                        data,
                    }));
                }
            }
        }
        Ok(None)
    }
}

impl Drop for BodyFetch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.session.broken = true;
        }
    }
}
