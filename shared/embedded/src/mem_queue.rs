//! `MemQueue`: the queue port in process memory, with SQS's visibility timeout, receive
//! counts, dead-letter queue and limits.

use async_trait::async_trait;
use ports::{Error, ErrorKind, Queue, QueueMessage, Result, QUEUE_MAX_BATCH};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// SQS's default `maxReceiveCount` when none is configured here.
const DEFAULT_MAX_RECEIVES: u32 = 5;

/// An in-process queue with a dead-letter queue, for one process and for tests.
///
/// Messages come in send order while visible; a received message is hidden for the
/// visibility timeout and comes back (with a higher receive count and a new receipt)
/// unless deleted. A message received `max_receives` times goes to the dead-letter list
/// at its next receive instead of being returned. Nothing survives the process.
#[derive(Debug)]
pub struct MemQueue {
    max_receives: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    messages: VecDeque<Stored>,
    dead: Vec<String>,
}

#[derive(Debug)]
struct Stored {
    id: u64,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    /// The receipt of the latest receive; older receipts are stale.
    receipt: Option<String>,
}

impl Default for MemQueue {
    fn default() -> Self {
        MemQueue::new(DEFAULT_MAX_RECEIVES)
    }
}

impl MemQueue {
    /// A queue whose messages are dead-lettered after `max_receives` receives (at least 1;
    /// 0 counts as 1, as SQS allows no less).
    pub fn new(max_receives: u32) -> Self {
        MemQueue {
            max_receives: max_receives.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Messages waiting, visible or not (not the dead letters).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every await-free step, so a poisoned lock is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

#[async_trait]
impl Queue for MemQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<()> {
        ports::check_batch(bodies)?;
        let now = Instant::now();
        let mut st = self.lock();
        for body in bodies {
            let id = st.next_id;
            st.next_id += 1;
            st.messages.push_back(Stored {
                id,
                body: body.clone(),
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<QueueMessage>> {
        if max == 0 || max > QUEUE_MAX_BATCH {
            return Err(invalid(format!(
                "receive takes 1 to {QUEUE_MAX_BATCH} messages, not {max}"
            )));
        }
        if visibility > MAX_VISIBILITY {
            return Err(invalid(format!(
                "visibility timeout {visibility:?} over SQS's 12 hours"
            )));
        }
        let now = Instant::now();
        let hidden_until = now + visibility;
        let mut out = Vec::new();
        let mut st = self.lock();
        let mut i = 0;
        while i < st.messages.len() && out.len() < max {
            let m = &mut st.messages[i];
            if m.visible_at > now {
                i += 1;
                continue;
            }
            if m.receive_count >= self.max_receives {
                if let Some(dead) = st.messages.remove(i) {
                    st.dead.push(dead.body);
                }
                continue;
            }
            m.receive_count += 1;
            m.visible_at = hidden_until;
            let receipt = format!("{}-{}", m.id, m.receive_count);
            m.receipt = Some(receipt.clone());
            out.push(QueueMessage {
                body: m.body.clone(),
                receipt,
                receive_count: m.receive_count,
            });
            i += 1;
        }
        Ok(out)
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some(i) = st
            .messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt))
        {
            st.messages.remove(i);
        }
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<String>> {
        Ok(self.lock().dead.clone())
    }
}
