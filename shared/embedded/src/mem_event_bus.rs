//! `MemEventBus`: the event bus port in process memory; tests read what was published.

use async_trait::async_trait;
use ports::{Error, ErrorKind, Event, EventBus, Result};
use std::sync::Mutex;

/// EventBridge's `PutEvents` limit.
const MAX_EVENTS: usize = 10;

/// Keeps every published event, in order, for [`MemEventBus::events`].
#[derive(Debug, Default)]
pub struct MemEventBus {
    events: Mutex<Vec<Event>>,
}

impl MemEventBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl EventBus for MemEventBus {
    /// Publishes all of `events` or, when one is refused, none. An empty slice publishes
    /// nothing and succeeds.
    async fn put_events(&self, events: &[Event]) -> Result<()> {
        if events.len() > MAX_EVENTS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} events in one call, at most {MAX_EVENTS}", events.len()),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&e.detail)
                .is_err()
            {
                // The detail may hold personal data: name the event, not its content.
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "event {i} ({} / {}): detail is not a JSON object",
                        e.source, e.detail_type
                    ),
                ));
            }
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(events);
        Ok(())
    }
}
