//! The simulated organisation: users and their mailboxes, drives, sites, and the clock and
//! change sequence that every delta query is measured against.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use serde_json::{Map, Value};

use crate::drive::{Drive, UploadSession};
use crate::mail::Message;
use crate::sites::Site;
use crate::store::{Seq, Store};

#[derive(Clone, Debug)]
pub struct User {
    pub idx: usize,
    pub id: String,
    pub display_name: String,
    pub given_name: String,
    pub surname: String,
    pub upn: String,
    pub job_title: String,
    pub drive_id: String,
}

/// A JSON object as the client sent it (contacts, events, tasks): Graph echoes back what
/// it was given plus the properties it computes.
pub type Doc = Map<String, Value>;

pub struct Mailbox {
    pub mail: Store<Message>,
    pub contacts: Store<Doc>,
    pub calendars: Store<Doc>,
    pub todo: Store<Doc>,
}

pub struct Sim {
    pub seq: Seq,
    pub day: u32,
    pub start: DateTime<Utc>,
    /// Raised to invalidate every delta token issued so far (`/_sim/expire-delta`).
    pub delta_epoch: u64,
    pub tenant_id: String,
    pub domains: Vec<String>,
    pub users: Vec<User>,
    pub mailboxes: Vec<Mailbox>,
    pub drives: BTreeMap<String, Drive>,
    pub sites: Vec<Site>,
    pub uploads: HashMap<String, UploadSession>,
    pub att_uploads: HashMap<String, crate::mail::AttUpload>,
    pub rng: StdRng,
    pub hostname: String,
}

impl Sim {
    pub fn next_seq(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    /// The simulated time: the start date plus the days advanced, plus the sequence in
    /// seconds so that successive changes within a day have increasing timestamps.
    pub fn now(&self) -> DateTime<Utc> {
        self.start + Duration::days(self.day as i64) + Duration::seconds((self.seq % 80_000) as i64)
    }

    /// A user by object id or user principal name (Graph accepts both, case-insensitively
    /// for the name).
    pub fn user(&self, id: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|u| u.id == id || u.upn.eq_ignore_ascii_case(id))
    }
}

pub type Bytes = Arc<Vec<u8>>;
