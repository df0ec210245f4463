//! Restores into Microsoft 365: by default into a new folder named by the job's label
//! (a mail folder, a contact folder, a calendar, a To Do list, a drive folder) with the
//! original structure inside it; OneDrive and SharePoint libraries also in place, with the
//! job's conflict rule; to the same account or another one.
//!
//! Each category writes its own items back (`restore` in [`crate::mail`],
//! [`crate::contacts`], [`crate::calendar`], [`crate::todo`], [`crate::drive`] and
//! [`crate::sites`]); here is what they share: the job's state, the dispatch by the
//! snapshot's top folder, and finding or making the folders a restore writes into.

use crate::client::{Body, Fail, Graph};
use crate::names::unseg;
use crate::run::meta_of;
use crate::{calendar, contacts, drive, formats, mail, sites, todo};
use domain::ItemPath;
use engine::{Entry, EntryKind};
use engine::{RestoreContent, SourceRestore, SourceRestoreReport};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

pub(crate) fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn name_of(path: &ItemPath, entry: &Entry) -> String {
    meta_of(&entry.meta, "name")
        .map(str::to_string)
        .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")))
}

pub(crate) struct Ctx<'a> {
    pub(crate) g: &'a Graph,
    pub(crate) job: &'a SourceRestore,
    pub(crate) content: &'a RestoreContent,
    pub(crate) report: SourceRestoreReport,
    targets: Vec<String>,
    /// Graph ids of folders already made (or found), by their path in the snapshot.
    pub(crate) folders: HashMap<ItemPath, String>,
    /// Drive ids by the snapshot folder they stand for (`OneDrive`, `Libraries/<name>`).
    pub(crate) drives: HashMap<ItemPath, String>,
    pub(crate) user: String,
    pub(crate) site: Option<String>,
    /// Restore folders (mail and contact folders, calendars, lists) that were already
    /// there: a job run again after a crash goes into the same labelled folders.
    pub(crate) found: HashSet<String>,
    /// What those folders hold, by folder id: how many items of each restore key (see
    /// [`Ctx::already`]).
    present: HashMap<String, HashMap<String, usize>>,
}

impl Ctx<'_> {
    pub(crate) fn made(&mut self, (id, found): (String, bool)) -> String {
        if found {
            self.found.insert(id.clone());
        }
        id
    }

    /// Whether an earlier run of this job already wrote the item whose restore key is
    /// `key` into the labelled folder `folder` (listed at `list`, `field` holding each
    /// item's key). Keys are counted, so two snapshot items with the same key are both
    /// restored when the earlier run wrote only one. Only labelled restores: the label
    /// folder belongs to the job, while in place, what is there is the user's.
    pub(crate) async fn already(
        &mut self,
        folder: &str,
        list: &str,
        key_of: fn(&Value) -> String,
        key: &str,
    ) -> Result<bool, Fail> {
        if self.job.label.is_none() || !self.found.contains(folder) || key.is_empty() {
            return Ok(false);
        }
        if !self.present.contains_key(folder) {
            let mut counts: HashMap<String, usize> = HashMap::new();
            let mut next = Some(self.g.url(list));
            while let Some(u) = next {
                let page = self.g.get_json(&u, Some(&self.user)).await?;
                for v in page["value"].as_array().into_iter().flatten() {
                    *counts.entry(key_of(v)).or_default() += 1;
                }
                next = page["@odata.nextLink"].as_str().map(str::to_string);
            }
            self.present.insert(folder.to_string(), counts);
        }
        let counts = self.present.get_mut(folder).expect("just listed");
        match counts.get_mut(key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.report.skipped += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(crate) fn fail(&mut self, path: &ItemPath, f: impl std::fmt::Display) {
        self.report.errors.push(format!("{path}: {f}"));
    }

    pub(crate) fn target(&mut self, t: String) {
        if !self.targets.contains(&t) {
            self.targets.push(t);
        }
    }
}

/// Writes the job's items back.
///
/// # Errors
/// Credentials refused, or throttling beyond the retry cap: the rest would fail the same
/// way. Other failures are listed per item in the report.
pub async fn restore(
    g: &Graph,
    job: &SourceRestore,
    content: &RestoreContent,
) -> engine::Result<SourceRestoreReport> {
    let site = sites::site_id(job.to.as_str());
    let mut cx = Ctx {
        g,
        job,
        content,
        report: SourceRestoreReport::default(),
        targets: Vec::new(),
        folders: HashMap::new(),
        drives: HashMap::new(),
        user: job.to.to_string(),
        site,
        found: HashSet::new(),
        present: HashMap::new(),
    };
    // Calendars and To Do lists cannot nest: each restored one becomes its own top-level
    // calendar or list, named by the label (and the original name when there are several).
    let count = |top: &[u8]| {
        job.items
            .iter()
            .filter(|(p, e)| {
                e.kind == EntryKind::Dir && p.segments().len() == 2 && p.segments()[0] == top
            })
            .count()
    };
    let several = (count(b"Calendar") > 1, count(b"Tasks") > 1);
    for (path, entry) in &job.items {
        let segs = path.segments();
        let Some(top) = segs.first() else { continue };
        let r = match top.as_slice() {
            b"Mail" => mail::restore::mail(&mut cx, path, entry).await,
            b"Contacts" => contacts::restore::contacts(&mut cx, path, entry).await,
            b"Calendar" => listed(&mut cx, path, entry, Listed::Calendar, several.0).await,
            b"Tasks" => listed(&mut cx, path, entry, Listed::Tasks, several.1).await,
            b"OneDrive" | b"Libraries" => drive::restore::files(&mut cx, path, entry).await,
            b"Lists" => sites::restore::list_item(&mut cx, path, entry).await,
            _ => {
                cx.fail(path, "not an item this connector restores");
                Ok(())
            }
        };
        match r {
            Ok(()) => {}
            Err(f) if f.is_fatal() => return Err(f.into()),
            Err(f) => cx.fail(path, f),
        }
    }
    cx.report.target = cx.targets.join(", ");
    Ok(cx.report)
}

pub(crate) type R = Result<(), Fail>;

pub(crate) fn engine_fail(e: engine::Error) -> Fail {
    Fail::Protocol(e.to_string())
}

/// Creates a folder-like object named `name` in the collection at `url`, or finds the
/// one already there (a restore run again after a crash goes into the same folder); with
/// whether it was found, so holding what an earlier run wrote.
pub(crate) async fn create_or_find(
    g: &Graph,
    url: &str,
    field: &str,
    name: &str,
    mailbox: Option<&str>,
) -> Result<(String, bool), Fail> {
    match g
        .json(
            Method::POST,
            url,
            Some(Body::Json(json!({ field: name }))),
            &[],
            mailbox,
        )
        .await
    {
        Ok(v) => Ok((s(&v, "id").to_string(), false)),
        Err(f) if f.status() == Some(409) => {
            match find_named(g, url, field, name, mailbox).await? {
                Some(id) => Ok((id, true)),
                None => Err(f),
            }
        }
        Err(f) => Err(f),
    }
}

/// The id of the object named `name` in the collection at `url`.
async fn find_named(
    g: &Graph,
    url: &str,
    field: &str,
    name: &str,
    mailbox: Option<&str>,
) -> Result<Option<String>, Fail> {
    let mut next = Some(g.url(&format!("{url}?$top=250")));
    while let Some(u) = next {
        let page = g.get_json(&u, mailbox).await?;
        for f in page["value"].as_array().into_iter().flatten() {
            if s(f, field).eq_ignore_ascii_case(name) {
                return Ok(Some(s(f, "id").to_string()));
            }
        }
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    Ok(None)
}

/// Graph's JSON of an item made fit to create it again: what the service computes or
/// assigns (ids, change keys, times, links) is dropped.
pub(crate) fn creatable(mut v: Value, drop: &[&str]) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| {
            !k.starts_with('@')
                && !matches!(
                    k.as_str(),
                    "id" | "changeKey"
                        | "createdDateTime"
                        | "lastModifiedDateTime"
                        | "parentFolderId"
                        | "webLink"
                )
                && !drop.contains(&k.as_str())
        });
    }
    v
}

/// The collections that cannot nest: each restored calendar or To Do list is its own.
#[derive(Clone, Copy, PartialEq)]
enum Listed {
    Calendar,
    Tasks,
}

/// The calendar or list a snapshot's `Calendar/<name>` or `Tasks/<name>` goes to.
async fn listed_folder(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    kind: Listed,
    several: bool,
) -> Result<Option<String>, Fail> {
    let Some(cal) = path.segments().get(1) else {
        return Ok(None);
    };
    let key = crate::names::path(&path.segments()[..2]);
    if let Some(id) = cx.folders.get(&key) {
        return Ok(Some(id.clone()));
    }
    let original = unseg(cal);
    let name = match &cx.job.label {
        Some(l) if several => format!("{l} – {original}"),
        Some(l) => l.clone(),
        None => original.clone(),
    };
    let u = cx.user.clone();
    let (url, field, top) = match kind {
        Listed::Calendar => (format!("/users/{u}/calendars"), "name", "Calendar"),
        Listed::Tasks => (format!("/users/{u}/todo/lists"), "displayName", "Tasks"),
    };
    cx.target(format!("{top}/{name}"));
    // To Do takes any number of lists of one name, so a re-run looks before it creates.
    let id = match kind {
        Listed::Tasks if cx.job.label.is_some() => {
            match find_named(cx.g, &url, field, &name, Some(&u)).await? {
                Some(id) => cx.made((id, true)),
                None => cx.made(create_or_find(cx.g, &url, field, &name, Some(&u)).await?),
            }
        }
        _ => cx.made(create_or_find(cx.g, &url, field, &name, Some(&u)).await?),
    };
    cx.folders.insert(key, id.clone());
    Ok(Some(id))
}

/// A calendar's or To Do list's folder or item: the folder is found or made here, the item
/// written by its category.
async fn listed(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: &Entry,
    kind: Listed,
    several: bool,
) -> R {
    if entry.kind == EntryKind::Dir {
        if path.segments().len() == 2 {
            listed_folder(cx, path, kind, several).await?;
            cx.report.folders += 1;
        }
        return Ok(());
    }
    let Some(fid) = listed_folder(cx, path, kind, several).await? else {
        return Err(Fail::Protocol(
            "an item outside any calendar or list".into(),
        ));
    };
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let objs = formats::embedded_json(&raw).map_err(Fail::Protocol)?;
    match kind {
        Listed::Tasks => todo::restore::task(cx, entry, &fid, objs).await,
        Listed::Calendar => calendar::restore::event(cx, path, entry, &fid, objs).await,
    }
}
