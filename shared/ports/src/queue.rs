//! The queue port: SQS semantics. At-least-once delivery, a visibility timeout, and a
//! dead-letter queue after too many receives, so a poison job is set aside, not retried
//! forever.

use crate::Result;
use async_trait::async_trait;
use std::time::Duration;

/// SQS's limits, kept by every adapter.
pub const MAX_BATCH: usize = 10;
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Checks a batch against SQS's rules ([`Queue::send_batch`]'s contract), so that every
/// adapter refuses exactly what SQS would: 1 to [`MAX_BATCH`] messages, each and all
/// together at most [`MAX_MESSAGE_BYTES`], only the characters SQS accepts.
///
/// # Errors
/// `InvalidInput`, saying which rule and which message.
pub fn check_batch(bodies: &[String]) -> Result<()> {
    let invalid = |msg: String| crate::Error::new(crate::ErrorKind::InvalidInput, msg);
    if bodies.is_empty() || bodies.len() > MAX_BATCH {
        return Err(invalid(format!(
            "a batch holds 1 to {MAX_BATCH} messages, not {}",
            bodies.len()
        )));
    }
    let mut total = 0;
    for (i, b) in bodies.iter().enumerate() {
        if b.len() > MAX_MESSAGE_BYTES {
            return Err(invalid(format!(
                "message {i} is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                b.len()
            )));
        }
        if !b.chars().all(sqs_allowed) {
            return Err(invalid(format!(
                "message {i} holds a character SQS refuses"
            )));
        }
        total += b.len();
    }
    if total > MAX_MESSAGE_BYTES {
        return Err(invalid(format!(
            "batch is {total} bytes in all, over SQS's {MAX_MESSAGE_BYTES}-byte limit"
        )));
    }
    Ok(())
}

/// SQS accepts only these characters in a message body.
fn sqs_allowed(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

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
