//! Lifeboat's use cases, written once over the ports, one module each: tasks (add, check,
//! replace a credential, schedule), accounts, backup, snapshots and browsing, diff, search,
//! restore (with its destination rules), export, verify, usage, deleting a tenant. The
//! command line, the HTTP API and the Lambda functions are thin adapters over these:
//! they parse input, call one use case and render its [`view`]; none re-implements one,
//! and none reads the vault or builds a catalog key itself.
//!
//! **Architecture invariant:** depends on `domain`, `ports` and `vault` only — never on an
//! adapter crate or a connector, so the same code runs embedded and on AWS, whatever the
//! source.

mod account_tree;
mod accounts;
mod backup;
pub mod connector;
mod delete;
mod diff;
mod error;
mod export;
pub mod partial;
mod prune;
mod restore;
mod search;
mod snapshots;
mod tasks;
mod usage;
mod verify;
pub mod view;

pub use account_tree::AccountTree;
pub use backup::BackupOptions;
pub use connector::{
    AccountInfo, BackupEnd, Connector, Connectors, ItemInfo, RestoreContent, SourceErrorKind,
    SourceRestore, SourceRestoreReport,
};
pub use diff::{Change, ChangeKind};
pub use domain::OnConflict;
pub use error::{Error, ErrorKind, Result};
pub use export::{ExportFormat, ExportOptions, ExportReport};
pub use prune::{AccountPrune, TaskPruneReport};
pub use restore::{Destination, RestoreOptions, RestoreReport};
pub use search::{SearchHit, SearchQuery, SearchResults, MAX_RESULTS};
pub use tasks::{NewTask, SourceConfig, TaskRecord, DEFAULT_BACKUP_HOUR, SCHEDULE_SHARDS};
pub use usage::{Usage, UsageAccount, TRIAL_DAYS};
/// What a connector stores and reads back; connectors build entries of the account tree.
pub use vault::{
    Entry, EntryKind, ItemError, PruneOptions, PruneReport, SnapshotRecord, SnapshotStats,
    VerifyReport, DEFAULT_GRACE, SMALL_ITEM,
};
pub use view::{EntryView, SnapshotView, TaskView};

use domain::TenantId;
use ports::{Catalog, Clock, KeyService, ObjectStore};
use std::sync::Arc;

/// The adapters a Lifeboat process runs on.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub keys: Arc<dyn KeyService>,
    pub clock: Arc<dyn Clock>,
}

/// Progress of long work, for progress bars. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The amount of work expected, when known (bytes).
    fn set_total(&self, _bytes: u64) {}
    /// Bytes processed.
    fn advance(&self, _bytes: u64) {}
    /// A short status line (never holds personal data).
    fn status(&self, _msg: &str) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One tenant's view of Lifeboat. Every operation is scoped to `tenant`, which the caller
/// takes from a verified identity (design decision 7), never from a request body.
#[derive(Clone)]
pub struct Engine {
    ports: Ports,
    tenant: TenantId,
}

impl Engine {
    pub fn new(ports: Ports, tenant: TenantId) -> Self {
        Engine { ports, tenant }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn ports(&self) -> &Ports {
        &self.ports
    }
}
