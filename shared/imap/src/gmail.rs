//! Gmail over IMAP. Gmail's folders are labels: one message under three labels shows in
//! three folders and in `[Gmail]/All Mail`. Backing up every folder would fetch it four
//! times, so on a server with `X-GM-EXT-1` a backup reads All Mail (plus Trash and Spam,
//! which All Mail leaves out, and Chats), stores each message once under its `X-GM-MSGID`,
//! and keeps its `X-GM-LABELS` as metadata. Restoring by label then means APPENDing into
//! the label's folder.

use crate::conn::{FolderInfo, SpecialUse};
use crate::mutf7;

/// Decodes labels as `X-GM-LABELS` gives them: user labels in modified UTF-7, system
/// labels (`\Inbox`, `\Important`, `\Sent`, …) with a backslash. A label that does not
/// decode is kept as sent; the result is sorted, without repeats.
pub fn decode_labels<'a>(raw: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = raw
        .map(|l| {
            if l.starts_with('\\') {
                l.to_string()
            } else {
                mutf7::decode(l).unwrap_or_else(|_| l.to_string())
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn is_chats(f: &FolderInfo) -> bool {
    let segs = f.segments();
    // "[Google Mail]" in the UK and Germany.
    segs.len() == 2 && (segs[0] == "[Gmail]" || segs[0] == "[Google Mail]") && segs[1] == "Chats"
}

/// The folders a backup reads. Any IMAP server: every selectable folder. Gmail: All Mail,
/// Trash, Spam and Chats, unless All Mail is hidden from IMAP (a Gmail setting), in which
/// case every folder is read and the vault's content addressing stores repeats once.
pub fn folders_to_back_up(folders: &[FolderInfo], gmail: bool) -> Vec<FolderInfo> {
    let selectable = folders.iter().filter(|f| f.selectable);
    if gmail
        && folders
            .iter()
            .any(|f| f.special_use == Some(SpecialUse::All))
    {
        return selectable
            .filter(|f| {
                matches!(
                    f.special_use,
                    Some(SpecialUse::All | SpecialUse::Trash | SpecialUse::Junk)
                ) || is_chats(f)
            })
            .cloned()
            .collect();
    }
    selectable.cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_imap::imap_proto::{AttributeValue, Response};

    fn folder(wire: &str, special: Option<SpecialUse>, selectable: bool) -> FolderInfo {
        FolderInfo {
            wire: wire.into(),
            name: mutf7::decode(wire).unwrap(),
            delimiter: Some("/".into()),
            special_use: special,
            selectable,
        }
    }

    /// A FETCH response as Gmail documents it, parsed by the same parser the client uses.
    #[test]
    fn parses_gmail_fetch_attributes() {
        let line = b"* 1 FETCH (X-GM-MSGID 1278455344230334865 UID 4 X-GM-LABELS (\\Inbox \\Sent Important \"Muy Importante\" \"&AOk-t&AOk-\") FLAGS (\\Seen))\r\n";
        let (rest, resp) = Response::parse(line).expect("parses");
        assert!(rest.is_empty());
        let Response::Fetch(_, attrs) = resp else {
            panic!("not a FETCH: {resp:?}")
        };
        let mut msgid = None;
        let mut labels = Vec::new();
        for a in &attrs {
            match a {
                AttributeValue::GmailMsgId(id) => msgid = Some(*id),
                AttributeValue::GmailLabels(ls) => {
                    labels = decode_labels(ls.iter().map(|l| l.as_ref()))
                }
                _ => {}
            }
        }
        assert_eq!(msgid, Some(1278455344230334865));
        assert_eq!(
            labels,
            vec!["Important", "Muy Importante", "\\Inbox", "\\Sent", "été"]
        );
    }

    #[test]
    fn undecodable_labels_are_kept_as_sent() {
        assert_eq!(
            decode_labels(["&bad", "a", "a"].into_iter()),
            vec!["&bad", "a"]
        );
    }

    #[test]
    fn gmail_reads_all_mail_trash_spam_and_chats_only() {
        let folders = vec![
            folder("INBOX", None, true),
            folder("Work", None, true),
            folder("[Gmail]", None, false),
            folder("[Gmail]/All Mail", Some(SpecialUse::All), true),
            folder("[Gmail]/Sent Mail", Some(SpecialUse::Sent), true),
            folder("[Gmail]/Spam", Some(SpecialUse::Junk), true),
            folder("[Gmail]/Trash", Some(SpecialUse::Trash), true),
            folder("[Gmail]/Chats", None, true),
        ];
        let picked: Vec<String> = folders_to_back_up(&folders, true)
            .into_iter()
            .map(|f| f.wire)
            .collect();
        assert_eq!(
            picked,
            vec![
                "[Gmail]/All Mail",
                "[Gmail]/Spam",
                "[Gmail]/Trash",
                "[Gmail]/Chats"
            ]
        );
        // Any other server, or Gmail with All Mail hidden: every selectable folder.
        assert_eq!(folders_to_back_up(&folders, false).len(), 7);
        let hidden: Vec<FolderInfo> = folders
            .iter()
            .filter(|f| f.special_use != Some(SpecialUse::All))
            .cloned()
            .collect();
        assert_eq!(folders_to_back_up(&hidden, true).len(), 6);
    }
}
