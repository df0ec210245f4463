//! Restores into Microsoft 365: by default into a new folder named by the job's label
//! (a mail folder, a contact folder, a calendar, a To Do list, a drive folder) with the
//! original structure inside it; OneDrive and SharePoint libraries also in place, with the
//! job's conflict rule; to the same account or another one.
//!
//! Mail is recreated from its MIME as a message that is not a draft and keeps its received
//! time and read state: Graph's MIME import always makes a draft, so the message is created
//! from the parsed MIME with the MAPI properties that Exchange honours only at creation
//! (PidTagMessageFlags without the unsent bit, PidTagMessageDeliveryTime,
//! PidTagClientSubmitTime) as single-value extended properties.

use crate::client::{Body, Fail, Graph};
use crate::drive;
use crate::formats;
use crate::names::unseg;
use crate::run::meta_of;
use crate::sites;
use base64::Engine as _;
use domain::ItemPath;
use engine::{OnConflict, RestoreContent, SourceRestore, SourceRestoreReport};
use mail_parser::{MessageParser, MimeHeaders};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use vault::{Entry, EntryKind};

/// Attachments up to this size go in the message's create request; larger ones through an
/// upload session (Graph takes 3 MB inline, 150 MB by session).
const INLINE_ATTACHMENTS: usize = 3 << 20;

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn name_of(path: &ItemPath, entry: &Entry) -> String {
    meta_of(&entry.meta, "name")
        .map(str::to_string)
        .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")))
}

struct Ctx<'a> {
    g: &'a Graph,
    job: &'a SourceRestore,
    content: &'a RestoreContent,
    report: SourceRestoreReport,
    targets: Vec<String>,
    /// Graph ids of folders already made (or found), by their path in the snapshot.
    folders: HashMap<ItemPath, String>,
    /// Drive ids by the snapshot folder they stand for (`OneDrive`, `Libraries/<name>`).
    drives: HashMap<ItemPath, String>,
    user: String,
    site: Option<String>,
    /// Restore folders (mail and contact folders, calendars, lists) that were already
    /// there: a job run again after a crash goes into the same labelled folders.
    found: HashSet<String>,
    /// What those folders hold, by folder id: how many items of each restore key (see
    /// [`Ctx::already`]).
    present: HashMap<String, HashMap<String, usize>>,
}

impl Ctx<'_> {
    fn made(&mut self, (id, found): (String, bool)) -> String {
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
    async fn already(
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

    fn fail(&mut self, path: &ItemPath, f: impl std::fmt::Display) {
        self.report.errors.push(format!("{path}: {f}"));
    }

    fn target(&mut self, t: String) {
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
            b"Mail" => mail(&mut cx, path, entry).await,
            b"Contacts" => contacts(&mut cx, path, entry).await,
            b"Calendar" => listed(&mut cx, path, entry, Listed::Calendar, several.0).await,
            b"Tasks" => listed(&mut cx, path, entry, Listed::Tasks, several.1).await,
            b"OneDrive" | b"Libraries" => files(&mut cx, path, entry).await,
            b"Lists" => list_item(&mut cx, path, entry).await,
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

type R = Result<(), Fail>;

fn engine_fail(e: engine::Error) -> Fail {
    Fail::Protocol(e.to_string())
}

// ---- mail ---------------------------------------------------------------------------------

/// The folder `path` (a folder of the snapshot) stands for in the target mailbox.
async fn mail_folder(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: Option<&Entry>,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let u = cx.user.clone();
    let (parent_url, name) = if path.segments().len() == 1 {
        // `Mail` itself: the label folder at the top of the mailbox, or its root.
        match &cx.job.label {
            Some(l) => {
                cx.target(format!("Mail/{l}"));
                (format!("/users/{u}/mailFolders"), l.clone())
            }
            None => {
                cx.folders.insert(path.clone(), "msgfolderroot".into());
                return Ok("msgfolderroot".into());
            }
        }
    } else {
        let parent = path.parent().expect("not the root");
        let pid = Box::pin(mail_folder(cx, &parent, None)).await?;
        let name = entry
            .map(|e| name_of(path, e))
            .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")));
        let url = if pid == "msgfolderroot" {
            format!("/users/{u}/mailFolders")
        } else {
            format!("/users/{u}/mailFolders/{pid}/childFolders")
        };
        (url, name)
    };
    let (id, found) = create_or_find(cx.g, &parent_url, "displayName", &name, Some(&u)).await?;
    if found {
        cx.found.insert(id.clone());
    }
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

/// Creates a folder-like object named `name` in the collection at `url`, or finds the
/// one already there (a restore run again after a crash goes into the same folder); with
/// whether it was found, so holding what an earlier run wrote.
async fn create_or_find(
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

fn addr(a: &mail_parser::Addr<'_>) -> Value {
    json!({ "emailAddress": { "name": a.name().unwrap_or(""), "address": a.address().unwrap_or("") } })
}

fn addrs(a: Option<&mail_parser::Address<'_>>) -> Vec<Value> {
    a.map(|a| {
        a.iter()
            .filter(|x| x.address().is_some())
            .map(addr)
            .collect()
    })
    .unwrap_or_default()
}

async fn mail(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        mail_folder(cx, path, Some(entry)).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let folder = mail_folder(cx, &parent, None).await?;
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let parsed = MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| Fail::Protocol("the stored message is not MIME".into()))?;
    let (ctype, body) = match parsed.body_html(0) {
        Some(h) if parsed.html_body_count() > 0 => ("html", h.into_owned()),
        _ => (
            "text",
            parsed
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        ),
    };
    let u = cx.user.clone();
    let key = parsed
        .message_id()
        .map(|id| format!("<{id}>"))
        .unwrap_or_default();
    let list =
        format!("/users/{u}/mailFolders/{folder}/messages?$select=internetMessageId&$top=250");
    if cx.already(&folder, &list, message_key, &key).await? {
        return Ok(());
    }
    let meta = |k: &str| meta_of(&entry.meta, k).unwrap_or("").to_string();
    let received = meta("received");
    let read = meta("read") == "true";
    let sent = parsed
        .date()
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| received.clone());
    let mut props = vec![
        // PidTagMessageFlags: mfRead when read; never mfUnsent, so the message is not a draft.
        json!({ "id": "Integer 0x0E07", "value": if read { "1" } else { "0" } }),
        json!({ "id": "SystemTime 0x0039", "value": sent }),
    ];
    if !received.is_empty() {
        props.push(json!({ "id": "SystemTime 0x0E06", "value": received }));
    }
    let from = parsed.from().and_then(|a| a.first()).map(addr);
    let categories: Vec<&str> = meta_of(&entry.meta, "categories")
        .unwrap_or("")
        .split(", ")
        .filter(|c| !c.is_empty())
        .collect();
    let importance = match meta("importance").as_str() {
        "" => "normal".to_string(),
        i => i.to_string(),
    };
    let mut msg = json!({
        "subject": parsed.subject().unwrap_or(""),
        "body": { "contentType": ctype, "content": body },
        "toRecipients": addrs(parsed.to()),
        "ccRecipients": addrs(parsed.cc()),
        "bccRecipients": addrs(parsed.bcc()),
        "replyTo": addrs(parsed.reply_to()),
        "isRead": read,
        "importance": importance,
        "categories": categories,
        "singleValueExtendedProperties": props,
    });
    if let Some(f) = from {
        msg["from"] = f.clone();
        msg["sender"] = f;
    }
    if let Some(id) = parsed.message_id() {
        msg["internetMessageId"] = json!(format!("<{id}>"));
    }
    let flag = meta("flag");
    if !flag.is_empty() {
        msg["flag"] = json!({ "flagStatus": flag });
    }
    let mut inline = Vec::new();
    let mut later = Vec::new();
    let mut budget = INLINE_ATTACHMENTS;
    for a in parsed.attachments() {
        let bytes = a.contents().to_vec();
        let name = a.attachment_name().unwrap_or("attachment").to_string();
        let ct = a
            .content_type()
            .map(|c| match c.subtype() {
                Some(st) => format!("{}/{st}", c.ctype()),
                None => c.ctype().to_string(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let is_inline = a.content_disposition().is_some_and(|d| d.is_inline());
        if bytes.len() <= budget {
            budget -= bytes.len();
            inline.push(json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": name, "contentType": ct, "isInline": is_inline,
                "contentId": a.content_id(),
                "contentBytes": base64::engine::general_purpose::STANDARD.encode(&bytes),
            }));
        } else {
            later.push((name, ct, bytes));
        }
    }
    if !inline.is_empty() {
        msg["attachments"] = json!(inline);
    }
    let created =
        cx.g.json(
            Method::POST,
            &format!("/users/{u}/mailFolders/{folder}/messages"),
            Some(Body::Json(msg)),
            &[],
            Some(&u),
        )
        .await?;
    let mid = s(&created, "id").to_string();
    for (name, ct, bytes) in later {
        attach_large(cx.g, &u, &mid, &name, &ct, bytes).await?;
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// Adds an attachment over 3 MB through an attachment upload session.
async fn attach_large(g: &Graph, u: &str, mid: &str, name: &str, ct: &str, bytes: Vec<u8>) -> R {
    let total = bytes.len() as u64;
    let session = g
        .json(
            Method::POST,
            &format!("/users/{u}/messages/{mid}/attachments/createUploadSession"),
            Some(Body::Json(json!({ "AttachmentItem": {
                "attachmentType": "file", "name": name, "size": total, "contentType": ct } }))),
            &[],
            Some(u),
        )
        .await?;
    let url = s(&session, "uploadUrl").to_string();
    if url.is_empty() {
        return Err(Fail::Protocol(
            "an upload session without an upload URL".into(),
        ));
    }
    let mut at = 0usize;
    for chunk in bytes.chunks(drive::FRAGMENT) {
        let end = at + chunk.len() - 1;
        g.send(
            Method::PUT,
            &url,
            Some(Body::Bytes(
                bytes::Bytes::copy_from_slice(chunk),
                "application/octet-stream",
            )),
            &[("Content-Range", format!("bytes {at}-{end}/{total}"))],
            None,
            false,
        )
        .await?;
        at = end + 1;
    }
    Ok(())
}

/// What tells a restored item apart from the others of its folder, so that a re-run of
/// the same restore finds what it already wrote: a message's Message-ID (which the
/// restored message carries), a contact's name and address, an event's subject and start,
/// a task's title.
fn message_key(v: &Value) -> String {
    s(v, "internetMessageId").to_string()
}

fn contact_key(v: &Value) -> String {
    let mail = v
        .pointer("/emailAddresses/0/address")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}\n{mail}", s(v, "displayName"))
}

fn event_key(v: &Value) -> String {
    let start = v
        .pointer("/start/dateTime")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{}\n{}", s(v, "subject"), start.get(..16).unwrap_or(start))
}

fn task_key(v: &Value) -> String {
    s(v, "title").to_string()
}

// ---- contacts -----------------------------------------------------------------------------

async fn contact_folder(
    cx: &mut Ctx<'_>,
    path: &ItemPath,
    entry: Option<&Entry>,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let u = cx.user.clone();
    let id = if path.segments().len() == 1 {
        match cx.job.label.clone() {
            Some(l) => {
                cx.target(format!("Contacts/{l}"));
                cx.made(
                    create_or_find(
                        cx.g,
                        &format!("/users/{u}/contactFolders"),
                        "displayName",
                        &l,
                        Some(&u),
                    )
                    .await?,
                )
            }
            None => "contacts".to_string(),
        }
    } else {
        let parent = path.parent().expect("not the root");
        let pid = Box::pin(contact_folder(cx, &parent, None)).await?;
        let name = entry
            .map(|e| name_of(path, e))
            .unwrap_or_else(|| unseg(path.file_name().unwrap_or(b"")));
        let url = if pid == "contacts" {
            format!("/users/{u}/contactFolders")
        } else {
            format!("/users/{u}/contactFolders/{pid}/childFolders")
        };
        cx.made(create_or_find(cx.g, &url, "displayName", &name, Some(&u)).await?)
    };
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

/// Graph's JSON of an item made fit to create it again: what the service computes or
/// assigns (ids, change keys, times, links) is dropped.
fn creatable(mut v: Value, drop: &[&str]) -> Value {
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

async fn contacts(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        contact_folder(cx, path, Some(entry)).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let fid = contact_folder(cx, &parent, None).await?;
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let item = formats::embedded_json(&raw)
        .map_err(Fail::Protocol)?
        .remove(0);
    let u = cx.user.clone();
    let list = format!("/users/{u}/contactFolders/{fid}/contacts?$top=250");
    if cx
        .already(&fid, &list, contact_key, &contact_key(&item))
        .await?
    {
        return Ok(());
    }
    let url = if fid == "contacts" {
        format!("/users/{u}/contacts")
    } else {
        format!("/users/{u}/contactFolders/{fid}/contacts")
    };
    cx.g.json(
        Method::POST,
        &url,
        Some(Body::Json(creatable(item, &[]))),
        &[],
        Some(&u),
    )
    .await?;
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

// ---- calendars and To Do ------------------------------------------------------------------

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
    let mut objs = formats::embedded_json(&raw).map_err(Fail::Protocol)?;
    let u = cx.user.clone();
    let (list, key_of): (String, fn(&Value) -> String) = match kind {
        Listed::Tasks => (
            format!("/users/{u}/todo/lists/{fid}/tasks?$top=250"),
            task_key,
        ),
        Listed::Calendar => (
            format!("/users/{u}/calendars/{fid}/events?$top=250"),
            event_key,
        ),
    };
    let key = objs.first().map(key_of).unwrap_or_default();
    if cx.already(&fid, &list, key_of, &key).await? {
        return Ok(());
    }
    match kind {
        Listed::Tasks => {
            let t = creatable(objs.remove(0), &[]);
            cx.g.json(
                Method::POST,
                &format!("/users/{u}/todo/lists/{fid}/tasks"),
                Some(Body::Json(t)),
                &[],
                Some(&u),
            )
            .await?;
        }
        Listed::Calendar => {
            let master = objs.remove(0);
            // Attendees are left out: creating an event with attendees would send them
            // invitations for a meeting that already happened.
            let e = creatable(
                master,
                &[
                    "type",
                    "seriesMasterId",
                    "originalStart",
                    "iCalUId",
                    "attendees",
                    "responseStatus",
                    "isOrganizer",
                    "onlineMeeting",
                ],
            );
            let created =
                cx.g.json(
                    Method::POST,
                    &format!("/users/{u}/calendars/{fid}/events"),
                    Some(Body::Json(e)),
                    &[],
                    Some(&u),
                )
                .await?;
            if !objs.is_empty() {
                let n = exceptions(cx, &created, &objs).await?;
                if n < objs.len() {
                    cx.fail(
                        path,
                        format!(
                            "{} of the series' exceptions could not be applied",
                            objs.len() - n
                        ),
                    );
                }
            }
        }
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

/// Applies a series' exceptions to the restored series: each changed occurrence is found
/// by its original start and updated. Returns how many were applied.
async fn exceptions(cx: &mut Ctx<'_>, created: &Value, exs: &[Value]) -> Result<usize, Fail> {
    let u = cx.user.clone();
    let mid = s(created, "id");
    let first = exs
        .iter()
        .filter_map(|x| x["originalStart"].as_str())
        .min()
        .unwrap_or("");
    let last = exs
        .iter()
        .filter_map(|x| x["originalStart"].as_str())
        .max()
        .unwrap_or("");
    let (Ok(from), Ok(to)) = (
        chrono::DateTime::parse_from_rfc3339(first),
        chrono::DateTime::parse_from_rfc3339(last),
    ) else {
        return Ok(0);
    };
    let url = format!(
        "/users/{u}/events/{mid}/instances?startDateTime={}&endDateTime={}&$top=250",
        (from - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        (to + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let page = cx.g.get_json(&url, Some(&u)).await?;
    let mut applied = 0;
    for x in exs {
        let orig = s(x, "originalStart");
        let occ = page["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| s(o, "originalStart") == orig);
        let Some(occ) = occ else { continue };
        let mut patch = json!({});
        for k in [
            "subject",
            "start",
            "end",
            "body",
            "location",
            "isCancelled",
            "showAs",
        ] {
            if let Some(v) = x.get(k) {
                patch[k] = v.clone();
            }
        }
        cx.g.json(
            Method::PATCH,
            &format!("/users/{u}/events/{}", s(occ, "id")),
            Some(Body::Json(patch)),
            &[],
            Some(&u),
        )
        .await?;
        applied += 1;
    }
    Ok(applied)
}

// ---- files --------------------------------------------------------------------------------

/// The drive a snapshot path goes to, and how many of its leading segments name it.
async fn target_drive(cx: &mut Ctx<'_>, path: &ItemPath) -> Result<(String, usize), Fail> {
    let from_site = path.segments()[0] == b"Libraries";
    let skip = if from_site { 2 } else { 1 };
    let key = crate::names::path(&path.segments()[..skip.min(path.segments().len())]);
    if let Some(id) = cx.drives.get(&key) {
        return Ok((id.clone(), skip));
    }
    let id = match &cx.site {
        None => {
            let d =
                cx.g.get_json(&format!("/users/{}/drive?$select=id", cx.user), None)
                    .await?;
            s(&d, "id").to_string()
        }
        Some(site) => {
            let library = path
                .segments()
                .get(1)
                .filter(|_| from_site)
                .map(|l| unseg(l));
            let drives =
                cx.g.get_json(&format!("/sites/{site}/drives?$top=200"), None)
                    .await?;
            let all: Vec<&Value> = drives["value"].as_array().into_iter().flatten().collect();
            all.iter()
                .find(|d| library.as_deref().is_some_and(|l| s(d, "name") == l))
                .or(all.first())
                .map(|d| s(d, "id").to_string())
                .ok_or_else(|| Fail::Protocol("the site has no document library".into()))?
        }
    };
    cx.drives.insert(key, id.clone());
    Ok((id, skip))
}

/// The id of the drive folder a snapshot folder goes to (created when missing).
async fn drive_folder(
    cx: &mut Ctx<'_>,
    drive: &str,
    path: &ItemPath,
    skip: usize,
) -> Result<String, Fail> {
    if let Some(id) = cx.folders.get(path) {
        return Ok(id.clone());
    }
    let id = if path.segments().len() <= skip {
        match cx.job.label.clone() {
            Some(l) => {
                cx.target(format!("{}/{l}", path));
                // Already there: this job ran before (and crashed); see `files`.
                if drive::child(cx.g, drive, "root", &l).await?.is_some() {
                    cx.found.insert(format!("drive:{drive}"));
                }
                drive::ensure_folder(cx.g, drive, "root", &l).await?
            }
            None => {
                cx.target(path.to_string());
                "root".to_string()
            }
        }
    } else {
        let parent = path.parent().expect("below the drive");
        let pid = Box::pin(drive_folder(cx, drive, &parent, skip)).await?;
        drive::ensure_folder(cx.g, drive, &pid, &unseg(path.file_name().unwrap_or(b""))).await?
    };
    cx.folders.insert(path.clone(), id.clone());
    Ok(id)
}

async fn files(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if path.segments()[0] == b"Libraries" && path.segments().len() < 2 {
        return Ok(());
    }
    let (drive, skip) = target_drive(cx, path).await?;
    if entry.kind == EntryKind::Dir {
        drive_folder(cx, &drive, path, skip).await?;
        cx.report.folders += 1;
        return Ok(());
    }
    let parent = path.parent().expect("an item has a parent");
    let pid = drive_folder(cx, &drive, &parent, skip).await?;
    let mut name = unseg(path.file_name().unwrap_or(b""));
    if cx.job.label.is_some() && cx.found.contains(&format!("drive:{drive}")) {
        // A file of the job's own restore folder, as large as the one to restore, was
        // written by the earlier run: an upload appears only once complete.
        if let Some(there) = drive::child(cx.g, &drive, &pid, &name).await? {
            if there.get("file").is_some() && there["size"].as_u64() == Some(entry.size) {
                cx.report.skipped += 1;
                return Ok(());
            }
        }
    }
    if cx.job.label.is_none() {
        if let Some(existing) = drive::child(cx.g, &drive, &pid, &name).await? {
            match cx.job.on_conflict {
                OnConflict::Skip => {
                    cx.report.skipped += 1;
                    return Ok(());
                }
                OnConflict::Replace => {}
                OnConflict::Copy => {
                    let _ = existing;
                    let (stem, ext) = match name.rsplit_once('.') {
                        Some((a, b)) if !a.is_empty() => (a.to_string(), format!(".{b}")),
                        _ => (name.clone(), String::new()),
                    };
                    let mut n = 1;
                    loop {
                        let candidate = if n == 1 {
                            format!("{stem} (restored){ext}")
                        } else {
                            format!("{stem} (restored {n}){ext}")
                        };
                        if drive::child(cx.g, &drive, &pid, &candidate)
                            .await?
                            .is_none()
                        {
                            name = candidate;
                            break;
                        }
                        n += 1;
                    }
                }
            }
        }
    }
    match drive::upload(cx.g, &drive, &pid, &name, entry, cx.content).await {
        Ok(()) => {}
        Err(engine::Error::Source { kind, message }) => {
            let f = match kind {
                engine::SourceErrorKind::Auth => Fail::Auth(message),
                engine::SourceErrorKind::Throttled => Fail::Throttled(message),
                engine::SourceErrorKind::Unavailable => Fail::Unavailable(message),
                _ => Fail::Protocol(message),
            };
            return Err(f);
        }
        Err(e) => return Err(engine_fail(e)),
    }
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}

// ---- SharePoint lists ---------------------------------------------------------------------

/// List items are added to the list of the same name (lists cannot be nested in a
/// restore folder); the label is not used.
async fn list_item(cx: &mut Ctx<'_>, path: &ItemPath, entry: &Entry) -> R {
    if entry.kind == EntryKind::Dir {
        return Ok(());
    }
    let Some(site) = cx.site.clone() else {
        return Err(Fail::Protocol(
            "list items can only be restored to a site".into(),
        ));
    };
    let Some(list) = path.segments().get(1).map(|l| unseg(l)) else {
        return Err(Fail::Protocol("an item outside any list".into()));
    };
    let key = crate::names::path(&path.segments()[..2]);
    let lid = match cx.folders.get(&key) {
        Some(id) => id.clone(),
        None => {
            let lists =
                cx.g.get_json(&format!("/sites/{site}/lists?$top=200"), None)
                    .await?;
            let id = lists["value"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| s(l, "displayName") == list)
                .map(|l| s(l, "id").to_string())
                .ok_or_else(|| Fail::Protocol(format!("the site has no list named {list}")))?;
            cx.folders.insert(key, id.clone());
            cx.target(format!("Lists/{list}"));
            id
        }
    };
    let raw = cx.content.read(entry).await.map_err(engine_fail)?;
    let mut fields: Value = serde_json::from_slice(&raw)
        .map_err(|e| Fail::Protocol(format!("the stored list item is not JSON: {e}")))?;
    if let Value::Object(m) = &mut fields {
        m.retain(|k, _| {
            !k.starts_with('@')
                && !k.starts_with('_')
                && !matches!(
                    k.as_str(),
                    "id" | "ID"
                        | "Modified"
                        | "Created"
                        | "AuthorLookupId"
                        | "EditorLookupId"
                        | "ContentType"
                        | "Attachments"
                        | "Edit"
                        | "LinkTitle"
                        | "LinkTitleNoMenu"
                        | "ItemChildCount"
                        | "FolderChildCount"
                        | "DocIcon"
                        | "AppAuthorLookupId"
                        | "AppEditorLookupId"
                )
        });
    }
    cx.g.json(
        Method::POST,
        &format!("/sites/{site}/lists/{lid}/items"),
        Some(Body::Json(json!({ "fields": fields }))),
        &[],
        None,
    )
    .await?;
    cx.report.items += 1;
    cx.report.bytes += entry.size;
    Ok(())
}
