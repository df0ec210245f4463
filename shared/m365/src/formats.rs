//! What the export formats share: contacts as vCard 3.0 (`.vcf`,
//! [`crate::contacts::vcard`]), events and tasks as iCalendar (`.ics`,
//! [`crate::calendar::ics`], [`crate::todo::ics`]), built from Graph's JSON so that an
//! export opens in any client. Each file also carries Graph's own JSON in an
//! `X-LIFEBOAT-GRAPH` property (base64): a restore recreates the item from it exactly,
//! which no round trip through vCard or iCalendar could promise.

use base64::Engine as _;
use serde_json::Value;

pub(crate) const GRAPH_PROP: &str = "X-LIFEBOAT-GRAPH";

/// Escapes a text value (RFC 6350 §3.4, RFC 5545 §3.3.11).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends a content line, folded at 75 octets without splitting a character.
pub(crate) fn line(out: &mut String, name: &str, value: &str) {
    let full = format!("{name}:{value}");
    let mut width = 0;
    for c in full.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
}

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Graph's JSON without its annotations (`@odata.etag`, …), as embedded for restores.
pub(crate) fn embedded(v: &Value) -> String {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with('@'));
    }
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

/// `{"dateTime": "2026-01-05T08:00:00.0000000", "timeZone": "UTC"}` as an iCalendar
/// date-time property (UTC as `Z`, other zones with `TZID`).
pub(crate) fn ical_time(out: &mut String, name: &str, t: &Value) {
    let dt = s(t, "/dateTime");
    if dt.is_empty() {
        return;
    }
    let digits: String = dt
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let zone = s(t, "/timeZone");
    if zone.is_empty() || zone.eq_ignore_ascii_case("UTC") {
        line(out, name, &format!("{digits}Z"));
    } else {
        line(out, &format!("{name};TZID={zone}"), &digits);
    }
}

pub(crate) fn utc_stamp(v: &str) -> String {
    let digits: String = v
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{digits}Z")
}

/// Every Graph JSON object embedded in a `.vcf` or `.ics` made here, in order (an event's
/// master first, then its exceptions).
///
/// # Errors
/// A file without the property, or with one that does not decode: not made by Lifeboat.
pub fn embedded_json(file: &[u8]) -> Result<Vec<Value>, String> {
    let text = String::from_utf8_lossy(file);
    // Unfold continuation lines first (a line starting with a space continues the last).
    let unfolded = text.replace("\r\n ", "").replace("\n ", "");
    let mut out = Vec::new();
    for l in unfolded.lines() {
        if let Some(b64) = l.strip_prefix(&format!("{GRAPH_PROP}:")) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("the embedded item does not decode: {e}"))?;
            out.push(
                serde_json::from_slice(&raw)
                    .map_err(|e| format!("the embedded item is not JSON: {e}"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("the file holds no item this connector can restore".into());
    }
    Ok(out)
}
