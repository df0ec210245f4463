//! Lifeboat's background work, written once over the ports: the daily scheduler
//! ([`schedule::tick`]), the backup fetcher ([`fetch::run_backup`]) and the job runner
//! ([`runner`]) that the Lambda functions' SQS handlers and the local worker both call.
//!
//! Everything here is safe to run twice, because SQS delivers at least once and a
//! scheduler tick can overlap the next: a day's backup is claimed per task with one
//! conditional write, an account is backed up under a lease, and an account's state records
//! the last day done, so a duplicate job finds its work already done.

pub mod cooldown;
pub mod events;
pub mod fetch;
pub mod runner;
pub mod schedule;
pub mod transfer;

use engine::{Connectors, Engine, Ports};
use ports::{EventBus, Queue};
use std::sync::Arc;

pub use fetch::{account_state, AccountState, Outcome};
pub use runner::{drain, handle_batch, Incoming};
pub use schedule::{backup_jobs, queue_today, tick, TickReport};
pub use transfer::{JobRecord, JobState};

/// What background work runs on.
#[derive(Clone)]
pub struct Context {
    pub ports: Ports,
    /// The backup job queue (SQS on AWS).
    pub queue: Arc<dyn Queue>,
    /// The restore and export job queue: separate, so that a restore never waits behind
    /// the night's backups. May be the same queue locally.
    pub transfers: Arc<dyn Queue>,
    pub connectors: Arc<dyn Connectors>,
    /// Who is working (a Lambda request id, a worker's name): the owner of the leases it
    /// takes. Never personal data.
    pub worker: String,
    /// How long a backup may hold an account before another worker may take over (longer
    /// than a Lambda run, so a live run is never overtaken).
    pub lease: chrono::Duration,
    /// How long one run may back up before it pauses and re-queues itself (a Lambda run
    /// has 15 minutes); `None` runs to the end.
    pub budget: Option<std::time::Duration>,
    /// Where finished backups, restores and exports are announced ([`events`]); `None`
    /// where nobody listens (the local worker).
    pub events: Option<Arc<dyn EventBus>>,
}

impl Context {
    /// The default lease: Lambda's 15 minutes, plus a margin.
    pub const DEFAULT_LEASE_MINUTES: i64 = 20;

    pub fn new(
        ports: Ports,
        queue: Arc<dyn Queue>,
        connectors: Arc<dyn Connectors>,
        worker: impl Into<String>,
    ) -> Self {
        Context {
            ports,
            transfers: queue.clone(),
            queue,
            connectors,
            worker: worker.into(),
            lease: chrono::Duration::minutes(Self::DEFAULT_LEASE_MINUTES),
            budget: None,
            events: None,
        }
    }

    fn engine(&self, tenant: &domain::TenantId) -> Engine {
        Engine::new(self.ports.clone(), tenant.clone())
    }
}

/// Sends jobs in SQS-sized batches.
async fn send_jobs(queue: &dyn Queue, jobs: &[domain::JobEnvelope]) -> ports::Result<()> {
    for chunk in jobs.chunks(ports::QUEUE_MAX_BATCH) {
        let bodies: Vec<String> = chunk.iter().map(|j| j.encode()).collect();
        queue.send_batch(&bodies).await?;
    }
    Ok(())
}
