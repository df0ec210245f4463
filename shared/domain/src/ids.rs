//! Typed identifiers. Each is validated once at the edge so that storage keys built from them
//! can never contain a separator, a path traversal or an empty segment.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An identifier failed validation; the message names the field and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl IdError {
    pub fn new(what: &'static str, value: &str, why: &'static str) -> Self {
        // Never echo an unbounded value back into an error line.
        let value: String = value.chars().take(80).collect();
        IdError { what, value, why }
    }
}

fn check(what: &'static str, s: &str, max: usize, extra: &[char]) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(what, s, "must not be empty"));
    }
    if s.len() > max {
        return Err(IdError::new(what, s, "is too long"));
    }
    if s.starts_with(['.', '-']) {
        return Err(IdError::new(what, s, "must not start with '.' or '-'"));
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c));
    if !ok {
        return Err(IdError::new(
            what,
            s,
            "may hold only ASCII letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $what:literal, $max:expr, $extra:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($what, &s, $max, $extra)?;
                Ok($name(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::new(s)
            }
        }
    };
}

id_type!(
    /// A Lifeboat customer. Every storage key starts with it (design decision 7).
    TenantId, "tenant id", 64, &[]
);
id_type!(
    /// One connected application of a tenant; chosen by the tenant as a short name.
    TaskId, "task name", 64, &[]
);
id_type!(
    /// One protected user, site or mailbox of a task. Source ids such as e-mail addresses
    /// and Graph object ids fit, hence '.', '@' and '+'.
    AccountId, "account id", 200, &['.', '@', '+']
);
id_type!(
    /// One account at one backup time: sortable by time (`20261125T020000Z-1a2b3c4d`).
    SnapshotId, "snapshot id", 64, &[]
);

impl SnapshotId {
    /// A new id for a snapshot taken at `at`: the second, then the millisecond (so ids
    /// sort by time even within a second), then 20 bits of `nonce` to separate two
    /// snapshots of the same millisecond (a retry racing the first attempt).
    pub fn generate(at: chrono::DateTime<chrono::Utc>, nonce: u32) -> SnapshotId {
        SnapshotId(format!(
            "{}-{:03}{:05x}",
            at.format("%Y%m%dT%H%M%SZ"),
            at.timestamp_subsec_millis().min(999),
            nonce & 0xf_ffff
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_separators_and_traversal() {
        for bad in ["", "a/b", "..", ".hidden", "-x", "a#b", "a b", "é"] {
            assert!(TaskId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TaskId::new("mail-2026_a").is_ok());
        assert!(AccountId::new("anna.smith+x@example.com").is_ok());
        assert!(TenantId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn ids_validate_when_deserialised() {
        let e = serde_json::from_str::<TaskId>("\"a/b\"").unwrap_err();
        assert!(e.to_string().contains("task name"));
    }

    #[test]
    fn snapshot_ids_sort_by_time() {
        let t1 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t2 = chrono::DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        assert!(SnapshotId::generate(t1, u32::MAX) < SnapshotId::generate(t2, 0));
        let early = chrono::DateTime::from_timestamp(1_700_000_000, 7_000_000).unwrap();
        let late = chrono::DateTime::from_timestamp(1_700_000_000, 993_000_000).unwrap();
        let (a, b) = (
            SnapshotId::generate(early, u32::MAX),
            SnapshotId::generate(late, 0),
        );
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.as_str().len(), b.as_str().len());
    }
}
