//! The simulated organisation: users (some suspended), personal accounts, and each one's
//! Gmail mailbox with its labels, messages and history records. History ids grow with
//! random gaps, as Gmail documents ("not contiguous with random gaps"), so that a client
//! that assumes `+1` steps fails here as it would against Google.

use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

/// A user of the Workspace domain, or a personal account (`workspace == false`).
#[derive(Clone, Debug)]
pub struct User {
    /// The Directory API's numeric id, as a string.
    pub id: String,
    pub email: String,
    pub given: String,
    pub family: String,
    pub admin: bool,
    pub suspended: bool,
    pub workspace: bool,
}

/// A label of a mailbox (`labels.list` shape).
#[derive(Clone, Debug)]
pub struct Label {
    pub id: String,
    pub name: String,
    /// `system` or `user`.
    pub kind: &'static str,
}

/// A message as Gmail holds it: the raw RFC 822 bytes exactly as delivered.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub thread_id: String,
    pub label_ids: Vec<String>,
    pub raw: Vec<u8>,
    /// Milliseconds since the epoch.
    pub internal_date: i64,
    /// The last history record that modified it.
    pub history_id: u64,
}

/// The kinds of change `history.list` reports, by their `historyTypes` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    MessageAdded,
    MessageDeleted,
    LabelAdded,
    LabelRemoved,
}

impl Change {
    pub fn type_name(self) -> &'static str {
        match self {
            Change::MessageAdded => "messageAdded",
            Change::MessageDeleted => "messageDeleted",
            Change::LabelAdded => "labelAdded",
            Change::LabelRemoved => "labelRemoved",
        }
    }
}

/// One history record: one change to one message, with the message's labels after it
/// (what Gmail puts in `messagesAdded[].message` and `labelsAdded[].message`) and, for
/// label changes, the labels added or removed.
#[derive(Clone, Debug)]
pub struct History {
    pub id: u64,
    pub change: Change,
    pub message_id: String,
    pub thread_id: String,
    pub label_ids: Vec<String>,
    pub changed_labels: Vec<String>,
}

/// One user's mailbox.
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub labels: Vec<Label>,
    pub messages: BTreeMap<String, Message>,
    pub history: Vec<History>,
    /// The mailbox's current history id.
    pub history_id: u64,
    /// History ids below this one are no longer kept: a `startHistoryId` under it answers 404.
    pub oldest_history: u64,
}

/// The system labels every Gmail mailbox has.
pub const SYSTEM_LABELS: &[&str] = &[
    "INBOX",
    "SENT",
    "DRAFT",
    "SPAM",
    "TRASH",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
];

impl Mailbox {
    pub fn new(rng: &mut StdRng) -> Self {
        let start = rng.gen_range(1_000..100_000);
        Mailbox {
            labels: SYSTEM_LABELS
                .iter()
                .map(|l| Label {
                    id: (*l).to_string(),
                    name: (*l).to_string(),
                    kind: "system",
                })
                .collect(),
            messages: BTreeMap::new(),
            history: Vec::new(),
            history_id: start,
            oldest_history: start,
        }
    }

    /// The next history id, a random step above the current one.
    fn step(&mut self, rng: &mut StdRng, max_gap: u64) -> u64 {
        self.history_id += 1 + rng.gen_range(0..=max_gap);
        self.history_id
    }

    fn record(
        &mut self,
        rng: &mut StdRng,
        max_gap: u64,
        change: Change,
        id: &str,
        changed: Vec<String>,
    ) -> u64 {
        let h = self.step(rng, max_gap);
        let (thread_id, label_ids) = match self.messages.get_mut(id) {
            Some(m) => {
                m.history_id = h;
                (m.thread_id.clone(), m.label_ids.clone())
            }
            None => (id.to_string(), Vec::new()),
        };
        self.history.push(History {
            id: h,
            change,
            message_id: id.to_string(),
            thread_id,
            label_ids,
            changed_labels: changed,
        });
        h
    }

    pub fn add_message(&mut self, rng: &mut StdRng, max_gap: u64, m: Message) {
        let id = m.id.clone();
        self.messages.insert(id.clone(), m);
        self.record(rng, max_gap, Change::MessageAdded, &id, Vec::new());
    }

    /// Deletes a message for good (not trashing: that is a label change).
    pub fn delete_message(&mut self, rng: &mut StdRng, max_gap: u64, id: &str) -> bool {
        let Some(m) = self.messages.remove(id) else {
            return false;
        };
        let h = self.step(rng, max_gap);
        self.history.push(History {
            id: h,
            change: Change::MessageDeleted,
            message_id: m.id,
            thread_id: m.thread_id,
            label_ids: m.label_ids,
            changed_labels: Vec::new(),
        });
        true
    }

    /// Adds and removes labels of a message, one history record per kind of change.
    pub fn modify(
        &mut self,
        rng: &mut StdRng,
        max_gap: u64,
        id: &str,
        add: &[&str],
        remove: &[&str],
    ) -> bool {
        let Some(m) = self.messages.get_mut(id) else {
            return false;
        };
        let added: Vec<String> = add
            .iter()
            .filter(|l| !m.label_ids.iter().any(|x| x == *l))
            .map(|l| l.to_string())
            .collect();
        m.label_ids.extend(added.iter().cloned());
        let removed: Vec<String> = remove
            .iter()
            .filter(|l| m.label_ids.iter().any(|x| x == *l))
            .map(|l| l.to_string())
            .collect();
        m.label_ids.retain(|l| !removed.contains(l));
        if !added.is_empty() {
            self.record(rng, max_gap, Change::LabelAdded, id, added);
        }
        if !removed.is_empty() {
            self.record(rng, max_gap, Change::LabelRemoved, id, removed);
        }
        true
    }

    /// Forgets every history record so far: any earlier `startHistoryId` answers 404, as
    /// when Gmail has not kept a week-old history.
    pub fn expire_history(&mut self) {
        self.history.clear();
        self.oldest_history = self.history_id;
    }
}
