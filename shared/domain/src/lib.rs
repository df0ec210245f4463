//! Lifeboat's domain types: who owns data (tenant, task, account), what it is (service,
//! item path) and when it was taken (snapshot). No I/O and no dependency on any adapter, so
//! every other crate can share these without pulling in storage or network code.
//!
//! **Architecture invariant:** this crate depends on nothing of ours and on no I/O crate.

mod filter;
mod ids;
mod jobs;
mod path;

pub use filter::ItemFilter;
pub use ids::{AccountId, IdError, SnapshotId, TaskId, TenantId};
pub use jobs::{
    BackupJob, ExportJob, JobEnvelope, JobKind, OnConflict, PruneJob, RestoreJob, JOB_VERSION,
};
pub use path::{escape, unescape};
pub use path::{ItemPath, PathError};

use serde::{Deserialize, Serialize};

/// The kind of data an item belongs to. Each connector category maps to one service, and
/// restores and searches are scoped by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Mail,
    Contacts,
    Calendar,
    Tasks,
    Drive,
    Site,
    Chat,
    Records,
    /// A local folder (the `folder` connector).
    Files,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Mail,
        Service::Contacts,
        Service::Calendar,
        Service::Tasks,
        Service::Drive,
        Service::Site,
        Service::Chat,
        Service::Records,
        Service::Files,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Mail => "mail",
            Service::Contacts => "contacts",
            Service::Calendar => "calendar",
            Service::Tasks => "tasks",
            Service::Drive => "drive",
            Service::Site => "site",
            Service::Chat => "chat",
            Service::Records => "records",
            Service::Files => "files",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Service {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Service::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| IdError::new("service", s, "is not a known service"))
    }
}

/// The label put on every non-destructive restore target, e.g. `Lifeboat Restore
/// 2026-11-25 02-00-00 UTC`. Colons are avoided because several destinations (Windows file
/// names, SharePoint folder names) reject them.
pub fn restore_label(prefix: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{prefix} {}", at.format("%Y-%m-%d %H-%M-%S UTC"))
}

/// The default prefix of [`restore_label`].
pub const RESTORE_PREFIX: &str = "Lifeboat Restore";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_round_trips_through_its_name() {
        for s in Service::ALL {
            assert_eq!(s.as_str().parse::<Service>().unwrap(), s);
        }
        assert!("photos".parse::<Service>().is_err());
    }

    #[test]
    fn restore_label_has_no_colons() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T02:03:04Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let l = restore_label(RESTORE_PREFIX, at);
        assert_eq!(l, "Lifeboat Restore 2026-11-25 02-03-04 UTC");
        assert!(!l.contains(':'));
    }
}
