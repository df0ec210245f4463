//! The event bus port: EventBridge-style events (`source`, `detail_type`, JSON `detail`),
//! used to announce finished backups and restores.

use crate::Result;
use async_trait::async_trait;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub source: String,
    pub detail_type: String,
    pub detail: String,
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes up to 10 events (EventBridge's `PutEvents` limit).
    ///
    /// # Errors
    /// `InvalidInput` for more than 10 events or a detail that is not a JSON object.
    async fn put_events(&self, events: &[Event]) -> Result<()>;
}
