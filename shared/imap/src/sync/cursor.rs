//! What a backup remembers about each folder between runs, and what it decides from that
//! and the folder's STATUS: skip it, read it whole, or read what changed.

use crate::conn::{parse_uid_set, uid_set, FolderStatus, MessageMeta};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Runs in which a message failed before it is given up: reported once as unrecoverable
/// and not asked for again while the folder keeps its UIDVALIDITY. Five daily runs ride
/// out a server's bad week; a message that fails every run for that long is broken on the
/// server, and asking for it for ever costs every later run (and, on Gmail, the day's
/// download allowance).
pub const MAX_FAILED_RUNS: u32 = 5;

/// The most UIDs a stored UID set may name: a set from a cursor that expands past this is
/// treated as unreadable (the folder is then listed again) rather than held in memory.
const MAX_SET_UIDS: usize = 10_000_000;

/// What a backup remembers about one folder to make the next one incremental.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderCursor {
    pub uid_validity: u32,
    pub uid_next: u32,
    /// `None` on servers without CONDSTORE.
    pub highest_modseq: Option<u64>,
    /// How many messages the folder held. On a server with CONDSTORE but not QRESYNC an
    /// expunge need not move HIGHESTMODSEQ or UIDNEXT: only the count tells. `None` in
    /// cursors of earlier builds (the folder is then read once more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u32>,
    /// Messages that could not be fetched, with the runs that failed on each; the next
    /// run tries them again although they are below `uid_next`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<u32, u32>,
    /// Messages given up after [`MAX_FAILED_RUNS`], as a UID set: never asked for again
    /// under this UIDVALIDITY.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub given_up: String,
    /// Messages listed but not fetched yet when a run stopped inside the folder (out of
    /// time, or the connection gone), as a UID set: the next run fetches these first.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pending: String,
    /// Earlier builds' form of `retries` (each counted as one failed run); read, never
    /// written.
    #[serde(default, rename = "retry_uids", skip_serializing)]
    legacy_retry_uids: Vec<u32>,
}

impl FolderCursor {
    pub fn new(status: &FolderStatus) -> Self {
        FolderCursor {
            uid_validity: status.uid_validity,
            uid_next: status.uid_next,
            highest_modseq: status.highest_modseq,
            messages: Some(status.messages),
            ..Default::default()
        }
    }

    /// UIDs given up on.
    pub fn given_up_uids(&self) -> Vec<u32> {
        parse_uid_set(&self.given_up, MAX_SET_UIDS).unwrap_or_default()
    }

    /// UIDs still to fetch after a run that stopped inside the folder.
    pub fn pending_uids(&self) -> Vec<u32> {
        parse_uid_set(&self.pending, MAX_SET_UIDS).unwrap_or_default()
    }

    pub(crate) fn set_given_up(&mut self, uids: &[u32]) {
        self.given_up = uid_set(uids);
    }

    pub(crate) fn set_pending(&mut self, uids: &[u32]) {
        self.pending = uid_set(uids);
    }

    /// Whether the folder's messages should be in the tree: it held more when it was read
    /// than were left unstored (to retry, given up, not reached). A tree without them was
    /// lost (a first backup after a lost snapshot), and the cursor cannot be trusted; a
    /// folder whose every message failed keeps its cursor, so that its retries are
    /// counted and end.
    pub fn expects_stored(&self) -> bool {
        match self.messages {
            Some(n) => {
                let unstored =
                    self.retries.len() + self.given_up_uids().len() + self.pending_uids().len();
                n as usize > unstored
            }
            // A cursor of an earlier build: only UIDNEXT tells the folder held anything.
            None => self.uid_next > 1,
        }
    }

    /// Whether the cursor leaves work for the next run even where nothing changed.
    fn has_work(&self) -> bool {
        !self.retries.is_empty() || !self.pending.is_empty()
    }

    fn normalise(&mut self) {
        for uid in std::mem::take(&mut self.legacy_retry_uids) {
            self.retries.entry(uid).or_insert(1);
        }
    }
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
        let mut c: MailboxCursor = serde_json::from_slice(b).map_err(|e| {
            // The position, never the text: a cursor holds nothing private, but stays
            // small in an error either way.
            Error::Invalid(format!(
                "the IMAP cursor is unreadable (at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if c.v != Self::VERSION {
            return Err(Error::Invalid(format!(
                "the IMAP cursor has version {}, this build reads {}",
                c.v,
                Self::VERSION
            )));
        }
        for f in c.folders.values_mut() {
            f.normalise();
        }
        Ok(c)
    }
}

/// What to do with a folder, from its cursor and its STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderPlan {
    /// Same UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and message count, nothing to retry or
    /// finish: nothing changed.
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
    if modseq_same
        && prev.uid_next == now.uid_next
        && prev.messages == Some(now.messages)
        && !prev.has_work()
    {
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
    /// The UIDVALIDITY under which `messages` were stored, when known without the cursor:
    /// a folder whose cursor was lost (a damaged snapshot, a cursor of another build) but
    /// whose UIDVALIDITY is unchanged keeps what it holds instead of reading it all again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_validity: Option<u32>,
}

impl FolderState {
    /// The plan for this folder given its state now: as [`plan_folder`], except that a
    /// folder without a cursor whose messages are held under the same UIDVALIDITY is
    /// compared message by message rather than read whole.
    pub fn plan(&self, now: &FolderStatus) -> FolderPlan {
        let plan = plan_folder(self.cursor.as_ref(), now);
        if plan == FolderPlan::Full
            && self.cursor.is_none()
            && !self.messages.is_empty()
            && self.held_validity == Some(now.uid_validity)
        {
            return FolderPlan::Incremental {
                changed_since: None,
            };
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            messages: Some(3),
            ..Default::default()
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
        // An expunge on a CONDSTORE-only server may move only the count.
        let mut fewer = status(1, 5, Some(9));
        fewer.messages = 2;
        assert_eq!(
            plan_folder(Some(&c), &fewer),
            FolderPlan::Incremental {
                changed_since: Some(9)
            }
        );
        // A cursor of an earlier build has no count: the folder is read once more.
        let mut old = c.clone();
        old.messages = None;
        assert_ne!(
            plan_folder(Some(&old), &status(1, 5, Some(9))),
            FolderPlan::Unchanged
        );
        // Without CONDSTORE nothing can be known unchanged.
        let c = cursor(1, 5, None);
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, None)),
            FolderPlan::Incremental {
                changed_since: None
            }
        );
        // Messages to retry, or left over by a paused run, keep a folder from being skipped.
        let mut c = cursor(1, 5, Some(9));
        c.retries.insert(3, 1);
        assert!(matches!(
            plan_folder(Some(&c), &status(1, 5, Some(9))),
            FolderPlan::Incremental { .. }
        ));
        let mut c = cursor(1, 5, Some(9));
        c.set_pending(&[2, 3]);
        assert!(matches!(
            plan_folder(Some(&c), &status(1, 5, Some(9))),
            FolderPlan::Incremental { .. }
        ));
        // Given-up messages do not.
        let mut c = cursor(1, 5, Some(9));
        c.set_given_up(&[2]);
        assert_eq!(
            plan_folder(Some(&c), &status(1, 5, Some(9))),
            FolderPlan::Unchanged
        );
    }

    #[test]
    fn a_cursor_expects_stored_messages_unless_none_could_be_stored() {
        let mut c = cursor(1, 5, Some(9));
        assert!(c.expects_stored());
        c.retries.insert(2, 1);
        c.set_given_up(&[3]);
        assert!(c.expects_stored());
        c.set_pending(&[4]);
        assert!(!c.expects_stored(), "all three unstored");
        c.messages = Some(0);
        c.retries.clear();
        c.set_given_up(&[]);
        c.set_pending(&[]);
        assert!(!c.expects_stored(), "an empty folder");
        c.messages = None;
        assert!(
            c.expects_stored(),
            "an earlier build's cursor after messages came"
        );
        c.uid_next = 1;
        assert!(!c.expects_stored());
    }

    #[test]
    fn a_lost_cursor_keeps_what_the_tree_holds_under_the_same_uidvalidity() {
        let mut st = FolderState::default();
        st.messages.insert(
            1,
            MessageMeta {
                uid: 1,
                flags: vec![],
                internal_date: None,
                size: Some(3),
                modseq: None,
                gm_msgid: None,
                gm_labels: vec![],
            },
        );
        st.held_validity = Some(7);
        assert_eq!(
            st.plan(&status(7, 5, Some(9))),
            FolderPlan::Incremental {
                changed_since: None
            }
        );
        assert_eq!(st.plan(&status(8, 5, Some(9))), FolderPlan::Full);
    }

    #[test]
    fn cursors_round_trip_read_earlier_builds_and_refuse_garbage() {
        let mut c = MailboxCursor::new();
        let mut f = cursor(7, 42, Some(100));
        f.retries.insert(5, 2);
        f.set_given_up(&[1, 2, 3, 9]);
        f.set_pending(&[40, 41]);
        c.folders.insert("INBOX".into(), f);
        let back = MailboxCursor::from_bytes(&c.to_bytes()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.folders["INBOX"].given_up_uids(), vec![1, 2, 3, 9]);
        assert_eq!(back.folders["INBOX"].pending_uids(), vec![40, 41]);
        let old = br#"{"v":1,"folders":{"INBOX":{"uid_validity":7,"uid_next":42,"highest_modseq":null,"retry_uids":[4,6]}}}"#;
        let back = MailboxCursor::from_bytes(old).unwrap();
        let f = &back.folders["INBOX"];
        assert_eq!(f.retries, BTreeMap::from([(4, 1), (6, 1)]));
        assert_eq!(f.messages, None);
        assert!(!String::from_utf8(back.to_bytes())
            .unwrap()
            .contains("retry_uids"));
        assert!(MailboxCursor::from_bytes(b"{").is_err());
        let mut other = c.clone();
        other.v = 99;
        let e = MailboxCursor::from_bytes(&other.to_bytes()).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
    }
}
