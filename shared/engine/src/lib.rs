//! Lifeboat's use cases, written once over the ports: add a task, back up its accounts,
//! list and browse snapshots, restore, export, diff, verify, delete a tenant. The CLI, the
//! local server and the Lambda functions all call these; none of them re-implements one.
//!
//! **Architecture invariant:** depends on `domain`, `ports` and `vault` only — never on an
//! adapter crate, so the same code runs embedded and on AWS.

mod browse;
mod error;
pub mod export;
pub mod files;
mod restore;
pub mod source;
mod tasks;

pub use browse::{Change, ChangeKind};
pub use error::{Error, Result};
pub use restore::{OnConflict, RestoreOptions, RestoreReport};
pub use source::{
    AccountInfo, AccountTree, Connector, Connectors, ItemInfo, RestoreContent, SourceErrorKind,
    SourceRestore, SourceRestoreReport,
};
pub use tasks::{
    schedule_pk, schedule_sk, SourceConfig, TaskRecord, DEFAULT_BACKUP_HOUR, FILES_ACCOUNT,
    SCHEDULE_SHARDS,
};

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
