//! The in-memory tree of one drive, and the bookkeeping every change needs: parents' cTags
//! move with their children, and deletions leave tombstones so that delta can report them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::store::Seq;
use crate::util::{quick_xor_hash, Content};

#[derive(Clone, Debug)]
pub struct DriveItem {
    pub key: u64,
    pub id: String,
    pub name: String,
    pub parent: Option<u64>,
    pub is_folder: bool,
    pub content: Option<Content>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub seq: Seq,
    pub version: u64,
    /// `quickXorHash` of the content, computed on first use: hashing a large generated file
    /// on every listing would make big benchmarks slow for no reason.
    pub hash: std::sync::OnceLock<String>,
}

impl DriveItem {
    pub fn hash(&self) -> Option<&str> {
        let c = self.content.as_ref()?;
        Some(self.hash.get_or_init(|| quick_xor_hash(c)))
    }
}

#[derive(Clone, Debug)]
pub struct DriveTombstone {
    pub seq: Seq,
    pub id: String,
    pub name: String,
    pub is_folder: bool,
    pub parent_id: String,
}

#[derive(Clone, Debug)]
pub struct Drive {
    pub id: String,
    pub name: String,
    /// `business` for a user's OneDrive, `documentLibrary` for a SharePoint library.
    pub drive_type: String,
    pub owner_name: String,
    pub owner_id: String,
    pub web_url: String,
    pub items: BTreeMap<u64, DriveItem>,
    pub by_id: HashMap<String, u64>,
    pub root: u64,
    pub tombstones: Vec<DriveTombstone>,
    pub next_key: u64,
}

impl Drive {
    // A drive has this many independent descriptive fields; a builder would add nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        name: &str,
        drive_type: &str,
        owner_name: &str,
        owner_id: &str,
        web_url: String,
        root_id: String,
        now: DateTime<Utc>,
        seq: Seq,
    ) -> Self {
        let mut d = Drive {
            id,
            name: name.to_string(),
            drive_type: drive_type.to_string(),
            owner_name: owner_name.to_string(),
            owner_id: owner_id.to_string(),
            web_url,
            items: BTreeMap::new(),
            by_id: HashMap::new(),
            root: 1,
            tombstones: Vec::new(),
            next_key: 2,
        };
        d.by_id.insert(root_id.clone(), 1);
        d.items.insert(
            1,
            DriveItem {
                key: 1,
                id: root_id,
                name: "root".into(),
                parent: None,
                is_folder: true,
                content: None,
                created: now,
                modified: now,
                seq,
                version: 1,
                hash: Default::default(),
            },
        );
        d
    }

    pub fn add(
        &mut self,
        id: String,
        parent: u64,
        name: &str,
        content: Option<Content>,
        now: DateTime<Utc>,
        seq: Seq,
    ) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(id.clone(), key);
        let is_folder = content.is_none();
        self.items.insert(
            key,
            DriveItem {
                key,
                id,
                name: name.to_string(),
                parent: Some(parent),
                is_folder,
                content,
                created: now,
                modified: now,
                seq,
                version: 1,
                hash: Default::default(),
            },
        );
        // A change below a folder changes the folder too (its cTag and size), so delta
        // reports the parents as well.
        self.bump_parents(parent, now, seq);
        key
    }

    pub fn bump_parents(&mut self, mut key: u64, now: DateTime<Utc>, seq: Seq) {
        loop {
            let Some(item) = self.items.get_mut(&key) else {
                return;
            };
            item.seq = seq;
            item.modified = now;
            match item.parent {
                Some(p) => key = p,
                None => return,
            }
        }
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.items
            .values()
            .find(|i| i.parent == Some(parent) && i.name.eq_ignore_ascii_case(name))
            .map(|i| i.key)
    }

    /// An item by path relative to `from` (`a/b/c.txt`).
    pub fn by_path(&self, from: u64, path: &str) -> Option<u64> {
        let mut key = from;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            key = self.child(key, part)?;
        }
        Some(key)
    }

    pub fn path_of(&self, key: u64) -> String {
        let mut parts = Vec::new();
        let mut k = self.items.get(&key).and_then(|i| i.parent);
        while let Some(p) = k {
            let item = &self.items[&p];
            if item.parent.is_some() {
                parts.push(item.name.clone());
            }
            k = item.parent;
        }
        parts.reverse();
        let mut s = "/drive/root:".to_string();
        for p in parts {
            s.push('/');
            s.push_str(&p);
        }
        s
    }

    pub fn size(&self, key: u64) -> u64 {
        let item = &self.items[&key];
        match &item.content {
            Some(c) => c.len(),
            None => self
                .items
                .values()
                .filter(|i| i.parent == Some(key))
                .map(|i| self.size(i.key))
                .sum(),
        }
    }

    /// Deletes an item and everything under it, leaving a tombstone for each.
    pub fn delete(&mut self, key: u64, now: DateTime<Utc>, seq: Seq) {
        let children: Vec<u64> = self
            .items
            .values()
            .filter(|i| i.parent == Some(key))
            .map(|i| i.key)
            .collect();
        for c in children {
            self.delete(c, now, seq);
        }
        if let Some(item) = self.items.remove(&key) {
            self.by_id.remove(&item.id);
            let parent_id = item
                .parent
                .and_then(|p| self.items.get(&p))
                .map(|p| p.id.clone())
                .unwrap_or_default();
            self.tombstones.push(DriveTombstone {
                seq,
                id: item.id,
                name: item.name,
                is_folder: item.is_folder,
                parent_id,
            });
            if let Some(p) = item.parent {
                self.bump_parents(p, now, seq);
            }
        }
    }

    pub fn set_content(&mut self, key: u64, content: Content, now: DateTime<Utc>, seq: Seq) {
        if let Some(item) = self.items.get_mut(&key) {
            item.content = Some(content);
            item.hash = Default::default();
            item.version += 1;
            item.seq = seq;
            item.modified = now;
            let parent = item.parent;
            if let Some(p) = parent {
                self.bump_parents(p, now, seq);
            }
        }
    }
}
