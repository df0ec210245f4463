//! The event bus suite: batches up to EventBridge's 10 entries, details that are JSON
//! objects.

use crate::{assert_kind, assert_ok, unique};
use ports::{ErrorKind, Event, EventBus};

/// Runs every event bus check against `bus`. The suite cannot see what was delivered; an
/// adapter's own tests check that (the embedded bus keeps its events).
pub async fn event_bus_suite(bus: &dyn EventBus) {
    let run = unique("run-");
    let event = |detail: String| Event {
        source: "lifeboat.testkit".into(),
        detail_type: "Conformance Check".into(),
        detail,
    };
    let good = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| {
                event(format!(
                    r#"{{"run":"{run}","n":{i},"nested":{{"ok":true,"list":[1,2]}}}}"#
                ))
            })
            .collect()
    };

    assert_ok(bus.put_events(&good(1)).await, "one event");
    assert_ok(bus.put_events(&good(10)).await, "ten events");
    assert_ok(
        bus.put_events(&[event("{}".into())]).await,
        "an empty object as detail",
    );
    assert_ok(
        bus.put_events(&[event(" {\n \"spaced\" : \"é ☃\" } ".into())])
            .await,
        "whitespace and non-ASCII in a detail",
    );
    assert_kind(
        bus.put_events(&good(11)).await,
        ErrorKind::InvalidInput,
        "eleven events",
    );

    for bad in [
        "[]",
        "[{}]",
        "42",
        "\"text\"",
        "null",
        "true",
        "",
        "not json",
        "{",
        r#"{"a":1} x"#,
    ] {
        let mut batch = good(2);
        batch.push(event(bad.to_string()));
        assert_kind(
            bus.put_events(&batch).await,
            ErrorKind::InvalidInput,
            &format!("detail {bad:?}"),
        );
    }
}
