//! `EventBridgeBus`: the event bus port on an EventBridge bus (`PutEvents`).

use crate::error::{failure, invalid};
use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use ports::{Error, ErrorKind, Event, EventBus, Result};

/// EventBridge's limits on one `PutEvents` call.
const MAX_ENTRIES: usize = 10;
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// An EventBridge bus as an event bus.
#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    /// The bus named `bus` (`default` for the account's default bus).
    pub fn new(sdk: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        EventBridgeBus::from_client(aws_sdk_eventbridge::Client::new(sdk), bus)
    }

    pub fn from_client(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus: bus.into(),
        }
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }
}

/// The size EventBridge counts for an entry: its time (14 bytes), source, detail type and
/// detail.
fn entry_size(e: &Event) -> usize {
    14 + e.source.len() + e.detail_type.len() + e.detail.len()
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn put_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if events.len() > MAX_ENTRIES {
            return Err(invalid(format!(
                "PutEvents takes at most {MAX_ENTRIES} events, not {}",
                events.len()
            )));
        }
        for (i, e) in events.iter().enumerate() {
            // EventBridge takes only a JSON object as detail; checked here so that a bad
            // event refuses the batch before anything is published.
            let ok = matches!(
                serde_json::from_str::<serde_json::Value>(&e.detail),
                Ok(serde_json::Value::Object(_))
            );
            if !ok {
                return Err(invalid(format!("event {i}: detail is not a JSON object")));
            }
            if e.source.is_empty() || e.detail_type.is_empty() {
                return Err(invalid(format!(
                    "event {i}: source and detail type are required"
                )));
            }
        }
        let total: usize = events.iter().map(entry_size).sum();
        if total > MAX_REQUEST_BYTES {
            return Err(invalid(format!(
                "events are {total} bytes in all, over EventBridge's {MAX_REQUEST_BYTES}"
            )));
        }
        let entries = events
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(&e.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .build()
            })
            .collect();
        let what = format!("EventBridge bus {}", self.bus);
        let out = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let f = failure(e, "EventBridge", &what);
                if f.is_code("ResourceNotFoundException") {
                    Error::new(
                        ErrorKind::Other,
                        format!(
                            "{what} does not exist (check the configured bus name, or create it)"
                        ),
                    )
                } else {
                    f.error
                }
            })?;
        if out.failed_entry_count() > 0 {
            let first = out
                .entries()
                .iter()
                .find_map(|e| e.error_code())
                .unwrap_or("unknown");
            let kind = match first {
                "ThrottlingException" => ErrorKind::Throttled,
                "InternalFailure" => ErrorKind::Unavailable,
                _ => ErrorKind::InvalidInput,
            };
            return Err(Error::new(
                kind,
                format!(
                    "{what}: {} of {} events not published ({first})",
                    out.failed_entry_count(),
                    events.len()
                ),
            ));
        }
        Ok(())
    }
}
