//! Contacts as vCard 3.0 (`.vcf`), events and tasks as iCalendar (`.ics`, VEVENT and
//! VTODO), built from Graph's JSON so that an export opens in any client. Each file also
//! carries Graph's own JSON in an `X-LIFEBOAT-GRAPH` property (base64): a restore recreates
//! the item from it exactly, which no round trip through vCard or iCalendar could promise.

use base64::Engine as _;
use serde_json::Value;

const GRAPH_PROP: &str = "X-LIFEBOAT-GRAPH";

/// Escapes a text value (RFC 6350 §3.4, RFC 5545 §3.3.11).
fn esc(s: &str) -> String {
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
fn line(out: &mut String, name: &str, value: &str) {
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

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Graph's JSON without its annotations (`@odata.etag`, …), as embedded for restores.
fn embedded(v: &Value) -> String {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with('@'));
    }
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

/// A contact as a vCard.
pub fn vcard(c: &Value) -> Vec<u8> {
    let mut out = String::new();
    line(&mut out, "BEGIN", "VCARD");
    line(&mut out, "VERSION", "3.0");
    let display = s(c, "/displayName");
    line(&mut out, "FN", &esc(display));
    line(
        &mut out,
        "N",
        &format!(
            "{};{};{};{};",
            esc(s(c, "/surname")),
            esc(s(c, "/givenName")),
            esc(s(c, "/middleName")),
            esc(s(c, "/title"))
        ),
    );
    for e in c["emailAddresses"].as_array().into_iter().flatten() {
        let a = s(e, "/address");
        if !a.is_empty() {
            line(&mut out, "EMAIL;TYPE=INTERNET", &esc(a));
        }
    }
    for (field, kind) in [("businessPhones", "WORK"), ("homePhones", "HOME")] {
        for p in c[field].as_array().into_iter().flatten() {
            if let Some(p) = p.as_str() {
                line(&mut out, &format!("TEL;TYPE={kind}"), &esc(p));
            }
        }
    }
    if let Some(m) = c["mobilePhone"].as_str().filter(|m| !m.is_empty()) {
        line(&mut out, "TEL;TYPE=CELL", &esc(m));
    }
    let company = s(c, "/companyName");
    if !company.is_empty() {
        line(&mut out, "ORG", &esc(company));
    }
    let title = s(c, "/jobTitle");
    if !title.is_empty() {
        line(&mut out, "TITLE", &esc(title));
    }
    let notes = s(c, "/personalNotes");
    if !notes.is_empty() {
        line(&mut out, "NOTE", &esc(notes));
    }
    if let Some(b) = c["birthday"].as_str() {
        line(&mut out, "BDAY", b.get(..10).unwrap_or(b));
    }
    line(&mut out, "UID", &esc(s(c, "/id")));
    line(&mut out, GRAPH_PROP, &embedded(c));
    line(&mut out, "END", "VCARD");
    out.into_bytes()
}

/// `{"dateTime": "2026-01-05T08:00:00.0000000", "timeZone": "UTC"}` as an iCalendar
/// date-time property (UTC as `Z`, other zones with `TZID`).
fn ical_time(out: &mut String, name: &str, t: &Value) {
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

fn utc_stamp(v: &str) -> String {
    let digits: String = v
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{digits}Z")
}

fn rrule(rec: &Value) -> Option<String> {
    let p = &rec["pattern"];
    let r = &rec["range"];
    let mut parts = vec![];
    let freq = match s(p, "/type") {
        "daily" => "DAILY",
        "weekly" => "WEEKLY",
        "absoluteMonthly" | "relativeMonthly" => "MONTHLY",
        "absoluteYearly" | "relativeYearly" => "YEARLY",
        _ => return None,
    };
    parts.push(format!("FREQ={freq}"));
    if let Some(i) = p["interval"].as_u64().filter(|i| *i > 1) {
        parts.push(format!("INTERVAL={i}"));
    }
    let days: Vec<String> = p["daysOfWeek"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|d| d.get(..2).unwrap_or(d).to_ascii_uppercase())
        .collect();
    if !days.is_empty() {
        parts.push(format!("BYDAY={}", days.join(",")));
    }
    if let Some(d) = p["dayOfMonth"].as_u64().filter(|d| *d > 0) {
        parts.push(format!("BYMONTHDAY={d}"));
    }
    match s(r, "/type") {
        "numbered" => parts.push(format!(
            "COUNT={}",
            r["numberOfOccurrences"].as_u64().unwrap_or(1)
        )),
        "endDate" => parts.push(format!(
            "UNTIL={}T235959Z",
            s(r, "/endDate").replace('-', "")
        )),
        _ => {}
    }
    Some(parts.join(";"))
}

fn vevent(out: &mut String, e: &Value, uid: &str) {
    line(out, "BEGIN", "VEVENT");
    line(out, "UID", &esc(uid));
    let stamp = s(e, "/lastModifiedDateTime");
    if !stamp.is_empty() {
        line(out, "DTSTAMP", &utc_stamp(stamp));
    }
    if let Some(orig) = e["originalStart"].as_str() {
        line(out, "RECURRENCE-ID", &utc_stamp(orig));
    }
    ical_time(out, "DTSTART", &e["start"]);
    ical_time(out, "DTEND", &e["end"]);
    line(out, "SUMMARY", &esc(s(e, "/subject")));
    let loc = s(e, "/location/displayName");
    if !loc.is_empty() {
        line(out, "LOCATION", &esc(loc));
    }
    let body = s(e, "/body/content");
    if !body.is_empty() {
        line(out, "DESCRIPTION", &esc(body));
    }
    if let Some(r) = e.get("recurrence").filter(|r| !r.is_null()).and_then(rrule) {
        line(out, "RRULE", &r);
    }
    let org = s(e, "/organizer/emailAddress/address");
    if !org.is_empty() {
        line(out, "ORGANIZER", &format!("mailto:{org}"));
    }
    for a in e["attendees"].as_array().into_iter().flatten() {
        let addr = s(a, "/emailAddress/address");
        if !addr.is_empty() {
            line(out, "ATTENDEE", &format!("mailto:{addr}"));
        }
    }
    if e["isCancelled"].as_bool() == Some(true) {
        line(out, "STATUS", "CANCELLED");
    }
    line(out, GRAPH_PROP, &embedded(e));
    line(out, "END", "VEVENT");
}

/// An event, with the exceptions of a series master, as one iCalendar object.
pub fn ics_event(e: &Value, exceptions: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    line(&mut out, "BEGIN", "VCALENDAR");
    line(&mut out, "VERSION", "2.0");
    line(&mut out, "PRODID", "-//Lifeboat//Microsoft 365 backup//EN");
    let uid = e["iCalUId"].as_str().unwrap_or_else(|| s(e, "/id"));
    vevent(&mut out, e, uid);
    for x in exceptions {
        vevent(&mut out, x, uid);
    }
    line(&mut out, "END", "VCALENDAR");
    out.into_bytes()
}

/// A To Do task as an iCalendar VTODO.
pub fn ics_task(t: &Value) -> Vec<u8> {
    let mut out = String::new();
    line(&mut out, "BEGIN", "VCALENDAR");
    line(&mut out, "VERSION", "2.0");
    line(&mut out, "PRODID", "-//Lifeboat//Microsoft 365 backup//EN");
    line(&mut out, "BEGIN", "VTODO");
    line(&mut out, "UID", &esc(s(t, "/id")));
    let stamp = s(t, "/lastModifiedDateTime");
    if !stamp.is_empty() {
        line(&mut out, "DTSTAMP", &utc_stamp(stamp));
    }
    line(&mut out, "SUMMARY", &esc(s(t, "/title")));
    let body = s(t, "/body/content");
    if !body.is_empty() {
        line(&mut out, "DESCRIPTION", &esc(body));
    }
    ical_time(&mut out, "DUE", &t["dueDateTime"]);
    let status = match s(t, "/status") {
        "completed" => "COMPLETED",
        "inProgress" => "IN-PROCESS",
        "deferred" | "waitingOnOthers" => "NEEDS-ACTION",
        _ => "NEEDS-ACTION",
    };
    line(&mut out, "STATUS", status);
    let prio = match s(t, "/importance") {
        "high" => "1",
        "low" => "9",
        _ => "5",
    };
    line(&mut out, "PRIORITY", prio);
    line(&mut out, GRAPH_PROP, &embedded(t));
    line(&mut out, "END", "VTODO");
    line(&mut out, "END", "VCALENDAR");
    out.into_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vcards_fold_and_carry_the_item() {
        let c = json!({"@odata.etag": "x", "id": "AAk=", "displayName": "Zoë Ångström, Jr.",
            "givenName": "Zoë", "surname": "Ångström", "emailAddresses": [{"address": "z@x.example"}],
            "personalNotes": "a very long note ".repeat(20)});
        let v = vcard(&c);
        let text = String::from_utf8(v.clone()).unwrap();
        assert!(text.contains("FN:Zoë Ångström\\, Jr.\r\n"));
        assert!(text.lines().all(|l| l.len() <= 75), "{text}");
        let back = embedded_json(&v).unwrap();
        assert_eq!(back[0]["displayName"], c["displayName"]);
        assert!(back[0].get("@odata.etag").is_none());
    }

    #[test]
    fn series_keep_their_exceptions() {
        let master = json!({"id": "m", "subject": "Stand-up", "start": {"dateTime": "2026-01-05T08:00:00.0000000", "timeZone": "UTC"},
            "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]}, "range": {"type": "numbered", "numberOfOccurrences": 10}}});
        let ex = json!({"id": "x", "subject": "Stand-up (moved)", "originalStart": "2026-01-19T08:00:00Z",
            "start": {"dateTime": "2026-01-19T09:00:00.0000000", "timeZone": "UTC"}});
        let v = ics_event(&master, std::slice::from_ref(&ex));
        let text = String::from_utf8(v.clone()).unwrap();
        assert!(text.contains("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10"));
        assert!(text.contains("RECURRENCE-ID:20260119T080000Z"));
        assert!(text.contains("DTSTART:20260105T080000Z"));
        let back = embedded_json(&v).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1]["subject"], "Stand-up (moved)");
        assert!(embedded_json(b"BEGIN:VCARD\r\nEND:VCARD\r\n").is_err());
    }
}
