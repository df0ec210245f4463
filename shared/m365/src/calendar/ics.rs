//! An event as iCalendar (`.ics`, VEVENT), a series master with its exceptions in one
//! object, so that an export opens in any client; each VEVENT also carries Graph's own
//! JSON (see [`crate::formats`]), from which a restore recreates the series.

use crate::formats::{embedded, esc, ical_time, line, s, utc_stamp, GRAPH_PROP};
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::embedded_json;
    use serde_json::json;

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
