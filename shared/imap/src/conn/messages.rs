//! What a backup keeps about messages besides their bytes: their metadata, the changes since
//! a mod-sequence (CONDSTORE/QRESYNC), the UIDs a folder holds, and flag changes.

use super::{uid_sets, ImapSession, MAX_UID_SET};
use crate::error::{Error, Result};
use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a backup keeps about a message besides its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub uid: u32,
    /// System flags and keywords, sorted; `\Recent` is left out (it is per session and
    /// cannot be restored).
    pub flags: Vec<String>,
    pub internal_date: Option<DateTime<FixedOffset>>,
    pub size: Option<u32>,
    pub modseq: Option<u64>,
    /// Gmail's message id: the same message under every label.
    pub gm_msgid: Option<u64>,
    /// Gmail's labels, decoded; system labels keep their backslash (`\Important`).
    pub gm_labels: Vec<String>,
}

/// One FETCH response's metadata, each field present only when the response carried it. A
/// server may split one message's data over several FETCH responses (RFC 3501 §7.4.2), or
/// repeat one when a flag changes meanwhile: the pieces are merged field by field, a later
/// value replacing an earlier one, so that no response's fields are lost to another's.
#[derive(Default)]
pub(crate) struct MetaPiece {
    uid: Option<u32>,
    flags: Option<Vec<String>>,
    internal_date: Option<DateTime<FixedOffset>>,
    size: Option<u32>,
    modseq: Option<u64>,
    gm_msgid: Option<u64>,
    gm_labels: Option<Vec<String>>,
}

impl MetaPiece {
    fn from_attrs(attrs: &[AttributeValue<'_>]) -> MetaPiece {
        let mut m = MetaPiece::default();
        for a in attrs {
            match a {
                AttributeValue::Uid(u) => m.uid = Some(*u),
                AttributeValue::Flags(fs) => {
                    let mut f: Vec<String> = fs
                        .iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .map(|f| f.to_string())
                        .collect();
                    f.sort();
                    f.dedup();
                    m.flags = Some(f);
                }
                AttributeValue::InternalDate(d) => m.internal_date = parse_internal_date(d),
                AttributeValue::Rfc822Size(n) => m.size = Some(*n),
                AttributeValue::ModSeq(v) => m.modseq = Some(*v),
                AttributeValue::GmailMsgId(v) => m.gm_msgid = Some(*v),
                AttributeValue::GmailLabels(ls) => {
                    m.gm_labels = Some(crate::gmail::decode_labels(ls.iter().map(|l| l.as_ref())))
                }
                _ => {}
            }
        }
        m
    }

    fn merge(&mut self, later: MetaPiece) {
        fn take<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        take(&mut self.flags, later.flags);
        take(&mut self.internal_date, later.internal_date);
        take(&mut self.size, later.size);
        take(&mut self.modseq, later.modseq);
        take(&mut self.gm_msgid, later.gm_msgid);
        take(&mut self.gm_labels, later.gm_labels);
    }

    fn finish(self, uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: self.flags.unwrap_or_default(),
            internal_date: self.internal_date,
            size: self.size,
            modseq: self.modseq,
            gm_msgid: self.gm_msgid,
            gm_labels: self.gm_labels.unwrap_or_default(),
        }
    }
}

/// Metadata pieces of one command, merged per UID; FETCH responses without a UID (about
/// messages not asked for) are left out.
#[derive(Default)]
pub(crate) struct MetaMerge(BTreeMap<u32, MetaPiece>);

impl MetaMerge {
    pub(crate) fn add(&mut self, attrs: &[AttributeValue<'_>]) {
        let piece = MetaPiece::from_attrs(attrs);
        let Some(uid) = piece.uid else { return };
        match self.0.get_mut(&uid) {
            Some(m) => m.merge(piece),
            None => {
                self.0.insert(uid, piece);
            }
        }
    }

    /// In UID order.
    pub(crate) fn finish(self) -> Vec<MessageMeta> {
        self.0.into_iter().map(|(u, p)| p.finish(u)).collect()
    }
}

/// IMAP's `date-time` (`" 2-Jan-2024 11:00:05 +0000"`; the day may be space-padded).
pub(crate) fn parse_internal_date(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok()
}

/// What changed in the selected folder since a mod-sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Messages whose flags changed, or that are new, with their new flags and MODSEQ.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged since (QRESYNC only; `None` when the server cannot say).
    pub vanished: Option<Vec<u32>>,
}

/// Expands a VANISHED list of ranges.
fn expand(ranges: &[std::ops::RangeInclusive<u32>], out: &mut Vec<u32>) {
    for r in ranges {
        out.extend(r.clone());
    }
}

impl ImapSession {
    fn meta_items(&self) -> String {
        let mut items = String::from("(UID FLAGS INTERNALDATE RFC822.SIZE");
        if self.caps.condstore() {
            items.push_str(" MODSEQ");
        }
        if self.caps.gmail() {
            items.push_str(" X-GM-MSGID X-GM-LABELS");
        }
        items.push(')');
        items
    }

    /// Metadata of the messages of the selected folder in `set` (a UID set such as `1:*`).
    pub async fn fetch_meta(&mut self, set: &str) -> Result<Vec<MessageMeta>> {
        let items = self.meta_items();
        self.collect_meta(set, &items).await
    }

    /// Metadata of the messages with these UIDs (sorted), asked for in commands of
    /// bounded length. UIDs the folder no longer has are left out.
    pub async fn fetch_meta_of(&mut self, uids: &[u32]) -> Result<Vec<MessageMeta>> {
        let items = self.meta_items();
        let mut out = Vec::new();
        for set in uid_sets(uids, MAX_UID_SET) {
            out.extend(self.collect_meta(&set, &items).await?);
        }
        Ok(out)
    }

    async fn collect_meta(&mut self, set: &str, items: &str) -> Result<Vec<MessageMeta>> {
        let mut merged = MetaMerge::default();
        self.run("UID FETCH", &format!("UID FETCH {set} {items}"), |r| {
            if let Response::Fetch(_, attrs) = r {
                merged.add(attrs);
            }
        })
        .await?;
        Ok(merged.finish())
    }

    /// Flag changes, new messages and (with QRESYNC) expunges in the selected folder since
    /// `modseq`.
    ///
    /// # Errors
    /// `Unsupported` without CONDSTORE.
    pub async fn changes_since(&mut self, modseq: u64) -> Result<Changes> {
        self.changes_since_in("1:*", modseq).await
    }

    /// As [`ImapSession::changes_since`], for the UIDs in `set` only (a range such as
    /// `5001:10000`): a large folder's changes are then asked for piece by piece. With
    /// QRESYNC the expunges reported are those within `set` (RFC 7162 §3.2.6).
    ///
    /// # Errors
    /// `Unsupported` without CONDSTORE.
    pub async fn changes_since_in(&mut self, set: &str, modseq: u64) -> Result<Changes> {
        if !self.caps.condstore() {
            return Err(Error::Unsupported("CONDSTORE".into()));
        }
        let qresync = self.caps.qresync();
        let mut items = self.meta_items();
        if qresync {
            items.push_str(&format!(" (CHANGEDSINCE {modseq} VANISHED)"));
        } else {
            items.push_str(&format!(" (CHANGEDSINCE {modseq})"));
        }
        let mut changed = MetaMerge::default();
        let mut vanished = Vec::new();
        self.run(
            "UID FETCH",
            &format!("UID FETCH {set} {items}"),
            |r| match r {
                Response::Fetch(_, attrs) => changed.add(attrs),
                Response::Vanished { uids, .. } => expand(uids, &mut vanished),
                _ => {}
            },
        )
        .await?;
        let changed = changed.finish();
        vanished.sort_unstable();
        vanished.dedup();
        Ok(Changes {
            changed,
            vanished: qresync.then_some(vanished),
        })
    }

    /// Every UID in the selected folder.
    pub async fn uids(&mut self) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        self.run("UID SEARCH", "UID SEARCH ALL", |r| {
            if let Response::MailboxData(MailboxDatum::Search(ids)) = r {
                v.extend_from_slice(ids);
            }
        })
        .await?;
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Sets flags on messages of the selected folder (`+FLAGS`, `-FLAGS` or `FLAGS`).
    pub async fn store_flags(&mut self, uids: &[u32], op: &str, flags: &[&str]) -> Result<()> {
        for set in uid_sets(uids, MAX_UID_SET) {
            let cmd = format!("UID STORE {set} {op}.SILENT ({})", flags.join(" "));
            self.simple("UID STORE", &cmd).await?;
        }
        Ok(())
    }

    /// Removes messages marked `\Deleted` from the selected folder.
    pub async fn expunge(&mut self) -> Result<()> {
        self.simple("EXPUNGE", "EXPUNGE").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn split_and_repeated_fetch_responses_merge_field_by_field() {
        let mut m = MetaMerge::default();
        m.add(&[
            AttributeValue::Uid(7),
            AttributeValue::Rfc822Size(120),
            AttributeValue::Flags(vec![Cow::Borrowed("\\Seen")]),
        ]);
        // A second response with the date only: size and flags stay.
        m.add(&[
            AttributeValue::Uid(7),
            AttributeValue::InternalDate(Cow::Borrowed("02-Jan-2024 11:00:05 +0000")),
        ]);
        // A flag change meanwhile: the later flags win.
        m.add(&[
            AttributeValue::Flags(vec![Cow::Borrowed("\\Flagged"), Cow::Borrowed("\\Recent")]),
            AttributeValue::Uid(7),
        ]);
        // Without a UID: not about a message asked for.
        m.add(&[AttributeValue::Rfc822Size(1)]);
        m.add(&[AttributeValue::Uid(3), AttributeValue::Rfc822Size(9)]);
        let got = m.finish();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].uid, 3);
        let seven = &got[1];
        assert_eq!(seven.size, Some(120));
        assert_eq!(seven.flags, vec!["\\Flagged".to_string()]);
        assert!(seven.internal_date.is_some());
    }
}
