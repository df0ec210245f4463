//! The queue port: SQS semantics. At-least-once delivery, a visibility timeout, and a
//! dead-letter queue after too many receives, so a poison job is set aside, not retried
//! forever.

use crate::Result;
use async_trait::async_trait;
use std::time::Duration;

/// SQS's limits, kept by every adapter.
pub const MAX_BATCH: usize = 10;
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    /// Pass to [`Queue::delete`] once the message is handled.
    pub receipt: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends up to [`MAX_BATCH`] messages.
    ///
    /// # Errors
    /// `InvalidInput` for an empty or too large batch or a message over
    /// [`MAX_MESSAGE_BYTES`]; nothing is sent then.
    async fn send_batch(&self, bodies: &[String]) -> Result<()>;

    /// Up to `max` visible messages (at most [`MAX_BATCH`]), hidden for `visibility` unless
    /// deleted. A message received more often than the queue's limit goes to the dead-letter
    /// queue instead of being returned.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>>;

    /// Acknowledges a message. A stale receipt (the message was redelivered since) is
    /// ignored, as SQS does.
    async fn delete(&self, receipt: &str) -> Result<()>;

    /// Messages set aside after too many receives (for reporting).
    async fn dead_letters(&self) -> Result<Vec<String>>;
}
