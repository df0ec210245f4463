//! `SqsQueue`: the queue port on an SQS queue and its dead-letter queue. SQS does the
//! work: visibility timeouts, receive counts, and moving a message received too often to the
//! dead-letter queue (the queue's redrive policy, set by the SAM template or [`crate::setup`]).

use crate::error::{failure, invalid, Failure};
use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use ports::{Error, ErrorKind, Queue, QueueMessage, Result, QUEUE_MAX_BATCH};
use std::time::Duration;

/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;

/// How long `dead_letters` hides what it has seen while it reads on, so that each message
/// shows once; it makes them visible again when done.
const PEEK_VISIBILITY_SECS: i32 = 30;

/// At most this many receives per `dead_letters` call (10 messages each): it is a report,
/// not a drain.
const PEEK_ROUNDS: usize = 100;

/// An SQS queue (and, if it has one, its dead-letter queue) as a queue.
///
/// `receive` polls briefly rather than waiting: Lambda's event source mapping does the
/// waiting in production, and a caller polling by hand keeps control of its time.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_url: Option<String>,
}

/// SQS counts visibility in whole seconds; a part of a second counts as one more, so a
/// message is never visible again sooner than asked.
fn visibility_secs(d: Duration) -> Result<i32> {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs > MAX_VISIBILITY_SECS {
        return Err(invalid(format!(
            "visibility timeout {d:?} is over SQS's 12 hours"
        )));
    }
    Ok(secs as i32)
}

impl SqsQueue {
    /// The queue at `queue_url`; `dead_letter_url` is the queue its redrive policy sends
    /// messages to, read by [`Queue::dead_letters`].
    pub fn new(
        sdk: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
        dead_letter_url: Option<String>,
    ) -> Self {
        SqsQueue::from_client(aws_sdk_sqs::Client::new(sdk), queue_url, dead_letter_url)
    }

    pub fn from_client(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        dead_letter_url: Option<String>,
    ) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            dead_letter_url,
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    fn map(&self, f: Failure, url: &str) -> Error {
        match f.code.as_deref() {
            Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => Error::new(
                ErrorKind::Other,
                format!(
                    "SQS queue {url} does not exist (check the configured queue URL, or create it)"
                ),
            ),
            Some("ReceiptHandleIsInvalid" | "InvalidParameterValue") => {
                Error::new(ErrorKind::InvalidInput, f.error.to_string())
            }
            _ => f.error,
        }
    }

    fn what(url: &str) -> String {
        format!("SQS queue {url}")
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<()> {
        ports::check_batch(bodies)?;
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .map_err(|_| invalid("message could not be built"))
            })
            .collect::<Result<Vec<_>>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                self.map(
                    failure(e, "SQS", Self::what(&self.queue_url)),
                    &self.queue_url,
                )
            })?;
        if let Some(first) = out.failed().first() {
            let kind = if first.sender_fault() {
                ErrorKind::InvalidInput
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(
                kind,
                format!(
                    "{}: {} of {} messages not sent (message {}: {})",
                    Self::what(&self.queue_url),
                    out.failed().len(),
                    bodies.len(),
                    first.id(),
                    first.code()
                ),
            ));
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>> {
        if max == 0 || max > QUEUE_MAX_BATCH {
            return Err(invalid(format!(
                "receive takes 1 to {QUEUE_MAX_BATCH} messages, not {max}"
            )));
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(visibility_secs(visibility)?)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| {
                self.map(
                    failure(e, "SQS", Self::what(&self.queue_url)),
                    &self.queue_url,
                )
            })?;
        out.messages()
            .iter()
            .map(|m| {
                let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "SQS returned a message without body or receipt",
                    ));
                };
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Ok(QueueMessage {
                    body: body.to_string(),
                    receipt: receipt.to_string(),
                    receive_count,
                })
            })
            .collect()
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| {
                self.map(
                    failure(e, "SQS", Self::what(&self.queue_url)),
                    &self.queue_url,
                )
            })?;
        Ok(())
    }

    /// Reads the dead-letter queue without consuming it: each message is hidden while the
    /// reading goes on (so it is seen once), then made visible again.
    async fn dead_letters(&self) -> Result<Vec<String>> {
        let Some(url) = &self.dead_letter_url else {
            return Ok(Vec::new());
        };
        let what = format!("SQS dead-letter queue {url}");
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        for _ in 0..PEEK_ROUNDS {
            let out = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(QUEUE_MAX_BATCH as i32)
                .visibility_timeout(PEEK_VISIBILITY_SECS)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| self.map(failure(e, "SQS", &what), url))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                if let (Some(b), Some(r)) = (m.body(), m.receipt_handle()) {
                    bodies.push(b.to_string());
                    receipts.push(r.to_string());
                }
            }
        }
        for chunk in receipts.chunks(QUEUE_MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|_| invalid("visibility change could not be built"))
                })
                .collect::<Result<Vec<_>>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.map(failure(e, "SQS", &what), url))?;
        }
        Ok(bodies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_rounds_up_to_whole_seconds() {
        assert_eq!(visibility_secs(Duration::ZERO).unwrap(), 0);
        assert_eq!(visibility_secs(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(visibility_secs(Duration::from_millis(1000)).unwrap(), 1);
        assert_eq!(visibility_secs(Duration::from_millis(1001)).unwrap(), 2);
        assert_eq!(
            visibility_secs(Duration::from_secs(12 * 3600)).unwrap(),
            43200
        );
        assert_eq!(
            visibility_secs(Duration::from_secs(12 * 3600) + Duration::from_nanos(1))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }
}
