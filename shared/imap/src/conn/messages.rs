//! What a backup keeps about messages besides their bytes: their metadata, the changes since
//! a mod-sequence (CONDSTORE/QRESYNC), the UIDs a folder holds, and flag changes.

use super::{uid_set, ImapSession};
use crate::error::{Error, Result};
use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

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

impl MessageMeta {
    /// Reads a FETCH response's attributes; `None` without a UID (an unsolicited FETCH).
    pub(crate) fn from_attrs(attrs: &[AttributeValue<'_>]) -> Option<MessageMeta> {
        let mut m = MessageMeta {
            uid: 0,
            flags: Vec::new(),
            internal_date: None,
            size: None,
            modseq: None,
            gm_msgid: None,
            gm_labels: Vec::new(),
        };
        let mut uid = None;
        for a in attrs {
            match a {
                AttributeValue::Uid(u) => uid = Some(*u),
                AttributeValue::Flags(fs) => {
                    m.flags = fs
                        .iter()
                        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                        .map(|f| f.to_string())
                        .collect()
                }
                AttributeValue::InternalDate(d) => m.internal_date = parse_internal_date(d),
                AttributeValue::Rfc822Size(n) => m.size = Some(*n),
                AttributeValue::ModSeq(v) => m.modseq = Some(*v),
                AttributeValue::GmailMsgId(v) => m.gm_msgid = Some(*v),
                AttributeValue::GmailLabels(ls) => {
                    m.gm_labels = crate::gmail::decode_labels(ls.iter().map(|l| l.as_ref()))
                }
                _ => {}
            }
        }
        m.uid = uid?;
        m.flags.sort();
        m.flags.dedup();
        Some(m)
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

    async fn collect_meta(&mut self, set: &str, items: &str) -> Result<Vec<MessageMeta>> {
        let mut out = Vec::new();
        self.run("UID FETCH", &format!("UID FETCH {set} {items}"), |r| {
            if let Response::Fetch(_, attrs) = r {
                if let Some(m) = MessageMeta::from_attrs(attrs) {
                    out.push(m);
                }
            }
        })
        .await?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    /// Flag changes, new messages and (with QRESYNC) expunges in the selected folder since
    /// `modseq`.
    ///
    /// # Errors
    /// `Unsupported` without CONDSTORE.
    pub async fn changes_since(&mut self, modseq: u64) -> Result<Changes> {
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
        let mut changed = Vec::new();
        let mut vanished = Vec::new();
        self.run(
            "UID FETCH",
            &format!("UID FETCH 1:* {items}"),
            |r| match r {
                Response::Fetch(_, attrs) => {
                    if let Some(m) = MessageMeta::from_attrs(attrs) {
                        changed.push(m);
                    }
                }
                Response::Vanished { uids, .. } => expand(uids, &mut vanished),
                _ => {}
            },
        )
        .await?;
        changed.sort_by_key(|m| m.uid);
        changed.dedup_by_key(|m| m.uid);
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
        let cmd = format!(
            "UID STORE {} {op}.SILENT ({})",
            uid_set(uids),
            flags.join(" ")
        );
        self.simple("UID STORE", &cmd).await
    }

    /// Removes messages marked `\Deleted` from the selected folder.
    pub async fn expunge(&mut self) -> Result<()> {
        self.simple("EXPUNGE", "EXPUNGE").await
    }
}
