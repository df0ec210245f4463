//! Gmail backup by Gmail's own change tracking, as its synchronisation guide describes:
//! a full listing (`messages.list` with spam and trash, then `messages.get format=raw` for
//! each message not stored yet) from the profile's `historyId` taken *before* the listing,
//! then, day after day, `history.list` from the last history id: added messages fetched,
//! deleted ones removed, label changes applied to the stored metadata without fetching the
//! message again. A history id Gmail no longer keeps (404) starts a full listing again that
//! fetches only what is not stored (messages stored before are moved aside and brought
//! back as they are listed; what is left aside was deleted meanwhile).
//!
//! Every message that could not be fetched is recorded with the snapshot and kept in the
//! cursor's `failed` set, and fetched again by every later run until it is stored (or
//! Gmail says it is gone). A run out of time pauses between pages, with a cursor that goes
//! on from there.

pub mod message;

use crate::client::{Fail, Google, Method, Who};
use engine::AccountTree;
use futures::StreamExt;
use message::{mail_folder, path, resync_folder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Messages fetched at once for one mailbox. Gmail does not publish its per-user
/// concurrency limit (it answers 429 "too many concurrent requests" past it); eight keeps
/// well under what its client libraries' batch guidance implies, and the quota pacer, not
/// concurrency, is what bounds the rate.
const CONCURRENCY: usize = 8;
/// Messages fetched before they are handed to the tree: bounds the bytes held at once.
const CHUNK: usize = 64;
/// The largest page Gmail serves for `messages.list` and `history.list`.
const PAGE: u32 = 500;
/// The most failed messages the cursor remembers one by one. The cursor travels with
/// every snapshot and checkpoint, so it must stay small; past this many (an outage that
/// failed most of a mailbox), the next run lists the mailbox again instead, which fetches
/// every message not stored, the failed ones among them.
const MAX_FAILED: usize = 5_000;

/// Where the Gmail backup of one account stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GmailCursor {
    /// The history id the next incremental run starts after; `None` before the first
    /// full listing is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<String>,
    /// A full listing under way (a first backup, or after an expired history id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    /// Messages whose fetch failed, fetched again by every run until stored.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub failed: BTreeSet<String>,
}

/// A full listing under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The profile's history id taken before the listing began: where history goes on.
    pub start: String,
    /// The next page of `messages.list`; `None` for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Whether messages stored before were moved aside to be matched (a resync).
    #[serde(default)]
    pub resync: bool,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Done,
    Paused,
}

/// One Gmail run over one account's tree.
pub struct Run<'a> {
    pub g: &'a Google,
    pub who: Who,
    /// `{gmail}/gmail/v1/users/me`.
    pub base: String,
    pub tree: &'a mut AccountTree,
    pub cur: &'a mut GmailCursor,
    names: HashMap<String, String>,
    worked: bool,
}

enum History {
    Done,
    Paused,
    Expired,
}

/// What the history of one message comes to within a page of records.
enum Action {
    /// Added (with its labels after the page's changes).
    Add(Vec<String>),
    /// Labels changed: the labels it has now.
    Labels(Vec<String>),
    Delete,
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

impl<'a> Run<'a> {
    pub fn new(
        g: &'a Google,
        who: Who,
        gmail_url: &str,
        tree: &'a mut AccountTree,
        cur: &'a mut GmailCursor,
    ) -> Self {
        Run {
            g,
            who,
            base: format!("{}/gmail/v1/users/me", gmail_url.trim_end_matches('/')),
            tree,
            cur,
            names: HashMap::new(),
            worked: false,
        }
    }

    async fn get(&self, method: Method, url: &str) -> Result<Value, Fail> {
        self.g.get_json(&self.who, method, url).await
    }

    fn out_of_time(&self) -> bool {
        self.worked && self.tree.time_is_up()
    }

    /// Brings the account's `Mail/` up to date.
    ///
    /// # Errors
    /// A listing or history request that failed for good, refused credentials, storage.
    pub async fn backup(mut self) -> engine::Result<Flow> {
        // Only what failed in earlier runs is tried again at the end: what fails in this
        // one has just had all its attempts.
        let earlier = self.cur.failed.clone();
        self.labels().await?;
        loop {
            if self.cur.listing.is_some() {
                if self.full().await? == Flow::Paused {
                    return Ok(Flow::Paused);
                }
            } else if let Some(h) = self.cur.history_id.clone() {
                match self.history(&h).await? {
                    History::Done => break,
                    History::Paused => return Ok(Flow::Paused),
                    History::Expired => {
                        tracing::info!("the Gmail history id expired; listing the mailbox again");
                        self.start_listing().await?;
                    }
                }
            } else {
                self.start_listing().await?;
            }
        }
        self.retry_failed(earlier).await?;
        if self.cur.failed.len() > MAX_FAILED {
            tracing::warn!(
                failed = self.cur.failed.len(),
                "too many failed messages to keep one by one; the next run lists the mailbox"
            );
            self.cur.failed.clear();
            self.cur.history_id = None;
        }
        Ok(Flow::Done)
    }

    /// Labels by id, kept as the `Mail` folder's metadata (`label:<id>` = name) and used
    /// to name each message's labels.
    async fn labels(&mut self) -> engine::Result<()> {
        let v = self
            .get(Method::Labels, &format!("{}/labels", self.base))
            .await?;
        let mut meta = Vec::new();
        for l in v["labels"].as_array().into_iter().flatten() {
            let (id, name) = (s(l, "id"), s(l, "name"));
            if id.is_empty() {
                continue;
            }
            meta.push((format!("label:{id}"), name.clone()));
            self.names.insert(id, name);
        }
        meta.sort();
        self.tree.set_folder_meta(&mail_folder(), meta).await?;
        Ok(())
    }

    /// Takes the profile's history id, then begins a full listing; messages already
    /// stored are moved aside to be matched against it.
    async fn start_listing(&mut self) -> engine::Result<()> {
        let p = self
            .get(Method::Profile, &format!("{}/profile", self.base))
            .await?;
        let start = s(&p, "historyId");
        if start.is_empty() {
            return Err(Fail::Protocol("Gmail's profile has no historyId".into()).into());
        }
        let mail = mail_folder();
        let stored: Vec<Vec<u8>> = self.tree.items(&mail).await?.map(|e| e.name).collect();
        let resync = !stored.is_empty() || self.tree.has_folder(&resync_folder()).await?;
        if !stored.is_empty() {
            let aside = resync_folder();
            self.tree.ensure_folder(&aside).await?;
            for name in stored {
                self.tree
                    .rename(&mail.join(&name)?, &aside.join(&name)?)
                    .await?;
            }
        }
        self.cur.history_id = None;
        self.cur.listing = Some(Listing {
            start,
            page: None,
            resync,
        });
        Ok(())
    }

    /// Lists the mailbox page by page, fetching what is not stored.
    async fn full(&mut self) -> engine::Result<Flow> {
        loop {
            let listing = self.cur.listing.clone().expect("a listing under way");
            let mut url = format!(
                "{}/messages?includeSpamTrash=true&maxResults={PAGE}",
                self.base
            );
            if let Some(p) = &listing.page {
                url.push_str(&format!("&pageToken={}", enc(p)));
            }
            let v = match self.get(Method::List, &url).await {
                Ok(v) => v,
                // A page token from a paused run that Gmail no longer takes: list again
                // from the start; what is stored is not fetched again.
                Err(Fail::Status { status: 400, .. }) if listing.page.is_some() => {
                    self.set_page(None);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (mail, aside) = (mail_folder(), resync_folder());
            let mut fetch = Vec::new();
            let mut relabel = Vec::new();
            for m in v["messages"].as_array().into_iter().flatten() {
                let id = s(m, "id");
                let Some(p) = path(&mail, &id) else { continue };
                if self.tree.item(&p).await?.is_some() {
                    continue;
                }
                if listing.resync {
                    let q = path(&aside, &id).expect("same id");
                    if self.tree.item(&q).await?.is_some() {
                        self.tree.rename(&q, &p).await?;
                        relabel.push(id);
                        continue;
                    }
                }
                fetch.push(id);
            }
            self.fetch(fetch).await?;
            self.relabel(relabel).await?;
            self.worked = true;
            let next = v["nextPageToken"].as_str().filter(|t| !t.is_empty());
            match next {
                Some(t) => self.set_page(Some(t.to_string())),
                None => {
                    if listing.resync && self.tree.has_folder(&aside).await? {
                        self.tree.remove(&aside).await?;
                    }
                    self.cur.history_id = Some(listing.start);
                    self.cur.listing = None;
                    return Ok(Flow::Done);
                }
            }
            if self.out_of_time() {
                self.tree.pause();
                return Ok(Flow::Paused);
            }
        }
    }

    fn set_page(&mut self, page: Option<String>) {
        if let Some(l) = self.cur.listing.as_mut() {
            l.page = page;
        }
    }

    /// Applies history after `start`, page by page.
    async fn history(&mut self, start: &str) -> engine::Result<History> {
        let mut page: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/history?startHistoryId={}&maxResults={PAGE}&historyTypes=messageAdded&historyTypes=messageDeleted&historyTypes=labelAdded&historyTypes=labelRemoved",
                self.base,
                enc(start)
            );
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={}", enc(p)));
            }
            let v = match self.get(Method::History, &url).await {
                Ok(v) => v,
                Err(f) if f.is_not_found() => return Ok(History::Expired),
                Err(f) => return Err(f.into()),
            };
            let records = v["history"].as_array().cloned().unwrap_or_default();
            self.apply(&records).await?;
            self.worked = true;
            match v["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => {
                    // Should the run stop here, the next one starts after the last record
                    // applied (page tokens belong to one listing).
                    if let Some(last) = records.last().map(|r| s(r, "id")).filter(|i| !i.is_empty())
                    {
                        self.cur.history_id = Some(last);
                    }
                    page = Some(t.to_string());
                    if self.out_of_time() {
                        self.tree.pause();
                        return Ok(History::Paused);
                    }
                }
                None => {
                    let h = s(&v, "historyId");
                    if !h.is_empty() {
                        self.cur.history_id = Some(h);
                    }
                    return Ok(History::Done);
                }
            }
        }
    }

    /// Applies one page of history records: each message's changes reduced to one action.
    async fn apply(&mut self, records: &[Value]) -> engine::Result<()> {
        let mut order: Vec<String> = Vec::new();
        let mut actions: HashMap<String, Action> = HashMap::new();
        let mut set = |id: String, a: Action, order: &mut Vec<String>| {
            if !actions.contains_key(&id) {
                order.push(id.clone());
            }
            let a = match (actions.remove(&id), a) {
                (Some(Action::Add(_)), Action::Labels(l)) => Action::Add(l),
                (_, a) => a,
            };
            actions.insert(id, a);
        };
        for r in records {
            let each = |k: &str| -> Vec<Value> {
                r.get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            for a in each("messagesAdded") {
                let m = &a["message"];
                set(s(m, "id"), Action::Add(message::label_ids(m)), &mut order);
            }
            for d in each("messagesDeleted") {
                set(s(&d["message"], "id"), Action::Delete, &mut order);
            }
            for l in each("labelsAdded").into_iter().chain(each("labelsRemoved")) {
                let m = &l["message"];
                set(
                    s(m, "id"),
                    Action::Labels(message::label_ids(m)),
                    &mut order,
                );
            }
        }
        let mail = mail_folder();
        let mut fetch = Vec::new();
        for id in order {
            let Some(p) = path(&mail, &id) else { continue };
            match actions.remove(&id).expect("ordered ids have actions") {
                Action::Delete => {
                    self.cur.failed.remove(&id);
                    if self.tree.item(&p).await?.is_some() {
                        self.tree.remove(&p).await?;
                    }
                }
                Action::Add(labels) | Action::Labels(labels) => {
                    if self.tree.item(&p).await?.is_some() {
                        self.set_labels(&p, &labels).await?;
                    } else {
                        fetch.push(id);
                    }
                }
            }
        }
        self.fetch(fetch).await
    }

    async fn set_labels(&mut self, p: &domain::ItemPath, labels: &[String]) -> engine::Result<()> {
        let pairs = message::label_meta(labels, &self.names);
        self.tree
            .update_item(p, |e| {
                message::set_labels(&mut e.meta, pairs);
            })
            .await?;
        Ok(())
    }

    /// Fetches `ids` (`format=raw`) and stores them; failures are recorded and kept.
    async fn fetch(&mut self, ids: Vec<String>) -> engine::Result<()> {
        let mail = mail_folder();
        for chunk in ids.chunks(CHUNK) {
            let got = self.get_many(chunk, "raw").await;
            for (id, answer) in got {
                let p = path(&mail, &id).expect("listed ids make paths");
                match answer {
                    Ok(m) => match m["raw"].as_str().and_then(message::decode_raw) {
                        Some(raw) => {
                            let info = message::info(&m, &raw, &self.names);
                            self.tree.put_item(&p, info, raw.into()).await?;
                            self.cur.failed.remove(&id);
                        }
                        None => {
                            self.tree.record_error(
                                &p,
                                "Gmail sent a message without readable raw content",
                            );
                            self.cur.failed.insert(id);
                        }
                    },
                    Err(f) => self.failed(&p, id, f)?,
                }
            }
        }
        Ok(())
    }

    /// Refreshes the labels of stored messages (`format=minimal`: no content).
    async fn relabel(&mut self, ids: Vec<String>) -> engine::Result<()> {
        let mail = mail_folder();
        for chunk in ids.chunks(CHUNK) {
            for (id, answer) in self.get_many(chunk, "minimal").await {
                let p = path(&mail, &id).expect("listed ids make paths");
                match answer {
                    Ok(m) => {
                        self.set_labels(&p, &message::label_ids(&m)).await?;
                        self.cur.failed.remove(&id);
                    }
                    Err(f) => self.failed(&p, id, f)?,
                }
            }
        }
        Ok(())
    }

    /// What a failed fetch means: gone (404: nothing to keep), credentials refused (the
    /// run stops), or one item to try again next run.
    fn failed(&mut self, p: &domain::ItemPath, id: String, f: Fail) -> engine::Result<()> {
        match f {
            // Deleted between its listing and its fetch: a later history record (or the
            // end of the listing) removes it, if it was stored.
            f if f.is_not_found() => {
                self.cur.failed.remove(&id);
                Ok(())
            }
            Fail::Auth(_) => Err(f.into()),
            f => {
                self.tree.record_error(p, f.to_string());
                self.cur.failed.insert(id);
                Ok(())
            }
        }
    }

    async fn get_many(&self, ids: &[String], format: &str) -> Vec<(String, Result<Value, Fail>)> {
        let base = &self.base;
        futures::stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let url = format!("{base}/messages/{}?format={format}", enc(&id));
                let r = self.get(Method::Get, &url).await;
                (id, r)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    /// Fetches again what failed in earlier runs: the content of messages not stored, the
    /// labels of those stored.
    async fn retry_failed(&mut self, earlier: BTreeSet<String>) -> engine::Result<()> {
        let mail = mail_folder();
        let (mut fetch, mut relabel) = (Vec::new(), Vec::new());
        let still: Vec<String> = earlier.intersection(&self.cur.failed).cloned().collect();
        for id in still {
            match path(&mail, &id) {
                None => {
                    self.cur.failed.remove(&id);
                }
                Some(p) if self.tree.item(&p).await?.is_some() => relabel.push(id),
                Some(_) => fetch.push(id),
            }
        }
        self.fetch(fetch).await?;
        self.relabel(relabel).await
    }
}

/// Percent-encodes a query value (page tokens are opaque and may hold any character).
fn enc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
