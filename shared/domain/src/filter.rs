//! A selection of items by their metadata, as a restore or a search asks for it: sender,
//! subject, and a range of days. Connectors put the sender and subject of an item in its
//! metadata under `from` and `subject`; the day is the item's own time (received,
//! modified).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFilter {
    /// Part of the sender, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Part of the subject, any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// First day (UTC), inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<NaiveDate>,
    /// Last day (UTC), inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<NaiveDate>,
}

fn contains(hay: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
}

impl ItemFilter {
    /// Selects everything.
    pub fn is_empty(&self) -> bool {
        *self == ItemFilter::default()
    }

    /// Whether an item with this metadata and time (nanoseconds since the epoch) is
    /// selected.
    pub fn matches(&self, meta: &[(String, String)], mtime_ns: i64) -> bool {
        let get = |k: &str| {
            meta.iter()
                .find(|(mk, _)| mk == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let day = DateTime::<Utc>::from_timestamp_nanos(mtime_ns).date_naive();
        contains(get("from"), &self.sender)
            && contains(get("subject"), &self.subject)
            && self.since.is_none_or(|d| day >= d)
            && self.until.is_none_or(|d| day <= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(from: &str, subject: &str) -> Vec<(String, String)> {
        vec![
            ("from".into(), from.into()),
            ("subject".into(), subject.into()),
        ]
    }

    #[test]
    fn every_field_narrows_and_none_selects_all() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let at = day("2026-03-04")
            .and_hms_opt(23, 59, 0)
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap();
        let m = meta("Adele Vance <adele@contoso.example>", "Quarterly Report");
        assert!(ItemFilter::default().matches(&m, at));
        assert!(ItemFilter::default().is_empty());
        let f = |sender: Option<&str>, subject: Option<&str>, since, until| ItemFilter {
            sender: sender.map(str::to_string),
            subject: subject.map(str::to_string),
            since,
            until,
        };
        assert!(f(Some("ADELE"), None, None, None).matches(&m, at));
        assert!(!f(Some("megan"), None, None, None).matches(&m, at));
        assert!(f(None, Some("report"), None, None).matches(&m, at));
        assert!(!f(None, Some("invoice"), None, None).matches(&m, at));
        // Both ends of the range are inclusive days.
        assert!(f(None, None, Some(day("2026-03-04")), Some(day("2026-03-04"))).matches(&m, at));
        assert!(!f(None, None, Some(day("2026-03-05")), None).matches(&m, at));
        assert!(!f(None, None, None, Some(day("2026-03-03"))).matches(&m, at));
        // An item without a sender is not selected by a sender filter.
        assert!(!f(Some("adele"), None, None, None).matches(&[], at));
        assert!(!f(Some("adele"), None, None, None).is_empty());
    }
}
