//! Queue messages. Every job is wrapped in a versioned envelope so that a function
//! deployed later can still read (or clearly reject) a message queued by an older one.

use crate::{AccountId, ItemPath, SnapshotId, TaskId, TenantId};
use serde::{Deserialize, Serialize};

/// The envelope version this build writes and reads.
pub const JOB_VERSION: u32 = 1;

/// What the fetchers consume: back up one account of a task (or every account when `account`
/// is empty, which the scheduler expands into one job per account).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupJob {
    pub tenant: TenantId,
    pub task: TaskId,
    pub account: Option<AccountId>,
    /// The scheduled day (UTC, `YYYY-MM-DD`) for daily runs, so a duplicate delivery of the
    /// same day's job is recognised; `None` for on-demand backups.
    pub scheduled_for: Option<String>,
    /// How many times this job has re-queued itself to continue past a time limit.
    #[serde(default)]
    pub continuation: u32,
}

/// What an in-place restore does with an item that is already there. The one name for
/// it in every layer: the command line's `--on-conflict`, the API's `on_conflict`, restore
/// jobs and every connector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Leave the existing item alone.
    #[default]
    Skip,
    /// Restore beside it, as `name (Lifeboat Restore <timestamp>).ext`.
    Copy,
    /// Overwrite it (written to a temporary name first, then renamed over).
    Replace,
}

impl std::str::FromStr for OnConflict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OnConflict::Skip),
            "copy" => Ok(OnConflict::Copy),
            "replace" => Ok(OnConflict::Replace),
            other => Err(format!(
                "{other} is not a conflict rule; give skip, copy or replace"
            )),
        }
    }
}

/// Restore items of one snapshot into the source, into a new labelled folder unless
/// `in_place` is set. `job` names the job record that reports its progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreJob {
    pub job: String,
    pub tenant: TenantId,
    pub task: TaskId,
    pub account: AccountId,
    pub snapshot: SnapshotId,
    pub include: Vec<ItemPath>,
    pub to_account: Option<AccountId>,
    pub in_place: bool,
    #[serde(default)]
    pub on_conflict: OnConflict,
    /// Only the items these metadata select (within `include`).
    #[serde(default, skip_serializing_if = "crate::ItemFilter::is_empty")]
    pub filter: crate::ItemFilter,
}

/// Export items of one snapshot as a zip, offered for download when done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    pub job: String,
    pub tenant: TenantId,
    pub task: TaskId,
    pub account: AccountId,
    pub snapshot: SnapshotId,
    pub include: Vec<ItemPath>,
    /// Only the items these metadata select (within `include`).
    #[serde(default, skip_serializing_if = "crate::ItemFilter::is_empty")]
    pub filter: crate::ItemFilter,
}

/// Reclaim a task's space: prune (delete packs dead for the grace period) and, when
/// `repack` is set, first merge small and mostly dead packs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneJob {
    pub job: String,
    pub tenant: TenantId,
    pub task: TaskId,
    pub repack: bool,
    /// How long a condemned pack waits before it is deleted, in seconds.
    pub grace_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    Backup(BackupJob),
    Restore(RestoreJob),
    Export(ExportJob),
    Prune(PruneJob),
}

/// `{"v":1,"kind":"backup",...}` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub v: u32,
    #[serde(flatten)]
    pub job: JobKind,
}

impl JobEnvelope {
    pub fn new(job: JobKind) -> Self {
        JobEnvelope {
            v: JOB_VERSION,
            job,
        }
    }

    /// # Errors
    /// A message that is not JSON, names an unknown kind, or carries a version this build
    /// does not read; the message says which, so the dead-letter report is actionable.
    pub fn decode(body: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct V {
            v: u32,
        }
        let v: V = serde_json::from_str(body).map_err(|e| format!("job is not valid: {e}"))?;
        if v.v != JOB_VERSION {
            return Err(format!(
                "job version {} is not supported (this build reads {JOB_VERSION})",
                v.v
            ));
        }
        serde_json::from_str(body).map_err(|e| format!("job is not valid: {e}"))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("job types always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_other_versions() {
        let job = JobEnvelope::new(JobKind::Backup(BackupJob {
            tenant: TenantId::new("t1").unwrap(),
            task: TaskId::new("mail").unwrap(),
            account: None,
            scheduled_for: Some("2026-11-25".into()),
            continuation: 0,
        }));
        let s = job.encode();
        assert!(s.contains("\"kind\":\"backup\""));
        assert_eq!(JobEnvelope::decode(&s).unwrap(), job);
        let newer = s.replace("\"v\":1", "\"v\":2");
        assert!(JobEnvelope::decode(&newer)
            .unwrap_err()
            .contains("version 2"));
        assert!(JobEnvelope::decode("{").is_err());
    }
}
