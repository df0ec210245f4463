//! Folders of Outlook items (mail folders, contact folders, calendars, To Do lists) with the
//! bookkeeping that delta queries and id changes need: a change sequence on every item,
//! tombstones for items that left a folder, and both id forms Outlook hands out.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::util::outlook_id;

pub type Seq = u64;

#[derive(Clone, Debug)]
pub struct Folder {
    pub key: u64,
    pub id: String,
    /// `None` for a top-level folder (a child of the mailbox's root).
    pub parent: Option<u64>,
    pub name: String,
    pub well_known: Option<String>,
    pub hidden: bool,
    pub seq: Seq,
    /// A search folder (`mailSearchFolder`): a view of the messages of this source folder,
    /// holding none of its own.
    pub search: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub key: u64,
    pub folder: u64,
    /// Survives moves; returned with `Prefer: IdType="ImmutableId"`.
    pub imm_id: String,
    /// The default id; changes when the item moves to another folder, as documented.
    pub rest_id: String,
    pub moves: u64,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub seq: Seq,
    /// When the item arrived in its folder (created or moved in), for `changeType=created`.
    pub born: Seq,
    pub version: u64,
    pub data: T,
}

impl<T> Entry<T> {
    pub fn id(&self, immutable: bool) -> &str {
        if immutable {
            &self.imm_id
        } else {
            &self.rest_id
        }
    }

    pub fn change_key(&self) -> String {
        crate::util::b64(format!("CQAAABYAAA{:08x}{:08x}", self.key, self.version).as_bytes())
    }
}

/// An item that left a folder (deleted or moved out), as delta reports it with `@removed`.
#[derive(Clone, Debug)]
pub struct Tombstone {
    pub seq: Seq,
    pub folder: u64,
    pub rest_id: String,
    pub imm_id: String,
}

/// One page of a delta round: items changed or removed in `(since, upto]`, after a cursor.
pub enum DeltaRow<'a, T> {
    Changed(&'a Entry<T>),
    Removed(&'a Tombstone),
}

pub type Cursor = (Seq, u8, u64);

#[derive(Clone, Debug)]
pub struct Store<T> {
    user: u64,
    kind: u64,
    pub folders: BTreeMap<u64, Folder>,
    pub items: BTreeMap<u64, Entry<T>>,
    ids: HashMap<String, u64>,
    pub tombstones: Vec<Tombstone>,
    /// Folders deleted, for folder-hierarchy delta: `(seq, id)`.
    pub folder_tombstones: Vec<(Seq, String)>,
    next_key: u64,
}

/// One row of a folder-hierarchy delta page.
pub enum FolderRow<'a> {
    Changed(&'a Folder),
    Removed(&'a str),
}

impl<T> Store<T> {
    pub fn new(user: u64, kind: u64) -> Self {
        Self {
            user,
            kind,
            folders: BTreeMap::new(),
            items: BTreeMap::new(),
            ids: HashMap::new(),
            tombstones: Vec::new(),
            folder_tombstones: Vec::new(),
            next_key: 1,
        }
    }

    fn next(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    pub fn add_folder(
        &mut self,
        parent: Option<u64>,
        name: &str,
        well_known: Option<&str>,
        hidden: bool,
        seq: Seq,
    ) -> u64 {
        let key = self.next();
        let id = outlook_id("AAMkAGI2", &[self.user, self.kind, key, 0xf01d]);
        self.folders.insert(
            key,
            Folder {
                key,
                id,
                parent,
                name: name.to_string(),
                well_known: well_known.map(str::to_string),
                hidden,
                seq,
                search: None,
            },
        );
        key
    }

    /// A folder by id or, as Graph allows, by well-known name (`inbox`, `drafts`, …).
    pub fn folder_key(&self, id: &str) -> Option<u64> {
        self.folders
            .values()
            .find(|f| {
                f.id == id
                    || f.well_known
                        .as_deref()
                        .is_some_and(|w| w.eq_ignore_ascii_case(id))
            })
            .map(|f| f.key)
    }

    pub fn children(&self, parent: Option<u64>) -> impl Iterator<Item = &Folder> {
        self.folders.values().filter(move |f| f.parent == parent)
    }

    pub fn insert(&mut self, folder: u64, data: T, now: DateTime<Utc>, seq: Seq) -> u64 {
        let key = self.next();
        let imm_id = outlook_id("AAkALgAA", &[self.user, self.kind, key]);
        let rest_id = outlook_id("AAMkAGI2", &[self.user, self.kind, key, 0]);
        self.ids.insert(imm_id.clone(), key);
        self.ids.insert(rest_id.clone(), key);
        self.items.insert(
            key,
            Entry {
                key,
                folder,
                imm_id,
                rest_id,
                moves: 0,
                created: now,
                modified: now,
                seq,
                born: seq,
                version: 1,
                data,
            },
        );
        key
    }

    /// An item by either of its current ids. A default id from before a move no longer
    /// resolves, which is the behaviour immutable ids exist to avoid.
    pub fn resolve(&self, id: &str) -> Option<u64> {
        self.ids
            .get(id)
            .copied()
            .filter(|k| self.items.contains_key(k))
    }

    pub fn get(&self, id: &str) -> Option<&Entry<T>> {
        self.resolve(id).and_then(|k| self.items.get(&k))
    }

    pub fn touch(&mut self, key: u64, now: DateTime<Utc>, seq: Seq) -> Option<&mut Entry<T>> {
        let e = self.items.get_mut(&key)?;
        e.modified = now;
        e.seq = seq;
        e.version += 1;
        Some(e)
    }

    pub fn move_item(&mut self, key: u64, to: u64, now: DateTime<Utc>, seq: Seq) -> Option<()> {
        let (user, kind) = (self.user, self.kind);
        let e = self.items.get_mut(&key)?;
        if e.folder == to {
            return Some(());
        }
        self.tombstones.push(Tombstone {
            seq,
            folder: e.folder,
            rest_id: e.rest_id.clone(),
            imm_id: e.imm_id.clone(),
        });
        self.ids.remove(&e.rest_id);
        e.moves += 1;
        e.rest_id = outlook_id("AAMkAGI2", &[user, kind, key, e.moves]);
        e.folder = to;
        e.modified = now;
        e.seq = seq;
        e.born = seq;
        e.version += 1;
        self.ids.insert(e.rest_id.clone(), key);
        Some(())
    }

    pub fn delete(&mut self, key: u64, seq: Seq) -> Option<Entry<T>> {
        let e = self.items.remove(&key)?;
        self.ids.remove(&e.rest_id);
        self.ids.remove(&e.imm_id);
        self.tombstones.push(Tombstone {
            seq,
            folder: e.folder,
            rest_id: e.rest_id.clone(),
            imm_id: e.imm_id.clone(),
        });
        Some(e)
    }

    pub fn rename_folder(&mut self, key: u64, name: &str, seq: Seq) -> Option<()> {
        let f = self.folders.get_mut(&key)?;
        f.name = name.to_string();
        f.seq = seq;
        Some(())
    }

    /// Deletes a folder, its sub-folders and their items.
    pub fn delete_folder(&mut self, key: u64, seq: Seq) {
        let children: Vec<u64> = self.children(Some(key)).map(|f| f.key).collect();
        for c in children {
            self.delete_folder(c, seq);
        }
        let items: Vec<u64> = self.in_folder(key).map(|e| e.key).collect();
        for i in items {
            self.delete(i, seq);
        }
        if let Some(f) = self.folders.remove(&key) {
            self.folder_tombstones.push((seq, f.id));
        }
    }

    /// Folder-hierarchy changes in `(since, upto]`, like [`Store::delta`] for items.
    pub fn folder_delta(
        &self,
        since: Seq,
        upto: Seq,
        after: Option<Cursor>,
        limit: usize,
    ) -> (Vec<FolderRow<'_>>, Option<Cursor>) {
        let mut rows: Vec<(Cursor, FolderRow<'_>)> = Vec::new();
        for f in self.folders.values() {
            if f.seq > since && f.seq <= upto {
                rows.push(((f.seq, 0, f.key), FolderRow::Changed(f)));
            }
        }
        if since > 0 {
            for (i, (seq, id)) in self.folder_tombstones.iter().enumerate() {
                if *seq > since && *seq <= upto {
                    rows.push(((*seq, 1, i as u64), FolderRow::Removed(id)));
                }
            }
        }
        rows.sort_by_key(|(c, _)| *c);
        let mut page = Vec::new();
        let mut last = None;
        let mut more = false;
        for (c, row) in rows {
            if after.is_some_and(|a| c <= a) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            last = Some(c);
            page.push(row);
        }
        (page, if more { last } else { None })
    }

    pub fn in_folder(&self, folder: u64) -> impl Iterator<Item = &Entry<T>> {
        self.items.values().filter(move |e| e.folder == folder)
    }

    /// Changes to `folder` in `(since, upto]` strictly after `after`, oldest first, at most
    /// `limit` rows; the cursor of the last row comes back for the next page. An initial round
    /// (`since == 0`) reports no removals.
    /// `only` narrows the round to `created`, `updated` or `deleted` changes, as the
    /// documented `changeType` query option does.
    #[allow(clippy::too_many_arguments)]
    pub fn delta(
        &self,
        folder: u64,
        since: Seq,
        upto: Seq,
        after: Option<Cursor>,
        limit: usize,
        only: Option<&str>,
        keep: &dyn Fn(&Entry<T>) -> bool,
    ) -> (Vec<DeltaRow<'_, T>>, Option<Cursor>) {
        let mut rows: Vec<(Cursor, DeltaRow<'_, T>)> = Vec::new();
        for e in self.in_folder(folder) {
            let wanted = match only {
                Some("created") => e.born > since,
                Some("updated") => e.born <= since,
                Some("deleted") => false,
                _ => true,
            };
            if wanted && e.seq > since && e.seq <= upto && keep(e) {
                rows.push(((e.seq, 0, e.key), DeltaRow::Changed(e)));
            }
        }
        if since > 0 && matches!(only, None | Some("deleted")) {
            for (i, t) in self.tombstones.iter().enumerate() {
                if t.folder == folder && t.seq > since && t.seq <= upto {
                    rows.push(((t.seq, 1, i as u64), DeltaRow::Removed(t)));
                }
            }
        }
        rows.sort_by_key(|(c, _)| *c);
        let mut page: Vec<DeltaRow<'_, T>> = Vec::new();
        let mut last = None;
        let mut more = false;
        for (c, row) in rows {
            if after.is_some_and(|a| c <= a) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            last = Some(c);
            page.push(row);
        }
        (page, if more { last } else { None })
    }
}
