//! The queue suite: send, receive, delete; the visibility timeout; receive counts and the
//! dead-letter queue; SQS's batch and size limits.

use crate::{assert_kind, assert_ok, unique, Patience};
use ports::{ErrorKind, Queue, QueueMessage, MAX_MESSAGE_BYTES, QUEUE_MAX_BATCH};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

/// How often the suite asks again while waiting for a message to show.
const POLL_STEP: Duration = Duration::from_millis(50);

/// Long enough that a received message stays hidden for the rest of a check.
const LONG_VISIBILITY: Duration = Duration::from_secs(60);

/// Runs every queue check. `make(max_receives)` returns a fresh, empty queue whose
/// messages go to the dead-letter queue once received more than `max_receives` times.
///
/// `visibility` is the short visibility timeout the checks wait out: 200 ms suits an
/// in-process queue; SQS counts whole seconds, so its adapter passes one second.
pub async fn queue_suite<F, Fut>(make: F, visibility: Duration)
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Box<dyn Queue>>,
{
    send_receive_delete(&*make(5).await).await;
    receive_honours_max(&*make(5).await).await;
    visibility_timeout(&*make(5).await, visibility).await;
    dead_letter(&*make(2).await, visibility).await;
    limits(&*make(5).await).await;
}

/// How long to wait for something that should show now or after one visibility timeout.
fn wait_for(visibility: Duration) -> Duration {
    visibility * 5 + Duration::from_secs(5)
}

/// Receives (hiding what comes for `visibility`) until `n` messages came or `wait` ran out,
/// and returns what came.
async fn receive_n(
    q: &dyn Queue,
    n: usize,
    visibility: Duration,
    wait: Duration,
) -> Vec<QueueMessage> {
    let mut got = Vec::new();
    let patience = Patience::new(wait, POLL_STEP);
    loop {
        let want = (n - got.len()).min(QUEUE_MAX_BATCH);
        let batch = assert_ok(q.receive(want, visibility).await, "receive");
        assert!(batch.len() <= want, "receive returned more than max");
        got.extend(batch);
        if got.len() >= n || !patience.again().await {
            break;
        }
    }
    got
}

/// One receive that must return nothing (the queue is empty or everything is hidden).
async fn assert_none_visible(q: &dyn Queue, what: &str) {
    let got = assert_ok(q.receive(QUEUE_MAX_BATCH, LONG_VISIBILITY).await, what);
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert!(
        got.is_empty(),
        "{what}: expected no message, got {bodies:?}"
    );
}

fn bodies(msgs: &[QueueMessage]) -> BTreeSet<String> {
    msgs.iter().map(|m| m.body.clone()).collect()
}

async fn send_receive_delete(q: &dyn Queue) {
    let tag = unique("srd-");
    let sent: Vec<String> = vec![
        format!("{tag} one"),
        format!("{tag} two, unicode: é ☃ 𝄞"),
        format!("{{\"json\":\"{tag}\",\"n\":3}}"),
    ];
    assert_ok(q.send_batch(&sent).await, "send three");
    let got = receive_n(q, 3, LONG_VISIBILITY, wait_for(Duration::ZERO)).await;
    assert_eq!(
        bodies(&got),
        sent.iter().cloned().collect(),
        "bodies come back unchanged"
    );
    assert!(
        got.iter().all(|m| m.receive_count == 1),
        "first receive counts 1"
    );
    let receipts: BTreeSet<&str> = got.iter().map(|m| m.receipt.as_str()).collect();
    assert_eq!(receipts.len(), 3, "each message has its own receipt");
    assert_none_visible(q, "receive while all are hidden").await;
    for m in &got {
        assert_ok(q.delete(&m.receipt).await, "delete");
    }
    assert_none_visible(q, "receive after delete").await;
    assert!(
        assert_ok(q.dead_letters().await, "dead_letters").is_empty(),
        "no dead letters"
    );
}

async fn receive_honours_max(q: &dyn Queue) {
    let sent: Vec<String> = (0..4).map(|i| format!("max {i}")).collect();
    assert_ok(q.send_batch(&sent).await, "send four");
    let patience = Patience::new(wait_for(Duration::ZERO), POLL_STEP);
    let one = loop {
        let got = assert_ok(q.receive(1, LONG_VISIBILITY).await, "receive one");
        assert!(got.len() <= 1, "receive(1) returned {} messages", got.len());
        if let Some(m) = got.into_iter().next() {
            break m;
        }
        assert!(patience.again().await, "a message arrives");
    };
    assert_ok(q.delete(&one.receipt).await, "delete");
    let rest = receive_n(q, 3, LONG_VISIBILITY, wait_for(Duration::ZERO)).await;
    assert_eq!(rest.len(), 3, "the other three arrive");
    assert!(
        !bodies(&rest).contains(&one.body),
        "a received message stays hidden"
    );
}

async fn visibility_timeout(q: &dyn Queue, visibility: Duration) {
    let body = unique("vis-");
    assert_ok(q.send_batch(std::slice::from_ref(&body)).await, "send");
    let first = receive_n(q, 1, visibility, wait_for(visibility)).await;
    assert_eq!(first.len(), 1, "the message arrives");
    let first = &first[0];
    assert_eq!(
        (first.body.as_str(), first.receive_count),
        (body.as_str(), 1)
    );
    let again = assert_ok(
        q.receive(QUEUE_MAX_BATCH, visibility).await,
        "receive at once",
    );
    assert!(again.is_empty(), "hidden during the visibility timeout");

    let second = receive_n(q, 1, LONG_VISIBILITY, wait_for(visibility)).await;
    assert_eq!(
        second.len(),
        1,
        "the message reappears after the visibility timeout"
    );
    let second = &second[0];
    assert_eq!(second.body, body);
    assert_eq!(
        second.receive_count, 2,
        "receive_count counts the second receive"
    );
    assert_ne!(
        second.receipt, first.receipt,
        "a new receive brings a new receipt"
    );

    assert_ok(
        q.delete(&first.receipt).await,
        "a stale receipt is ignored, not an error",
    );
    assert_ok(
        q.delete(&second.receipt).await,
        "delete with the current receipt",
    );
    tokio::time::sleep(visibility * 2).await;
    assert_none_visible(q, "a deleted message does not come back").await;
}

async fn dead_letter(q: &dyn Queue, visibility: Duration) {
    let poison = unique("poison-");
    let fine = unique("fine-");
    assert_ok(q.send_batch(std::slice::from_ref(&poison)).await, "send");
    for n in 1..=2u32 {
        let got = receive_n(q, 1, visibility, wait_for(visibility)).await;
        assert_eq!(got.len(), 1, "receive {n} of a queue that allows 2");
        assert_eq!(
            (got[0].body.as_str(), got[0].receive_count),
            (poison.as_str(), n)
        );
    }
    assert!(
        assert_ok(q.dead_letters().await, "dead_letters").is_empty(),
        "not dead yet"
    );
    assert_ok(
        q.send_batch(std::slice::from_ref(&fine)).await,
        "send a healthy one",
    );
    // The third receive moves the message aside instead of returning it.
    let mut healthy = None;
    let patience = Patience::new(wait_for(visibility), POLL_STEP);
    let dead = loop {
        for m in assert_ok(q.receive(QUEUE_MAX_BATCH, LONG_VISIBILITY).await, "receive") {
            assert_ne!(m.body, poison, "a message past the limit is not returned");
            assert_eq!(m.body, fine);
            healthy = Some(m);
        }
        let dead = assert_ok(q.dead_letters().await, "dead_letters");
        if dead.contains(&poison) && healthy.is_some() {
            break dead;
        }
        assert!(
            patience.again().await,
            "the poison message reaches the dead-letter queue; the healthy one arrives"
        );
    };
    assert_eq!(
        dead,
        vec![poison.clone()],
        "only the poison message is dead"
    );
    if let Some(m) = healthy {
        assert_ok(q.delete(&m.receipt).await, "delete the healthy one");
    }
    tokio::time::sleep(visibility * 2).await;
    assert_none_visible(q, "nothing left after dead-lettering").await;
}

async fn limits(q: &dyn Queue) {
    let tag = unique("lim-");
    assert_kind(
        q.send_batch(&[]).await,
        ErrorKind::InvalidInput,
        "an empty batch",
    );
    let eleven: Vec<String> = (0..QUEUE_MAX_BATCH + 1)
        .map(|i| format!("{tag} {i}"))
        .collect();
    assert_kind(
        q.send_batch(&eleven).await,
        ErrorKind::InvalidInput,
        "eleven messages",
    );
    let oversized = vec![format!("{tag} ok"), "x".repeat(MAX_MESSAGE_BYTES + 1)];
    assert_kind(
        q.send_batch(&oversized).await,
        ErrorKind::InvalidInput,
        "a message over MAX_MESSAGE_BYTES",
    );
    // Each message fits, the batch does not: SQS limits the batch's total too.
    let heavy = vec![
        "a".repeat(MAX_MESSAGE_BYTES / 2 + 1),
        "b".repeat(MAX_MESSAGE_BYTES / 2),
    ];
    assert_kind(
        q.send_batch(&heavy).await,
        ErrorKind::InvalidInput,
        "a batch over MAX_MESSAGE_BYTES in all",
    );
    assert_none_visible(q, "a refused batch sends nothing").await;

    let ten: Vec<String> = eleven[..QUEUE_MAX_BATCH].to_vec();
    assert_ok(q.send_batch(&ten).await, "ten messages");
    let got = receive_n(
        q,
        QUEUE_MAX_BATCH,
        LONG_VISIBILITY,
        wait_for(Duration::ZERO),
    )
    .await;
    assert_eq!(
        bodies(&got),
        ten.iter().cloned().collect(),
        "the ten arrive"
    );
    for m in &got {
        assert_ok(q.delete(&m.receipt).await, "delete");
    }

    let largest = vec!["y".repeat(MAX_MESSAGE_BYTES)];
    assert_ok(
        q.send_batch(&largest).await,
        "a message of exactly MAX_MESSAGE_BYTES",
    );
    let got = receive_n(q, 1, LONG_VISIBILITY, wait_for(Duration::ZERO)).await;
    assert_eq!(got.len(), 1, "the largest message arrives");
    assert!(
        got[0].body == largest[0],
        "the largest message arrives whole"
    );
    assert_ok(q.delete(&got[0].receipt).await, "delete");
}
