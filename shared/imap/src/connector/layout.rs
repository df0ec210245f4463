//! How a mailbox maps onto the account tree, shared by backup and restore: a folder's path,
//! a message's item name, and the metadata pairs that carry what is not in its bytes.

use super::{META_FLAGS, META_GM_LABELS, META_GM_MSGID, META_INTERNAL_DATE, META_MODSEQ, META_UID};
use crate::conn::{FolderInfo, MessageMeta};
use domain::ItemPath;
use engine::Entry;
use engine::Result;

/// The tree path of a folder: its decoded segments. A segment that cannot be a path name
/// (`.`, `..`, empty) is kept visible with a `%` in front.
pub(super) fn folder_path(f: &FolderInfo) -> Result<ItemPath> {
    let mut p = ItemPath::root();
    for seg in f.segments() {
        let seg = if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0') {
            format!("%{seg}")
        } else {
            seg.replace('/', "%2F")
        };
        p = p.join(seg.as_bytes())?;
    }
    Ok(p)
}

pub(super) fn item_name(uid: u32) -> String {
    format!("{uid}.eml")
}

pub(super) fn uid_of(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name)
        .ok()?
        .strip_suffix(".eml")?
        .parse()
        .ok()
}

pub(super) fn get<'a>(meta: &'a [(String, String)], key: &str) -> Option<&'a str> {
    meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(super) fn set(meta: &mut Vec<(String, String)>, key: &str, value: Option<String>) {
    meta.retain(|(k, _)| k != key);
    if let Some(v) = value {
        meta.push((key.to_string(), v));
    }
}

/// The message's metadata pairs, keeping what only the content told (sender, subject).
pub(super) fn message_meta(m: &MessageMeta, base: &[(String, String)]) -> Vec<(String, String)> {
    let mut meta: Vec<(String, String)> = base.to_vec();
    set(&mut meta, META_UID, Some(m.uid.to_string()));
    set(&mut meta, META_FLAGS, Some(m.flags.join(" ")));
    set(
        &mut meta,
        META_INTERNAL_DATE,
        m.internal_date.map(|d| d.to_rfc3339()),
    );
    set(&mut meta, META_MODSEQ, m.modseq.map(|v| v.to_string()));
    set(&mut meta, META_GM_MSGID, m.gm_msgid.map(|v| v.to_string()));
    set(
        &mut meta,
        META_GM_LABELS,
        (!m.gm_labels.is_empty())
            .then(|| serde_json::to_string(&m.gm_labels).expect("labels serialise")),
    );
    meta.sort();
    meta
}

/// Reads back what [`message_meta`] wrote.
pub(super) fn meta_of(uid: u32, e: &Entry) -> MessageMeta {
    let m = &e.meta;
    MessageMeta {
        uid,
        flags: get(m, META_FLAGS)
            .map(|f| {
                f.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        internal_date: get(m, META_INTERNAL_DATE)
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok()),
        size: u32::try_from(e.size).ok(),
        modseq: get(m, META_MODSEQ).and_then(|v| v.parse().ok()),
        gm_msgid: get(m, META_GM_MSGID).and_then(|v| v.parse().ok()),
        gm_labels: get(m, META_GM_LABELS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
    }
}

/// Content never changes under a UID while UIDVALIDITY stays: that pair is the change key.
pub(super) fn fingerprint(uid_validity: u32, uid: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&uid_validity.to_be_bytes());
    b[4..].copy_from_slice(&uid.to_be_bytes());
    let h = blake3::hash(&b);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

pub(super) fn mtime_ns(m: &MessageMeta) -> i64 {
    m.internal_date
        .and_then(|d| d.timestamp_nanos_opt())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::META_FROM;
    use engine::EntryKind;

    #[test]
    fn metadata_round_trips() {
        let m = MessageMeta {
            uid: 7,
            flags: vec!["$Label1".into(), "\\Seen".into()],
            internal_date: Some(
                chrono::DateTime::parse_from_rfc3339("2024-02-29T18:30:00+05:30").unwrap(),
            ),
            size: Some(12),
            modseq: Some(99),
            gm_msgid: Some(123),
            gm_labels: vec!["Work".into(), "\\Important".into()],
        };
        let mut e = Entry::new(b"7.eml".to_vec(), EntryKind::File);
        e.size = 12;
        e.meta = message_meta(&m, &[(META_FROM.into(), "a".into())]);
        assert_eq!(meta_of(7, &e), m);
        assert_eq!(get(&e.meta, META_FROM), Some("a"));
        assert_eq!(uid_of(b"7.eml"), Some(7));
        assert_eq!(uid_of(b"x.eml"), None);
    }

    #[test]
    fn odd_folder_names_still_get_a_path() {
        let f = FolderInfo {
            wire: "a/./b".into(),
            name: "a/./b".into(),
            delimiter: Some("/".into()),
            special_use: None,
            selectable: true,
        };
        assert_eq!(folder_path(&f).unwrap().to_string(), "a/%./b");
        let f = FolderInfo {
            wire: "x.y/z".into(),
            name: "x.y/z".into(),
            delimiter: Some(".".into()),
            special_use: None,
            selectable: true,
        };
        assert_eq!(folder_path(&f).unwrap().to_string(), "x/y%2Fz");
    }
}
