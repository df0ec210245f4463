//! One authenticated IMAP connection and the commands a backup and a restore need, each
//! bounded by the configured time-out. Folder names are passed and returned in their wire
//! form (modified UTF-7), which is what identifies a folder on its server.
//!
//! The session type and its command plumbing live here; the commands themselves are
//! grouped by what they are for, so that each stays readable next to the types it returns.

mod append;
mod fetch;
mod folders;
mod login;
mod messages;

pub use fetch::{BodyPart, BODY_PART};
pub use folders::{FolderInfo, FolderStatus, SpecialUse};
pub use login::{connect, Capabilities};
pub use messages::{Changes, MessageMeta};

use crate::error::{clip, read_failure, Error, Result};
use async_imap::imap_proto::{RequestId, Response, Status};
use async_imap::Session;
use login::Stream;
use std::future::Future;
use std::time::Duration;

async fn within<T>(timeout: Duration, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| Error::Timeout(timeout))
}

/// An authenticated connection.
pub struct ImapSession {
    inner: Session<Stream>,
    caps: Capabilities,
    timeout: Duration,
    /// A command was abandoned half way (time-out, drop, a message that could not be
    /// read): what the server sends next belongs to it, so nothing more can be asked.
    broken: bool,
}

fn quote(s: &str) -> Result<String> {
    if s.contains(['\r', '\n']) {
        return Err(Error::Invalid(format!(
            "a folder name cannot hold a line break: {s:?}"
        )));
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The longest UID set put in one command. RFC 7162 §4 asks clients to keep command lines
/// under 8,192 octets, and servers refuse longer ones (Dovecot answers BAD past its limit):
/// a set of a few thousand scattered UIDs would otherwise fail on every later run. What is
/// left for the verb and the items around the set is ample at 7,000.
pub const MAX_UID_SET: usize = 7_000;

/// Compresses sorted UIDs into an IMAP sequence set (`1:3,7,9:10`).
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut sets = uid_sets(uids, usize::MAX);
    sets.pop().unwrap_or_default()
}

/// Sorted UIDs as sequence sets of at most `max` bytes each (runs compressed as in
/// [`uid_set`]); an empty list gives no set.
pub(crate) fn uid_sets(uids: &[u32], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) && end < u32::MAX {
            i += 1;
            end = uids[i];
        }
        let piece = if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        };
        if !cur.is_empty() && cur.len() + 1 + piece.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        cur.push_str(&piece);
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads a sequence set of UIDs (no `*`) back into sorted UIDs.
///
/// # Errors
/// `Invalid` for anything else, or a range wider than `limit` UIDs in all.
pub(crate) fn parse_uid_set(s: &str, limit: usize) -> Result<Vec<u32>> {
    let bad = || Error::Invalid("a stored UID set is unreadable".into());
    let mut out = Vec::new();
    for piece in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match piece.split_once(':') {
            Some((a, b)) => (a, b),
            None => (piece, piece),
        };
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        let (a, b) = (a.min(b), a.max(b));
        if out.len() + (b - a) as usize >= limit {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl ImapSession {
    fn drain_unsolicited(&mut self) {
        while self.inner.unsolicited_responses.try_recv().is_ok() {}
    }

    /// Whether the session can take no more commands (see `broken`); open a new one.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts `command` and returns its tag.
    async fn start(&mut self, verb: &str, command: &str) -> Result<RequestId> {
        if self.broken {
            return Err(Error::ConnectionLost(format!(
                "{verb}: the connection was left mid-command by an earlier failure"
            )));
        }
        self.drain_unsolicited();
        within(self.timeout, self.inner.run_command(command))
            .await?
            .map_err(|e| Error::from_imap(verb, e))
    }

    /// Reads the next response and hands it to `f`. A time-out or a closed connection
    /// breaks the session.
    async fn next_response<T>(
        &mut self,
        verb: &str,
        f: impl FnOnce(&Response<'_>) -> T,
    ) -> Result<T> {
        let r = match within(self.timeout, self.inner.read_response()).await {
            Ok(Ok(Some(r))) => Ok(f(r.parsed())),
            Ok(Ok(None)) => Err(Error::ConnectionLost(format!(
                "the server closed the connection during {verb}"
            ))),
            Ok(Err(e)) => Err(read_failure(verb, &e)),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Reads responses until the command tagged `tag` completes, handing the untagged ones
    /// to `each`. The client's own stream helpers end quietly on a tagged NO, a BYE or a
    /// closed connection, which would make a cut-short listing look complete; here each of
    /// those is an error.
    async fn finish(
        &mut self,
        verb: &str,
        tag: &RequestId,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        loop {
            let step = self
                .next_response(verb, |r| {
                    let done = completion(verb, tag, r);
                    if done.is_none() {
                        each(r);
                    }
                    done
                })
                .await?;
            if let Some(done) = step {
                if matches!(done, Err(Error::ConnectionLost(_))) {
                    self.broken = true;
                }
                return done;
            }
        }
    }

    async fn run(
        &mut self,
        verb: &str,
        command: &str,
        each: impl FnMut(&Response<'_>),
    ) -> Result<()> {
        let tag = self.start(verb, command).await?;
        self.finish(verb, &tag, each).await
    }

    async fn simple(&mut self, verb: &str, command: &str) -> Result<()> {
        self.run(verb, command, |_| {}).await
    }
}

/// `Some` when `r` ends the command tagged `tag` (with its outcome) or the session (BYE).
fn completion(verb: &str, tag: &RequestId, r: &Response<'_>) -> Option<Result<()>> {
    match r {
        Response::Done {
            tag: t,
            status,
            outcome,
        } if t == tag => Some(match status {
            Status::Ok => Ok(()),
            _ => Err(Error::Server {
                command: verb.to_string(),
                text: clip(outcome.information.as_deref().unwrap_or("refused")),
            }),
        }),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Some(Err(Error::ConnectionLost(format!(
            "the server ended the session during {verb}: {}",
            clip(outcome.information.as_deref().unwrap_or("BYE"))
        )))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn scattered_uids_split_into_bounded_sets_that_read_back() {
        // 20,000 scattered UIDs: every other one, from a large UID.
        let uids: Vec<u32> = (0..20_000u32).map(|i| 4_000_000_000 + 2 * i).collect();
        let sets = uid_sets(&uids, MAX_UID_SET);
        assert!(sets.len() > 10, "{}", sets.len());
        let mut back = Vec::new();
        for s in &sets {
            assert!(s.len() <= MAX_UID_SET, "{}", s.len());
            back.extend(parse_uid_set(s, usize::MAX).unwrap());
        }
        assert_eq!(back, uids);
        assert_eq!(uid_sets(&[1, 2, 3, 5], 3), vec!["1:3", "5"]);
        assert!(uid_sets(&[], 10).is_empty());
        assert_eq!(parse_uid_set("1:3,7", 10).unwrap(), vec![1, 2, 3, 7]);
        assert!(parse_uid_set("1:*", 10).is_err());
        assert!(parse_uid_set("1:100", 10).is_err());
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote("a\"b\\c").unwrap(), "\"a\\\"b\\\\c\"");
        assert!(quote("a\r\nb").is_err());
    }
}
