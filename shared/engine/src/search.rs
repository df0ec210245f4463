//! Metadata search: sender, subject, folder, file name and date range, over one snapshot
//! or every snapshot of an account. Connectors put the searchable fields in an item's
//! metadata under the keys `from` and `subject` (see [`crate::connector`]).
//!
//! It walks snapshot trees; a folder unchanged between snapshots is one node, read once,
//! and an item found in several snapshots is shown once, with the newest snapshot that
//! has it. A full-text index is a later addition.

use crate::{Engine, EntryView, Error, Result, TaskRecord};
use chrono::NaiveDate;
use domain::{AccountId, ItemPath, SnapshotId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use vault::{AccountVault, BlobId, BlobRef, EntryKind, Node};

/// The most results one search returns.
pub const MAX_RESULTS: usize = 1000;

/// What to look for. Every field is optional; the given ones must all match.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SearchQuery {
    /// Only this account (all accounts of the task when absent).
    pub account: Option<String>,
    /// A snapshot id or `latest` (the default); `all` searches every snapshot.
    pub snapshot: Option<String>,
    /// Substring of the sender (`from`), case-insensitive.
    pub sender: Option<String>,
    /// Substring of the subject, case-insensitive.
    pub subject: Option<String>,
    /// Substring of the item's folder path, case-insensitive.
    pub folder: Option<String>,
    /// Substring of the item's name, case-insensitive.
    pub name: Option<String>,
    /// First day (UTC) of the item's own time (received, modified), inclusive.
    pub from: Option<NaiveDate>,
    /// Last day, inclusive.
    pub to: Option<NaiveDate>,
    /// At most this many results (100 by default, at most [`MAX_RESULTS`]).
    pub limit: Option<usize>,
}

/// One item found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchHit {
    #[serde(flatten)]
    pub entry: EntryView,
    pub account: AccountId,
    /// The newest snapshot searched that has the item in this version.
    pub snapshot: SnapshotId,
}

/// What a search found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
    /// The limit was reached: there may be more.
    pub truncated: bool,
}

fn contains(hay: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
}

struct Walk<'a> {
    q: &'a SearchQuery,
    /// The query's sender, subject and days.
    filter: &'a domain::ItemFilter,
    nodes: &'a HashMap<BlobId, Arc<Node>>,
    seen: &'a mut HashSet<(String, BlobId)>,
    out: &'a mut Vec<SearchHit>,
    account: &'a AccountId,
    snapshot: &'a SnapshotId,
    limit: usize,
}

impl Walk<'_> {
    fn node(&mut self, node: &Node, at: &ItemPath) {
        for e in &node.entries {
            if self.out.len() >= self.limit {
                return;
            }
            let Ok(path) = at.join(&e.name) else { continue };
            match e.kind {
                EntryKind::Dir => {
                    if let Some(sub) = e.subtree.and_then(|s| self.nodes.get(&s.id).cloned()) {
                        self.node(&sub, &path);
                    }
                }
                _ => {
                    let hit = self.filter.matches(&e.meta, e.mtime_ns)
                        && contains(&at.to_string(), &self.q.folder)
                        && contains(&domain::escape(&e.name), &self.q.name);
                    if !hit {
                        continue;
                    }
                    let content = e.content.first().map(|c| c.id).unwrap_or(BlobId([0; 32]));
                    if !self.seen.insert((path.to_string(), content)) {
                        continue;
                    }
                    self.out.push(SearchHit {
                        entry: EntryView::new(&path, e),
                        account: self.account.clone(),
                        snapshot: self.snapshot.clone(),
                    });
                }
            }
        }
    }
}

impl Engine {
    /// Searches the snapshots of a task (one account or all) by metadata.
    ///
    /// # Errors
    /// `NotFound` for an account the task does not have or a snapshot not there; a
    /// storage failure.
    pub async fn search(&self, t: &TaskRecord, q: &SearchQuery) -> Result<SearchResults> {
        search(self, t, q).await
    }
}

async fn search(e: &Engine, t: &TaskRecord, q: &SearchQuery) -> Result<SearchResults> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_RESULTS);
    let filter = domain::ItemFilter {
        sender: q.sender.clone(),
        subject: q.subject.clone(),
        since: q.from,
        until: q.to,
    };
    let accounts = match &q.account {
        Some(a) => {
            let a = AccountId::new(a)?;
            e.account(t, &a).await?;
            vec![a]
        }
        None => e.accounts(t).await?,
    };
    let vault = e.vault(t).await?;
    let spec = q.snapshot.as_deref().unwrap_or("latest");
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut nodes: HashMap<BlobId, Arc<Node>> = HashMap::new();
    for a in &accounts {
        let snaps = if spec == "all" {
            let mut all = vault.account(a).snapshots().await?;
            all.reverse(); // newest first: a hit names the newest snapshot that has it
            all
        } else {
            match e.resolve_snapshot(t, spec, Some(a)).await {
                Ok(s) => vec![s],
                // An account never backed up has nothing to find.
                Err(Error::NotFound(_)) if spec == "latest" => continue,
                Err(err) => return Err(err),
            }
        };
        for s in snaps {
            let root: BlobRef = s.root();
            if !nodes.contains_key(&root.id) {
                // Only nodes not yet read are fetched: unchanged folders are shared.
                let more = load_missing(&vault.account(a), &root, &nodes).await?;
                nodes.extend(more);
            }
            let Some(root_node) = nodes.get(&root.id).cloned() else {
                continue;
            };
            let snapshot = s.id.clone();
            let mut w = Walk {
                q,
                filter: &filter,
                nodes: &nodes,
                seen: &mut seen,
                out: &mut out,
                account: a,
                snapshot: &snapshot,
                limit,
            };
            w.node(&root_node, &ItemPath::root());
            if out.len() >= limit {
                break;
            }
        }
    }
    let truncated = out.len() >= limit;
    Ok(SearchResults {
        results: out,
        truncated,
    })
}

async fn load_missing(
    vault: &AccountVault,
    root: &BlobRef,
    have: &HashMap<BlobId, Arc<Node>>,
) -> Result<HashMap<BlobId, Arc<Node>>> {
    let mut got = HashMap::new();
    let mut level = vec![*root];
    while !level.is_empty() {
        let mut next = Vec::new();
        for r in level {
            if have.contains_key(&r.id) || got.contains_key(&r.id) {
                continue;
            }
            let node = vault.read_tree(&r).await?;
            for e in &node.entries {
                if let Some(s) = e.subtree {
                    next.push(s);
                }
            }
            got.insert(r.id, Arc::new(node));
        }
        level = next;
    }
    Ok(got)
}
