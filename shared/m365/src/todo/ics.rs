//! A To Do task as an iCalendar VTODO (`.ics`), so that an export opens in any client; it
//! also carries Graph's own JSON (see [`crate::formats`]), from which a restore recreates
//! the task.

use crate::formats::{embedded, esc, ical_time, line, s, utc_stamp, GRAPH_PROP};
use serde_json::Value;

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
