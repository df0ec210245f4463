//! What one backup run of one account carries from service to service: the Graph client,
//! the tree being edited, the cursor, and two indexes of the tree (items by name, drive
//! entries by Graph id) through which a moved item is renamed instead of downloaded again.

use crate::client::{Fail, Graph};
use crate::names::{self, Cursor, Track};
use domain::ItemPath;
use engine::EntryKind;
use engine::{AccountTree, ItemInfo};
use serde_json::Value;
use std::collections::HashMap;

/// How a service's work ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Done,
    /// Time is up: the tree is paused and the cursor says where to go on.
    Paused,
}

pub struct Run<'a> {
    pub g: &'a Graph,
    pub tree: &'a mut AccountTree,
    pub cur: Cursor,
    /// `/users/{key}` or `/sites/{key}`.
    pub key: String,
    /// The mailbox whose concurrency limit Outlook requests count against.
    pub mailbox: Option<String>,
    /// Whether this run has applied at least one page: a run out of time pauses only after
    /// making progress, so that even a deadline already past moves the backup forward.
    pub worked: bool,
    /// Items removed from a collection, applied when the service is done: an item moved
    /// to a folder processed later must be found there and renamed, not fetched again.
    pub removals: Vec<ItemPath>,
    by_name: HashMap<Vec<u8>, ItemPath>,
    by_id: HashMap<String, ItemPath>,
    /// Answers asked for ahead of their turn, by the URL that asks them.
    prefetched: std::sync::Mutex<HashMap<String, Result<Value, Fail>>>,
}

impl<'a> Run<'a> {
    pub async fn new(
        g: &'a Graph,
        tree: &'a mut AccountTree,
        cur: Cursor,
        key: String,
    ) -> engine::Result<Self> {
        let mut run = Run {
            g,
            tree,
            cur,
            key,
            mailbox: None,
            worked: false,
            removals: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            prefetched: std::sync::Mutex::new(HashMap::new()),
        };
        run.reindex().await?;
        Ok(run)
    }

    /// Rebuilds both indexes from the tree.
    pub async fn reindex(&mut self) -> engine::Result<()> {
        self.by_name.clear();
        self.by_id.clear();
        let mut folders = self.tree.folder_paths().await?;
        folders.push(ItemPath::root());
        for f in folders {
            let fmeta = self.tree.folder_meta(&f).await?.unwrap_or_default();
            if let Some(id) = meta_of(&fmeta, "id") {
                self.by_id.insert(id.to_string(), f.clone());
            }
            for e in self.tree.items(&f).await? {
                let p = f.join(&e.name).expect("tree names are valid");
                if let Some(id) = meta_of(&e.meta, "id") {
                    self.by_id.insert(id.to_string(), p.clone());
                }
                self.by_name.insert(e.name, p);
            }
        }
        Ok(())
    }

    /// The folders the cursor knows whose key starts with `prefix` (one service's or one
    /// kind's), with their paths: what [`Run::reconcile`] compares the live list with.
    pub fn known_folders(&self, prefix: &str) -> Vec<(String, ItemPath)> {
        self.cur
            .folders
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, p)| (k.clone(), names::path(p)))
            .collect()
    }

    /// Asks for each `(url, mailbox-bound)` side by side, keeping the answers for
    /// [`Run::take_prefetched`]: the first requests of a user's services (one each, one
    /// after the other otherwise) then fill the mailbox's slots at once.
    pub async fn prefetch(&self, urls: &[(String, bool)]) {
        let g = self.g;
        let got = futures::future::join_all(urls.iter().map(|(url, outlook)| {
            let mailbox = if *outlook {
                self.mailbox.as_deref()
            } else {
                None
            };
            async move { (url.clone(), g.get_json(url, mailbox).await) }
        }))
        .await;
        self.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(got);
    }

    /// The answer to `url` if it was asked for ahead (once).
    pub fn take_prefetched(&self, url: &str) -> Option<Result<Value, Fail>> {
        self.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(url)
    }

    pub fn out_of_time(&self) -> bool {
        self.worked && self.tree.time_is_up()
    }

    /// Where an item of this name is now, if anywhere.
    pub async fn find_name(&mut self, name: &[u8]) -> engine::Result<Option<ItemPath>> {
        let Some(p) = self.by_name.get(name).cloned() else {
            return Ok(None);
        };
        Ok(self.tree.item(&p).await?.is_some().then_some(p))
    }

    /// Where the drive item or folder with Graph id `id` is now, if anywhere.
    pub async fn find_id(&mut self, id: &str) -> engine::Result<Option<ItemPath>> {
        let Some(p) = self.by_id.get(id).cloned() else {
            return Ok(None);
        };
        let meta = match self.tree.item(&p).await? {
            Some(e) if e.kind != EntryKind::Dir => Some(e.meta),
            _ => self.tree.folder_meta(&p).await?,
        };
        Ok(meta.filter(|m| meta_of(m, "id") == Some(id)).map(|_| p))
    }

    pub fn note(&mut self, path: &ItemPath, id: Option<&str>) {
        if let Some(name) = path.file_name() {
            self.by_name.insert(name.to_vec(), path.clone());
        }
        if let Some(id) = id {
            self.by_id.insert(id.to_string(), path.clone());
        }
    }

    /// Moves an item or folder and keeps the indexes and the cursor's paths in step.
    pub async fn rename(&mut self, from: &ItemPath, to: &ItemPath) -> engine::Result<()> {
        if from == to {
            return Ok(());
        }
        self.tree.rename(from, to).await?;
        for p in self.by_name.values_mut().chain(self.by_id.values_mut()) {
            if let Some(q) = rebase(p, from, to) {
                *p = q;
            }
        }
        for t in self.cur.tracks.values_mut() {
            if let Some(q) = rebase(&names::path(&t.p), from, to) {
                t.p = names::parts(&q);
            }
        }
        for p in self.cur.folders.values_mut() {
            if let Some(q) = rebase(&names::path(p), from, to) {
                *p = names::parts(&q);
            }
        }
        Ok(())
    }

    /// Replaces an existing item's metadata (a read flag, a category) without its content.
    pub async fn update_meta(&mut self, path: &ItemPath, info: &ItemInfo) -> engine::Result<bool> {
        self.tree
            .update_item(path, |e| {
                e.meta = info.meta.clone();
                e.fingerprint = info.fingerprint;
                e.mtime_ns = info.mtime_ns;
            })
            .await
    }

    /// Applies the removals collected so far.
    pub async fn flush_removals(&mut self) -> engine::Result<()> {
        for p in std::mem::take(&mut self.removals) {
            if self.tree.item(&p).await?.is_some() {
                self.tree.remove(&p).await?;
            }
        }
        Ok(())
    }

    pub fn track(&mut self, key: &str) -> Track {
        self.cur.tracks.get(key).cloned().unwrap_or_default()
    }

    pub fn set_track(&mut self, key: &str, t: Track) {
        self.cur.tracks.insert(key.to_string(), t);
    }

    /// Moves the items (not sub-folders) of `folder` to the staging folder of `key`, so
    /// that a full enumeration finds them there: equal ones come back without a download,
    /// and whatever is left when the round ends was deleted at the source.
    pub async fn stage_items(&mut self, folder: &ItemPath, key: &str) -> engine::Result<()> {
        let names: Vec<Vec<u8>> = self.tree.items(folder).await?.map(|e| e.name).collect();
        if names.is_empty() {
            return Ok(());
        }
        let staging = names::staging(key);
        self.tree.ensure_folder(&staging).await?;
        for n in names {
            let from = folder.join(&n)?;
            let to = staging.join(&n)?;
            self.rename(&from, &to).await?;
        }
        Ok(())
    }

    /// Reconciles folders of one service with what the source lists now: `live` is
    /// `(cursor key, path, metadata)`; `known` the cursor's paths of the same service.
    /// Renamed folders are moved (content kept), vanished ones removed, every live one
    /// exists with its metadata. Returns the keys whose tracking must start over.
    pub async fn reconcile(
        &mut self,
        live: &[Live],
        known: Vec<(String, ItemPath)>,
    ) -> engine::Result<Vec<String>> {
        let mut restart = Vec::new();
        // Renames first, shallow ones first, so a moved parent carries its children.
        let mut moves: Vec<(String, ItemPath, ItemPath)> = Vec::new();
        for (key, to, _) in live {
            if let Some((_, from)) = known.iter().find(|(k, _)| k == key) {
                if from != to {
                    moves.push((key.clone(), from.clone(), to.clone()));
                }
            }
        }
        moves.sort_by_key(|(_, _, to)| to.segments().len());
        for (key, from, to) in moves {
            // The cursor's paths move along with each rename; read the current one.
            let from = self.known_path(&key).unwrap_or(from);
            if from == to {
                continue;
            }
            if self.tree.has_folder(&from).await?
                && !self.tree.has_folder(&to).await?
                && !to.starts_with(&from)
            {
                self.rename(&from, &to).await?;
            } else {
                restart.push(key);
            }
        }
        for (key, old) in &known {
            if live.iter().any(|(k, _, _)| k == key) {
                continue;
            }
            let old = self.known_path(key).unwrap_or_else(|| old.clone());
            if live.iter().any(|(_, p, _)| p.starts_with(&old)) {
                // Another live folder now sits at or below this path: only the items of
                // the vanished folder go.
                let names: Vec<Vec<u8>> = self.tree.items(&old).await?.map(|e| e.name).collect();
                for n in names {
                    self.tree.remove(&old.join(&n)?).await?;
                }
            } else if !old.is_root() {
                self.tree.remove(&old).await?;
            }
            self.cur.tracks.remove(key);
            self.cur.folders.remove(key);
        }
        for (_, p, meta) in live {
            self.tree.ensure_folder(p).await?;
            self.tree.set_folder_meta(p, meta.clone()).await?;
        }
        Ok(restart)
    }

    fn known_path(&self, key: &str) -> Option<ItemPath> {
        self.cur
            .tracks
            .get(key)
            .map(|t| names::path(&t.p))
            .or_else(|| self.cur.folders.get(key).map(|p| names::path(p)))
    }
}

/// A folder the source lists now: its cursor key, its path and its metadata.
pub type Live = (String, ItemPath, Vec<(String, String)>);

pub fn meta_of<'m>(meta: &'m [(String, String)], key: &str) -> Option<&'m str> {
    meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `p` with its prefix `from` replaced by `to`, when it has that prefix.
pub fn rebase(p: &ItemPath, from: &ItemPath, to: &ItemPath) -> Option<ItemPath> {
    if !p.starts_with(from) {
        return None;
    }
    let mut q = to.clone();
    for s in &p.segments()[from.segments().len()..] {
        q = q.join(s).ok()?;
    }
    Some(q)
}
