//! A Gmail message as the tree keeps it: `Mail/<message id>.eml` holding the raw RFC 822
//! bytes exactly as `messages.get format=raw` gave them, with its labels (ids and names),
//! thread, received time, sender and subject as metadata. Gmail's message ids are
//! immutable and its messages' content never changes, so the name and fingerprint are the
//! id's: a label change edits the metadata only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use domain::ItemPath;
use engine::ItemInfo;
use mail_parser::MessageParser;
use serde_json::Value;
use std::collections::HashMap;

/// The folder of every message: Gmail has labels, not folders, and a message with several
/// labels is still one message.
pub const MAIL: &str = "Mail";
/// Where a full resynchronisation puts the messages it has not listed yet (see
/// `gmail::full`): whatever is left there when the listing ends was deleted meanwhile.
pub const RESYNC: &str = ".resync";

pub const META_ID: &str = "id";
pub const META_LABEL_IDS: &str = "label_ids";
pub const META_LABELS: &str = "labels";

pub fn mail_folder() -> ItemPath {
    ItemPath::parse(MAIL.as_bytes()).expect("a valid path")
}

pub fn resync_folder() -> ItemPath {
    mail_folder()
        .join(RESYNC.as_bytes())
        .expect("a valid segment")
}

/// A message id usable as a file name: Gmail's are hexadecimal; anything else is refused
/// rather than trusted into a path.
pub fn file_name(id: &str) -> Option<Vec<u8>> {
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| format!("{id}.eml").into_bytes())
}

pub fn path(folder: &ItemPath, id: &str) -> Option<ItemPath> {
    folder.join(&file_name(id)?).ok()
}

/// Decodes `raw`: base64url, with or without padding (Gmail pads; the discovery document
/// only says base64url).
pub fn decode_raw(raw: &str) -> Option<Vec<u8>> {
    let trimmed = raw.trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).ok()
}

/// The label ids of a message object (`labelIds`), in Gmail's order.
pub fn label_ids(m: &Value) -> Vec<String> {
    m.get("labelIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The label metadata pairs: ids (comma-separated: ids have no commas) and names (for
/// search and display; a name unknown to `labels.list` shows as its id).
pub fn label_meta(ids: &[String], names: &HashMap<String, String>) -> [(String, String); 2] {
    let shown: Vec<&str> = ids
        .iter()
        .map(|id| names.get(id).map(String::as_str).unwrap_or(id))
        .collect();
    [
        (META_LABEL_IDS.to_string(), ids.join(",")),
        (META_LABELS.to_string(), shown.join(", ")),
    ]
}

/// Replaces the label pairs of `meta`; returns whether anything changed.
pub fn set_labels(meta: &mut Vec<(String, String)>, labels: [(String, String); 2]) -> bool {
    let before = meta.clone();
    meta.retain(|(k, _)| k != META_LABEL_IDS && k != META_LABELS);
    meta.extend(labels);
    meta.sort();
    *meta != before
}

/// The entry's metadata and times for a message fetched with `format=raw`.
pub fn info(m: &Value, raw: &[u8], names: &HashMap<String, String>) -> ItemInfo {
    let id = m["id"].as_str().unwrap_or("");
    let internal_ms: i64 = m["internalDate"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let received = chrono::DateTime::from_timestamp_millis(internal_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let (from, subject) = headers(raw);
    let mut meta = vec![
        (META_ID.to_string(), id.to_string()),
        (
            "thread".to_string(),
            m["threadId"].as_str().unwrap_or("").to_string(),
        ),
        (engine::connector::META_RECEIVED.to_string(), received),
        ("from".to_string(), from),
        ("subject".to_string(), subject),
    ];
    set_labels(&mut meta, label_meta(&label_ids(m), names));
    ItemInfo {
        mtime_ns: internal_ms.saturating_mul(1_000_000),
        fingerprint: fingerprint(id),
        meta,
    }
}

/// The fingerprint of a message: its id's, since a Gmail message's content never changes.
pub fn fingerprint(id: &str) -> u64 {
    let h = blake3::hash(id.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The sender and subject, decoded, for search; empty when the headers do not parse.
fn headers(raw: &[u8]) -> (String, String) {
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        return (String::new(), String::new());
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .map(|a| match (a.name(), a.address()) {
            (Some(n), Some(addr)) => format!("{n} <{addr}>"),
            (None, Some(addr)) => addr.to_string(),
            (Some(n), None) => n.to_string(),
            (None, None) => String::new(),
        })
        .unwrap_or_default();
    (from, msg.subject().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_decodes_with_or_without_padding() {
        let padded = base64::engine::general_purpose::URL_SAFE.encode(b"ab\xff\xfe");
        assert!(padded.ends_with('='));
        assert_eq!(decode_raw(&padded).unwrap(), b"ab\xff\xfe");
        assert_eq!(
            decode_raw(padded.trim_end_matches('=')).unwrap(),
            b"ab\xff\xfe"
        );
    }

    #[test]
    fn ids_that_are_not_gmail_ids_make_no_path() {
        assert!(file_name("18c2f0a1b2c3d4e5").is_some());
        assert!(file_name("../etc").is_none());
        assert!(file_name("").is_none());
    }

    #[test]
    fn metadata_has_labels_by_id_and_name() {
        let names = HashMap::from([("Label_7".to_string(), "Projects/Lifeboat".to_string())]);
        let m = json!({"id": "abc", "threadId": "t", "labelIds": ["INBOX", "Label_7"], "internalDate": "1700000000000"});
        let raw = b"From: Ada <ada@example.com>\r\nSubject: Hi\r\n\r\nbody";
        let info = info(&m, raw, &names);
        let get = |k: &str| info.meta.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("label_ids"), "INBOX,Label_7");
        assert_eq!(get("labels"), "INBOX, Projects/Lifeboat");
        assert_eq!(get("from"), "Ada <ada@example.com>");
        assert_eq!(get("received"), "2023-11-14T22:13:20Z");
        assert_eq!(info.mtime_ns, 1_700_000_000_000_000_000);
    }
}
